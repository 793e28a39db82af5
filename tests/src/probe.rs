//! A prober: a thread in another process's mount namespace calling `access()` on one path in a tight
//! loop and counting the probes that found it missing; and [`in_namespace`] to open files there.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{access, AccessFlags};

/// What a prober saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Every `access()` call made.
    pub probes: u64,
    /// The calls that found the path missing.
    pub missing: u64,
}

/// A running prober; [`Prober::stop`] ends it and returns its counts.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Counts>,
}

/// Enter the mount namespace of `pid` in this thread alone (it must not share its fs struct).
fn enter(pid: u32) {
    unshare(CloneFlags::CLONE_FS).expect("unshare(CLONE_FS) for this thread");
    let ns = File::open(format!("/proc/{pid}/ns/mnt")).expect("open the mount namespace");
    setns(ns, CloneFlags::CLONE_NEWNS).expect("setns into the mount namespace");
}

/// Run `f` in a thread inside the mount namespace of `pid` and return what it returns (file
/// descriptors it opens stay valid in the caller).
pub fn in_namespace<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        enter(pid);
        f()
    })
    .join()
    .expect("namespace thread")
}

/// Open `path` for reading as seen inside the mount namespace of `pid`.
pub fn open_in(pid: u32, path: &Path) -> File {
    let path = path.to_path_buf();
    in_namespace(pid, move || {
        File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    })
}

impl Prober {
    /// Start probing `path` inside the mount namespace of `pid`; returns once the first probe found it.
    pub fn start(pid: u32, path: &Path) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path: PathBuf = path.to_path_buf();
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            enter(pid);
            ready_tx
                .send(access(&path, AccessFlags::F_OK).is_ok())
                .expect("report readiness");
            let mut counts = Counts {
                probes: 0,
                missing: 0,
            };
            while !flag.load(Ordering::Relaxed) {
                counts.probes += 1;
                if access(&path, AccessFlags::F_OK).is_err() {
                    counts.missing += 1;
                }
            }
            counts
        });
        let found = ready_rx.recv().expect("prober started");
        assert!(found, "the probed file must exist when probing starts");
        Prober { stop, handle }
    }

    /// Stop probing; the counts.
    pub fn stop(self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("prober thread")
    }
}
