//! upd-image: reading files from inside squashfs and erofs images, for the updater and the publisher.
//!
//! Nothing outside the image is trusted: the format comes from the magic bytes, paths are
//! resolved component by component inside the image (symlinks included, absolute ones
//! relative to the image root, like systemd's `chase()`), and every read is bounded.
//! squashfs is read with `unsquashfs`; erofs by a read-only loop mount in a private mount
//! namespace when running as root, else by `fsck.erofs --extract` into a temporary directory.

mod tree;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;
use upd_channels::osrelease::{OsRelease, ReleaseError};

use tree::{with_dir, with_tree, Kind, Tree};

/// The most bytes read from an os-release or extension-release file.
pub const MAX_RELEASE_LEN: u64 = 64 * 1024;

/// The directory that holds extension-release files inside an extension image.
pub const EXTENSION_RELEASE_DIR: &str = "usr/lib/extension-release.d";

/// The most symlinks followed while resolving one path (as systemd's CHASE_MAX).
const MAX_SYMLINKS: usize = 32;

/// Why a file could not be read from an image.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The image file itself could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The image path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Neither squashfs nor erofs magic was found.
    #[error("{path}: not a squashfs or erofs image (no known magic)")]
    UnknownFormat {
        /// The image path.
        path: PathBuf,
    },
    /// The path asked for is not a plain relative path.
    #[error("invalid path inside image: {inner:?} (need relative components, no '.', '..' or wildcards)")]
    InvalidInnerPath {
        /// The path as given.
        inner: String,
    },
    /// A file inside the mounted or extracted image could not be read.
    #[error("{image}: cannot read {inner} inside the image: {source}")]
    ReadInner {
        /// The image path.
        image: PathBuf,
        /// The path inside the image.
        inner: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper tool could not be started.
    #[error("{image}: cannot run {tool}: {source}")]
    Spawn {
        /// The image path.
        image: PathBuf,
        /// The tool.
        tool: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A helper tool failed.
    #[error("{image}: {tool} failed ({status}): {stderr}")]
    Tool {
        /// The image path.
        image: PathBuf,
        /// The tool and its main arguments.
        tool: String,
        /// How it exited.
        status: String,
        /// What it said on stderr (bounded).
        stderr: String,
    },
    /// The file inside the image is larger than allowed.
    #[error("{image}: {inner} is larger than {max} bytes")]
    TooLarge {
        /// The image path.
        image: PathBuf,
        /// The path inside the image.
        inner: String,
        /// The limit.
        max: u64,
    },
    /// The path inside the image is a directory or special file.
    #[error("{image}: {inner} is not a regular file")]
    NotRegularFile {
        /// The image path.
        image: PathBuf,
        /// The path inside the image.
        inner: String,
    },
    /// Too many symlinks, or a symlink loop, while resolving a path.
    #[error("{image}: too many levels of symbolic links resolving {inner}")]
    SymlinkLoop {
        /// The image path.
        image: PathBuf,
        /// The path inside the image.
        inner: String,
    },
    /// A release file is not valid UTF-8 or not valid os-release syntax.
    #[error("{image}: {inner}: {reason}")]
    BadRelease {
        /// The image path.
        image: PathBuf,
        /// The path inside the image.
        inner: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The extension image carries no usable `extension-release.*` file.
    #[error(
        "{image}: no {EXTENSION_RELEASE_DIR}/extension-release.{name} (release files present: {})",
        if found.is_empty() { "none".to_string() } else { found.join(", ") }
    )]
    NoExtensionRelease {
        /// The image path.
        image: PathBuf,
        /// The name that was looked for.
        name: String,
        /// The release files the image does carry.
        found: Vec<String>,
    },
    /// The OS image carries neither `lib/os-release` nor `usr/lib/os-release`.
    #[error("{image}: no lib/os-release or usr/lib/os-release in the image")]
    NoOsRelease {
        /// The image path.
        image: PathBuf,
    },
}

/// A file system image format, told by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// squashfs: "hsqs" at offset 0.
    Squashfs,
    /// erofs: 0xE0F5E1E2 (little-endian) at offset 1024.
    Erofs,
}

