//! Running systemd-sysext and checking the merged set against the expected one.
//!
//! systemd-sysext 252 merges what it finds and silently skips images that do not match the host (exit 0,
//! extension absent), so a successful `merge`/`refresh` proves nothing: [`verify_merged`] reads what is
//! actually merged now from `ROOT/usr/lib/extension-release.d/` and compares it with what upd expected.
//!
//! Note for `--root`: systemd 252 does not follow symlinks in the image search paths when a root directory
//! is given (`image_discover()` uses `AT_SYMLINK_NOFOLLOW` then), so links into the store are only merged
//! when running on the real root `/`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian installs the merger.
pub const DEFAULT_BIN: &str = "/usr/bin/systemd-sysext";

/// Directory (below the root) holding the release file of every merged extension.
pub const RELEASE_DIR: &str = upd_image::EXTENSION_RELEASE_DIR;

/// Prefix of the release file name; the rest is the extension's name.
pub const RELEASE_PREFIX: &str = "extension-release.";

/// Everything that can go wrong while running or checking systemd-sysext.
#[derive(Debug, thiserror::Error)]
pub enum SysextError {
    /// The binary could not be started at all.
    #[error("cannot run {bin}: {source}")]
    Spawn {
        /// The binary that was run.
        bin: PathBuf,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },
    /// The binary ran and exited unsuccessfully.
    #[error("{bin} {verb} (root {root}) failed with {status}: {stderr}")]
    Failed {
        /// The binary that was run.
        bin: PathBuf,
        /// The verb (merge, unmerge, refresh, list).
        verb: &'static str,
        /// The root it operated on.
        root: PathBuf,
        /// The exit status as printed by the OS.
        status: String,
        /// What it wrote on stderr, trimmed.
        stderr: String,
    },
    /// `list --json=short` printed something that is not the expected JSON.
    #[error("cannot parse the output of {bin} list: {source}; output was: {output}")]
    ListParse {
        /// The binary that was run.
        bin: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
        /// The raw stdout.
        output: String,
    },
    /// Reading a file or directory failed.
    #[error("read {path}: {source}")]
    Read {
        /// The path that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The merged set is not the expected one.
    #[error("merged extensions differ from the expected set: missing {missing:?}, extra {extra:?}, different content {different:?}")]
    Mismatch {
        /// Expected but not merged.
        missing: Vec<String>,
        /// Merged but not expected.
        extra: Vec<String>,
        /// Merged with another extension-release content than expected.
        different: Vec<String>,
    },
}

/// One image systemd-sysext can see in its search paths (`list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ListedImage {
    /// The extension name (file name without `.raw`).
    pub name: String,
    /// `raw`, `directory`, `subvolume` or `block`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it was found (as printed by systemd-sysext, root prefix included).
    pub path: PathBuf,
}

/// The merger: a systemd-sysext binary operating on a root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysext {
    /// The systemd-sysext binary (or a wrapper accepting the same arguments).
    pub bin: PathBuf,
    /// The root it operates on; `/` means the running system (no `--root`).
    pub root: PathBuf,
}

