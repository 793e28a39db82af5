//! The A/B disk rig on real loop devices: GPT slots by sgdisk and by raw bytes, gptprio boots, fallback, release.

use std::fs;
use std::path::PathBuf;

use upd_tests::disk::{Disk, GptPrio, CANARY_BIT, SLOTS, USR_A, USR_B, USR_TYPE_GUID};
use upd_tests::images::{build_os_usr, OsSpec};
use upd_tests::sandbox::{all_loop_devices, require_root, Machine};

const SLOT_SIZE: u64 = 8 << 20;

/// A disk with OS `v1` in USR-A and `v2` in USR-B (attributes as created: A good, B unbootable), and a
/// machine created on v1; the temp dir holds the images.
fn rig() -> (Disk, Machine, tempfile::TempDir) {
    let images = tempfile::tempdir().unwrap();
    let disk = Disk::new(SLOT_SIZE);
    for (label, version) in [(USR_A, "1"), (USR_B, "2")] {
        let img = build_os_usr(&OsSpec::new("upd-os", version), images.path());
        disk.write_slot(label, &img).unwrap();
    }
    let machine = Machine::new(&OsSpec::new("upd-os", "1"));
    (disk, machine, images)
}

/// VERSION_ID of the OS the machine runs, read from its mounted /usr inside its namespace.
fn booted_version(machine: &Machine) -> String {
    let text = fs::read_to_string(machine.ns_root().join("usr/lib/os-release")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .unwrap()
        .to_string()
}

fn cmdline(machine: &Machine) -> String {
    fs::read_to_string(machine.root().join("proc/cmdline")).unwrap()
}

fn fields(p: GptPrio) -> (u8, u8, bool) {
    (p.priority, p.tries, p.successful)
}

#[test]
fn a_fresh_disk_has_two_usr_slots_that_sgdisk_and_the_raw_table_agree_on() {
    // A new disk: sgdisk's view of each slot must match the partition entries read byte by byte.
    if !require_root() {
        return;
    }
    let disk = Disk::new(SLOT_SIZE);
    disk.verify();
    let a = disk.slot(USR_A);
    let b = disk.slot(USR_B);
    assert_eq!((a.index, b.index), (1, 2));
    assert_eq!((a.size, b.size), (SLOT_SIZE, SLOT_SIZE));
    assert!(
        a.offset >= 1 << 20 && a.offset + a.size <= b.offset,
        "{a:?} {b:?}"
    );
    let disk_len = fs::metadata(disk.image_path()).unwrap().len();
    assert!(
        b.offset + b.size <= disk_len - (16 << 10),
        "room for the backup GPT"
    );
    assert_ne!(a.part_uuid, b.part_uuid);
    for slot in [&a, &b] {
        assert_eq!(slot.part_uuid, slot.part_uuid.to_lowercase());
        let (ty, uuid, first, last, attrs) = disk.raw_entry(slot.index);
        assert_eq!(ty, USR_TYPE_GUID);
        assert_eq!(uuid, slot.part_uuid);
        assert_eq!(
            (first * 512, (last + 1) * 512),
            (slot.offset, slot.offset + slot.size)
        );
        let label = SLOTS[slot.index as usize - 1];
        assert_eq!(
            attrs,
            disk.attrs(label).raw,
            "{label}: sgdisk and raw bytes"
        );
        assert_eq!(attrs >> CANARY_BIT & 1, 1, "{label} canary bit");
    }
    assert_eq!(fields(disk.attrs(USR_A)), (1, 0, true));
    assert_eq!(fields(disk.attrs(USR_B)), (0, 0, false));
    assert!(disk.device().to_string_lossy().starts_with("/dev/loop"));
}

#[test]
fn slot_writes_read_back_and_an_oversized_image_is_refused() {
    // An OS image written into USR-B reads back byte for byte; one larger than the slot is refused untouched.
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Disk::new(SLOT_SIZE);
    let img = build_os_usr(&OsSpec::new("upd-os", "7"), dir.path());
    disk.write_slot(USR_B, &img).unwrap();
    let bytes = fs::read(&img).unwrap();
    assert_eq!(disk.read_slot(USR_B, bytes.len() as u64), bytes);

    let big = dir.path().join("big.img");
    fs::File::create(&big)
        .unwrap()
        .set_len(SLOT_SIZE + 1)
        .unwrap();
    let err = disk.write_slot(USR_A, &big).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
    assert_eq!(
        disk.read_slot(USR_A, 4096),
        vec![0u8; 4096],
        "USR-A untouched"
    );
    disk.verify();
}

#[test]
fn set_attrs_changes_only_the_gptprio_bits() {
    // Setting then clearing every gptprio field must leave the canary bit and the other slot alone.
    if !require_root() {
        return;
    }
    let disk = Disk::new(SLOT_SIZE);
    let a_before = disk.attrs(USR_A).raw;
    disk.set_attrs(USR_B, 15, 15, true);
    assert_eq!(fields(disk.attrs(USR_B)), (15, 15, true));
    disk.set_attrs(USR_B, 2, 1, false);
    let b = disk.attrs(USR_B);
    assert_eq!(fields(b), (2, 1, false));
    assert_eq!(b.raw, 1 << CANARY_BIT | 2 << 48 | 1 << 52);
    assert_eq!(disk.attrs(USR_A).raw, a_before);
    assert_eq!(disk.raw_entry(2).4, b.raw, "raw bytes agree with sgdisk");
    disk.verify();
}

#[test]
fn boot_loader_tries_the_new_slot_once_then_falls_back() {
    // v2 staged in USR-B with priority 2 and one try: the first boot takes it and consumes the try; as it
    // was never marked good, the next boot falls back to USR-A (v1), and keeps doing so.
    if !require_root() {
        return;
    }
    let (disk, mut machine, _images) = rig();
    disk.set_attrs(USR_B, 2, 1, false);

    assert_eq!(machine.boot_disk(&disk), USR_B);
    assert_eq!(booted_version(&machine), "2");
    let uuid_b = disk.slot(USR_B).part_uuid;
    assert!(
        cmdline(&machine).contains(&format!(" mount.usr=PARTUUID={uuid_b} ")),
        "{}",
        cmdline(&machine)
    );
    assert_eq!(fields(disk.attrs(USR_B)), (2, 0, false), "one try consumed");

    for _ in 0..2 {
        assert_eq!(machine.boot_disk(&disk), USR_A);
        assert_eq!(booted_version(&machine), "1");
        let uuid_a = disk.slot(USR_A).part_uuid;
        assert!(cmdline(&machine).contains(&format!("mount.usr=PARTUUID={uuid_a} ")));
    }
    assert_eq!(fields(disk.attrs(USR_B)), (2, 0, false));
    assert_eq!(fields(disk.attrs(USR_A)), (1, 0, true));
    for label in SLOTS {
        assert_eq!(disk.attrs(label).raw >> CANARY_BIT & 1, 1, "{label} canary");
    }
    disk.verify();
}

#[test]
fn a_slot_marked_good_keeps_booting_and_the_machine_runs_from_the_disk() {
    // USR-B boots on its one try and is marked successful (what mark-good does): it stays the choice, and
    // the machine's /usr is the slot mounted read-only from the disk's loop device.
    if !require_root() {
        return;
    }
    let (disk, mut machine, _images) = rig();
    disk.set_attrs(USR_B, 2, 1, false);
    assert_eq!(machine.boot_disk(&disk), USR_B);
    disk.set_attrs(USR_B, 2, 0, true);
    assert_eq!(machine.boot_disk(&disk), USR_B);
    assert_eq!(fields(disk.attrs(USR_B)), (2, 0, true), "no try consumed");
    assert_eq!(booted_version(&machine), "2");

    let held = machine.loop_devices();
    assert!(
        !held.is_empty(),
        "the slot is mounted through a loop device"
    );
    let out = machine.sh(&format!("touch '{}/usr/x'", machine.root().display()));
    assert!(!out.status.success(), "/usr is read-only");
    let mounts =
        String::from_utf8_lossy(&machine.sh("cat /proc/self/mountinfo").stdout).into_owned();
    let usr = format!("{}/usr ", machine.root().display());
    let line = mounts.lines().find(|l| l.contains(&usr)).unwrap();
    assert!(line.contains("squashfs"), "{line}");
}

#[test]
fn disk_and_slot_loop_devices_are_released_even_when_a_test_panics() {
    // A test that panics while a machine runs from a slot: afterwards neither the disk's loop device nor the
    // slot's is still attached.
    if !require_root() {
        return;
    }
    let held = std::sync::Mutex::new(Vec::new());
    let image: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let (disk, mut machine, _images) = rig();
        machine.boot_disk(&disk);
        let mut h = held.lock().unwrap();
        h.push(disk.loop_device());
        h.extend(machine.loop_devices());
        *image.lock().unwrap() = Some(disk.image_path());
        drop(h);
        panic!("simulated test failure");
    });
    assert!(result.is_err());
    let held = held.into_inner().unwrap();
    assert_eq!(held.len(), 2, "the disk and the slot mount: {held:?}");
    let now = all_loop_devices();
    let leaked: Vec<_> = held.iter().filter(|l| now.contains(l)).collect();
    assert!(leaked.is_empty(), "loop devices left behind: {leaked:?}");
    let image = image.into_inner().unwrap().unwrap();
    assert!(!image.exists(), "disk image removed with its temp dir");
}
