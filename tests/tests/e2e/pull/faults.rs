//! Faults: a cut download resumed, SIGKILL at every switch step, a wrong merge switched back, lock, full disk.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};

use super::rig::*;
use crate::failpoints::{points, SWITCH, UNDO};
use upd_tests::bins;
use upd_tests::faultserver::Fault;
use upd_tests::sandbox::require_root;

#[test]
fn cut_download_resumes_with_range() {
    // A 4 MiB hello image whose first transfer is cut at 3 MiB with retries off: the pull fails leaving a
    // .partial; the next pull asks for the rest with Range and merges.
    if !require_root() {
        return;
    }
    let mut rig = Rig::new();
    let mut hello = ext("hello", "1.0.0");
    hello.pad_bytes = 4 * MIB;
    rig.ch.add_extension(OS_VERSION, &hello);
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    let (url, size) = rig.image_url("hello", "1.0.0");
    rig.server.set_fault(
        &url,
        Fault::CutAfter {
            at: 3 * MIB,
            times: Some(1),
        },
    );
    let out = rig.upd(&["--set", "RETRIES=0", "pull"], &[]);
    let cut = text_of(&out);
    assert_eq!(out.status.code(), Some(7), "{cut}");
    assert!(rig.m.merged_names().is_empty());
    let store = rig.m.root().join("var/lib/upd/images/hello");
    let partial: u64 = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(partial > MIB, "partial holds {partial} bytes");
    rig.server.reset_stats(&url);
    let out = rig.upd_ok(&["pull"], 0);
    let stats = rig.server.stats(&url);
    eprintln!(
        "resume: image {size} bytes, partial {partial}, re-sent {} in {} request(s) {:?}",
        stats.body_bytes, stats.requests, stats.ranges
    );
    // Only the missing tail comes again: nothing the partial holds is re-sent.
    assert_eq!(stats.body_bytes, size - partial, "{out}");
    assert!(
        stats.body_bytes < size / 2,
        "re-sent {} of {size}",
        stats.body_bytes
    );
    assert!(
        stats.ranges[0]
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=")),
        "{stats:?}"
    );
    assert_eq!(rig.m.merged_names(), ["hello", "world"]);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
}

fn set_of(version: &str) -> BTreeMap<String, String> {
    ["hello", "world"]
        .iter()
        .map(|n| (n.to_string(), release_of(&ext(n, version))))
        .collect()
}

/// A machine on hello+world 1.0.0 whose channel now offers hello+world 1.1.0.
fn rig_offering_v2() -> Rig {
    let mut rig = rig_at_v1();
    assert_eq!(rig.merged(), set_of("1.0.0"), "before");
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.1.0").erofs());
    rig.publish();
    rig
}

/// `upd pull` killed by SIGKILL at failpoint `fp`.
fn pull_killed_at(rig: &Rig, fp: &str) {
    let out = rig.upd(&["pull"], &[("UPD_FAILPOINT", fp)]);
    assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text_of(&out));
}

