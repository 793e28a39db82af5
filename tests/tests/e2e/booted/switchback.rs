//! A switch whose new build the container's systemd-sysext will not merge is switched back: the
//! unit fails with exit 6 (rolled back) and the old programs still run.
//!
//! The build carries `/usr/lib/os-release`, which upd's compatibility rules do not look at (they
//! read only the extension-release file) and which systemd-sysext forbids in an extension. The two
//! versions refuse it differently, and neither says so in its exit status:
//! - 252 refuses the image in its merge child ("Extension image contains /usr/lib/os-release file,
//!   which is not allowed", src/sysext/sysext.c validate_version()) before unmerging, so the old
//!   overlay stays; and merge() turns the child's failure into success (`return r != 123;`), so
//!   `refresh` exits 0 with the *old* hello merged: upd sees "different content".
//! - 257 skips that image alone (extension_has_forbidden_content() in the dissection → -ENOMEDIUM
//!   → ignored) and merges the rest: upd sees hello "missing".
//!
//! Either way only upd's check of the merged set notices, and upd must put the old links back.

use upd_tests::rootfs::Suite;

use super::rig::{on_both, Rig};

// Situation: hello 1.0.0 and world 1.0.0 merged; the channel then offers hello 1.1.0 whose image
// also holds a /usr/lib/os-release; the timer's service runs.
fn unmergeable_build_is_switched_back(suite: Suite) {
    let Some(mut rig) = Rig::boot(suite, "switchback") else {
        return;
    };
    rig.pull_v1();
    let before = rig.links();
    assert_eq!(rig.merged(), ["hello", "world"]);

    let bad = rig.ext("hello", "1.1.0");
    rig.add_with_files(
        &bad,
        &[("usr/lib/os-release", "ID=debian\nVERSION_ID=99\n")],
    );
    rig.publish();
    let out = rig.start_upd();
    let log = rig.journal("upd.service");
    assert!(!out.status.success(), "upd.service succeeded:\n{log}");
    assert_eq!(
        rig.c.property("upd.service", "Result"),
        "exit-code",
        "{log}"
    );
    assert_eq!(
        rig.c.property("upd.service", "ExecMainStatus"),
        "6",
        "{log}"
    );

    // Switched back: the old links, merged again, the old programs run.
    assert_eq!(rig.links(), before, "{log}");
    assert_eq!(rig.merged(), ["hello", "world"], "{log}");
    assert_eq!(rig.program("hello"), "hello 1.0.0\n");
    assert_eq!(rig.program("world"), "world 1.0.0\n");
    // Each systemd refused the build its own way, and upd's log says which.
    let why = match suite.systemd {
        252 => "different content [\"hello\"]",
        _ => "missing [\"hello\"]",
    };
    assert!(log.contains(why), "expected '{why}' in:\n{log}");

    // And the next boot merges the old set, too.
    rig.reboot();
    assert_eq!(rig.links(), before);
    assert_eq!(rig.program("hello"), "hello 1.0.0\n");
    rig.finish();
}
on_both!(unmergeable_build_is_switched_back);
