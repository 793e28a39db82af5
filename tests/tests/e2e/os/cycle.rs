//! The OS update cycle: stage, reboot, mark-good; a boot that never becomes good; rollback.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use upd_tests::disk::{USR_A, USR_B};
use upd_tests::sandbox::require_root;

use super::rig::{set_a, set_b, OsRig, V1, V2};

/// Stage v2 and check that the running v1 is untouched; returns the rig.
fn staged_v2(extra: &[&str]) -> OsRig {
    let mut rig = OsRig::new(extra);
    rig.add_v2();
    let before = rig.links();
    let text = rig.upd_ok(&["check"], 100);
    assert!(text.contains("OS update available: 2.0.0"), "{text}");
    let text = rig.upd_ok(&["pull"], 0);
    assert!(text.contains("OS 2.0.0 staged on USR-B"), "{text}");
    // Issue test 1: before the reboot, v1 runs with set A merged and its links unchanged.
    assert_eq!(rig.running_os(), V1);
    assert_eq!(rig.versions(), set_a());
    rig.programs_run(&set_a());
    assert_eq!(rig.links(), before);
    let st = rig.state();
    assert_eq!(st["pending"]["os_version"], V2);
    assert_eq!(st["pending"]["slot"], USR_B);
    assert_eq!(st["active"]["os_version"], V1);
    assert_eq!(
        rig.prio(USR_B),
        (2, 1, false),
        "new slot: top priority, one try"
    );
    assert_eq!(rig.prio(USR_A), (1, 0, true), "running slot: the fallback");
    assert!(rig.reboot_required());
    let status = rig.upd_ok(&["status"], 0);
    assert!(
        status.contains("reboot needed: yes: generation"),
        "{status}"
    );
    rig
}

#[test]
fn an_os_update_moves_the_os_and_its_extensions_together_across_a_reboot() {
    if !require_root() {
        return;
    }
    let mut rig = staged_v2(&[]);
    // Issue test 2: the boot loader picks USR-B; upd boot links set B; the merge shows it.
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.running_os(), V2);
    assert_eq!(rig.versions(), set_b());
    rig.programs_run(&set_b());
    assert_eq!(rig.prio(USR_B), (2, 0, false), "the boot consumed the try");
    // No other pull while the new OS waits to be marked good.
    let text = rig.upd_ok(&["pull"], 1);
    assert!(text.contains("not marked good yet"), "{text}");
    rig.upd_ok(&["mark-good"], 0);
    assert_eq!(
        rig.prio(USR_B),
        (2, 0, true),
        "B successful with top priority"
    );
    assert_eq!(rig.prio(USR_A), (1, 0, true), "A lower");
    let st = rig.state();
    assert_eq!(st["active"]["os_version"], V2);
    assert_eq!(st["previous"]["os_version"], V1);
    assert!(st["pending"].is_null());
    assert!(!rig.reboot_required());
    rig.disk.verify();
    // Stays on B across further boots.
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.versions(), set_b());
    let text = rig.upd_ok(&["pull"], 0);
    assert!(text.contains("up to date"), "{text}");
}

// Situation: v2 is staged on USR-B, then a typo (`SERVR=`) and a bad value (`RETRIES=many`) land
// in upd.conf; the machine reboots into USR-B. Issue 10, defect 4: `upd boot` used to exit 1.
#[test]
fn a_config_typo_mid_update_still_boots_the_new_os_with_its_own_set() {
    if !require_root() {
        return;
    }
    let mut rig = staged_v2(&[]);
    let conf = rig.m.root().join("etc/upd/upd.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    let typo_line = text.lines().count() + 1;
    text.push_str("SERVR=http://updates.example.com\nRETRIES=many\n");
    fs::write(&conf, text).unwrap();
    assert_eq!(rig.boot_disk(), USR_B);
    // As under upd-boot.service: stderr is the journal stream, so errors carry priority 3.
    let log = rig.marker("boot.log");
    let file = fs::File::create(&log).unwrap();
    let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&file)).unwrap();
    let out = rig
        .upd_cmd(
            &["boot"],
            &[("JOURNAL_STREAM", &format!("{}:{}", st.st_dev, st.st_ino))],
        )
        .stderr(file)
        .output()
        .unwrap();
    let said = fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(0), "upd boot:\n{said}");
    let typo = format!("upd.conf:{typo_line}: unknown key SERVR");
    assert!(
        said.lines()
            .any(|l| l.starts_with("<3>") && l.contains(&typo)),
        "the typo is not said at priority err:\n{said}"
    );
    assert!(said.contains("RETRIES"), "{said}");
    rig.merge();
    assert_eq!(rig.running_os(), V2);
    assert_eq!(rig.versions(), set_b());
    rig.programs_run(&set_b());
    // mark-good does not send a healthy OS back for a typo: it promotes v2 and says the typo.
    let text = rig.upd_ok(&["mark-good"], 0);
    assert!(text.contains("SERVR"), "{text}");
    assert_eq!(rig.prio(USR_B), (2, 0, true));
    assert_eq!(rig.state()["active"]["os_version"], V2);
    // Every other command still refuses the configuration, naming the line (exit 1).
    let text = rig.upd_ok(&["status"], 1);
    assert!(text.contains(&typo), "{text}");
}

