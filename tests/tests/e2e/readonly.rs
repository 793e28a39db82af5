//! The read commands (`status`, `check`, `list`, each also with `--json`) change nothing on the
//! machine: the root is byte-identical afterwards (contents, inodes, mtimes), the merged set is
//! the same, and on an A/B machine the disk's bytes (GPT and slots) too.

use std::fs;
use std::path::Path;
use std::process::Output;

use upd_tests::images::sha256_file;
use upd_tests::sandbox::require_root;
use upd_tests::tree;

use crate::os::rig::{OsRig, V2};
use crate::pull::rig::{ext, rig_at_v1, text_of, OS_VERSION};

/// Each read command with the exit code it must give here.
fn reads(check_code: i32) -> Vec<(Vec<&'static str>, i32)> {
    vec![
        (vec!["status"], 0),
        (vec!["status", "--json"], 0),
        (vec!["check"], check_code),
        (vec!["check", "--json"], check_code),
        (vec!["list"], 0),
        (vec!["list", "--json"], 0),
    ]
}

/// Run each read command through `upd` (check exiting `check_code`) and insist that it gives
/// its exit code, leaves `root` byte-identical, and passes `same` (the machine's other parts).
fn each_read_changes_nothing(
    root: &Path,
    check_code: i32,
    upd: impl Fn(&[&str]) -> Output,
    same: impl Fn(&[&str]),
) {
    let before = tree::snapshot(root);
    for (args, code) in reads(check_code) {
        let out = upd(&args);
        let text = text_of(&out);
        assert_eq!(out.status.code(), Some(code), "upd {args:?}:\n{text}");
        let changed = tree::diff(&before, &tree::snapshot(root));
        assert!(
            changed.is_empty(),
            "upd {args:?} changed the root:\n{}",
            changed.join("\n")
        );
        same(&args);
    }
}

#[test]
fn read_commands_leave_a_machine_with_a_switch_cut_short_as_it_was() {
    // A machine on hello 1.0.0 + world 1.0.0; hello 1.1.0 is published and a pull is killed
    // after placing the new links, before the refresh: the journal says Linked, the old set is
    // merged. A read command must neither finish that switch (refresh) nor save anything, even
    // though it verifies a manifest with a newer serial.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let out = rig.upd(&["pull"], &[("UPD_FAILPOINT", "switch-linked")]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{}",
        text_of(&out)
    );
    let root = rig.m.root().clone();
    let merged = rig.merged();
    assert!(
        fs::read_to_string(root.join("var/lib/upd/state.json"))
            .unwrap()
            .contains("\"linked\""),
        "the switch is cut short after linking"
    );
    each_read_changes_nothing(
        &root,
        100,
        |args| rig.upd(args, &[]),
        |args| assert_eq!(rig.merged(), merged, "upd {args:?} changed the merged set"),
    );
    let status = rig.upd_ok(&["status"], 0);
    assert!(status.contains("UNFINISHED SWITCH"), "{status}");
    // The next command that acts finishes the switch as before.
    let text = rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0", "{text}");
}

#[test]
fn read_commands_leave_an_ab_machine_with_a_staged_os_as_it_was() {
    // An A/B machine on 1.0.0 with 2.0.0 staged on USR-B (armed): the read commands look at the
    // GPT and the slots but change no byte of the disk nor the root.
    if !require_root() {
        return;
    }
    let mut rig = OsRig::new(&[]);
    rig.add_v2();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.state()["pending"]["os_version"], V2);
    let root = rig.m.root().clone();
    let disk = rig.disk.device();
    let disk_before = sha256_file(&disk);
    let versions = rig.versions();
    each_read_changes_nothing(
        &root,
        0,
        |args| rig.upd(args, &[]),
        |args| {
            assert_eq!(
                sha256_file(&disk),
                disk_before,
                "upd {args:?} changed the disk"
            );
            assert_eq!(rig.versions(), versions);
        },
    );
    let out = rig.upd(&["status", "--json"], &[]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        status["phase"],
        serde_json::json!({"phase": "staged", "armed": true}),
        "{status}"
    );
}
