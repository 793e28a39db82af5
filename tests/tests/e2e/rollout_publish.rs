//! A release engineer's day with the real `upd-channel`: alpha → beta → stable by promotion,
//! waves with the share of the fleet reported, pause, resume, withdraw with a redirect, a barrier,
//! and every bad command refused with a clear message and the draft left byte for byte as it was.

use std::ops::Deref;
use std::process::Output;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{Duration, SecondsFormat, Utc};
use upd_tests::bins::ChannelWorkdir;
use upd_tests::images::{build_os_usr, build_sysext, OsSpec, SysextSpec};

/// The release engineer's workspace: keys, built images and the repository `repo/`.
struct Desk(ChannelWorkdir);

impl Deref for Desk {
    type Target = ChannelWorkdir;
    fn deref(&self) -> &ChannelWorkdir {
        &self.0
    }
}

impl Desk {
    /// `upd-channel CMD --repo REPO ARGS...`, which must succeed; its stdout.
    fn ok(&self, cmd: &str, args: &[&str]) -> String {
        let out = self.with_repo(cmd, args);
        assert!(
            out.status.success(),
            "upd-channel {cmd} {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn with_repo(&self, cmd: &str, args: &[&str]) -> Output {
        let repo = self.repo();
        let mut all = vec![cmd, "--repo", &repo];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// A command that must fail without touching `channel`'s draft; its stderr.
    fn refused(&self, channel: &str, cmd: &str, args: &[&str]) -> String {
        let draft = self.path(&format!("repo/channels/{channel}/draft.json"));
        let before = std::fs::read(&draft).expect("read draft");
        let out = self.with_repo(cmd, args);
        assert!(
            !out.status.success(),
            "upd-channel {cmd} {args:?} succeeded:\n{}",
            text(&out.stdout)
        );
        assert_eq!(
            std::fs::read(&draft).expect("read draft"),
            before,
            "upd-channel {cmd} {args:?} changed the {channel} draft"
        );
        text(&out.stderr)
    }

    fn sign(&self, channel: &str) -> String {
        self.ok("sign", &["--channel", channel, "--key", "ch.key"])
    }

    /// `verify` of one channel, which must pass; its report.
    fn verify(&self, channel: &str) -> String {
        let out = self.ok("verify", &["--channel", channel]);
        assert!(out.contains(&format!("channel {channel}: OK")), "{out}");
        out
    }

    /// The signed payload of a channel's manifest, decoded (verify checked the signature).
    fn signed(&self, channel: &str) -> serde_json::Value {
        let path = self.path(&format!("repo/channels/{channel}/manifest.json"));
        let env: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let payload = STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
        serde_json::from_slice(&payload).unwrap()
    }

    fn draft(&self, channel: &str) -> serde_json::Value {
        let path = self.path(&format!("repo/channels/{channel}/draft.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Keys, channels alpha/beta/stable, releases 1.0.0 and 2.0.0 (real squashfs and erofs images)
/// added to alpha and signed.
fn alpha_with_two_releases() -> Desk {
    let desk = Desk(ChannelWorkdir::new());
    for key in ["root.key", "ch.key"] {
        assert!(desk.run(&["keygen", "--out", key]).status.success());
    }
    desk.ok(
        "init",
        &[
            "--root-key",
            "root.key",
            "--channel-key",
            "ch.key",
            "--channel",
            "alpha",
            "--channel",
            "beta",
            "--channel",
            "stable",
        ],
    );
    let build = desk.path("build");
    std::fs::create_dir_all(&build).unwrap();
    for (os_version, hello, world) in [("1.0.0", "1.0.0", "1.0.0"), ("2.0.0", "2.0.0", "2.1.0")] {
        let os = build_os_usr(&OsSpec::new("testos", os_version), &build);
        let hello = build_sysext(
            &SysextSpec::new("hello", hello, "testos", os_version),
            &build,
        );
        let world = SysextSpec::new("world", world, "testos", os_version).erofs();
        let world = build_sysext(&world, &build);
        let (os, hello, world) = (
            os.display().to_string(),
            format!("hello={}", hello.display()),
            format!("world={}", world.display()),
        );
        let args = [
            "--channel",
            "alpha",
            "--os-image",
            &os,
            "--ext",
            &hello,
            "--ext",
            &world,
        ];
        desk.ok("add-release", &args);
    }
    assert!(desk.sign("alpha").contains("serial 1"));
    desk
}

/// Promotes `version` from one channel to the next; the target still needs its own `sign`.
fn promote(desk: &Desk, from: &str, to: &str, version: &str) -> String {
    desk.ok(
        "promote",
        &["--from", from, "--to", to, "--version", version],
    )
}

#[test]
fn release_travels_alpha_beta_stable_and_is_rolled_back() {
    // A release engineer promotes 2.0.0 (and the safe 1.0.0) through beta to stable, rolls it
    // out in waves, pauses, resumes, withdraws it with a redirect to 1.0.0 and sets a barrier.
    let desk = alpha_with_two_releases();
    promote_through_channels(&desk);
    waves_pause_and_resume(&desk);
    withdraw_and_barrier(&desk);
}

/// alpha → beta → stable: each channel re-signed under its own name, images shared, not copied.
fn promote_through_channels(desk: &Desk) {
    for (from, to) in [("alpha", "beta"), ("beta", "stable")] {
        for version in ["1.0.0", "2.0.0"] {
            let out = promote(desk, from, to, version);
            assert!(
                out.contains(&format!(
                    "release {version} promoted from '{from}' to '{to}'"
                )),
                "{out}"
            );
        }
        assert!(desk.sign(to).contains("serial 1"));
        let report = desk.verify(to);
        assert!(
            report.contains("release 2.0.0: images/os/testos-2.0.0.raw [hello 2.0.0, world 2.1.0]"),
            "{report}"
        );
    }
    let (alpha, stable) = (desk.signed("alpha"), desk.signed("stable"));
    assert_eq!(stable["channel"], "stable");
    assert_eq!(desk.signed("beta")["channel"], "beta");
    assert_eq!(stable["releases"][1]["os"], alpha["releases"][1]["os"]);
    assert_eq!(
        stable["releases"][1]["extensions"],
        alpha["releases"][1]["extensions"]
    );
    // One copy of each image in the repository, named by all three channels.
    // (Each image has its chunk index `<image>.chunks` next to it.)
    let os_images: Vec<_> = std::fs::read_dir(desk.path("repo/images/os"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "raw"))
        .collect();
    assert_eq!(os_images.len(), 2);
    // Promoting again is harmless: the same content is already there.
    let out = promote(desk, "beta", "stable", "2.0.0");
    assert!(
        out.contains("already present with the same content"),
        "{out}"
    );
    assert!(desk.sign("stable").contains("serial 2"));
    assert_eq!(desk.signed("stable")["serial"], 2);
}

/// Waves on stable (started 12 hours ago) and on beta (`--start now`), reported by `status`.
fn waves_pause_and_resume(desk: &Desk) {
    let start = (Utc::now() - Duration::hours(12)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let on_stable = ["--channel", "stable", "--version", "2.0.0"];
    let mut args = on_stable.to_vec();
    args.extend(["--start", &start, "--step", "0:10", "24:50", "48:100"]);
    desk.ok("rollout", &args);
    let status = desk.ok("status", &["--channel", "stable"]);
    // 10 % at the start, 50 % after a day: 30 % at half a day.
    assert!(
        status.contains("release 2.0.0: rollout 30.0% of the fleet now"),
        "{status}"
    );
    assert!(
        status.contains("release 1.0.0: no waves: every machine"),
        "{status}"
    );
    assert!(
        status.contains("the draft has unsigned changes"),
        "{status}"
    );
    desk.sign("stable");
    assert!(desk
        .ok("status", &["--channel", "stable"])
        .contains("the draft is signed"));
    assert!(desk
        .verify("stable")
        .contains("rollout 30.0% of the fleet now"));
    let beta = [
        "--channel",
        "beta",
        "--version",
        "2.0.0",
        "--start",
        "now",
        "--step",
        "0:5",
        "72:100",
    ];
    desk.ok("rollout", &beta);
    let status = desk.ok("status", &["--channel", "beta"]);
    assert!(
        status.contains("release 2.0.0: rollout 5.0% of the fleet now"),
        "{status}"
    );
    assert!(
        desk.draft("alpha")["releases"][1].get("rollout").is_none(),
        "alpha keeps its own waves"
    );

    desk.ok("pause", &on_stable);
    desk.sign("stable");
    let signed = desk.signed("stable");
    assert_eq!(signed["releases"][1]["paused"], true);
    assert_eq!(
        signed["releases"][1]["rollout"]["steps"][2]["percent"],
        100.0
    );
    assert!(desk.verify("stable").contains("release 2.0.0 paused:"));
    let status = desk.ok("status", &["--channel", "stable"]);
    assert!(status.contains("paused: no new machine starts"), "{status}");
    desk.ok("resume", &on_stable);
    desk.sign("stable");
    assert!(desk.signed("stable")["releases"][1].get("paused").is_none());
}

/// Refusals first (each leaves the draft as it was), then the withdrawal and the barrier.
fn withdraw_and_barrier(desk: &Desk) {
    let v2 = ["--channel", "stable", "--version", "2.0.0"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut a = v2.to_vec();
        a.extend_from_slice(extra);
        a
    };
    let err = desk.refused("stable", "withdraw", &with(&["--redirect-to", "9.9.9"]));
    assert!(
        err.contains("release 2.0.0: redirect_to 9.9.9 is not a release of this channel"),
        "{err}"
    );
    let err = desk.refused(
        "stable",
        "promote",
        &["--from", "alpha", "--to", "stable", "--version", "3.0.0"],
    );
    assert!(
        err.contains("channel 'alpha' has no release 3.0.0"),
        "{err}"
    );
    let err = desk.refused(
        "stable",
        "rollout",
        &with(&["--start", "now", "--step", "0:50", "24:10"]),
    );
    assert!(
        err.contains("rollout step 2 (24:10): 10% is less than the previous step's 50%"),
        "{err}"
    );
    let err = desk.refused(
        "stable",
        "rollout",
        &with(&["--start", "now", "--step", "0:150"]),
    );
    assert!(
        err.contains("rollout step 1 (0:150): percent 150 is outside 0..100"),
        "{err}"
    );
    let err = desk.refused(
        "stable",
        "rollout",
        &with(&["--start", "soon", "--step", "0:10"]),
    );
    assert!(
        err.contains("'soon' is neither `now` nor an RFC 3339 time"),
        "{err}"
    );
    let err = desk.refused(
        "stable",
        "barrier",
        &["--channel", "stable", "--version", "0.1.0"],
    );
    assert!(
        err.contains("channel 'stable' has no release 0.1.0"),
        "{err}"
    );

    desk.ok("withdraw", &with(&["--redirect-to", "1.0.0"]));
    desk.ok("barrier", &["--channel", "stable", "--version", "1.0.0"]);
    // The safe release of a redirect cannot be withdrawn in turn.
    let err = desk.refused(
        "stable",
        "withdraw",
        &["--channel", "stable", "--version", "1.0.0"],
    );
    assert!(
        err.contains("redirect_to 1.0.0 is itself withdrawn"),
        "{err}"
    );
    desk.sign("stable");
    let report = desk.verify("stable");
    assert!(
        report.contains("release 2.0.0 withdrawn redirect_to=1.0.0:"),
        "{report}"
    );
    assert!(report.contains("release 1.0.0 barrier:"), "{report}");
    let signed = desk.signed("stable");
    assert_eq!(signed["releases"][1]["redirect_to"], "1.0.0");
    assert_eq!(signed["releases"][0]["barrier"], true);
    assert_eq!(signed["serial"], 6);
    desk.ok(
        "barrier",
        &["--channel", "stable", "--version", "1.0.0", "--clear"],
    );
    assert!(desk.draft("stable")["releases"][0].get("barrier").is_none());
}
