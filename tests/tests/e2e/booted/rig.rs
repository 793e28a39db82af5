//! The rig: a Debian container with upd, its units, config, trust root and a health check installed,
//! following a channel the test serves on the host's 127.0.0.1, booted by its own systemd.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use upd_channels::manifest::{ExtBuild, Sha256, Target};
use upd_channels::name::{Name, RelPath};
use upd_tests::bins;
use upd_tests::channel::{identity_of, Channel};
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::images::{make_image, sha256_file, OsSpec, SysextSpec};
use upd_tests::nspawn::Container;
use upd_tests::rootfs::{rootfs, Suite, BOOKWORM, TRIXIE};
use upd_tests::sandbox::require_root;

/// Both systemd versions under test.
pub(crate) const SUITES: [Suite; 2] = [BOOKWORM, TRIXIE];

/// Where the health check leaves its mark (mark-good's sandbox may write /run).
pub(crate) const HEALTH_MARK: &str = "run/upd-health-ran";

/// Generate `systemd_252` and `systemd_257` tests that run `$body(suite)` in a module `$name`.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn systemd_252() {
                super::$name(upd_tests::rootfs::BOOKWORM);
            }

            #[test]
            fn systemd_257() {
                super::$name(upd_tests::rootfs::TRIXIE);
            }
        }
    };
}
pub(crate) use on_both;

/// A booted container following channel `stable`, which the test serves and edits.
pub(crate) struct Rig {
    pub(crate) c: Container,
    pub(crate) ch: Channel,
    pub(crate) server: FaultServer,
    _rt: tokio::runtime::Runtime,
}

impl Rig {
    /// A container of `suite` with everything installed, following a channel that offers its OS
    /// (no extensions yet), booted once; `None` when not root (outside CI, after a SKIP line).
    pub(crate) fn boot(suite: Suite, name: &str) -> Option<Rig> {
        if !require_root() {
            return None;
        }
        assert!(SUITES.contains(&suite));
        let (rt, server) = FaultServer::start_with_runtime();
        let mut ch = Channel::new("stable");
        ch.add_os_release(&os_version(suite), &os(suite));
        let c = Container::new(suite, &rootfs(&suite), name);
        let mut rig = Rig {
            c,
            ch,
            server,
            _rt: rt,
        };
        rig.install();
        rig.publish();
        let state = rig.c.boot();
        rig.assert_booted(&state, "first boot");
        Some(rig)
    }

    /// The container's tree, from the host.
    pub(crate) fn root(&self) -> PathBuf {
        self.c.root()
    }

