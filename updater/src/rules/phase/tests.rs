//! The phase table: which generation booted, and what became of the pending one.

use std::collections::BTreeMap;

use chrono::Utc;

use super::*;
use crate::rules::gptprio::Prio;
use crate::state::LinkSet;

fn generation(id: u64, os: &str, slot: Option<&str>) -> Generation {
    Generation {
        id,
        os_version: os.into(),
        slot: slot.map(str::to_string),
        extensions: BTreeMap::new(),
        created: Utc::now(),
    }
}

fn prio(priority: u8, tries: u8, successful: bool) -> Option<Prio> {
    Some(Prio {
        priority,
        tries,
        successful,
    })
}

fn with_pending(p: Generation) -> State {
    State {
        active: Some(generation(1, "1.0.0", Some("USR-A"))),
        pending: Some(p),
        ..State::default()
    }
}

fn phase(st: &State, slot: &str, os_version: &str, pending_prio: Option<Prio>) -> Phase {
    Phase::of(
        st,
        Some(Booted {
            slot,
            os_version,
            pending_prio,
        }),
    )
}

#[test]
fn phases_of_a_pending_generation() {
    let st = with_pending(generation(3, "2.0.0", Some("USR-B")));
    use Phase::*;
    let cases = [
        ("USR-B", "2.0.0", None, BootedPending),
        ("USR-B", "2.0.5", None, WrongOs),
        // Armed, try spent, never good, and another slot came up: the boot loader fell back.
        ("USR-A", "1.0.0", prio(2, 0, false), FellBack),
        // Armed, try left: the reboot has not happened yet.
        ("USR-A", "1.0.0", prio(2, 1, false), Staged { armed: true }),
        // Never armed (staging cut short before the slot got its priority).
        ("USR-A", "1.0.0", prio(0, 0, false), Staged { armed: false }),
        ("USR-A", "1.0.0", prio(0, 1, false), Staged { armed: false }),
        // A rollback target is a successful slot: armed, never judged a fallback.
        ("USR-A", "1.0.0", prio(1, 0, true), Staged { armed: true }),
        // The pending slot's table could not be read.
        ("USR-A", "1.0.0", None, Staged { armed: false }),
    ];
    for (booted, version, pr, want) in cases {
        assert_eq!(
            phase(&st, booted, version, pr),
            want,
            "{booted} {version} {pr:?}"
        );
    }
    let unslotted = with_pending(generation(4, "2.0.0", None));
    assert_eq!(
        phase(&unslotted, "USR-A", "1.0.0", None),
        Staged { armed: false }
    );
    assert_eq!(Phase::of(&st, None), Staged { armed: false }, "no slots");
}

#[test]
fn phases_without_a_pending_generation() {
    let mut st = State::default();
    assert_eq!(phase(&st, "USR-A", "1.0.0", None), Phase::Idle);
    assert_eq!(Phase::of(&st, None), Phase::Idle);
    st.journal = Some(crate::state::SwitchJournal {
        target: generation(2, "1.0.0", None),
        from: LinkSet::new(),
        to: LinkSet::new(),
        phase: crate::state::SwitchPhase::Started,
    });
    assert_eq!(phase(&st, "USR-A", "1.0.0", None), Phase::Switching);
}

#[test]
fn what_each_phase_implies() {
    use Phase::*;
    let all = [
        Idle,
        Switching,
        Staged { armed: false },
        Staged { armed: true },
        BootedPending,
        WrongOs,
        FellBack,
    ];
    let booted: Vec<_> = all.iter().filter(|p| p.pending_booted()).collect();
    assert_eq!(booted, [&BootedPending, &WrongOs]);
    let reboot: Vec<_> = all.iter().filter(|p| p.reboot_needed()).collect();
    assert_eq!(reboot, [&Staged { armed: true }]);
}

fn id(st: &State, slot: &str, v: &str) -> Option<u64> {
    booted_generation(st, slot, v).map(|g| g.id)
}

#[test]
fn the_booted_generation_is_the_one_on_the_booted_slot() {
    let mut st = State {
        active: Some(generation(1, "1.0.0", Some("USR-A"))),
        pending: Some(generation(2, "2.0.0", Some("USR-B"))),
        ..State::default()
    };
    assert_eq!(id(&st, "USR-B", "2.0.0"), Some(2), "the new OS came up");
    assert_eq!(
        id(&st, "USR-A", "1.0.0"),
        Some(1),
        "fell back, or not rebooted yet"
    );
    assert_eq!(id(&st, "USR-B", "3.0.0"), None, "an OS no generation knows");
    // After mark-good and a rollback: previous on its slot.
    st.previous = st.active.take();
    st.active = st.pending.take();
    assert_eq!(id(&st, "USR-A", "1.0.0"), Some(1));
    // A generation from before A/B tracking (no slot) matches by OS version.
    st.previous = Some(generation(5, "1.0.0", None));
    assert_eq!(id(&st, "USR-A", "1.0.0"), Some(5));
}
