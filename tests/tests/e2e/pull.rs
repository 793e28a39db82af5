//! `upd pull` end to end: the real binary on sandbox machines merging with the real systemd-sysext, a signed
//! channel served over HTTP with injected faults, refusals, resume, SIGKILL at every switch step, lock, full disk.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use upd_tests::channel::Channel;
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::images::{OsSpec, SysextSpec};
use upd_tests::sandbox::{require_root, Machine};

const OS_ID: &str = "updos";
const OS_VERSION: &str = "1.0.0";
const MIB: u64 = 1 << 20;

/// The `upd` binary of this build profile, built once if cargo test did not build it.
fn upd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let bin = profile_dir.join("upd");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "upd", "--bin", "upd"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the upd binary");
        assert!(status.success(), "cargo build -p upd failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

fn os() -> OsSpec {
    OsSpec::new(OS_ID, OS_VERSION)
}

fn ext(name: &str, version: &str) -> SysextSpec {
    SysextSpec::new(name, version, OS_ID, OS_VERSION)
}

/// A channel server, a channel and one sandbox machine following it.
struct Rig {
    server: FaultServer,
    ch: Channel,
    m: Machine,
    _rt: tokio::runtime::Runtime,
}

impl Rig {
    /// Channel `stable` with OS release 1.0.0 (no extensions yet), served; a machine running that OS.
    fn new() -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = rt.block_on(FaultServer::start()).expect("start server");
        let mut ch = Channel::new("stable");
        ch.add_os_release(OS_VERSION, &os());
        let m = Machine::new(&os());
        let rig = Rig {
            server,
            ch,
            m,
            _rt: rt,
        };
        rig.install(&[]);
        rig
    }

    /// Write the shipped root and upd.conf into the machine (`extra` lines appended).
    fn install(&self, extra: &[&str]) {
        let root = self.m.root();
        let keys = root.join("usr/share/upd/keys");
        fs::create_dir_all(&keys).unwrap();
        fs::write(keys.join("root.json"), self.ch.root_json()).unwrap();
        fs::create_dir_all(root.join("etc/upd")).unwrap();
        let mut conf = format!(
            "SERVER=http://{}\nCHANNEL=stable\nEXTENSIONS=hello world\nSYSEXT_BIN={}\nSTALL_TIMEOUT_SECS=5\n",
            self.server.addr(),
            self.m.sysext_bin().display()
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        fs::write(root.join("etc/upd/upd.conf"), conf).unwrap();
    }

    /// Publish the manifest being edited and serve the whole repository (faults and counters reset).
    fn publish(&mut self) -> Vec<u8> {
        let env = self.ch.publish();
        self.sync();
        env
    }

    /// Serve every file of the repository as it is now, without faults.
    fn sync(&self) {
        for (url, file) in self.ch.files() {
            self.server.put_file(&url, file, Fault::Normal).unwrap();
        }
    }

    /// The URL path of the image of build `name` `version` of the OS release.
    fn image_url(&mut self, name: &str, version: &str) -> (String, u64) {
        let v = semver::Version::parse(version).unwrap();
        let b = self
            .ch
            .release_mut(OS_VERSION)
            .extensions
            .iter()
            .find(|b| b.name.as_str() == name && b.version == v)
            .expect("build listed")
            .clone();
        (format!("/{}", b.image.path), b.image.size)
    }

    /// Run the real upd inside the machine: `upd --root ROOT ARGS`, with `env` set.
    fn upd(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.upd_cmd(args, env).output().expect("run upd")
    }

    fn upd_cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.m.pid().to_string())
            .args(["-m", "--"])
            .arg(upd_bin())
            .arg("--root")
            .arg(self.m.root())
            .args(args)
            .env("UPD_LOG", "info")
            .envs(env.iter().copied());
        cmd
    }

    /// Run upd and insist on exit code `code`; returns stdout + stderr.
    fn upd_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.upd(args, &[]);
        let text = text_of(&out);
        assert_eq!(out.status.code(), Some(code), "upd {args:?}:\n{text}");
        text
    }

    /// Merged extension name → extension-release content, as the machine sees it.
    fn merged(&self) -> BTreeMap<String, String> {
        let dir = self.m.ns_root().join("usr/lib/extension-release.d");
        self.m
            .merged_names()
            .into_iter()
            .map(|n| {
                let c = fs::read_to_string(dir.join(format!("extension-release.{n}"))).unwrap();
                (n, c)
            })
            .collect()
    }

    /// Links, the state's active generation and the merged set.
    fn snapshot(&self) -> Snapshot {
        let root = self.m.root();
        let mut links = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(root.join("etc/extensions")) {
            for e in rd.flatten() {
                let t = fs::read_link(e.path()).map(|t| t.display().to_string());
                links.insert(e.file_name().to_string_lossy().into_owned(), t.ok());
            }
        }
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("var/lib/upd/state.json")).unwrap())
                .unwrap();
        Snapshot {
            links,
            active: state["active"].clone(),
            merged: self.merged(),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    links: BTreeMap<String, Option<String>>,
    active: serde_json::Value,
    merged: BTreeMap<String, String>,
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The extension-release content `spec` builds, as a string.
fn release_of(spec: &SysextSpec) -> String {
    String::from_utf8(spec.release_content()).unwrap()
}

/// A machine following a channel with hello 1.0.0 (squashfs) and world 1.0.0 (erofs), pulled and merged.
fn rig_at_v1() -> Rig {
    let mut rig = Rig::new();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.0.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.merged_names(), ["hello", "world"]);
    rig
}

