//! The rest of TUF's attack list on a real machine: an expired root refused and never cached, a
//! wrong clock either way, a fast-forward attack recovered by a key rotation, a root chain
//! longer than the cap, manifests with duplicate keys or numbers out of range. Every refusal
//! leaves the machine's root byte-identical (`upd_tests::tree`).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use chrono::{Duration, Utc};
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::sandbox::require_root;
use upd_tests::tree::{self, Entry};

use super::rig::*;

/// libfaketime's preload library (Debian package faketime, installed by scripts/prereqs).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The whole machine root, byte by byte, but for the process lock file: every command that
/// takes the lock writes its holder there and empties it when done (same inode, same empty
/// content, a new mtime), by design; it is not state.
fn picture(rig: &Rig) -> BTreeMap<PathBuf, Entry> {
    let mut t = tree::snapshot(&rig.m.root());
    let lock = t.remove(&PathBuf::from("var/lib/upd/lock"));
    assert!(
        lock.is_none_or(|e| e.content == EMPTY_SHA256),
        "lock file not emptied"
    );
    t
}

/// SHA-256 of no bytes.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Run `upd pull` with `env`, expect exit `code` with `needle` in its output and the machine
/// byte-identical to `before`; returns the output.
fn refused_exactly(
    rig: &Rig,
    before: &BTreeMap<PathBuf, Entry>,
    env: &[(&str, &str)],
    code: i32,
    needle: &str,
) -> String {
    let out = rig.upd(&["pull"], env);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(code), "{text}");
    assert!(text.contains(needle), "expected '{needle}' in:\n{text}");
    let changed = tree::diff(before, &picture(rig));
    assert!(
        changed.is_empty(),
        "the refusal changed {changed:#?}\n{text}"
    );
    text
}

/// The environment that runs upd with its clock moved by `offset` (libfaketime, e.g. `-30d`).
fn clock(offset: &str) -> [(&'static str, String); 3] {
    assert!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "{FAKETIME_LIB} missing: scripts/prereqs installs the faketime package"
    );
    [
        ("LD_PRELOAD", FAKETIME_LIB.to_string()),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_RESET", "1".to_string()),
    ]
}

fn env_of<'a>(e: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    e.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn a_refused_expired_root_is_never_cached_and_a_fresh_root_n_is_then_accepted() {
    // Issue 16 defect 5: the publisher rotates to root 2 that has already expired (and signs
    // hello 1.1.0 with root 2's channel key); refused, nothing written. Then it replaces root 2
    // with a fresh one: the machine takes it (a cached stale copy would have pinned it).
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = picture(&rig);
    rig.ch.rotate_root_expiring(Utc::now() - Duration::days(1));
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    refused_exactly(&rig, &before, &[], 4, "root version 2 expired");
    refused_exactly(&rig, &before, &[], 4, "root version 2 expired");
    assert!(!rig.m.root().join("var/lib/upd/roots/2.root.json").exists());
    rig.ch.reissue_root(Utc::now() + Duration::days(30));
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
    let cached = fs::read(rig.m.root().join("var/lib/upd/roots/2.root.json")).unwrap();
    assert_eq!(
        cached,
        fs::read(rig.ch.repo().join("roots/2.root.json")).unwrap()
    );
}

#[test]
fn a_manifest_issued_in_the_machines_future_is_accepted_with_a_warning() {
    // Issue 16 defect 7: the machine's clock is 30 days behind (libfaketime); the manifest was
    // issued now, in the machine's future. Still valid (signature, serial, expiry), so applied,
    // but upd says the clock is probably behind.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let env = clock("-30d");
    let out = rig.upd(&["pull"], &env_of(&env));
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("issued in this machine's future"), "{text}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
    // With the clock right, no such warning.
    let text = rig.upd_ok(&["pull"], 0);
    assert!(!text.contains("issued in this machine's future"), "{text}");
}

