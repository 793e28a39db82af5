//! The real systemd-sysext 252 on sandbox machines: merging, silent skips, verification, reboots, isolation.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use upd::host::sysext::{is_merged, verify_merged, Sysext, SysextError};
use upd_tests::images::{build_os_usr, build_sysext, populate_usr_dir, OsSpec, SysextSpec};
use upd_tests::sandbox::{all_loop_devices, require_root, Machine};

fn debian12() -> OsSpec {
    OsSpec::new("debian", "12")
}

/// Build `spec` into the machine's store and link it as ROOT/etc/extensions/NAME.raw, the way upd does
/// (absolute link, interpreted relative to the machine's root).
fn install(machine: &Machine, spec: &SysextSpec) -> PathBuf {
    let store = machine.root().join("var/lib/upd/images").join(&spec.name);
    fs::create_dir_all(&store).unwrap();
    let image = build_sysext(spec, &store);
    let target = Path::new("/").join(image.strip_prefix(machine.root()).unwrap());
    std::os::unix::fs::symlink(
        &target,
        machine
            .root()
            .join("etc/extensions")
            .join(format!("{}.raw", spec.name)),
    )
    .unwrap();
    image
}

fn expect_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn expected(specs: &[&SysextSpec]) -> BTreeMap<String, Vec<u8>> {
    specs
        .iter()
        .map(|s| (s.name.clone(), s.release_content()))
        .collect()
}

#[test]
fn squashfs_and_erofs_extensions_merge_and_their_programs_run() {
    // A Debian-12 machine with two linked extensions, one squashfs and one erofs, merged by the real binary.
    if !require_root() {
        return;
    }
    let machine = Machine::new(&debian12());
    let tools = SysextSpec::new("tools", "1.0", "debian", "12");
    let extras = SysextSpec::new("extras", "2.1", "debian", "12").erofs();
    install(&machine, &tools);
    install(&machine, &extras);

    let listed = Sysext::new(machine.sysext_bin(), machine.root())
        .list()
        .unwrap();
    let mut names: Vec<&str> = listed.iter().map(|i| i.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["extras", "tools"]);

    expect_ok(&machine.sysext(&["merge"]), "merge");
    assert_eq!(machine.merged_names(), ["extras", "tools"]);
    assert_eq!(machine.run_program("tools"), "tools 1.0\n");
    assert_eq!(machine.run_program("extras"), "extras 2.1\n");
    verify_merged(&machine.ns_root(), &expected(&[&tools, &extras])).unwrap();
    // The merge lives in the machine's namespace only: the host's view of ROOT/usr is untouched.
    assert!(!machine.root().join("usr/bin/tools").exists());
    assert!(!is_merged(&machine.root()).unwrap());
}

#[test]
fn image_built_for_another_version_id_is_silently_skipped_by_252() {
    // A Debian-12 machine with one matching extension and one built for VERSION_ID=13: 252 exits 0 and merges
    // only the matching one. This is the behaviour upd must guard against by checking before and after.
    if !require_root() {
        return;
    }
    let machine = Machine::new(&debian12());
    install(&machine, &SysextSpec::new("good", "1", "debian", "12"));
    install(&machine, &SysextSpec::new("future", "1", "debian", "13"));

    let out = machine.sysext(&["merge"]);
    expect_ok(&out, "merge");
    assert_eq!(machine.merged_names(), ["good"]);
    assert!(
        !machine.try_program("future").status.success(),
        "the skipped extension's program must be absent"
    );
}

#[test]
fn refresh_then_verify_merged_names_the_missing_extension() {
    // upd's own runner refreshes a machine where one of the expected extensions is incompatible; the refresh
    // succeeds and verify_merged reports exactly which one is missing.
    if !require_root() {
        return;
    }
    let machine = Machine::new(&debian12());
    let good = SysextSpec::new("good", "1", "debian", "12");
    let future = SysextSpec::new("future", "1", "debian", "13");
    install(&machine, &good);
    install(&machine, &future);
    let sysext = Sysext::new(machine.sysext_bin(), machine.root());

    sysext.refresh().unwrap();
    match verify_merged(&machine.ns_root(), &expected(&[&good, &future])) {
        Err(SysextError::Mismatch {
            missing,
            extra,
            different,
        }) => {
            assert_eq!(missing, ["future"]);
            assert!(
                extra.is_empty() && different.is_empty(),
                "{extra:?} {different:?}"
            );
        }
        other => panic!("expected a mismatch naming 'future', got {other:?}"),
    }
    verify_merged(&machine.ns_root(), &expected(&[&good])).unwrap();

    sysext.unmerge().unwrap();
    assert!(machine.merged_names().is_empty());
}

