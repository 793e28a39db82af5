//! Tests of the state transitions (no I/O) and of the state file (save, load, refusals).

use super::*;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}

fn generation(id: u64, os: &str, ext_version: &str) -> Generation {
    let img = ExtImage {
        version: ext_version.into(),
        file: format!("hello-{ext_version}.raw"),
        sha256: "ab".repeat(32),
    };
    Generation {
        id,
        os_version: os.into(),
        slot: Some("USR-A".into()),
        extensions: [("hello".to_string(), img)].into(),
        created: t(0),
    }
}

fn links(target: &str) -> LinkSet {
    [
        ("hello".to_string(), Some(PathBuf::from(target))),
        ("gone".to_string(), None),
    ]
    .into()
}

#[test]
fn serial_never_goes_back() {
    let mut s = State::default();
    s.record_serial("stable", 5).unwrap();
    s.record_serial("stable", 5).unwrap();
    s.record_serial("beta", 1).unwrap();
    let err = s.record_serial("stable", 4).unwrap_err();
    assert_eq!(
        err,
        TransitionError::SerialRollback {
            channel: "stable".into(),
            highest: 5,
            got: 4
        }
    );
    assert_eq!(s.highest_serial["stable"], 5);
}

#[test]
fn link_switch_happy_path_and_refusals() {
    // Active OS 1.0 with hello 1; switching hello to 2 on the same OS.
    let mut s = State {
        active: Some(generation(1, "1.0", "1")),
        ..State::default()
    };
    assert!(s.finish_switch(t(1)).is_err(), "nothing to finish");
    s.begin_switch(generation(2, "1.0", "2"), links("/a"), links("/b"))
        .unwrap();
    let again = s
        .begin_switch(generation(3, "1.0", "3"), links("/a"), links("/c"))
        .unwrap_err();
    assert!(
        again.to_string().contains("generation 2 is unfinished"),
        "{again}"
    );
    assert!(
        s.set_pending(generation(3, "2.0", "1"), t(1)).is_err(),
        "no staging during a switch"
    );
    assert!(s.finish_switch(t(1)).is_err(), "links not switched yet");
    s.mark_linked().unwrap();
    assert!(s.mark_linked().is_err());
    s.finish_switch(t(2)).unwrap();
    assert_eq!(
        (
            s.active.as_ref().unwrap().id,
            s.previous.as_ref().unwrap().id
        ),
        (2, 1)
    );
    assert!(s.journal.is_none());
    assert_eq!(s.history.last().unwrap().event, Event::Switched);
}

#[test]
fn link_switch_abort_keeps_active() {
    let mut s = State {
        active: Some(generation(1, "1.0", "1")),
        ..State::default()
    };
    let other_os = s
        .begin_switch(generation(2, "2.0", "1"), links("/a"), links("/b"))
        .unwrap_err();
    assert!(other_os.to_string().contains("pending"), "{other_os}");
    s.begin_switch(generation(2, "1.0", "2"), links("/a"), links("/b"))
        .unwrap();
    s.mark_linked().unwrap();
    s.begin_rollback().unwrap();
    assert!(s.begin_rollback().is_err() && s.finish_switch(t(1)).is_err());
    s.abort_switch(t(3)).unwrap();
    assert_eq!(s.active.as_ref().unwrap().id, 1);
    assert!(s.previous.is_none() && s.journal.is_none());
    assert!(s.abort_switch(t(4)).is_err());
}

#[test]
fn pending_promote_fail_and_drop() {
    let mut s = State {
        active: Some(generation(1, "1.0", "1")),
        ..State::default()
    };
    assert!(s.promote_pending(t(0)).is_err());
    s.set_pending(generation(2, "2.0", "1"), t(1)).unwrap();
    assert!(s
        .set_pending(generation(3, "3.0", "1"), t(1))
        .unwrap_err()
        .to_string()
        .contains("already pending"));
    s.promote_pending(t(2)).unwrap();
    assert_eq!(
        (
            s.active.as_ref().unwrap().id,
            s.previous.as_ref().unwrap().id
        ),
        (2, 1)
    );

    s.set_pending(generation(3, "3.0", "1"), t(3)).unwrap();
    assert_eq!(s.fail_pending(t(4)).unwrap().id, 3);
    assert!(s.failed_releases.contains("3.0") && s.pending.is_none());
    s.set_pending(generation(4, "3.1", "1"), t(5)).unwrap();
    assert_eq!(s.drop_pending(t(6)).unwrap().id, 4);
    assert!(s.drop_pending(t(7)).is_err());
    let events: Vec<Event> = s.history.iter().map(|h| h.event).collect();
    assert_eq!(
        events,
        [
            Event::Staged,
            Event::Promoted,
            Event::Staged,
            Event::Failed,
            Event::Staged,
            Event::Dropped
        ]
    );
}

