//! `upd gc`: remove store images that no generation uses.

use chrono::Utc;

use super::exit;
use crate::host::machine::Machine;
use crate::ops::gc::collect_garbage;
use crate::ops::session::Session;

/// Options of `gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Wait for another upd to finish instead of failing.
    #[arg(long)]
    wait: bool,
}

/// Run it: keeps every image of the active, pending and previous generations, of the newest
/// `RETENTION` older ones, and partial downloads.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let s = Session::open(m, a.wait, true, Utc::now())?;
    let removed = collect_garbage(&s.machine, &s.state)?;
    for p in &removed {
        eprintln!("upd: removed {}", p.display());
    }
    eprintln!("upd: gc removed {} image(s)", removed.len());
    Ok(exit::OK)
}
