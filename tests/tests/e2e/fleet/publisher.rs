//! What a publisher's manifest edits do to real machines: pause, withdrawal of a staged release,
//! a signed redirect back to the safe release, and a replayed older manifest refused.

use upd_channels::version::OsVersion;
use upd_tests::disk::{USR_A, USR_B};
use upd_tests::sandbox::require_root;

use super::rig::Fleet;
use crate::os::node::Node;
use crate::os::rig::{set_a, set_b, V1, V2};

/// Everything a refused run must leave alone: state, slot attributes, merged set, running OS.
fn snapshot(n: &Node) -> String {
    format!(
        "{} {:?} {:?} {:?} {} {}",
        n.state(),
        n.prio(USR_A),
        n.prio(USR_B),
        n.versions(),
        n.running_os(),
        n.reboot_required()
    )
}

#[test]
fn pause_withdraw_redirect_and_a_replayed_manifest() {
    // Issue test 3: three machines on v1. v2 is published; `staged` stages it, `moved` runs it
    // (rebooted, marked good), `fresh` has not looked yet. Then the publisher pauses v2, withdraws
    // it with a redirect to 1.0.0, and an attacker replays the manifest that offered v2.
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new();
    let fresh = fleet.node(&[]);
    let staged = fleet.node(&[]);
    let mut moved = fleet.node(&[]);
    fleet.add_v2();
    let offering_v2 = fleet.publish();
    staged.upd_ok(&["update"], 0);
    assert_eq!(staged.state()["pending"]["os_version"], V2);
    assert!(staged.reboot_required());
    moved.upd_ok(&["update"], 0);
    assert_eq!(moved.reboot(), USR_B);
    moved.upd_ok(&["mark-good"], 0);
    assert_eq!(moved.versions(), set_b());

    // Paused: a machine that has not staged v2 does not start it, and says why.
    fleet.ch.release_mut(V2).paused = true;
    fleet.publish();
    let text = fresh.upd_ok(&["update"], 0);
    assert!(text.contains("up to date"), "{text}");
    assert!(fresh.state()["pending"].is_null());
    assert_eq!(fresh.prio(USR_B).0, 0);
    let check = fresh.upd_ok(&["check"], 0);
    assert!(
        check.contains("passed over 2.0.0: rollout paused by the publisher"),
        "{check}"
    );

    // Withdrawn, directing machines on it back to 1.0.0.
    let r = fleet.ch.release_mut(V2);
    r.paused = false;
    r.withdrawn = true;
    r.redirect_to = Some(OsVersion::parse(V1).unwrap());
    fleet.publish();
    // The staged machine drops the pending generation: slot unbootable, no reboot signal.
    let text = staged.upd_ok(&["update"], 0);
    assert!(text.contains("withdrawn by the publisher"), "{text}");
    let st = staged.state();
    assert!(st["pending"].is_null(), "{st}");
    assert_eq!(st["active"]["os_version"], V1);
    assert_eq!(staged.prio(USR_B).0, 0, "the dropped slot never boots");
    assert_eq!(staged.prio(USR_A), (1, 0, true));
    assert!(!staged.reboot_required());
    assert_eq!(staged.versions(), set_a());
    // The machine running v2 is sent back to 1.0.0 with set A: a rollback the owner signed.
    let text = moved.upd_ok(&["check"], 100);
    assert!(
        text.contains("2.0.0 is WITHDRAWN; the signed manifest directs this machine to 1.0.0"),
        "{text}"
    );
    let text = moved.upd_ok(&["update"], 0);
    assert!(text.contains("OS 1.0.0 staged on USR-A"), "{text}");
    assert!(moved.reboot_required());
    assert_eq!(moved.versions(), set_b(), "v2 runs until the reboot");
    assert_eq!(moved.reboot(), USR_A);
    assert_eq!(moved.running_os(), V1);
    assert_eq!(moved.versions(), set_a());
    moved.upd_ok(&["mark-good"], 0);
    let st = moved.state();
    assert_eq!(st["active"]["os_version"], V1);
    assert!(st["pending"].is_null());
    // And stays there: the withdrawn release is never taken again.
    let text = moved.upd_ok(&["update"], 0);
    assert!(text.contains("up to date"), "{text}");
    assert!(moved.state()["pending"].is_null());

    // A replay of the older manifest that still offered v2 is refused; nothing changes.
    fleet.serve_manifest(&offering_v2);
    for n in [&fresh, &staged, &moved] {
        let before = snapshot(n);
        let text = n.upd_ok(&["update"], 4);
        assert!(text.contains("serial"), "{text}");
        assert_eq!(snapshot(n), before);
    }
}