    /// Install upd, the units of systemd/ (enabled, with systemd-sysext.service, which Debian
    /// leaves disabled), tmpfiles.d, the configuration, the trust root and a health check.
    fn install(&self) {
        let root = self.root();
        copy_exec(bins::upd(), &root.join("usr/bin/upd"));
        let units = repo_dir().join("systemd/system");
        for e in fs::read_dir(&units).expect("systemd/system") {
            let p = e.expect("unit").path();
            copy(
                &p,
                &root.join("etc/systemd/system").join(p.file_name().unwrap()),
            );
        }
        copy(
            &repo_dir().join("systemd/tmpfiles.d/upd.conf"),
            &root.join("etc/tmpfiles.d/upd.conf"),
        );
        write(
            &root.join("usr/share/upd/keys/root.json"),
            self.ch.root_json(),
        );
        write(&root.join("etc/upd/upd.conf"), self.config().as_bytes());
        let check = format!(
            "#!/bin/sh\n# booted-suite health check: leaves a mark where the test looks\n\
             echo \"health check ran (UPD_ROOT=$UPD_ROOT)\"\ndate +%s > /{HEALTH_MARK}\n"
        );
        write(&root.join("etc/upd/health.d/10-booted"), check.as_bytes());
        set_exec(&root.join("etc/upd/health.d/10-booted"));
        // The tree's os-release stays stock Debian (VERSION_ID="12" or "13", no IMAGE_VERSION):
        // upd takes VERSION_ID as the release version, as systemd orders versions.
        // systemd-journal-catalog-update.service (ConditionNeedsUpdate=/etc) runs again on the boot
        // after a merge changed /usr's mtime, concurrently with systemd-sysext.service, and under
        // 257 it was seen to fail there ("Failed to spawn executor: No such file or directory"),
        // degrading the boot for a reason that is not upd's. Masked in the test trees.
        let mask = root.join("etc/systemd/system/systemd-journal-catalog-update.service");
        std::os::unix::fs::symlink("/dev/null", &mask).expect("mask catalog update");
        let out = Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .args([
                "enable",
                "upd-boot.service",
                "upd-mark-good.service",
                "upd.timer",
                "systemd-sysext.service",
            ])
            .output()
            .expect("systemctl --root enable");
        assert!(
            out.status.success(),
            "systemctl --root enable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The container's /etc/upd/upd.conf.
    pub(crate) fn config(&self) -> String {
        format!(
            "SERVER=http://{}\nCHANNEL=stable\nEXTENSIONS=hello world\nSTALL_TIMEOUT_SECS=5\n",
            self.server.addr()
        )
    }

    /// A squashfs extension `name` `version` built for this container's OS.
    pub(crate) fn ext(&self, name: &str, version: &str) -> SysextSpec {
        SysextSpec::new(name, version, "debian", self.c.suite().version_id)
    }

    /// Add `spec` to the channel's release of the running OS.
    pub(crate) fn add(&mut self, spec: &SysextSpec) {
        let v = os_version(self.c.suite());
        self.ch.add_extension(&v, spec);
    }

    /// Add `spec`'s build with `extra` files (path below the image root, content) in its image:
    /// a build upd's checks read like any other, with content systemd-sysext may judge.
    pub(crate) fn add_with_files(&mut self, spec: &SysextSpec, extra: &[(&str, &str)]) {
        let scratch = tempfile::tempdir_in(self.ch.repo()).expect("scratch dir");
        let tree = scratch.path().join("tree");
        let usr = tree.join("usr");
        let release = format!("lib/extension-release.d/extension-release.{}", spec.name);
        write(&usr.join(release), &spec.release_content());
        if let Some((bin, text)) = &spec.program {
            let p = usr.join("bin").join(bin);
            write(&p, format!("#!/bin/sh\necho '{text}'\n").as_bytes());
            set_exec(&p);
        }
        for (path, content) in extra {
            write(&tree.join(path), content.as_bytes());
        }
        let img = scratch.path().join(spec.file_name());
        make_image(spec.format, &tree, &img);
        let sha = sha256_file(&img);
        let rel = format!(
            "images/{}/{}-{}-{}.raw",
            spec.name,
            spec.name,
            spec.version,
            &sha[..12]
        );
        let dest = self.ch.repo().join(&rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&img, &dest).expect("import image");
        let build = ExtBuild::new(
            Name::new(&spec.name).unwrap(),
            semver::Version::parse(&spec.version).unwrap(),
            Target {
                path: RelPath::new(&rel).unwrap(),
                size: fs::metadata(&dest).unwrap().len(),
                sha256: Sha256::from_hex(&sha).unwrap(),
                chunk_index: None,
            },
            identity_of(spec),
        );
        let v = os_version(self.c.suite());
        self.ch.release_mut(&v).extensions.push(build);
    }

    /// Sign and serve the channel as it is now.
    pub(crate) fn publish(&mut self) {
        self.ch.publish();
        for (url, file) in self.ch.files() {
            self.server.put_file(&url, file, Fault::Normal).unwrap();
        }
    }

    /// `systemctl start upd.service` inside: what the timer does.
    pub(crate) fn start_upd(&self) -> Output {
        self.c.exec(&["systemctl", "start", "upd.service"])
    }

    /// `systemctl start upd.service`, insisting that it succeeds (its journal otherwise).
    pub(crate) fn start_upd_ok(&self) {
        let out = self.start_upd();
        assert!(
            out.status.success(),
            "upd.service:\n{}",
            self.journal("upd.service")
        );
    }

    /// Publish hello 1.0.0 (squashfs) and world 1.0.0 (erofs) and let upd.service pull them.
    pub(crate) fn pull_v1(&mut self) {
        self.add(&self.ext("hello", "1.0.0"));
        self.add(&self.ext("world", "1.0.0").erofs());
        self.publish();
        self.start_upd_ok();
    }

    /// Run the program `name` from the merged /usr; its stdout, or panic.
    pub(crate) fn program(&self, name: &str) -> String {
        self.c.ok(&[name])
    }

    /// Names of the extensions merged now, from the container's /usr/lib/extension-release.d.
    pub(crate) fn merged(&self) -> Vec<String> {
        let out = self
            .c
            .sh("ls /usr/lib/extension-release.d/ 2>/dev/null || true");
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|n| n.strip_prefix("extension-release.").map(String::from))
            .collect();
        names.sort();
        names
    }

    /// /etc/extensions: link name → target.
    pub(crate) fn links(&self) -> BTreeMap<String, String> {
        let mut links = BTreeMap::new();
        let dir = self.root().join("etc/extensions");
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let t = fs::read_link(e.path()).map(|t| t.display().to_string());
            let name = e.file_name().to_string_lossy().into_owned();
            links.insert(name, t.unwrap_or_else(|_| "(not a link)".into()));
        }
        links
    }

