//! The real `upd-channel` binary end to end: keys, root, releases read from real images, signing,
//! serving over HTTP, verification, and each tampered or unsafe variant refused with a clear message.

use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use upd_channels::chunks;
use upd_tests::bins::{self, ChannelWorkdir};
use upd_tests::images::{build_os_usr, build_sysext, sha256_file, OsSpec, SysextSpec};

/// A publisher's workspace: a temp directory with keys, images and the repository `repo/`.
struct Publisher(ChannelWorkdir);

impl Deref for Publisher {
    type Target = ChannelWorkdir;
    fn deref(&self) -> &ChannelWorkdir {
        &self.0
    }
}

impl Publisher {
    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "upd-channel {args:?} failed:\n{stdout}{stderr}"
        );
        stdout
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            !out.status.success(),
            "upd-channel {args:?} succeeded:\n{stdout}"
        );
        stderr
    }

    fn keygen(&self, name: &str) -> String {
        self.ok(&["keygen", "--out", name]);
        name.to_string()
    }

    fn verify(&self, channel: &str, extra: &[&str]) -> Output {
        let repo = self.repo();
        let mut args = vec!["verify", "--repo", &repo, "--channel", channel];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    /// `add-release` of one build `ext` (`NAME=FILE`) to release 1.0.0 of `stable`, through
    /// `run` ([`Publisher::ok`] or [`Publisher::fails`]).
    fn add_to_stable(&self, ext: &str, run: fn(&Self, &[&str]) -> String) -> String {
        let (repo, os) = (
            self.repo(),
            self.path("build/usr-1.0.0.img").display().to_string(),
        );
        let args = [
            "add-release",
            "--repo",
            &repo,
            "--channel",
            "stable",
            "--os-image",
            &os,
            "--ext",
            ext,
        ];
        run(self, &args)
    }

    fn manifest(&self, channel: &str) -> PathBuf {
        self.path(&format!("repo/channels/{channel}/manifest.json"))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn refused(out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "verify accepted it:\n{}",
        text(&out.stdout)
    );
    stderr
}

/// Images for OS 1.0.0: the USR image, a squashfs `hello` and an erofs `world` extension.
fn images(p: &Publisher) -> (PathBuf, PathBuf, PathBuf) {
    let out = p.path("build");
    std::fs::create_dir_all(&out).unwrap();
    let os = build_os_usr(&OsSpec::new("testos", "1.0.0"), &out);
    let hello = build_sysext(&SysextSpec::new("hello", "1.0.0", "testos", "1.0.0"), &out);
    let world = build_sysext(
        &SysextSpec::new("world", "2.0.0", "testos", "1.0.0").erofs(),
        &out,
    );
    (os, hello, world)
}

/// A repository with channels `stable` and `beta`, release 1.0.0 with both extensions in each,
/// channel keys `ch1.key` (and `ch2.key`), `channel_threshold` of them required; not signed yet.
fn published(channel_threshold: u32) -> Publisher {
    let p = Publisher(ChannelWorkdir::new());
    let (os, hello, world) = images(&p);
    let root = p.keygen("root.key");
    let (ch1, ch2) = (p.keygen("ch1.key"), p.keygen("ch2.key"));
    let repo = p.repo();
    let t = channel_threshold.to_string();
    p.ok(&[
        "init",
        "--repo",
        &repo,
        "--root-key",
        &root,
        "--channel-key",
        &ch1,
        &ch2,
        "--channel-threshold",
        &t,
        "--channel",
        "stable",
        "--channel",
        "beta",
    ]);
    let hello = format!("hello={}", hello.display());
    let world = format!("world={}", world.display());
    for channel in ["stable", "beta"] {
        let os = os.display().to_string();
        p.ok(&[
            "add-release",
            "--repo",
            &repo,
            "--channel",
            channel,
            "--os-image",
            &os,
            "--ext",
            &hello,
            "--ext",
            &world,
        ]);
    }
    p
}

fn sign(p: &Publisher, channel: &str, keys: &[&str], extra: &[&str]) -> String {
    let repo = p.repo();
    let mut args = vec!["sign", "--repo", &repo, "--channel", channel, "--key"];
    args.extend_from_slice(keys);
    args.extend_from_slice(extra);
    p.ok(&args)
}

/// Serves the repository with `upd-channel serve` on a free port; killed on drop.
struct Server(Child, String);

impl Server {
    fn start(p: &Publisher) -> Self {
        let mut child = Command::new(bins::upd_channel())
            .args(["serve", "--repo", &p.repo(), "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start upd-channel serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.starts_with("http://127.0.0.1:"),
            "serve printed {line:?}"
        );
        Server(child, line.trim().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn publish_and_verify_over_http() {
    // A publisher builds real squashfs/erofs images, publishes release 1.0.0 and a machine's
    // view of it over HTTP verifies; the manifest describes the images byte for byte.
    let p = published(1);
    let out = sign(&p, "stable", &["ch1.key"], &[]);
    assert!(out.contains("serial 1"), "{out}");
    let server = Server::start(&p);
    let out = p.ok(&["verify", "--url", &server.1, "--channel", "stable"]);
    assert!(
        out.contains("channel stable: OK") && out.contains("serial 1"),
        "{out}"
    );
    assert!(
        out.contains("release 1.0.0") && out.contains("hello 1.0.0, world 2.0.0"),
        "{out}"
    );
    let draft: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path("repo/channels/stable/draft.json")).unwrap())
            .unwrap();
    let release = &draft["releases"][0];
    assert_eq!(release["os"]["identity"]["version_id"], "1.0.0");
    let os_path = release["os"]["image"]["path"].as_str().unwrap();
    assert_eq!(os_path, "images/os/testos-1.0.0.raw");
    let world = &release["extensions"][1];
    assert_eq!(
        world["image"]["path"],
        "images/ext/world/world-2.0.0-1.0.0.raw"
    );
    let world_file = p
        .path("repo")
        .join(world["image"]["path"].as_str().unwrap());
    assert_eq!(world["image"]["sha256"], sha256_file(&world_file));
    // Each image has its chunk index next to it, named with its size and hash in the entry.
    let ix = &world["image"]["chunk_index"];
    assert_eq!(
        ix["path"], "images/ext/world/world-2.0.0-1.0.0.raw.chunks",
        "{world}"
    );
    let ix_bytes = std::fs::read(p.path("repo").join(ix["path"].as_str().unwrap())).unwrap();
    assert_eq!(ix["size"], ix_bytes.len() as u64);
    assert_eq!(ix["sha256"], hex::encode(chunks::sha256(&ix_bytes)));
    let image_bytes = std::fs::read(&world_file).unwrap();
    let index = chunks::ChunkIndex::from_bytes(&ix_bytes, image_bytes.len() as u64).unwrap();
    assert_eq!(index.params, chunks::DEFAULT_PARAMS);
    for c in &index.chunks {
        let bytes = &image_bytes[c.offset as usize..c.end() as usize];
        assert_eq!(chunks::sha256(bytes), c.sha256, "chunk at {}", c.offset);
    }
    assert!(release["os"]["image"]["chunk_index"]["path"]
        .as_str()
        .is_some_and(|p| p.ends_with(".raw.chunks")));
    // Signing again bumps the serial; a second build of hello joins the same release.
    let hello2 = build_sysext(
        &SysextSpec::new("hello", "1.0.1", "testos", "1.0.0"),
        &p.path("build"),
    );
    let ext = format!("hello={}", hello2.display());
    let out = p.add_to_stable(&ext, Publisher::ok);
    assert!(
        out.contains("added 1 extension build(s) to release 1.0.0"),
        "{out}"
    );
    assert!(sign(&p, "stable", &["ch1.key"], &[]).contains("serial 2"));
    let out = p.ok(&["verify", "--url", &server.1, "--channel", "stable"]);
    assert!(
        out.contains("serial 2") && out.contains("hello 1.0.1"),
        "{out}"
    );
}

#[test]
fn flipped_byte_in_manifest_is_refused() {
    // One character of the signed payload changed on the server: the signature no longer holds.
    let p = published(1);
    sign(&p, "stable", &["ch1.key"], &[]);
    let path = p.manifest("stable");
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut payload = env["payload"].as_str().unwrap().to_string();
    let i = payload.len() / 2;
    let flipped = if &payload[i..=i] == "A" { "B" } else { "A" };
    payload.replace_range(i..=i, flipped);
    env["payload"] = payload.into();
    std::fs::write(&path, serde_json::to_vec(&env).unwrap()).unwrap();
    let err = refused(&p.verify("stable", &[]));
    assert!(
        err.contains("signature check failed") && err.contains("0 valid signature"),
        "{err}"
    );
}

#[test]
fn manifest_signed_by_an_unknown_key_is_refused() {
    // A key that is not in the root signs the channel.
    let p = published(1);
    let rogue = p.keygen("rogue.key");
    sign(&p, "stable", &[&rogue], &[]);
    let err = refused(&p.verify("stable", &[]));
    assert!(
        err.contains("0 valid signature(s) from trusted channel keys, 1 required"),
        "{err}"
    );
}

#[test]
fn threshold_two_needs_a_co_signature() {
    // The root requires 2 channel signatures: one is refused, a co-signature makes it valid.
    let p = published(2);
    let out = sign(&p, "stable", &["ch1.key"], &[]);
    assert!(out.contains("2 required"), "{out}");
    let err = refused(&p.verify("stable", &[]));
    assert!(
        err.contains("1 valid signature(s) from trusted channel keys, 2 required"),
        "{err}"
    );
    // The same key twice does not count twice.
    sign(&p, "stable", &["ch1.key"], &["--add-signature"]);
    refused(&p.verify("stable", &[]));
    sign(&p, "stable", &["ch2.key"], &["--add-signature"]);
    let out = p.verify("stable", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn expired_manifest_is_refused() {
    // Signed with zero days of validity: machines must refuse a frozen channel.
    let p = published(1);
    sign(&p, "stable", &["ch1.key"], &["--expires-days", "0"]);
    let err = refused(&p.verify("stable", &[]));
    assert!(err.contains("expired") && err.contains("frozen"), "{err}");
}

#[test]
fn replayed_older_manifest_is_refused() {
    // An attacker serves the serial-1 manifest to a machine that has already seen serial 2.
    let p = published(1);
    sign(&p, "stable", &["ch1.key"], &[]);
    let old = std::fs::read(p.manifest("stable")).unwrap();
    assert!(sign(&p, "stable", &["ch1.key"], &[]).contains("serial 2"));
    assert!(p
        .verify("stable", &["--highest-serial", "2"])
        .status
        .success());
    std::fs::write(p.manifest("stable"), old).unwrap();
    let err = refused(&p.verify("stable", &["--highest-serial", "2"]));
    assert!(
        err.contains("serial 1 is lower than 2") && err.contains("rollback"),
        "{err}"
    );
}

#[test]
fn another_channels_manifest_is_refused() {
    // beta's validly signed manifest copied over stable's (mix-and-match).
    let p = published(1);
    sign(&p, "stable", &["ch1.key"], &[]);
    sign(&p, "beta", &["ch1.key"], &[]);
    std::fs::copy(p.manifest("beta"), p.manifest("stable")).unwrap();
    let err = refused(&p.verify("stable", &[]));
    assert!(
        err.contains("is for channel 'beta'") && err.contains("follows 'stable'"),
        "{err}"
    );
}

#[test]
fn oversized_manifest_is_refused_over_http() {
    // The server answers with a manifest far over the limit (endless data).
    let p = published(1);
    sign(&p, "stable", &["ch1.key"], &[]);
    let mut big = b"{\"payload\":\"".to_vec();
    big.resize(20 << 20, b'A');
    std::fs::write(p.manifest("stable"), big).unwrap();
    let server = Server::start(&p);
    let err = refused(&p.run(&["verify", "--url", &server.1, "--channel", "stable"]));
    assert!(err.contains("limit"), "{err}");
}

#[test]
fn extension_for_another_version_id_is_refused() {
    // An extension built for VERSION_ID 2.0.0 offered for OS 1.0.0: refused, nothing written.
    let p = published(1);
    let stray = build_sysext(
        &SysextSpec::new("hello", "9.0.0", "testos", "2.0.0"),
        &p.path("build"),
    );
    let draft = std::fs::read(p.path("repo/channels/stable/draft.json")).unwrap();
    let ext = format!("hello={}", stray.display());
    let err = p.add_to_stable(&ext, Publisher::fails);
    assert!(
        err.contains("VERSION_ID 2.0.0, the host has 1.0.0"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(p.path("repo/channels/stable/draft.json")).unwrap(),
        draft
    );
    assert!(!p
        .path("repo/images/ext/hello/hello-9.0.0-1.0.0.raw")
        .exists());
}

#[test]
fn unsafe_extension_name_is_refused() {
    // `--ext ../x=...` would climb out of images/ext: refused at the command line.
    let p = published(1);
    let hello = p.path("build/hello-1.0.0.raw").display().to_string();
    let ext = format!("../x={hello}");
    let err = p.add_to_stable(&ext, Publisher::fails);
    assert!(
        err.contains("extension name") && err.contains("'../x'"),
        "{err}"
    );
    assert!(!p.path("repo/images/x").exists() && !p.path("repo/images/ext/x").exists());
}

#[test]
fn rotated_root_is_followed_and_the_old_channel_key_dropped() {
    // Root 2 replaces the channel key: verify follows roots/2.root.json from root 1, and a
    // manifest signed with the old channel key is then refused.
    let p = published(1);
    let new_root = p.keygen("root2.key");
    let new_ch = p.keygen("ch3.key");
    let repo = p.repo();
    p.ok(&[
        "rotate-root",
        "--repo",
        &repo,
        "--old-key",
        "root.key",
        "--new-root-key",
        &new_root,
        "--channel-key",
        &new_ch,
    ]);
    sign(&p, "stable", &["ch1.key"], &[]);
    let err = refused(&p.verify("stable", &[]));
    assert!(err.contains("0 valid signature(s)"), "{err}");
    sign(&p, "stable", &[&new_ch], &[]);
    let out = p.verify("stable", &[]);
    assert!(
        text(&out.stdout).contains("root version 2"),
        "{}",
        text(&out.stderr)
    );
    // A root signed only by the new keys does not rotate from root 2.
    let err = p.fails(&[
        "rotate-root",
        "--repo",
        &repo,
        "--old-key",
        "ch1.key",
        "--new-root-key",
        "ch1.key",
    ]);
    assert!(err.contains("does not rotate from version 2"), "{err}");
}

#[test]
fn rollout_pause_withdraw_and_promote_edit_the_draft() {
    // Release 1.0.0 signed on beta is promoted to an emptied stable, rolled out in waves,
    // paused, and withdrawn; a redirect to a release stable does not have is refused.
    let p = published(1);
    let repo = p.repo();
    sign(&p, "beta", &["ch1.key"], &[]);
    let stable_draft = p.path("repo/channels/stable/draft.json");
    let mut draft: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stable_draft).unwrap()).unwrap();
    draft["releases"] = serde_json::json!([]);
    std::fs::write(&stable_draft, serde_json::to_vec(&draft).unwrap()).unwrap();
    let out = p.ok(&[
        "promote",
        "--repo",
        &repo,
        "--from",
        "beta",
        "--to",
        "stable",
        "--version",
        "1.0.0",
    ]);
    assert!(out.contains("promoted from 'beta' to 'stable'"), "{out}");
    let edit = |cmd: &str, extra: &[&str]| {
        let mut args = vec![
            cmd,
            "--repo",
            &repo,
            "--channel",
            "stable",
            "--version",
            "1.0.0",
        ];
        args.extend_from_slice(extra);
        p.run(&args)
    };
    let waves = [
        "--start",
        "2026-01-01T00:00:00Z",
        "--step",
        "0:10",
        "24:100",
    ];
    assert!(edit("rollout", &waves).status.success());
    let bad = edit(
        "rollout",
        &["--start", "2026-01-01T00:00:00Z", "--step", "0:50", "24:10"],
    );
    assert!(
        text(&bad.stderr).contains("rollout steps must grow"),
        "{}",
        text(&bad.stderr)
    );
    assert!(edit("pause", &[]).status.success());
    let bad = edit("withdraw", &["--redirect-to", "0.9.0"]);
    assert!(
        text(&bad.stderr).contains("redirect_to 0.9.0 is not a release of this channel"),
        "{}",
        text(&bad.stderr)
    );
    assert!(edit("withdraw", &[]).status.success());
    sign(&p, "stable", &["ch1.key"], &[]);
    let out = p.ok(&["verify", "--repo", &repo, "--channel", "stable"]);
    assert!(out.contains("release 1.0.0 paused withdrawn"), "{out}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&stable_draft).unwrap()).unwrap();
    assert_eq!(m["releases"][0]["rollout"]["steps"][1]["percent"], 100.0);
}
