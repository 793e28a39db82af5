//! A byte-level picture of a directory tree (every entry's kind, mode, size, inode, mtime and
//! content hash or link target), to prove that a command changed nothing.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of the tree as it is on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `dir`, `file`, `link` or `other`.
    pub kind: &'static str,
    /// Permission bits.
    pub mode: u32,
    /// Inode number: a file replaced by rename gets a new one.
    pub ino: u64,
    /// Modification time in nanoseconds: a rewrite in place changes it.
    pub mtime_ns: i128,
    /// File: SHA-256 of the content; link: its target; else empty.
    pub content: String,
}

/// Every entry under `root` (not crossing into other file systems' mounts is not attempted:
/// the tests' roots hold only their own files), keyed by its path relative to `root`.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let md = fs::symlink_metadata(&p).expect("entry metadata");
        let ft = md.file_type();
        let (kind, content) = if ft.is_symlink() {
            ("link", fs::read_link(&p).unwrap().display().to_string())
        } else if ft.is_file() {
            ("file", crate::images::sha256_file(&p))
        } else if ft.is_dir() {
            ("dir", String::new())
        } else {
            ("other", String::new())
        };
        let entry = Entry {
            kind,
            mode: md.mode() & 0o7777,
            ino: md.ino(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            content,
        };
        out.insert(p.strip_prefix(root).unwrap().to_path_buf(), entry);
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

/// The differences between two snapshots, one line each (empty: identical).
pub fn diff(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, b) in before {
        match after.get(p) {
            None => out.push(format!("removed {}", p.display())),
            Some(a) if a != b => out.push(format!("changed {}: {b:?} -> {a:?}", p.display())),
            Some(_) => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("added {}", p.display()));
    }
    out
}
