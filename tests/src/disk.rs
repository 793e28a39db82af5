//! A real GPT disk with USR-A / USR-B slots on a loop device, and a simulated gptprio boot loader.
//!
//! Everything here is an independent cross-check of upd's own GPT code: partitions are made and read with
//! `sgdisk` (gdisk), and [`Disk::raw_entry`] reads the partition entry array byte by byte. The disk image
//! lives in its own temp dir and is attached with `losetup --find --show`; [`Disk`]'s `Drop` detaches it
//! (also when a test panics) and waits until the kernel has let go. Slots are addressed by byte offset on
//! the whole-disk loop device: `losetup -P` may not create partition nodes here.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::images::run_tool;
use crate::sandbox::{all_loop_devices, backing_id, LoopDevice};

/// The partition type GUID of a Flatcar / Container Linux /usr partition (sgdisk: "Container Linux /usr").
pub const USR_TYPE_GUID: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";
/// Label of the first OS slot (partition 1).
pub const USR_A: &str = "USR-A";
/// Label of the second OS slot (partition 2).
pub const USR_B: &str = "USR-B";
/// The slot labels in partition order, which is the boot loader's tie-break order.
pub const SLOTS: [&str; 2] = [USR_A, USR_B];
/// An attribute bit outside gptprio's, set on both slots at creation: whoever rewrites the attributes must
/// keep it.
pub const CANARY_BIT: u32 = 60;

const MIB: u64 = 1 << 20;
const SECTOR: u64 = 512;
const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_BIT: u32 = 56;

/// Where one slot lies on the disk, as `sgdisk -i N` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Partition number (1-based).
    pub index: u32,
    /// Unique partition GUID, lower-case (what `PARTUUID=` names).
    pub part_uuid: String,
    /// Byte offset of the first sector on the whole disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The gptprio fields of a partition's 64-bit attribute word (ChromeOS / Flatcar layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptPrio {
    /// Bits 48–51: boot priority, 0 = never boot.
    pub priority: u8,
    /// Bits 52–55: boot attempts left.
    pub tries: u8,
    /// Bit 56: the slot booted and was marked good.
    pub successful: bool,
    /// The whole attribute word.
    pub raw: u64,
}

impl GptPrio {
    /// Decode the gptprio fields of an attribute word.
    pub fn from_raw(raw: u64) -> Self {
        Self {
            priority: ((raw >> PRIORITY_SHIFT) & 0xf) as u8,
            tries: ((raw >> TRIES_SHIFT) & 0xf) as u8,
            successful: raw >> SUCCESSFUL_BIT & 1 == 1,
            raw,
        }
    }

    /// True when a gptprio boot loader may boot this slot.
    pub fn bootable(&self) -> bool {
        self.priority > 0 && (self.tries > 0 || self.successful)
    }
}

/// What GRUB's `gptprio.next` picks among `slots` (in partition order): the first of the highest priority
/// among the bootable ones.
pub fn gptprio_choice(slots: &[GptPrio]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, s) in slots.iter().enumerate() {
        // Strictly greater: on a tie the earlier partition wins, as in GRUB.
        if s.bootable() && best.is_none_or(|b| s.priority > slots[b].priority) {
            best = Some(i);
        }
    }
    best
}

/// A GPT disk image with slots USR-A and USR-B, attached to a loop device until dropped.
pub struct Disk {
    dir: tempfile::TempDir,
    device: PathBuf,
    attached: LoopDevice,
}

