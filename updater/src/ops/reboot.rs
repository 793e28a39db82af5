//! After a new OS (or a rollback) is staged: the reboot strategy — signal, reboot now, wait for
//! the maintenance window, or take a slot of the fleet's reboot semaphore first.

use std::fs;
use std::process::Command;

use chrono::{DateTime, Local, Utc};
use serde::Serialize;

use crate::config::RebootStrategy;
use crate::host::machine::Machine;
use crate::remote::rebootlock::{EtcdLock, FleetLock, Outcome, RebootLockError};
use crate::rules::window::Window;
use upd_durable::{atomic_write, PathError};

/// Why the reboot strategy could not run.
#[derive(Debug, thiserror::Error)]
pub enum RebootError {
    /// `REBOOT_COMMAND` has no program.
    #[error("REBOOT_COMMAND is empty")]
    NoCommand,
    /// The reboot command could not be started.
    #[error("running {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reboot command failed.
    #[error("{command} exited with {status}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// Giving back the fleet's reboot slot failed.
    #[error("releasing the reboot lock: {0}")]
    Release(#[source] RebootLockError),
    /// Writing the reboot signal.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// The file kured and Debian's tools watch for "this machine needs a reboot".
pub const REBOOT_REQUIRED: &str = "/run/reboot-required";

/// What the strategy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "reboot")]
pub enum RebootOutcome {
    /// `off`: the reboot-required file was written; someone else reboots.
    Signalled,
    /// The reboot command ran.
    Rebooting,
    /// Not now (outside the window, lock refused); the reboot-required file was written.
    Waiting {
        /// Why, for `upd status` and the logs.
        why: String,
    },
}

/// Write `ROOT/run/reboot-required` (and `.pkgs`) saying why.
pub fn signal(m: &Machine, why: &str) -> Result<(), RebootError> {
    let path = m.root.join(std::path::Path::new(REBOOT_REQUIRED));
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(|e| PathError::new("create directory", d, e))?;
    }
    atomic_write(
        &path,
        format!("*** System restart required ***\nupd: {why}\n").as_bytes(),
        0o644,
    )?;
    atomic_write(
        &path.with_file_name("reboot-required.pkgs"),
        b"upd\n",
        0o644,
    )?;
    Ok(())
}

/// Remove the reboot-required signal (a staged update was dropped).
pub fn clear_signal(m: &Machine) {
    let path = m.root.join(std::path::Path::new(REBOOT_REQUIRED));
    let _ = fs::remove_file(&path);
    let _ = fs::remove_file(path.with_file_name("reboot-required.pkgs"));
}

/// Run `REBOOT_COMMAND`.
pub fn reboot_now(m: &Machine) -> Result<(), RebootError> {
    let cmd = &m.settings.reboot_command;
    let (prog, args) = cmd.split_first().ok_or(RebootError::NoCommand)?;
    let command = cmd.join(" ");
    tracing::warn!(%command, "rebooting into the staged OS");
    let status = Command::new(prog)
        .args(args)
        .status()
        .map_err(|source| RebootError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !status.success() {
        return Err(RebootError::Failed { command, status });
    }
    Ok(())
}

/// Where the last reboot decision is kept, for `upd status`.
pub const DECISION_FILE: &str = "reboot.json";

/// The last reboot decision, as `upd status` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Decision {
    /// When.
    pub at: DateTime<Utc>,
    /// The strategy in force.
    pub strategy: String,
    /// What it decided, in words.
    pub outcome: String,
}

/// Read the last decision, if any.
pub fn last_decision(m: &Machine) -> Option<Decision> {
    let bytes = fs::read(m.state_dir().join(DECISION_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn record(m: &Machine, outcome: &RebootOutcome, now: DateTime<Utc>) {
    let text = match outcome {
        RebootOutcome::Signalled => {
            "signalled in /run/reboot-required; not rebooting (strategy off)".into()
        }
        RebootOutcome::Rebooting => "rebooting".into(),
        RebootOutcome::Waiting { why } => format!("waiting: {why}"),
    };
    let d = Decision {
        at: now,
        strategy: m.settings.reboot_strategy.to_string(),
        outcome: text,
    };
    let path = m.state_dir().join(DECISION_FILE);
    let bytes = serde_json::to_vec_pretty(&d).expect("plain struct");
    if let Err(e) = atomic_write(&path, &bytes, 0o644) {
        tracing::warn!(error = %e, "could not record the reboot decision");
    }
}

/// Apply the configured strategy after staging; `why` says what boots next. The reboot-required
/// file is always written; the machine reboots only when the strategy allows it now.
pub async fn after_stage(
    m: &Machine,
    why: &str,
    now: DateTime<Utc>,
) -> Result<RebootOutcome, RebootError> {
    signal(m, why)?;
    let s = &m.settings;
    let go = match s.reboot_strategy {
        RebootStrategy::Off => {
            record(m, &RebootOutcome::Signalled, now);
            return Ok(RebootOutcome::Signalled);
        }
        RebootStrategy::Immediate => Ok(()),
        RebootStrategy::Window => in_window(m, now),
        RebootStrategy::FleetLock | RebootStrategy::EtcdLock => match acquire(m).await {
            Ok(Outcome::Acquired) => Ok(()),
            Ok(Outcome::Denied { reason }) => Err(format!(
                "{} refused the reboot lock: {reason}",
                s.reboot_strategy
            )),
            Err(e) => Err(format!("{}: {e}", s.reboot_strategy)),
        },
    };
    let outcome = match go {
        Ok(()) => RebootOutcome::Rebooting,
        Err(why) => {
            tracing::warn!(%why, "not rebooting now");
            RebootOutcome::Waiting { why }
        }
    };
    // Recorded before the reboot command runs: it may not return.
    record(m, &outcome, now);
    if outcome == RebootOutcome::Rebooting {
        reboot_now(m)?;
    }
    Ok(outcome)
}

/// Whether `now` is inside `REBOOT_WINDOW` (in the machine's local time zone).
fn in_window(m: &Machine, now: DateTime<Utc>) -> Result<(), String> {
    let w: &Window = m
        .settings
        .reboot_window
        .as_ref()
        .ok_or("REBOOT_WINDOW is not set")?;
    if w.contains_at(now, &Local) {
        return Ok(());
    }
    let next = w.next_start_at(now, &Local).with_timezone(&Local);
    Err(format!(
        "outside the maintenance window '{w}'; it opens next at {}",
        next.format("%a %Y-%m-%d %H:%M %Z")
    ))
}

/// The fleet's reboot lock of the configured strategy, for this machine.
enum Lock {
    Fleet(FleetLock),
    Etcd(EtcdLock),
}

impl Lock {
    /// `None` for strategies that take no lock.
    fn of(m: &Machine) -> Option<Lock> {
        let s = &m.settings;
        let (group, id) = (s.group.as_str(), m.machine_id());
        match s.reboot_strategy {
            RebootStrategy::FleetLock => s
                .fleet_lock_url
                .clone()
                .map(|url| Lock::Fleet(FleetLock::new(url, group, &id))),
            RebootStrategy::EtcdLock => Some(Lock::Etcd(
                EtcdLock::new(s.etcd_endpoints.clone(), group, &id).with_slots(s.etcd_lock_slots),
            )),
            _ => None,
        }
    }

    async fn acquire(&self) -> Result<Outcome, RebootLockError> {
        match self {
            Lock::Fleet(l) => l.acquire().await,
            Lock::Etcd(l) => l.acquire().await,
        }
    }

    async fn release(&self) -> Result<(), RebootLockError> {
        match self {
            Lock::Fleet(l) => l.release().await,
            Lock::Etcd(l) => l.release().await,
        }
    }
}

async fn acquire(m: &Machine) -> Result<Outcome, RebootLockError> {
    if m.machine_id().is_empty() {
        // Machines without an id would all share one holder name and defeat the semaphore.
        return Ok(Outcome::Denied {
            reason: format!(
                "this machine has no machine id ({} is missing or empty)",
                m.settings.machine_id_path.display()
            ),
        });
    }
    match Lock::of(m) {
        Some(l) => l.acquire().await,
        None => Ok(Outcome::Acquired),
    }
}

/// After a boot was marked good: clear the reboot signal and give back the fleet's reboot slot,
/// if the strategy takes one (releasing a slot not held is harmless).
pub async fn after_good(m: &Machine) -> Result<(), RebootError> {
    clear_signal(m);
    let Some(lock) = Lock::of(m) else {
        return Ok(());
    };
    lock.release().await.map_err(RebootError::Release)
}
