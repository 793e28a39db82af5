//! Tests of the GPT module against real disk images made by sgdisk, as files and through loop devices.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Run a tool, require success, return its stdout.
pub(super) fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e} (is gdisk / util-linux installed?)"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(super) fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The sgdisk layout of the brief: USR-A and USR-B of 16 MiB, plus unrelated attribute bits (60 on A, 0 on B).
const LAYOUT: &[&str] = &[
    "-n",
    "1:2048:+16M",
    "-c",
    "1:USR-A",
    "-n",
    "2:0:+16M",
    "-c",
    "2:USR-B",
    "-A",
    "1:set:60",
    "-A",
    "2:set:0",
];

/// A 64 MiB image file with LAYOUT, in `dir`.
pub(super) fn make_disk(dir: &Path) -> PathBuf {
    let disk = dir.join("disk.img");
    fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("create image");
    let mut args = LAYOUT.to_vec();
    args.push(path_str(&disk));
    run("sgdisk", &args);
    disk
}

/// What `sgdisk -i N DISK` says about one partition.
#[derive(Debug)]
pub(super) struct Info {
    type_uuid: String,
    part_uuid: String,
    first: u64,
    last: u64,
    pub(super) attributes: u64,
    name: String,
}

pub(super) fn sgdisk_info(disk: &Path, index: u32) -> Info {
    let out = run("sgdisk", &["-i", &index.to_string(), path_str(disk)]);
    let field = |key: &str| -> String {
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} in sgdisk output:\n{out}"));
        line.trim().to_string()
    };
    let word = |key: &str| field(key).split(' ').next().unwrap_or("").to_string();
    Info {
        type_uuid: word("Partition GUID code:").to_lowercase(),
        part_uuid: word("Partition unique GUID:").to_lowercase(),
        first: word("First sector:").parse().expect("first sector"),
        last: word("Last sector:").parse().expect("last sector"),
        attributes: u64::from_str_radix(&field("Attribute flags:"), 16).expect("hex flags"),
        name: field("Partition name:").trim_matches('\'').to_string(),
    }
}

/// Require `sgdisk -v` to find nothing wrong (both headers, both arrays, their CRCs and agreement).
pub(super) fn assert_sgdisk_verifies(disk: &Path) {
    let out = run("sgdisk", &["-v", path_str(disk)]);
    assert!(
        out.contains("No problems found"),
        "sgdisk -v {disk:?}:\n{out}"
    );
}

fn assert_matches_sgdisk(table: &Table, index: u32) {
    let ours = table.partitions.iter().find(|p| p.index == index).unwrap();
    let theirs = sgdisk_info(&table.disk, index);
    assert_eq!(ours.label, theirs.name);
    assert_eq!(ours.part_uuid, theirs.part_uuid);
    assert_eq!(ours.type_uuid, theirs.type_uuid);
    assert_eq!((ours.first_lba, ours.last_lba), (theirs.first, theirs.last));
    assert_eq!(ours.attributes, theirs.attributes, "{ours:?} vs {theirs:?}");
}

pub(super) fn le64_at(bytes: &[u8], at: u64) -> u64 {
    disk::le64(bytes, at as usize)
}

/// Byte ranges that a write of entry `index`'s attributes may change on a 512-byte-sector image:
/// the attribute field in both arrays, and the two CRC fields of both headers.
fn allowed_changes(image: &[u8], index: u64) -> Vec<std::ops::Range<u64>> {
    let backup_lba = le64_at(image, 512 + 32);
    let mut ranges = Vec::new();
    for header in [512, backup_lba * 512] {
        let array = le64_at(image, header + 72) * 512;
        let attr = array + (index - 1) * 128 + 48;
        ranges.push(attr..attr + 8);
        ranges.push(header + 16..header + 20);
        ranges.push(header + 88..header + 92);
    }
    ranges
}

pub(super) fn prio(priority: u8, tries: u8, successful: bool) -> Prio {
    Prio {
        priority,
        tries,
        successful,
    }
}

