//! Early boot finishes a switch cut short, before systemd-sysext merges: with a clean configuration,
//! and with a typo in it (`upd boot` needs no setting a typo could break, so the boot must not
//! degrade either).

use std::collections::BTreeMap;

use upd_tests::rootfs::Suite;

use super::rig::{on_both, Rig};

/// A container at hello + world 1.0.0 whose upd.service was SIGKILLed at failpoint
/// `switch-linked` while switching to hello + world 1.1.0: the links point at 1.1.0, the journal
/// says so, nothing was refreshed. Returns the rig and those links.
fn cut_short(suite: Suite, name: &str) -> Option<(Rig, BTreeMap<String, String>)> {
    let mut rig = Rig::boot(suite, name)?;
    rig.pull_v1();
    let old = rig.links();
    rig.add(&rig.ext("hello", "1.1.0"));
    rig.add(&rig.ext("world", "1.1.0").erofs());
    rig.publish();
    rig.c.ok(&[
        "systemctl",
        "set-environment",
        "UPD_FAILPOINT=switch-linked",
    ]);
    let out = rig.start_upd();
    rig.c
        .ok(&["systemctl", "unset-environment", "UPD_FAILPOINT"]);
    let log = rig.journal("upd.service");
    assert!(!out.status.success(), "upd.service was not killed:\n{log}");
    assert_eq!(rig.c.property("upd.service", "Result"), "signal", "{log}");
    let new = rig.links();
    assert_ne!(
        new, old,
        "the links were not switched before the kill:\n{log}"
    );
    assert_eq!(
        rig.program("hello"),
        "hello 1.0.0\n",
        "refreshed before the kill"
    );
    Some((rig, new))
}

// Situation: the switch was cut short after its links were placed; the machine reboots.
fn boot_completes_a_switch_cut_short(suite: Suite) {
    let Some((mut rig, new)) = cut_short(suite, "cutshort") else {
        return;
    };
    rig.reboot();
    let log = rig.journal("upd-boot.service");
    assert_eq!(rig.links(), new, "{log}");
    assert_eq!(rig.merged(), ["hello", "world"], "{log}");
    assert_eq!(rig.program("hello"), "hello 1.1.0\n", "{log}");
    assert_eq!(rig.program("world"), "world 1.1.0\n", "{log}");
    // Completed, not pending: the next run has nothing left to switch.
    rig.start_upd_ok();
    assert_eq!(rig.links(), new);
    rig.finish();
}
on_both!(boot_completes_a_switch_cut_short);

// Situation: as above, and /etc/upd/upd.conf gained a typo (`SERVR=`) before the reboot.
fn config_typo_keeps_the_boot(suite: Suite) {
    let Some((mut rig, new)) = cut_short(suite, "typo") else {
        return;
    };
    let conf = rig.root().join("etc/upd/upd.conf");
    std::fs::write(
        &conf,
        format!("{}SERVR=http://updates.example.com\n", rig.config()),
    )
    .unwrap();
    let state = rig.c.reboot();
    let log = rig.journal("upd-boot.service");
    assert_eq!(
        state,
        "running",
        "a config typo degraded the boot:\n{}",
        rig.failed_units()
    );
    assert_eq!(
        rig.c.property("upd-boot.service", "Result"),
        "success",
        "{log}"
    );
    assert!(
        log.contains("SERVR"),
        "upd boot does not name the typo:\n{log}"
    );
    assert_eq!(rig.links(), new, "{log}");
    assert_eq!(rig.merged(), ["hello", "world"]);
    assert_eq!(rig.program("hello"), "hello 1.1.0\n");
    rig.finish();
}
on_both!(config_typo_keeps_the_boot);
