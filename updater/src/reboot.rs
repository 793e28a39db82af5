//! After a new OS (or a rollback) is staged: the reboot strategy — signal, reboot now, wait for
//! the maintenance window, or take a slot of the fleet's reboot semaphore first.

use std::fs;
use std::process::Command;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::RebootStrategy;
use crate::fsutil::atomic_write;
use crate::machine::Machine;
use crate::pull::PullError;

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
pub fn signal(m: &Machine, why: &str) -> Result<(), PullError> {
    let path = m.root.join(std::path::Path::new(REBOOT_REQUIRED));
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)
            .map_err(|e| crate::fsutil::PathError::new("create directory", d, e))?;
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
pub fn reboot_now(m: &Machine) -> Result<(), PullError> {
    let cmd = &m.settings.reboot_command;
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| PullError::Reboot("REBOOT_COMMAND is empty".into()))?;
    tracing::warn!(command = %cmd.join(" "), "rebooting into the staged OS");
    let st = Command::new(prog)
        .args(args)
        .status()
        .map_err(|e| PullError::Reboot(format!("running {}: {e}", cmd.join(" "))))?;
    if !st.success() {
        return Err(PullError::Reboot(format!(
            "{} exited with {st}",
            cmd.join(" ")
        )));
    }
    Ok(())
}

/// Apply the configured strategy after staging; `why` says what boots next.
pub async fn after_stage(
    m: &Machine,
    why: &str,
    _now: DateTime<Utc>,
) -> Result<RebootOutcome, PullError> {
    signal(m, why)?;
    match m.settings.reboot_strategy {
        RebootStrategy::Off => Ok(RebootOutcome::Signalled),
        RebootStrategy::Immediate => {
            reboot_now(m)?;
            Ok(RebootOutcome::Rebooting)
        }
        other => Ok(RebootOutcome::Waiting {
            why: format!("strategy {other} is not wired yet"),
        }),
    }
}

/// After `upd mark-good` promoted a new OS: give back the fleet's reboot slot, if one was taken.
pub async fn after_good(m: &Machine) -> Result<(), PullError> {
    clear_signal(m);
    Ok(())
}
