//! The zero-gap swap of systemd-sysext's merged hierarchies: the real systemd-sysext assembles the
//! new overlay in a private mount namespace, the tree is cloned out of it and moved beneath the live
//! one (`MOVE_MOUNT_BENEATH`, Linux ≥ 6.5), and the live one is detached (`MNT_DETACH`).
//!
//! Steps, per hierarchy (`/usr`, then `/opt`, as systemd-sysext merges them):
//! 1. In a thread of its own, `unshare(CLONE_NEWNS)`; make the copy private (so nothing done there
//!    reaches the live namespace), then shared again (systemd-sysext's merge child propagates its
//!    overlay back to its caller through shared mounts).
//! 2. `systemd-sysext refresh` there: it unmerges the copy of the old overlay and merges the new
//!    set with its own rules; the caller's check of the merged set runs there too. A failure stops
//!    here, and the live namespace has not changed at all.
//! 3. `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)` of each hierarchy systemd-sysext merged: a
//!    detached copy of the new overlay, same superblock, so its `.systemd-sysext/dev` still names its
//!    own device and systemd-sysext's `unmerge` and `status` recognise it as theirs.
//! 4. In the live namespace: a stack of leftover sysext overlays (a swap killed between 5 and 6) is
//!    first peeled from the top, each one lying on another full overlay.
//! 5. `move_mount(MOVE_MOUNT_BENEATH)` puts the copy under the live overlay (or on top when nothing
//!    was merged), which stays visible until
//! 6. `umount2(MNT_DETACH)` takes the old overlay off: the new one shows at once; processes holding
//!    files of the old one keep them (the old tree is detached, not destroyed).
//!
//! A kernel without `open_tree` or mount-beneath answers ENOSYS or EINVAL: [`SwapError::Unsupported`],
//! with nothing changed, and the caller falls back to a plain refresh.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use rustix::fs::CWD;
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::host::failpoint;
use crate::host::sysext::{Sysext, SysextError};

/// The hierarchies systemd-sysext merges by default (`SYSTEMD_SYSEXT_HIERARCHIES` unset), below the root.
pub const HIERARCHIES: [&str; 2] = ["usr", "opt"];

/// The file systemd-sysext writes into the top of every overlay it merges: `MAJOR:MINOR` of that overlay.
pub const DEV_FILE: &str = ".systemd-sysext/dev";

/// Why the swap could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The kernel lacks the call (ENOSYS) or the flag (EINVAL): nothing changed, use a refresh.
    #[error("the kernel cannot {call} ({errno}); a zero-gap swap needs Linux 6.5 or later")]
    Unsupported {
        /// The call that was refused.
        call: &'static str,
        /// ENOSYS or EINVAL.
        errno: Errno,
    },
    /// A mount call failed for another reason.
    #[error("{call} {path}: {errno}")]
    Syscall {
        /// The call.
        call: &'static str,
        /// The path it was given.
        path: PathBuf,
        /// What the kernel said.
        errno: Errno,
    },
    /// systemd-sysext failed in the private namespace, or the set it merged there is not the expected one.
    #[error("assembling the new overlay in a private mount namespace: {0}")]
    Assemble(#[source] SysextError),
    /// Reading a hierarchy's marker or the mount table failed.
    #[error("read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The live refresh or check (after a swap, or in the fallback).
    #[error("{0}")]
    Live(#[source] SysextError),
    /// The thread of the private namespace died.
    #[error("the private mount namespace thread panicked")]
    Panicked,
}

/// The new overlays, assembled and cloned out of the private namespace, not yet in place.
#[derive(Debug)]
pub struct Assembled {
    /// Each hierarchy's path and the detached copy of its new overlay (`None`: nothing merged there).
    trees: Vec<(PathBuf, Option<OwnedFd>)>,
}

/// Steps 1–3: merge the current search paths with `sysext` in a private mount namespace, run `check`
/// there (it sees the new set at the usual paths), and clone each merged hierarchy out.
pub fn assemble<F>(sysext: &Sysext, check: F) -> Result<Assembled, SwapError>
where
    F: FnOnce() -> Result<(), SysextError> + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| in_private_namespace(sysext, check))
            .join()
            .unwrap_or(Err(SwapError::Panicked))
    })
}

