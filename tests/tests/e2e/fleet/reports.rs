//! The report server on SQLite and on a real PostgreSQL: bad input refused with 4xx and nothing
//! stored while the server keeps serving; real machines' reports counted by `fleet status`; the
//! machine's queue when the server cannot be reached, and its refusal of a readable token file.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use upd_tests::disk::{USR_A, USR_B};
use upd_tests::sandbox::require_root;

use super::reportserver::{on_both_dbs, rand16, report, Backend, ReportServer};
use super::rig::Fleet;
use crate::os::rig::{V1, V2};

/// The number of reports stored for channel stable.
fn stored(s: &ReportServer) -> i64 {
    s.status()["reports"].as_i64().unwrap()
}

fn bad_input_is_refused_nothing_stored_and_the_server_keeps_serving(backend: Backend) {
    // A server with small limits; one good report, then every kind of bad one, then storms.
    if !require_root() {
        return;
    }
    let mut s = ReportServer::start(
        backend,
        &["--per-machine-per-minute", "5", "--global-per-second", "40"],
    );
    let id = hex::encode(rand16());
    let json = "application/json";
    let body = |v: &serde_json::Value| serde_json::to_vec(v).unwrap();
    let (code, v) = s.post(body(&report(&id, "check")), Some(&s.token), json);
    assert_eq!((code, &v), (202, &serde_json::json!({"stored": true})));
    assert_eq!(stored(&s), 1);

    let mut unknown = report(&id, "check");
    unknown["hostname"] = "web-1".into();
    let mut nested = report(&id, "check");
    nested["booted"]["kernel"] = "6.1".into();
    let mut bad_id = report(&id, "check");
    bad_id["machine_id"] = "../../etc/passwd".into();
    let mut bad_event = report(&id, "check");
    bad_event["event"] = "reboot".into();
    let mut missing = report(&id, "check");
    missing.as_object_mut().unwrap().remove("channel");
    let mut oversized = body(&report(&id, "check"));
    oversized.splice(1..1, vec![b' '; 9000]);
    let wrong = hex::encode(rand16());
    // (what, body, token, content type, status, kind, the message says)
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        Option<&'a str>,
        &'a str,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed",
            b"{\"version\":1,".to_vec(),
            Some(&s.token),
            json,
            400,
            "bad_report",
            "EOF",
        ),
        (
            "unknown field",
            body(&unknown),
            Some(&s.token),
            json,
            400,
            "bad_report",
            "unknown field `hostname`",
        ),
        (
            "unknown nested field",
            body(&nested),
            Some(&s.token),
            json,
            400,
            "bad_report",
            "unknown field `kernel`",
        ),
        (
            "bad machine id",
            body(&bad_id),
            Some(&s.token),
            json,
            400,
            "bad_report",
            "machine_id",
        ),
        (
            "bad event",
            body(&bad_event),
            Some(&s.token),
            json,
            400,
            "bad_report",
            "unknown variant `reboot`",
        ),
        (
            "missing field",
            body(&missing),
            Some(&s.token),
            json,
            400,
            "bad_report",
            "missing field `channel`",
        ),
        (
            "oversized",
            oversized,
            Some(&s.token),
            json,
            413,
            "too_large",
            "8192 bytes",
        ),
        (
            "wrong token",
            body(&report(&id, "check")),
            Some(&wrong),
            json,
            401,
            "unauthorized",
            "wrong token",
        ),
        (
            "no token",
            body(&report(&id, "check")),
            None,
            json,
            401,
            "unauthorized",
            "Bearer",
        ),
        (
            "not JSON",
            body(&report(&id, "check")),
            Some(&s.token),
            "text/plain",
            415,
            "unsupported_media_type",
            "application/json",
        ),
    ];
    for (what, b, token, ctype, want, kind, says) in cases {
        let (code, v) = s.post(b, token, ctype);
        assert_eq!(code, want, "{what}: {v}");
        assert_eq!(v["error"]["status"], want, "{what}: {v}");
        assert_eq!(v["error"]["kind"], kind, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{what}: {msg:?} should say {says:?}");
        assert_eq!(stored(&s), 1, "{what}: nothing stored");
    }

    // A storm from one machine: 5 a minute are taken (one already was), the rest refused.
    let storm = |ids: Vec<String>| {
        let (url, token) = (format!("{}v1/reports", s.url), s.token.clone());
        s.rt.block_on(async move {
            let http = reqwest::Client::new();
            let sends = ids.into_iter().map(|id| {
                let req = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&report(&id, "check")).unwrap());
                async move { req.send().await.unwrap().status().as_u16() }
            });
            futures_util::future::join_all(sends).await
        })
    };
    let codes = storm(vec![id.clone(); 40]);
    let ok = codes.iter().filter(|c| **c == 202).count() as i64;
    assert!(codes.iter().all(|c| [202, 429].contains(c)), "{codes:?}");
    assert!((4..=5).contains(&ok), "one machine got {ok} of 40 through");
    assert_eq!(stored(&s), 1 + ok, "refused reports are not stored");

    // A storm from 300 machines at once passes the global bound (40/s, bursts of 80).
    let before = stored(&s);
    let codes = storm((0..300).map(|_| hex::encode(rand16())).collect());
    let ok = codes.iter().filter(|c| **c == 202).count() as i64;
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert!(codes.iter().all(|c| [202, 429].contains(c)), "{codes:?}");
    assert!(limited >= 100, "only {limited} of 300 refused");
    assert_eq!(stored(&s), before + ok, "refused reports are not stored");

    // The server keeps serving: after the storm a new machine's report is taken.
    std::thread::sleep(Duration::from_secs(2));
    let (code, v) = s.post(
        body(&report(&hex::encode(rand16()), "boot")),
        Some(&s.token),
        json,
    );
    assert_eq!(code, 202, "{v}");
    assert_eq!(stored(&s), before + ok + 1);
    assert!(s.alive(), "server log:\n{}", s.log());
    let (code, _) = s.get("no/such/page");
    assert_eq!(code, 404);
}

