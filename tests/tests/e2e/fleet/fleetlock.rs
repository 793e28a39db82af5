//! A machine with the fleet-lock strategy against a FleetLock server: refused, it stays up and says
//! why; allowed, it reboots, and after mark-good it reports steady state, giving the slot back.

use std::fs;

use upd_tests::disk::USR_B;
use upd_tests::fleetlock::FleetLockServer;
use upd_tests::sandbox::require_root;

use super::rig::Fleet;
use crate::os::rig::{set_b, V1, V2};

const REASON: &str = "change freeze until the incident review";

#[test]
fn a_refused_fleet_lock_keeps_the_machine_up_and_an_allowed_one_reboots_and_releases() {
    // Issue test 4: one machine on v1, strategy fleet-lock against a one-slot server that refuses
    // everything with a reason; v2 is published.
    if !require_root() {
        return;
    }
    let mut fleet = Fleet::new();
    let server = fleet
        .rt
        .block_on(FleetLockServer::start(1))
        .expect("start FleetLock server");
    let mut node = fleet.node(&[]);
    let marker = node.marker("reboot-requested");
    let conf = node.m.root().join("etc/upd/upd.conf.d");
    fs::create_dir_all(&conf).unwrap();
    let lines = format!(
        "REBOOT_STRATEGY=fleet-lock\nFLEET_LOCK_URL={}\nREBOOT_COMMAND=touch {}\n",
        server.url(),
        marker.display()
    );
    fs::write(conf.join("50-fleet.conf"), lines).unwrap();
    server.refuse_all(Some(REASON));
    fleet.add_v2();
    fleet.publish();

    // Refused: staged and signalled, but no reboot; status says why, with the server's words.
    let text = node.upd_ok(&["update", "--unattended"], 0);
    assert!(text.contains("not rebooting yet"), "{text}");
    assert!(!marker.exists(), "the reboot command must not run");
    assert_eq!(node.state()["pending"]["os_version"], V2);
    assert_eq!(node.running_os(), V1);
    assert!(node.reboot_required());
    let status = node.upd_ok(&["status"], 0);
    assert!(
        status.contains("reboot strategy fleet-lock: waiting: fleet-lock refused the reboot lock"),
        "{status}"
    );
    assert!(status.contains(REASON), "{status}");
    // Still refused on the next timer run: still no reboot, the pending generation kept.
    node.upd_ok(&["update", "--unattended"], 0);
    assert!(!marker.exists());
    assert_eq!(node.state()["pending"]["os_version"], V2);
    assert!(server.holders().is_empty());

    // Allowed: the next run takes the slot and reboots.
    server.refuse_all(None);
    let text = node.upd_ok(&["update", "--unattended"], 0);
    assert!(text.contains("rebooting"), "{text}");
    assert!(marker.exists(), "the reboot command ran");
    let id = node.machine_id();
    assert_eq!(server.holders(), vec![id.clone()]);
    assert_eq!(node.reboot(), USR_B);
    assert_eq!(node.versions(), set_b());
    assert_eq!(server.holders(), vec![id.clone()], "held until marked good");
    node.upd_ok(&["mark-good"], 0);
    assert!(
        server.holders().is_empty(),
        "steady-state released the slot"
    );
    let got = server.received();
    let last = got.last().expect("requests");
    assert_eq!(last.path, "/v1/steady-state");
    assert_eq!(last.protocol_header.as_deref(), Some("true"));
    let body: serde_json::Value = serde_json::from_str(&last.body).unwrap();
    assert_eq!(body["client_params"]["id"], id.as_str());
    assert_eq!(body["client_params"]["group"], "default");
    let pre = got.iter().filter(|r| r.path == "/v1/pre-reboot").count();
    assert_eq!(pre, 3, "one pre-reboot per timer run");
}
