//! `upd rollback`: back to the previous generation.

use chrono::Utc;

use super::{exit, print_json, runtime};
use crate::host::machine::Machine;
use crate::ops::reboot::{self, RebootOutcome};
use crate::ops::rollback::{self, Rollback};
use crate::ops::session::Session;

/// Options of `rollback`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
    /// Apply the reboot strategy afterwards (default: only signal that a reboot is needed).
    #[arg(long)]
    reboot: bool,
}

/// Run `rollback`.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, true, true, now)?;
    let result = rollback::rollback(&mut s, now)?;
    let mut rebooted = None;
    if let Rollback::OsStaged {
        os_version, slot, ..
    } = &result
    {
        let why = format!("rollback: OS {os_version} on {slot} boots next");
        rebooted = Some(if a.reboot {
            runtime()?.block_on(reboot::after_stage(&s.machine, &why, now))?
        } else {
            reboot::signal(&s.machine, &why)?;
            RebootOutcome::Signalled
        });
    }
    if a.json {
        print_json(&serde_json::json!({ "rollback": result, "reboot": rebooted }))?;
        return Ok(exit::OK);
    }
    match &result {
        Rollback::OsStaged {
            generation,
            os_version,
            slot,
        } => eprintln!(
            "upd: rollback staged: generation {generation} (OS {os_version}) on {slot} boots next; reboot to switch"
        ),
        Rollback::Switched { generation } => {
            eprintln!("upd: rolled back: the previous extension set is active (generation {generation})");
        }
    }
    Ok(exit::OK)
}
