//! docs/json.md lists exactly the fields upd's `--json` documents have: each document emitted by
//! the real binary through an OS update cycle (check, pull, status with a pending OS, boot,
//! mark-good, rollback, status with a held release, config, list, a failure), its keys walked
//! recursively, compared both ways with the field tables of docs/json.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use upd_tests::disk::{USR_A, USR_B};
use upd_tests::sandbox::require_root;

use super::rig::OsRig;

/// `name` → the field paths docs/json.md lists for it: under a `## name` heading, the first
/// cell of each table row (`` `a.b[].c` ``); `x.*` marks an object keyed by names.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let md = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json.md");
    let md = std::fs::read_to_string(&md).unwrap();
    let mut docs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in md.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            current = Some(h.trim().trim_matches('`').to_string());
            docs.entry(current.clone().unwrap()).or_default();
        } else if let (Some(doc), Some(row)) = (&current, line.strip_prefix("| `")) {
            let field = row.split('`').next().unwrap();
            docs.get_mut(doc).unwrap().insert(field.to_string());
        }
    }
    docs
}

/// Every key path of `v` (`a`, `a.b`, `a[].c`), objects at a documented `x.*` path folded to `*`.
fn walk(v: &serde_json::Value, path: &str, maps: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(o) => {
            let is_map = maps.contains(&format!("{path}.*"));
            for (k, child) in o {
                let k = if is_map { "*" } else { k.as_str() };
                let p = if path.is_empty() {
                    k.to_string()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(p.clone());
                walk(child, &p, maps, out);
            }
        }
        serde_json::Value::Array(a) => {
            for child in a {
                walk(child, &format!("{path}[]"), maps, out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_json_field_is_documented_and_every_documented_field_is_emitted() {
    if !require_root() {
        return;
    }
    let docs = documented();
    let mut emitted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rig = OsRig::new(&[]);
    let mut take = |rig: &OsRig, name: &str, args: &[&str], code: i32| {
        let out = rig.upd(args, &[]);
        assert_eq!(out.status.code(), Some(code), "upd {args:?}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("upd {args:?}: not JSON ({e}): {out:?}"));
        assert!(v["schema"].is_u64(), "upd {args:?}: no schema: {v}");
        let maps = docs.get(name).cloned().unwrap_or_default();
        walk(&v, "", &maps, emitted.entry(name.to_string()).or_default());
    };
    take(&rig, "status", &["status", "--json"], 0);
    rig.add_v2();
    take(&rig, "check", &["check", "--json"], 100);
    take(&rig, "list", &["list", "--json"], 0);
    take(&rig, "config", &["config", "--json"], 0);
    take(&rig, "pull", &["pull", "--json"], 0);
    take(&rig, "status", &["status", "--json"], 0);
    assert_eq!(rig.boot_disk(), USR_B);
    take(&rig, "boot", &["boot", "--json"], 0);
    rig.merge();
    take(&rig, "mark-good", &["mark-good", "--json"], 0);
    take(&rig, "rollback", &["rollback", "--json"], 0);
    assert_eq!(rig.reboot(), USR_A);
    rig.upd_ok(&["mark-good"], 0);
    take(&rig, "status", &["status", "--json"], 0);
    take(&rig, "check", &["check", "--json"], 0);
    take(&rig, "pull", &["update", "--json"], 0);
    // A failure: nothing answers on the server's address.
    take(
        &rig,
        "error",
        &["--set", "SERVER=http://127.0.0.1:9", "check", "--json"],
        7,
    );
    let mut wrong = Vec::new();
    for (name, fields) in &emitted {
        let doc = docs.get(name).cloned().unwrap_or_default();
        for f in fields.difference(&doc) {
            wrong.push(format!("{name}: `{f}` emitted, not in docs/json.md"));
        }
        for f in doc.difference(fields) {
            wrong.push(format!("{name}: `{f}` in docs/json.md, never emitted"));
        }
    }
    for name in docs.keys().filter(|n| !emitted.contains_key(*n)) {
        wrong.push(format!("{name}: documented, not emitted by this test"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
