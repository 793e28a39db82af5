//! What an operator sees of upd.service in a booted systemd: its sd_notify status in
//! `systemctl status` (the phase, download progress, the outcome) and its own error lines at
//! their priority in the journal (issue 10, defects 3 and 7).

use std::time::{Duration, Instant};

use upd_tests::faultserver::Fault;
use upd_tests::rootfs::Suite;

use super::rig::{on_both, Rig};

/// upd.service's `StatusText`.
fn status_text(rig: &Rig) -> String {
    rig.c.property("upd.service", "StatusText")
}

/// Poll `StatusText` until `pred` holds (upd is running meanwhile); the last one seen, or panic
/// after `limit` with the journal.
fn wait_status(rig: &Rig, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let s = status_text(rig);
        if pred(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < limit,
            "status never matched; last {s:?}\n{}",
            rig.journal("upd.service")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Situation: a container at hello + world 1.0.0; hello 1.1.0 is published and its image stalls
// half-way on the first request (upd's stall timeout then a resumed retry); later the manifest
// turns to garbage, which upd refuses (exit 4).
fn status_and_errors_reach_systemd(suite: Suite) {
    let Some(mut rig) = Rig::boot(suite, "notify") else {
        return;
    };
    rig.pull_v1();
    let st = status_text(&rig);
    assert!(st.starts_with("switched: hello - -> 1.0.0"), "{st:?}");
    // `systemctl status` of an inactive unit exits 3; its text is what counts.
    let out = rig
        .c
        .exec(&["systemctl", "status", "--no-pager", "upd.service"]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains(&format!("Status: \"{st}\"")), "{shown}");
    eprintln!("--- systemctl status upd.service:\n{shown}");

    rig.add(&rig.ext("hello", "1.1.0"));
    rig.publish();
    let (url, file) = rig
        .ch
        .files()
        .into_iter()
        .find(|(u, _)| u.contains("/hello-1.1.0"))
        .expect("hello 1.1.0 image served");
    let half = std::fs::metadata(&file).unwrap().len() / 2;
    let stall = Fault::StallAfter {
        at: half,
        times: Some(1),
    };
    rig.server.put_file(&url, file, stall).unwrap();
    rig.c
        .ok(&["systemctl", "start", "--no-block", "upd.service"]);
    let during = wait_status(&rig, Duration::from_mins(2), |s| {
        s.starts_with("downloading hello 1.1.0: ")
    });
    assert!(during.ends_with(" %"), "{during:?}");
    let done = wait_status(&rig, Duration::from_mins(2), |s| s.starts_with("switched"));
    assert_eq!(done, "switched: hello 1.0.0 -> 1.1.0");
    rig.c.ok(&[
        "sh",
        "-c",
        "while systemctl is-active -q upd.service; do sleep 0.2; done",
    ]);
    assert_eq!(rig.c.property("upd.service", "Result"), "success");
    assert_eq!(rig.program("hello"), "hello 1.1.0\n");

    // A refused manifest: the unit fails with exit 4, says so in its status, and the journal's
    // warning level shows upd's own error line.
    rig.server.put_bytes(
        "/channels/stable/manifest.json",
        &b"{\"not\": \"signed\"}"[..],
        Fault::Normal,
    );
    let out = rig.start_upd();
    let log = rig.journal("upd.service");
    assert!(!out.status.success(), "{log}");
    assert_eq!(
        rig.c.property("upd.service", "ExecMainStatus"),
        "4",
        "{log}"
    );
    let st = status_text(&rig);
    assert!(st.starts_with("failed (refused, exit 4): "), "{st:?}");
    let out = rig.c.exec(&[
        "systemctl",
        "status",
        "--no-pager",
        "-n",
        "0",
        "upd.service",
    ]);
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(shown.contains(&format!("Status: \"{st}\"")), "{shown}");
    eprintln!("--- systemctl status upd.service after the refusal:\n{shown}");
    let warned = rig.c.ok(&[
        "journalctl",
        "-b",
        "-p",
        "warning",
        "-u",
        "upd.service",
        "-o",
        "cat",
        "--no-pager",
    ]);
    assert!(
        warned
            .lines()
            .any(|l| l.starts_with("upd: ") && l.contains("manifest")),
        "no upd error line at priority warning or above:\n{warned}\nwhole journal:\n{log}"
    );
    eprintln!("--- journalctl -p warning -u upd.service:\n{warned}");
    // Fields are plain text: no terminal colour codes reach the journal.
    assert!(
        !warned.contains('\u{1b}'),
        "ANSI escapes in the journal:\n{warned:?}"
    );
    // Info lines stay below: the warning view holds no download chatter.
    assert!(!warned.contains("download started"), "{warned}");
    rig.finish();
}
on_both!(status_and_errors_reach_systemd);
