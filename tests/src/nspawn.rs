//! A booted container: a copy of a cached Debian tree run by `systemd-nspawn -b`, its own systemd as PID 1.
//!
//! Each boot runs nspawn inside a mount namespace of its own (`unshare -m`) with a fresh tmpfs on
//! `/run`, so nspawn's locks and propagation directories never touch the host's. The host's PID 1
//! is not systemd, hence `--keep-unit --register=no`. nspawn's `/dev` is a tmpfs without loop
//! devices, so `/dev/loop-control` and [`LOOP_NODES`] loop nodes (made in the container's temp
//! directory, outside its tree) are bound in: the container's systemd-sysext attaches its images
//! like on a real machine. No `--private-network`: the container shares the host's 127.0.0.1,
//! where the test serves the channel.
//!
//! With `--keep-unit` nspawn puts the container in its own cgroup, so each boot first moves into
//! a cgroup of its own in every systemd-managed hierarchy ([`Cgroups`]): two containers started
//! from one cgroup would share their `init.scope` and `system.slice`, and one container's systemd
//! would take or remove the other's units' cgroups (seen as units failing with 219/CGROUP).
//!
//! Commands run inside with `nsenter -a` on the container's PID 1. A reboot from inside makes
//! nspawn exit with 133 (systemd-nspawn@.service restarts on it); [`Container::reboot`] waits for
//! that and boots the same tree again. Dropping the container halts it (SIGTERM to nspawn, then
//! SIGKILL to its PID 1 and nspawn) and waits for its loop devices to be released.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::rootfs::Suite;
use crate::sandbox::{loop_devices_under, LoopDevice};

/// Loop device nodes bound into the container: sysext gets the lowest free index, which stays
/// below this while the whole suite runs in parallel.
pub const LOOP_NODES: u32 = 256;

/// How long a boot, a reboot or a halt may take.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// nspawn's exit status when the container rebooted.
const REBOOT_STATUS: i32 = 133;

/// A container made from a cached tree, booted or not.
pub struct Container {
    dir: tempfile::TempDir,
    suite: Suite,
    name: String,
    nspawn: Option<Child>,
    leader: Option<u32>,
    boots: u32,
    cgroups: Option<Cgroups>,
}

