//! Torn writes of upd's own files, replayed from the real binary: the file-system calls of a
//! command captured with strace (the state file and the journal in it, the store's promotion of
//! a download, the link switches, the drop-ins `upd ext` and `upd channel` write), then each
//! prefix of them applied as a power cut can leave the disk (`upd_tests::torn`: with unsynced
//! data kept, half kept or lost, and unsynced directory entries kept or lost).
//!
//! For every cut, every file a reader opens holds a whole value it held at some instant (the old
//! or a new one, never a torn one); once the command has finished, a cut loses none of it; and
//! on every distinct state a cut leaves, the machine boots (`upd boot`, the merge) into one whole
//! set and the command completes when run again. `UPD_TORN=all` boots every distinct state;
//! unset (CI), a sample of [`CI_STATES`] of them, always including the last.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use upd_tests::sandbox::require_root;
use upd_tests::torn::{self, apply_tree, Cut, Data, Entries, Replay, Tree};

use super::node::Node;
use super::rig::{set, set_a, OsRig};
use super::syscalls::{ext_pull_machine, set_a2};
use crate::pull::rig::text_of;

/// Distinct cut states booted when `UPD_TORN` is unset.
const CI_STATES: usize = 6;

/// The files whose readers open them whole: all but temp entries, downloads in flight (kept to
/// resume, re-hashed before use) and the lock file (its text only names the holder to a human).
fn watched(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    !name.starts_with(upd_durable::TMP_PREFIX)
        && !name.ends_with(".partial")
        && p != Path::new("var/lib/upd/lock")
}

fn show(v: Option<&[u8]>) -> String {
    match v {
        None => "absent".into(),
        Some(b) => {
            let t = String::from_utf8_lossy(b);
            format!(
                "{} bytes {:?}",
                b.len(),
                t.chars().take(120).collect::<String>()
            )
        }
    }
}

