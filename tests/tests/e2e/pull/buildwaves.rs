//! Rollout of extension builds: a new build for the running OS follows its release's pause and
//! waves (or waves of its own), a machine running a build keeps it through a pause, a withdrawn
//! build is switched away from, a machine without a machine id takes nothing rolled out in waves,
//! and `check --now` shows the rollout's future without changing anything.

use std::fs;

use chrono::{Duration, SecondsFormat, Utc};
use upd_channels::manifest::{Rollout, RolloutStep};
use upd_tests::sandbox::require_root;

use super::rig::*;

/// A rollout to the whole fleet from `start`, reaching 100 % one hour later.
fn all_after(start: chrono::DateTime<Utc>) -> Rollout {
    Rollout {
        start,
        steps: vec![RolloutStep {
            after_hours: 1.0,
            percent: 100.0,
        }],
    }
}

fn check_json(rig: &Rig, args: &[&str], code: i32) -> serde_json::Value {
    let out = rig.upd(args, &[]);
    assert_eq!(
        out.status.code(),
        Some(code),
        "upd {args:?}:\n{}",
        text_of(&out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hello_of(report: &serde_json::Value) -> serde_json::Value {
    report["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "hello")
        .unwrap()
        .clone()
}

fn build_mut<'a>(
    rig: &'a mut Rig,
    name: &str,
    v: &str,
) -> &'a mut upd_channels::manifest::ExtBuild {
    let v = semver::Version::parse(v).unwrap();
    rig.ch
        .release_mut(OS_VERSION)
        .extensions
        .iter_mut()
        .find(|b| b.name.as_str() == name && b.version == v)
        .unwrap()
}

/// The files of the machine's state directory, byte for byte.
fn state_files(rig: &Rig) -> Vec<(String, Vec<u8>)> {
    let dir = rig.m.root().join("var/lib/upd");
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_new_build_waits_for_its_paused_release_and_check_now_shows_when_it_comes() {
    // Found from outside: release 1.0.0 paused, its rollout starting tomorrow, a new hello 1.1.0
    // published for 1.0.0: `upd pull` merged it at once on every machine.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let tomorrow = Utc::now() + Duration::days(1);
    {
        let r = rig.ch.release_mut(OS_VERSION);
        r.paused = true;
        r.rollout = Some(all_after(tomorrow));
    }
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let before = rig.snapshot();
    // check: nothing pull would apply (exit 0), and it says why hello 1.1.0 waits.
    let report = check_json(&rig, &["check", "--json"], 0);
    let hello = hello_of(&report);
    assert_eq!(hello["candidate"], "1.0.0", "{report}");
    let waiting = hello["waiting"].as_str().unwrap();
    assert!(
        waiting.starts_with("hello 1.1.0: rollout paused by the publisher"),
        "{report}"
    );
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(
        rig.snapshot(),
        before,
        "a paused release's new build was applied"
    );
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
    let status = rig.upd_ok(&["status"], 0);
    assert!(
        status.contains("build waits: hello 1.1.0: rollout paused"),
        "{status}"
    );

    // Resumed, its waves still start tomorrow: still waiting now; `check --now` two days ahead
    // sees it (exit 100) and changes nothing on the machine.
    rig.ch.release_mut(OS_VERSION).paused = false;
    rig.publish();
    let report = check_json(&rig, &["check", "--json"], 0);
    let waiting = hello_of(&report)["waiting"].as_str().unwrap().to_string();
    assert!(waiting.contains("rollout wave: this machine"), "{waiting}");
    assert!(waiting.contains("becomes eligible at"), "{waiting}");
    let files = state_files(&rig);
    let later = (Utc::now() + Duration::days(2)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let report = check_json(&rig, &["check", "--json", "--now", &later], 100);
    let hello = hello_of(&report);
    assert_eq!(hello["candidate"], "1.1.0", "{report}");
    assert!(hello["waiting"].is_null(), "{report}");
    assert_eq!(state_files(&rig), files, "check --now changed the state");
    assert_eq!(rig.snapshot(), before);
    // A bad instant is a usage error naming it.
    let out = rig.upd(&["check", "--now", "tomorrow"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text_of(&out));
    assert!(text_of(&out).contains("'tomorrow' is not an RFC 3339 time"));

    // The waves reach the machine: pull takes it.
    rig.ch.release_mut(OS_VERSION).rollout = Some(all_after(Utc::now() - Duration::days(1)));
    rig.publish();
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("hello: 1.0.0 -> 1.1.0"), "{out}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
}

#[test]
fn a_build_with_waves_of_its_own_is_paused_kept_and_withdrawn() {
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    // Its own waves, starting tomorrow: the release's (none: everyone) no longer apply to it.
    build_mut(&mut rig, "hello", "1.1.0").rollout = Some(all_after(Utc::now() + Duration::days(1)));
    rig.publish();
    let before = rig.snapshot();
    rig.upd_ok(&["check"], 0);
    rig.upd_ok(&["pull"], 0);
    assert_eq!(
        rig.snapshot(),
        before,
        "a build whose waves start tomorrow was applied"
    );

    // Its waves reach everyone: taken. Then paused: this machine keeps it (a pause sends no
    // one back), and check sees nothing to do.
    build_mut(&mut rig, "hello", "1.1.0").rollout = Some(all_after(Utc::now() - Duration::days(1)));
    rig.publish();
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("hello: 1.0.0 -> 1.1.0"), "{out}");
    build_mut(&mut rig, "hello", "1.1.0").paused = true;
    rig.publish();
    rig.upd_ok(&["check"], 0);
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");

    // Withdrawn: the machine that switched to it goes back to the previous build.
    build_mut(&mut rig, "hello", "1.1.0").withdrawn = true;
    rig.publish();
    let report = check_json(&rig, &["check", "--json"], 100);
    assert_eq!(hello_of(&report)["candidate"], "1.0.0", "{report}");
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("hello: 1.1.0 -> 1.0.0"), "{out}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
    assert_eq!(rig.m.run_program("world").trim(), "world 1.0.0");
    rig.upd_ok(&["check"], 0);
}

#[test]
fn a_machine_without_a_machine_id_takes_nothing_rolled_out_in_waves() {
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    fs::write(rig.m.root().join("etc/machine-id"), "").unwrap();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    // Waves that have reached the whole fleet: a machine without an id still has no place.
    rig.ch.release_mut(OS_VERSION).rollout = Some(all_after(Utc::now() - Duration::days(1)));
    rig.publish();
    let before = rig.snapshot();
    let report = check_json(&rig, &["check", "--json"], 0);
    let waiting = hello_of(&report)["waiting"].as_str().unwrap().to_string();
    assert!(
        waiting.contains("this machine has no machine id"),
        "{waiting}"
    );
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.snapshot(), before);
    let status = rig.upd_ok(&["status"], 0);
    assert!(status.contains("no machine id"), "{status}");
    // Once it has one, it follows the waves like any machine.
    fs::write(
        rig.m.root().join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("hello: 1.0.0 -> 1.1.0"), "{out}");
}
