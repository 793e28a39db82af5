//! The kill harness: SIGKILL the real upd on entering its Nth state-changing syscall of an
//! action (strace -f, so its children count too), then cut the power, boot (the gptprio boot
//! loader, `upd boot`, the merge) and check the invariant: one whole generation matching the
//! booted OS is merged, every extension of it, and the action completes when run again.
//!
//! Also killed at random instants over the action's duration. Each action's machine is built once
//! and every kill starts from a copy of it (`harness`). Which points and how many random runs: see
//! `harness`; `scripts/killall-points` runs every point of every action, `scripts/killrandom`
//! random kills, and both print the figures.

use std::collections::BTreeMap;

use upd::host::swap::count_sysext_overlays;
use upd_channels::manifest::Target;
use upd_tests::channel::Channel;
use upd_tests::disk::{USR_A, USR_B};
use upd_tests::faultserver::FaultServer;
use upd_tests::images::{OsSpec, SysextSpec};
use upd_tests::sandbox::require_root;

use super::harness::{sweep, Action};
use super::rig::{ext, os, serve, set, set_a, set_b, OsRig, V1, V2};

/// Set A with hello 1.1.0: the extension update for the running 1.0.0.
pub(super) fn set_a2() -> BTreeMap<String, String> {
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

pub(super) fn ext_pull_machine() -> OsRig {
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

/// The merged set of the state's active generation (name → version).
fn active_set(rig: &OsRig) -> BTreeMap<String, String> {
    let st = rig.state();
    let ext = st["active"]["extensions"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    ext.iter()
        .map(|(n, e)| (n.clone(), e["version"].as_str().unwrap_or("?").to_string()))
        .collect()
}

/// How many sysext overlays are stacked on the machine's /usr now (one when merged, never more).
fn overlays_on_usr(rig: &OsRig) -> usize {
    let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", rig.m.pid())).unwrap();
    count_sysext_overlays(&info, &rig.m.root().join("usr"))
}

/// The machine merges the set its state calls active, one overlay deep, and no switch is open.
fn merged_is_active(rig: &OsRig) {
    let merged = rig.versions();
    assert_eq!(merged, active_set(rig), "links {:?}", rig.links());
    assert_eq!(
        overlays_on_usr(rig),
        1,
        "a stack of overlays is left on /usr"
    );
    let st = rig.state();
    assert!(st["journal"].is_null(), "{st}");
    rig.programs_run(&merged);
}

#[test]
fn kill_extension_pull_at_each_syscall() {
    // hello 1.1.0 for the running 1.0.0: download, check, journaled switch and live refresh.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "extension pull",
        prepare: ext_pull_machine,
        args: &["pull"],
        took_path: None,
        recover: |rig| {
            boot_consistent(rig, &|os| {
                assert_eq!(os, V1);
                vec![set_a(), set_a2()]
            });
            rig.upd_ok(&["pull"], 0);
            assert_eq!(rig.versions(), set_a2());
        },
    });
}

#[test]
fn kill_os_pull_at_each_syscall() {
    // Staging 2.0.0: slot disarmed, image streamed and read back, pending recorded, armed.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "OS pull",
        prepare: os_pull_machine,
        args: &["pull"],
        took_path: None,
        recover: |rig| {
            boot_consistent(rig, &set_of);
            if rig.running_os() == V1 {
                rig.upd_ok(&["pull"], 0);
                boot_consistent(rig, &set_of);
            }
            assert_eq!(rig.running_os(), V2);
            rig.upd_ok(&["mark-good"], 0);
            assert_eq!(rig.state()["active"]["os_version"], V2);
        },
    });
}

const MIB: u64 = 1 << 20;
/// The warning of a delta download that fell back to the whole image.
const FELL_BACK: &str = "delta download not possible";

/// hello `version` for `os` with 4 MiB of filler every version shares: a minor update of it
/// reuses most chunks of the older build in the store.
fn padded_hello(version: &str, os_version: &str) -> SysextSpec {
    let mut s = ext("hello", version, os_version);
    s.pad_bytes = 4 * MIB;
    s.filler_seed = Some(7);
    s
}

