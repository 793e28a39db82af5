//! `check` and `pull` agree (issue 10, defect 8): `check` exits 100 exactly when the `pull` that
//! follows changes something on the machine, and 0 exactly when it changes nothing.

use super::rig::*;
use upd_tests::images::SysextSpec;
use upd_tests::sandbox::require_root;

/// Run `check`, then `pull` (insisting on `pull_code`) on the machine as it is; assert that
/// check's 100/0 is whether pull changed the links, the active generation or the merged set.
/// Returns whether it changed them.
pub(crate) fn check_then_pull(rig: &Rig, pull_code: i32) -> bool {
    let check = rig.upd(&["check"], &[]);
    let ctext = text_of(&check);
    let said = match check.status.code() {
        Some(100) => true,
        Some(0) => false,
        c => panic!("check exited {c:?}:\n{ctext}"),
    };
    let before = rig.snapshot();
    let ptext = rig.upd_ok(&["pull"], pull_code);
    let changed = rig.snapshot() != before;
    assert_eq!(
        said, changed,
        "check said an update is available: {said}; pull changed the machine: {changed}\ncheck:\n{ctext}\npull:\n{ptext}"
    );
    changed
}

#[test]
fn check_exits_100_exactly_when_pull_changes_something() {
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    // Nothing new.
    assert!(!check_then_pull(&rig, 0));

    // hello's only build is for another VERSION_ID: pull keeps 1.0.0 as is, so check says 0,
    // on every run (it said 100 forever before).
    rig.ch.remove_extension(OS_VERSION, "hello", "1.0.0");
    rig.ch.add_extension(
        OS_VERSION,
        &SysextSpec::new("hello", "1.2.0", OS_ID, "2.0.0"),
    );
    rig.publish();
    assert!(!check_then_pull(&rig, 0));
    assert!(!check_then_pull(&rig, 0));
    assert_eq!(rig.merged()["hello"], release_of(&ext("hello", "1.0.0")));

    // A real new build for the running OS next to it: check says 100, pull applies it, and then
    // both agree there is nothing left.
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    assert!(check_then_pull(&rig, 0));
    assert_eq!(rig.merged()["hello"], release_of(&ext("hello", "1.1.0")));
    assert!(!check_then_pull(&rig, 0));

    // An extension disabled in the configuration is unlinked by pull: check counts that too.
    rig.install(&["EXTENSIONS=hello"]);
    assert!(check_then_pull(&rig, 0));
    assert!(!rig.merged().contains_key("world"));
    assert!(!check_then_pull(&rig, 0));
}