impl Sysext {
    /// A merger for `root` using the given binary.
    pub fn new(bin: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            root: root.into(),
        }
    }

    /// The real systemd-sysext on `root`.
    pub fn system(root: impl Into<PathBuf>) -> Self {
        Self::new(DEFAULT_BIN, root)
    }

    /// The arguments for `verb`: `--root` only when the root is not `/`.
    pub fn args(&self, verb: &str) -> Vec<OsString> {
        let mut args = vec![OsString::from("--no-pager")];
        if self.root != Path::new("/") {
            let mut root = OsString::from("--root=");
            root.push(self.root.as_os_str());
            args.push(root);
        }
        if verb == "list" {
            args.push("--json=short".into());
        }
        args.push(verb.into());
        args
    }

    fn run(&self, verb: &'static str) -> Result<Output, SysextError> {
        let out = Command::new(&self.bin)
            .args(self.args(verb))
            .output()
            .map_err(|source| SysextError::Spawn {
                bin: self.bin.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(out);
        }
        Err(SysextError::Failed {
            bin: self.bin.clone(),
            verb,
            root: self.root.clone(),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// Merge every compatible image found in the search paths (incompatible ones are skipped silently).
    pub fn merge(&self) -> Result<(), SysextError> {
        self.run("merge").map(drop)
    }

    /// Unmerge everything; /usr is the bare OS again.
    pub fn unmerge(&self) -> Result<(), SysextError> {
        self.run("unmerge").map(drop)
    }

    /// Unmerge then merge again; for a moment /usr carries no extension.
    pub fn refresh(&self) -> Result<(), SysextError> {
        self.run("refresh").map(drop)
    }

    /// The images systemd-sysext can see (not what is merged: see [`merged_set`]).
    pub fn list(&self) -> Result<Vec<ListedImage>, SysextError> {
        let out = self.run("list")?;
        parse_list_json(&out.stdout).map_err(|source| SysextError::ListParse {
            bin: self.bin.clone(),
            source,
            output: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }
}

/// Parse the output of `systemd-sysext list --json=short` (252 prints `[]` when there is nothing).
pub fn parse_list_json(stdout: &[u8]) -> Result<Vec<ListedImage>, serde_json::Error> {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(text.trim())
}

/// What is merged now: extension name → content of its `extension-release.NAME` under `root`.
///
/// Without a merge the directory normally does not exist (empty set); release files shipped by the OS's
/// own /usr, if any, show up as well.
pub fn merged_set(root: &Path) -> Result<BTreeMap<String, Vec<u8>>, SysextError> {
    let dir = root.join(RELEASE_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => return Err(SysextError::Read { path: dir, source }),
    };
    let mut set = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| SysextError::Read {
            path: dir.clone(),
            source,
        })?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file_name.strip_prefix(RELEASE_PREFIX) else {
            continue;
        };
        let path = entry.path();
        let content = fs::read(&path).map_err(|source| SysextError::Read { path, source })?;
        set.insert(name.to_string(), content);
    }
    Ok(set)
}

/// Compare a merged set with the expected one: exactly the same names, each with the same content.
pub fn compare_merged(
    actual: &BTreeMap<String, Vec<u8>>,
    expected: &BTreeMap<String, Vec<u8>>,
) -> Result<(), SysextError> {
    let missing: Vec<String> = expected
        .keys()
        .filter(|n| !actual.contains_key(*n))
        .cloned()
        .collect();
    let extra: Vec<String> = actual
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .cloned()
        .collect();
    let different: Vec<String> = expected
        .iter()
        .filter(|(n, want)| actual.get(*n).is_some_and(|got| got != *want))
        .map(|(n, _)| n.clone())
        .collect();
    if missing.is_empty() && extra.is_empty() && different.is_empty() {
        Ok(())
    } else {
        Err(SysextError::Mismatch {
            missing,
            extra,
            different,
        })
    }
}

/// Check that exactly the `expected` extensions (name → extension-release content) are merged under `root`.
pub fn verify_merged(root: &Path, expected: &BTreeMap<String, Vec<u8>>) -> Result<(), SysextError> {
    compare_merged(&merged_set(root)?, expected)
}

/// Is `ROOT/usr` an overlay mount in this process's mount namespace (i.e. are extensions merged)?
pub fn is_merged(root: &Path) -> Result<bool, SysextError> {
    let path = PathBuf::from("/proc/self/mountinfo");
    let mountinfo =
        fs::read_to_string(&path).map_err(|source| SysextError::Read { path, source })?;
    let usr = root.join("usr");
    let usr = fs::canonicalize(&usr).map_err(|source| SysextError::Read { path: usr, source })?;
    Ok(mount_fstype(&mountinfo, &usr).as_deref() == Some("overlay"))
}

/// The filesystem type of the topmost mount at `mount_point` in a mountinfo text, if anything is mounted there.
pub fn mount_fstype(mountinfo: &str, mount_point: &Path) -> Option<String> {
    let wanted = mount_point.to_string_lossy();
    mountinfo
        .lines()
        .filter_map(|line| {
            // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw  (proc(5): field 5 is the
            // mount point, octal-escaped; the fstype follows the " - " separator)
            let point = unescape_octal(line.split(' ').nth(4)?);
            let (_, tail) = line.split_once(" - ")?;
            let fstype = tail.split(' ').next()?;
            (point == wanted).then(|| fstype.to_string())
        })
        .next_back()
}

/// Undo mountinfo's octal escapes (`\040` for a space and so on).
pub(crate) fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
