//! OS versions as systemd orders them: upd's order against the real `systemd-analyze
//! compare-versions` of systemd 252 (this machine) and 257 (Debian 13's tree) (46 chosen pairs and 288 combined ones), and a machine with Debian's `VERSION_ID=12` that upd
//! updates like any other.

use std::cmp::Ordering;
use std::path::Path;
use std::process::Command;

use upd_channels::version::OsVersion;
use upd_tests::images::{OsSpec, SysextSpec};
use upd_tests::rootfs::{rootfs, TRIXIE};
use upd_tests::sandbox::require_root;

use crate::pull::rig::{text_of, Rig};

/// Pairs of versions from distributions and from the corners of the UAPI version format:
/// numbers of different lengths, leading zeros, letters against digits, `~` pre-releases, `^`
/// and `-` suffixes, separators systemd ignores, semver with `+` build metadata.
const PAIRS: &[(&str, &str)] = &[
    ("12", "13"),
    ("9", "10"),
    ("12", "12.1"),
    ("12.1", "12.10"),
    ("12.2", "12.10"),
    ("39", "40"),
    ("22.04", "24.04"),
    ("24.04", "24.10"),
    ("24.04", "24.04.1"),
    ("4081.2.0", "4081.2.1"),
    ("4081.2.1", "4152.0.0"),
    ("3975.2.2", "4081.2.0"),
    ("1.2.3", "1.10.0"),
    ("1.0.0", "1.0.0"),
    ("1.0", "1.00"),
    ("1.0", "1.0.0"),
    ("01", "1"),
    ("001.002", "1.2"),
    ("2.0.0~rc1", "2.0.0"),
    ("2.0.0~rc1", "2.0.0~rc2"),
    ("2.0.0~rc2", "2.0.0~rc10"),
    ("2.0.0~", "2.0.0"),
    ("2.0.0-rc.1", "2.0.0"),
    ("2.0.0-1", "2.0.0.1"),
    ("2.0.0^p1", "2.0.0"),
    ("2.0.0^p1", "2.0.0.1"),
    ("2.0.0^p1", "2.0.0-1"),
    ("1.2.3+build.5", "1.2.3"),
    ("1.2.3+build.5", "1.2.3+build.10"),
    ("1a", "1b"),
    ("1a", "1"),
    ("1a", "1.0"),
    ("a", "1"),
    ("abc", "abd"),
    ("abc", "abcd"),
    ("rolling", "rolling"),
    ("2024.01", "2024.1"),
    ("20240101", "2024.01.01"),
    ("1_2", "1.2"),
    ("1.2_3", "1.2.3"),
    ("5.2", "abc-5"),
    ("1.0.0~rc1", "5.2"),
    ("255.4", "255.10"),
    ("255.4-1", "255.4"),
    ("6.1.0-18-amd64", "6.1.0-9-amd64"),
    ("1.0.0-alpha", "1.0.0-beta"),
];

/// What `systemd-analyze compare-versions A B` prints between them (`<`, `==` or `>`), run on
/// the host (`tree` None) or chrooted into a Debian tree of the booted suite.
fn systemd_order(tree: Option<&Path>, a: &str, b: &str) -> Ordering {
    let mut cmd = match tree {
        None => Command::new("systemd-analyze"),
        Some(t) => {
            let mut c = Command::new("chroot");
            c.arg(t).arg("systemd-analyze");
            c
        }
    };
    let out = cmd
        .args(["compare-versions", a, b])
        .output()
        .expect("run systemd-analyze compare-versions");
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().nth(1) {
        Some("<") => Ordering::Less,
        Some("==") => Ordering::Equal,
        Some(">") => Ordering::Greater,
        _ => panic!("systemd-analyze compare-versions {a} {b} printed {text:?}"),
    }
}

