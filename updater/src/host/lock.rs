//! The process lock, so that two upd never act at once.
//!
//! `STATE_DIR/lock` is held with flock(2) for the life of the process; the kernel drops the lock
//! when the process dies, so even SIGKILL never leaves a stale lock. The file also names the holder
//! (pid and command), written after locking, for the message the next upd prints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use upd_durable::PathError;

/// The lock file's name inside `STATE_DIR`.
pub const LOCK_FILE: &str = "lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Opening or locking the file failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// Another process holds the lock and we were not asked to wait.
    #[error("another upd ({holder}) holds {}; use --wait", path.display())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as recorded in the file: `pid 1234: upd pull`, or `holder unknown`.
        holder: String,
    },
}

/// An exclusive hold on `STATE_DIR/lock`, released on drop (or by the kernel when the process dies).
#[derive(Debug)]
pub struct ProcessLock {
    file: Flock<File>,
    path: PathBuf,
}

impl ProcessLock {
    /// Take the lock in `dir` (the re-rooted `STATE_DIR`, created if missing). Without `wait`, a held
    /// lock fails at once with [`LockError::Held`]; with `wait`, block until the holder lets go.
    pub fn acquire(dir: &Path, wait: bool) -> Result<ProcessLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|e| PathError::new("create directory", dir, e))?;
        let path = dir.join(LOCK_FILE);
        // Never truncate on open: the file is the holder's until we hold the lock. It is never
        // replaced by rename either (unlike every other file upd writes): a new inode would let a
        // second process lock a different file while the first still holds the old one.
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
        };
        let mut file = open().map_err(|e| PathError::new("open lock file", &path, e))?;
        let mut logged = false;
        let locked = loop {
            let arg = if wait {
                FlockArg::LockExclusive
            } else {
                FlockArg::LockExclusiveNonblock
            };
            match Flock::lock(file, arg) {
                Ok(l) => break l,
                Err((f, Errno::EINTR)) => file = f,
                Err((mut f, Errno::EWOULDBLOCK)) if !wait => {
                    return Err(LockError::Held {
                        holder: holder(&mut f),
                        path,
                    })
                }
                Err((_, e)) => return Err(PathError::new("lock", &path, e.into()).into()),
            }
            if wait && !logged {
                tracing::info!(path = %path.display(), "waiting for the upd lock");
                logged = true;
            }
        };
        let mut lock = ProcessLock { file: locked, path };
        lock.record_holder()?;
        Ok(lock)
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn record_holder(&mut self) -> Result<(), PathError> {
        let line = format!("{}\n{}\n", std::process::id(), command_line());
        let f: &mut File = &mut self.file;
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| f.write_all(line.as_bytes()))
            .map_err(|e| PathError::new("write lock holder", &self.path, e))
    }
}

impl Drop for ProcessLock {
    fn drop(&mut self) {
        // Forget the holder while still locked; the field's own drop then unlocks.
        let _ = self.file.set_len(0);
    }
}

/// This process's command as the holder message shows it: `upd pull`.
fn command_line() -> String {
    let mut args = std::env::args();
    let prog = args.next().map(|a| {
        Path::new(&a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or(a)
    });
    prog.into_iter()
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
        .replace('\n', " ")
}

/// Describe the holder recorded in an open lock file.
fn holder(f: &mut File) -> String {
    let mut text = String::new();
    let _ = f
        .rewind()
        .and_then(|()| f.take(4096).read_to_string(&mut text));
    let mut lines = text.lines();
    match (
        lines.next().and_then(|p| p.trim().parse::<u32>().ok()),
        lines.next(),
    ) {
        (Some(pid), Some(cmd)) => format!("pid {pid}: {cmd}"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "holder unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn second_holder_is_refused_with_the_pid_then_succeeds_after_drop() {
        // One process, two open file descriptions of the same lock file: flock conflicts between them.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("var/lib/upd");
        let first = ProcessLock::acquire(&dir, false).unwrap();
        let err = ProcessLock::acquire(&dir, false).unwrap_err();
        let msg = err.to_string();
        let want = format!("another upd (pid {}: ", std::process::id());
        assert!(msg.starts_with(&want), "{msg}");
        assert!(
            msg.ends_with(&format!("holds {}; use --wait", first.path().display())),
            "{msg}"
        );
        drop(first);
        let again = ProcessLock::acquire(&dir, false).unwrap();
        let recorded = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(
            recorded.lines().next().unwrap(),
            std::process::id().to_string()
        );
    }

    #[test]
    fn waiting_blocks_until_the_holder_lets_go() {
        // The lock is held for 300 ms while another thread asks with --wait.
        let d = tempfile::tempdir().unwrap();
        let first = ProcessLock::acquire(d.path(), false).unwrap();
        let dir = d.path().to_path_buf();
        let start = Instant::now();
        let waiter =
            std::thread::spawn(move || ProcessLock::acquire(&dir, true).map(|_| Instant::now()));
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        let got_at = waiter.join().unwrap().unwrap();
        assert!(
            got_at - start >= Duration::from_millis(300),
            "the waiter did not wait"
        );
    }

    #[test]
    fn a_dead_holders_record_does_not_block() {
        // What a SIGKILLed upd leaves: its pid in the file, but no flock (the kernel dropped it).
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(LOCK_FILE), "999999\nupd pull\n").unwrap();
        let lock = ProcessLock::acquire(d.path(), false).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap().lines().next(),
            Some(&*std::process::id().to_string())
        );
    }

    #[test]
    fn unknown_holder_is_said_so() {
        // A lock file held by something that wrote no pid.
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join(LOCK_FILE);
        std::fs::write(&path, "garbage").unwrap();
        let f = File::open(&path).unwrap();
        let _held = Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap();
        let err = ProcessLock::acquire(d.path(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another upd (holder unknown) holds"), "{err}");
    }
}