/// The OS `version` with 6 MiB of filler every version shares: a minor OS update reuses most
/// chunks of the booted slot.
fn padded_os(version: &str) -> OsSpec {
    let mut o = os(version);
    o.pad_bytes = 6 * MIB;
    o.filler_seed = Some(3);
    o
}

/// A channel publishing chunk indexes with release 1.0.0 (OS `v1`, `hello`, world 1.0.0), and a
/// machine installed from it as [`OsRig::new`] has it.
fn delta_machine(v1: OsSpec, hello: SysextSpec) -> OsRig {
    let (rt, server) = FaultServer::start_with_runtime();
    let mut ch = Channel::new("stable");
    ch.chunk_indexes = true;
    ch.add_os_release(V1, &v1);
    ch.add_extension(V1, &hello);
    ch.add_extension(V1, &ext("world", "1.0.0", V1));
    ch.publish();
    serve(&ch, &server);
    OsRig::on(rt, server, ch, &[])
}

/// hello 1.0.0 pulled (padded), hello 1.1.0 (the same filler) published with its index.
fn ext_delta_machine() -> OsRig {
    let mut rig = delta_machine(os(V1), padded_hello("1.0.0", V1));
    let b = rig.ch.add_extension(V1, &padded_hello("1.1.0", V1));
    assert!(b.image.chunk_index.is_some(), "published with an index");
    rig.publish();
    rig
}

/// 1.0.0 (padded OS) booted from USR-A; 2.0.0 (the same filler) published with indexes.
fn os_delta_machine() -> OsRig {
    let mut rig = delta_machine(padded_os(V1), ext("hello", "1.0.0", V1));
    rig.ch.add_os_release(V2, &padded_os(V2));
    rig.ch.add_extension(V2, &ext("hello", "2.0.0", V2));
    rig.ch.add_extension(V2, &ext("world", "2.0.0", V2));
    rig.publish();
    assert!(
        os_image(&rig, V2).chunk_index.is_some(),
        "published with an index"
    );
    rig
}

/// The signed target of release `version`'s OS image.
fn os_image(rig: &OsRig, version: &str) -> Target {
    let r = rig.ch.manifest.releases.iter();
    let mut r = r.filter(|r| r.version.to_string() == version);
    r.next().expect("release").os.image.clone()
}

/// The signed target of hello `version`'s image built for 1.0.0.
fn hello_image(rig: &OsRig, version: &str) -> Target {
    let r = rig
        .ch
        .manifest
        .releases
        .iter()
        .find(|r| r.version.to_string() == V1);
    let b = r.expect("release 1.0.0").extensions.iter();
    let mut b = b.filter(|b| b.name.as_str() == "hello" && b.version.to_string() == version);
    b.next().expect("hello build").image.clone()
}

/// The server moved under a quarter of `image`, all of it by Range, and upd did not fall back:
/// the delta path was taken. Zeroes the image's counters for the next run.
fn served_as_delta(rig: &OsRig, image: &Target, text: &str) {
    assert!(!text.contains(FELL_BACK), "{text}");
    let url = format!("/{}", image.path);
    let st = rig.server.stats(&url);
    assert!(
        st.body_bytes * 4 < image.size && !st.ranges.is_empty(),
        "{} of {} bytes served: {:?}",
        st.body_bytes,
        image.size,
        st.ranges
    );
    assert!(st.ranges.iter().all(Option::is_some), "{:?}", st.ranges);
    rig.server.reset_stats(&url);
}

/// The bytes `upd pull` says it copied from the store's older builds.
fn reused_from_store(text: &str) -> u64 {
    let at = text.find("reused ").map(|i| &text[i + "reused ".len()..]);
    let n = at
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("no reused bytes in: {text}"))
}

#[test]
fn kill_extension_delta_pull_at_each_syscall() {
    // hello 1.0.0 → 1.1.0 as a delta download: the index fetched, the chunks of 1.0.0 in the
    // store copied into `.partial`, the rest fetched by Range, the whole checked and promoted,
    // then the journaled switch and live refresh. After a kill the next pull resumes from the
    // verified chunks of `.partial` (or starts over) and the store copy is the signed image.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "extension delta pull",
        prepare: ext_delta_machine,
        args: &["pull"],
        took_path: Some(|rig, text| {
            let image = hello_image(rig, "1.1.0");
            served_as_delta(rig, &image, text);
            assert!(reused_from_store(text) * 2 > image.size, "{text}");
        }),
        recover: |rig| {
            boot_consistent(rig, &|os| {
                assert_eq!(os, V1);
                vec![set_a(), set_a2()]
            });
            generations_whole(rig);
            let text = rig.upd_ok(&["pull"], 0);
            assert!(!text.contains(FELL_BACK), "{text}");
            assert_eq!(rig.versions(), set_a2());
            generations_whole(rig);
        },
    });
}

