//! `upd boot`: early boot, before systemd-sysext.service: finish or undo a switch cut short.

use chrono::Utc;

use super::exit;
use crate::machine::Machine;
use crate::pull::Session;
use crate::switch::Reconciled;

/// Options of `boot`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run it: waits for the lock; never refreshes (the merge comes after).
pub fn run(m: Machine, _a: &Args) -> anyhow::Result<u8> {
    let s = Session::open(m, true, false, Utc::now())?;
    match s.reconciled {
        Reconciled::Nothing => eprintln!("upd: boot: links are consistent"),
        Reconciled::Undone => {
            eprintln!("upd: boot: undid a switch cut short; the previous set stays")
        }
        Reconciled::Completed => {
            eprintln!("upd: boot: completed a switch cut short; the new set is active")
        }
    }
    Ok(exit::OK)
}
