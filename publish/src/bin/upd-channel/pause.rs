//! `upd-channel pause` / `resume`: stop or restart a release's rollout.

use anyhow::Result;
use upd_publish::repo::set_paused;

use crate::common;

/// Arguments of `pause` and `resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: common::ReleaseRef,
}

/// Sets the paused flag in the draft and writes it.
pub fn run(args: Args, paused: bool) -> Result<()> {
    let r = &args.release;
    let path = r.edit_draft(|draft, v| Ok(set_paused(draft, v, paused)?))?;
    let what = if paused { "paused" } else { "resumed" };
    println!("release {} {what}; wrote {}", r.version, path.display());
    Ok(())
}