/// Capture `args` on the machine `prepare` builds, check every cut of its calls, and boot the
/// machine on the distinct states the cuts leave, running `check` there.
fn torn_sweep(name: &str, prepare: fn() -> OsRig, args: &[&str], check: fn(&mut OsRig)) {
    let t0 = std::time::Instant::now();
    let lap = |what: &str| eprintln!("{:>8.2?} torn {name}: {what}", t0.elapsed());
    let mut rig = prepare();
    let saved = rig.save();
    lap("prepared");
    let log = rig.marker("torn.strace");
    let (out, ops) = torn::capture(&rig.upd_cmd(args, &[]), &rig.m.root(), &log);
    assert_eq!(out.status.code(), Some(0), "{name}:\n{}", text_of(&out));
    let base = Node::saved_root(&saved);
    let replay = Replay::new(&base, ops);
    let calls = replay.ops().len();
    lap("captured");
    let cuts = replay.cuts();
    lap("cut");

    // 1. No cut leaves a watched file torn.
    let mut values: BTreeMap<PathBuf, BTreeSet<Option<Vec<u8>>>> = BTreeMap::new();
    for (cut, tree) in &cuts {
        for (p, content) in tree {
            if !watched(p) || content.as_deref() == Some(b"/") {
                continue;
            }
            let allowed = values
                .entry(p.clone())
                .or_insert_with(|| replay.values_of(p));
            assert!(
                allowed.contains(content),
                "{name}: {cut:?} leaves {} torn: {} (whole values: {:?})",
                p.display(),
                show(content.as_deref()),
                allowed
                    .iter()
                    .map(|v| show(v.as_deref()))
                    .collect::<Vec<_>>()
            );
        }
    }
    lap("checked the cuts");
    // 2. Once the command is done, a cut loses nothing of it.
    let last = |data, entries| {
        let c = Cut {
            calls,
            data,
            entries,
        };
        cuts.iter()
            .find(|(k, _)| *k == c)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    let done = last(Data::Written, Entries::Made);
    let durable = last(Data::Synced, Entries::Synced);
    for (p, content) in done.iter().filter(|(p, _)| watched(p)) {
        assert_eq!(
            show(durable.get(p).and_then(|v| v.as_deref())),
            show(content.as_deref()),
            "{name}: after it finished, a power cut loses {}",
            p.display()
        );
    }

    // 3. The machine boots and runs on the distinct states.
    let mut distinct: BTreeMap<&Tree, Cut> = BTreeMap::new();
    for (cut, tree) in &cuts {
        distinct.entry(tree).or_insert(*cut);
    }
    let all = std::env::var("UPD_TORN").as_deref() == Ok("all");
    let states: Vec<(&Tree, Cut)> = distinct.into_iter().collect();
    let step = if all {
        1
    } else {
        states.len().div_ceil(CI_STATES).max(1)
    };
    let mut picked: Vec<usize> = (0..states.len()).step_by(step).collect();
    if picked.last() != Some(&(states.len() - 1)) {
        picked.push(states.len() - 1);
    }
    let mut bad = Vec::new();
    for &i in &picked {
        let (tree, cut) = states[i];
        rig.restore_cut(&saved, |root| apply_tree(root, tree));
        if catch_unwind(AssertUnwindSafe(|| check(&mut rig))).is_err() {
            eprintln!("INCONSISTENT {name} after {cut:?}");
            bad.push(cut);
        }
    }
    eprintln!(
        "TORN {name}: {calls} calls, {} cuts, 0 torn, {} distinct states, {} booted, {} inconsistent",
        cuts.len(),
        states.len(),
        picked.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "{name}: inconsistent after {bad:?}");
}

/// After the cut: `upd boot` and the merge give one whole set; the pull then completes.
fn boots_then_pulls(
    rig: &mut OsRig,
    sets: &[BTreeMap<String, String>],
    then: &BTreeMap<String, String>,
) {
    rig.upd_ok(&["boot"], 0);
    rig.merge();
    let merged = rig.versions();
    assert!(
        sets.contains(&merged),
        "merged {merged:?}, links {:?}",
        rig.links()
    );
    rig.programs_run(&merged);
    rig.upd_ok(&["pull"], 0);
    assert_eq!(&rig.versions(), then);
}

#[test]
fn torn_writes_of_an_extension_pull() {
    // hello 1.1.0 for the running 1.0.0: the manifest and serial saved, the image downloaded to
    // `.partial`, fsync'd and renamed into the store, the journal saved, the links switched, the
    // journal marked, the switch committed. Every cut of those calls.
    if !require_root() {
        return;
    }
    torn_sweep("extension pull", ext_pull_machine, &["pull"], |rig| {
        boots_then_pulls(rig, &[set_a(), set_a2()], &set_a2());
    });
}

#[test]
fn torn_writes_of_the_extensions_dropin() {
    // `upd ext disable world` writes /etc/upd/upd.conf.d/50-extensions.conf (its directory new).
    if !require_root() {
        return;
    }
    torn_sweep(
        "ext disable",
        || OsRig::new(&[]),
        &["ext", "disable", "world"],
        |rig| {
            let hello = set(&[("hello", "1.0.0")]);
            rig.upd_ok(&["boot"], 0);
            rig.merge();
            assert_eq!(rig.versions(), set_a());
            rig.upd_ok(&["pull"], 0);
            assert!(
                [set_a(), hello].contains(&rig.versions()),
                "{:?}",
                rig.versions()
            );
        },
    );
}

#[test]
fn torn_writes_of_the_channel_dropin() {
    // `upd channel stable` writes /etc/upd/upd.conf.d/50-channel.conf (its directory new).
    if !require_root() {
        return;
    }
    torn_sweep(
        "channel",
        || OsRig::new(&[]),
        &["channel", "stable"],
        |rig| {
            boots_then_pulls(rig, &[set_a()], &set_a());
        },
    );
}