#[test]
fn gpt_read_finds_slots_as_sgdisk_sees_them() {
    // An image file partitioned by sgdisk with USR-A and USR-B, unrelated attribute bits set.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let table = Table::read(&disk).unwrap();
    assert_eq!(table.sector_size, 512);
    assert_eq!(table.disk, disk);
    let labels: Vec<_> = table.partitions.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["USR-A", "USR-B"]);
    assert_matches_sgdisk(&table, 1);
    assert_matches_sgdisk(&table, 2);
    let a = table.by_label("USR-A").unwrap();
    assert_eq!(
        (a.index, a.offset(512).unwrap(), a.size(512).unwrap()),
        (1, 1 << 20, 16 << 20)
    );
    assert_eq!(a.attributes, 1 << 60);
    assert_eq!(a.prio(), prio(0, 0, false));
    let b = table
        .by_uuid(&table.partitions[1].part_uuid.to_uppercase())
        .unwrap();
    assert_eq!((b.label.as_str(), b.attributes), ("USR-B", 1));
    assert_eq!(b.offset(512), Some(1 << 20 | 16 << 20));
    assert!(table.by_label("USR-C").is_none());
    assert!(table
        .by_uuid("00000000-0000-0000-0000-000000000000")
        .is_none());
}

#[test]
fn gpt_write_changes_only_attributes_and_crcs_in_both_copies() {
    // Give USR-A priority 2 with one try, as an update does, then mark USR-B successful via raw attributes.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let before = fs::read(&disk).unwrap();

    let new = write_prio(&disk, 1, prio(2, 1, false)).unwrap();
    assert_eq!(new, 1 << 60 | 0x0012 << 48, "bit 60 kept, prio bits set");
    let after = fs::read(&disk).unwrap();
    assert_eq!(before.len(), after.len());
    let allowed = allowed_changes(&before, 1);
    let changed: Vec<u64> = (0..before.len() as u64)
        .filter(|&i| before[i as usize] != after[i as usize])
        .collect();
    for i in &changed {
        assert!(allowed.iter().any(|r| r.contains(i)), "byte {i} changed");
    }
    // Byte 6 of the attribute field holds priority and tries: it changed in both arrays.
    assert!(changed.contains(&(allowed[0].start + 6)), "primary array");
    assert!(changed.contains(&(allowed[3].start + 6)), "backup array");
    assert_sgdisk_verifies(&disk);
    assert_eq!(sgdisk_info(&disk, 1).attributes, 0x1012_0000_0000_0000);
    let got = run(
        "sgdisk",
        &["-A", "1:get:48", "-A", "1:get:52", path_str(&disk)],
    );
    assert_eq!(got.lines().collect::<Vec<_>>(), ["1:48:0", "1:52:1"]);

    write_attributes(&disk, 2, prio(1, 0, true).apply(1)).unwrap();
    assert_sgdisk_verifies(&disk);
    let table = Table::read(&disk).unwrap();
    assert_matches_sgdisk(&table, 2);
    assert_eq!(table.by_label("USR-B").unwrap().prio(), prio(1, 0, true));
    assert_eq!(
        table.by_label("USR-B").unwrap().attributes & 1,
        1,
        "bit 0 kept"
    );
    let slots: Vec<Prio> = table.partitions.iter().map(Partition::prio).collect();
    assert_eq!(
        boot_choice(&slots),
        Some(0),
        "USR-A: priority 2, one try left"
    );
}

#[test]
fn gpt_corrupt_primary_is_read_from_the_backup_and_repaired_at_the_next_write() {
    // Flip one bit of the primary header's CRC field: the backup is the table (as for a boot
    // loader); the next write rewrites the primary from it, then both copies carry the change.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let whole = Table::read(&disk).unwrap();
    let mut bytes = fs::read(&disk).unwrap();
    bytes[512 + 16] ^= 1;
    fs::write(&disk, &bytes).unwrap();

    assert_eq!(Table::read(&disk).unwrap(), whole, "read from the backup");
    write_prio(&disk, 1, prio(2, 1, false)).unwrap();
    assert_sgdisk_verifies(&disk);
    assert_eq!(sgdisk_info(&disk, 1).attributes, 0x1012_0000_0000_0000);
    assert_matches_sgdisk(&Table::read(&disk).unwrap(), 2);
}

