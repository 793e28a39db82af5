//! The zero-gap switch under a booted systemd (252 and 257): upd.service swaps the new overlay in
//! beneath the container's /usr while a prober in the container never finds the managed file
//! missing, and the container's own systemd-sysext then reports, refreshes, unmerges and merges it.

use std::path::Path;

use upd_tests::probe::Prober;
use upd_tests::rootfs::Suite;

use super::rig::{on_both, Rig};

// Situation: hello 1.0.0 and world 1.0.0 pulled and merged; the channel then offers hello 1.1.0 and
// the timer's service runs while a prober calls access("/usr/bin/hello") in the container's mount
// namespace; then systemd-sysext status, refresh, unmerge and merge by hand.
fn switch_under_systemd_never_bares_usr(suite: Suite) {
    let Some(mut rig) = Rig::boot(suite, "zerogap") else {
        return;
    };
    rig.pull_v1();
    assert_eq!(rig.program("hello"), "hello 1.0.0\n");
    rig.add(&rig.ext("hello", "1.1.0"));
    rig.publish();

    let prober = Prober::start(rig.c.leader(), Path::new("/usr/bin/hello"));
    rig.start_upd_ok();
    let counts = prober.stop();
    eprintln!("booted {}: {counts:?}", suite.version_id);
    assert!(counts.probes > 0, "{counts:?}");
    assert_eq!(counts.missing, 0, "{counts:?}");
    assert_eq!(rig.program("hello"), "hello 1.1.0\n");
    assert_eq!(rig.program("world"), "world 1.0.0\n");
    let log = rig.journal("upd.service");
    assert!(log.contains("live switch done"), "{log}");
    assert!(!log.contains("falling back"), "{log}");

    let status = rig.c.ok(&["systemd-sysext", "status"]);
    assert!(
        status.contains("hello") && status.contains("world"),
        "{status}"
    );
    rig.c.ok(&["systemd-sysext", "refresh"]);
    assert_eq!(rig.merged(), ["hello", "world"]);
    assert_eq!(rig.program("hello"), "hello 1.1.0\n");
    rig.c.ok(&["systemd-sysext", "unmerge"]);
    assert!(rig.merged().is_empty(), "{:?}", rig.merged());
    rig.c.ok(&["systemd-sysext", "merge"]);
    assert_eq!(rig.program("hello"), "hello 1.1.0\n");
    rig.finish();
}
on_both!(switch_under_systemd_never_bares_usr);