impl Disk {
    /// A disk with two Container Linux /usr partitions of `slot_size` bytes (a positive multiple of 1 MiB):
    /// USR-A (1) as a fresh install leaves it (priority 1, successful), USR-B (2) empty and unbootable, both
    /// with [`CANARY_BIT`] set.
    pub fn new(slot_size: u64) -> Disk {
        assert!(
            slot_size > 0 && slot_size.is_multiple_of(MIB),
            "slot size {slot_size} is not a positive multiple of 1 MiB"
        );
        let dir = tempfile::Builder::new()
            .prefix("upd-disk-")
            .tempdir()
            .expect("disk temp dir");
        let image = dir.path().join("disk.img");
        let file = fs::File::create(&image).expect("create disk image");
        // 1 MiB for the primary GPT and alignment, 1 MiB at the end for the backup GPT.
        file.set_len(2 * slot_size + 2 * MIB)
            .expect("size disk image");
        drop(file);
        let mib = slot_size / MIB;
        let mut args = vec!["-o".to_string()];
        for (i, label) in SLOTS.iter().enumerate() {
            let n = i + 1;
            args.extend([
                format!("-n{n}:0:+{mib}M"),
                format!("-t{n}:{USR_TYPE_GUID}"),
                format!("-c{n}:{label}"),
                format!("-A{n}:set:{CANARY_BIT}"),
            ]);
        }
        for bit in [PRIORITY_SHIFT, SUCCESSFUL_BIT] {
            args.push(format!("-A1:set:{bit}"));
        }
        sgdisk(&image, &args);
        let out = run_tool(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&image),
        );
        let device = PathBuf::from(out.trim());
        let attached = LoopDevice {
            device: out.trim().to_string(),
            backing: backing_id(&image),
        };
        Disk {
            dir,
            device,
            attached,
        }
    }

    /// The whole disk: `/dev/loopN`.
    pub fn device(&self) -> PathBuf {
        self.device.clone()
    }

    /// The disk image file behind the loop device.
    pub fn image_path(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }

    /// The loop device as `losetup -a` lists it (to check that it is gone after drop).
    pub fn loop_device(&self) -> LoopDevice {
        self.attached.clone()
    }

    /// Where slot `label` lies (from `sgdisk -i`).
    pub fn slot(&self, label: &str) -> SlotInfo {
        let index = slot_index(label);
        let text = sgdisk(&self.device, &[format!("-i{index}")]);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or_else(
                    || panic!("sgdisk -i {index}: no {name:?} in {text}"),
                    str::trim,
                )
                .to_string()
        };
        let sectors = |name: &str| -> u64 {
            let v = field(name);
            let n = v.split_whitespace().next().unwrap_or_default();
            n.parse()
                .unwrap_or_else(|e| panic!("sgdisk {name} {v:?}: {e}"))
        };
        let name = field("Partition name:");
        assert_eq!(name, format!("'{label}'"), "partition {index} name");
        let first = sectors("First sector:");
        let last = sectors("Last sector:");
        SlotInfo {
            index,
            part_uuid: field("Partition unique GUID:").to_lowercase(),
            offset: first * SECTOR,
            size: (last + 1 - first) * SECTOR,
        }
    }

    /// Write `image` at the start of slot `label` through the loop device, and fsync; refuses (InvalidInput)
    /// an image larger than the slot.
    pub fn write_slot(&self, label: &str, image: &Path) -> std::io::Result<()> {
        let slot = self.slot(label);
        let mut src = fs::File::open(image)?;
        let len = src.metadata()?.len();
        if len > slot.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{} is {len} bytes, slot {label} holds {}",
                    image.display(),
                    slot.size
                ),
            ));
        }
        let mut dst = fs::OpenOptions::new().write(true).open(&self.device)?;
        dst.seek(SeekFrom::Start(slot.offset))?;
        std::io::copy(&mut src, &mut dst)?;
        dst.flush()?;
        dst.sync_all()
    }

    /// The first `len` bytes of slot `label`, read through the loop device.
    pub fn read_slot(&self, label: &str, len: u64) -> Vec<u8> {
        let slot = self.slot(label);
        assert!(len <= slot.size, "read {len} bytes past slot {label}");
        let mut f = fs::File::open(&self.device).expect("open disk device");
        f.seek(SeekFrom::Start(slot.offset)).expect("seek to slot");
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf).expect("read slot");
        buf
    }

    /// The gptprio attributes of slot `label`, as `sgdisk -i` reports them.
    pub fn attrs(&self, label: &str) -> GptPrio {
        let index = slot_index(label);
        let text = sgdisk(&self.device, &[format!("-i{index}")]);
        let hex = text
            .lines()
            .find_map(|l| l.strip_prefix("Attribute flags:"))
            .unwrap_or_else(|| panic!("sgdisk -i {index}: no attribute flags in {text}"))
            .trim();
        let raw = u64::from_str_radix(hex, 16)
            .unwrap_or_else(|e| panic!("sgdisk attribute flags {hex:?}: {e}"));
        GptPrio::from_raw(raw)
    }

    /// Set the gptprio fields of slot `label` bit by bit with `sgdisk -A`, leaving every other bit alone.
    pub fn set_attrs(&self, label: &str, priority: u8, tries: u8, successful: bool) {
        assert!(priority < 16 && tries < 16, "gptprio fields are 4 bits");
        let index = slot_index(label);
        let want = (u64::from(priority) << PRIORITY_SHIFT)
            | (u64::from(tries) << TRIES_SHIFT)
            | (u64::from(successful) << SUCCESSFUL_BIT);
        let args: Vec<String> = (PRIORITY_SHIFT..=SUCCESSFUL_BIT)
            .map(|bit| {
                let op = if want >> bit & 1 == 1 { "set" } else { "clear" };
                format!("-A{index}:{op}:{bit}")
            })
            .collect();
        sgdisk(&self.device, &args);
    }

    /// Assert that `sgdisk -v` finds no problem with the disk (both GPT copies, CRCs, overlaps).
    pub fn verify(&self) {
        let text = sgdisk(&self.device, &["-v".to_string()]);
        assert!(
            text.contains("No problems found"),
            "sgdisk -v {}: {text}",
            self.device.display()
        );
    }

    /// The raw 128-byte GPT entry of partition `index`, read straight from the device (the primary table,
    /// located by the header at LBA 1): `(type GUID, unique GUID, first LBA, last LBA, attributes)`, GUIDs
    /// lower-case in their textual form.
    pub fn raw_entry(&self, index: u32) -> (String, String, u64, u64, u64) {
        let mut f = fs::File::open(&self.device).expect("open disk device");
        let mut header = [0u8; 92];
        f.seek(SeekFrom::Start(SECTOR)).expect("seek GPT header");
        f.read_exact(&mut header).expect("read GPT header");
        assert_eq!(&header[..8], b"EFI PART", "GPT header signature");
        let le64 = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let le32 = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let table = le64(&header[72..]) * SECTOR;
        let entry_size = u64::from(le32(&header[84..]));
        let mut e = vec![0u8; entry_size as usize];
        f.seek(SeekFrom::Start(table + u64::from(index - 1) * entry_size))
            .expect("seek GPT entry");
        f.read_exact(&mut e).expect("read GPT entry");
        (
            guid_text(&e[0..16]),
            guid_text(&e[16..32]),
            le64(&e[32..]),
            le64(&e[40..]),
            le64(&e[48..]),
        )
    }

    /// Every byte of the disk, read through the loop device (what [`Disk::restore`] puts back).
    pub fn save(&self) -> Vec<u8> {
        fs::read(&self.device).expect("read the whole disk device")
    }

    /// Put back bytes [`Disk::save`] read, through the loop device, and fsync: the disk is then as it was,
    /// GPT copies, slots and all. Nothing may have a slot mounted meanwhile.
    pub fn restore(&self, bytes: &[u8]) {
        let mut dst = fs::OpenOptions::new()
            .write(true)
            .open(&self.device)
            .expect("open disk device");
        dst.write_all(bytes).expect("write the whole disk device");
        dst.sync_all().expect("fsync disk device");
    }

    /// Simulate one boot of a gptprio boot loader (Flatcar GRUB `gptprio.next`): among USR-A / USR-B take the
    /// first of the highest priority with tries left or marked successful; if it has tries left, consume one
    /// on disk (GRUB does so whether or not the slot is marked successful); return its label.
    pub fn boot_loader_choice(&self) -> Option<String> {
        let prios: Vec<GptPrio> = SLOTS.iter().map(|l| self.attrs(l)).collect();
        let chosen = gptprio_choice(&prios)?;
        let p = prios[chosen];
        if p.tries > 0 {
            self.set_attrs(SLOTS[chosen], p.priority, p.tries - 1, p.successful);
        }
        Some(SLOTS[chosen].to_string())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // A busy device (a machine still mounts a slot) is only marked for auto-detach: retry until it is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !all_loop_devices().contains(&self.attached) {
                return;
            }
            let _ = Command::new("losetup").arg("-d").arg(&self.device).output();
            if Instant::now() > deadline {
                eprintln!(
                    "WARNING: disk {} still attached to {}",
                    self.image_path().display(),
                    self.device.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn slot_index(label: &str) -> u32 {
    let i = SLOTS
        .iter()
        .position(|l| *l == label)
        .unwrap_or_else(|| panic!("no slot {label:?}: the disk has {SLOTS:?}"));
    i as u32 + 1
}

/// A GUID's on-disk bytes (first three fields little endian) in textual form.
fn guid_text(b: &[u8]) -> String {
    let mut s = String::new();
    for i in [3, 2, 1, 0, 5, 4, 7, 6] {
        s.push_str(&format!("{:02x}", b[i]));
    }
    for byte in &b[8..16] {
        s.push_str(&format!("{byte:02x}"));
    }
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

fn sgdisk(target: &Path, args: &[String]) -> String {
    run_tool(Command::new("sgdisk").args(args).arg(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prio(priority: u8, tries: u8, successful: bool) -> GptPrio {
        GptPrio::from_raw(
            (u64::from(priority) << 48) | (u64::from(tries) << 52) | (u64::from(successful) << 56),
        )
    }

    #[test]
    fn attribute_word_decodes_flatcar_layout() {
        let p = GptPrio::from_raw(0x1102_0000_0000_0000 | 1 << 60 | 0b101);
        assert_eq!((p.priority, p.tries, p.successful), (2, 0, true));
        let p = GptPrio::from_raw(0x00f1_0000_0000_0000);
        assert_eq!((p.priority, p.tries, p.successful), (1, 15, false));
    }

    #[test]
    fn gptprio_picks_highest_bootable_priority_first_on_ties() {
        assert_eq!(
            gptprio_choice(&[prio(1, 0, true), prio(2, 1, false)]),
            Some(1)
        );
        assert_eq!(
            gptprio_choice(&[prio(1, 0, true), prio(2, 0, false)]),
            Some(0)
        );
        assert_eq!(
            gptprio_choice(&[prio(2, 1, false), prio(2, 0, true)]),
            Some(0)
        );
        assert_eq!(gptprio_choice(&[prio(0, 3, true), prio(0, 1, false)]), None);
        assert_eq!(
            gptprio_choice(&[prio(5, 0, false), prio(1, 0, false)]),
            None
        );
    }

    #[test]
    fn guid_text_swaps_the_first_three_fields() {
        let bytes = [
            0xf4, 0xf5, 0xfb, 0x5d, 0x48, 0x28, 0xac, 0x4b, 0xaa, 0x5e, 0x0d, 0x9a, 0x20, 0xb7,
            0x45, 0xa6,
        ];
        assert_eq!(guid_text(&bytes), USR_TYPE_GUID);
    }
}
