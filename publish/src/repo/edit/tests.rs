use chrono::{TimeZone, Utc};
use upd_channels::manifest::RolloutStep;
use upd_channels::name::Name;
use upd_channels::version::OsVersion;

use super::*;
use crate::repo::tests::{draft, release};

fn v(s: &str) -> OsVersion {
    OsVersion::parse(s).unwrap()
}

fn rollout(steps: &[(f64, f64)]) -> Rollout {
    Rollout {
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        steps: steps
            .iter()
            .map(|&(after_hours, percent)| RolloutStep {
                after_hours,
                percent,
            })
            .collect(),
    }
}

/// A draft with releases 1.0.0 and 2.0.0 (with extension hello).
fn two() -> Manifest {
    let mut d = draft();
    d.releases = vec![
        release("1.0.0", 1, &[("hello", "1.0.0")]),
        release("2.0.0", 2, &[("hello", "1.1.0")]),
    ];
    d
}

#[test]
fn bad_rollout_steps_are_named_and_leave_the_draft_alone() {
    // Each kind of bad schedule is refused with the step it concerns; the draft is not touched.
    let mut d = two();
    let before = d.clone();
    let cases = [
        (
            vec![(0.0, 50.0), (24.0, 10.0)],
            "rollout step 2 (24:10)",
            "10% is less than the previous step's 50%",
        ),
        (
            vec![(24.0, 10.0), (12.0, 50.0)],
            "rollout step 2 (12:50)",
            "12 hours is earlier than the previous step's 24",
        ),
        (
            vec![(0.0, 150.0)],
            "rollout step 1 (0:150)",
            "outside 0..100",
        ),
        (vec![(-1.0, 5.0)], "rollout step 1 (-1:5)", "0 or more"),
        (vec![(0.0, f64::NAN)], "rollout step 1", "outside 0..100"),
    ];
    for (steps, which, why) in cases {
        let err = set_rollout(&mut d, &v("2.0.0"), rollout(&steps))
            .unwrap_err()
            .to_string();
        assert!(err.contains(which) && err.contains(why), "{steps:?}: {err}");
        assert!(
            err.contains("rollout steps must grow") || !why.contains("than"),
            "{err}"
        );
        assert_eq!(d, before);
    }
    let err = set_rollout(&mut d, &v("2.0.0"), rollout(&[])).unwrap_err();
    assert!(err.to_string().contains("at least one step"), "{err}");
    set_rollout(
        &mut d,
        &v("2.0.0"),
        rollout(&[(0.0, 1.0), (24.0, 1.0), (48.0, 100.0)]),
    )
    .unwrap();
    assert_eq!(d.releases[1].rollout.as_ref().unwrap().steps.len(), 3);
}

#[test]
fn rollout_resumes_and_pause_barrier_toggle() {
    // Pausing, then setting a new schedule, resumes; barrier sets and clears.
    let mut d = two();
    set_paused(&mut d, &v("2.0.0"), true).unwrap();
    assert!(d.releases[1].paused);
    set_rollout(&mut d, &v("2.0.0"), rollout(&[(0.0, 10.0)])).unwrap();
    assert!(!d.releases[1].paused);
    set_barrier(&mut d, &v("1.0.0"), true).unwrap();
    assert!(d.releases[0].barrier);
    set_barrier(&mut d, &v("1.0.0"), false).unwrap();
    assert!(!d.releases[0].barrier);
    let err = set_barrier(&mut d, &v("3.0.0"), true).unwrap_err();
    assert!(err.to_string().contains("has no release 3.0.0"), "{err}");
}

