//! The pure rules of the boot: which generation booted, and what became of the pending one.

use std::collections::BTreeMap;

use chrono::Utc;

use super::*;

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

#[test]
fn pending_verdicts() {
    let p = generation(3, "2.0.0", Some("USR-B"));
    use PendingVerdict::*;
    let cases = [
        ("USR-B", "2.0.0", None, Booted),
        ("USR-B", "2.0.5", None, WrongOs),
        // Armed, try spent, never good, and another slot came up: the boot loader fell back.
        ("USR-A", "1.0.0", prio(2, 0, false), FellBack),
        // Armed, try left: the reboot has not happened yet.
        ("USR-A", "1.0.0", prio(2, 1, false), NotYet),
        // Never armed (staging cut short before the slot got its priority).
        ("USR-A", "1.0.0", prio(0, 0, false), NotYet),
        // A rollback target is a successful slot: never judged a fallback.
        ("USR-A", "1.0.0", prio(1, 0, true), NotYet),
    ];
    for (booted, version, pr, want) in cases {
        assert_eq!(
            pending_verdict(&p, booted, version, pr),
            want,
            "{booted} {version} {pr:?}"
        );
    }
    let unslotted = generation(4, "2.0.0", None);
    assert_eq!(pending_verdict(&unslotted, "USR-A", "1.0.0", None), NotYet);
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