fn in_private_namespace<F>(sysext: &Sysext, check: F) -> Result<Assembled, SwapError>
where
    F: FnOnce() -> Result<(), SysextError>,
{
    // This thread alone enters the new namespace (CLONE_NEWNS unshares its fs struct too), and the
    // namespace goes with the thread; the clones outlive it.
    unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|errno| syscall("unshare(CLONE_NEWNS)", "/", errno))?;
    for (flag, call) in [
        (MsFlags::MS_PRIVATE, "mount --make-rprivate"),
        (MsFlags::MS_SHARED, "mount --make-rshared"),
    ] {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | flag,
            None::<&str>,
        )
        .map_err(|errno| syscall(call, "/", errno))?;
    }
    sysext.refresh().map_err(SwapError::Assemble)?;
    failpoint::hit("switch-refreshed");
    check().map_err(SwapError::Assemble)?;
    let mut trees = Vec::new();
    for h in HIERARCHIES {
        let path = sysext.root.join(h);
        let tree = if is_ours(&path)? {
            Some(clone_tree(&path)?)
        } else {
            None
        };
        trees.push((path, tree));
    }
    Ok(Assembled { trees })
}

fn clone_tree(path: &Path) -> Result<OwnedFd, SwapError> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::AT_RECURSIVE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    open_tree(CWD, path, flags).map_err(|e| {
        let errno = Errno::from_raw(e.raw_os_error());
        if errno == Errno::ENOSYS {
            SwapError::Unsupported {
                call: "open_tree",
                errno,
            }
        } else {
            syscall("open_tree(OPEN_TREE_CLONE)", path, errno)
        }
    })
}

/// Steps 4–6: put the assembled overlays in place in the caller's (live) namespace; `between` runs
/// after each new overlay is beneath the old one and before the old one goes.
pub fn swap(new: Assembled, between: impl Fn()) -> Result<(), SwapError> {
    for (path, tree) in new.trees {
        if !path.exists() {
            continue;
        }
        peel_stack(&path)?;
        let live = is_ours(&path)?;
        match (tree, live) {
            (Some(tree), true) => {
                attach(&tree, &path, true)?;
                between();
                detach(&path)?;
            }
            (Some(tree), false) => attach(&tree, &path, false)?,
            (None, true) => detach(&path)?,
            (None, false) => {}
        }
    }
    Ok(())
}

fn attach(tree: &OwnedFd, path: &Path, beneath: bool) -> Result<(), SwapError> {
    let mut flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
    if beneath {
        flags |= MoveMountFlags::MOVE_MOUNT_BENEATH;
    }
    move_mount(tree, "", CWD, path, flags).map_err(|e| {
        let errno = Errno::from_raw(e.raw_os_error());
        match errno {
            Errno::ENOSYS | Errno::EINVAL => SwapError::Unsupported {
                call: if beneath {
                    "move_mount(MOVE_MOUNT_BENEATH)"
                } else {
                    "move_mount"
                },
                errno,
            },
            _ => syscall("move_mount", path, errno),
        }
    })
}

fn detach(path: &Path) -> Result<(), SwapError> {
    umount2(path, MntFlags::MNT_DETACH).map_err(|errno| syscall("umount2(MNT_DETACH)", path, errno))
}

/// Step 4: while the top of `path` is a sysext overlay lying on another one, take the top off.
fn peel_stack(path: &Path) -> Result<(), SwapError> {
    while is_ours(path)? && stacked_overlays(path)? > 1 {
        tracing::warn!(path = %path.display(), "taking off a sysext overlay left stacked by an interrupted swap");
        detach(path)?;
    }
    Ok(())
}

