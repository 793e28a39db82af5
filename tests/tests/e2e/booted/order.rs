//! The units' promises as the container's own systemd keeps them: timer armed, mark-good after
//! boot-complete.target and its health check, upd-boot finished before systemd-sysext started.

use upd_tests::rootfs::Suite;

use super::rig::{on_both, Rig, HEALTH_MARK};

/// A monotonic timestamp property (µs) of `unit`; 0 when it never happened.
fn stamp(rig: &Rig, unit: &str, property: &str) -> u64 {
    let v = rig.c.property(unit, property);
    v.parse()
        .unwrap_or_else(|_| panic!("{unit} {property}={v}"))
}

// Situation: a fresh container (no state yet: upd-boot is skipped by its condition) boots; then
// upd pulls an extension, and the container reboots with state on disk.
fn unit_order(suite: Suite) {
    let Some(mut rig) = Rig::boot(suite, "order") else {
        return;
    };
    // The timer is armed, waiting for its first elapse.
    assert_eq!(rig.c.property("upd.timer", "ActiveState"), "active");
    assert_eq!(rig.c.property("upd.timer", "SubState"), "waiting");
    let next = rig.c.property("upd.timer", "NextElapseUSecRealtime");
    assert!(
        !next.is_empty() && next != "0",
        "upd.timer has no next elapse: '{next}'"
    );
    assert_eq!(rig.c.property("upd.timer", "UnitFileState"), "enabled");

    // A fresh machine has nothing to reconcile: upd-boot's condition skips it.
    assert_eq!(rig.c.property("upd-boot.service", "ConditionResult"), "no");

    // mark-good ran after boot-complete.target and multi-user.target, with its health check.
    let check_mark_good = |rig: &Rig| {
        assert_eq!(rig.c.property("upd-mark-good.service", "Result"), "success");
        assert_eq!(
            rig.c.property("upd-mark-good.service", "ActiveState"),
            "active"
        );
        let started = stamp(
            rig,
            "upd-mark-good.service",
            "ExecMainStartTimestampMonotonic",
        );
        let complete = stamp(rig, "boot-complete.target", "ActiveEnterTimestampMonotonic");
        let multi = stamp(rig, "multi-user.target", "ActiveEnterTimestampMonotonic");
        assert!(complete > 0 && multi > 0 && started > 0);
        assert!(
            started >= complete,
            "mark-good started {started} before boot-complete {complete}"
        );
        assert!(
            started >= multi,
            "mark-good started {started} before multi-user {multi}"
        );
        let ran = rig
            .c
            .sh(&format!("test -s /{HEALTH_MARK}"))
            .status
            .success();
        let log = rig.journal_with("upd-mark-good.service", "health check passed");
        assert!(
            ran && log.contains("health check passed"),
            "no health check:\n{log}"
        );
    };
    check_mark_good(&rig);

    rig.add(&rig.ext("hello", "1.0.0"));
    rig.publish();
    rig.start_upd_ok();
    rig.reboot();

    // With state on disk, upd-boot ran and finished before systemd-sysext started.
    assert_eq!(rig.c.property("upd-boot.service", "ConditionResult"), "yes");
    assert_eq!(rig.c.property("upd-boot.service", "Result"), "success");
    assert_eq!(
        rig.c.property("systemd-sysext.service", "Result"),
        "success"
    );
    let boot_done = stamp(&rig, "upd-boot.service", "ExecMainExitTimestampMonotonic");
    let sysext_start = stamp(
        &rig,
        "systemd-sysext.service",
        "ExecMainStartTimestampMonotonic",
    );
    assert!(
        boot_done > 0 && sysext_start > 0,
        "{boot_done} {sysext_start}"
    );
    assert!(
        boot_done <= sysext_start,
        "upd-boot finished at {boot_done} µs, after systemd-sysext started at {sysext_start} µs"
    );
    check_mark_good(&rig);
    rig.finish();
}
on_both!(unit_order);
