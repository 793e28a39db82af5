//! Torn writes: each prefix of the writes of one attribute change applied, as a power cut leaves the disk.

use std::fs;
use std::path::Path;

use super::disk::WRITES;
use super::tests::{assert_sgdisk_verifies, make_disk, prio, sgdisk_info};
use super::*;

/// Run `f` and return the disk writes it made, in order.
fn recorded(f: impl FnOnce()) -> Vec<(u64, Vec<u8>)> {
    WRITES.with(|w| *w.borrow_mut() = Some(Vec::new()));
    f();
    WRITES.with(|w| w.borrow_mut().take()).expect("recording")
}

/// `before` with the first `k` of `writes` applied.
fn prefix(before: &[u8], writes: &[(u64, Vec<u8>)], k: usize) -> Vec<u8> {
    let mut bytes = before.to_vec();
    for (at, w) in &writes[..k] {
        let at = usize::try_from(*at).unwrap();
        bytes[at..at + w.len()].copy_from_slice(w);
    }
    bytes
}

/// The attributes of both slots as upd reads them, checked against what sgdisk (which, like a
/// boot loader, takes the primary if valid, else the backup) reads from the same bytes.
fn attributes(disk: &Path) -> [u64; 2] {
    let t = Table::read(disk).unwrap_or_else(|e| panic!("{e}"));
    let ours = [t.partitions[0].attributes, t.partitions[1].attributes];
    let theirs = [
        sgdisk_info(disk, 1).attributes,
        sgdisk_info(disk, 2).attributes,
    ];
    assert_eq!(ours, theirs, "upd and sgdisk read different tables");
    ours
}

/// Cut `change` after each prefix of its writes, starting from the disk bytes `before`: every
/// prefix reads as the old or the new table (never an error, never a mix), the same for upd and
/// sgdisk; and running the change again then completes it with both copies whole.
/// Returns the attributes read at each prefix.
fn each_prefix(disk: &Path, before: &[u8], change: impl Fn()) -> Vec<[u64; 2]> {
    fs::write(disk, before).unwrap();
    let old = attributes(disk);
    let writes = recorded(&change);
    let new = attributes(disk);
    assert_ne!(old, new);
    let mut seen = Vec::new();
    for k in 0..=writes.len() {
        fs::write(disk, prefix(before, &writes, k)).unwrap();
        let got = attributes(disk);
        assert!(got == old || got == new, "prefix {k}: {got:x?}");
        seen.push(got);
        change();
        assert_eq!(attributes(disk), new, "rerun after prefix {k}");
        assert_sgdisk_verifies(disk);
    }
    seen
}

#[test]
fn gpt_torn_write_reads_old_until_the_primary_breaks_then_new() {
    // Give USR-A priority 2 with one try, cut after each of the 6 writes (backup: attribute,
    // array CRC, header CRC; then the primary's three).
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let before = fs::read(&disk).unwrap();
    let arm = || {
        write_prio(&disk, 1, prio(2, 1, false)).unwrap();
    };
    let seen = each_prefix(&disk, &before, arm);
    assert_eq!(seen.len(), 7, "six writes");
    let (old, new) = (seen[0], seen[6]);
    // Backup written whole, primary untouched: the valid primary wins, the change did not happen.
    assert_eq!(&seen[..4], [old; 4]);
    // The primary's array written but not its CRCs: it is invalid, the new backup wins.
    assert_eq!(&seen[4..], [new; 3]);
}

#[test]
fn gpt_torn_write_over_a_stale_backup_repairs_it_first() {
    // The disk as a cut between the two copies leaves it (backup new, primary old), then the
    // next change (USR-B successful) repairs the backup from the primary before writing: cut
    // after each of those writes too.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let whole = fs::read(&disk).unwrap();
    let writes = recorded(|| {
        write_prio(&disk, 1, prio(2, 1, false)).unwrap();
    });
    let stale = prefix(&whole, &writes, 3);
    let good = || {
        write_prio(&disk, 2, prio(2, 0, true)).unwrap();
    };
    let seen = each_prefix(&disk, &stale, good);
    assert_eq!(
        seen.len(),
        2 + 6 + 1,
        "array and header of the repair, then six writes"
    );
    // USR-A never reads as armed: the primary, which never had it, stays the truth throughout.
    assert!(seen.iter().all(|a| a[0] == 1 << 60), "{seen:x?}");
}

#[test]
fn gpt_torn_write_over_a_broken_primary_repairs_it_first() {
    // The disk as a cut inside the primary's write leaves it (backup new, primary array written,
    // CRCs not), then the next change repairs the primary from the backup: cut after each write.
    let dir = tempfile::tempdir().unwrap();
    let disk = make_disk(dir.path());
    let whole = fs::read(&disk).unwrap();
    let writes = recorded(|| {
        write_prio(&disk, 1, prio(2, 1, false)).unwrap();
    });
    let torn = prefix(&whole, &writes, 4);
    let good = || {
        write_prio(&disk, 2, prio(2, 0, true)).unwrap();
    };
    let seen = each_prefix(&disk, &torn, good);
    assert_eq!(seen.len(), 2 + 6 + 1);
    // USR-A always reads as armed: the backup that had it is the truth, then the repaired primary.
    assert!(
        seen.iter().all(|a| a[0] == 1 << 60 | 0x0012 << 48),
        "{seen:x?}"
    );
}
