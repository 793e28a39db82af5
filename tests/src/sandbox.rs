//! A sandbox machine: a root directory with its own persistent private mount namespace, rebootable.
//!
//! A holder process (`unshare -m`, then `mount --make-rshared /` and a fresh tmpfs on `/run`, which
//! systemd-sysext needs) keeps the namespace alive; commands enter it with `nsenter -t PID -m`. Killing the
//! holder drops every mount of the namespace at once, like a power cut: that is [`Machine::reboot`].
//!
//! Inside the namespace `ROOT/run` is a tmpfs too (volatile like a real /run) and `ROOT/usr` may be another
//! tree or an image ([`Machine::reboot_into_usr`]), or an OS slot of a GPT [`Disk`] chosen by a simulated
//! gptprio boot loader ([`Machine::boot_disk`]), with `ROOT/proc/cmdline` naming the slot booted. From the
//! test process, see the machine as it sees itself through [`Machine::ns_root`] (`/proc/PID/root/ROOT`).
//!
//! systemd-sysext 252 ignores symlinks in its search paths when given `--root`, while upd links
//! `/etc/extensions/NAME.raw` into its store. [`Machine::sysext_bin`] runs `scripts/sysext-root-wrapper` in
//! the machine, which, for the duration of one call, shadows each search directory with bind mounts of the
//! link targets (resolved against ROOT, as the kernel would on the real machine), so the real binary merges
//! exactly what a booted machine would. Called from inside the machine (upd, or a private namespace upd
//! made there) the wrapper runs in place rather than entering the machine's namespace again.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::io::{BufRead, BufReader};

use crate::disk::Disk;
use crate::images::{populate_usr_dir, OsSpec};

/// The real merger.
pub const SYSTEMD_SYSEXT: &str = "/usr/bin/systemd-sysext";

/// The sysext wrapper for sandbox roots that the demo and the benches use too: takes ROOT from
/// `--root=ROOT` and shadows under ROOT/../shadow (the machine's `shadow` directory).
const ROOT_WRAPPER: &str = include_str!("../../scripts/sysext-root-wrapper");

/// The search directories of systemd-sysext, relative to the root.
pub const SEARCH_DIRS: [&str; 3] = ["etc/extensions", "run/extensions", "var/lib/extensions"];

/// True when running as root; otherwise prints a loud SKIP line, or panics under CI (`CI=true`).
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "system tests need root and CI=true: refusing to skip"
    );
    eprintln!("SKIP (not root): this system test needs root for mount namespaces and loop devices");
    false
}

/// A sandbox machine: its root directory and the namespace it currently runs in.
pub struct Machine {
    dir: tempfile::TempDir,
    holder: Option<Child>,
    usr_source: Option<UsrSource>,
}

/// What a boot mounts at ROOT/usr (besides the tree the machine was created with).
#[derive(Clone)]
enum UsrSource {
    /// A directory (bind) or an image file (loop).
    Path(PathBuf),
    /// A byte range of a whole-disk block device: an OS slot.
    Slot {
        device: PathBuf,
        offset: u64,
        size: u64,
    },
}