#[test]
fn a_clock_far_ahead_is_a_clear_error_and_never_bypasses_expiry() {
    // The machine's clock runs ahead: 30 days (past the manifest's 7-day expiry), then 400 days
    // (past the root's 365 days). Each is refused as expired, saying the clock may be wrong;
    // far behind (10 years), the valid manifest is taken with the warning. Nothing changes on
    // a refusal.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let before = picture(&rig);
    let env = clock("+30d");
    let text = refused_exactly(&rig, &before, &env_of(&env), 4, "expired at");
    assert!(text.contains("frozen channel"), "{text}");
    assert!(text.contains("clock is wrong"), "{text}");
    let env = clock("+400d");
    let text = refused_exactly(&rig, &before, &env_of(&env), 4, "root version 1 expired");
    assert!(text.contains("clock is wrong"), "{text}");
    let env = clock("-3650d");
    let text = text_of(&rig.upd(&["pull"], &env_of(&env)));
    assert!(text.contains("issued in this machine's future"), "{text}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
}

#[test]
fn a_root_chain_longer_than_the_cap_is_refused_at_the_cap() {
    // The server offers 65 root rotations at once (the cap is 64): refused, nothing cached,
    // the machine byte-identical.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = picture(&rig);
    for _ in 0..65 {
        rig.ch.rotate_root();
    }
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let text = refused_exactly(&rig, &before, &[], 4, "more than 64 root rotations");
    assert!(text.contains("roots/66.root.json"), "{text}");
}

#[test]
fn a_fast_forward_attack_is_recovered_when_the_root_rotates_the_channel_key() {
    // A stolen channel key signs a manifest with serial u64::MAX: accepted (validly signed),
    // and the publisher's next manifest (serial 10) is then refused as a rollback. The publisher
    // rotates the root with a new channel key: the machine follows the new key's serials again,
    // and the old key's manifests are refused by their signature.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    rig.ch.manifest.serial = u64::MAX - 1;
    let attack = rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(
        rig.state_json()["highest_serial"]["stable"],
        serde_json::json!(u64::MAX)
    );
    rig.ch.manifest.serial = 9;
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let before = picture(&rig);
    refused_exactly(&rig, &before, &[], 4, "refusing a rollback");
    rig.ch.rotate_root();
    rig.publish(); // serial 11, new channel key
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
    assert_eq!(rig.state_json()["highest_serial"]["stable"], 11);
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.2.0"));
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.2.0");
    // The attacker's manifest again: its key is not trusted any more.
    rig.ch.write_manifest_bytes(&attack);
    rig.sync();
    let before = picture(&rig);
    refused_exactly(&rig, &before, &[], 4, "refused the manifest");
}

#[test]
fn manifests_with_duplicate_keys_or_numbers_out_of_range_are_refused() {
    // Validly signed payloads that are not one unambiguous manifest: a key given twice (a
    // parser that keeps the last would see another serial or image), numbers that do not fit.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.ch.manifest.serial += 1;
    let good = String::from_utf8(rig.ch.manifest.to_bytes()).unwrap();
    let serial = format!("\"serial\": {}", rig.ch.manifest.serial);
    assert!(good.contains(&serial), "{good}");
    let size = regex_free_field(&good, "\"size\": ");
    let cases = [
        good.replacen(&serial, &format!("{serial},\n  \"serial\": 999999"), 1),
        good.replacen("\"schema\": 1", "\"schema\": 1,\n  \"schema\": 1", 1),
        good.replacen(&serial, "\"serial\": 18446744073709551616", 1),
        good.replacen(&serial, "\"serial\": -1", 1),
        good.replacen(&serial, "\"serial\": 1e3", 1),
        good.replacen(&size, "\"size\": 99999999999999999999999", 1),
        good.replacen(&size, "\"size\": 0", 1),
        good.replacen("\"schema\": 1", "\"schema\": 4294967296", 1),
    ];
    let before = picture(&rig);
    for bad in cases {
        assert_ne!(bad, good);
        let envelope = rig.ch.sign_payload(bad.as_bytes());
        rig.ch.write_manifest_bytes(&envelope);
        rig.sync();
        refused_exactly(&rig, &before, &[], 4, "refused the manifest");
    }
    // The envelope itself with a key given twice (a second payload the signature does not cover).
    let envelope = String::from_utf8(rig.ch.sign_payload(good.as_bytes())).unwrap();
    let other = rig.ch.sign_payload(b"{}");
    let other: serde_json::Value = serde_json::from_slice(&other).unwrap();
    let twice = envelope.replacen('{', &format!("{{\"payload\": {},", other["payload"]), 1);
    rig.ch.write_manifest_bytes(twice.as_bytes());
    rig.sync();
    let text = refused_exactly(&rig, &before, &[], 4, "refused the manifest");
    assert!(text.contains("duplicate"), "{text}");
}

/// The first `"size": N` field of `json`, as written.
fn regex_free_field(json: &str, key: &str) -> String {
    let at = json.find(key).expect("a size field");
    let rest = &json[at + key.len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap();
    format!("{key}{}", &rest[..end])
}

/// Serve every file of the channel on `mirror`, the image at `bad` with `fault`.
fn mirror_copy(rig: &Rig, mirror: &FaultServer, bad: &str, fault: Fault) {
    for (url, file) in rig.ch.files() {
        let f = if url == bad { fault } else { Fault::Normal };
        mirror.put_file(&url, file, f).unwrap();
    }
}

#[test]
fn a_bad_mirror_is_passed_over_for_the_next_and_never_blocks_a_good_one() {
    // SERVER lists a bad mirror first, then the good server. The bad one 404s everything, then
    // serves a corrupt image, then stalls on it, then serves a replayed older manifest: each
    // time the pull takes the next mirror and succeeds. With every mirror bad, the pull fails
    // (exit 7) and the machine is byte-identical.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let (_rt, bad) = FaultServer::start_with_runtime();
    let servers = format!("SERVER=http://{} http://{}", bad.addr(), rig.server.addr());
    rig.install(&[&servers, "RETRIES=0"]);
    let v1 = fs::read(rig.ch.repo().join(rig.ch.manifest_rel())).unwrap();

    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let text = rig.upd_ok(&["pull"], 0);
    assert!(text.contains("passed over a mirror"), "{text}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");

    let steps = [
        ("1.2.0", Fault::CorruptByte(100)),
        ("1.3.0", Fault::StallAfter { at: 0, times: None }),
    ];
    for (v, fault) in steps {
        rig.ch.add_extension(OS_VERSION, &ext("hello", v));
        rig.publish();
        let (url, _) = rig.image_url("hello", v);
        mirror_copy(&rig, &bad, &url, fault);
        let text = rig.upd_ok(&["pull"], 0);
        assert!(text.contains("passed over a mirror"), "{text}");
        assert!(
            bad.stats(&url).requests > 0,
            "the bad mirror was asked first"
        );
        assert_eq!(rig.m.run_program("hello").trim(), format!("hello {v}"));
    }

    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.4.0"));
    rig.publish();
    mirror_copy(&rig, &bad, "", Fault::Normal);
    bad.put_bytes(&format!("/{}", rig.ch.manifest_rel()), v1, Fault::Normal);
    let text = rig.upd_ok(&["pull"], 0);
    assert!(text.contains("refusing a rollback"), "{text}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.4.0");

    // Every mirror bad: the pull fails, the links, the active generation and the merged set
    // stay as they were and no 1.5.0 file is left (the channel check itself was good, so its
    // serial and manifest are remembered).
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.5.0"));
    rig.publish();
    let (url, _) = rig.image_url("hello", "1.5.0");
    mirror_copy(&rig, &bad, &url, Fault::CorruptByte(100));
    rig.server.set_fault(&url, Fault::CorruptByte(200));
    let before = rig.snapshot();
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(7), "{text}");
    let verdict = text.lines().last().unwrap_or_default();
    assert!(verdict.contains("SHA-256 mismatch"), "{text}");
    assert!(
        verdict.contains(&bad.addr().to_string()),
        "the first mirror's error: {text}"
    );
    assert_eq!(rig.snapshot(), before, "{text}");
    let store = rig.m.root().join("var/lib/upd/images/hello");
    let names: Vec<String> = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("1.5.0")), "{names:?}");
}
