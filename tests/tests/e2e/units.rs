//! The systemd units in systemd/system pass `systemd-analyze verify` and keep their ordering promises.

use std::path::{Path, PathBuf};
use std::process::Command;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/system")
}

/// The `upd` binary built next to this test binary (target/<profile>/upd).
fn upd_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("upd")
}

// Situation: the shipped units, with ExecStart pointed at the freshly built binary, verified by
// the real systemd-analyze of this machine.
#[test]
fn units_pass_systemd_analyze_verify() {
    let bin = upd_bin();
    assert!(
        bin.exists(),
        "{} not built (scripts/test builds it first)",
        bin.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(units_dir()).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("/usr/bin/upd", bin.to_str().unwrap());
        let out = tmp.path().join(p.file_name().unwrap());
        std::fs::write(&out, text).unwrap();
        files.push(out);
    }
    assert!(
        files.len() >= 3,
        "expected upd.service, upd.timer, upd-boot.service"
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
}

// Situation: the boot unit must run before systemd-sysext merges, without default dependencies,
// and the timer must be randomised and persistent.
#[test]
fn ordering_and_timer_promises() {
    let boot = std::fs::read_to_string(units_dir().join("upd-boot.service")).unwrap();
    assert!(boot.contains("DefaultDependencies=no"));
    assert!(boot
        .lines()
        .any(|l| l.starts_with("Before=") && l.contains("systemd-sysext.service")));
    let timer = std::fs::read_to_string(units_dir().join("upd.timer")).unwrap();
    assert!(timer.contains("RandomizedDelaySec=") && timer.contains("Persistent=true"));
}
