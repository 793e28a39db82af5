//! The happy path: pull, check, update, second pull, gc; administrator images and disabled extensions.

use std::fs;

use super::rig::*;
use upd_tests::sandbox::require_root;

#[test]
fn pull_merges_updates_and_keeps_previous_for_gc() {
    // A channel with OS 1.0.0 and hello 1.0.0 (squashfs) + world 1.0.0 (erofs); a fresh machine pulls, then
    // hello 1.1.0 is published for the same OS and pulled; gc keeps the active and previous images.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
    assert_eq!(rig.m.run_program("world").trim(), "world 1.0.0");
    let out = rig.upd(&["status", "--json"], &[]);
    assert!(out.status.success(), "{}", text_of(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let active = &status["active"]["extensions"];
    assert_eq!(active["hello"]["version"], "1.0.0", "{status}");
    assert_eq!(active["world"]["version"], "1.0.0", "{status}");

    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let check = rig.upd(&["check", "--json"], &[]);
    assert_eq!(check.status.code(), Some(100), "{}", text_of(&check));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let hello = report["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "hello")
        .unwrap();
    assert_eq!(hello["candidate"], "1.1.0", "{report}");
    assert_eq!(hello["installed"], "1.0.0", "{report}");

    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("hello: 1.0.0 -> 1.1.0"), "{out}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
    assert_eq!(rig.m.run_program("world").trim(), "world 1.0.0");
    let again = rig.upd_ok(&["pull"], 0);
    assert!(again.contains("up to date"), "{again}");
    rig.upd_ok(&["check"], 0);

    // A stray image no generation uses goes; active (hello 1.1.0, world) and previous (hello 1.0.0) stay.
    let store = rig.m.root().join("var/lib/upd/images");
    fs::write(store.join("hello/hello-0.9.0-000000000000.raw"), b"old").unwrap();
    rig.upd_ok(&["gc"], 0);
    let mut left: Vec<String> = ["hello", "world"]
        .iter()
        .flat_map(|n| fs::read_dir(store.join(n)).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left[0].starts_with("hello-1.0.0-") && left[1].starts_with("hello-1.1.0-"));
    assert!(left[2].starts_with("world-1.0.0-"), "{left:?}");
    assert_eq!(rig.m.merged_names(), ["hello", "world"]);
}

#[test]
fn admin_images_are_never_touched_and_disable_unmerges() {
    // An administrator's own image tools.raw (a regular file) sits in /etc/extensions next to upd's links;
    // then world is disabled, and later the administrator puts a world.raw of their own there.
    if !require_root() {
        return;
    }
    let mut rig = Rig::new();
    let scratch = tempfile::tempdir().unwrap();
    let tools = upd_tests::images::build_sysext(&ext("tools", "7.0.0"), scratch.path());
    let admin = rig.m.root().join("etc/extensions/tools.raw");
    fs::copy(&tools, &admin).unwrap();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.0.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.merged_names(), ["hello", "tools", "world"]);
    assert!(fs::symlink_metadata(&admin).unwrap().is_file());
    assert_eq!(rig.m.run_program("tools").trim(), "tools 7.0.0");

    rig.upd_ok(&["ext", "disable", "world"], 0);
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("world: 1.0.0 -> -"), "{out}");
    assert_eq!(rig.m.merged_names(), ["hello", "tools"]);
    assert!(!rig.m.root().join("etc/extensions/world.raw").exists());

    let mine = rig.m.root().join("etc/extensions/world.raw");
    fs::copy(&tools, &mine).unwrap();
    rig.upd_ok(&["ext", "enable", "world"], 0);
    let before = rig.snapshot();
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("never touches what it did not create"),
        "{text}"
    );
    assert_eq!(rig.snapshot(), before, "{text}");
    assert_eq!(fs::read(&mine).unwrap(), fs::read(&tools).unwrap());
}

#[test]
fn retention_keeps_older_generations_images_until_gc_may_drop_them() {
    // hello goes 1.0.0 -> 1.1.0 -> 1.2.0 on a machine with RETENTION=1: gc keeps active (1.2.0),
    // previous (1.1.0) and one retired generation (1.0.0); with RETENTION=0 the retired one goes.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    rig.install(&["RETENTION=1"]);
    for v in ["1.1.0", "1.2.0"] {
        rig.ch.add_extension(OS_VERSION, &ext("hello", v));
        rig.publish();
        rig.upd_ok(&["pull"], 0);
    }
    let store = rig.m.root().join("var/lib/upd/images/hello");
    let hello = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&store)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".raw"))
            .collect();
        v.sort();
        v
    };
    rig.upd_ok(&["gc"], 0);
    let kept = hello();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(kept[0].starts_with("hello-1.0.0-"), "{kept:?}");
    rig.install(&["RETENTION=0"]);
    let text = rig.upd_ok(&["gc"], 0);
    let kept = hello();
    assert_eq!(kept.len(), 2, "{kept:?}\n{text}");
    assert!(
        kept[0].starts_with("hello-1.1.0-") && kept[1].starts_with("hello-1.2.0-"),
        "{kept:?}"
    );
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.2.0");
}