#[test]
fn kill_os_delta_pull_at_each_syscall() {
    // Staging 2.0.0 as a delta download: the chunks of the booted USR-A copied into USR-B, the
    // rest fetched by Range into it, read back, pending recorded, armed. After a kill and a
    // power cut the next pull keeps the chunks USR-B already holds and redoes the rest; the
    // slot then holds the signed image byte for byte and boots.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "OS delta pull",
        prepare: os_delta_machine,
        args: &["pull"],
        took_path: Some(|rig, text| served_as_delta(rig, &os_image(rig, V2), text)),
        recover: |rig| {
            boot_consistent(rig, &set_of);
            if rig.running_os() == V1 {
                let text = rig.upd_ok(&["pull"], 0);
                assert!(!text.contains(FELL_BACK), "{text}");
                boot_consistent(rig, &set_of);
            }
            assert_eq!(rig.running_os(), V2);
            let image = os_image(rig, V2);
            let want = std::fs::read(rig.ch.file(&image)).unwrap();
            assert!(
                rig.disk.read_slot(USR_B, image.size) == want,
                "USR-B holds the signed image byte for byte"
            );
            rig.upd_ok(&["mark-good"], 0);
            assert_eq!(rig.state()["active"]["os_version"], V2);
        },
    });
}

#[test]
fn kill_boot_at_each_syscall() {
    // `upd boot` on the first boot of 2.0.0: rerun in the same boot, then a power cut (the
    // boot loader falls back: B's one try is spent and it was never marked good).
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "boot",
        prepare: booting_machine,
        args: &["boot"],
        took_path: None,
        recover: |rig| {
            rig.upd_ok(&["boot"], 0);
            rig.merge();
            assert_eq!(rig.versions(), set_b());
            boot_consistent(rig, &set_of);
            assert_eq!(rig.running_os(), V1);
            rig.upd_ok(&["mark-good"], 0);
        },
    });
}

#[test]
fn kill_mark_good_at_each_syscall() {
    // mark-good of 2.0.0: slot successful (two GPT copies), pending promoted, garbage collected.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "mark-good",
        prepare: booted_v2_machine,
        args: &["mark-good"],
        took_path: None,
        recover: |rig| {
            boot_consistent(rig, &set_of);
            rig.upd_ok(&["mark-good"], 0);
            rig.upd_ok(&["boot"], 0);
            let st = rig.state();
            assert!(st["pending"].is_null(), "{st}");
            assert_eq!(st["active"]["os_version"], rig.running_os());
            rig.disk.verify();
        },
    });
}

#[test]
fn kill_rollback_at_each_syscall() {
    // rollback from a good 2.0.0 to 1.0.0: recorded, then the slots' priorities swapped.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "rollback",
        prepare: good_v2_machine,
        args: &["rollback"],
        took_path: None,
        recover: |rig| {
            boot_consistent(rig, &set_of);
            if rig.running_os() == V2 {
                rig.upd_ok(&["rollback"], 0);
                assert_eq!(rig.reboot(), USR_A);
            }
            boot_consistent(rig, &set_of);
            assert_eq!(rig.running_os(), V1);
            rig.upd_ok(&["mark-good"], 0);
            rig.disk.verify();
        },
    });
}

/// hello 1.0.0 → 1.1.0 → 1.2.0 → 1.3.0 pulled one after the other with `RETENTION=0`: active
/// hello 1.3.0, previous 1.2.0, retired 1.1.0 and 1.0.0, whose images `gc` removes.
fn retired_machine() -> OsRig {
    let mut rig = OsRig::new(&["RETENTION=0"]);
    for v in ["1.1.0", "1.2.0", "1.3.0"] {
        rig.ch.add_extension(V1, &ext("hello", v, V1));
        rig.publish();
        rig.upd_ok(&["pull"], 0);
    }
    assert_eq!(rig.state()["retired"].as_array().map(Vec::len), Some(2));
    rig
}

