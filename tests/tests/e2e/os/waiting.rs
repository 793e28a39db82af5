//! Issue 10, defect 11: after `upd channel beta` to a channel that does not list the running
//! release, `update`, `pull` and `check` wait quietly (exit 0, a notice) and `upd status` says
//! why, until the channel offers a release to move to, which is then taken.

use upd_channels::name::Name;
use upd_tests::disk::USR_B;
use upd_tests::sandbox::require_root;

use super::rig::{add_v2, os, OsRig, V1, V2};

#[test]
fn a_channel_without_the_running_release_is_waited_on_until_it_offers_one() {
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    // Channel beta, signed by the same keys, lists only an older release: none for 1.0.0.
    rig.ch.manifest.channel = Name::new("beta").unwrap();
    rig.ch.manifest.releases.clear();
    rig.ch.add_os_release("0.9.0", &os("0.9.0"));
    rig.publish();
    rig.upd_ok(&["channel", "beta"], 0);
    let before = rig.links();

    let waiting = format!("channel beta lists no release for the running OS {V1}");
    for args in [&["update", "--unattended"][..], &["pull"], &["update"]] {
        let text = rig.upd_ok(args, 0);
        assert!(text.contains(&waiting), "upd {args:?}:\n{text}");
    }
    assert_eq!(rig.links(), before, "nothing changed while waiting");
    assert_eq!(rig.prio(USR_B).0, 0, "nothing staged");
    let text = rig.upd_ok(&["check"], 0);
    assert!(text.contains(&format!("waiting: {waiting}")), "{text}");
    let out = rig.upd(&["check", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["waiting"].as_str().unwrap().contains(&waiting),
        "{report}"
    );
    assert_eq!(report["update_available"], false, "{report}");

    let text = rig.upd_ok(&["status"], 0);
    assert!(text.contains(&format!("waiting: {waiting}")), "{text}");
    let out = rig.upd(&["status", "--json"], &[]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        st["last_check"]["waiting"]
            .as_str()
            .unwrap()
            .contains(&waiting),
        "{st}"
    );

    // Beta now offers 2.0.0 (still not 1.0.0): check says 100 and update takes it.
    add_v2(&mut rig.ch);
    rig.publish();
    let text = rig.upd_ok(&["check"], 100);
    assert!(
        text.contains(&format!("OS update available: {V2}")),
        "{text}"
    );
    let text = rig.upd_ok(&["pull"], 0);
    assert!(text.contains(&format!("OS {V2} staged")), "{text}");
    let out = rig.upd(&["status", "--json"], &[]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["last_check"]["waiting"].is_null(), "{st}");
    assert_eq!(st["pending"]["os_version"], V2, "{st}");
}
