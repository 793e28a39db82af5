//! Issue test 5: SIGKILL the real upd at each step of stage, boot, mark-good and rollback; the
//! next `upd boot` plus the merge always yields one complete set that matches the booted OS.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use upd_tests::disk::{USR_A, USR_B};
use upd_tests::sandbox::{all_loop_devices, backing_id, require_root};

use super::rig::{set_a, set_b, OsRig, V1, V2};
use crate::failpoints::{points, BOOT, MARKGOOD, ROLLBACK, STAGE};
use crate::pull::rig::text_of;

/// Run upd with failpoint `fp` and insist that it died of SIGKILL there.
fn killed(rig: &OsRig, args: &[&str], fp: &str) {
    let out = rig.upd(args, &[("UPD_FAILPOINT", fp)]);
    assert_eq!(
        out.status.signal(),
        Some(9),
        "upd {args:?} was not killed at {fp}:\n{}",
        text_of(&out)
    );
}

/// The set that belongs to each OS.
fn set_of(os: &str) -> BTreeMap<String, String> {
    match os {
        V1 => set_a(),
        V2 => set_b(),
        other => panic!("unexpected OS {other}"),
    }
}

/// The merged set is exactly the one of the OS running, and its programs run.
fn consistent(rig: &OsRig, fp: &str) {
    let os = rig.running_os();
    assert_eq!(rig.versions(), set_of(&os), "after a kill at {fp}, OS {os}");
    rig.programs_run(&set_of(&os));
}

/// Kill `upd pull` of v2 at `fp`, power-cut, boot; then finish the update and mark it good.
fn stage_killed_at(fp: &str) {
    let mut rig = OsRig::new(&[]);
    rig.add_v2();
    killed(&rig, &["pull"], fp);
    rig.reboot();
    consistent(&rig, fp);
    if rig.running_os() == V1 {
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.reboot(), USR_B, "after a kill at {fp}");
    }
    consistent(&rig, fp);
    rig.upd_ok(&["mark-good"], 0);
    assert_eq!(rig.state()["active"]["os_version"], V2, "{fp}");
    rig.disk.verify();
}

#[test]
fn kill_at_each_stage_step() {
    // For each failpoint of staging (slot disarmed, image written, pending generation recorded, slot
    // armed): a machine on v1 pulls v2 and is killed there, then the power is cut.
    if !require_root() {
        return;
    }
    for fp in points(STAGE) {
        stage_killed_at(fp);
    }
}

#[test]
fn kill_while_a_slot_is_read_leaves_no_loop_device() {
    // upd reads the staged slot's os-release through a loop device over the slot's byte range.
    // Killed while it holds it (failpoint stage-loop-attached), the kernel detaches it: the disk
    // is left with exactly the loop devices it had (the one /usr is mounted from). Attached by
    // losetup and detached only on drop, each such kill left one more attached for good.
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    rig.add_v2();
    let id = backing_id(&rig.disk.device());
    let on_disk = || {
        let mut d: Vec<String> = all_loop_devices()
            .into_iter()
            .filter(|l| l.backing == id)
            .map(|l| l.device)
            .collect();
        d.sort();
        d
    };
    let before = on_disk();
    killed(&rig, &["pull"], "stage-loop-attached");
    let deadline = Instant::now() + Duration::from_secs(5);
    while on_disk() != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        on_disk(),
        before,
        "loop devices over the disk after the kill"
    );
    rig.reboot();
    assert_eq!(rig.running_os(), V1);
    let booted = on_disk(); // /usr is mounted from another device now
    rig.upd_ok(&["pull"], 0);
    assert_eq!(
        on_disk(),
        booted,
        "loop devices over the disk after a whole pull"
    );
}

/// A machine that pulled v2 and whose boot loader picked USR-B (a try consumed), its `upd boot` killed at `fp`.
fn booted_into_v2_killed_in_upd_boot(fp: &str) -> OsRig {
    let mut rig = OsRig::new(&[]);
    rig.add_v2();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.boot_disk(), USR_B);
    killed(&rig, &["boot"], fp);
    rig
}

#[test]
fn kill_while_upd_boot_links_the_new_set() {
    if !require_root() {
        return;
    }
    for fp in points(BOOT) {
        // Killed between two links, then upd boot runs again in the same boot.
        let rig = booted_into_v2_killed_in_upd_boot(fp);
        rig.upd_ok(&["boot"], 0);
        rig.merge();
        consistent(&rig, fp);
        assert_eq!(rig.running_os(), V2);
        // Killed between two links, then the power is cut: the boot loader falls back to v1.
        let mut rig = booted_into_v2_killed_in_upd_boot(fp);
        assert_eq!(rig.reboot(), USR_A);
        consistent(&rig, &format!("{fp}, then power cut"));
        assert_eq!(rig.running_os(), V1);
    }
}

