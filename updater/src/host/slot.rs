//! The two OS slots (USR-A / USR-B) on the configured disk: which one booted, their gptprio
//! attributes, and reading a staged slot back (its bytes and its os-release).

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use upd_channels::osrelease::OsRelease;
use upd_image as image;

use crate::host::gpt::{self, GptError, Prio, Table};
use crate::host::machine::Machine;

/// Priority of the slot that should boot next; the other slot gets [`LOW`].
pub const TOP: u8 = 2;
/// Priority of the fallback slot.
pub const LOW: u8 = 1;

/// What can go wrong with the slots.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// `DISK` is not configured.
    #[error(
        "OS (A/B) updates need DISK= in the configuration: the disk holding the {0} partitions"
    )]
    NoDisk(String),
    /// The partition table.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// A slot label is not on the disk.
    #[error("disk {disk} has no partition labelled {label} (partitions: {found})")]
    NoSlot {
        /// The disk.
        disk: PathBuf,
        /// The label looked for.
        label: String,
        /// Labels present.
        found: String,
    },
    /// The booted slot cannot be told.
    #[error("cannot tell which OS slot booted: {0}")]
    Booted(String),
    /// A process or file operation.
    #[error("{what}: {why}")]
    Io {
        /// What was being done.
        what: String,
        /// What went wrong.
        why: String,
    },
    /// The bytes read back from the slot differ from the signed image.
    #[error("slot {label} on {disk} reads back SHA-256 {actual}, the signed image is {expected}")]
    ReadBack {
        /// Slot label.
        label: String,
        /// The disk.
        disk: PathBuf,
        /// Expected digest, hex.
        expected: String,
        /// Digest read back, hex.
        actual: String,
    },
    /// The slot's file system could not be read.
    #[error("reading os-release from slot {label}: {source}")]
    Image {
        /// Slot label.
        label: String,
        /// The reader's error.
        #[source]
        source: image::ImageError,
    },
}

fn io(what: impl Into<String>, why: impl ToString) -> SlotError {
    SlotError::Io {
        what: what.into(),
        why: why.to_string(),
    }
}

/// One slot as found on the disk now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotInfo {
    /// Partition label.
    pub label: String,
    /// 1-based partition number.
    pub index: u32,
    /// Partition UUID, lower case.
    pub part_uuid: String,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// gptprio attributes.
    pub prio: Prio,
}

/// The slots of one machine's disk.
#[derive(Debug, Clone)]
pub struct Slots {
    /// The disk (host path).
    pub disk: PathBuf,
    labels: [String; 2],
}

impl Slots {
    /// The machine's slots, or `None` when `DISK` is not configured (extension-only machine).
    pub fn of(m: &Machine) -> Option<Slots> {
        m.settings.disk.as_ref().map(|d| Slots {
            disk: d.clone(),
            labels: m.settings.slot_labels.clone(),
        })
    }

    /// The machine's slots, or an error naming the missing setting.
    pub fn require(m: &Machine) -> Result<Slots, SlotError> {
        Self::of(m).ok_or_else(|| SlotError::NoDisk(m.settings.slot_labels.join("/")))
    }

    /// Both slot labels.
    pub fn labels(&self) -> &[String; 2] {
        &self.labels
    }

    /// The other slot's label.
    pub fn other(&self, label: &str) -> &str {
        if self.labels[0] == label {
            &self.labels[1]
        } else {
            &self.labels[0]
        }
    }

    /// Read one slot from the partition table.
    pub fn slot(&self, label: &str) -> Result<SlotInfo, SlotError> {
        let table = Table::read(&self.disk)?;
        self.slot_in(&table, label)
    }

