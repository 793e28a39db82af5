//! Tests of the layering, the validation and the error messages of the configuration.

use super::*;

/// A sandbox machine root with the given files written into it.
fn machine(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
    let d = tempfile::tempdir().unwrap();
    let root = Root::new(d.path());
    for (path, text) in files {
        let p = root.join(Path::new(path));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    (d, root)
}

fn err_of(files: &[(&str, &str)], overrides: &[&str]) -> String {
    let (_d, root) = machine(files);
    let o: Vec<String> = overrides
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    Settings::load(&root, None, &o).unwrap_err().to_string()
}

#[test]
fn defaults_with_no_files() {
    // A bare machine: no configuration at all.
    let (_d, root) = machine(&[]);
    let s = Settings::load(&root, None, &[]).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.parallel_downloads, 4);
    assert_eq!(s.state_dir, Path::new("/var/lib/upd"));
}

#[test]
fn layers_apply_in_order() {
    // Each layer sets CHANNEL; /usr/lib also sets keys the others leave alone.
    let (_d, root) = machine(&[
        (
            "/usr/lib/upd/upd.conf",
            "CHANNEL=usr\nGROUP=vendor\nSERVER=https://vendor.example/\n",
        ),
        (
            "/usr/lib/upd/upd.conf.d/10-a.conf",
            "CHANNEL=usr-dropin\nRETRIES=5\n",
        ),
        ("/run/upd/upd.conf", "CHANNEL=run\n"),
        ("/run/upd/upd.conf.d/10-a.conf", "CHANNEL=run-dropin\n"),
        ("/etc/upd/upd.conf", "CHANNEL=etc\nRETRIES=\n"),
    ]);
    let s = Settings::load(&root, None, &[]).unwrap();
    assert_eq!(s.channel.as_str(), "etc");
    assert_eq!(s.group.as_str(), "vendor");
    assert_eq!(s.server.unwrap().as_str(), "https://vendor.example/");
    assert!(s.mirrors.is_empty());
    assert_eq!(s.retries, 3, "an empty value puts the default back");

    let (_d, root) = machine(&[
        ("/etc/upd/upd.conf", "CHANNEL=etc\n"),
        ("/run/upd/upd.conf.d/9.conf", "CHANNEL=run\n"),
    ]);
    assert_eq!(
        Settings::load(&root, None, &[]).unwrap().channel.as_str(),
        "etc"
    );
}

#[test]
fn dropins_in_name_order_and_only_conf() {
    // Drop-ins whose names sort differently from their creation order, plus files that must be ignored.
    let (_d, root) = machine(&[
        ("/etc/upd/upd.conf", "CHANNEL=main\n"),
        ("/etc/upd/upd.conf.d/20-b.conf", "CHANNEL=b\n"),
        ("/etc/upd/upd.conf.d/10-a.conf", "CHANNEL=a\nGROUP=g-a\n"),
        (
            "/etc/upd/upd.conf.d/30-c.conf.disabled",
            "CHANNEL=disabled\n",
        ),
        ("/etc/upd/upd.conf.d/.99-hidden.conf", "CHANNEL=hidden\n"),
    ]);
    let s = Settings::load(&root, None, &[]).unwrap();
    assert_eq!((s.channel.as_str(), s.group.as_str()), ("b", "g-a"));
    let files = layer_files(&root).unwrap();
    assert_eq!(files.len(), 3);
    assert!(files[1].ends_with("10-a.conf") && files[2].ends_with("20-b.conf"));
}

#[test]
fn config_file_then_cli_overrides_win() {
    // /etc sets a channel; --config and two overrides follow.
    let (d, root) = machine(&[(
        "/etc/upd/upd.conf.d/99-last.conf",
        "CHANNEL=etc\nWARINESS=0.5\n",
    )]);
    let extra = d.path().join("extra.conf");
    std::fs::write(&extra, "CHANNEL=extra\nPARALLEL_DOWNLOADS=2\n").unwrap();
    let o = vec![
        "CHANNEL=cli".to_string(),
        "PARALLEL_DOWNLOADS=8".to_string(),
    ];
    let s = Settings::load(&root, Some(&extra), &o).unwrap();
    assert_eq!(
        (s.channel.as_str(), s.parallel_downloads, s.wariness),
        ("cli", 8, 0.5)
    );
    let s = Settings::load(&root, Some(&extra), &[]).unwrap();
    assert_eq!((s.channel.as_str(), s.parallel_downloads), ("extra", 2));
}

