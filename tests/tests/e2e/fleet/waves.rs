//! Rollout waves on real machines: which machines stage a release is decided by their fleet
//! position and wariness; the others say when their turn comes; `upd pull VERSION` bypasses waves.

use chrono::{Duration, Utc};
use upd_channels::manifest::{Rollout, RolloutStep};
use upd_channels::rollout::{effective_position, fleet_position};
use upd_channels::version::OsVersion;
use upd_tests::disk::USR_B;
use upd_tests::sandbox::require_root;

use super::rig::Fleet;
use crate::os::node::Node;
use crate::os::rig::{V1, V2};

/// A random machine-id whose fleet position for 2.0.0 on `stable` is below (`early`) or above the half.
fn id_in_half(early: bool) -> String {
    let v2 = OsVersion::parse(V2).unwrap();
    loop {
        let mut seed = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed).unwrap();
        let id = hex::encode(seed);
        let p = fleet_position(&id, "stable", &v2);
        // Keep clear of the boundary so that the test never hinges on a rounding.
        if (early && p < 0.45) || (!early && p > 0.55) {
            return id;
        }
    }
}

/// Half of the fleet now, flat for an hour more, then growing to all of it two hours later.
fn half_now() -> Rollout {
    let step = |after_hours, percent| RolloutStep {
        after_hours,
        percent,
    };
    Rollout {
        start: Utc::now() - Duration::hours(1),
        steps: vec![step(0.0, 50.0), step(2.0, 50.0), step(4.0, 100.0)],
    }
}

#[test]
fn a_wave_stages_exactly_the_machines_whose_turn_it_is_and_pull_version_bypasses_it() {
    // Issue test 2: six machines on v1; v2 rolls out to 50 % of the fleet now. Three machines are
    // placed early by their machine-id, three late, and one of the early ones is made wary (0.9).
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new();
    let nodes: Vec<(Node, f64)> = [(true, 0.0), (true, 0.0), (true, 0.9)]
        .into_iter()
        .chain([(false, 0.0); 3])
        .map(|(early, wariness)| {
            let node = fleet.node(&[&format!("WARINESS={wariness}")]);
            node.set_machine_id(&id_in_half(early));
            (node, wariness)
        })
        .collect();
    fleet.add_v2();
    let rollout = half_now();
    fleet.ch.release_mut(V2).rollout = Some(rollout.clone());
    fleet.publish();
    let v2 = OsVersion::parse(V2).unwrap();
    let now = Utc::now();
    let mut staged = 0;
    for (node, wariness) in &nodes {
        let pos = effective_position(fleet_position(&node.machine_id(), "stable", &v2), *wariness);
        let text = node.upd_ok(&["update"], 0);
        if rollout.admits(pos, now) {
            staged += 1;
            assert!(
                text.contains("OS 2.0.0 staged on USR-B"),
                "position {pos}:\n{text}"
            );
            assert_eq!(node.state()["pending"]["os_version"], V2);
            continue;
        }
        // Not its turn: nothing staged, and check and status say when it comes.
        assert!(text.contains("up to date"), "position {pos}:\n{text}");
        assert!(node.state()["pending"].is_null());
        assert_eq!(node.prio(USR_B).0, 0, "nothing made bootable");
        let when = rollout
            .eligible_from(pos)
            .expect("the schedule reaches 100 %");
        let want = format!(
            "passed over 2.0.0: rollout wave: this machine (fleet position {:.1}%) becomes eligible at {}",
            pos * 100.0,
            when.format("%Y-%m-%d %H:%M UTC")
        );
        assert!(when > now + Duration::minutes(50), "{when}");
        let check = node.upd_ok(&["check"], 0);
        assert!(check.contains(&want), "want {want:?} in:\n{check}");
        let status = node.upd_ok(&["status"], 0);
        assert!(status.contains(&want), "want {want:?} in:\n{status}");
    }
    assert_eq!(
        staged, 2,
        "the two eager early machines, not the wary one nor the late ones"
    );

    // An operator bypasses the wave on purpose on a machine whose turn has not come.
    let (late, _) = &nodes[5];
    let text = late.upd_ok(&["pull", V2], 0);
    assert!(text.contains("OS 2.0.0 staged on USR-B"), "{text}");
    assert_eq!(late.state()["pending"]["os_version"], V2);
    assert_eq!(late.state()["active"]["os_version"], V1);
    assert_eq!(late.prio(USR_B), (2, 1, false));
}
