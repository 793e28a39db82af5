//! `upd-channel pause` / `resume`: stop or restart a release's rollout.

use anyhow::Result;
use upd_publish::repo::{set_build_paused, set_paused, BuildRef};

use crate::common;

/// Arguments of `pause` and `resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: common::ReleaseRef,
    /// Pause or resume one extension build of the release instead (NAME=VERSION): machines
    /// running it keep it, no other machine takes it.
    #[arg(long = "ext", value_name = "NAME=VERSION")]
    ext: Option<BuildRef>,
}

/// Sets the paused flag in the draft and writes it.
pub fn run(args: Args, paused: bool) -> Result<()> {
    let r = &args.release;
    let path = r.edit_draft(|draft, v| match &args.ext {
        Some(b) => Ok(set_build_paused(draft, v, b, paused)?),
        None => Ok(set_paused(draft, v, paused)?),
    })?;
    let what = if paused { "paused" } else { "resumed" };
    match &args.ext {
        Some(b) => println!(
            "build {b} of release {} {what}; wrote {}",
            r.version,
            path.display()
        ),
        None => println!("release {} {what}; wrote {}", r.version, path.display()),
    }
    Ok(())
}