    fn slot_in(&self, table: &Table, label: &str) -> Result<SlotInfo, SlotError> {
        let p = table.by_label(label).ok_or_else(|| SlotError::NoSlot {
            disk: self.disk.clone(),
            label: label.to_string(),
            found: table
                .partitions
                .iter()
                .map(|p| p.label.clone())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        // Table::read refuses a partition outside the disk, so neither is None for a read table.
        let bytes = |n: Option<u64>, field: &str| {
            n.ok_or_else(|| {
                SlotError::Gpt(GptError::Corrupt {
                    disk: self.disk.clone(),
                    what: "GPT partition entry",
                    problem: format!(
                        "partition {} ({label}): its {field} (LBAs {}..={}, {}-byte sectors) does not fit in 64 bits",
                        p.index, p.first_lba, p.last_lba, table.sector_size
                    ),
                })
            })
        };
        Ok(SlotInfo {
            label: label.to_string(),
            index: p.index,
            part_uuid: p.part_uuid.clone(),
            offset: bytes(p.offset(table.sector_size), "byte offset")?,
            size: bytes(p.size(table.sector_size), "byte size")?,
            prio: p.prio(),
        })
    }

    /// Both slots, in label order.
    pub fn both(&self) -> Result<[SlotInfo; 2], SlotError> {
        let table = Table::read(&self.disk)?;
        Ok([
            self.slot_in(&table, &self.labels[0])?,
            self.slot_in(&table, &self.labels[1])?,
        ])
    }

    /// The slot that booted: `BOOTED_SLOT`, else `mount.usr=` / `usr=` of the kernel command line
    /// (PARTUUID=, PARTLABEL=, or a /dev/disk/by-partuuid|by-partlabel path).
    pub fn booted(&self, m: &Machine) -> Result<String, SlotError> {
        if let Some(l) = &m.settings.booted_slot {
            self.slot(l)?;
            return Ok(l.clone());
        }
        let path = m.root.join(&m.settings.kernel_cmdline);
        let text = fs::read_to_string(&path)
            .map_err(|e| SlotError::Booted(format!("reading {}: {e}", path.display())))?;
        let usr = usr_device(&text).ok_or_else(|| {
            SlotError::Booted(format!(
                "{} has no mount.usr= or usr= (set BOOTED_SLOT to override)",
                path.display()
            ))
        })?;
        let table = Table::read(&self.disk)?;
        let part = match &usr {
            UsrDevice::Uuid(u) => table.by_uuid(u),
            UsrDevice::Label(l) => table.by_label(l),
        }
        .ok_or_else(|| {
            SlotError::Booted(format!(
                "the kernel booted /usr from {usr:?}, which is not a partition of {}",
                self.disk.display()
            ))
        })?;
        if !self.labels.contains(&part.label) {
            return Err(SlotError::Booted(format!(
                "the kernel booted /usr from partition {} ({}), not one of the slots {}",
                part.index,
                part.label,
                self.labels.join("/")
            )));
        }
        Ok(part.label.clone())
    }

    /// Write `f`'s gptprio bits for `label`; also when they are unchanged, so that a GPT copy
    /// left damaged by a cut write is made whole (a no-op on a whole disk).
    fn set(&self, label: &str, f: impl FnOnce(Prio) -> Prio) -> Result<(), SlotError> {
        let p = self.slot(label)?;
        gpt::write_prio(&self.disk, p.index, f(p.prio))?;
        Ok(())
    }

    /// Make `label` unbootable (priority, tries and successful cleared) before it is overwritten.
    pub fn disarm(&self, label: &str) -> Result<(), SlotError> {
        self.set(label, |_| Prio {
            priority: 0,
            tries: 0,
            successful: false,
        })
    }

    /// Give a freshly staged slot the next boot with one try; the other slot stays the fallback.
    pub fn arm(&self, label: &str) -> Result<(), SlotError> {
        self.set(self.other(label), |p| Prio {
            priority: p.priority.min(LOW),
            ..p
        })?;
        self.set(label, |_| Prio {
            priority: TOP,
            tries: 1,
            successful: false,
        })
    }

    /// The booted slot proved good: successful, top priority; the other slot is the fallback.
    pub fn mark_successful(&self, label: &str) -> Result<(), SlotError> {
        self.set(label, |_| Prio {
            priority: TOP,
            tries: 0,
            successful: true,
        })?;
        self.set(self.other(label), |p| Prio {
            priority: p.priority.min(LOW),
            ..p
        })
    }

    /// Boot `label` next (a known-good slot: rollback, or sending a bad boot back).
    pub fn prioritize(&self, label: &str) -> Result<(), SlotError> {
        self.set(self.other(label), |p| Prio {
            priority: p.priority.min(LOW),
            ..p
        })?;
        self.set(label, |p| Prio { priority: TOP, ..p })
    }

    /// SHA-256 of the first `len` bytes of the slot, read from the medium: with `O_DIRECT`
    /// (no page cache at all; reading and hashing overlap), or where the disk refuses it after
    /// dropping the range's cached pages.
    pub fn read_back(&self, slot: &SlotInfo, len: u64) -> Result<[u8; 32], SlotError> {
        let what = || {
            format!(
                "reading back slot {} of {}",
                slot.label,
                self.disk.display()
            )
        };
        match crate::host::direct_read::sha256_range(&self.disk, slot.offset, len) {
            Ok(Some(d)) => return Ok(d),
            Ok(None) => {}
            Err(e) => return Err(io(what(), e)),
        }
        let mut f = File::open(&self.disk).map_err(|e| io(what(), e))?;
        // Drop cached pages, so the bytes come from the medium and not from what we just wrote.
        if let (Ok(off), Ok(n)) = (i64::try_from(slot.offset), i64::try_from(len)) {
            // Advisory: should it fail, the read-back may come from the cache, as before.
            let _ = nix::fcntl::posix_fadvise(
                f.as_raw_fd(),
                off,
                n,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(slot.offset))
            .map_err(|e| io(what(), e))?;
        let mut ctx = Context::new(&SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = f.read(&mut buf[..want]).map_err(|e| io(what(), e))?;
            if n == 0 {
                return Err(io(what(), "the disk ended early"));
            }
            ctx.update(&buf[..n]);
            left -= n as u64;
        }
        Ok(ctx.finish().as_ref().try_into().expect("32 bytes"))
    }

    /// The os-release inside the slot, read through a read-only loop device over the slot's range.
    pub fn os_release(&self, slot: &SlotInfo) -> Result<OsRelease, SlotError> {
        let dev = LoopDevice::attach(&self.disk, slot.offset, slot.size)?;
        crate::host::failpoint::hit("stage-loop-attached");
        image::read_os_release(&dev.path).map_err(|source| SlotError::Image {
            label: slot.label.clone(),
            source,
        })
    }

    /// The major version of the systemd the OS in `slot` carries (None: none recognised).
    pub fn systemd_version(&self, slot: &SlotInfo) -> Result<Option<u32>, SlotError> {
        let dev = LoopDevice::attach(&self.disk, slot.offset, slot.size)?;
        image::systemd_version(&dev.path).map_err(|source| SlotError::Image {
            label: slot.label.clone(),
            source,
        })
    }
}

/// A read-only loop device over a byte range, attached with the kernel's autoclear flag and held
/// open: the kernel detaches it when the last descriptor closes, so a SIGKILL (or any exit) leaves
/// no device behind. (Attached by `losetup` and detached on drop, every kill while it was held
/// left one attached for good, holding the disk open.)
struct LoopDevice {
    path: PathBuf,
    /// Held until drop; its close detaches the device.
    _held: File,
}

/// `<linux/loop.h>`: the ioctls and flags used here.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (its fields are read by the kernel only).
#[repr(C)]
#[allow(dead_code)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8; read by the kernel only).
#[repr(C)]
#[allow(dead_code)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

impl LoopDevice {
    /// Attach a read-only, autoclearing loop device over `size` bytes of `disk` at `offset`, in
    /// one LOOP_CONFIGURE on a device this process already holds open (a kill at any instant
    /// leaves nothing attached). Another process can take the free device found between the
    /// query and the configure (EBUSY): retried a few times.
    // The loop ioctls have no safe wrapper in nix or libc; the loopdev crates attach in two
    // ioctls (LOOP_SET_FD, then LOOP_SET_STATUS64 with the flags), and a kill between the two
    // leaves a device attached without autoclear: the one LOOP_CONFIGURE here has no such gap.
    #[allow(unsafe_code)]
    fn attach(disk: &Path, offset: u64, size: u64) -> Result<Self, SlotError> {
        const ATTEMPTS: u32 = 5;
        let what = || format!("attaching a loop device to {}", disk.display());
        let backing = File::open(disk).map_err(|e| io(what(), e))?;
        let control = File::open("/dev/loop-control").map_err(|e| io(what(), e))?;
        let mut attempt = 1;
        loop {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(io(what(), std::io::Error::last_os_error()));
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let held = File::open(&path).map_err(|e| io(what(), e))?;
            let mut info = LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: size,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            };
            let name = disk.as_os_str().as_encoded_bytes();
            let len = name.len().min(info.lo_file_name.len() - 1);
            info.lo_file_name[..len].copy_from_slice(&name[..len]);
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is (repr(C),
            // the kernel's layout), alive for the call.
            let r = unsafe { libc::ioctl(held.as_raw_fd(), LOOP_CONFIGURE as _, &config) };
            if r == 0 {
                return Ok(Self { path, _held: held });
            }
            let why = std::io::Error::last_os_error();
            if why.raw_os_error() != Some(libc::EBUSY) || attempt == ATTEMPTS {
                return Err(io(what(), why));
            }
            tracing::debug!(attempt, %why, "loop device taken meanwhile; retrying");
            std::thread::sleep(std::time::Duration::from_millis(50 * u64::from(attempt)));
            attempt += 1;
        }
    }
}

/// The /usr device named on a kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsrDevice {
    /// By partition UUID (lower case).
    Uuid(String),
    /// By partition label.
    Label(String),
}

/// The words of a kernel command line as systemd splits it (`proc_cmdline_parse`, whose
/// generators mount /usr): separated by spaces, tabs and newlines outside quotes; a `"` or `'` opens a quote
/// that the same character closes, anywhere in a word, and the quote characters are dropped
/// (`mount.usr="PARTLABEL=USR A"` and `"mount.usr=PARTLABEL=USR A"` are one word,
/// `mount.usr=PARTLABEL=USR A`); a quote left open runs to the end of the line; a backslash is
/// an ordinary character.
pub fn cmdline_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in cmdline.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if matches!(c, ' ' | '\t' | '\n' | '\r') => words.extend(word.take()),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The last `mount.usr=` (else `usr=`) of a kernel command line, as a partition reference.
pub fn usr_device(cmdline: &str) -> Option<UsrDevice> {
    let words = cmdline_words(cmdline);
    let pick = |key: &str| words.iter().filter_map(|w| w.strip_prefix(key)).next_back();
    let v = pick("mount.usr=").or_else(|| pick("usr="))?;
    let uuid = |u: &str| Some(UsrDevice::Uuid(u.to_ascii_lowercase()));
    let label = |l: &str| Some(UsrDevice::Label(l.to_string()));
    if let Some(u) = v.strip_prefix("PARTUUID=") {
        return uuid(u);
    }
    if let Some(l) = v.strip_prefix("PARTLABEL=") {
        return label(l);
    }
    if let Some(u) = v.strip_prefix("/dev/disk/by-partuuid/") {
        return uuid(u);
    }
    if let Some(l) = v.strip_prefix("/dev/disk/by-partlabel/") {
        return label(l);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usr_device_from_cmdline() {
        let u = "7130c94a-213a-4e5a-8e26-6cce9662f132";
        let cases: [(&str, Option<UsrDevice>); 7] = [
            (
                "root=LABEL=ROOT mount.usr=PARTUUID=7130C94A-213A-4E5A-8E26-6CCE9662F132 ro",
                Some(UsrDevice::Uuid(u.into())),
            ),
            (
                "usr=PARTLABEL=USR-B quiet",
                Some(UsrDevice::Label("USR-B".into())),
            ),
            (
                "mount.usr=/dev/disk/by-partlabel/USR-A",
                Some(UsrDevice::Label("USR-A".into())),
            ),
            (
                &format!("mount.usr=/dev/disk/by-partuuid/{u}"),
                Some(UsrDevice::Uuid(u.into())),
            ),
            // mount.usr= wins over usr=, and the last one counts, like the kernel's parser.
            (
                "mount.usr=PARTLABEL=USR-A usr=PARTLABEL=USR-B mount.usr=PARTLABEL=USR-B",
                Some(UsrDevice::Label("USR-B".into())),
            ),
            ("mount.usr=/dev/sda3", None),
            ("root=/dev/sda1 ro", None),
        ];
        for (line, want) in cases {
            assert_eq!(usr_device(line), want, "{line}");
        }
    }

    #[test]
    fn usr_device_quoted_as_systemd_reads_it() {
        // Quotes group words and are dropped, wherever they are, as systemd's generators read
        // the line; before, a quoted word was cut at its space or not seen at all.
        let label = |l: &str| Some(UsrDevice::Label(l.into()));
        let cases: [(&str, Option<UsrDevice>); 7] = [
            ("mount.usr=\"PARTLABEL=USR A\" ro", label("USR A")),
            ("\"mount.usr=PARTLABEL=USR-A\"", label("USR-A")),
            (
                "mount.usr=PARTLABEL=\"USR B\" usr=PARTLABEL=X",
                label("USR B"),
            ),
            ("mount.usr='PARTLABEL=a \"b\"'", label("a \"b\"")),
            // A quoted word's space does not start a new key: no usr= here.
            ("root=\"x usr=PARTLABEL=USR-B\"", None),
            // A quote left open runs to the end of the line.
            ("mount.usr=\"PARTLABEL=USR-A ro", label("USR-A ro")),
            ("mount.usr=\"\"", None),
        ];
        for (line, want) in cases {
            assert_eq!(usr_device(line), want, "{line}");
        }
    }
}