    /// The journal of `unit` in this boot, message text only.
    pub(crate) fn journal(&self, unit: &str) -> String {
        let out = self
            .c
            .exec(&["journalctl", "-b", "-u", unit, "-o", "cat", "--no-pager"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The unit's journal once it holds `needle`, or as it is after 20 s. A service's stdout
    /// reaches journald through a stream socket that journald reads on its own schedule, so
    /// the unit's last lines can land after systemd already logged "Finished": poll, do not
    /// read once. The lines of a short-lived process whose cgroup journald could not read any
    /// more (it had exited) carry no `_SYSTEMD_UNIT`, so `-u` misses them: its program's
    /// syslog identifier (the unit's name without `.service`) is read too.
    pub(crate) fn journal_with(&self, unit: &str, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let ident = unit.trim_end_matches(".service");
        loop {
            let out = self
                .c
                .exec(&["journalctl", "-b", "-t", ident, "-o", "cat", "--no-pager"]);
            let log = format!(
                "{}{}",
                self.journal(unit),
                String::from_utf8_lossy(&out.stdout)
            );
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// `systemctl --failed` and the journal of each failed unit, for assertion messages.
    pub(crate) fn failed_units(&self) -> String {
        let out = self
            .c
            .exec(&["systemctl", "--failed", "--plain", "--no-legend"]);
        let list = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut text = format!("failed units:\n{list}");
        for unit in list.lines().filter_map(|l| l.split_whitespace().next()) {
            text.push_str(&format!("--- {unit}:\n{}", self.journal(unit)));
        }
        text
    }

    /// A reboot from inside; asserts the new boot is not degraded.
    pub(crate) fn reboot(&mut self) {
        let state = self.c.reboot();
        self.assert_booted(&state, "after reboot");
    }

    /// Asserts the boot reached "running". One exception, said on stderr: under systemd 257,
    /// PID 1 was seen (twice in about forty boots, on a loaded 2-core machine) to fail spawning
    /// an early unit of its own ("Failed to spawn executor: No such file or directory", result
    /// 'resources') while systemd-sysext.service merged /usr at the same instant. A boot
    /// degraded only by that, in units that are neither upd's nor systemd-sysext's, passes.
    pub(crate) fn assert_booted(&self, state: &str, when: &str) {
        if state == "running" {
            return;
        }
        let failed = self.failed_units();
        let out = self
            .c
            .exec(&["systemctl", "--failed", "--plain", "--no-legend"]);
        let units: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        let race = |u: &String| {
            !u.starts_with("upd")
                && !u.starts_with("systemd-sysext")
                && self
                    .journal(u)
                    .contains("Failed to spawn executor: No such file or directory")
        };
        let only_race = state == "degraded"
            && self.c.suite().systemd >= 257
            && !units.is_empty()
            && units.iter().all(race);
        assert!(only_race, "{when}: state {state}\n{failed}");
        eprintln!("NOTE {when}: boot degraded only by systemd 257's executor spawn race, not upd's: {units:?}");
    }

    /// Halt the container; it must leave no loop device behind.
    pub(crate) fn finish(mut self) {
        let left = self.c.halt();
        assert!(left.is_empty(), "loop devices left attached: {left:?}");
    }
}

/// The OS release upd sees for `suite`: stock Debian's `VERSION_ID` (`12`, `13`).
pub(crate) fn os_version(suite: Suite) -> String {
    suite.version_id.to_string()
}

/// The channel's identity of `suite`'s OS.
fn os(suite: Suite) -> OsSpec {
    OsSpec::new("debian", suite.version_id)
}

/// The workspace root.
pub(crate) fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Stdout then stderr, as text.
pub(crate) fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn copy(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

fn copy_exec(from: &Path, to: &Path) {
    copy(from, to);
    set_exec(to);
}

fn set_exec(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}