#[test]
fn a_boot_that_never_becomes_good_falls_back_and_the_release_is_not_retried() {
    if !require_root() {
        return;
    }
    let mut rig = staged_v2(&[]);
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.versions(), set_b());
    // Issue test 3: no mark-good (the boot hung); the boot loader falls back to USR-A.
    assert_eq!(rig.reboot(), USR_A);
    assert_eq!(rig.running_os(), V1);
    assert_eq!(rig.versions(), set_a());
    rig.programs_run(&set_a());
    let st = rig.state();
    assert_eq!(st["failed_releases"], serde_json::json!([V2]));
    assert!(st["pending"].is_null());
    assert_eq!(st["active"]["os_version"], V1);
    assert_eq!(rig.prio(USR_B).0, 0, "the failed slot is unbootable");
    // The next update does not pick 2.0.0 again.
    let text = rig.upd_ok(&["update"], 0);
    assert!(text.contains("up to date"), "{text}");
    assert!(rig.state()["pending"].is_null());
    let text = rig.upd_ok(&["check"], 0);
    assert!(text.contains("passed over 2.0.0: failed to boot"), "{text}");
    // A newer release is taken again.
    rig.ch.add_os_release("2.0.1", &super::rig::os("2.0.1"));
    for n in ["hello", "world"] {
        rig.ch
            .add_extension("2.0.1", &super::rig::ext(n, "2.0.1", "2.0.1"));
    }
    rig.publish();
    let text = rig.upd_ok(&["pull"], 0);
    assert!(text.contains("OS 2.0.1 staged on USR-B"), "{text}");
}

#[test]
fn failing_health_checks_send_the_new_os_back() {
    if !require_root() {
        return;
    }
    let mut rig = staged_v2(&[]);
    assert_eq!(rig.reboot(), USR_B);
    let hd = rig.m.root().join("etc/upd/health.d");
    fs::create_dir_all(&hd).unwrap();
    let check = hd.join("10-app");
    fs::write(&check, "#!/bin/sh\necho app is down >&2\nexit 1\n").unwrap();
    fs::set_permissions(&check, fs::Permissions::from_mode(0o755)).unwrap();
    let text = rig.upd_ok(&["mark-good"], 6);
    assert!(text.contains("app is down"), "{text}");
    assert_eq!(rig.prio(USR_B), (0, 0, false));
    assert_eq!(rig.prio(USR_A), (2, 0, true));
    assert!(rig.reboot_required());
    assert_eq!(rig.state()["failed_releases"], serde_json::json!([V2]));
    fs::remove_file(&check).unwrap();
    assert_eq!(rig.reboot(), USR_A);
    assert_eq!(rig.versions(), set_a());
    rig.upd_ok(&["mark-good"], 0);
    assert_eq!(rig.state()["active"]["os_version"], V1);
}

#[test]
fn rollback_after_mark_good_brings_back_v1_with_set_a() {
    if !require_root() {
        return;
    }
    let mut rig = staged_v2(&[]);
    assert_eq!(rig.reboot(), USR_B);
    rig.upd_ok(&["mark-good"], 0);
    // Issue test 6.
    let text = rig.upd_ok(&["rollback"], 0);
    assert!(text.contains("rollback staged"), "{text}");
    assert_eq!(rig.prio(USR_A).0, 2);
    assert_eq!(rig.prio(USR_B).0, 1);
    assert!(rig.reboot_required());
    // Still v2 with set B until the reboot.
    assert_eq!(rig.versions(), set_b());
    assert_eq!(rig.reboot(), USR_A);
    assert_eq!(rig.running_os(), V1);
    assert_eq!(rig.versions(), set_a());
    rig.programs_run(&set_a());
    rig.upd_ok(&["mark-good"], 0);
    let st = rig.state();
    assert_eq!(st["active"]["os_version"], V1);
    assert_eq!(st["previous"]["os_version"], V2);
    assert!(st["failed_releases"].as_array().unwrap().is_empty());
}

#[test]
fn rollback_without_a_previous_generation_is_refused() {
    if !require_root() {
        return;
    }
    let rig = OsRig::new(&[]);
    let before = (rig.links(), rig.state(), rig.prio(USR_A), rig.prio(USR_B));
    let text = rig.upd_ok(&["rollback"], 1);
    assert!(text.contains("cannot roll back"), "{text}");
    assert_eq!(
        (rig.links(), rig.state(), rig.prio(USR_A), rig.prio(USR_B)),
        before
    );
}

