//! `systemd-analyze verify` and `systemd-analyze security` of upd's units inside each container,
//! by that container's own systemd; the exposure figures are the ones systemd/README.md states.

use upd_tests::rootfs::Suite;

use super::rig::{on_both, repo_dir, text_of, Rig};

/// upd's units as installed in the container.
const UNITS: [&str; 4] = [
    "upd-boot.service",
    "upd-mark-good.service",
    "upd.service",
    "upd.timer",
];

/// The services `systemd-analyze security` rates (systemd's own merger for comparison).
const SERVICES: [&str; 4] = [
    "upd.service",
    "upd-mark-good.service",
    "upd-boot.service",
    "systemd-sysext.service",
];

/// "5.1 MEDIUM" (without the emoji) out of `systemd-analyze security UNIT`'s closing line.
fn exposure(text: &str, unit: &str) -> String {
    let prefix = format!("Overall exposure level for {unit}: ");
    text.lines()
        .find_map(|l| {
            l.trim()
                .trim_start_matches('→')
                .trim()
                .strip_prefix(&prefix)
        })
        .unwrap_or_else(|| panic!("no exposure line for {unit} in:\n{text}"))
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The exposure systemd/README.md states for `unit` under systemd `version`: the table row of
/// the unit, in the column headed "systemd VERSION".
fn documented(unit: &str, version: u32) -> Option<String> {
    let readme = std::fs::read_to_string(repo_dir().join("systemd/README.md")).unwrap();
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = readme.lines();
    let header = lines.find(|l| l.starts_with("| unit |") && l.contains("systemd 252"))?;
    let col = cells(header)
        .iter()
        .position(|c| c.contains(&format!("systemd {version}")))?;
    let row = lines
        .take_while(|l| l.starts_with('|'))
        .find(|l| l.starts_with(&format!("| `{unit}` |")))?;
    cells(row).get(col).cloned()
}

// Situation: a booted container with upd's units installed and enabled.
fn units_verify_and_rate(suite: Suite) {
    let Some(rig) = Rig::boot(suite, "analyze") else {
        return;
    };
    let paths: Vec<String> = UNITS
        .iter()
        .map(|u| format!("/etc/systemd/system/{u}"))
        .collect();
    let mut cmd = vec!["systemd-analyze", "verify"];
    cmd.extend(paths.iter().map(String::as_str));
    let out = rig.c.exec(&cmd);
    let text = text_of(&out);
    assert!(
        out.status.success(),
        "systemd {} verify failed:\n{text}",
        suite.systemd
    );
    assert!(
        text.trim().is_empty(),
        "systemd {} verify warned:\n{text}",
        suite.systemd
    );

    let mut figures = Vec::new();
    for unit in SERVICES {
        let out = rig
            .c
            .exec(&["systemd-analyze", "security", "--no-pager", unit]);
        let text = text_of(&out);
        let level = exposure(&text, unit);
        eprintln!("systemd {} security {unit}: {level}", suite.systemd);
        figures.push((unit, level));
    }
    for (unit, level) in &figures {
        assert_eq!(
            documented(unit, suite.systemd).as_deref(),
            Some(level.as_str()),
            "systemd/README.md's exposure of {unit} under systemd {}; measured: {figures:?}",
            suite.systemd
        );
    }
    rig.finish();
}
on_both!(units_verify_and_rate);
