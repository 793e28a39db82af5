//! The zero-gap switch on sandbox machines: a prober never finds a managed file missing, systemd-sysext
//! and `upd boot` treat the swapped overlay as their own, a failed assembly leaves the old overlay
//! mounted, an open file of the old set keeps working, and without mount-beneath upd falls back.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use upd::host::swap::{count_sysext_overlays, is_ours};
use upd_tests::bins;
use upd_tests::probe::{open_in, Prober};
use upd_tests::sandbox::require_root;

use crate::pull::rig::{ext, release_of, rig_at_v1, text_of, Rig, OS_VERSION};

/// The fallback's warning, as upd logs it.
const FALLBACK: &str = "falling back to systemd-sysext refresh";

/// A machine on hello+world 1.0.0 whose channel now offers hello+world 1.1.0.
fn rig_offering_v2() -> Rig {
    let mut rig = rig_at_v1();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.1.0").erofs());
    rig.publish();
    rig
}

/// The version of hello and of world merged now, each from its release file; panics on a mix.
fn merged_version(rig: &Rig) -> &'static str {
    let merged = rig.merged();
    for v in ["1.0.0", "1.1.0"] {
        let want = ["hello", "world"]
            .map(|n| (n.to_string(), release_of(&ext(n, v))))
            .into();
        if merged == want {
            return v;
        }
    }
    panic!("neither set is merged: {merged:?}")
}

