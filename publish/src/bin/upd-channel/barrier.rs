//! `upd-channel barrier`: a release every machine must pass through, or the flag cleared.

use anyhow::Result;
use upd_publish::repo::set_barrier;

use crate::common;

/// Arguments of `barrier`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: common::ReleaseRef,
    /// Remove the barrier instead of setting it.
    #[arg(long)]
    clear: bool,
}

/// Sets or clears the barrier flag in the draft and writes it.
pub fn run(args: Args) -> Result<()> {
    let r = &args.release;
    let path = r.edit_draft(|draft, v| Ok(set_barrier(draft, v, !args.clear)?))?;
    let what = if args.clear {
        "is no longer a barrier"
    } else {
        "is a barrier: machines pass through it before going beyond"
    };
    println!("release {} {what}; wrote {}", r.version, path.display());
    Ok(())
}
