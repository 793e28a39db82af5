//! The A/B rig: a signed channel with OS releases and their extensions, a real GPT disk on a loop
//! device, and a sandbox machine booted from a slot of that disk, running the real upd.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Output};

use upd_tests::channel::Channel;
use upd_tests::disk::{Disk, GptPrio, USR_A};
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::images::{OsSpec, SysextSpec};
use upd_tests::sandbox::Machine;

use crate::pull::rig::{text_of, upd_bin};

/// `ID=` of the test OS.
pub(crate) const OS_ID: &str = "updos";
/// The release installed first.
pub(crate) const V1: &str = "1.0.0";
/// The release updated to.
pub(crate) const V2: &str = "2.0.0";
/// Size of each OS slot.
pub(crate) const SLOT_SIZE: u64 = 16 << 20;

/// The OS `version` (VERSION_ID equals the release version).
pub(crate) fn os(version: &str) -> OsSpec {
    OsSpec::new(OS_ID, version)
}

/// Extension `name` `version` built for OS `os_version` (`world` as erofs, the others squashfs).
pub(crate) fn ext(name: &str, version: &str, os_version: &str) -> SysextSpec {
    let s = SysextSpec::new(name, version, OS_ID, os_version);
    if name == "world" {
        s.erofs()
    } else {
        s
    }
}

/// Channel, server, disk and machine.
pub(crate) struct OsRig {
    pub(crate) server: FaultServer,
    pub(crate) ch: Channel,
    /// Declared before the disk: dropped first, so the slot mount lets go of the disk's loop device.
    pub(crate) m: Machine,
    pub(crate) disk: Disk,
    _rt: tokio::runtime::Runtime,
}

impl OsRig {
    /// Channel `stable` with release 1.0.0 (hello 1.0.0, world 1.0.0); the disk holds 1.0.0 in
    /// USR-A, as installed; the machine booted USR-A, pulled its extensions and merged them
    /// (`extra` config lines appended to upd.conf).
    pub(crate) fn new(extra: &[&str]) -> OsRig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = rt.block_on(FaultServer::start()).expect("start server");
        let mut ch = Channel::new("stable");
        ch.add_os_release(V1, &os(V1));
        ch.add_extension(V1, &ext("hello", "1.0.0", V1));
        ch.add_extension(V1, &ext("world", "1.0.0", V1));
        let disk = Disk::new(SLOT_SIZE);
        let v1_target = ch.release_mut(V1).os.image.clone();
        let v1_image = ch.file(&v1_target);
        disk.write_slot(USR_A, &v1_image)
            .expect("install v1 into USR-A");
        let mut m = Machine::new(&os(V1));
        m.boot_slot(&disk, USR_A);
        let mut rig = OsRig {
            server,
            ch,
            m,
            disk,
            _rt: rt,
        };
        rig.install(extra);
        rig.publish();
        rig.upd_ok(&["pull"], 0); // switches and refreshes: set A is merged
        assert_eq!(
            rig.versions(),
            set(&[("hello", "1.0.0"), ("world", "1.0.0")])
        );
        rig
    }

    /// The shipped root and upd.conf (`extra` lines appended).
    pub(crate) fn install(&self, extra: &[&str]) {
        let root = self.m.root();
        // /usr is the read-only slot: the root goes to /etc/upd/keys, which upd reads first.
        let keys = root.join("etc/upd/keys");
        fs::create_dir_all(&keys).unwrap();
        fs::write(keys.join("root.json"), self.ch.root_json()).unwrap();
        let mut conf = format!(
            "SERVER=http://{}\nCHANNEL=stable\nEXTENSIONS=hello world\nSYSEXT_BIN={}\nSTALL_TIMEOUT_SECS=5\nDISK={}\n",
            self.server.addr(),
            self.m.sysext_bin().display(),
            self.disk.device().display(),
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        fs::write(root.join("etc/upd/upd.conf"), conf).unwrap();
    }

    /// Add release 2.0.0 (OS image and hello 2.0.0 + world 2.0.0 built for it) and publish.
    pub(crate) fn add_v2(&mut self) {
        self.ch.add_os_release(V2, &os(V2));
        self.ch.add_extension(V2, &ext("hello", "2.0.0", V2));
        self.ch.add_extension(V2, &ext("world", "2.0.0", V2));
        self.publish();
    }

    /// Publish the manifest being edited and serve the whole repository.
    pub(crate) fn publish(&mut self) {
        self.ch.publish();
        for (url, file) in self.ch.files() {
            self.server.put_file(&url, file, Fault::Normal).unwrap();
        }
    }

    /// The command running upd inside the machine.
    pub(crate) fn upd_cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
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

    /// Run upd.
    pub(crate) fn upd(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.upd_cmd(args, env).output().expect("run upd")
    }

    /// Run upd and insist on exit `code`; returns its output.
    pub(crate) fn upd_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.upd(args, &[]);
        let text = text_of(&out);
        assert_eq!(out.status.code(), Some(code), "upd {args:?}:\n{text}");
        text
    }

    /// systemd-sysext merge (as systemd-sysext.service does at boot).
    pub(crate) fn merge(&self) {
        let out = self.m.sysext(&["merge"]);
        assert!(out.status.success(), "merge: {}", text_of(&out));
    }

    /// Power-cut; the gptprio boot loader picks a slot (consuming a try); then `upd boot` and the
    /// merge, as upd-boot.service and systemd-sysext.service do. Returns the slot booted.
    pub(crate) fn reboot(&mut self) -> String {
        let slot = self.m.boot_disk(&self.disk);
        self.upd_ok(&["boot"], 0);
        self.merge();
        slot
    }

    /// Merged extension → SYSEXT_VERSION_ID, read from the merged /usr.
    pub(crate) fn versions(&self) -> BTreeMap<String, String> {
        let dir = self.m.ns_root().join("usr/lib/extension-release.d");
        self.m
            .merged_names()
            .into_iter()
            .map(|n| {
                let c = fs::read_to_string(dir.join(format!("extension-release.{n}"))).unwrap();
                let v = c
                    .lines()
                    .find_map(|l| l.strip_prefix("SYSEXT_VERSION_ID="))
                    .unwrap_or("?")
                    .to_string();
                (n, v)
            })
            .collect()
    }

    /// VERSION_ID of the OS running (the /usr mounted now).
    pub(crate) fn running_os(&self) -> String {
        let text = fs::read_to_string(self.m.ns_root().join("usr/lib/os-release")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("VERSION_ID="))
            .unwrap()
            .to_string()
    }

    /// (priority, tries, successful) of a slot, read by sgdisk.
    pub(crate) fn prio(&self, label: &str) -> (u8, u8, bool) {
        let GptPrio {
            priority,
            tries,
            successful,
            ..
        } = self.disk.attrs(label);
        (priority, tries, successful)
    }

    /// The state file.
    pub(crate) fn state(&self) -> serde_json::Value {
        let p = self.m.root().join("var/lib/upd/state.json");
        serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
    }

    /// Each program prints its name and version: check every merged extension really runs.
    pub(crate) fn programs_run(&self, want: &BTreeMap<String, String>) {
        for (n, v) in want {
            assert_eq!(self.m.run_program(n).trim(), format!("{n} {v}"));
        }
    }
}

/// A name → version map.
pub(crate) fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}
