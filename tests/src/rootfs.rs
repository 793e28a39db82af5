//! Minimal Debian root file systems for booted containers, built with mmdebstrap and cached between runs.
//!
//! A tree lives in `CACHE/<codename>-<key>/`, where CACHE is `$UPD_ROOTFS_CACHE` (default
//! [`DEFAULT_CACHE`]) and the key is a hash of everything the build depends on: the suite, the
//! variant, the mirror and the package list. A tree is built under a temporary name and renamed
//! into place only once mmdebstrap succeeded, so a present directory is a complete one; builds of
//! one suite are serialised across processes by a lock file, so parallel runs never build twice.
//! Change the recipe and the key changes with it: the old tree is simply no longer used.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

/// The environment variable naming the cache directory (the test command sets it).
pub const CACHE_ENV: &str = "UPD_ROOTFS_CACHE";

/// The cache directory when [`CACHE_ENV`] is unset.
pub const DEFAULT_CACHE: &str = "/var/cache/upd-tests/rootfs";

/// The Debian mirror the trees are built from.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// What every tree holds beyond Debian's essential set: the init and merger under test, the image
/// tools upd calls, and util-linux (losetup, mount).
pub const PACKAGES: [&str; 4] = ["systemd", "squashfs-tools", "erofs-utils", "util-linux"];

/// mmdebstrap's variant: Essential: yes packages only, plus [`PACKAGES`] (no apt in the tree).
const VARIANT: &str = "essential";

/// Bumped when the recipe changes in a way the other key inputs do not show.
const RECIPE: u32 = 1;

/// A Debian release a container boots, with the systemd it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// The Debian codename (the mmdebstrap suite).
    pub codename: &'static str,
    /// Its `VERSION_ID=`.
    pub version_id: &'static str,
    /// The major version of the systemd it ships.
    pub systemd: u32,
}

/// Debian 12 with systemd 252.
pub const BOOKWORM: Suite = Suite {
    codename: "bookworm",
    version_id: "12",
    systemd: 252,
};

/// Debian 13 with systemd 257.
pub const TRIXIE: Suite = Suite {
    codename: "trixie",
    version_id: "13",
    systemd: 257,
};

/// The cache directory: `$UPD_ROOTFS_CACHE`, else [`DEFAULT_CACHE`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CACHE), PathBuf::from)
}

/// The cache key of `suite`'s tree: 16 hex digits of a SHA-256 over every input of the build.
pub fn key(suite: &Suite) -> String {
    let recipe = format!(
        "recipe {RECIPE}\nsuite {}\nvariant {VARIANT}\nmirror {MIRROR}\npackages {}\n",
        suite.codename,
        PACKAGES.join(",")
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, recipe.as_bytes());
    hex::encode(&digest.as_ref()[..8])
}

/// The cached tree of `suite` (read-only by convention: copy it before booting), built first if
/// it is missing. Panics with mmdebstrap's output when the build fails.
pub fn rootfs(suite: &Suite) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(&'static str, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(Vec::new()));
    // One thread per process builds; the others wait for it (the lock is held while building).
    let mut done = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, path)) = done.iter().find(|(c, _)| *c == suite.codename) {
        return path.clone();
    }
    let path = ensure(suite, &cache_dir());
    done.push((suite.codename, path.clone()));
    path
}

/// Build `suite`'s tree into `cache` unless it is there; return its path.
fn ensure(suite: &Suite, cache: &Path) -> PathBuf {
    fs::create_dir_all(cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    let name = format!("{}-{}", suite.codename, key(suite));
    let tree = cache.join(&name);
    let lock_path = cache.join(format!(".{}.lock", suite.codename));
    let lock = fs::File::create(&lock_path)
        .unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
    // Another process may be building the same suite: wait for it, then use its tree.
    let _guard = flock(lock, &lock_path);
    if tree.join("usr/lib/os-release").exists() {
        return tree;
    }
    sweep(cache, suite.codename);
    let tmp = cache.join(format!(".{name}.tmp-{}", std::process::id()));
    let started = Instant::now();
    let out = Command::new("mmdebstrap")
        .arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={}", PACKAGES.join(",")))
        .args(["--format=directory", "--quiet", suite.codename])
        .arg(&tmp)
        .arg(MIRROR)
        .output()
        .unwrap_or_else(|e| panic!("run mmdebstrap (scripts/prereqs installs it): {e}"));
    assert!(
        out.status.success(),
        "mmdebstrap {} failed ({}): {}{}",
        suite.codename,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(&tmp, &tree).unwrap_or_else(|e| panic!("rename into {}: {e}", tree.display()));
    eprintln!(
        "rootfs: built {} (systemd {}) in {:.1} s into {}",
        suite.codename,
        suite.systemd,
        started.elapsed().as_secs_f64(),
        tree.display()
    );
    tree
}

/// Remove half-built trees of `codename` left by a run that died (the caller holds the lock).
fn sweep(cache: &Path, codename: &str) {
    let prefix = format!(".{codename}-");
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&prefix) && n.contains(".tmp-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// Take an exclusive `flock` on `file`, blocking; released when the returned guard is dropped.
fn flock(file: fs::File, path: &Path) -> Flock<fs::File> {
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(guard) => return guard,
            Err((f, nix::errno::Errno::EINTR)) => file = f,
            Err((_, e)) => panic!("flock {}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_suite_and_are_stable() {
        assert_ne!(key(&BOOKWORM), key(&TRIXIE));
        assert_eq!(key(&BOOKWORM), key(&BOOKWORM));
        assert_eq!(key(&BOOKWORM).len(), 16);
    }
}