#[test]
fn pull_merges_updates_and_keeps_previous_for_gc() {
    // A channel with OS 1.0.0 and hello 1.0.0 (squashfs) + world 1.0.0 (erofs); a fresh machine pulls, then
    // hello 1.1.0 is published for the same OS and pulled; gc keeps the active and previous images.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
    assert_eq!(rig.m.run_program("world").trim(), "world 1.0.0");
    let out = rig.upd(&["status", "--json"], &[]);
    assert!(out.status.success(), "{}", text_of(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let active = &status["active"]["extensions"];
    assert_eq!(active["hello"]["version"], "1.0.0", "{status}");
    assert_eq!(active["world"]["version"], "1.0.0", "{status}");

    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let check = rig.upd(&["check", "--json"], &[]);
    assert_eq!(check.status.code(), Some(100), "{}", text_of(&check));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let hello = report["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "hello")
        .unwrap();
    assert_eq!(hello["candidate"], "1.1.0", "{report}");
    assert_eq!(hello["installed"], "1.0.0", "{report}");

    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("hello: 1.0.0 -> 1.1.0"), "{out}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
    assert_eq!(rig.m.run_program("world").trim(), "world 1.0.0");
    let again = rig.upd_ok(&["pull"], 0);
    assert!(again.contains("up to date"), "{again}");
    rig.upd_ok(&["check"], 0);

    // A stray image no generation uses goes; active (hello 1.1.0, world) and previous (hello 1.0.0) stay.
    let store = rig.m.root().join("var/lib/upd/images");
    fs::write(store.join("hello/hello-0.9.0-000000000000.raw"), b"old").unwrap();
    rig.upd_ok(&["gc"], 0);
    let mut left: Vec<String> = ["hello", "world"]
        .iter()
        .flat_map(|n| fs::read_dir(store.join(n)).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left[0].starts_with("hello-1.0.0-") && left[1].starts_with("hello-1.1.0-"));
    assert!(left[2].starts_with("world-1.0.0-"), "{left:?}");
    assert_eq!(rig.m.merged_names(), ["hello", "world"]);
}

/// Flip one character in the middle of the envelope's base64 payload (the signature is left as it was).
fn tamper(envelope: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    let payload = v["payload"].as_str().expect("DSSE payload").to_string();
    let mut bytes = payload.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    v["payload"] = serde_json::Value::String(String::from_utf8(bytes).unwrap());
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Run `upd pull`, expect exit `code` with `needle` in its output, and the machine exactly as `before`.
fn refused(rig: &Rig, before: &Snapshot, code: i32, needle: &str) {
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(code), "{text}");
    assert!(text.contains(needle), "expected '{needle}' in:\n{text}");
    assert_eq!(&rig.snapshot(), before, "{text}");
}

#[test]
fn refusals_leave_links_state_and_merged_set_as_they_were() {
    // A machine on hello 1.0.0 + world 1.0.0; the channel then offers hello builds that are corrupt on the
    // wire, longer than declared, built for another host, mislabelled inside, or a tampered / replayed manifest.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let v1 = fs::read(rig.ch.repo().join(rig.ch.manifest_rel())).unwrap();
    let before = rig.snapshot();
    assert_eq!(before.merged.len(), 2);

    // Bytes on the wire differ from the signed hash; then more bytes than the manifest declares.
    let mut big = ext("hello", "1.1.0");
    big.pad_bytes = 256 * 1024;
    rig.ch.add_extension(OS_VERSION, &big);
    rig.publish();
    let (url, size) = rig.image_url("hello", "1.1.0");
    rig.server.set_fault(&url, Fault::CorruptByte(size / 2));
    refused(&rig, &before, 7, "SHA-256 mismatch");
    rig.server.set_fault(
        &url,
        Fault::Extra {
            extra: 4096,
            declare: true,
        },
    );
    refused(&rig, &before, 7, "more than");
    rig.ch.remove_extension(OS_VERSION, "hello", "1.1.0");

    // Built for another VERSION_ID and declared so: the planner passes it over for hello 1.0.0; when it is
    // the only hello build, hello is kept as it is with a warning naming VERSION_ID.
    let listed = rig.ch.release_mut(OS_VERSION).extensions.clone();
    rig.ch.add_extension(
        OS_VERSION,
        &SysextSpec::new("hello", "1.2.0", OS_ID, "2.0.0"),
    );
    rig.publish();
    refused(&rig, &before, 0, "up to date");
    rig.ch.remove_extension(OS_VERSION, "hello", "1.0.0");
    rig.publish();
    let out = rig.upd_ok(&["pull"], 0);
    assert!(
        out.contains("kept as is") && out.contains("VERSION_ID 2.0.0"),
        "{out}"
    );
    assert_eq!(rig.snapshot(), before, "{out}");
    rig.ch.release_mut(OS_VERSION).extensions = listed;

    // Built for another VERSION_ID while the manifest claims the host's: the image itself is refused.
    let b = rig.ch.add_extension(
        OS_VERSION,
        &SysextSpec::new("hello", "1.3.0", OS_ID, "2.0.0"),
    );
    rig.ch
        .release_mut(OS_VERSION)
        .extensions
        .last_mut()
        .unwrap()
        .release
        .version_id = Some(OS_VERSION.into());
    rig.publish();
    refused(&rig, &before, 5, "VERSION_ID");
    let store = rig.m.root().join("var/lib/upd/images/hello");
    let kept: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        !kept
            .iter()
            .any(|n| n.to_string_lossy().starts_with("hello-1.3.0")),
        "refused image {} left in the store: {kept:?}",
        b.image.path
    );
    rig.ch.remove_extension(OS_VERSION, "hello", "1.3.0");

    // The release file inside is named for another image.
    let mut misnamed = ext("hello", "1.4.0");
    misnamed.release_file_name = Some("other".into());
    rig.ch.add_extension(OS_VERSION, &misnamed);
    let latest = rig.publish();
    refused(&rig, &before, 5, "refused image");

    // One byte of the signed payload changed; then the first manifest replayed (lower serial).
    rig.ch.write_manifest_bytes(&tamper(&latest));
    rig.sync();
    refused(&rig, &before, 4, "refused the manifest");
    rig.ch.write_manifest_bytes(&v1);
    rig.sync();
    refused(&rig, &before, 4, "serial");
}

#[test]
fn cut_download_resumes_with_range() {
    // A 4 MiB hello image whose first transfer is cut at 3 MiB with retries off: the pull fails leaving a
    // .partial; the next pull asks for the rest with Range and merges.
    if !require_root() {
        return;
    }
    let mut rig = Rig::new();
    let mut hello = ext("hello", "1.0.0");
    hello.pad_bytes = 4 * MIB;
    rig.ch.add_extension(OS_VERSION, &hello);
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    let (url, size) = rig.image_url("hello", "1.0.0");
    rig.server.set_fault(
        &url,
        Fault::CutAfter {
            at: 3 * MIB,
            times: Some(1),
        },
    );
    let out = rig.upd(&["--set", "RETRIES=0", "pull"], &[]);
    let cut = text_of(&out);
    assert_eq!(out.status.code(), Some(7), "{cut}");
    assert!(rig.m.merged_names().is_empty());
    let store = rig.m.root().join("var/lib/upd/images/hello");
    let partial: u64 = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(partial > MIB, "partial holds {partial} bytes");
    rig.server.reset_stats(&url);
    let out = rig.upd_ok(&["pull"], 0);
    let stats = rig.server.stats(&url);
    eprintln!(
        "resume: image {size} bytes, partial {partial}, re-sent {} in {} request(s) {:?}",
        stats.body_bytes, stats.requests, stats.ranges
    );
    // Only the missing tail comes again: nothing the partial holds is re-sent.
    assert_eq!(stats.body_bytes, size - partial, "{out}");
    assert!(
        stats.body_bytes < size / 2,
        "re-sent {} of {size}",
        stats.body_bytes
    );
    assert!(
        stats.ranges[0]
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=")),
        "{stats:?}"
    );
    assert_eq!(rig.m.merged_names(), ["hello", "world"]);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
}

#[test]
fn sigkill_at_each_switch_step_boots_old_or_new_set_never_a_mix() {
    // For each failpoint of the switch: a machine on hello+world 1.0.0 pulls hello+world 1.1.0 and is killed
    // there; after a power cut, `upd boot` and the boot-time merge, the merged set is wholly old or new.
    if !require_root() {
        return;
    }
    let points = [
        "switch-journaled",
        "switch-link",
        "switch-linked",
        "switch-before-refresh",
        "switch-refreshed",
        "switch-checked",
        "switch-committed",
    ];
    let old: BTreeMap<String, String> = [
        ("hello".to_string(), release_of(&ext("hello", "1.0.0"))),
        ("world".to_string(), release_of(&ext("world", "1.0.0"))),
    ]
    .into();
    let new: BTreeMap<String, String> = [
        ("hello".to_string(), release_of(&ext("hello", "1.1.0"))),
        ("world".to_string(), release_of(&ext("world", "1.1.0"))),
    ]
    .into();
    let mut outcomes = Vec::new();
    for fp in points {
        let mut rig = rig_at_v1();
        assert_eq!(rig.merged(), old, "{fp}: before");
        rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
        rig.ch
            .add_extension(OS_VERSION, &ext("world", "1.1.0").erofs());
        rig.publish();
        let out = rig.upd(&["pull"], &[("UPD_FAILPOINT", fp)]);
        assert_eq!(out.status.signal(), Some(9), "{fp}: {}", text_of(&out));
        rig.m.reboot();
        rig.upd_ok(&["boot"], 0);
        let merge = rig.m.sysext(&["merge"]);
        assert!(merge.status.success(), "{fp}: merge: {}", text_of(&merge));
        let merged = rig.merged();
        let which = if merged == old {
            "old"
        } else if merged == new {
            "new"
        } else {
            panic!("{fp}: a mix after reboot: {merged:?}")
        };
        let status = rig.upd(&["status", "--json"], &[]);
        let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert!(status["unfinished_switch"].is_null(), "{fp}: {status}");
        let active_hello = status["active"]["extensions"]["hello"]["version"].clone();
        let expect_hello = if which == "old" { "1.0.0" } else { "1.1.0" };
        assert_eq!(active_hello, expect_hello, "{fp}: state vs merged set");
        outcomes.push(format!("{fp}={which}"));
        rig.upd_ok(&["pull"], 0);
        assert_eq!(rig.merged(), new, "{fp}: pull after reboot");
    }
    eprintln!("sigkill outcomes: {}", outcomes.join(" "));
}

#[test]
fn second_pull_fails_naming_the_lock_holder() {
    // One pull is stuck on a stalled download of hello 1.1.0 while holding the lock; a second pull starts.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let mut hello = ext("hello", "1.1.0");
    hello.pad_bytes = MIB;
    rig.ch.add_extension(OS_VERSION, &hello);
    rig.publish();
    let (url, _) = rig.image_url("hello", "1.1.0");
    rig.server.set_fault(
        &url,
        Fault::StallAfter {
            at: 64 * 1024,
            times: None,
        },
    );
    let mut first: Child = rig
        .upd_cmd(&["--set", "STALL_TIMEOUT_SECS=120", "pull"], &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rig.server.stats(&url).requests == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "first pull never fetched"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    let killed = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::SIGKILL,
    );
    let _ = first.wait();
    killed.unwrap();
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains(&format!("pid {}", first.id())), "{text}");
    rig.server.set_fault(&url, Fault::Normal);
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
}

#[test]
fn full_disk_refuses_before_switching() {
    // The image store is a 1 MiB tmpfs inside the machine; hello 1.1.0 needs 3 MiB.
    if !require_root() {
        return;
    }
    let mut rig = Rig::new();
    let store = rig.m.root().join("var/lib/upd/images");
    fs::create_dir_all(&store).unwrap();
    let mount = rig.m.sh(&format!(
        "mount -t tmpfs -o size=1M tmpfs '{}'",
        store.display()
    ));
    assert!(mount.status.success(), "{}", text_of(&mount));
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.0.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    let before = rig.snapshot();
    assert_eq!(before.merged.len(), 2);
    let mut hello = ext("hello", "1.1.0");
    hello.pad_bytes = 3 * MIB;
    rig.ch.add_extension(OS_VERSION, &hello);
    rig.publish();
    refused(&rig, &before, 7, "free space");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
}

#[test]
fn wrong_merge_after_refresh_is_rolled_back_even_when_killed_midway() {
    // A machine on hello+world 1.0.0 pulls hello 1.1.0 through a systemd-sysext whose first call pretends to
    // refresh and merges nothing new: upd must see the old set still merged, switch back (exit 6); killed
    // in the middle of that switch back, the next boot merges the old set.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = rig.snapshot();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.publish();
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("fail-next");
    let flaky = dir.path().join("flaky-sysext");
    fs::write(
        &flaky,
        format!(
            "#!/bin/sh\nif [ -e '{m}' ]; then rm -f '{m}'; exit 0; fi\nexec '{real}' \"$@\"\n",
            m = mark.display(),
            real = rig.m.sysext_bin().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&flaky, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let set_bin = format!("SYSEXT_BIN={}", flaky.display());

    fs::write(&mark, b"").unwrap();
    let out = rig.upd(&["--set", &set_bin, "pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(text.contains("switched back"), "{text}");
    assert_eq!(rig.snapshot(), before, "{text}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");

    fs::write(&mark, b"").unwrap();
    let out = rig.upd(
        &["--set", &set_bin, "pull"],
        &[("UPD_FAILPOINT", "undo-link")],
    );
    assert_eq!(out.status.signal(), Some(9), "{}", text_of(&out));
    rig.m.reboot();
    rig.upd_ok(&["boot"], 0);
    let merge = rig.m.sysext(&["merge"]);
    assert!(merge.status.success(), "{}", text_of(&merge));
    assert_eq!(rig.snapshot(), before);

    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
}

#[test]
fn admin_images_are_never_touched_and_disable_unmerges() {
    // An administrator's own image tools.raw (a regular file) sits in /etc/extensions next to upd's links;
    // then world is disabled, and later the administrator puts a world.raw of their own there.
    if !require_root() {
        return;
    }
    let mut rig = Rig::new();
    let scratch = tempfile::tempdir().unwrap();
    let tools = upd_tests::images::build_sysext(&ext("tools", "7.0.0"), scratch.path());
    let admin = rig.m.root().join("etc/extensions/tools.raw");
    fs::copy(&tools, &admin).unwrap();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.0.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.merged_names(), ["hello", "tools", "world"]);
    assert!(fs::symlink_metadata(&admin).unwrap().is_file());
    assert_eq!(rig.m.run_program("tools").trim(), "tools 7.0.0");

    rig.upd_ok(&["ext", "disable", "world"], 0);
    let out = rig.upd_ok(&["pull"], 0);
    assert!(out.contains("world: 1.0.0 -> -"), "{out}");
    assert_eq!(rig.m.merged_names(), ["hello", "tools"]);
    assert!(!rig.m.root().join("etc/extensions/world.raw").exists());

    let mine = rig.m.root().join("etc/extensions/world.raw");
    fs::copy(&tools, &mine).unwrap();
    rig.upd_ok(&["ext", "enable", "world"], 0);
    let before = rig.snapshot();
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("never touches what it did not create"),
        "{text}"
    );
    assert_eq!(rig.snapshot(), before, "{text}");
    assert_eq!(fs::read(&mine).unwrap(), fs::read(&tools).unwrap());
}

#[test]
fn frozen_and_mixed_channels_are_refused_and_root_rotation_is_followed() {
    // A machine on hello+world 1.0.0; the channel offers hello 1.1.0 in an expired manifest, then in one
    // signed for channel 'beta' served as 'stable', then after a root rotation signed by the new key only.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = rig.snapshot();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    let now = chrono::Utc::now();
    rig.ch.publish_at(
        now - chrono::Duration::days(10),
        now - chrono::Duration::days(1),
    );
    rig.sync();
    refused(&rig, &before, 4, "expired");

    rig.ch.manifest.channel = upd_channels::name::Name::new("beta").unwrap();
    let beta = rig.ch.publish();
    rig.ch.manifest.channel = upd_channels::name::Name::new("stable").unwrap();
    rig.ch.write_manifest_bytes(&beta);
    rig.sync();
    refused(&rig, &before, 4, "this machine follows 'stable'");

    rig.ch.rotate_root();
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
    assert!(rig.m.root().join("var/lib/upd/roots/2.root.json").exists());
}