#[test]
fn after_reboot_nothing_is_merged_until_merge_runs_again() {
    // Merge, power-cut, boot: the overlay is gone; merging again restores it. Booting into a USR image of
    // another OS version then drops the extension built for the old one.
    if !require_root() {
        return;
    }
    let mut machine = Machine::new(&debian12());
    install(&machine, &SysextSpec::new("tools", "1.0", "debian", "12"));
    expect_ok(&machine.sysext(&["merge"]), "merge");
    assert_eq!(machine.merged_names(), ["tools"]);

    machine.reboot();
    assert!(
        machine.merged_names().is_empty(),
        "a reboot must drop every mount"
    );
    assert!(!machine.try_program("tools").status.success());
    expect_ok(&machine.sysext(&["merge"]), "merge after reboot");
    assert_eq!(machine.run_program("tools"), "tools 1.0\n");

    let images = tempfile::tempdir().unwrap();
    let usr13 = build_os_usr(&OsSpec::new("debian", "13"), images.path());
    machine.reboot_into_usr(&usr13);
    let os_release = fs::read_to_string(machine.ns_root().join("usr/lib/os-release")).unwrap();
    assert!(os_release.contains("VERSION_ID=13"), "{os_release}");
    expect_ok(&machine.sysext(&["merge"]), "merge on the new OS");
    assert!(
        machine.merged_names().is_empty(),
        "a VERSION_ID=12 extension must not merge on 13"
    );

    let usr12 = images.path().join("usr12");
    populate_usr_dir(&usr12, &debian12());
    machine.reboot_into_usr(&usr12);
    let write = machine.sh(&format!("touch {}/usr/lib/probe", machine.root().display()));
    assert!(!write.status.success(), "the booted /usr must be read-only");
    expect_ok(&machine.sysext(&["merge"]), "merge back on 12");
    assert_eq!(machine.run_program("tools"), "tools 1.0\n");
}

#[test]
fn dropping_a_machine_releases_its_loop_devices() {
    // A machine with a merged extension holds loop devices; dropping it must release every one of them.
    if !require_root() {
        return;
    }
    let machine = Machine::new(&debian12());
    install(&machine, &SysextSpec::new("tools", "1.0", "debian", "12"));
    expect_ok(&machine.sysext(&["merge"]), "merge");
    let held = machine.loop_devices();
    assert!(
        !held.is_empty(),
        "a merged image is backed by a loop device"
    );

    drop(machine);
    let now = all_loop_devices();
    let leaked: Vec<_> = held.iter().filter(|l| now.contains(l)).collect();
    assert!(leaked.is_empty(), "loop devices left behind: {leaked:?}");
}

#[test]
fn two_machines_in_parallel_do_not_see_each_others_merges() {
    // Two machines side by side; merging in one leaves the other (and the host) bare.
    if !require_root() {
        return;
    }
    let a = Machine::new(&debian12());
    let b = Machine::new(&debian12());
    install(&a, &SysextSpec::new("only-a", "1", "debian", "12"));
    install(&b, &SysextSpec::new("only-b", "1", "debian", "12"));
    let (ra, rb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.sysext(&["merge"]));
        let hb = s.spawn(|| b.sysext(&["merge"]));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    expect_ok(&ra, "merge a");
    expect_ok(&rb, "merge b");
    assert_eq!(a.merged_names(), ["only-a"]);
    assert_eq!(b.merged_names(), ["only-b"]);

    expect_ok(&a.sysext(&["unmerge"]), "unmerge a");
    assert!(a.merged_names().is_empty());
    assert_eq!(
        b.merged_names(),
        ["only-b"],
        "unmerging one machine must not touch the other"
    );
}