#[test]
fn history_is_bounded_and_ids_never_repeat() {
    let mut s = State::default();
    for i in 0..(HISTORY_LIMIT as i64 + 10) {
        let id = s.next_generation_id();
        s.set_pending(generation(id, "1.0", "1"), t(i)).unwrap();
        s.drop_pending(t(i)).unwrap();
    }
    assert_eq!(s.history.len(), HISTORY_LIMIT);
    assert_eq!(
        s.history.last().unwrap().generation,
        HISTORY_LIMIT as u64 + 10
    );
    s.active = Some(generation(500, "1.0", "1"));
    assert_eq!(s.next_generation_id(), 501);
}

#[test]
fn save_load_roundtrip_and_missing_is_fresh() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(State::load(d.path()).unwrap(), State::default());
    let mut s = State {
        active: Some(generation(1, "1.0", "1")),
        manifest_etag: Some("\"e1\"".into()),
        ..State::default()
    };
    s.record_serial("stable", 7).unwrap();
    s.begin_switch(generation(2, "1.0", "2"), links("/a"), links("/b"))
        .unwrap();
    s.save(d.path()).unwrap();
    assert_eq!(State::load(d.path()).unwrap(), s);
    let text = std::fs::read_to_string(d.path().join(STATE_FILE)).unwrap();
    assert!(
        text.contains("\"schema\": 1") && text.contains("\"phase\": \"started\""),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}

#[test]
fn corrupt_and_newer_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join(STATE_FILE);
    std::fs::write(&path, "{\"schema\": 1, \"highest_serial\": ").unwrap();
    let err = State::load(d.path()).unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }));
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    std::fs::write(&path, "{\"schema\": 2, \"something_new\": true}").unwrap();
    let err = State::load(d.path()).unwrap_err().to_string();
    assert!(
        err.contains("schema 2")
            && err.contains("newer")
            && err.contains(&path.display().to_string()),
        "{err}"
    );

    let mut v = serde_json::to_value(State::default()).unwrap();
    v["unknown_field"] = 1.into();
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(matches!(
        State::load(d.path()),
        Err(StateError::Corrupt { .. })
    ));
    v.as_object_mut().unwrap().remove("unknown_field");
    v["schema"] = 0.into();
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(State::load(d.path())
        .unwrap_err()
        .to_string()
        .contains("unknown schema 0"));
}

#[test]
fn generations_leaving_previous_are_retired_newest_first() {
    let mut s = State::default();
    for id in 1..=4 {
        s.begin_switch(
            generation(id, "1.0.0", &format!("1.{id}.0")),
            links("a"),
            links("b"),
        )
        .unwrap();
        s.mark_linked().unwrap();
        s.finish_switch(t(id as i64)).unwrap();
    }
    assert_eq!(s.active.as_ref().unwrap().id, 4);
    assert_eq!(s.previous.as_ref().unwrap().id, 3);
    let retired: Vec<u64> = s.retired.iter().map(|g| g.id).collect();
    assert_eq!(retired, [2, 1]);
    // An OS rollback comes back to the previous generation: it is not retired twice, and the
    // generation it replaces as previous is the one that was active.
    s.stage_rollback(t(10)).unwrap();
    s.promote_pending(t(11)).unwrap();
    assert_eq!(s.active.as_ref().unwrap().id, 3);
    assert_eq!(s.previous.as_ref().unwrap().id, 4);
    let retired: Vec<u64> = s.retired.iter().map(|g| g.id).collect();
    assert_eq!(retired, [2, 1], "3 is active again, not retired");
    // Bounded.
    for id in 5..(5 + RETIRED_LIMIT as u64 + 3) {
        s.replace_previous(Some(generation(id, "1.0.0", "9.0.0")));
    }
    assert_eq!(s.retired.len(), RETIRED_LIMIT);
}

#[test]
fn an_os_rollback_holds_back_the_release_it_leaves_until_it_is_staged_again() {
    // Active 2.0 (previous 1.0); the operator rolls back to 1.0.
    let mut s = State {
        active: Some(generation(2, "2.0", "2")),
        previous: Some(generation(1, "1.0", "1")),
        ..State::default()
    };
    s.stage_rollback(t(1)).unwrap();
    assert_eq!(s.held_releases, ["2.0".to_string()].into());
    s.promote_pending(t(2)).unwrap();
    assert_eq!(
        s.held_releases,
        ["2.0".to_string()].into(),
        "kept across the promotion"
    );
    // The operator pulls 2.0 by version: staging it lifts the hold.
    s.set_pending(generation(3, "2.0", "2"), t(3)).unwrap();
    assert!(s.held_releases.is_empty());
    // Not written at all while empty (older files and readers stay as they were).
    let text = serde_json::to_string(&s).unwrap();
    assert!(!text.contains("held_releases"), "{text}");
}