/// Versions made of two fragments each (144), every one paired with two others: 288 pairs
/// that mix every separator, pre-release marker, leading zero and letter case the rule knows.
fn combined_pairs() -> Vec<(String, String)> {
    const FRAGMENTS: &[&str] = &[
        "1", "01", "1.0", "1~rc", "1-1", "1^1", "1a", "a", "1.a", "1_0", "10", "2.B",
    ];
    let all: Vec<String> = FRAGMENTS
        .iter()
        .flat_map(|x| FRAGMENTS.iter().map(move |y| format!("{x}{y}")))
        .collect();
    let n = all.len();
    (0..n)
        .flat_map(|i| [(i, (i + 1) % n), (i, (i * 7 + 3) % n)])
        .map(|(i, j)| (all[i].clone(), all[j].clone()))
        .collect()
}

#[test]
fn os_versions_order_as_systemd_252_does() {
    same_order_as(None);
}

/// Debian 13's systemd-analyze (257), chrooted into the booted suite's cached tree.
#[test]
fn os_versions_order_as_systemd_257_does() {
    if !require_root() {
        return;
    }
    let tree = rootfs(&TRIXIE);
    let version = Command::new("chroot")
        .arg(&tree)
        .args(["systemd-analyze", "--version"])
        .output()
        .expect("chroot systemd-analyze --version");
    assert!(
        String::from_utf8_lossy(&version.stdout).starts_with("systemd 257"),
        "{version:?}"
    );
    same_order_as(Some(&tree));
}

fn same_order_as(tree: Option<&Path>) {
    assert!(PAIRS.len() >= 40);
    let combined = combined_pairs();
    let pairs = PAIRS
        .iter()
        .map(|(a, b)| (*a, *b))
        .chain(combined.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    let mut orders = [0usize; 3];
    let mut unlike = Vec::new();
    for (a, b) in pairs {
        let want = systemd_order(tree, a, b);
        let (x, y) = (OsVersion::parse(a).unwrap(), OsVersion::parse(b).unwrap());
        for (l, r, got, want) in [(a, b, x.cmp(&y), want), (b, a, y.cmp(&x), want.reverse())] {
            if got != want {
                unlike.push(format!("{l} vs {r}: upd {got:?}, systemd {want:?}"));
            }
        }
        orders[(want as i8 + 1) as usize] += 1;
    }
    assert!(
        unlike.is_empty(),
        "upd orders unlike systemd:\n{}",
        unlike.join("\n")
    );
    // The table exercises all three answers, so a comparator stuck on one cannot pass.
    assert!(orders.iter().all(|&n| n >= 3), "{orders:?}");
}

#[test]
fn a_debian_12_machine_is_updated_like_any_other() {
    if !require_root() {
        return;
    }
    // Stock Debian: VERSION_ID="12", no IMAGE_VERSION. The channel lists 9 and 10 too: in string
    // order "9" would be the newest release; in systemd's order 12 is, so no OS update is offered.
    let debian = OsSpec::new("debian", "12");
    let mut rig = Rig::running(&debian, "12");
    for old in ["9", "10"] {
        rig.ch.add_os_release(old, &OsSpec::new("debian", old));
    }
    rig.ch
        .add_extension("12", &SysextSpec::new("hello", "1.0.0", "debian", "12"));
    rig.publish();

    let status = rig.upd_ok(&["status"], 0);
    assert!(status.contains("OS: 12 "), "{status}");
    let out = rig.upd(&["check"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(100), "{text}");
    assert!(!text.contains("OS update available"), "{text}");
    assert!(text.contains("hello"), "{text}");

    rig.upd_ok(&["pull"], 0);
    assert_eq!(
        rig.merged().keys().cloned().collect::<Vec<_>>(),
        ["hello"],
        "hello merged on the Debian machine"
    );
    let out = rig.upd(&["check"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text_of(&out));
}

#[test]
fn an_os_release_without_a_usable_version_is_named_in_status() {
    if !require_root() {
        return;
    }
    let rig = Rig::running(&OsSpec::new("updos", "1.0 beta"), "1.0.0");
    let status = rig.upd_ok(&["status"], 0);
    assert!(
        status.contains("OS: unknown (") && status.contains("'1.0 beta'"),
        "status does not say why the OS is unknown:\n{status}"
    );
}