#[test]
fn gpt_corrupt_backup_is_repaired_from_the_primary_before_a_write() {
    // Change one byte of USR-A's name in the backup entry array only: the primary is the table,
    // and the next write rewrites the backup from it first.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let whole = Table::read(&disk).unwrap();
    let mut bytes = fs::read(&disk).unwrap();
    let backup = le64_at(&bytes, 512 + 32) * 512;
    let array = le64_at(&bytes, backup + 72) * 512;
    bytes[(array + 56) as usize] ^= 0x20;
    fs::write(&disk, &bytes).unwrap();

    assert_eq!(Table::read(&disk).unwrap(), whole);
    write_attributes(&disk, 1, 0).unwrap();
    assert_sgdisk_verifies(&disk);
    let table = Table::read(&disk).unwrap();
    assert_eq!(table.by_label("USR-A").unwrap().attributes, 0);
    assert_matches_sgdisk(&table, 1);
}

#[test]
fn gpt_both_copies_corrupt_are_refused_and_left_alone() {
    // The primary header's CRC and the backup's entry array both damaged: no table to trust;
    // reading names both, writing refuses and writes nothing.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let mut bytes = fs::read(&disk).unwrap();
    let backup = le64_at(&bytes, 512 + 32) * 512;
    let array = le64_at(&bytes, backup + 72) * 512;
    bytes[512 + 16] ^= 1;
    bytes[(array + 56) as usize] ^= 0x20;
    fs::write(&disk, &bytes).unwrap();

    let err = Table::read(&disk).unwrap_err().to_string();
    assert!(err.contains(path_str(&disk)), "{err}");
    assert!(
        err.contains("primary: ")
            && err.contains("header CRC32")
            && err.contains("entry array CRC32"),
        "{err}"
    );
    let err = write_prio(&disk, 1, prio(2, 1, false)).unwrap_err();
    assert!(matches!(err, GptError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&disk).unwrap(), bytes, "nothing written");
}

#[test]
fn gpt_missing_table_and_missing_partition_are_errors() {
    // A blank file has no GPT; a partitioned one has no entry 3, 0 or 129.
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.img");
    fs::write(&blank, vec![0; 1 << 20]).unwrap();
    let err = Table::read(&blank).unwrap_err().to_string();
    assert!(
        err.contains("EFI PART") && err.contains(path_str(&blank)),
        "{err}"
    );
    let err = Table::read(&dir.path().join("absent.img")).unwrap_err();
    assert!(matches!(err, GptError::Io { op: "open", .. }), "{err}");

    let disk = make_disk(dir.path());
    let before = fs::read(&disk).unwrap();
    for index in [0, 3, 129] {
        let err = write_attributes(&disk, index, 1).unwrap_err();
        assert!(
            matches!(err, GptError::NoPartition { index: i, .. } if i == index),
            "{err}"
        );
    }
    assert_eq!(fs::read(&disk).unwrap(), before);
}

/// Whether a root-only test may run; under CI=true it must, so a non-root CI fails loudly.
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test} needs root (losetup) and must run under CI"
    );
    eprintln!("SKIPPED {test}: needs root for losetup; loop devices are NOT covered by this run");
    false
}

/// A loop device attached for one test, detached on drop (also when the test fails).
struct LoopDev(PathBuf);

