//! The rollout guard end to end: 20 real machines report to the server, v2 rolls out to half of
//! them, 3 fail their health check, `upd-channel fleet guard` pauses v2 and signs, and the
//! machines whose wave had not come do not start; `upd status` says the release is paused.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use chrono::{Duration, Utc};
use upd_channels::manifest::{Rollout, RolloutStep};
use upd_channels::rollout::fleet_position;
use upd_channels::version::OsVersion;
use upd_tests::disk::USR_B;
use upd_tests::sandbox::require_root;

use super::reportserver::{on_both_dbs, rand16, Backend, ReportServer};
use super::rig::Fleet;
use crate::os::rig::{serve, V1, V2};
use crate::pull::rig::text_of;

/// A random machine-id whose fleet position for 2.0.0 on `stable` is below (`early`) or above
/// the half, clear of the boundary.
fn id_in_half(early: bool) -> String {
    let v2 = OsVersion::parse(V2).unwrap();
    loop {
        let id = hex::encode(rand16());
        let p = fleet_position(&id, "stable", &v2);
        if (early && p < 0.45) || (!early && p > 0.55) {
            return id;
        }
    }
}

fn the_guard_pauses_a_failing_rollout(backend: Backend) {
    // 20 machines on v1, 8 placed in the first half of v2's fleet and 12 in the second; v2 goes to
    // 50 % now and to everyone in 3 hours. 3 of the early ones fail their health check.
    if !require_root() {
        return;
    }
    let s = ReportServer::start(backend, &[]);
    let mut fleet = Fleet::new();
    let mut nodes: Vec<_> = (0..20)
        .map(|i| {
            let n = fleet.node(&[]);
            n.set_machine_id(&id_in_half(i < 8));
            s.enroll(&n);
            n
        })
        .collect();
    fleet.add_v2();
    let start = Utc::now() - Duration::hours(1);
    let step = |after_hours, percent| RolloutStep {
        after_hours,
        percent,
    };
    fleet.ch.release_mut(V2).rollout = Some(Rollout {
        start,
        steps: vec![step(0.0, 50.0), step(1.5, 50.0), step(4.0, 100.0)],
    });
    fleet.publish();
    for (i, n) in nodes.iter().enumerate() {
        let text = n.upd_ok(&["update"], 0);
        assert_eq!(
            text.contains("OS 2.0.0 staged"),
            i < 8,
            "machine {i}:\n{text}"
        );
    }
    for (i, n) in nodes.iter_mut().enumerate().take(8) {
        assert_eq!(n.reboot(), USR_B);
        if i < 3 {
            let hd = n.m.root().join("etc/upd/health.d");
            fs::create_dir_all(&hd).unwrap();
            let check = hd.join("10-app");
            fs::write(&check, "#!/bin/sh\necho app is down >&2\nexit 1\n").unwrap();
            fs::set_permissions(&check, fs::Permissions::from_mode(0o755)).unwrap();
            n.upd_ok(&["mark-good"], 6);
        } else {
            n.upd_ok(&["mark-good"], 0);
        }
    }
    let r = s.release(V2);
    assert_eq!(
        (r["tried"].as_i64(), r["failed"].as_i64()),
        (Some(8), Some(3)),
        "{r}"
    );
    assert_eq!(r["good"], 5, "{r}");
    assert_eq!(s.status()["machines"], 20);
    let table = s.fleet("status", &["--channel", "stable"]);
    eprintln!("fleet status:\n{}", String::from_utf8_lossy(&table.stdout));

    // The guard, with the channel key: 3 of 8 is over 2 %, so v2 is paused and signed.
    let key = fleet.ch.for_upd_channel();
    let repo = fleet.ch.repo().display().to_string();
    let guard = |s: &ReportServer| {
        let key = key.display().to_string();
        let args = [
            "--repo",
            &repo,
            "--channel",
            "stable",
            "--key",
            &key,
            "--max-failed",
            "2%",
        ];
        let out = s.fleet("guard", &args);
        let text = text_of(&out);
        assert!(out.status.success(), "fleet guard:\n{text}");
        text
    };
    let text = guard(&s);
    eprintln!("fleet guard:\n{text}");
    assert!(
        text.contains(
            "release 2.0.0: 3 of 8 machines failed or fell back (37.5%, bound 2.0%): PAUSED"
        ),
        "{text}"
    );
    fleet.ch.reload_draft();
    assert!(fleet
        .ch
        .manifest
        .releases
        .iter()
        .any(|r| r.version.to_string() == V2 && r.paused));
    let serial = fleet.ch.manifest.serial;
    // Idempotent: a second run sees the signed pause and signs nothing.
    let text = guard(&s);
    assert!(text.contains("already paused: nothing to do"), "{text}");
    assert!(
        text.contains("nothing to pause; manifest left as it is"),
        "{text}"
    );
    fleet.ch.reload_draft();
    assert_eq!(fleet.ch.manifest.serial, serial, "not re-signed");
    serve(&fleet.ch, &fleet.server);

    // The late machines: their wave comes in 3 hours, but the release is paused.
    let later = (Utc::now() + Duration::hours(4)).to_rfc3339();
    for (i, n) in nodes.iter().enumerate().skip(8) {
        let text = n.upd_ok(&["check", "--now", &later], 0);
        assert!(
            text.contains("passed over 2.0.0: rollout paused by the publisher"),
            "machine {i}:\n{text}"
        );
        let text = n.upd_ok(&["update"], 0);
        assert!(!text.contains("staged"), "machine {i}:\n{text}");
        assert!(n.state()["pending"].is_null(), "machine {i}");
        let status = n.upd_ok(&["status"], 0);
        assert!(
            status.contains("passed over 2.0.0: rollout paused by the publisher"),
            "machine {i}:\n{status}"
        );
        assert_eq!(n.state()["active"]["os_version"], V1);
    }
    let r = s.release(V2);
    assert_eq!(r["tried"], 8, "no late machine started: {r}");
}

on_both_dbs!(guard, the_guard_pauses_a_failing_rollout);
