//! The kill harness: SIGKILL the real upd on entering its Nth state-changing syscall of an
//! action (strace -f, so its children count too), then cut the power, boot (the gptprio boot
//! loader, `upd boot`, the merge) and check the invariant: one whole generation matching the
//! booted OS is merged, every extension of it, and the action completes when run again.
//!
//! Which points: `UPD_KILL_POINTS=all` every N in 1..=count; `UPD_KILL_POINTS=stride=K` every
//! Kth (and the last); unset (CI), the one point halfway through the count.
//! `scripts/killall-points` runs every point of every action and prints the figures.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use upd_tests::disk::{USR_A, USR_B};
use upd_tests::sandbox::require_root;

use super::rig::{ext, set, set_a, set_b, OsRig, V1, V2};
use crate::pull::rig::text_of;

/// The state-changing syscalls: file and block writes, syncs, renames, links, unlinks, mounts.
const CALLS: &str =
    "write,pwrite64,writev,fsync,fdatasync,rename,renameat2,symlinkat,unlink,unlinkat,mount,umount2";

/// The kill points to try for an action of `count` calls.
fn points(count: usize) -> Vec<usize> {
    let mut p: Vec<usize> = match std::env::var("UPD_KILL_POINTS").as_deref() {
        Ok("all") => (1..=count).collect(),
        Ok(s) if s.starts_with("stride=") => {
            let k: usize = s["stride=".len()..]
                .parse()
                .expect("UPD_KILL_POINTS=stride=K");
            (1..=count).step_by(k.max(1)).chain([count]).collect()
        }
        _ => vec![(count / 2).max(1)],
    };
    p.dedup();
    p
}

/// Set A with hello 1.1.0: the extension update for the running 1.0.0.
fn set_a2() -> BTreeMap<String, String> {
    set(&[("hello", "1.1.0"), ("world", "1.0.0")])
}

/// Power cut, boot, and the merged set is one of `allowed(os)` for the OS that booted.
fn boot_consistent(rig: &mut OsRig, allowed: &dyn Fn(&str) -> Vec<BTreeMap<String, String>>) {
    rig.reboot();
    let os = rig.running_os();
    let merged = rig.versions();
    assert!(
        allowed(&os).contains(&merged),
        "OS {os} merged {merged:?}, links {:?}",
        rig.links()
    );
    rig.programs_run(&merged);
}

fn set_of(os: &str) -> Vec<BTreeMap<String, String>> {
    match os {
        V1 => vec![set_a()],
        V2 => vec![set_b()],
        other => panic!("unexpected OS {other}"),
    }
}

/// Kill `args` at each of its points on a machine `prepare` builds afresh, then `recover`;
/// print and check the figures.
fn sweep(action: &str, prepare: fn() -> OsRig, args: &[&str], recover: fn(&mut OsRig)) {
    let rig = prepare();
    let (count, out) = rig.upd_count(args, CALLS);
    assert_eq!(out.status.code(), Some(0), "{action}:\n{}", text_of(&out));
    drop(rig);
    let tried = points(count);
    let mut bad = Vec::new();
    for &n in &tried {
        let mut rig = prepare();
        let out = rig.upd_killed_at(args, CALLS, n);
        let ok = catch_unwind(AssertUnwindSafe(|| recover(&mut rig)));
        if ok.is_err() {
            eprintln!(
                "INCONSISTENT {action} killed at call {n}:\n{}",
                text_of(&out)
            );
            bad.push(n);
        }
    }
    eprintln!(
        "KILLS {action}: {count} calls, {} points tried, {} inconsistent {bad:?}",
        tried.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "{action}: inconsistent after kills at {bad:?}"
    );
}

fn ext_pull_machine() -> OsRig {
    let mut rig = OsRig::new(&[]);
    rig.ch.add_extension(V1, &ext("hello", "1.1.0", V1));
    rig.publish();
    rig
}

fn os_pull_machine() -> OsRig {
    let mut rig = OsRig::new(&[]);
    rig.add_v2();
    rig
}

fn booting_machine() -> OsRig {
    let mut rig = os_pull_machine();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.boot_disk(), USR_B);
    rig
}

fn booted_v2_machine() -> OsRig {
    let mut rig = os_pull_machine();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.reboot(), USR_B);
    rig
}

fn good_v2_machine() -> OsRig {
    let rig = booted_v2_machine();
    rig.upd_ok(&["mark-good"], 0);
    rig
}

#[test]
fn kill_extension_pull_at_each_syscall() {
    // hello 1.1.0 for the running 1.0.0: download, check, journaled switch and live refresh.
    if !require_root() {
        return;
    }
    sweep("extension pull", ext_pull_machine, &["pull"], |rig| {
        boot_consistent(rig, &|os| {
            assert_eq!(os, V1);
            vec![set_a(), set_a2()]
        });
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.versions(), set_a2());
    });
}

#[test]
fn kill_os_pull_at_each_syscall() {
    // Staging 2.0.0: slot disarmed, image streamed and read back, pending recorded, armed.
    if !require_root() {
        return;
    }
    sweep("OS pull", os_pull_machine, &["pull"], |rig| {
        boot_consistent(rig, &set_of);
        if rig.running_os() == V1 {
            rig.upd_ok(&["pull"], 0);
            boot_consistent(rig, &set_of);
        }
        assert_eq!(rig.running_os(), V2);
        rig.upd_ok(&["mark-good"], 0);
        assert_eq!(rig.state()["active"]["os_version"], V2);
    });
}

#[test]
fn kill_boot_at_each_syscall() {
    // `upd boot` on the first boot of 2.0.0: rerun in the same boot, then a power cut (the
    // boot loader falls back: B's one try is spent and it was never marked good).
    if !require_root() {
        return;
    }
    sweep("boot", booting_machine, &["boot"], |rig| {
        rig.upd_ok(&["boot"], 0);
        rig.merge();
        assert_eq!(rig.versions(), set_b());
        boot_consistent(rig, &set_of);
        assert_eq!(rig.running_os(), V1);
        rig.upd_ok(&["mark-good"], 0);
    });
}

#[test]
fn kill_mark_good_at_each_syscall() {
    // mark-good of 2.0.0: slot successful (two GPT copies), pending promoted, garbage collected.
    if !require_root() {
        return;
    }
    sweep("mark-good", booted_v2_machine, &["mark-good"], |rig| {
        boot_consistent(rig, &set_of);
        rig.upd_ok(&["mark-good"], 0);
        rig.upd_ok(&["boot"], 0);
        let st = rig.state();
        assert!(st["pending"].is_null(), "{st}");
        assert_eq!(st["active"]["os_version"], rig.running_os());
        rig.disk.verify();
    });
}

#[test]
fn kill_rollback_at_each_syscall() {
    // rollback from a good 2.0.0 to 1.0.0: recorded, then the slots' priorities swapped.
    if !require_root() {
        return;
    }
    sweep("rollback", good_v2_machine, &["rollback"], |rig| {
        boot_consistent(rig, &set_of);
        if rig.running_os() == V2 {
            rig.upd_ok(&["rollback"], 0);
            assert_eq!(rig.reboot(), USR_A);
        }
        boot_consistent(rig, &set_of);
        assert_eq!(rig.running_os(), V1);
        rig.upd_ok(&["mark-good"], 0);
        rig.disk.verify();
    });
}