/// Wait until the machine holds exactly `n` loop devices (detached overlays free theirs shortly after).
fn settle_loop_devices(rig: &Rig, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = rig.m.loop_devices().len();
        if held == n || Instant::now() > deadline {
            return held;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn twenty_switches_back_and_forth_never_leave_a_managed_file_missing() {
    // A machine on 1.0.0 pulls 1.1.0, then `upd rollback` nineteen times (each one back to the other
    // set), while a prober in the machine calls access() on /usr/bin/hello in a tight loop. Then five
    // bare `systemd-sysext refresh` runs under the same prober, to show that it does see a gap.
    if !require_root() {
        return;
    }
    let rig = rig_offering_v2();
    let hello = rig.m.root().join("usr/bin/hello");
    let prober = Prober::start(rig.m.pid(), &hello);
    let mut want = "1.1.0";
    let out = rig.upd_ok(&["pull"], 0);
    let mut logs = out;
    assert_eq!(merged_version(&rig), want);
    for i in 1..20 {
        logs += &rig.upd_ok(&["rollback"], 0);
        want = if want == "1.1.0" { "1.0.0" } else { "1.1.0" };
        assert_eq!(merged_version(&rig), want, "switch {i}");
    }
    let counts = prober.stop();
    eprintln!("zero-gap: 20 switches, {counts:?}");
    assert!(counts.probes > 0, "{counts:?}");
    assert_eq!(
        counts.missing, 0,
        "probes that found hello missing: {counts:?}"
    );
    assert!(!logs.contains(FALLBACK), "{logs}");
    assert_eq!(rig.m.run_program("hello").trim(), format!("hello {want}"));
    // Each old overlay was detached and freed: only the two images of the set in place hold a loop device.
    assert_eq!(
        settle_loop_devices(&rig, 2),
        2,
        "{:?}",
        rig.m.loop_devices()
    );

    let prober = Prober::start(rig.m.pid(), &hello);
    for _ in 0..5 {
        let out = rig.m.sysext(&["refresh"]);
        assert!(out.status.success(), "{}", text_of(&out));
    }
    let bare = prober.stop();
    eprintln!("bare refresh: 5 refreshes, {bare:?}");
    assert!(
        bare.missing > 0,
        "the prober must see the gap of a bare refresh: {bare:?}"
    );
}

#[test]
fn after_the_swap_systemd_sysext_and_upd_boot_treat_the_overlay_as_a_merge() {
    // A machine on 1.0.0 pulls 1.1.0 by the swap; then systemd-sysext lists the images and recognises
    // the overlay as its own, `upd boot` keeps it, a refresh by systemd-sysext merges the same set,
    // unmerge leaves a bare /usr with no loop device held, and a reboot merges the set again.
    if !require_root() {
        return;
    }
    let mut rig = rig_offering_v2();
    let out = rig.upd_ok(&["pull"], 0);
    assert!(!out.contains(FALLBACK), "{out}");
    assert_eq!(merged_version(&rig), "1.1.0");
    let usr = rig.m.ns_root().join("usr");
    assert!(
        is_ours(&usr).unwrap(),
        "the marker names the swapped overlay's device"
    );

    let list = rig.m.sysext(&["list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && listed.contains("hello") && listed.contains("world"),
        "{listed}"
    );

    let before = rig.snapshot();
    rig.upd_ok(&["boot"], 0);
    assert_eq!(rig.snapshot(), before);

    let refresh = rig.m.sysext(&["refresh"]);
    assert!(refresh.status.success(), "{}", text_of(&refresh));
    assert_eq!(merged_version(&rig), "1.1.0");
    assert!(is_ours(&usr).unwrap());

    let unmerge = rig.m.sysext(&["unmerge"]);
    assert!(unmerge.status.success(), "{}", text_of(&unmerge));
    assert!(
        rig.m.merged_names().is_empty(),
        "{:?}",
        rig.m.merged_names()
    );
    assert!(!rig.m.try_program("hello").status.success());
    assert!(!is_ours(&usr).unwrap());
    assert_eq!(
        settle_loop_devices(&rig, 0),
        0,
        "{:?}",
        rig.m.loop_devices()
    );

    // And upd switches again from a bare /usr (the new overlay goes on top, nothing to go beneath).
    rig.upd_ok(&["rollback"], 0);
    assert_eq!(merged_version(&rig), "1.0.0");
    rig.m.reboot();
    rig.upd_ok(&["boot"], 0);
    let merge = rig.m.sysext(&["merge"]);
    assert!(merge.status.success(), "{}", text_of(&merge));
    assert_eq!(merged_version(&rig), "1.0.0");
}

#[test]
fn an_open_file_and_a_running_process_of_the_old_set_keep_working() {
    // A machine on 1.0.0: the test holds hello's release file open, and a shell in the machine holds
    // hello's program open on fd 3; upd pulls 1.1.0; both still read the 1.0.0 bytes afterwards while
    // the paths show 1.1.0.
    if !require_root() {
        return;
    }
    let rig = rig_offering_v2();
    let release = rig
        .m
        .root()
        .join("usr/lib/extension-release.d/extension-release.hello");
    let mut held = open_in(rig.m.pid(), &release);
    let program = rig.m.root().join("usr/bin/hello");
    let script = format!("exec 3< '{}'; read go; cat <&3", program.display());
    let mut shell = Command::new("nsenter")
        .args([
            "-t",
            &rig.m.pid().to_string(),
            "-m",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The shell has its fd once it waits on stdin; give it a moment to get there.
    std::thread::sleep(Duration::from_millis(300));
    let old_program = fs::read(rig.m.ns_root().join("usr/bin/hello")).unwrap();

    rig.upd_ok(&["pull"], 0);
    assert_eq!(merged_version(&rig), "1.1.0");

    let mut text = String::new();
    held.read_to_string(&mut text).unwrap();
    assert_eq!(text, release_of(&ext("hello", "1.0.0")));
    shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let out = shell.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        out.stdout, old_program,
        "the running shell reads the old program"
    );
    assert!(String::from_utf8_lossy(&old_program).contains("1.0.0"));
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
}

#[test]
fn a_set_that_fails_to_assemble_leaves_the_old_overlay_mounted_untouched() {
    // A machine on 1.0.0 pulls 1.1.0 through a systemd-sysext that (a) fails, (b) exits 0 having merged
    // nothing new; each time the prober sees no gap, the live overlay is the very same mount (device)
    // as before, the links are restored and upd exits 6. Then a pull with the real one succeeds.
    if !require_root() {
        return;
    }
    let rig = rig_offering_v2();
    let before = rig.snapshot();
    let usr = rig.m.ns_root().join("usr");
    let dev = fs::metadata(&usr).unwrap().dev();
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in [("failing", "echo broken >&2; exit 1"), ("noop", "exit 0")] {
        let bin = dir.path().join(name);
        fs::write(&bin, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let set_bin = format!("SYSEXT_BIN={}", bin.display());
        let prober = Prober::start(rig.m.pid(), &rig.m.root().join("usr/bin/hello"));
        let out = rig.upd(&["--set", &set_bin, "pull"], &[]);
        let counts = prober.stop();
        let text = text_of(&out);
        assert_eq!(out.status.code(), Some(6), "{name}: {text}");
        assert!(text.contains("switched back"), "{name}: {text}");
        assert_eq!(rig.snapshot(), before, "{name}: {text}");
        assert_eq!(
            fs::metadata(&usr).unwrap().dev(),
            dev,
            "{name}: the same overlay"
        );
        assert_eq!(counts.missing, 0, "{name}: {counts:?}");
    }
    rig.upd_ok(&["pull"], 0);
    assert_eq!(merged_version(&rig), "1.1.0");
    assert_ne!(fs::metadata(&usr).unwrap().dev(), dev);
}

#[test]
fn without_mount_beneath_the_switch_falls_back_to_a_refresh_with_one_warning() {
    // A machine on 1.0.0 pulls 1.1.0 with upd under strace, which makes every move_mount fail with EINVAL
    // (a kernel before 6.5 refusing MOVE_MOUNT_BENEATH); then rolls back with open_tree failing with
    // ENOSYS (a kernel before 5.2). Each switch still lands, by a plain refresh, warning once.
    if !require_root() {
        return;
    }
    let rig = rig_offering_v2();
    for (args, inject, want) in [
        ("pull", "move_mount:error=EINVAL", "1.1.0"),
        ("rollback", "open_tree:error=ENOSYS", "1.0.0"),
    ] {
        let syscall = inject.split(':').next().unwrap();
        let out = Command::new("nsenter")
            .args(["-t", &rig.m.pid().to_string(), "-m", "--"])
            .args(["strace", "-f", "-qq", "-o", "/dev/null"])
            .arg(format!("-etrace={syscall}"))
            .arg(format!("-einject={inject}"))
            .arg(bins::upd())
            .arg("--root")
            .arg(rig.m.root())
            .arg(args)
            .env("UPD_LOG", "info")
            .output()
            .unwrap();
        let text = text_of(&out);
        assert!(out.status.success(), "{args}: {text}");
        assert_eq!(text.matches(FALLBACK).count(), 1, "{args}: {text}");
        assert!(
            text.contains(syscall),
            "{args}: the warning names the call: {text}"
        );
        assert_eq!(merged_version(&rig), want, "{args}");
        assert_eq!(rig.m.run_program("hello").trim(), format!("hello {want}"));
    }
}

/// How many sysext overlays are stacked at ROOT/usr in the machine's namespace.
fn stacked(rig: &Rig) -> usize {
    let info = fs::read_to_string(format!("/proc/{}/mountinfo", rig.m.pid())).unwrap();
    count_sysext_overlays(&info, &rig.m.root().join("usr"))
}

#[test]
fn a_swap_killed_between_move_and_detach_is_peeled_and_finished_without_a_gap() {
    // A machine on 1.0.0 pulls 1.1.0 and is killed right after the new overlay went beneath the old
    // one: two sysext overlays are stacked on ROOT/usr (the old one on top, still served). The next
    // `upd pull`, under a prober, takes the stack apart from the top and finishes the switch: one
    // overlay, the new set, no probe missing, and only the new images hold loop devices.
    if !require_root() {
        return;
    }
    let rig = rig_offering_v2();
    let out = rig.upd(&["pull"], &[("UPD_FAILPOINT", "switch-beneath")]);
    assert_eq!(out.status.signal(), Some(9), "{}", text_of(&out));
    assert_eq!(stacked(&rig), 2);
    assert_eq!(
        merged_version(&rig),
        "1.0.0",
        "the old overlay is still on top"
    );

    let prober = Prober::start(rig.m.pid(), &rig.m.root().join("usr/bin/hello"));
    let out = rig.upd_ok(&["pull"], 0);
    let counts = prober.stop();
    assert!(out.contains("taking off a sysext overlay"), "{out}");
    assert_eq!(counts.missing, 0, "{counts:?}");
    assert_eq!(stacked(&rig), 1);
    assert_eq!(merged_version(&rig), "1.1.0");
    assert_eq!(
        settle_loop_devices(&rig, 2),
        2,
        "{:?}",
        rig.m.loop_devices()
    );
}