impl ImageFormat {
    /// Reads the magic bytes of the file at `path`.
    pub fn detect(path: &Path) -> Result<ImageFormat, ImageError> {
        let io = |source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut head = Vec::with_capacity(1028);
        File::open(path)
            .map_err(io)?
            .take(1028)
            .read_to_end(&mut head)
            .map_err(io)?;
        if head.starts_with(b"hsqs") {
            return Ok(ImageFormat::Squashfs);
        }
        if head.len() >= 1028 && head[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
            return Ok(ImageFormat::Erofs);
        }
        Err(ImageError::UnknownFormat {
            path: path.to_path_buf(),
        })
    }
}

/// Splits a relative path into checked components: no empty, '.', '..' or wildcard parts
/// (unsquashfs treats its path arguments as patterns).
fn components(inner: &str) -> Result<Vec<String>, ImageError> {
    let bad = || ImageError::InvalidInnerPath {
        inner: inner.to_string(),
    };
    let parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    let ok = |c: &String| {
        !c.is_empty() && c != "." && c != ".." && !c.contains(['*', '?', '[', ']', '\\'])
    };
    if parts.iter().all(ok) {
        Ok(parts)
    } else {
        Err(bad())
    }
}

/// Resolves `inner` inside the tree, following symlinks within the image root; returns the
/// resolved components and their kind, or None when something on the way is missing.
fn resolve(tree: &dyn Tree, inner: &str) -> Result<Option<(Vec<String>, Kind)>, ImageError> {
    let mut todo: Vec<String> = components(inner)?.into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop(); // never above the image root
                continue;
            }
            _ => {}
        }
        done.push(part);
        let Some(kind) = tree.kind(&done)? else {
            return Ok(None);
        };
        match kind {
            Kind::Symlink(target) => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    let inner = inner.to_string();
                    return Err(ImageError::SymlinkLoop {
                        image: tree.image().to_path_buf(),
                        inner,
                    });
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_string));
            }
            Kind::Dir if todo.is_empty() => return Ok(Some((done, Kind::Dir))),
            Kind::Dir => {}
            other if todo.is_empty() => return Ok(Some((done, other))),
            // A file or special file in the middle of the path: nothing below it.
            _ => return Ok(None),
        }
    }
    Ok(Some((done, Kind::Dir))) // every component was '.' or '..': the root itself
}

/// Reads a regular file, following symlinks inside the tree; None when absent.
fn read_in(tree: &dyn Tree, inner: &str, max_len: u64) -> Result<Option<Vec<u8>>, ImageError> {
    let image = tree.image().to_path_buf();
    match resolve(tree, inner)? {
        None => Ok(None),
        Some((parts, Kind::File)) => match tree.read(&parts, max_len)? {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(ImageError::TooLarge {
                image,
                inner: inner.to_string(),
                max: max_len,
            }),
        },
        Some(_) => Err(ImageError::NotRegularFile {
            image,
            inner: inner.to_string(),
        }),
    }
}

/// Reads the file `inner` (relative to the image root) from `image`, at most `max_len` bytes;
/// `Ok(None)` when the image has no such file.
pub fn read_file(image: &Path, inner: &str, max_len: u64) -> Result<Option<Vec<u8>>, ImageError> {
    components(inner)?;
    with_tree(image, |tree| read_in(tree, inner, max_len))
}

/// Parses release-file bytes, naming the image and file on error.
fn parse_release(image: &Path, inner: &str, bytes: Vec<u8>) -> Result<OsRelease, ImageError> {
    let bad = |reason: String| ImageError::BadRelease {
        image: image.to_path_buf(),
        inner: inner.to_string(),
        reason,
    };
    let text = String::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    OsRelease::parse(&text).map_err(|e: ReleaseError| bad(e.to_string()))
}