#[test]
fn immediate_strategy_runs_the_reboot_command_and_off_only_signals() {
    if !require_root() {
        return;
    }
    let marker = tempfile::tempdir().unwrap();
    let flag = marker.path().join("rebooted");
    let cmd = format!("REBOOT_COMMAND=touch {}", flag.display());
    let mut rig = OsRig::new(&["REBOOT_STRATEGY=immediate", &cmd]);
    // Nothing to stage: no reboot, no signal.
    rig.upd_ok(&["update"], 0);
    assert!(!flag.exists());
    assert!(!rig.reboot_required());
    rig.add_v2();
    let text = rig.upd_ok(&["update"], 0);
    assert!(text.contains("rebooting"), "{text}");
    assert!(flag.exists(), "the reboot command ran");
    assert!(rig.reboot_required());
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.versions(), set_b());
}

#[test]
fn window_strategy_waits_outside_the_window_and_reboots_inside_it() {
    if !require_root() {
        return;
    }
    let marker = tempfile::tempdir().unwrap();
    let flag = marker.path().join("rebooted");
    let cmd = format!("REBOOT_COMMAND=touch {}", flag.display());
    // A one-hour window two days from now (local time, like upd): closed now, whatever the hour.
    let day = (chrono::Local::now() + chrono::Duration::days(2)).format("%a");
    let window = format!("REBOOT_WINDOW={day} 03:00 1h");
    let mut rig = OsRig::new(&["REBOOT_STRATEGY=window", &window, &cmd]);
    rig.add_v2();
    let text = rig.upd_ok(&["update"], 0);
    assert!(text.contains("staged on USR-B"), "{text}");
    assert!(text.contains("outside the maintenance window"), "{text}");
    assert!(!flag.exists(), "no reboot outside the window");
    assert!(rig.reboot_required());
    let status = rig.upd_ok(&["status"], 0);
    assert!(
        status.contains("reboot strategy window: waiting: outside the maintenance window"),
        "{status}"
    );
    // The timer's next run inside an (always open) window reboots into the staged OS.
    let text = rig.upd_ok(&["--set", "REBOOT_WINDOW=* 00:00 168h", "update"], 0);
    assert!(text.contains("already staged"), "{text}");
    assert!(flag.exists(), "the reboot command ran inside the window");
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.versions(), set_b());
}

/// 2.0.0 staged, booted and marked good; the operator rolls back to 1.0.0, boots it and marks
/// it good.
fn rolled_back_from_v2() -> OsRig {
    let mut rig = staged_v2(&[]);
    assert_eq!(rig.reboot(), USR_B);
    rig.upd_ok(&["mark-good"], 0);
    rig.upd_ok(&["rollback"], 0);
    assert_eq!(rig.reboot(), USR_A);
    rig.upd_ok(&["mark-good"], 0);
    rig
}

#[test]
fn a_release_rolled_back_from_is_held_back_until_pulled_by_version() {
    // Issue 16 defect 4: 2.0.0 marked good, the operator rolls back to 1.0.0 and marks it good;
    // the next `upd update` must not stage 2.0.0 again, and `status` says why.
    if !require_root() {
        return;
    }
    let mut rig = rolled_back_from_v2();
    assert_eq!(rig.state()["held_releases"], serde_json::json!([V2]));
    let text = rig.upd_ok(&["update"], 0);
    assert!(text.contains("up to date"), "{text}");
    assert!(rig.state()["pending"].is_null());
    assert_eq!(rig.prio(USR_A), (2, 0, true), "USR-A still boots next");
    assert!(!rig.reboot_required());
    let text = rig.upd_ok(&["check"], 0);
    assert!(
        text.contains("passed over 2.0.0: rolled back from"),
        "{text}"
    );
    let status = rig.upd_ok(&["status"], 0);
    assert!(status.contains("held back after a rollback"), "{status}");
    assert!(
        status.contains("passed over 2.0.0: rolled back from"),
        "{status}"
    );
    let out = rig.upd(&["status", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(json["held_releases"], serde_json::json!([V2]));
    // The operator pulls it by version: staged again, and the hold is lifted.
    let text = rig.upd_ok(&["pull", V2], 0);
    assert!(text.contains("OS 2.0.0 staged on USR-B"), "{text}");
    assert!(rig.state().get("held_releases").is_none());
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.versions(), set_b());
}

#[test]
fn a_newer_release_is_taken_after_a_rollback() {
    // Issue 16 defect 4, the other way out of the hold: rolled back from 2.0.0, then 2.0.1
    // appears and `upd update` stages it on its own.
    if !require_root() {
        return;
    }
    let mut rig = rolled_back_from_v2();
    rig.ch.add_os_release("2.0.1", &super::rig::os("2.0.1"));
    for n in ["hello", "world"] {
        rig.ch
            .add_extension("2.0.1", &super::rig::ext(n, "2.0.1", "2.0.1"));
    }
    rig.publish();
    let text = rig.upd_ok(&["update"], 0);
    assert!(text.contains("OS 2.0.1 staged on USR-B"), "{text}");
}
