//! `upd-channel withdraw`: a release no machine installs any more, optionally redirected.

use std::path::PathBuf;

use anyhow::Result;
use semver::Version;
use upd_channels::name::Name;
use upd_channels::repo::{withdraw, Repo};

use crate::common;

/// Arguments of `withdraw`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The channel whose draft is edited.
    #[arg(long, value_parser = common::channel)]
    channel: Name,
    /// The release to withdraw.
    #[arg(long)]
    version: Version,
    /// A safe release of the channel that machines on the withdrawn one go back to.
    #[arg(long)]
    redirect_to: Option<Version>,
}

/// Marks the release withdrawn in the draft (validated) and writes it.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let mut draft = repo.load_draft(&args.channel)?;
    withdraw(&mut draft, &args.version, args.redirect_to.clone())?;
    let path = repo.save_draft(&draft)?;
    match &args.redirect_to {
        Some(to) => println!(
            "release {} withdrawn, machines directed to {to}; wrote {}",
            args.version,
            path.display()
        ),
        None => println!(
            "release {} withdrawn; wrote {}",
            args.version,
            path.display()
        ),
    }
    Ok(())
}
