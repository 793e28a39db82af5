//! One machine on its own A/B disk: a sandbox booted from a slot of a real GPT disk on a loop
//! device, the real upd run inside it, and what the tests read back from it.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use upd_tests::bins;
use upd_tests::channel::Channel;
use upd_tests::disk::{Disk, GptPrio, USR_A};
use upd_tests::faultserver::FaultServer;
use upd_tests::sandbox::{Machine, Saved};

use super::rig::{os, set_a, SLOT_SIZE, V1};
use crate::pull::rig::text_of;

/// A node as [`Node::save`] left it: the machine's files, the disk's bytes, the set merged.
pub(crate) struct NodeSave {
    machine: Saved,
    disk: Vec<u8>,
    merged: BTreeMap<String, String>,
}

/// A sandbox machine and its disk.
pub(crate) struct Node {
    /// Declared before the disk: dropped first, so the slot mount lets go of the disk's loop device.
    pub(crate) m: Machine,
    pub(crate) disk: Disk,
}

impl Node {
    /// A machine installed with 1.0.0 in USR-A, booted from it, configured for `ch` as `server`
    /// serves it (`extra` lines appended to upd.conf), with set A pulled and merged.
    pub(crate) fn new(ch: &Channel, server: &FaultServer, extra: &[&str]) -> Node {
        let disk = Disk::new(SLOT_SIZE);
        let v1 = ch
            .manifest
            .releases
            .iter()
            .find(|r| r.version.to_string() == V1)
            .expect("release 1.0.0");
        disk.write_slot(USR_A, &ch.file(&v1.os.image))
            .expect("install v1 into USR-A");
        let mut m = Machine::new(&os(V1));
        m.boot_slot(&disk, USR_A);
        let node = Node { m, disk };
        node.install(ch, server, extra);
        node.upd_ok(&["pull"], 0); // switches and refreshes: set A is merged
        assert_eq!(node.versions(), set_a());
        node
    }

    /// The shipped root and upd.conf (`extra` lines appended).
    fn install(&self, ch: &Channel, server: &FaultServer, extra: &[&str]) {
        let root = self.m.root();
        // /usr is the read-only slot: the root goes to /etc/upd/keys, which upd reads first.
        let keys = root.join("etc/upd/keys");
        fs::create_dir_all(&keys).unwrap();
        fs::write(keys.join("root.json"), ch.root_json()).unwrap();
        let mut conf = format!(
            "SERVER=http://{}\nCHANNEL=stable\nEXTENSIONS=hello world\nSYSEXT_BIN={}\nSTALL_TIMEOUT_SECS=5\nDISK={}\n",
            server.addr(),
            self.m.sysext_bin().display(),
            self.disk.device().display(),
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        fs::write(root.join("etc/upd/upd.conf"), conf).unwrap();
    }

    /// The command running upd inside the machine, with `env` set.
    pub(crate) fn upd_cmd(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = self.m.upd_cmd(bins::upd(), args);
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Run upd.
    pub(crate) fn upd(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.upd_cmd(args, env).output().expect("run upd")
    }

    /// Run upd under `strace -f`, SIGKILLed on entering the `n`th (1-based) call of any of the
    /// comma-separated syscalls `calls`, counted over upd and its children; the calls before it
    /// completed, that one and the rest never ran.
    pub(crate) fn upd_killed_at(&self, args: &[&str], calls: &str, n: usize) -> Output {
        let inner = self.upd_cmd(args, &[]);
        let mut cmd = Command::new("strace");
        // No --seccomp-bpf: with it, a kill on the Nth pwrite64 of mark-good or rollback was not
        // delivered (upd ran to the end), so every call is traced the slow, sure way.
        cmd.args(["-f", "-qq", "-o", "/dev/null", "-e"])
            .arg(format!("trace={calls}"))
            .arg("-e")
            .arg(format!("inject={calls}:signal=KILL:when={n}"))
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.output()
            .expect("run strace (scripts/prereqs installs it)")
    }

    /// How many of the comma-separated syscalls `calls` upd makes (with its children) running
    /// `args` to the end; returns the count and upd's output.
    pub(crate) fn upd_count(&self, args: &[&str], calls: &str) -> (usize, Output) {
        let log = self.marker("strace.count");
        let inner = self.upd_cmd(args, &[]);
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-qq", "-o"])
            .arg(&log)
            .arg("-e")
            .arg(format!("trace={calls}"))
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        let out = cmd
            .output()
            .expect("run strace (scripts/prereqs installs it)");
        let text = fs::read_to_string(&log).unwrap();
        let n = text
            .lines()
            .filter(|l| !l.contains("+++") && !l.contains("---") && !l.contains("resumed>"))
            .count();
        (n, out)
    }

    /// Save the machine (files, `/run`, the merged set) and its disk, for [`Node::restore`]: the
    /// kill harness prepares a machine once and starts every kill from a copy of it.
    pub(crate) fn save(&self) -> NodeSave {
        NodeSave {
            machine: self.m.save(),
            disk: self.disk.save(),
            merged: self.versions(),
        }
    }

    /// Put the machine back as [`Node::save`] found it: power cut, the disk's bytes and the
    /// machine's files restored, the same slot booted again (no try spent), `/run` refilled and the
    /// same set merged by systemd-sysext.
    pub(crate) fn restore(&mut self, s: &NodeSave) {
        let disk = &self.disk;
        self.m
            .restore(&s.machine, || disk.restore(&s.disk), |_| {}, true);
        if !s.merged.is_empty() {
            self.merge();
        }
        assert_eq!(
            self.versions(),
            s.merged,
            "restored machine merges the saved set"
        );
    }

    /// The machine after a power cut that left its root as `edit` makes the saved one: the disk
    /// and files of `s`, then `edit` on the root, and the same slot booted (nothing run, nothing
    /// merged, `/run` empty).
    pub(crate) fn restore_cut(&mut self, s: &NodeSave, edit: impl FnOnce(&std::path::Path)) {
        let disk = &self.disk;
        self.m
            .restore(&s.machine, || disk.restore(&s.disk), edit, false);
    }

    /// The saved machine's root (read-only: a base to compare with).
    pub(crate) fn saved_root(s: &NodeSave) -> PathBuf {
        s.machine.root()
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

    /// Power-cut; the gptprio boot loader picks a slot (consuming a try); nothing else runs.
    /// Returns the slot booted.
    pub(crate) fn boot_disk(&mut self) -> String {
        self.m.boot_disk(&self.disk)
    }

    /// Power-cut; the gptprio boot loader picks a slot (consuming a try); then `upd boot` and the
    /// merge, as upd-boot.service and systemd-sysext.service do. Returns the slot booted.
    pub(crate) fn reboot(&mut self) -> String {
        let slot = self.boot_disk();
        self.upd_ok(&["boot"], 0);
        self.merge();
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

    /// Link name → target in ROOT/etc/extensions.
    pub(crate) fn links(&self) -> BTreeMap<String, String> {
        let dir = fs::read_dir(self.m.root().join("etc/extensions")).unwrap();
        let link = |e: fs::DirEntry| {
            let t = fs::read_link(e.path()).unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, t.display().to_string())
        };
        dir.flatten().map(link).collect()
    }

    /// Each program prints its name and version: check every merged extension really runs.
    pub(crate) fn programs_run(&self, want: &BTreeMap<String, String>) {
        for (n, v) in want {
            assert_eq!(self.m.run_program(n).trim(), format!("{n} {v}"));
        }
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