/// How many sysext overlays are mounted at `path` in this namespace (more than one: a stack).
fn stacked_overlays(path: &Path) -> Result<usize, SwapError> {
    let info = PathBuf::from("/proc/thread-self/mountinfo");
    let text =
        fs::read_to_string(&info).map_err(|source| SwapError::Read { path: info, source })?;
    let point = fs::canonicalize(path).map_err(|source| SwapError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(count_sysext_overlays(&text, &point))
}

/// The mountinfo lines of overlays with source `sysext` (what systemd-sysext mounts) at `point`.
pub fn count_sysext_overlays(mountinfo: &str, point: &Path) -> usize {
    let wanted = point.to_string_lossy();
    mountinfo
        .lines()
        .filter(|line| {
            let at = line.split(' ').nth(4).map(super::sysext::unescape_octal);
            let tail = line.split_once(" - ").map(|(_, t)| t);
            let mut fields = tail.unwrap_or("").split(' ');
            at.as_deref() == Some(&*wanted)
                && fields.next() == Some("overlay")
                && fields.next() == Some("sysext")
        })
        .count()
}

/// Is the top of `path` an overlay systemd-sysext merged? As systemd-sysext's own `unmerge` decides:
/// `.systemd-sysext/dev` exists there and names the device `path` is on.
pub fn is_ours(path: &Path) -> Result<bool, SwapError> {
    let file = path.join(DEV_FILE);
    let text = match fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(false)
        }
        Err(source) => return Err(SwapError::Read { path: file, source }),
    };
    let meta = fs::symlink_metadata(path).map_err(|source| SwapError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_dev(&text) == Some(meta.dev()))
}

/// `MAJOR:MINOR` as systemd writes it, as a `dev_t`.
pub fn parse_dev(text: &str) -> Option<u64> {
    let (major, minor) = text.trim().split_once(':')?;
    Some(nix::sys::stat::makedev(
        major.parse().ok()?,
        minor.parse().ok()?,
    ))
}

fn syscall(call: &'static str, path: impl Into<PathBuf>, errno: Errno) -> SwapError {
    SwapError::Syscall {
        call,
        path: path.into(),
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_file_parses_as_systemd_writes_it() {
        assert_eq!(parse_dev("0:52\n"), Some(nix::sys::stat::makedev(0, 52)));
        assert_eq!(parse_dev("259:3"), Some(nix::sys::stat::makedev(259, 3)));
        assert_eq!(parse_dev("52"), None);
        assert_eq!(parse_dev("a:b"), None);
    }

    #[test]
    fn only_sysext_overlays_at_the_point_count() {
        let info = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    90 27 0:50 / /r/usr ro - squashfs /dev/loop0 ro\n\
                    91 90 0:51 / /r/usr ro - overlay sysext ro,lowerdir=x\n\
                    92 91 0:52 / /r/usr ro - overlay sysext ro,lowerdir=y\n\
                    93 27 0:53 / /r/opt ro - overlay sysext ro,lowerdir=z\n\
                    94 27 0:54 / /r/usr2 ro - overlay other ro\n";
        assert_eq!(count_sysext_overlays(info, Path::new("/r/usr")), 2);
        assert_eq!(count_sysext_overlays(info, Path::new("/r/opt")), 1);
        assert_eq!(count_sysext_overlays(info, Path::new("/r/usr2")), 0);
    }

    #[test]
    fn a_plain_directory_or_a_copied_marker_is_not_ours() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_ours(dir.path()).unwrap());
        fs::create_dir(dir.path().join(".systemd-sysext")).unwrap();
        // An offline copy of a merged tree: the marker names another device.
        fs::write(dir.path().join(DEV_FILE), "0:1\n").unwrap();
        assert!(!is_ours(dir.path()).unwrap());
        assert!(!is_ours(&dir.path().join("missing")).unwrap());
    }
}
