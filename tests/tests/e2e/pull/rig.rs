//! The rig: a channel served by the fault server, a sandbox machine following it, the real upd run inside it.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Output};

use upd_tests::bins;
use upd_tests::channel::Channel;
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::images::{OsSpec, SysextSpec};
use upd_tests::sandbox::Machine;

/// `ID=` of the test OS.
pub(crate) const OS_ID: &str = "updos";
/// Its `VERSION_ID=` and release version.
pub(crate) const OS_VERSION: &str = "1.0.0";
/// One mebibyte.
pub(crate) const MIB: u64 = 1 << 20;

/// The OS every machine runs and every channel offers: updos 1.0.0.
pub(crate) fn os() -> OsSpec {
    OsSpec::new(OS_ID, OS_VERSION)
}

/// A squashfs extension `name` `version` for that OS.
pub(crate) fn ext(name: &str, version: &str) -> SysextSpec {
    SysextSpec::new(name, version, OS_ID, OS_VERSION)
}

/// A channel server, a channel and one sandbox machine following it.
pub(crate) struct Rig {
    pub(crate) server: FaultServer,
    pub(crate) ch: Channel,
    pub(crate) m: Machine,
    _rt: tokio::runtime::Runtime,
}

impl Rig {
    /// Channel `stable` with OS release 1.0.0 (no extensions yet), served; a machine running that OS.
    pub(crate) fn new() -> Rig {
        Rig::running(&os(), OS_VERSION)
    }

    /// Channel `stable` with OS release `version` of `os` (no extensions yet), served; a machine running it.
    pub(crate) fn running(os: &OsSpec, version: &str) -> Rig {
        let (rt, server) = FaultServer::start_with_runtime();
        let mut ch = Channel::new("stable");
        ch.add_os_release(version, os);
        let m = Machine::new(os);
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
    pub(crate) fn install(&self, extra: &[&str]) {
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
    pub(crate) fn publish(&mut self) -> Vec<u8> {
        let env = self.ch.publish();
        self.sync();
        env
    }

    /// Serve every file of the repository as it is now, without faults.
    pub(crate) fn sync(&self) {
        for (url, file) in self.ch.files() {
            self.server.put_file(&url, file, Fault::Normal).unwrap();
        }
    }

    /// The URL path and size of the image of build `name` `version` of the OS release.
    pub(crate) fn image_url(&mut self, name: &str, version: &str) -> (String, u64) {
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
    pub(crate) fn upd(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.upd_cmd(args, env).output().expect("run upd")
    }

    /// The command running upd inside the machine (to spawn it).
    pub(crate) fn upd_cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = self.m.upd_cmd(bins::upd(), args);
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Run upd and insist on exit code `code`; returns stdout + stderr.
    pub(crate) fn upd_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.upd(args, &[]);
        let text = text_of(&out);
        assert_eq!(out.status.code(), Some(code), "upd {args:?}:\n{text}");
        text
    }

    /// Merged extension name → extension-release content, as the machine sees it.
    pub(crate) fn merged(&self) -> BTreeMap<String, String> {
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

    /// The state file as JSON.
    pub(crate) fn state_json(&self) -> serde_json::Value {
        let p = self.m.root().join("var/lib/upd/state.json");
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }

    /// Links, the state's active generation and the merged set.
    pub(crate) fn snapshot(&self) -> Snapshot {
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

/// What a refusal must leave exactly as it was.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) links: BTreeMap<String, Option<String>>,
    pub(crate) active: serde_json::Value,
    pub(crate) merged: BTreeMap<String, String>,
}

/// Stdout then stderr, as text.
pub(crate) fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The extension-release content `spec` builds, as a string.
pub(crate) fn release_of(spec: &SysextSpec) -> String {
    String::from_utf8(spec.release_content()).unwrap()
}

/// A machine following a channel with hello 1.0.0 (squashfs) and world 1.0.0 (erofs), pulled and merged.
pub(crate) fn rig_at_v1() -> Rig {
    let mut rig = Rig::new();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.0.0"));
    rig.ch
        .add_extension(OS_VERSION, &ext("world", "1.0.0").erofs());
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.merged_names(), ["hello", "world"]);
    rig
}

/// Flip one character in the middle of the envelope's base64 payload (the signature is left as it was).
pub(crate) fn tamper(envelope: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(envelope).unwrap();
    let payload = v["payload"].as_str().expect("DSSE payload").to_string();
    let mut bytes = payload.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    v["payload"] = serde_json::Value::String(String::from_utf8(bytes).unwrap());
    serde_json::to_vec_pretty(&v).unwrap()
}

/// Run `upd pull`, expect exit `code` with `needle` in its output, and the machine exactly as `before`.
pub(crate) fn refused(rig: &Rig, before: &Snapshot, code: i32, needle: &str) {
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(code), "{text}");
    assert!(text.contains(needle), "expected '{needle}' in:\n{text}");
    assert_eq!(&rig.snapshot(), before, "{text}");
}
