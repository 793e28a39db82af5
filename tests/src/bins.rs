//! The workspace's binaries under test, built once per test run next to the test binary, in its profile.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

/// The real `upd` with failpoints (`UPD_FAILPOINT=NAME` kills it at NAME), built once if need be;
/// the same build as this test binary links (see tests/Cargo.toml), so nothing is rebuilt.
pub fn upd() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("upd", "upd", &["--features", "failpoints"], "failpoints"))
}

/// The real `upd` as `cargo build -p upd` makes it, with the default features: the binary that
/// gets installed, which must ignore `UPD_FAILPOINT`.
pub fn upd_default() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("upd", "upd", &[], "default"))
}

/// The real `upd-channel` (target/<profile>/upd-channel), built once if need be: cargo builds a
/// dependency's binaries only for that crate's own tests.
pub fn upd_channel() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("upd-publish", "upd-channel", &[], "default"))
}

/// `cargo build -p PACKAGE --bin BIN FEATURE_ARGS` into this test binary's target directory and
/// profile; returns the path of a hard link to the binary it made, `target/<profile>/e2e-bins/VARIANT/BIN`
/// (cargo does nothing when the build is up to date).
///
/// Cargo replaces `target/<profile>/BIN` with a link to the last build of BIN, and the two builds of
/// `upd` (with and without failpoints) share that name: the lock and the own link keep one test's
/// build from swapping the binary under another's feet.
fn build(package: &str, bin: &str, feature_args: &[&str], variant: &str) -> PathBuf {
    static BUILDS: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<exe>");
    let target_dir = profile_dir.parent().expect("target directory");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(feature_args)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    // `cargo test` hands the test process its package's variables (CARGO_PKG_NAME=upd-tests,
    // CARGO_MANIFEST_DIR, …). Inherited by this cargo, they reach the build scripts that declare
    // `rerun-if-env-changed` on them (ring's does): ring and all that links it were rebuilt here,
    // and again by the next `cargo test` from a shell, minutes each time.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_BIN_")
            || ["CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("run cargo build for {bin}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} {feature_args:?} failed"
    );
    let built = profile_dir.join(bin);
    assert!(
        built.exists(),
        "{} missing after the build",
        built.display()
    );
    let dir = profile_dir.join("e2e-bins").join(variant);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let kept = dir.join(bin);
    match fs::remove_file(&kept) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            panic!("remove {}: {e}", kept.display())
        }
        _ => {}
    }
    fs::hard_link(&built, &kept)
        .unwrap_or_else(|e| panic!("link {} to {}: {e}", kept.display(), built.display()));
    kept
}

/// A temporary working directory to run the real `upd-channel` in (keys, images and the
/// repository `repo/` live there).
pub struct ChannelWorkdir {
    dir: tempfile::TempDir,
}

impl ChannelWorkdir {
    /// A fresh empty directory.
    pub fn new() -> ChannelWorkdir {
        ChannelWorkdir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// `rel` inside the directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The repository's path, as an argument.
    pub fn repo(&self) -> String {
        self.path("repo").display().to_string()
    }

    /// Run `upd-channel ARGS` in the directory.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(upd_channel())
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run upd-channel")
    }
}

impl Default for ChannelWorkdir {
    fn default() -> Self {
        Self::new()
    }
}