#[test]
fn redirect_must_name_a_safe_release_of_the_channel() {
    // Unknown, self and withdrawn targets are refused with the reason; a good one is recorded.
    let mut d = two();
    let before = d.clone();
    for (to, why) in [
        ("0.9.0", "is not a release of this channel"),
        ("2.0.0", "is the release being withdrawn"),
    ] {
        let err = withdraw(&mut d, &v("2.0.0"), Some(v(to)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("release 2.0.0: redirect_to {to} {why}")),
            "{err}"
        );
        assert_eq!(d, before);
    }
    withdraw(&mut d, &v("2.0.0"), Some(v("1.0.0"))).unwrap();
    assert!(d.releases[1].withdrawn);
    assert_eq!(d.releases[1].redirect_to, Some(v("1.0.0")));
    // 1.0.0 is now the safe release of a redirect: withdrawing it too is refused.
    let err = withdraw(&mut d, &v("1.0.0"), None).unwrap_err().to_string();
    assert!(
        err.contains("redirect_to 1.0.0 is itself withdrawn"),
        "{err}"
    );
    let mut e = two();
    withdraw(&mut e, &v("1.0.0"), None).unwrap();
    let err = withdraw(&mut e, &v("2.0.0"), Some(v("1.0.0")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("redirect_to 1.0.0 is itself withdrawn"),
        "{err}"
    );
}

#[test]
fn promote_copies_content_not_channel_decisions() {
    // The source's waves, pause, barrier and withdrawal stay behind unless --with-rollout.
    let mut alpha = two();
    alpha.channel = Name::new("alpha").unwrap();
    set_rollout(&mut alpha, &v("2.0.0"), rollout(&[(0.0, 5.0)])).unwrap();
    set_paused(&mut alpha, &v("2.0.0"), true).unwrap();
    set_barrier(&mut alpha, &v("2.0.0"), true).unwrap();
    let mut beta = draft();
    assert_eq!(
        promote(&alpha, &mut beta, &v("2.0.0"), false).unwrap(),
        Promoted::Added
    );
    let r = &beta.releases[0];
    assert_eq!(
        (r.rollout.is_none(), r.paused, r.barrier),
        (true, false, false)
    );
    assert_eq!(r.os, alpha.releases[1].os);
    assert_eq!(r.extensions, alpha.releases[1].extensions);
    // Again: identical content is left alone, and --with-rollout brings the schedule.
    assert_eq!(
        promote(&alpha, &mut beta, &v("2.0.0"), true).unwrap(),
        Promoted::AlreadyPresent
    );
    assert_eq!(beta.releases[0].rollout, alpha.releases[1].rollout);
    assert_eq!(beta.channel.as_str(), "stable");
}

#[test]
fn promote_refuses_a_missing_or_conflicting_release() {
    // Missing in the source, or present in the target with another OS image: refused, untouched.
    let mut alpha = two();
    alpha.channel = Name::new("alpha").unwrap();
    let mut beta = draft();
    beta.releases = vec![release("2.0.0", 7, &[("hello", "1.1.0")])];
    let before = beta.clone();
    let err = promote(&alpha, &mut beta, &v("3.0.0"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("channel 'alpha' has no release 3.0.0"),
        "{err}"
    );
    let err = promote(&alpha, &mut beta, &v("2.0.0"), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("already has release 2.0.0 with different content")
            && err.contains("OS image"),
        "{err}"
    );
    assert_eq!(beta, before);
}

#[test]
fn one_build_is_given_waves_paused_and_withdrawn_and_promote_leaves_that_behind() {
    let mut d = two();
    let hello: BuildRef = "hello=1.1.0".parse().unwrap();
    let build = |d: &Manifest| d.releases[1].extensions[0].clone();
    set_build_paused(&mut d, &v("2.0.0"), &hello, true).unwrap();
    assert!(build(&d).paused);
    set_build_rollout(
        &mut d,
        &v("2.0.0"),
        &hello,
        rollout(&[(0.0, 5.0), (24.0, 100.0)]),
    )
    .unwrap();
    let b = build(&d);
    assert!(!b.paused, "a new schedule resumes the build");
    assert_eq!(b.rollout.unwrap().steps.len(), 2);
    // The release itself is untouched.
    assert!(d.releases[1].rollout.is_none() && !d.releases[1].paused);
    // A missing build is named with what the release has, and the draft stays as it was.
    let before = d.clone();
    let e = set_build_paused(&mut d, &v("2.0.0"), &"hello=9.9.9".parse().unwrap(), true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no extension build hello 9.9.9") && e.contains("1.1.0"),
        "{e}"
    );
    let e = set_build_rollout(
        &mut d,
        &v("2.0.0"),
        &hello,
        rollout(&[(2.0, 50.0), (1.0, 60.0)]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rollout step 2"), "{e}");
    assert_eq!(d, before);
    assert!("hello"
        .parse::<BuildRef>()
        .unwrap_err()
        .contains("NAME=VERSION"));
    assert!("hello=one"
        .parse::<BuildRef>()
        .unwrap_err()
        .contains("semantic version"));

    withdraw_build(&mut d, &v("2.0.0"), &hello).unwrap();
    assert!(build(&d).withdrawn);
    // Promotion copies the build, not this channel's decisions about it (its waves only with
    // --with-rollout), and a build's decisions never make the content differ.
    let mut alpha = d.clone();
    alpha.channel = Name::new("alpha").unwrap();
    let mut beta = draft();
    promote(&alpha, &mut beta, &v("2.0.0"), false).unwrap();
    let b = &beta.releases[0].extensions[0];
    assert!(b.rollout.is_none() && !b.paused && !b.withdrawn);
    assert_eq!(
        promote(&alpha, &mut beta, &v("2.0.0"), true).unwrap(),
        Promoted::AlreadyPresent
    );
    assert_eq!(
        beta.releases[0].extensions[0].rollout,
        build(&alpha).rollout
    );
}
