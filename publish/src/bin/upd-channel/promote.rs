//! `upd-channel promote`: a release copied from one channel's signed manifest to another's draft.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;
use upd_channels::name::Name;
use upd_channels::verify::{verify_manifest, Expect};
use upd_channels::version::OsVersion;
use upd_publish::repo::{promote, Promoted, Repo};

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
    version: OsVersion,
    /// Also copy the source channel's wave schedule (by default the target sets its own).
    #[arg(long)]
    with_rollout: bool,
}

/// Verifies the source manifest as a machine would, copies the release, checks its images are
/// in the repository, writes the target draft.
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
    anyhow::ensure!(
        args.from != args.to,
        "--from and --to are both '{}'; promote copies between two channels",
        args.from
    );
    let mut draft = repo.load_draft(&args.to)?;
    let outcome = promote(&from, &mut draft, &args.version, args.with_rollout)?;
    let release = draft
        .release(&args.version)
        .expect("promote leaves the release in the draft");
    // The images are shared repository files: make sure they are there before the target
    // channel names them.
    repo.check_release_files(release)?;
    let out = repo.save_draft(&draft)?;
    let what = match outcome {
        Promoted::Added => "promoted",
        Promoted::AlreadyPresent => "already present with the same content,",
    };
    println!(
        "release {} {what} from '{}' to '{}'; wrote {} (sign channel '{}' to publish)",
        args.version,
        args.from,
        args.to,
        out.display(),
        args.to
    );
    Ok(())
}