impl Container {
    /// Copy `tree` (a [`crate::rootfs::rootfs`] of `suite`) into a new temp directory and give it
    /// its own machine-id and hostname; not booted yet (install files through [`Container::root`]).
    pub fn new(suite: Suite, tree: &Path, name: &str) -> Container {
        let dir = tempfile::Builder::new()
            .prefix("upd-nspawn-")
            .tempdir()
            .expect("container temp dir");
        let root = dir.path().join("root");
        let out = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(tree)
            .arg(&root)
            .output()
            .expect("run cp");
        assert!(
            out.status.success(),
            "copy {} to {}: {}",
            tree.display(),
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut id = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .expect("random machine-id");
        fs::write(
            root.join("etc/machine-id"),
            format!("{}\n", hex::encode(id)),
        )
        .expect("write machine-id");
        let name = format!("{name}-{}", suite.systemd);
        fs::write(root.join("etc/hostname"), format!("{name}\n")).expect("write hostname");
        make_loop_nodes(&dir.path().join("dev"));
        Container {
            dir,
            suite,
            name,
            nspawn: None,
            leader: None,
            boots: 0,
            cgroups: None,
        }
    }

    /// The container's `/` as the host sees it (no mounts of the container show here).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The Debian release it runs.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// How many times it booted.
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// The host pid of the container's PID 1 (its systemd).
    pub fn leader(&self) -> u32 {
        self.leader.expect("the container is booted")
    }

    /// Boot with `systemd-nspawn -b` and wait until its systemd has finished booting
    /// (`systemctl is-system-running --wait`); returns that state (`running`, `degraded`).
    pub fn boot(&mut self) -> String {
        assert!(self.nspawn.is_none(), "already booted");
        let log = self.dir.path().join(format!("console-{}.log", self.boots));
        let log = fs::File::create(&log).expect("create console log");
        let tag = format!(
            "{}-{}",
            self.dir
                .path()
                .file_name()
                .expect("temp dir name")
                .to_string_lossy(),
            self.boots
        );
        let cgroups = Cgroups::create(&tag);
        let mut script = String::from("set -e; mount -t tmpfs tmpfs /run; ");
        for procs in cgroups.procs() {
            script.push_str(&format!("echo $$ > '{}'; ", procs.display()));
        }
        self.cgroups = Some(cgroups);
        script.push_str("exec systemd-nspawn");
        for arg in self.nspawn_args() {
            script.push_str(" '");
            script.push_str(&arg);
            script.push('\'');
        }
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn unshare + systemd-nspawn");
        self.nspawn = Some(child);
        self.boots += 1;
        let started = Instant::now();
        let leader = self.wait_leader();
        self.leader = Some(leader);
        let state = self.wait_booted();
        eprintln!(
            "container {}: boot {} {state} in {:.1} s",
            self.name,
            self.boots,
            started.elapsed().as_secs_f64()
        );
        state
    }

    fn nspawn_args(&self) -> Vec<String> {
        let dev = self.dir.path().join("dev");
        let mut args = vec![
            "--quiet".to_string(),
            format!("--directory={}", self.root().display()),
            format!("--machine={}", self.name),
            "--boot".into(),
            "--keep-unit".into(),
            "--register=no".into(),
            "--link-journal=no".into(),
            "--console=pipe".into(),
            "--bind=/dev/loop-control".into(),
        ];
        for i in 0..LOOP_NODES {
            args.push(format!("--bind={}/loop{i}:/dev/loop{i}", dev.display()));
        }
        args
    }

    /// The container's PID 1: nspawn's child once it runs systemd.
    fn wait_leader(&mut self) -> u32 {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let pid = self.nspawn.as_ref().expect("nspawn").id();
            let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
            for c in children.unwrap_or_default().split_whitespace() {
                let comm = fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return c.parse().expect("pid");
                }
            }
            if let Some(status) = self
                .nspawn
                .as_mut()
                .expect("nspawn")
                .try_wait()
                .expect("wait")
            {
                self.nspawn = None;
                panic!(
                    "systemd-nspawn exited ({status}) before booting:\n{}",
                    self.console()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no container PID 1:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_booted(&self) -> String {
        let socket = PathBuf::from(format!("/proc/{}/root/run/systemd/private", self.leader()));
        let deadline = Instant::now() + BOOT_TIMEOUT;
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "no manager socket:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = self.exec(&["systemctl", "is-system-running", "--wait"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            state == "running" || state == "degraded",
            "the container did not finish booting: '{state}' {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.console()
        );
        state
    }

    /// What nspawn and the container printed on their console, every boot so far.
    pub fn console(&self) -> String {
        (0..self.boots.max(1))
            .map(|b| {
                let p = self.dir.path().join(format!("console-{b}.log"));
                fs::read_to_string(p).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- reboot ---\n")
    }

    /// Run `cmd` inside the container (all its namespaces, its root), at most [`BOOT_TIMEOUT`].
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("timeout")
            .args(["--kill-after=5", &BOOT_TIMEOUT.as_secs().to_string()])
            .args(["nsenter", "-t", &self.leader().to_string(), "-a", "--"])
            .args(cmd)
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .output()
            .unwrap_or_else(|e| panic!("nsenter {cmd:?}: {e}"))
    }

    /// Run a shell script inside the container.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// Run `cmd` inside the container and return its stdout; panics if it fails.
    pub fn ok(&self, cmd: &[&str]) -> String {
        let out = self.exec(cmd);
        assert!(
            out.status.success(),
            "{cmd:?} failed in the {} container ({}): {}{}",
            self.suite.codename,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show UNIT -p PROPERTY --value`.
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.ok(&["systemctl", "show", unit, "-p", property, "--value"])
            .trim()
            .to_string()
    }

    /// `systemctl reboot` inside, wait for nspawn to exit with 133, and boot the same tree again;
    /// returns the new boot's state.
    pub fn reboot(&mut self) -> String {
        let _ = self.exec(&["systemctl", "reboot"]);
        let status = self.wait_exit();
        assert_eq!(
            status,
            Some(REBOOT_STATUS),
            "nspawn did not report a reboot:\n{}",
            self.console()
        );
        self.boot()
    }

    /// Wait for nspawn to exit by itself (then its cgroups are removed); its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut child = self.nspawn.take().expect("booted");
        self.leader = None;
        loop {
            if let Some(status) = child.try_wait().expect("wait for nspawn") {
                if let Some(cgroups) = self.cgroups.take() {
                    cgroups.remove();
                }
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                panic!("the container did not go down:\n{}", self.console());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Halt the container (SIGTERM to nspawn, which asks PID 1 to halt; SIGKILL after a grace
    /// period) and wait until its loop devices are released; returns those still attached.
    pub fn halt(&mut self) -> Vec<LoopDevice> {
        let started = Instant::now();
        if let Some(mut child) = self.nspawn.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(leader) = self.leader.take() {
                let _ = kill(Pid::from_raw(leader as i32), Signal::SIGKILL);
            }
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = child.wait();
            eprintln!(
                "container {}: halted in {:.1} s",
                self.name,
                started.elapsed().as_secs_f64()
            );
        }
        self.leader = None;
        if let Some(cgroups) = self.cgroups.take() {
            cgroups.remove();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = loop_devices_under(self.dir.path());
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let left = self.halt();
        if !left.is_empty() {
            eprintln!(
                "WARNING: container {} left loop devices behind: {left:?}",
                self.name
            );
        }
    }
}

/// Block nodes `loop0` .. `loop{LOOP_NODES-1}` (major 7) in `dir`, to bind into the container.
fn make_loop_nodes(dir: &Path) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    fs::create_dir_all(dir).expect("create loop node dir");
    for i in 0..LOOP_NODES {
        let path = dir.join(format!("loop{i}"));
        mknod(
            &path,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            makedev(7, u64::from(i)),
        )
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
    }
}

/// The cgroups one boot of a container runs in: a new child of this process's cgroup in each
/// hierarchy systemd manages (`name=systemd` and the unified one on a hybrid host like this
/// one, the one cgroup2 tree on a unified host).
struct Cgroups {
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Make `<current cgroup>/upd-nspawn-<tag>` in each hierarchy systemd uses.
    fn create(tag: &str) -> Cgroups {
        let own = fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let mut dirs = Vec::new();
        for (mount, key) in [
            ("/sys/fs/cgroup/systemd", "name=systemd"),
            ("/sys/fs/cgroup/unified", ""),
            ("/sys/fs/cgroup", ""),
        ] {
            let mount = Path::new(mount);
            if !mount.join("cgroup.procs").exists() {
                continue;
            }
            let Some(current) = own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
                (controllers == key).then(|| path.trim_start_matches('/').to_string())
            }) else {
                continue;
            };
            let dir = mount.join(current).join(format!("upd-nspawn-{tag}"));
            fs::create_dir_all(&dir)
                .unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
            dirs.push(dir);
        }
        assert!(
            !dirs.is_empty(),
            "no systemd cgroup hierarchy under /sys/fs/cgroup to run a container in"
        );
        Cgroups { dirs }
    }

    /// The `cgroup.procs` files to write the container's nspawn pid into.
    fn procs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Remove the cgroups and what the container's systemd made under them, deepest first (once
    /// its processes are gone; a cgroup still in use stays, with a warning).
    fn remove(self) {
        for dir in &self.dirs {
            let mut all = Vec::new();
            collect_dirs(dir, &mut all);
            all.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in all {
                let deadline = Instant::now() + Duration::from_secs(5);
                while let Err(e) = fs::remove_dir(&d) {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        break;
                    }
                    if Instant::now() > deadline {
                        eprintln!("WARNING: cgroup {} stays: {e}", d.display());
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

/// `dir` and every directory under it.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}
