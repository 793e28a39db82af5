//! The systemd units in systemd/system pass `systemd-analyze verify` and keep their ordering
//! promises; the example configuration documents every key and parses with the real `upd`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use upd_tests::bins;

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

fn units_dir() -> PathBuf {
    systemd_dir().join("system")
}

fn example_config() -> PathBuf {
    systemd_dir().join("upd/upd.conf.example")
}

/// The unit's `[Unit]`/`[Service]` assignments of `key`, each split on whitespace.
fn values(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(units_dir().join(unit)).unwrap();
    let prefix = format!("{key}=");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect()
}

fn has(unit: &str, key: &str, value: &str) -> bool {
    values(unit, key).iter().any(|v| v == value)
}

fn run_upd(root: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(bins::upd())
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run upd")
}

// Situation: every shipped unit, with ExecStart pointed at the freshly built binary, verified by
// the real systemd-analyze of this machine: no error and no warning.
#[test]
fn units_pass_systemd_analyze_verify() {
    let bin = bins::upd();
    let tmp = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(units_dir()).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("/usr/bin/upd", bin.to_str().unwrap());
        let name = p.file_name().unwrap().to_owned();
        std::fs::write(tmp.path().join(&name), text).unwrap();
        names.push(name.to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "upd-boot.service",
            "upd-mark-good.service",
            "upd.service",
            "upd.timer"
        ],
        "the units in systemd/system"
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(names.iter().map(|n| tmp.path().join(n)))
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

// Situation: upd-boot must run early, before systemd-sysext merges, and stop with the system;
// mark-good only after a complete, healthy boot; the timer must be randomised and persistent.
#[test]
fn ordering_and_timer_promises() {
    let boot = "upd-boot.service";
    assert!(has(boot, "DefaultDependencies", "no"));
    assert!(has(boot, "Before", "systemd-sysext.service"));
    assert!(has(boot, "Conflicts", "shutdown.target") && has(boot, "Before", "shutdown.target"));
    for path in ["/var/lib/upd", "/etc/extensions"] {
        assert!(has(boot, "RequiresMountsFor", path), "{path}");
    }

    let good = "upd-mark-good.service";
    assert!(has(good, "After", "multi-user.target"));
    assert!(
        has(good, "Requires", "boot-complete.target") && has(good, "After", "boot-complete.target")
    );
    assert!(has(good, "After", "network-online.target"));
    assert!(has(good, "WantedBy", "multi-user.target") && has(good, "Type", "oneshot"));
    assert_eq!(values(good, "ExecStart"), ["/usr/bin/upd", "mark-good"]);

    let upd = "upd.service";
    assert!(
        has(upd, "Wants", "network-online.target") && has(upd, "After", "network-online.target")
    );
    assert!(has(upd, "After", "systemd-sysext.service") && has(upd, "Type", "oneshot"));
    assert_eq!(
        values(upd, "ExecStart")[..3],
        ["/usr/bin/upd", "update", "--unattended"]
    );

    let timer = "upd.timer";
    assert!(!values(timer, "RandomizedDelaySec").is_empty());
    // Persistent= only acts on OnCalendar= timers.
    assert!(has(timer, "Persistent", "true") && !values(timer, "OnCalendar").is_empty());
}

// Situation: upd.service runs `systemd-sysext refresh`, which must change the host's /usr: no
// setting that gives the unit a mount namespace of its own, none that closes the device cgroup
// (the disk, loop devices), and unshare(CLONE_NEWNS) allowed.
#[test]
fn upd_service_stays_in_the_host_mount_namespace() {
    let upd = "upd.service";
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "PrivateIPC",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectProc",
        "ProcSubset",
        "ReadWritePaths",
        "ReadOnlyPaths",
        "InaccessiblePaths",
        "BindPaths",
        "BindReadOnlyPaths",
        "TemporaryFileSystem",
        "MountFlags",
        "ProtectClock",
        "DeviceAllow",
        "DevicePolicy",
        "ProtectHostname",
        "DynamicUser",
        "RootDirectory",
    ] {
        assert!(values(upd, key).is_empty(), "upd.service sets {key}=");
    }
    assert!(has(upd, "RestrictNamespaces", "mnt"));
    assert!(has(upd, "NoNewPrivileges", "yes"));
    for unit in ["upd-boot.service", "upd-mark-good.service"] {
        for key in [
            "PrivateDevices",
            "ProtectClock",
            "DeviceAllow",
            "DevicePolicy",
        ] {
            assert!(values(unit, key).is_empty(), "{unit} sets {key}=");
        }
        assert!(has(unit, "ProtectSystem", "strict"), "{unit}");
    }
    assert!(has("upd-boot.service", "PrivateNetwork", "yes"));
}

// Situation: the example configuration, all comments, as the `--config` of a fresh machine:
// the real `upd status` accepts it.
#[test]
fn example_config_parses_with_upd() {
    let root = tempfile::tempdir().unwrap();
    let out = run_upd(root.path(), &example_config(), &["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "upd status: {stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("channel: stable"),
        "{out:?}"
    );
}

// Situation: every `#KEY=value` line of the example uncommented at once: each documented value
// is one upd accepts (`upd channel` loads the configuration and prints the channel), and the
// documented maintenance window parses with upd's own window rules.
#[test]
fn example_values_are_valid() {
    let text = std::fs::read_to_string(example_config()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| {
            l.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
        })
        .collect();
    assert!(lines.len() >= 25, "only {} example lines", lines.len());
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("all.conf");
    std::fs::write(&conf, lines.join("\n") + "\nREBOOT_STRATEGY=window\n").unwrap();
    let out = run_upd(dir.path(), &conf, &["channel"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "upd channel: {stderr}\n{}",
        lines.join("\n")
    );
    let channel = lines
        .iter()
        .find_map(|l| l.strip_prefix("CHANNEL="))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), channel);

    let window = lines
        .iter()
        .find_map(|l| l.strip_prefix("REBOOT_WINDOW="))
        .unwrap();
    let parsed = window.parse::<upd::rules::window::Window>();
    assert!(parsed.is_ok(), "REBOOT_WINDOW={window}: {parsed:?}");

    // A typo is still refused, naming the file and the key: the test above would notice.
    std::fs::write(&conf, "REBOT_STRATEGY=off\n").unwrap();
    let out = run_upd(dir.path(), &conf, &["channel"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("unknown key REBOT_STRATEGY"),
        "{stderr}"
    );
}

// Situation: a key added to upd's configuration parser but not to the example is caught here.
#[test]
fn example_documents_every_key() {
    // The parser's keys are the match arms `"KEY" =>` in the files of updater/src/config.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../updater/src/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    let parser: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let keys: Vec<&str> = parser
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('"')?
                .split_once("\" =>")
                .map(|(k, _)| k)
        })
        .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(keys.len() >= 25, "found only {keys:?} in the parser");
    let example = std::fs::read_to_string(example_config()).unwrap();
    let missing: Vec<&&str> = keys
        .iter()
        .filter(|k| !example.contains(&format!("\n#{k}=")))
        .collect();
    assert!(
        missing.is_empty(),
        "not documented in the example: {missing:?}"
    );
}
