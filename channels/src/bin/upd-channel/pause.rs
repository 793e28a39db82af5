//! `upd-channel pause` / `resume`: stop or restart a release's rollout.

use std::path::PathBuf;

use anyhow::Result;
use semver::Version;
use upd_channels::name::Name;
use upd_channels::repo::{set_paused, Repo};

use crate::common;

/// Arguments of `pause` and `resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The channel whose draft is edited.
    #[arg(long, value_parser = common::channel)]
    channel: Name,
    /// The release.
    #[arg(long)]
    version: Version,
}

/// Sets the paused flag in the draft and writes it.
pub fn run(args: Args, paused: bool) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let mut draft = repo.load_draft(&args.channel)?;
    set_paused(&mut draft, &args.version, paused)?;
    let path = repo.save_draft(&draft)?;
    let what = if paused { "paused" } else { "resumed" };
    println!("release {} {what}; wrote {}", args.version, path.display());
    Ok(())
}