/// Reads `usr/lib/extension-release.d/extension-release.<name>` from an extension image and
/// returns the NAME of the release file found with its contents. When that file is missing but
/// the image carries exactly one other `extension-release.OTHER`, returns ("OTHER", contents),
/// so that the compatibility check can say which name the image was built for.
pub fn read_extension_release(image: &Path, name: &str) -> Result<(String, OsRelease), ImageError> {
    let exact = format!("{EXTENSION_RELEASE_DIR}/extension-release.{name}");
    components(&exact)?;
    let (found, inner, bytes) = with_tree(image, |tree| {
        if let Some(bytes) = read_in(tree, &exact, MAX_RELEASE_LEN)? {
            return Ok((name.to_string(), exact.clone(), bytes));
        }
        let others = match resolve(tree, EXTENSION_RELEASE_DIR)? {
            Some((dir, Kind::Dir)) => tree.list(&dir)?,
            _ => Vec::new(),
        };
        let mut others: Vec<String> = others
            .iter()
            .filter_map(|n| n.strip_prefix("extension-release."))
            .map(str::to_string)
            .collect();
        others.sort();
        let missing = || ImageError::NoExtensionRelease {
            image: image.to_path_buf(),
            name: name.to_string(),
            found: others
                .iter()
                .map(|o| format!("extension-release.{o}"))
                .collect(),
        };
        let [other] = others.as_slice() else {
            return Err(missing());
        };
        let inner = format!("{EXTENSION_RELEASE_DIR}/extension-release.{other}");
        let bytes = read_in(tree, &inner, MAX_RELEASE_LEN)?.ok_or_else(missing)?;
        Ok((other.clone(), inner, bytes))
    })?;
    Ok((found, parse_release(image, &inner, bytes)?))
}

/// Reads the os-release of an OS (USR partition) image, whose root is /usr: `lib/os-release`
/// first, then `usr/lib/os-release` for images built with usr/ at the top.
pub fn read_os_release(image: &Path) -> Result<OsRelease, ImageError> {
    let found = with_tree(image, |tree| {
        for inner in ["lib/os-release", "usr/lib/os-release"] {
            if let Some(bytes) = read_in(tree, inner, MAX_RELEASE_LEN)? {
                return Ok(Some((inner, bytes)));
            }
        }
        Ok(None)
    })?;
    let (inner, bytes) = found.ok_or_else(|| ImageError::NoOsRelease {
        image: image.to_path_buf(),
    })?;
    parse_release(image, inner, bytes)
}

#[cfg(test)]
mod tests;

/// Where a systemd install keeps `libsystemd-shared-<N>.so`, relative to `/usr` (an OS image's
/// root): `lib/systemd` (Arch, Flatcar), `lib64/systemd` (Fedora), and Debian's multiarch
/// `lib/<triplet>/systemd`, found by listing `lib/`.
fn systemd_dirs(tree: &dyn Tree, usr: &str) -> Result<Vec<String>, ImageError> {
    let mut dirs = vec![format!("{usr}lib/systemd"), format!("{usr}lib64/systemd")];
    if let Some((lib, Kind::Dir)) = resolve(tree, &format!("{usr}lib"))? {
        for entry in tree.list(&lib)? {
            if entry.contains('-') && !entry.contains(['*', '?', '[', ']', '\\']) {
                dirs.push(format!("{usr}lib/{entry}/systemd"));
            }
        }
    }
    Ok(dirs)
}

/// The systemd major version a `libsystemd-shared-<N>[.…].so` file name carries.
pub fn systemd_of_library(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix("libsystemd-shared-")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if !(after.starts_with(".so") || after.starts_with('.') || after.starts_with('-')) {
        return None;
    }
    digits.parse().ok()
}

fn systemd_in(tree: &dyn Tree, usr: &str) -> Result<Option<u32>, ImageError> {
    let mut found = None;
    for dir in systemd_dirs(tree, usr)? {
        if let Some((d, Kind::Dir)) = resolve(tree, &dir)? {
            let names = tree.list(&d)?;
            found = found.max(names.iter().filter_map(|n| systemd_of_library(n)).max());
        }
    }
    Ok(found)
}

/// The version of the systemd an OS (USR partition) image carries, from the name of its
/// `libsystemd-shared-<N>.so`; `None` when it carries none that upd recognises. upd applies
/// the merge rules of that systemd to the extensions staged for it.
pub fn systemd_version(image: &Path) -> Result<Option<u32>, ImageError> {
    with_tree(image, |tree| systemd_in(tree, ""))
}

/// The version of the systemd installed under `root` (the running system's `/`), as
/// [`systemd_version`] finds it in an image.
pub fn systemd_version_under(root: &Path) -> Result<Option<u32>, ImageError> {
    with_dir(root, |tree| systemd_in(tree, "usr/"))
}
