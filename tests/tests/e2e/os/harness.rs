//! The kill harness's driver: one action's machine prepared once and saved, then for each kill a
//! copy of it restored (disk bytes, files, `/run`, the merge), the real upd killed, the power cut,
//! the machine booted and the invariant checked.
//!
//! Two kinds of kill, chosen by environment variables (see `scripts/killall-points` and
//! `scripts/killrandom`):
//! - at a syscall: `strace -f` SIGKILLs upd (or the child making the call) on entering its Nth
//!   state-changing syscall. `UPD_KILL_POINTS=all` every N in 1..=count, `stride=K` every Kth (and
//!   the last), `none` no point; unset (CI), the one point halfway through the count;
//! - at a random instant: `UPD_KILL_RANDOM=R` runs each killed (SIGKILL to upd's whole process
//!   group, as a service manager's stop or the OOM killer's cgroup kill does) after a delay drawn
//!   uniformly over the action's measured duration (the shortest of 3 runs); unset (CI), 2 runs. `UPD_KILL_SEED` repeats a
//!   sequence of delays.
//!
//! `UPD_KILL_TIMES=1` prints the time each step took (prepare, save, count, restore, kill, recover).

use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Output;
use std::time::{Duration, Instant};

use super::rig::OsRig;
use crate::pull::rig::text_of;

/// The state-changing syscalls: file and block writes, syncs, truncation, renames, links, unlinks,
/// directories, mounts (the swap's `move_mount` too).
pub(crate) const CALLS: &str = "write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,ftruncate,\
                                fallocate,rename,renameat,renameat2,symlink,symlinkat,link,linkat,\
                                unlink,unlinkat,mkdir,mkdirat,rmdir,mount,umount2,move_mount";

/// Random runs per action when `UPD_KILL_RANDOM` is unset (CI).
const CI_RANDOM_RUNS: usize = 2;

/// Timed runs of an action before its random kills; the delays are drawn over the shortest.
const TIMED_RUNS: usize = 3;

/// One action to kill: the machine it runs on, its command, and what must hold after a kill.
pub(crate) struct Action {
    /// Its name in the figures.
    pub name: &'static str,
    /// Builds the machine, once; every kill starts from a copy of it.
    pub prepare: fn() -> OsRig,
    /// upd's arguments.
    pub args: &'static [&'static str],
    /// What the uninterrupted run (the counting one) must show, given upd's output: that it took
    /// the path under test (a delta download, say), so that no kill proves less than it claims.
    pub took_path: Option<fn(&OsRig, &str)>,
    /// After the kill: cut the power (or not), boot, check the invariant, run again; panics when
    /// the machine is inconsistent.
    pub recover: fn(&mut OsRig),
}

/// The kill points to try for an action of `count` calls.
fn points(count: usize) -> Vec<usize> {
    let mut p: Vec<usize> = match std::env::var("UPD_KILL_POINTS").as_deref() {
        Ok("all") => (1..=count).collect(),
        Ok("none") => Vec::new(),
        Ok(s) if s.starts_with("stride=") => {
            let k: usize = s["stride=".len()..]
                .parse()
                .expect("UPD_KILL_POINTS=stride=K");
            (1..=count).step_by(k.max(1)).chain([count]).collect()
        }
        _ => vec![(count / 2).max(1)],
    };
    p.dedup();
    p
}

/// How many random-instant kills to make.
fn random_runs() -> usize {
    match std::env::var("UPD_KILL_RANDOM") {
        Ok(v) => v.parse().expect("UPD_KILL_RANDOM=R (a count)"),
        Err(_) => CI_RANDOM_RUNS,
    }
}

/// A small xorshift generator: the delays need no more, and a printed seed repeats them.
struct Delays(u64);

impl Delays {
    fn new() -> Delays {
        let seed = std::env::var("UPD_KILL_SEED").map_or_else(
            |_| {
                let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                t.map_or(1, |d| d.as_nanos() as u64) | 1
            },
            |s| s.parse().expect("UPD_KILL_SEED=N"),
        );
        Delays(seed)
    }

