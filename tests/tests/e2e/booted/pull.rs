//! upd.service on the real root: it pulls, links into /etc/extensions, and the container's own
//! systemd-sysext merges; the programs run, and a reboot of the container keeps the set.

use upd_tests::rootfs::Suite;

use super::rig::{on_both, Rig};

// Situation: a booted container whose channel gains hello 1.0.0 (squashfs) and world 1.0.0
// (erofs); the timer's service is started by hand, then hello 1.1.0 arrives, then a reboot.
fn pull_merges_on_the_real_root(suite: Suite) {
    let Some(mut rig) = Rig::boot(suite, "pull") else {
        return;
    };
    assert!(rig.merged().is_empty());
    rig.pull_v1();
    assert_eq!(rig.c.property("upd.service", "Result"), "success");
    let links = rig.links();
    assert_eq!(
        links.keys().collect::<Vec<_>>(),
        ["hello.raw", "world.raw"],
        "{links:?}"
    );
    // Relative links into the store: they resolve the same on the real root and under --root.
    assert!(
        links["hello.raw"].ends_with(".raw")
            && links["hello.raw"].contains("var/lib/upd/images/hello/hello-1.0.0-"),
        "{links:?}"
    );
    assert_eq!(rig.merged(), ["hello", "world"]);
    assert_eq!(rig.program("hello"), "hello 1.0.0\n");
    assert_eq!(rig.program("world"), "world 1.0.0\n");
    // The container's systemd-sysext itself reports the merge on /usr.
    let status = rig.c.ok(&["systemd-sysext", "status"]);
    assert!(
        status.contains("hello") && status.contains("world"),
        "{status}"
    );

    // A new build for the running OS: upd switches hello alone, world stays as it was.
    rig.add(&rig.ext("hello", "1.1.0"));
    rig.publish();
    rig.start_upd_ok();
    assert_eq!(rig.program("hello"), "hello 1.1.0\n");
    assert_eq!(rig.program("world"), "world 1.0.0\n");
    let before = rig.links();

    // A reboot: upd-boot keeps the links, the container's systemd-sysext.service merges them.
    rig.reboot();
    assert_eq!(rig.c.boots(), 2);
    assert_eq!(rig.links(), before);
    assert_eq!(rig.merged(), ["hello", "world"]);
    assert_eq!(rig.program("hello"), "hello 1.1.0\n");
    assert_eq!(rig.program("world"), "world 1.0.0\n");
    assert_eq!(
        rig.c.property("systemd-sysext.service", "Result"),
        "success"
    );
    let log = rig.journal_with("systemd-sysext.service", "Merged extensions into '/usr'");
    assert!(log.contains("Merged extensions into '/usr'"), "{log}");
    rig.finish();
}
on_both!(pull_merges_on_the_real_root);
