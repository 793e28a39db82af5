//! `upd boot`: early boot, before systemd-sysext.service: finish or undo a switch cut short, see
//! which OS slot came up and point the links at that generation.

use chrono::Utc;

use super::{exit, notify, print_json};
use crate::host::machine::Machine;
use crate::ops::boot;
use crate::ops::session::Session;
use crate::ops::switch::Reconciled;

/// Options of `boot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

/// Run it: waits for the lock; never refreshes (the merge comes after).
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, true, false, now)?;
    match s.reconciled {
        Reconciled::Nothing => {}
        Reconciled::Undone => {
            eprintln!("upd: boot: undid a switch cut short; the previous set stays");
        }
        Reconciled::Completed => {
            eprintln!("upd: boot: completed a switch cut short; the new set is active");
        }
    }
    let report = boot::boot(&mut s, now)?;
    notify::status(&report.what);
    if a.json {
        print_json(&report)?;
    } else {
        eprintln!("upd: boot: {}", report.what);
    }
    Ok(exit::OK)
}
