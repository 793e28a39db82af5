//! upd's failpoints as the kill suites take them: one group per prefix of `upd::host::failpoint::ALL`,
//! and a check that no point is left without a suite that kills upd there.

use upd::host::failpoint::ALL;

/// The switch of a pull (pull::faults, with and without a reboot after the kill).
pub(crate) const SWITCH: &str = "switch-";
/// The switch back after a wrong merge (pull::faults).
pub(crate) const UNDO: &str = "undo-";
/// Staging an OS image into the other slot (os::kills).
pub(crate) const STAGE: &str = "stage-";
/// `upd boot` linking the new set (os::kills).
pub(crate) const BOOT: &str = "boot-";
/// `upd mark-good` (os::kills).
pub(crate) const MARKGOOD: &str = "markgood-";
/// `upd rollback` (os::kills).
pub(crate) const ROLLBACK: &str = "rollback-";

/// Every group some suite kills at.
const GROUPS: [&str; 6] = [SWITCH, UNDO, STAGE, BOOT, MARKGOOD, ROLLBACK];

/// The failpoints of `group`, in the order a run meets them (never empty).
pub(crate) fn points(group: &str) -> Vec<&'static str> {
    let points: Vec<&'static str> = ALL
        .iter()
        .copied()
        .filter(|n| n.starts_with(group))
        .collect();
    assert!(!points.is_empty(), "no failpoint in group {group}");
    points
}

#[test]
fn every_failpoint_is_killed_at_by_a_suite() {
    // Situation: upd lists its failpoints; each must fall in a group that a kill test iterates over,
    // so a point added to upd::host::failpoint::ALL in a new group fails here until a suite covers it.
    for name in ALL {
        assert!(
            GROUPS.iter().any(|g| name.starts_with(g)),
            "failpoint {name} is in no group a kill test covers (tests/tests/e2e/failpoints.rs)"
        );
    }
    for group in GROUPS {
        points(group);
    }
}
