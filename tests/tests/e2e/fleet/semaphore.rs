//! Twenty machines take a new OS through airlock's reboot semaphore in a real etcd, as their timers would.

use std::collections::BTreeSet;
use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use upd_tests::disk::USR_B;
use upd_tests::etcd::Etcd;
use upd_tests::sandbox::require_root;

use super::rig::Fleet;
use crate::os::node::Node;
use crate::os::rig::{set_b, V2};

const MACHINES: usize = 20;
const SLOTS: usize = 2;
const KEY: &str = "com.coreos.airlock/groups/default/v1/semaphore";

/// Build `n` machines with `extra` config, a few at a time (each pulls set A over HTTP).
pub(crate) fn nodes(fleet: &Fleet, n: usize, extra: &[String]) -> Vec<Node> {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let next = AtomicUsize::new(0);
    let built = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let node = fleet.node(&extra);
                    built.lock().unwrap().push(node);
                }
            });
        }
    });
    built.into_inner().unwrap()
}

/// What one machine's timer did: runs of `upd update` until its reboot request came through.
struct Run {
    updates: usize,
    refusals: usize,
}

/// Loop as the timer would: `upd update --unattended`; when the reboot command ran, reboot the
/// sandbox (gptprio boot, `upd boot`, merge) and `upd mark-good`, which gives the slot back.
fn drive(node: &mut Node, deadline: Instant) -> Run {
    let marker = node.marker("reboot-requested");
    let mut run = Run {
        updates: 0,
        refusals: 0,
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "machine {} never got a reboot slot",
            node.machine_id()
        );
        let text = node.upd_ok(&["update", "--unattended"], 0);
        run.updates += 1;
        if marker.exists() {
            fs::remove_file(&marker).unwrap();
            assert_eq!(node.reboot(), USR_B);
            node.upd_ok(&["mark-good"], 0);
            return run;
        }
        assert!(
            text.contains("etcd-lock refused the reboot lock"),
            "no reboot and no refusal:\n{text}"
        );
        run.refusals += 1;
        assert!(node.reboot_required(), "staged and waiting: signalled");
        let status = node.upd_ok(&["status"], 0);
        assert!(
            status.contains("reboot strategy etcd-lock: waiting: etcd-lock refused"),
            "{status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every revision of the semaphore key: (revision, holders), checking the layout on the way.
fn history(fleet: &Fleet, etcd: &Etcd) -> Vec<(i64, Vec<String>)> {
    let last = fleet.rt.block_on(etcd.current_revision()).unwrap();
    let mut out: Vec<(i64, Vec<String>)> = Vec::new();
    for rev in 1..=last {
        let Some((raw, modrev)) = fleet.rt.block_on(etcd.value_at(KEY, Some(rev))).unwrap() else {
            continue;
        };
        if out.last().is_some_and(|(r, _)| *r == modrev) {
            continue; // the key did not change at this revision
        }
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            v["total_slots"], SLOTS,
            "airlock layout at revision {rev}: {v}"
        );
        let holders = v["holders"].as_array().expect("holders array");
        let holders = holders.iter().map(|h| h.as_str().unwrap().to_string());
        out.push((modrev, holders.collect()));
    }
    out
}

#[test]
fn twenty_machines_reboot_into_v2_never_more_than_two_at_once_through_etcd() {
    // Issue test 1: 20 machines on v1 with set A, strategy etcd-lock with 2 slots in a real etcd,
    // each with a reboot command that only leaves a marker; v2 is published and every machine's
    // timer loop races for the semaphore.
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let mut fleet = Fleet::new();
    let etcd = fleet.rt.block_on(Etcd::start()).expect("start etcd");
    let setup = Instant::now();
    let mut nodes = nodes(&fleet, MACHINES, &[]);
    for n in &nodes {
        let conf = n.m.root().join("etc/upd/upd.conf.d");
        fs::create_dir_all(&conf).unwrap();
        let lines = format!(
            "REBOOT_STRATEGY=etcd-lock\nETCD_ENDPOINTS={}\nETCD_LOCK_SLOTS={SLOTS}\nGROUP=default\nREBOOT_COMMAND=touch {}\n",
            etcd.url(),
            n.marker("reboot-requested").display()
        );
        fs::write(conf.join("50-fleet.conf"), lines).unwrap();
    }
    let setup = setup.elapsed();
    fleet.add_v2();
    fleet.publish();
    let drive_start = Instant::now();
    let deadline = drive_start + Duration::from_mins(4);
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter_mut()
            .map(|n| s.spawn(move || drive(n, deadline)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let driven = drive_start.elapsed();

    for n in &nodes {
        assert_eq!(n.running_os(), V2);
        assert_eq!(n.versions(), set_b());
        assert_eq!(n.state()["active"]["os_version"], V2);
        assert!(!n.reboot_required());
    }
    let hist = history(&fleet, &etcd);
    let max = hist.iter().map(|(_, h)| h.len()).max().unwrap_or(0);
    assert!(max <= SLOTS, "more than {SLOTS} holders: {hist:?}");
    assert_eq!(max, SLOTS, "with 20 machines racing, both slots were used");
    let seen: BTreeSet<&str> = hist
        .iter()
        .flat_map(|(_, h)| h.iter().map(String::as_str))
        .collect();
    let ids: BTreeSet<String> = nodes.iter().map(Node::machine_id).collect();
    assert_eq!(
        seen,
        ids.iter().map(String::as_str).collect(),
        "every machine held a slot"
    );
    assert!(
        hist.last().unwrap().1.is_empty(),
        "no holder at the end: {hist:?}"
    );
    let refusals: usize = runs.iter().map(|r| r.refusals).sum();
    assert!(
        refusals > 0,
        "more machines wanted to reboot than there were slots"
    );
    eprintln!(
        "fleet: {MACHINES} machines, {SLOTS} slots: setup {setup:?}, rollout {driven:?}, total {:?}; \
         {} semaphore revisions, max holders {max}, {} updates, {refusals} refusals",
        started.elapsed(),
        hist.len(),
        runs.iter().map(|r| r.updates).sum::<usize>()
    );
}