impl LoopDev {
    fn attach(image: &Path, extra: &[&str]) -> LoopDev {
        let mut args = extra.to_vec();
        args.extend(["--find", "--show", path_str(image)]);
        LoopDev(PathBuf::from(run("losetup", &args).trim()))
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn gpt_reads_and_writes_through_a_loop_device() {
    // The image of the brief attached to /dev/loopN: read and write through the block device.
    if !root_or_skip("gpt_reads_and_writes_through_a_loop_device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = make_disk(dir.path());
    let dev = LoopDev::attach(&image, &[]);
    let table = Table::read(&dev.0).unwrap();
    assert_eq!(
        (table.disk.as_path(), table.sector_size),
        (dev.0.as_path(), 512)
    );
    assert_matches_sgdisk(&table, 1);
    let b = table.by_label("USR-B").unwrap().index;
    write_prio(&dev.0, b, prio(3, 2, false)).unwrap();
    assert_eq!(
        Table::read(&dev.0).unwrap().partitions[1].prio(),
        prio(3, 2, false)
    );
    drop(dev);
    // Detached: the image file itself carries the change, both copies valid.
    assert_sgdisk_verifies(&image);
    assert_eq!(sgdisk_info(&image, 2).attributes, 0x0023_0000_0000_0001);
}

#[test]
fn gpt_uses_the_kernel_sector_size_of_a_4k_loop_device() {
    // A loop device with 4096-byte sectors, partitioned by sgdisk through the device.
    if !root_or_skip("gpt_uses_the_kernel_sector_size_of_a_4k_loop_device") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("4k.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .unwrap();
    let dev = LoopDev::attach(&image, &["--sector-size", "4096"]);
    let layout = [
        "-n", "1:0:+16M", "-c", "1:USR-A", "-n", "2:0:+16M", "-c", "2:USR-B",
    ];
    let mut args = layout.to_vec();
    args.push(path_str(&dev.0));
    run("sgdisk", &args);

    let table = Table::read(&dev.0).unwrap();
    assert_eq!(table.sector_size, 4096);
    assert_matches_sgdisk(&table, 2);
    let b = table.by_label("USR-B").unwrap();
    assert_eq!(b.size(table.sector_size), Some(16 << 20));
    write_prio(&dev.0, b.index, prio(1, 1, false)).unwrap();
    assert_sgdisk_verifies(&dev.0);
    assert_eq!(sgdisk_info(&dev.0, 2).attributes, 0x0011_0000_0000_0000);
}

/// Both copies of a 512-byte-sector image changed by `f(header, array)`, each CRC recomputed:
/// a table that every CRC check accepts, whatever its fields say.
fn patched(image: &[u8], f: impl Fn(&mut [u8], &mut [u8])) -> Vec<u8> {
    let mut bytes = image.to_vec();
    for header_at in [512, le64_at(image, 512 + 32) * 512] {
        let h = header_at as usize;
        let array = le64_at(&bytes, header_at + 72) as usize * 512;
        let len = (disk::le64(&bytes, h + 80) as u32 as usize) * 128;
        let mut header = bytes[h..h + 92].to_vec();
        let mut entries = bytes[array..array + len].to_vec();
        f(&mut header, &mut entries);
        let crc = crc32fast::hash(&entries);
        header[88..92].copy_from_slice(&crc.to_le_bytes());
        header[16..20].fill(0);
        let crc = crc32fast::hash(&header);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        bytes[h..h + 92].copy_from_slice(&header);
        bytes[array..array + len].copy_from_slice(&entries);
    }
    bytes
}

/// A change to a header (its first 92 bytes) and its entry array, for [`patched`].
type Patch = Box<dyn Fn(&mut [u8], &mut [u8])>;

fn set64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn gpt_partition_offset_and_size_never_overflow() {
    // Absurd LBAs in an entry: the byte offset and size are None, not a wrapped number (or an
    // overflow panic in a debug build), and a last LBA before the first is no size at all.
    let mut p = Partition {
        index: 1,
        label: "USR-A".into(),
        part_uuid: String::new(),
        type_uuid: String::new(),
        first_lba: u64::MAX / 512 + 1,
        last_lba: u64::MAX,
        attributes: 0,
    };
    assert_eq!(p.offset(512), None);
    assert_eq!(p.size(512), None);
    assert_eq!(p.offset(1), Some(u64::MAX / 512 + 1));
    p.first_lba = 0;
    assert_eq!(p.size(1), None, "2^64 bytes");
    (p.first_lba, p.last_lba) = (10, 9);
    assert_eq!(p.size(512), None);
    (p.first_lba, p.last_lba) = (10, 10);
    assert_eq!((p.offset(4096), p.size(4096)), (Some(40960), Some(4096)));
}

#[test]
fn gpt_entries_outside_the_disk_or_reversed_are_refused_naming_the_field() {
    // Entries with valid CRCs but LBAs that cannot be: refused by name, before any byte offset
    // is computed from them; a write refuses too and leaves the disk as it was.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let whole = fs::read(&disk).unwrap();
    const ENTRY2: usize = 128;
    let cases: [(&str, Patch, &str); 5] = [
        (
            "last LBA 2^64-1",
            Box::new(|_, a| set64(a, ENTRY2 + 40, u64::MAX)),
            "partition 2 (\"USR-B\"): LBAs 34816..=18446744073709551615 are outside the usable LBAs 34..=131038",
        ),
        (
            "first LBA past the last",
            Box::new(|_, a| set64(a, ENTRY2 + 32, 70000)),
            "partition 2 (\"USR-B\"): first LBA 70000 is after its last LBA 67583",
        ),
        (
            "first LBA 2^61 (x 512 overflows u64)",
            Box::new(|_, a| {
                set64(a, ENTRY2 + 32, 1 << 61);
                set64(a, ENTRY2 + 40, 1 << 61);
            }),
            "LBAs 2305843009213693952..=2305843009213693952 are outside the usable LBAs",
        ),
        (
            "last usable LBA past the disk",
            Box::new(|h, _| set64(h, 48, u64::MAX)),
            "last usable LBA 18446744073709551615 is past the end of the disk (131072 sectors of 512 bytes)",
        ),
        (
            "first usable after last usable",
            Box::new(|h, _| set64(h, 40, 131_000 + 39)),
            "first usable LBA 131039 is after the last usable LBA 131038",
        ),
    ];
    for (case, f, want) in cases {
        fs::write(&disk, patched(&whole, f)).unwrap();
        let before = fs::read(&disk).unwrap();
        let err = Table::read(&disk).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains(path_str(&disk)),
            "{case}: {err}"
        );
        let err = write_prio(&disk, 1, prio(2, 1, false))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{case}: {err}");
        assert_eq!(fs::read(&disk).unwrap(), before, "{case}: nothing written");
    }
}

#[test]
fn gpt_structures_over_the_usable_range_are_refused() {
    // A primary array reaching into the first usable LBA, a backup header inside the usable
    // range: a write would land in a partition's bytes, so the table is refused.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let whole = fs::read(&disk).unwrap();
    let cases: [(&str, Patch, &str); 2] = [
        (
            "first usable LBA 33, inside the primary array",
            Box::new(|h, _| set64(h, 40, 33)),
            "the primary partition entry array (LBA 2..34) is not between the primary header at LBA 1 and the first usable LBA 33",
        ),
        (
            "last usable LBA over the backup",
            Box::new(|h, _| set64(h, 48, 131_070)),
            "the backup GPT (header at LBA 131071, entry array at LBA 131039..131071) is not between the last usable LBA 131070",
        ),
    ];
    for (case, f, want) in cases {
        fs::write(&disk, patched(&whole, f)).unwrap();
        let err = Table::read(&disk).unwrap_err().to_string();
        assert!(err.contains(want), "{case}: {err}");
    }
}

#[test]
fn gpt_image_in_memory_reads_and_writes_like_the_file() {
    // The in-memory image (the fuzz target's way in) gives the file's table and makes the
    // same bytes as a write to the file.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let mut image = Image {
        bytes: fs::read(&disk).unwrap(),
        sector: 512,
    };
    let from_file = Table::read(&disk).unwrap();
    let from_image = image.table().unwrap();
    assert_eq!(from_image.partitions, from_file.partitions);
    assert_eq!(from_image.disk, Path::new(Image::PATH));
    write_attributes(&disk, 2, 7).unwrap();
    image.write_attributes(2, 7).unwrap();
    assert!(
        image.bytes == fs::read(&disk).unwrap(),
        "same bytes written"
    );
    let err = image.write_attributes(3, 7).unwrap_err();
    assert!(
        matches!(err, GptError::NoPartition { index: 3, .. }),
        "{err}"
    );
}
