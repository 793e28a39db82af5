//! The fleet rig: one signed channel served over real HTTP, and any number of sandbox machines,
//! each on its own GPT disk (loop device) and mount namespace, running the real upd.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Output;

use upd_tests::channel::Channel;
use upd_tests::disk::{Disk, GptPrio, USR_A};
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::sandbox::Machine;

use crate::os::rig::{ext, os, set, SLOT_SIZE, V1, V2};
use crate::pull::rig::{text_of, upd_bin};

/// Set A: the extensions built for 1.0.0.
pub(crate) fn set_a() -> BTreeMap<String, String> {
    set(&[("hello", "1.0.0"), ("world", "1.0.0")])
}

/// Set B: the extensions built for 2.0.0.
pub(crate) fn set_b() -> BTreeMap<String, String> {
    set(&[("hello", "2.0.0"), ("world", "2.0.0")])
}

/// One channel (`stable`) and its server, shared by every machine of the fleet.
pub(crate) struct Fleet {
    pub(crate) server: FaultServer,
    pub(crate) ch: Channel,
    pub(crate) rt: tokio::runtime::Runtime,
}

impl Fleet {
    /// Channel `stable` with release 1.0.0 (hello 1.0.0, world 1.0.0), published and served.
    pub(crate) fn new() -> Fleet {
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
        let mut fleet = Fleet { server, ch, rt };
        fleet.publish();
        fleet
    }

    /// Add release 2.0.0 (OS image, hello 2.0.0 + world 2.0.0 built for it); not yet published.
    pub(crate) fn add_v2(&mut self) {
        self.ch.add_os_release(V2, &os(V2));
        self.ch.add_extension(V2, &ext("hello", "2.0.0", V2));
        self.ch.add_extension(V2, &ext("world", "2.0.0", V2));
    }

    /// Sign the manifest being edited (serial bumped), serve the whole repository; returns the envelope.
    pub(crate) fn publish(&mut self) -> Vec<u8> {
        let envelope = self.ch.publish();
        self.serve_repo();
        envelope
    }

    /// Serve exactly these manifest envelope bytes (a replay of an older signed manifest).
    pub(crate) fn serve_manifest(&self, envelope: &[u8]) {
        self.ch.write_manifest_bytes(envelope);
        self.serve_repo();
    }

    fn serve_repo(&self) {
        for (url, file) in self.ch.files() {
            self.server.put_file(&url, file, Fault::Normal).unwrap();
        }
    }

    /// A machine installed with 1.0.0 in USR-A, booted from it, configured for this channel (`extra`
    /// lines appended to upd.conf), with set A pulled and merged.
    pub(crate) fn node(&self, extra: &[&str]) -> Node {
        let disk = Disk::new(SLOT_SIZE);
        let v1 = self
            .ch
            .manifest
            .releases
            .iter()
            .find(|r| r.version.to_string() == V1)
            .expect("release 1.0.0");
        disk.write_slot(USR_A, &self.ch.file(&v1.os.image))
            .expect("install v1 into USR-A");
        let mut m = Machine::new(&os(V1));
        m.boot_slot(&disk, USR_A);
        let node = Node { m, disk };
        node.install(self, extra);
        node.upd_ok(&["pull"], 0);
        assert_eq!(node.versions(), set_a());
        node
    }
}

/// One machine of the fleet: its sandbox and its disk.
pub(crate) struct Node {
    /// Declared before the disk: dropped first, so the slot mount lets go of the disk's loop device.
    pub(crate) m: Machine,
    pub(crate) disk: Disk,
}

impl Node {
    fn install(&self, fleet: &Fleet, extra: &[&str]) {
        let root = self.m.root();
        let keys = root.join("etc/upd/keys");
        fs::create_dir_all(&keys).unwrap();
        fs::write(keys.join("root.json"), fleet.ch.root_json()).unwrap();
        let mut conf = format!(
            "SERVER=http://{}\nCHANNEL=stable\nEXTENSIONS=hello world\nSYSEXT_BIN={}\nSTALL_TIMEOUT_SECS=5\nDISK={}\n",
            fleet.server.addr(),
            self.m.sysext_bin().display(),
            self.disk.device().display(),
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        fs::write(root.join("etc/upd/upd.conf"), conf).unwrap();
    }

    /// Run upd inside the machine.
    pub(crate) fn upd(&self, args: &[&str]) -> Output {
        std::process::Command::new("nsenter")
            .arg("-t")
            .arg(self.m.pid().to_string())
            .args(["-m", "--"])
            .arg(upd_bin())
            .arg("--root")
            .arg(self.m.root())
            .args(args)
            .env("UPD_LOG", "info")
            .output()
            .expect("run upd")
    }

    /// Run upd and insist on exit `code`; returns its output.
    pub(crate) fn upd_ok(&self, args: &[&str], code: i32) -> String {
        let out = self.upd(args);
        let text = text_of(&out);
        assert_eq!(out.status.code(), Some(code), "upd {args:?}:\n{text}");
        text
    }

    /// Power-cut; the gptprio boot loader picks a slot; `upd boot` and the merge. Returns the slot.
    pub(crate) fn reboot(&mut self) -> String {
        let slot = self.m.boot_disk(&self.disk);
        self.upd_ok(&["boot"], 0);
        let out = self.m.sysext(&["merge"]);
        assert!(out.status.success(), "merge: {}", text_of(&out));
        slot
    }

    /// Merged extension → SYSEXT_VERSION_ID, read from the merged /usr.
    pub(crate) fn versions(&self) -> BTreeMap<String, String> {
        let dir = self.m.ns_root().join("usr/lib/extension-release.d");
        let field = |n: &str| {
            let c = fs::read_to_string(dir.join(format!("extension-release.{n}"))).unwrap();
            let v = c.lines().find_map(|l| l.strip_prefix("SYSEXT_VERSION_ID="));
            v.unwrap_or("?").to_string()
        };
        let names = self.m.merged_names();
        names.into_iter().map(|n| (n.clone(), field(&n))).collect()
    }

    /// VERSION_ID of the OS running (the /usr mounted now).
    pub(crate) fn running_os(&self) -> String {
        let text = fs::read_to_string(self.m.ns_root().join("usr/lib/os-release")).unwrap();
        let v = text.lines().find_map(|l| l.strip_prefix("VERSION_ID="));
        v.unwrap().to_string()
    }

    /// (priority, tries, successful) of a slot.
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

    /// The machine-id as upd reads it.
    pub(crate) fn machine_id(&self) -> String {
        let id = fs::read_to_string(self.m.root().join("etc/machine-id")).unwrap();
        id.trim().to_string()
    }

    /// Replace the machine-id (before upd first uses it for a wave decision).
    pub(crate) fn set_machine_id(&self, id: &str) {
        fs::write(self.m.root().join("etc/machine-id"), format!("{id}\n")).unwrap();
    }

    /// Whether /run/reboot-required exists inside the machine.
    pub(crate) fn reboot_required(&self) -> bool {
        self.m.ns_root().join("run/reboot-required").exists()
    }

    /// A path in the machine's directory (outside its root) for test markers.
    pub(crate) fn marker(&self, name: &str) -> PathBuf {
        self.m.root().parent().expect("machine dir").join(name)
    }
}
