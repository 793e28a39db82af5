//! Issue test 4: what must never be staged. Each refusal leaves the machine exactly as it was:
//! links, state, both slots' attributes and the merged set.

use std::collections::BTreeMap;

use upd_tests::disk::{USR_A, USR_B};
use upd_tests::faultserver::Fault;
use upd_tests::sandbox::require_root;

use super::rig::{ext, os, OsRig, SLOT_SIZE, V1, V2};

/// Everything a refused OS update must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: BTreeMap<String, String>,
    active: serde_json::Value,
    pending: serde_json::Value,
    prio: [(u8, u8, bool); 2],
    merged: BTreeMap<String, String>,
    reboot_required: bool,
}

fn snapshot(rig: &OsRig) -> Snapshot {
    let st = rig.state();
    Snapshot {
        links: rig.links(),
        active: st["active"].clone(),
        pending: st["pending"].clone(),
        prio: [rig.prio(USR_A), rig.prio(USR_B)],
        merged: rig.versions(),
        reboot_required: rig.reboot_required(),
    }
}

/// `upd pull` exits `code` naming `needle`; the machine is as it was; a reboot still boots v1.
fn refused(rig: &mut OsRig, code: i32, needle: &str) {
    let before = snapshot(rig);
    let text = rig.upd_ok(&["pull"], code);
    assert!(text.contains(needle), "expected '{needle}' in:\n{text}");
    assert_eq!(snapshot(rig), before, "{text}");
    assert_eq!(rig.reboot(), USR_A);
    assert_eq!(rig.running_os(), V1);
}

/// Release 2.0.0 with its OS image and hello; `world` as given.
fn v2_with_world(rig: &mut OsRig, world_built_for: &str) {
    rig.ch.add_os_release(V2, &os(V2));
    rig.ch.add_extension(V2, &ext("hello", "2.0.0", V2));
    rig.ch
        .add_extension(V2, &ext("world", "2.0.0", world_built_for));
}

#[test]
fn an_os_release_without_a_merging_build_of_every_extension_is_not_staged() {
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    // world's build for 2.0.0 declares VERSION_ID=1.0.0: it would not merge on 2.0.0.
    v2_with_world(&mut rig, V1);
    rig.publish();
    let text = rig.upd_ok(&["check"], 0);
    assert!(text.contains("OS update 2.0.0 is BLOCKED"), "{text}");
    assert!(text.contains("world"), "{text}");
    refused(&mut rig, 8, "--drop-extension");
    let text = rig.upd_ok(&["pull", "--drop-extension", "nosuch"], 1);
    assert!(text.contains("no such extension is enabled"), "{text}");
    // The operator may drop it on purpose, never silently.
    let text = rig.upd_ok(&["pull", "--drop-extension", "world"], 0);
    assert!(text.contains("world DROPPED on request"), "{text}");
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.versions(), super::rig::set(&[("hello", "2.0.0")]));
}

#[test]
fn an_extension_image_that_says_another_version_id_than_its_manifest_entry_is_refused() {
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    v2_with_world(&mut rig, V1);
    // The manifest claims the build is for 2.0.0; the image inside says 1.0.0.
    let r = rig.ch.release_mut(V2);
    let w = r
        .extensions
        .iter_mut()
        .find(|b| b.name.as_str() == "world")
        .unwrap();
    w.release.version_id = Some(V2.into());
    rig.publish();
    refused(
        &mut rig,
        5,
        "is built for VERSION_ID 1.0.0, the host has 2.0.0",
    );
    assert_eq!(rig.prio(USR_B).0, 0, "the written slot stays unbootable");
}

#[test]
fn an_os_image_whose_os_release_differs_from_the_manifest_is_refused() {
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    // Release 2.0.0 whose image is really an OS 2.0.5, while the manifest says 2.0.0.
    rig.ch.add_os_release(V2, &os("2.0.5"));
    rig.ch.release_mut(V2).os.identity.version_id = Some(V2.into());
    rig.ch.add_extension(V2, &ext("hello", "2.0.0", V2));
    rig.ch.add_extension(V2, &ext("world", "2.0.0", V2));
    rig.publish();
    refused(&mut rig, 5, "its os-release says ID=updos VERSION_ID=2.0.5");
}

#[test]
fn an_os_image_larger_than_the_slot_or_corrupted_in_transit_is_refused() {
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    rig.add_v2();
    let real = rig.ch.release_mut(V2).os.image.clone();
    rig.ch.release_mut(V2).os.image.size = SLOT_SIZE + 1;
    rig.publish();
    refused(&mut rig, 5, "larger than the");
    // The real size again, but a byte flipped on the wire: the hash check refuses it.
    rig.ch.release_mut(V2).os.image.size = real.size;
    rig.publish();
    let url = format!("/{}", real.path);
    let file = rig.ch.file(&real);
    rig.server
        .put_file(&url, file, Fault::CorruptByte(real.size / 2))
        .unwrap();
    refused(&mut rig, 7, "SHA-256 mismatch");
    assert_eq!(
        rig.prio(USR_B).0,
        0,
        "a half-verified slot is never bootable"
    );
}

#[test]
fn a_blocked_os_release_does_not_hold_back_the_running_os_extensions() {
    // Regression (issue 16, defects 2 and 3): 2.0.0 is blocked (world has no build that merges
    // on it) while 1.0.0, running, gets hello 1.1.0. `check` says 100 and shows which OS each
    // candidate is for; `pull` applies hello 1.1.0 and still refuses 2.0.0 (exit 8); then both
    // agree there is nothing to do (check 0, pull 8 applying nothing).
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    v2_with_world(&mut rig, V1);
    rig.ch.add_extension(V1, &ext("hello", "1.1.0", V1));
    rig.publish();
    let text = rig.upd_ok(&["check"], 100);
    assert!(text.contains("OS update 2.0.0 is BLOCKED"), "{text}");
    assert!(
        text.contains("extensions for the running OS 1.0.0:"),
        "{text}"
    );
    let json = rig.upd(&["check", "--json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let hello = &report["extensions"][0];
    assert_eq!(
        (&hello["name"], &hello["candidate"]),
        (&"hello".into(), &"1.1.0".into())
    );
    assert_eq!(hello["for_os"], V1, "{report}");

    let text = rig.upd_ok(&["pull"], 8);
    assert!(text.contains("--drop-extension"), "{text}");
    let want = super::rig::set(&[("hello", "1.1.0"), ("world", "1.0.0")]);
    assert_eq!(rig.versions(), want, "{text}");
    assert!(rig.state()["pending"].is_null());
    assert_eq!(rig.prio(USR_B).0, 0, "nothing staged");

    rig.upd_ok(&["check"], 0);
    let before = snapshot(&rig);
    rig.upd_ok(&["update", "--unattended"], 8);
    assert_eq!(snapshot(&rig), before);
    assert_eq!(rig.reboot(), USR_A);
    assert_eq!(rig.versions(), want);
}