    /// Uniform in [0, over).
    fn next(&mut self, over: Duration) -> Duration {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        let nanos = over.as_nanos().max(1) as u64;
        Duration::from_nanos(x % nanos)
    }
}

/// Run `recover`; on a panic print what happened and return false.
fn consistent(a: &Action, rig: &mut OsRig, what: &str, out: &Output) -> bool {
    let ok = catch_unwind(AssertUnwindSafe(|| (a.recover)(rig))).is_ok();
    if !ok {
        eprintln!("INCONSISTENT {} {what}:\n{}", a.name, text_of(out));
    }
    ok
}

/// Run upd on `rig` in its own process group and SIGKILL the group after `delay` (if upd has not
/// finished by then); returns its output and whether it was killed.
fn killed_after(rig: &OsRig, args: &[&str], delay: Duration) -> (Output, bool) {
    let mut cmd = rig.upd_cmd(args, &[]);
    cmd.process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn upd");
    let start = Instant::now();
    let killed = loop {
        if child.try_wait().expect("wait upd").is_some() {
            break false;
        }
        let Some(left) = delay.checked_sub(start.elapsed()) else {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            break true;
        };
        std::thread::sleep(left.min(Duration::from_millis(1)));
    };
    (child.wait_with_output().expect("upd output"), killed)
}

/// Kill action `a` at each of its syscall points and at random instants, each on a fresh copy of
/// its prepared machine, then recover; print and check the figures.
pub(crate) fn sweep(a: &Action) {
    let t0 = Instant::now();
    let lap = |what: &str| {
        if std::env::var_os("UPD_KILL_TIMES").is_some() {
            eprintln!("{:>8.2?} {} {what}", t0.elapsed(), a.name);
        }
    };
    let mut rig = (a.prepare)();
    lap("prepared");
    let saved = rig.save();
    lap("saved");
    let (count, out) = rig.upd_count(a.args, CALLS);
    assert_eq!(out.status.code(), Some(0), "{}:\n{}", a.name, text_of(&out));
    if let Some(check) = a.took_path {
        check(&rig, &text_of(&out));
    }
    lap("counted");
    // The action's duration: the shortest of a few runs, so that the random delays (drawn over
    // it) mostly land inside the action rather than after it.
    let mut took = Duration::MAX;
    for _ in 0..TIMED_RUNS {
        rig.restore(&saved);
        lap("restored");
        let start = Instant::now();
        let out = rig.upd(a.args, &[]);
        took = took.min(start.elapsed());
        assert_eq!(out.status.code(), Some(0), "{}:\n{}", a.name, text_of(&out));
    }

    let tried = points(count);
    let mut bad = Vec::new();
    for &n in &tried {
        rig.restore(&saved);
        lap("restored");
        let out = rig.upd_killed_at(a.args, CALLS, n);
        lap("killed");
        if !consistent(a, &mut rig, &format!("killed at call {n}"), &out) {
            bad.push(n);
        }
        lap("recovered");
    }
    eprintln!(
        "KILLS {}: {count} calls, {} points tried, {} inconsistent {bad:?}",
        a.name,
        tried.len(),
        bad.len()
    );

    let runs = random_runs();
    let mut delays = Delays::new();
    let seed = delays.0;
    let (mut finished, mut bad_random) = (0, Vec::new());
    for i in 0..runs {
        rig.restore(&saved);
        lap("restored");
        let delay = delays.next(took);
        let (out, killed) = killed_after(&rig, a.args, delay);
        lap(&format!("killed after {delay:?}"));
        finished += usize::from(!killed);
        let what = format!("killed after {delay:?} (run {i}, seed {seed})");
        if !consistent(a, &mut rig, &what, &out) {
            bad_random.push(delay);
        }
        lap("recovered");
    }
    if runs > 0 {
        eprintln!(
            "RANDOM {}: {runs} runs, {} killed mid-action, {} inconsistent (over {took:?}, \
             {finished} finished before the kill, seed {seed}) {bad_random:?}",
            a.name,
            runs - finished,
            bad_random.len()
        );
    }
    assert!(
        bad.is_empty() && bad_random.is_empty(),
        "{}: inconsistent after kills at calls {bad:?} and after delays {bad_random:?}",
        a.name
    );
}