/// The store's files, `hello/hello-1.3.0-….raw` and so on.
fn store_files(rig: &OsRig) -> Vec<String> {
    let store = rig.m.root().join("var/lib/upd/images");
    let mut files: Vec<String> = walk(&store)
        .into_iter()
        .map(|p| p.strip_prefix(&store).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Every image of the active, pending and previous generations is in the store, whole.
fn generations_whole(rig: &OsRig) {
    let st = rig.state();
    let store = rig.m.root().join("var/lib/upd/images");
    for g in ["active", "pending", "previous"] {
        for (name, e) in st[g]["extensions"].as_object().into_iter().flatten() {
            let file = store.join(name).join(e["file"].as_str().unwrap());
            let (_, sha) = upd_durable::hash_file(&file).unwrap_or_else(|e| panic!("{g}: {e}"));
            assert_eq!(
                hex::encode(sha),
                e["sha256"].as_str().unwrap(),
                "{g} {name}"
            );
        }
    }
}

#[test]
fn kill_gc_at_each_syscall() {
    // `upd gc` on a machine with two retired generations (RETENTION=0): their images removed.
    // After a kill and a power cut the active set merges, every image the active and previous
    // generations need is whole, gc completes when run again, and the rollback to the previous
    // generation still merges it.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "gc",
        prepare: retired_machine,
        args: &["gc"],
        took_path: None,
        recover: |rig| {
            let want = set(&[("hello", "1.3.0"), ("world", "1.0.0")]);
            boot_consistent(rig, &|_| vec![want.clone()]);
            generations_whole(rig);
            rig.upd_ok(&["gc"], 0);
            generations_whole(rig);
            let files = store_files(rig);
            assert_eq!(
                files.len(),
                3,
                "hello 1.3.0 and 1.2.0, world 1.0.0: {files:?}"
            );
            rig.upd_ok(&["rollback"], 0);
            assert_eq!(
                rig.versions(),
                set(&[("hello", "1.2.0"), ("world", "1.0.0")])
            );
        },
    });
}

/// A machine that pulled hello 1.1.0 for its running 1.0.0 (previous: hello 1.0.0): its
/// `upd rollback` is a live switch of the extension set and nothing else.
fn switched_machine() -> OsRig {
    let rig = ext_pull_machine();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.versions(), set_a2());
    rig
}

#[test]
fn kill_live_switch_at_each_syscall() {
    // `upd rollback` back to hello 1.0.0 on the same OS: journal, links, the new overlay merged
    // in a private namespace, cloned, moved beneath the live one, the old one detached, commit.
    // Without a reboot, the next upd command (gc) finishes or undoes the switch and peels a
    // stack; the merged set is then the active generation's, one overlay deep; after a power
    // cut too; and a rollback then completes.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "live switch",
        prepare: switched_machine,
        args: &["rollback"],
        took_path: None,
        recover: |rig| {
            rig.upd_ok(&["gc"], 0);
            merged_is_active(rig);
            assert!([set_a(), set_a2()].contains(&rig.versions()));
            boot_consistent(rig, &|_| vec![set_a(), set_a2()]);
            merged_is_active(rig);
            let before = rig.versions();
            rig.upd_ok(&["rollback"], 0);
            merged_is_active(rig);
            assert_ne!(rig.versions(), before);
        },
    });
}

#[test]
fn kill_live_switch_then_cut_the_power() {
    // The same switch killed, then the power cut at once: `upd boot` finishes or undoes it, the
    // merge shows one whole set (the active generation's), and a rollback then completes.
    if !require_root() {
        return;
    }
    sweep(&Action {
        name: "live switch, power cut",
        prepare: switched_machine,
        args: &["rollback"],
        took_path: None,
        recover: |rig| {
            boot_consistent(rig, &|_| vec![set_a(), set_a2()]);
            merged_is_active(rig);
            let before = rig.versions();
            rig.upd_ok(&["rollback"], 0);
            merged_is_active(rig);
            assert_ne!(rig.versions(), before);
        },
    });
}
