//! Crash points for the tests: `UPD_FAILPOINT=NAME` kills the real binary with SIGKILL at NAME.

/// Every failpoint name upd passes to [`hit`], each group in the order a run meets them; the kill
/// tests iterate over it, by prefix, so a point added here is killed at without a new test.
pub const ALL: &[&str] = &[
    // ops/switch.rs and host/swap.rs: the switch of a pull (refreshed: in the private namespace, or
    // live in the fallback; beneath: the new overlay under the old one, not yet detached), then the
    // switch back after a wrong merge.
    "switch-journaled",
    "switch-link",
    "switch-linked",
    "switch-before-refresh",
    "switch-refreshed",
    "switch-checked",
    "switch-beneath",
    "switch-swapped",
    "switch-committed",
    "undo-link",
    // ops/stage.rs: an OS image staged into the other slot.
    "stage-disarmed",
    "stage-written",
    // host/slot.rs: the staged slot's os-release read through a loop device upd holds (also
    // met by rollback, which reads the other slot's).
    "stage-loop-attached",
    "stage-pending",
    "stage-armed",
    // ops/boot.rs, ops/mark_good.rs, ops/rollback.rs: upd boot, mark-good and rollback.
    "boot-link",
    "markgood-slot",
    "markgood-promoted",
    "rollback-pending",
];

/// Kill this process with SIGKILL if `UPD_FAILPOINT` names `name` (only with the `failpoints` feature).
///
/// In debug and failpoint builds, `name` must be listed in [`ALL`]: a point missing there would
/// escape the kill tests.
pub fn hit(name: &str) {
    if cfg!(any(debug_assertions, feature = "failpoints")) {
        assert!(
            ALL.contains(&name),
            "failpoint {name:?} is not listed in failpoint::ALL"
        );
    }
    #[cfg(feature = "failpoints")]
    if std::env::var("UPD_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!(failpoint = name, "failpoint hit: killing upd");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_grouped_by_prefix() {
        for (i, name) in ALL.iter().enumerate() {
            assert!(!ALL[..i].contains(name), "{name} listed twice");
            let (group, step) = name.split_once('-').expect("GROUP-STEP");
            assert!(!group.is_empty() && !step.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_listed_name_passes_when_not_chosen() {
        // UPD_FAILPOINT is not set in the unit tests: hit returns.
        assert!(std::env::var_os("UPD_FAILPOINT").is_none());
        for name in ALL {
            hit(name);
        }
    }

    #[test]
    #[cfg(any(debug_assertions, feature = "failpoints"))]
    #[should_panic(expected = "not listed in failpoint::ALL")]
    fn an_unlisted_name_panics() {
        hit("switch-nowhere");
    }
}
