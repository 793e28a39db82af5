//! The rollout page in a real headless Chromium (Debian package chromium): loaded from the
//! report server, its numbers checked against the database (`fleet status`), a screenshot kept
//! in the test output directory.

use std::path::PathBuf;
use std::process::Command;

use chrono::{Duration, Utc};
use upd_tests::sandbox::require_root;

use super::reportserver::{on_both_dbs, rand16, report, Backend, ReportServer};

/// Where tests keep what a person may want to look at: `$UPD_TEST_OUTPUT`, else
/// target/test-output.
fn output_dir() -> PathBuf {
    let dir = std::env::var_os("UPD_TEST_OUTPUT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-output"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Run headless Chromium on `url` with `args` (a throw-away profile; no network but loopback).
fn chromium(url: &str, args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=900,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .env("HOME", profile.path())
        .output()
        .expect("run chromium (Debian package chromium; scripts/prereqs installs it)")
}

/// The text of the element that opens with `open` in `dom` (up to its first `<`).
fn text_after<'a>(dom: &'a str, open: &str) -> &'a str {
    let at = dom
        .find(open)
        .unwrap_or_else(|| panic!("{open:?} not in the DOM"));
    let rest = &dom[at + open.len()..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap();
    &rest[start..start + end]
}

fn the_page_shows_what_the_database_holds(backend: Backend) {
    // Twelve machines over an hour: all on 1.0.0, then 2.0.0 staged on six, booted and marked
    // good on four, sent back on one, fallen back on one.
    if !require_root() {
        return;
    }
    let s = ReportServer::start(backend, &[]);
    let t0 = Utc::now() - Duration::hours(1);
    let mut n = 0;
    let mut send = |mut r: serde_json::Value, minutes: i64| {
        n += 1;
        r["time"] = (t0 + Duration::minutes(minutes) + Duration::seconds(n))
            .to_rfc3339()
            .into();
        let (code, v) = s.post(
            serde_json::to_vec(&r).unwrap(),
            Some(&s.token),
            "application/json",
        );
        assert_eq!(code, 202, "{v}");
    };
    let ids: Vec<String> = (0..12).map(|_| hex::encode(rand16())).collect();
    for id in &ids {
        send(report(id, "check"), 0);
    }
    for (i, id) in ids.iter().enumerate().take(6) {
        let mut r = report(id, "stage");
        r["pending"] = "2.0.0".into();
        r["phase"] = "staged".into();
        r["fleet_position"] = (i as f64 / 20.0).into();
        send(r, 10);
        let mut r = report(id, "boot");
        r["pending"] = "2.0.0".into();
        r["phase"] = "booted-pending".into();
        match i {
            0..=3 => {
                r["booted"]["os"] = "2.0.0".into();
                send(r, 20);
                let mut r = report(id, "mark-good");
                r["booted"]["os"] = "2.0.0".into();
                send(r, 30 + i as i64);
            }
            4 => {
                r["booted"]["os"] = "2.0.0".into();
                send(r, 20);
                let mut r = report(id, "mark-good");
                r["booted"]["os"] = "2.0.0".into();
                r["pending"] = "2.0.0".into();
                r["error"] = "rolled_back".into();
                send(r, 40);
            }
            _ => {
                r["event"] = "fallback".into();
                r["phase"] = "idle".into();
                send(r, 50);
            }
        }
    }
    let st = s.status();
    let v2 = s.release("2.0.0");
    assert_eq!(v2["good"], 4, "{st}");

    let out = chromium(&s.url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium: {}",
        crate::pull::rig::text_of(&out)
    );
    assert_eq!(
        text_after(&dom, "<p id=\"machines\""),
        format!("{} machine(s) reporting", st["machines"])
    );
    for r in st["releases"].as_array().unwrap() {
        let v = r["version"].as_str().unwrap();
        let row_at = dom.find(&format!("<tr data-release=\"{v}\"")).unwrap();
        let row = &dom[row_at..];
        for field in [
            "running",
            "tried",
            "staged",
            "booted",
            "good",
            "failed",
            "fallen_back",
        ] {
            let shown = text_after(row, &format!("data-field=\"{field}\""));
            assert_eq!(shown, r[field].to_string(), "release {v} {field}");
        }
    }
    // The chart: a line per booted version ending at each one's machines, failures in red.
    assert!(
        dom.contains("data-version=\"2.0.0\" data-last=\"5\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-version=\"1.0.0\" data-last=\"7\""),
        "{dom}"
    );
    assert!(dom.contains("id=\"failures\" data-failures=\"2\""), "{dom}");
    assert!(dom.contains("class=\"failure\""), "{dom}");
    assert!(
        dom.contains("data-field=\"failed\" class=\"bad\">1<"),
        "failures highlighted"
    );
    assert!(!dom.contains("<script"), "no script");

    let shot = output_dir().join(format!("fleet-page-{backend:?}.png").to_lowercase());
    let _ = std::fs::remove_file(&shot);
    let out = chromium(&s.url, &[&format!("--screenshot={}", shot.display())]);
    assert!(
        out.status.success(),
        "chromium: {}",
        crate::pull::rig::text_of(&out)
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
}

on_both_dbs!(page, the_page_shows_what_the_database_holds);