/// The `upd status --json` document.
fn status(rig: &Rig) -> serde_json::Value {
    let out = rig.upd(&["status", "--json"], &[]);
    assert!(out.status.success(), "{}", text_of(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sigkill_at_each_switch_step_boots_old_or_new_set_never_a_mix() {
    // For each failpoint of the switch: a machine on hello+world 1.0.0 pulls hello+world 1.1.0 and is killed
    // there; after a power cut, `upd boot` and the boot-time merge, the merged set is wholly old or new.
    if !require_root() {
        return;
    }
    let (old, new) = (set_of("1.0.0"), set_of("1.1.0"));
    let mut outcomes = Vec::new();
    for fp in points(SWITCH) {
        let mut rig = rig_offering_v2();
        pull_killed_at(&rig, fp);
        rig.m.reboot();
        rig.upd_ok(&["boot"], 0);
        let merge = rig.m.sysext(&["merge"]);
        assert!(merge.status.success(), "{fp}: merge: {}", text_of(&merge));
        let merged = rig.merged();
        let which = if merged == old {
            "1.0.0"
        } else if merged == new {
            "1.1.0"
        } else {
            panic!("{fp}: a mix after reboot: {merged:?}")
        };
        let st = status(&rig);
        assert!(st["unfinished_switch"].is_null(), "{fp}: {st}");
        let active = &st["active"]["extensions"];
        assert_eq!(active["hello"]["version"], which, "{fp}: state vs merged");
        assert_eq!(active["world"]["version"], which, "{fp}: state vs merged");
        outcomes.push(format!("{fp}={which}"));
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.merged(), new, "{fp}: pull after reboot");
    }
    eprintln!("sigkill outcomes: {}", outcomes.join(" "));
}

#[test]
fn sigkill_at_each_switch_step_then_live_pull_finishes() {
    // The same kills without a reboot: the journal shows the unfinished switch until the next live `upd pull`
    // finishes or undoes it (with a refresh) and ends on the new set.
    if !require_root() {
        return;
    }
    for fp in points(SWITCH) {
        let rig = rig_offering_v2();
        pull_killed_at(&rig, fp);
        let st = status(&rig);
        assert_eq!(
            st["unfinished_switch"].is_null(),
            fp == "switch-committed",
            "{fp}: {st}"
        );
        let out = rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.merged(), set_of("1.1.0"), "{fp}: {out}");
        assert!(status(&rig)["unfinished_switch"].is_null(), "{fp}");
        assert_eq!(rig.m.run_program("world").trim(), "world 1.1.0", "{fp}");
    }
}

#[test]
fn default_build_ignores_upd_failpoint() {
    // The upd that `cargo build -p upd` makes (default features: the binary that gets installed) pulls
    // hello+world 1.1.0 with UPD_FAILPOINT naming the first step of the switch: it must not die there.
    if !require_root() {
        return;
    }
    let rig = rig_offering_v2();
    let fp = points(SWITCH)[0];
    let out = rig
        .m
        .upd_cmd(bins::upd_default(), &["pull"])
        .env("UPD_FAILPOINT", fp)
        .output()
        .expect("run upd");
    assert_eq!(out.status.code(), Some(0), "{fp}: {}", text_of(&out));
    assert_eq!(rig.merged(), set_of("1.1.0"), "{fp}");
}

#[test]
fn second_pull_fails_naming_the_lock_holder() {
    // One pull is stuck on a stalled download of hello 1.1.0 while holding the lock; a second pull starts.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let mut hello = ext("hello", "1.1.0");
    hello.pad_bytes = MIB;
    rig.ch.add_extension(OS_VERSION, &hello);
    rig.publish();
    let (url, _) = rig.image_url("hello", "1.1.0");
    rig.server.set_fault(
        &url,
        Fault::StallAfter {
            at: 64 * 1024,
            times: None,
        },
    );
    let mut first: Child = rig
        .upd_cmd(&["--set", "STALL_TIMEOUT_SECS=120", "pull"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rig.server.stats(&url).requests == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "first pull never fetched"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    let killed = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::SIGKILL,
    );
    let _ = first.wait();
    killed.unwrap();
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains(&format!("pid {}", first.id())), "{text}");
    rig.server.set_fault(&url, Fault::Normal);
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
}

#[test]
fn full_disk_refuses_before_switching() {
    // The image store is a 1 MiB tmpfs inside the machine; hello 1.1.0 needs 3 MiB.
    if !require_root() {
        return;
    }
    let mut rig = Rig::new();
    let store = rig.m.root().join("var/lib/upd/images");
    fs::create_dir_all(&store).unwrap();
    let mount = rig.m.sh(&format!(
        "mount -t tmpfs -o size=1M tmpfs '{}'",
        store.display()
    ));
    assert!(mount.status.success(), "{}", text_of(&mount));
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.0.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    let before = rig.snapshot();
    assert_eq!(before.merged.len(), 2);
    let mut hello = ext("hello", "1.1.0");
    hello.pad_bytes = 3 * MIB;
    rig.ch.add_extension(OS_VERSION, &hello);
    rig.publish();
    refused(&rig, &before, 7, "free space");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
}

#[test]
fn wrong_merge_after_refresh_is_rolled_back_even_when_killed_midway() {
    // A machine on hello+world 1.0.0 pulls hello 1.1.0 through a systemd-sysext whose first call pretends to
    // refresh and merges nothing new: upd must see the old set still merged, switch back (exit 6); killed
    // in the middle of that switch back, the next boot merges the old set.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = rig.snapshot();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("fail-next");
    let flaky = dir.path().join("flaky-sysext");
    fs::write(
        &flaky,
        format!(
            "#!/bin/sh\nif [ -e '{m}' ]; then rm -f '{m}'; exit 0; fi\nexec '{real}' \"$@\"\n",
            m = mark.display(),
            real = rig.m.sysext_bin().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&flaky, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let set_bin = format!("SYSEXT_BIN={}", flaky.display());

    fs::write(&mark, b"").unwrap();
    let out = rig.upd(&["--set", &set_bin, "pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(text.contains("switched back"), "{text}");
    assert_eq!(rig.snapshot(), before, "{text}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");

    for fp in points(UNDO) {
        fs::write(&mark, b"").unwrap();
        let out = rig.upd(&["--set", &set_bin, "pull"], &[("UPD_FAILPOINT", fp)]);
        assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text_of(&out));
        rig.m.reboot();
        rig.upd_ok(&["boot"], 0);
        let merge = rig.m.sysext(&["merge"]);
        assert!(merge.status.success(), "{fp}: {}", text_of(&merge));
        assert_eq!(rig.snapshot(), before, "{fp}");
    }

    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
}

#[test]
fn stalled_download_fails_and_switches_nothing() {
    // The server stops sending hello 1.1.0 after 64 KiB and keeps the connection open (slow retrieval).
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = rig.snapshot();
    let mut hello = ext("hello", "1.1.0");
    hello.pad_bytes = MIB;
    rig.ch.add_extension(OS_VERSION, &hello);
    rig.publish();
    let (url, _) = rig.image_url("hello", "1.1.0");
    let stall = Fault::StallAfter {
        at: 64 * 1024,
        times: None,
    };
    rig.server.set_fault(&url, stall);
    let started = std::time::Instant::now();
    let out = rig.upd(
        &[
            "--set",
            "RETRIES=0",
            "--set",
            "STALL_TIMEOUT_SECS=2",
            "pull",
        ],
        &[],
    );
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(7), "{text}");
    assert!(text.contains("stalled"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{text}"
    );
    assert_eq!(rig.snapshot(), before, "{text}");
}
