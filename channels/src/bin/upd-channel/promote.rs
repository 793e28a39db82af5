//! `upd-channel promote`: a release copied from one channel's signed manifest to another's draft.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;
use semver::Version;
use upd_channels::name::Name;
use upd_channels::repo::{promote, Repo};
use upd_channels::verify::{verify_manifest, Expect};

use crate::common;

/// Arguments of `promote`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The channel whose signed manifest holds the release (e.g. beta).
    #[arg(long, value_parser = common::channel)]
    from: Name,
    /// The channel whose draft receives it (e.g. stable).
    #[arg(long, value_parser = common::channel)]
    to: Name,
    /// The release.
    #[arg(long)]
    version: Version,
}

/// Verifies the source manifest as a machine would, copies the release, writes the draft.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let now = Utc::now();
    let root = repo.trusted_root(now)?;
    let path = repo.manifest_file(&args.from);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let expect = Expect {
        channel: &args.from,
        highest_serial: None,
        now,
    };
    let from = verify_manifest(&bytes, &root, expect)
        .with_context(|| format!("{} refused", path.display()))?;
    let mut draft = repo.load_draft(&args.to)?;
    promote(&from, &mut draft, &args.version)?;
    let out = repo.save_draft(&draft)?;
    println!(
        "release {} promoted from '{}' to '{}'; wrote {}",
        args.version,
        args.from,
        args.to,
        out.display()
    );
    Ok(())
}
