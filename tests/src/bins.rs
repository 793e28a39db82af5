//! The workspace's binaries under test, built once per test run next to the test binary, in its profile.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The real `upd` (target/<profile>/upd), built once if need be.
pub fn upd() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("upd", "upd"))
}

/// The real `upd-channel` (target/<profile>/upd-channel), built once if need be: cargo builds a
/// dependency's binaries only for that crate's own tests.
pub fn upd_channel() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build("upd-publish", "upd-channel"))
}

/// `cargo build -p PACKAGE --bin BIN` into this test binary's target directory and profile;
/// returns the binary's path (cargo does nothing when it is up to date).
fn build(package: &str, bin: &str) -> PathBuf {
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
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("run cargo build for {bin}: {e}"));
    assert!(
        status.success(),
        "cargo build -p {package} --bin {bin} failed"
    );
    let path = profile_dir.join(bin);
    assert!(path.exists(), "{} missing after the build", path.display());
    path
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