#[test]
fn kill_during_mark_good() {
    if !require_root() {
        return;
    }
    for fp in points(MARKGOOD) {
        let mut rig = OsRig::new(&[]);
        rig.add_v2();
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.reboot(), USR_B);
        killed(&rig, &["mark-good"], fp);
        // The slot was marked successful before the kill: it boots again, with set B.
        assert_eq!(rig.reboot(), USR_B, "{fp}");
        consistent(&rig, fp);
        rig.upd_ok(&["mark-good"], 0);
        let st = rig.state();
        assert_eq!(st["active"]["os_version"], V2, "{fp}");
        assert_eq!(st["previous"]["os_version"], V1, "{fp}");
    }
}

#[test]
fn kill_during_rollback() {
    if !require_root() {
        return;
    }
    for fp in points(ROLLBACK) {
        let mut rig = OsRig::new(&[]);
        rig.add_v2();
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.reboot(), USR_B);
        rig.upd_ok(&["mark-good"], 0);
        killed(&rig, &["rollback"], fp);
        // Recorded but the slot not prioritized yet: v2 boots again, with set B.
        assert_eq!(rig.reboot(), USR_B, "{fp}");
        consistent(&rig, fp);
        // Running rollback again goes on from where it stopped.
        rig.upd_ok(&["rollback"], 0);
        assert_eq!(rig.reboot(), USR_A, "{fp}");
        consistent(&rig, &format!("{fp}, resumed"));
        assert_eq!(rig.running_os(), V1, "{fp}");
    }
}

/// Run upd under strace, SIGKILLed on entering its `n`th `pwrite64` (the GPT writes: backup
/// attribute, array CRC, header CRC, then the primary's three), and insist that it died so.
fn killed_at_pwrite(rig: &OsRig, args: &[&str], n: usize) {
    let out = rig.upd_killed_at(args, "pwrite64", n);
    assert!(
        out.status.signal() == Some(9) || out.status.code() == Some(128 + 9),
        "upd {args:?} was not killed at pwrite64 #{n}:\n{}",
        text_of(&out)
    );
}

#[test]
fn kill_between_the_two_gpt_copies_in_mark_good() {
    // Regression (issue 16, defect 1): mark-good cut after the backup GPT is written (#4: the
    // primary untouched, old) and inside the primary (#5: the primary invalid, the backup new).
    if !require_root() {
        return;
    }
    for (n, slot) in [(4, USR_A), (5, USR_B)] {
        let mut rig = OsRig::new(&[]);
        rig.add_v2();
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.reboot(), USR_B);
        killed_at_pwrite(&rig, &["mark-good"], n);
        // #4: the valid primary still says B never became good and has no try left: the boot
        // loader falls back to A, and upd reads the same table. #5: the new backup is the table.
        assert_eq!(rig.reboot(), slot, "pwrite64 #{n}");
        consistent(&rig, &format!("pwrite64 #{n} of mark-good"));
        rig.upd_ok(&["mark-good"], 0);
        rig.upd_ok(&["boot"], 0);
        rig.disk.verify();
        let st = rig.state();
        let want = if slot == USR_B { V2 } else { V1 };
        assert_eq!(st["active"]["os_version"], want, "pwrite64 #{n}");
        assert!(st["pending"].is_null(), "pwrite64 #{n}: {st}");
    }
}

#[test]
fn kill_between_the_two_gpt_copies_in_rollback() {
    // Regression (issue 16, defect 1): rollback from v2 cut after the backup GPT of B's lowered
    // priority is written (#4) and inside its primary (#5); then boot, and the rollback rerun.
    if !require_root() {
        return;
    }
    for (n, slot) in [(4, USR_B), (5, USR_A)] {
        let mut rig = OsRig::new(&[]);
        rig.add_v2();
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.reboot(), USR_B);
        rig.upd_ok(&["mark-good"], 0);
        killed_at_pwrite(&rig, &["rollback"], n);
        // #4: the primary still gives B priority 2. #5: the backup gives both priority 1, and
        // the first slot, A, boots: the rollback took effect.
        assert_eq!(rig.reboot(), slot, "pwrite64 #{n}");
        consistent(&rig, &format!("pwrite64 #{n} of rollback"));
        if slot == USR_B {
            rig.upd_ok(&["rollback"], 0);
            assert_eq!(rig.reboot(), USR_A, "pwrite64 #{n}, rollback rerun");
            consistent(&rig, &format!("pwrite64 #{n} of rollback, rerun"));
        }
        assert_eq!(rig.running_os(), V1);
        rig.upd_ok(&["mark-good"], 0);
        rig.disk.verify();
        assert_eq!(rig.state()["active"]["os_version"], V1, "pwrite64 #{n}");
    }
}