#[test]
fn extensions_list_and_per_name_keys() {
    // A vendor list, an /etc per-name pin and disable, then a CLI re-enable.
    let files = [
        (
            "/usr/lib/upd/upd.conf",
            "EXTENSIONS=\"hello docker:~24.0 wasm:>=1.2,<2\"\n",
        ),
        (
            "/etc/upd/upd.conf",
            "EXTENSION_hello=off\nEXTENSION_docker=~25\nEXTENSION_new=on\n",
        ),
    ];
    let (_d, root) = machine(&files);
    let s = Settings::load(&root, None, &["EXTENSION_hello=1.0.0".into()]).unwrap();
    let got: Vec<String> = s
        .extensions
        .iter()
        .map(|(n, r)| format!("{n}:{r}"))
        .collect();
    assert_eq!(
        got,
        ["docker:~25", "hello:^1.0.0", "new:*", "wasm:>=1.2, <2"]
    );
    // A later EXTENSIONS list replaces everything before it.
    let s = Settings::load(&root, None, &["EXTENSIONS=only".into()]).unwrap();
    assert_eq!(
        s.extensions.keys().map(Name::as_str).collect::<Vec<_>>(),
        ["only"]
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let err = err_of(
        &[(
            "/etc/upd/upd.conf.d/10-x.conf",
            "# typo below\n\nCHANNEL=beta\nCHANEL=beta\n",
        )],
        &[],
    );
    assert!(
        err.contains("/etc/upd/upd.conf.d/10-x.conf:4: unknown key CHANEL"),
        "{err}"
    );
    let err = err_of(&[], &["CHANNEL=x", "NOPE=1"]);
    assert!(
        err.contains("command-line override #2: unknown key NOPE"),
        "{err}"
    );
}

#[test]
fn bad_values_name_file_line_key_value_and_expectation() {
    let cases = [
        (
            "SERVER=ftp://x/",
            "SERVER=\"ftp://x/\": expected an http:// or https:// URL",
        ),
        ("CHANNEL=a/b", "CHANNEL=\"a/b\": expected a name"),
        (
            "PARALLEL_DOWNLOADS=17",
            "PARALLEL_DOWNLOADS=\"17\": expected an integer from 1 to 16",
        ),
        (
            "STORE_DIR=var/lib",
            "STORE_DIR=\"var/lib\": expected an absolute path",
        ),
        (
            "REBOOT_STRATEGY=later",
            "REBOOT_STRATEGY=\"later\": expected one of off",
        ),
        (
            "WARINESS=2",
            "WARINESS=\"2\": expected a number from 0.0 to 1.0",
        ),
        (
            "EXTENSIONS=ok bad:~~1",
            "EXTENSIONS=\"ok bad:~~1\": expected a semver requirement",
        ),
        (
            "EXTENSION_docker=maybe",
            "EXTENSION_docker=\"maybe\": expected on, off, or a semver",
        ),
        ("EXTENSION_a/b=on", "EXTENSION_a/b"),
        (
            "STALL_TIMEOUT_SECS=0",
            "expected an integer from 1 to 3600 (seconds)",
        ),
        (
            "RETENTION=33",
            "RETENTION=\"33\": expected an integer from 0 to 32",
        ),
    ];
    for (line, want) in cases {
        let err = err_of(
            &[("/etc/upd/upd.conf", &format!("CHANNEL=ok\n{line}\n"))],
            &[],
        );
        assert!(
            err.contains("/etc/upd/upd.conf:2: ") && err.contains(want),
            "{line}: {err}"
        );
    }
}

#[test]
fn strategy_needs_its_settings() {
    let err = err_of(
        &[("/etc/upd/upd.conf", "REBOOT_STRATEGY=fleet-lock\n")],
        &[],
    );
    assert!(
        err.contains("upd.conf:1")
            && err.contains("REBOOT_STRATEGY=fleet-lock needs FLEET_LOCK_URL"),
        "{err}"
    );
    let ok = [(
        "/etc/upd/upd.conf",
        "REBOOT_STRATEGY=etcd-lock\nETCD_ENDPOINTS=http://127.0.0.1:2379 http://[::1]:2379\n",
    )];
    let (_d, root) = machine(&ok);
    let s = Settings::load(&root, None, &[]).unwrap();
    assert_eq!(
        (s.reboot_strategy, s.etcd_endpoints.len()),
        (RebootStrategy::EtcdLock, 2)
    );
}

#[test]
fn a_bad_reboot_window_is_refused_at_load() {
    // Issue 10, defect 2: these were accepted at load and only parsed when a reboot was decided.
    for (window, why) in [
        ("Mon-Fri 25:00 2h", "'25:00' is not a time of day"),
        ("Funday 02:00 2h", "'Funday' is not a set of days"),
    ] {
        let conf = format!("REBOOT_STRATEGY=window\nREBOOT_WINDOW={window}\n");
        let err = err_of(&[("/etc/upd/upd.conf", &conf)], &[]);
        assert!(
            err.contains("upd.conf:2: REBOOT_WINDOW=") && err.contains(why),
            "{window}: {err}"
        );
    }
    let conf = "REBOOT_STRATEGY=window\nREBOOT_WINDOW=Sat,Sun 03:30 2h\n";
    let (_d, root) = machine(&[("/etc/upd/upd.conf", conf)]);
    let s = Settings::load(&root, None, &[]).unwrap();
    let w: crate::rules::window::Window = "Sat,Sun 03:30 2h".parse().unwrap();
    assert_eq!(s.reboot_window, Some(w));
}

#[test]
fn keys_dir_prefers_etc_then_usr_share() {
    let (_d, root) = machine(&[]);
    let s = Settings::default();
    assert_eq!(
        s.keys_dir(&root),
        root.join(Path::new("/usr/share/upd/keys"))
    );
    std::fs::create_dir_all(root.join(Path::new("/etc/upd/keys"))).unwrap();
    assert_eq!(s.keys_dir(&root), root.join(Path::new("/etc/upd/keys")));
    let s = Settings::from_entries(&raw::parse_overrides(&["KEYS_DIR=/opt/keys".into()]).unwrap())
        .unwrap();
    assert_eq!(s.keys_dir(&root), root.join(Path::new("/opt/keys")));
}

#[test]
fn example_file_documents_every_key_and_parses() {
    // The shipped example with every commented assignment switched on.
    let text = include_str!("../../../systemd/upd/upd.conf.example");
    let active: String = text
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter(|l| l.contains('=') && l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| format!("{l}\n"))
        .collect();
    let origin = |line| Origin::File {
        file: "upd.conf.example".into(),
        line,
    };
    let s = Settings::from_entries(&raw::parse_text(&active, origin).unwrap()).unwrap();
    assert_eq!(s.retention, Settings::default().retention);
    for key in [
        "SERVER",
        "CHANNEL",
        "EXTENSIONS",
        "EXTENSION_",
        "STORE_DIR",
        "LINK_DIR",
        "STATE_DIR",
        "KEYS_DIR",
        "REBOOT_STRATEGY",
        "REBOOT_WINDOW",
        "FLEET_LOCK_URL",
        "ETCD_ENDPOINTS",
        "GROUP",
        "PARALLEL_DOWNLOADS",
        "CONNECT_TIMEOUT_SECS",
        "STALL_TIMEOUT_SECS",
        "RETRIES",
        "RANGES_PER_REQUEST",
        "MACHINE_ID_PATH",
        "WARINESS",
        "RETENTION",
        "SYSEXT_BIN",
        "REPORT_URL",
        "REPORT_TOKEN_FILE",
    ] {
        assert!(
            active.lines().any(|l| l.starts_with(key)),
            "{key} is not in the example"
        );
    }
}

#[test]
fn reports_are_off_by_default_and_need_a_token_file() {
    // Issue 15: REPORT_URL without REPORT_TOKEN_FILE is an error naming where it was set.
    assert_eq!(Settings::default().report_url, None);
    let (_d, root) = machine(&[("/etc/upd/upd.conf", "REPORT_URL=https://fleet.example/\n")]);
    let e = Settings::load(&root, None, &[]).unwrap_err().to_string();
    assert!(
        e.contains("upd.conf:1") && e.contains("REPORT_TOKEN_FILE is not"),
        "{e}"
    );
    let (_d, root) = machine(&[(
        "/etc/upd/upd.conf",
        "REPORT_URL=https://fleet.example/\nREPORT_TOKEN_FILE=/etc/upd/report.token\n",
    )]);
    let s = Settings::load(&root, None, &[]).unwrap();
    assert_eq!(s.report_url.unwrap().as_str(), "https://fleet.example/");
    assert_eq!(
        s.report_token_file.unwrap(),
        Path::new("/etc/upd/report.token")
    );
    let (_d, root) = machine(&[("/etc/upd/upd.conf", "REPORT_URL=ftp://x/\n")]);
    assert!(Settings::load(&root, None, &[]).is_err());
}

#[test]
fn server_takes_a_list_of_mirrors() {
    // SERVER names the repository and its mirrors, tried in that order; each must be http(s).
    let (_d, root) = machine(&[(
        "/etc/upd/upd.conf",
        "SERVER=https://a.example/repo  http://b.example/\n",
    )]);
    let s = Settings::load(&root, None, &[]).unwrap();
    assert_eq!(s.server.unwrap().as_str(), "https://a.example/repo");
    let m: Vec<&str> = s.mirrors.iter().map(reqwest::Url::as_str).collect();
    assert_eq!(m, ["http://b.example/"]);
    let err = err_of(
        &[("/etc/upd/upd.conf", "SERVER=https://a.example/ ftp://b/\n")],
        &[],
    );
    assert!(err.contains("http:// or https://"), "{err}");
}