on_both_dbs!(
    bad_input,
    bad_input_is_refused_nothing_stored_and_the_server_keeps_serving
);

fn machines_report_each_step_and_status_counts_them(backend: Backend) {
    // Three machines on v1 take v2 (no waves): `good` boots it and is marked good, `sick` fails
    // its health check and is sent back, `fell` crashes before upd-boot and the boot loader
    // falls back. A fourth machine's server is down: its reports wait in the queue on disk.
    if !require_root() {
        return;
    }
    let s = ReportServer::start(backend, &[]);
    let mut fleet = Fleet::new();
    let mut nodes: Vec<_> = (0..3).map(|_| fleet.node(&[])).collect();
    // The fourth machine, made now: a machine set up with v1's extensions (Node::new's check)
    // must be made before v2 is published.
    let down = fleet.node(&[]);
    for n in &nodes {
        s.enroll(n);
    }
    fleet.add_v2();
    fleet.publish();
    for n in &nodes {
        let text = n.upd_ok(&["update"], 0);
        assert!(text.contains("OS 2.0.0 staged"), "{text}");
    }
    let r = s.release(V2);
    assert_eq!(
        (r["tried"].as_i64(), r["staged"].as_i64()),
        (Some(3), Some(3)),
        "{r}"
    );
    // The three machines fall into wave buckets by fleet position; every one of them in some.
    let in_waves: i64 = r["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| w["tried"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(in_waves, 3, "positions reported: {r}");

    let [good, sick, fell] = &mut nodes[..] else {
        unreachable!()
    };
    assert_eq!(good.reboot(), USR_B);
    // `upd boot` runs before the network: its report waits on disk for the next command.
    let queue = |n: &crate::os::node::Node| n.m.root().join("var/lib/upd/report-queue.json");
    assert!(queue(good).exists(), "the boot report is queued");
    assert_eq!(s.release(V2)["staged"], 3);
    good.upd_ok(&["mark-good"], 0);
    assert!(!queue(good).exists(), "sent with mark-good's");

    assert_eq!(sick.reboot(), USR_B);
    let hd = sick.m.root().join("etc/upd/health.d");
    fs::create_dir_all(&hd).unwrap();
    let check = hd.join("10-app");
    fs::write(&check, "#!/bin/sh\necho app is down >&2\nexit 1\n").unwrap();
    fs::set_permissions(&check, fs::Permissions::from_mode(0o755)).unwrap();
    sick.upd_ok(&["mark-good"], 6);

    assert_eq!(
        fell.boot_disk(),
        USR_B,
        "the one try, spent without upd boot"
    );
    assert_eq!(fell.reboot(), USR_A, "the boot loader fell back");
    fell.upd_ok(&["mark-good"], 0); // as upd-mark-good.service does after every boot

    let r = s.release(V2);
    let counts = |k: &str| r[k].as_i64().unwrap();
    assert_eq!(counts("tried"), 3, "{r}");
    assert_eq!(counts("good"), 1, "{r}");
    assert_eq!(counts("failed"), 1, "{r}");
    assert_eq!(counts("fallen_back"), 1, "{r}");
    assert_eq!(counts("staged") + counts("booted"), 0, "{r}");
    assert_eq!(
        counts("running"),
        2,
        "good and sick (not yet rebooted) boot v2: {r}"
    );
    assert!(
        (r["failure_share"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(r["groups"]["default"]["failed"], 1, "{r}");
    assert_eq!(s.release(V1)["running"], 1, "fell runs v1");
    assert_eq!(s.release(V1)["good"], 1, "fell marked v1 good again");
    let st = s.status();
    assert_eq!(st["machines"], 3, "{st}");
    // Each machine: update, boot, mark-good (the pull at creation was before enrolment).
    assert_eq!(st["reports"], 3 * 3, "{st}");
    let table = s.fleet("status", &["--channel", "stable"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("2.0.0") && text.contains("66.7"), "{text}");

    // The server cannot be reached: reports wait on disk, a full queue drops its oldest, and
    // the next run that reaches the server sends them all, oldest first.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    s.enroll(&down);
    let conf = down.m.root().join("etc/upd/upd.conf");
    let text = fs::read_to_string(&conf)
        .unwrap()
        .replace(&s.url, &closed_url);
    fs::write(&conf, text).unwrap();
    let queue = down.m.root().join("var/lib/upd/report-queue.json");
    let mut old: Vec<serde_json::Value> = (0..64)
        .map(|i| {
            let mut r = report(&down.machine_id(), "check");
            r["time"] = format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60).into();
            r
        })
        .collect();
    fs::write(&queue, serde_json::to_vec(&old).unwrap()).unwrap();
    let out = down.upd(&["check"], &[]);
    let text = crate::pull::rig::text_of(&out);
    assert_eq!(
        out.status.code(),
        Some(100),
        "a report that cannot go changes nothing (100: v2 is there to take):\n{text}"
    );
    assert!(text.contains("fleet report not sent"), "{text}");
    let q: Vec<serde_json::Value> = serde_json::from_slice(&fs::read(&queue).unwrap()).unwrap();
    assert_eq!(q.len(), 64, "capped");
    assert_eq!(q[0], old[1], "the oldest was dropped");
    assert_eq!(q[63]["event"], "check");
    old.remove(0);

    // A server that takes the connection and never answers: the run still ends promptly.
    let hang = TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/", hang.local_addr().unwrap());
    let text = fs::read_to_string(&conf)
        .unwrap()
        .replace(&closed_url, &hang_url);
    fs::write(&conf, text).unwrap();
    let t = Instant::now();
    down.upd_ok(&["check"], 100);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    drop(hang);

    // A token file others may read is refused, with the file and its mode named.
    let text = fs::read_to_string(&conf)
        .unwrap()
        .replace(&hang_url, &s.url);
    fs::write(&conf, text).unwrap();
    let token = down.m.root().join("etc/upd/report.token");
    fs::set_permissions(&token, fs::Permissions::from_mode(0o644)).unwrap();
    let text = down.upd_ok(&["check"], 100);
    assert!(
        text.contains("report.token: mode 0644") && text.contains("chmod 0600"),
        "{text}"
    );
    assert_eq!(
        s.status()["machines"],
        3,
        "nothing sent with a readable token"
    );

    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    // The queue goes at the next run that reaches the server, or over a few runs when the 2 s
    // budget cuts a run short (a loaded machine, SQLite syncing each insert): each run adds its
    // own report, and nothing is lost or sent twice.
    let reports_before = stored(&s);
    let mut runs: i64 = 0;
    while runs < 5 && (runs == 0 || queue.exists()) {
        down.upd_ok(&["check"], 100);
        runs += 1;
    }
    assert!(!queue.exists(), "the queue is sent and removed");
    assert_eq!(
        stored(&s),
        reports_before + 64 + (runs - 1),
        "the queue is capped at 64 and sent whole ({runs} runs)"
    );
    assert_eq!(s.status()["machines"], 4);
    let st = s.release(V1);
    assert_eq!(st["running"], 2, "{st}");
}

on_both_dbs!(machines, machines_report_each_step_and_status_counts_them);