impl Machine {
    /// Create a machine for `os`: ROOT/usr (os-release), ROOT/etc/extensions, ROOT/var/lib, a machine-id,
    /// and boot it (start its namespace).
    pub fn new(os: &OsSpec) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix("upd-machine-")
            .tempdir()
            .expect("machine temp dir");
        let root = dir.path().join("root");
        populate_usr_dir(&root.join("usr"), os);
        for sub in ["etc/extensions", "var/lib", "run"] {
            fs::create_dir_all(root.join(sub)).expect("create sandbox root directories");
        }
        let mut seed = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .expect("random machine-id");
        fs::write(
            root.join("etc/machine-id"),
            format!("{}\n", hex::encode(seed)),
        )
        .expect("write machine-id");
        fs::create_dir_all(dir.path().join("shadow")).expect("create shadow dir");
        let mut machine = Machine {
            dir,
            holder: None,
            usr_source: None,
        };
        machine.boot();
        machine
    }

    /// The sandbox root directory (as seen from the host namespace: no mounts of the machine show here).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The sandbox root as the machine sees it (its mounts: merged /usr, /run), reachable from the test process.
    pub fn ns_root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid()))
            .join(self.root().strip_prefix("/").expect("absolute"))
    }

    /// The holder's pid: the namespace to enter.
    pub fn pid(&self) -> u32 {
        self.holder.as_ref().expect("machine is running").id()
    }

    /// A systemd-sysext wrapper running the real binary inside this machine (symlinked images made visible);
    /// give it to upd as its sysext binary. It stays valid across reboots.
    pub fn sysext_bin(&self) -> PathBuf {
        self.dir.path().join("bin/systemd-sysext")
    }

    /// Run `cmd` inside the machine's mount namespace.
    pub fn run(&self, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.pid().to_string())
            .args(["-m", "--"])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("nsenter {cmd:?}: {e}"))
    }

    /// The command running the real upd (`upd_bin --root ROOT ARGS`, `UPD_LOG=info`) inside the
    /// machine's mount namespace, to run or spawn.
    pub fn upd_cmd(&self, upd_bin: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid().to_string())
            .args(["-m", "--"])
            .arg(upd_bin)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("UPD_LOG", "info");
        cmd
    }

    /// Run a shell script inside the machine's mount namespace.
    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// Run `systemd-sysext --root ROOT ARGS...` inside the machine (through [`Machine::sysext_bin`]).
    pub fn sysext(&self, args: &[&str]) -> Output {
        let root = format!("--root={}", self.root().display());
        let out = Command::new(self.sysext_bin())
            .arg(root)
            .args(args)
            .output();
        out.unwrap_or_else(|e| panic!("run {}: {e}", self.sysext_bin().display()))
    }

    /// The names of the extensions merged now (from ROOT/usr/lib/extension-release.d inside the machine).
    pub fn merged_names(&self) -> Vec<String> {
        let dir = self.ns_root().join("usr/lib/extension-release.d");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix("extension-release.")
                    .map(String::from)
            })
            .collect();
        names.sort();
        names
    }

    /// Run ROOT/usr/bin/NAME inside the machine and return its stdout; panics if it fails or is absent.
    pub fn run_program(&self, name: &str) -> String {
        let out = self.try_program(name);
        assert!(
            out.status.success(),
            "{name} failed in the machine: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run ROOT/usr/bin/NAME inside the machine, whatever the outcome.
    pub fn try_program(&self, name: &str) -> Output {
        self.run(&[&self.root().join("usr/bin").join(name).to_string_lossy()])
    }

    /// The loop devices whose backing file lies in this machine's directory (its images, its USR image),
    /// and the one its booted OS slot is mounted from.
    pub fn loop_devices(&self) -> Vec<LoopDevice> {
        let mut found = loop_devices_under(self.dir.path());
        if let Some(UsrSource::Slot { device, .. }) = &self.usr_source {
            let id = backing_id(device);
            found.extend(all_loop_devices().into_iter().filter(|l| l.backing == id));
        }
        found
    }

    /// A copy of the machine as it is now: its directory (root, shadow) and what its volatile
    /// `ROOT/run` holds. [`Machine::restore`] puts it back.
    pub fn save(&self) -> Saved {
        let dir = tempfile::Builder::new()
            .prefix("upd-saved-")
            .tempdir()
            .expect("saved machine temp dir");
        for sub in ["root", "shadow"] {
            copy_tree(&self.dir.path().join(sub), &dir.path().join(sub));
        }
        copy_tree(&self.ns_root().join("run"), &dir.path().join("run"));
        Saved {
            dir,
            usr_source: self.usr_source.clone(),
        }
    }

    /// Power-cut, run `while_off` (put a disk back, say), put back the directory `saved` holds,
    /// run `edit` on the root (a power cut's damage, say), boot the /usr it had booted again (no
    /// boot loader, no try spent) and, if `run`, refill `ROOT/run`: the machine's files are then
    /// exactly as when it was saved; mounts it had (a merge) are for the caller to make again.
    pub fn restore(
        &mut self,
        saved: &Saved,
        while_off: impl FnOnce(),
        edit: impl FnOnce(&Path),
        run: bool,
    ) {
        self.halt();
        while_off();
        for sub in ["root", "shadow"] {
            let path = self.dir.path().join(sub);
            fs::remove_dir_all(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
            copy_tree(&saved.dir.path().join(sub), &path);
        }
        edit(&self.root());
        self.usr_source.clone_from(&saved.usr_source);
        self.boot();
        if !run {
            return;
        }
        let run = self.ns_root().join("run");
        let src = saved.dir.path().join("run");
        crate::images::run_tool(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(&run),
        );
    }

    /// Power-cut and boot again with the same /usr: every mount (merge, /run) is gone.
    pub fn reboot(&mut self) {
        self.halt();
        self.boot();
    }

    /// Power-cut and boot with `usr` mounted read-only at ROOT/usr: a directory (bind) or an image file.
    pub fn reboot_into_usr(&mut self, usr: &Path) {
        // Halt first: halt waits for the loop devices of the /usr it is leaving.
        self.halt();
        self.usr_source = Some(UsrSource::Path(usr.to_path_buf()));
        let _ = fs::remove_file(self.root().join("proc/cmdline"));
        self.boot();
    }

    /// Power-cut and boot OS slot `label` of `disk`: mounted read-only at ROOT/usr straight from the disk's
    /// loop device at the slot's byte range, and `ROOT/proc/cmdline` saying `mount.usr=PARTUUID=<slot>` as
    /// Flatcar's GRUB passes it. Panics if the slot holds no mountable filesystem (the boot would fail).
    pub fn boot_slot(&mut self, disk: &Disk, label: &str) {
        let slot = disk.slot(label);
        self.halt();
        let proc_dir = self.root().join("proc");
        fs::create_dir_all(&proc_dir).expect("create ROOT/proc");
        let cmdline = format!(
            "BOOT_IMAGE=/flatcar/vmlinuz-{} mount.usr=PARTUUID={} mount.usrflags=ro root=LABEL=ROOT \
             console=ttyS0\n",
            label.trim_start_matches("USR-").to_lowercase(),
            slot.part_uuid
        );
        fs::write(proc_dir.join("cmdline"), cmdline).expect("write ROOT/proc/cmdline");
        self.usr_source = Some(UsrSource::Slot {
            device: disk.device(),
            offset: slot.offset,
            size: slot.size,
        });
        self.boot();
    }

    /// Power-cut and boot whatever the disk's gptprio boot loader picks ([`Disk::boot_loader_choice`], which
    /// consumes a try); return the slot label. Panics when no slot is bootable.
    pub fn boot_disk(&mut self, disk: &Disk) -> String {
        let label = disk
            .boot_loader_choice()
            .expect("the boot loader finds a bootable USR slot");
        self.boot_slot(disk, &label);
        label
    }

    fn boot(&mut self) {
        let root = self.root();
        let mut script =
            String::from("set -e; mount --make-rshared /; mount -t tmpfs tmpfs /run; ");
        script += &format!("mount -t tmpfs tmpfs '{}/run'; ", root.display());
        match &self.usr_source {
            Some(UsrSource::Path(usr)) => {
                let how = if usr.is_dir() { "--bind" } else { "-o loop" };
                script += &format!(
                    "mount {how} '{}' '{}/usr'; mount -o remount,ro,bind '{}/usr'; ",
                    usr.display(),
                    root.display(),
                    root.display()
                );
            }
            // A loop device over the slot's byte range, auto-cleared when the namespace dies.
            Some(UsrSource::Slot {
                device,
                offset,
                size,
            }) => {
                script += &format!(
                    "mount -o ro,offset={offset},sizelimit={size} '{}' '{}/usr'; ",
                    device.display(),
                    root.display()
                );
            }
            None => {}
        }
        // Stay alive while the test process lives (no orphaned namespaces if it is killed).
        script += &format!(
            "echo ready; while kill -0 {} 2>/dev/null; do sleep 1; done",
            std::process::id()
        );
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn unshare (util-linux)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read holder readiness");
        if line.trim() != "ready" {
            let out = child.wait_with_output().expect("holder output");
            panic!(
                "machine namespace setup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.holder = Some(child);
        self.write_wrapper();
    }

    /// Kill the holder's whole process group and wait until the namespace's loop devices are released.
    fn halt(&mut self) {
        let Some(mut child) = self.holder.take() else {
            return;
        };
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.loop_devices().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn write_wrapper(&self) {
        let bin = self.dir.path().join("bin");
        fs::create_dir_all(&bin).expect("create machine bin dir");
        let inner = bin.join("sysext-root-wrapper");
        write_exec(&inner, ROOT_WRAPPER);
        // Called from the test's own namespace, it enters the machine's; called from inside the
        // machine (upd, or the private namespace where upd assembles a new overlay) it runs in place.
        let test_ns = fs::read_link("/proc/self/ns/mnt").expect("read /proc/self/ns/mnt");
        let outer = format!(
            "#!/bin/sh\n# systemd-sysext inside sandbox machine {root}\n\
             if [ \"$(readlink /proc/self/ns/mnt)\" = '{ns}' ]; then\n\
             exec nsenter -t {pid} -m -- /bin/sh '{inner}' \"$@\"\nfi\n\
             exec /bin/sh '{inner}' \"$@\"\n",
            root = self.root().display(),
            ns = test_ns.display(),
            pid = self.pid(),
            inner = inner.display()
        );
        let tmp = bin.join(".systemd-sysext.tmp");
        write_exec(&tmp, &outer);
        fs::rename(&tmp, self.sysext_bin()).expect("install sysext wrapper");
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.halt();
        let left = self.loop_devices();
        if !left.is_empty() {
            eprintln!(
                "WARNING: machine {} left loop devices behind: {left:?}",
                self.root().display()
            );
        }
    }
}

/// A machine's files as [`Machine::save`] copied them.
pub struct Saved {
    dir: tempfile::TempDir,
    /// The /usr it had booted: a restore boots it again, whatever booted since.
    usr_source: Option<UsrSource>,
}

impl Saved {
    /// The copy of the machine's root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

/// `cp -a --reflink=auto FROM TO` (TO must not exist).
fn copy_tree(from: &Path, to: &Path) {
    crate::images::run_tool(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(from)
            .arg(to),
    );
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
}

/// An attached loop device: its node and the `[DEV]:INODE` of its backing file, as `losetup -a` prints them.
///
/// The backing *path* is useless here: a file bound in another mount namespace shows as `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub device: String,
    /// `[DEV]:INODE` of the backing file (st_dev in decimal, st_ino).
    pub backing: String,
}

/// Every attached loop device on the host (`losetup -a`).
pub fn all_loop_devices() -> Vec<LoopDevice> {
    let out = Command::new("losetup")
        .arg("-a")
        .output()
        .expect("run losetup -a");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found: Vec<LoopDevice> = text
        .lines()
        .filter_map(|line| {
            // /dev/loop1: [65024]:10043887 (/path)
            let (device, rest) = line.split_once(": ")?;
            let backing = rest.split(' ').next()?;
            Some(LoopDevice {
                device: device.to_string(),
                backing: backing.to_string(),
            })
        })
        .collect();
    found.sort();
    found
}

/// The attached loop devices whose backing file is a file below `dir` (matched by device and inode).
pub fn loop_devices_under(dir: &Path) -> Vec<LoopDevice> {
    let mut ids = std::collections::BTreeSet::new();
    collect_file_ids(dir, &mut ids);
    all_loop_devices()
        .into_iter()
        .filter(|l| ids.contains(&l.backing))
        .collect()
}

/// The `[DEV]:INODE` of `path` as `losetup -a` prints a loop device's backing file (DEV at least 4 digits).
pub fn backing_id(path: &Path) -> String {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    id_of(&meta)
}

fn id_of(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("[{:04}]:{}", meta.dev(), meta.ino())
}

fn collect_file_ids(dir: &Path, ids: &mut std::collections::BTreeSet<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            collect_file_ids(&entry.path(), ids);
        } else if meta.is_file() {
            ids.insert(id_of(&meta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_wrapper_shadows_the_search_dirs_and_runs_the_real_merger() {
        let dirs = format!("for d in {}; do", SEARCH_DIRS.join(" "));
        assert!(ROOT_WRAPPER.contains(&dirs), "{dirs}");
        let run = format!("{SYSTEMD_SYSEXT} \"$@\"; rc=$?");
        assert!(ROOT_WRAPPER.contains(&run), "{run}");
    }
}
