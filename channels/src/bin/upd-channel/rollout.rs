//! `upd-channel rollout`: a release's waves, from a start time, a growing share of the fleet.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use semver::Version;
use upd_channels::manifest::{Rollout, RolloutStep};
use upd_channels::name::Name;
use upd_channels::repo::{set_rollout, Repo};

use crate::common;

/// Arguments of `rollout`.
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
    /// When the first wave starts (RFC 3339, e.g. 2026-03-01T08:00:00Z).
    #[arg(long)]
    start: DateTime<Utc>,
    /// A wave, HOURS:PERCENT after the start (e.g. 0:1 24:10 72:100).
    #[arg(long = "step", required = true, num_args = 1.., value_parser = parse_step)]
    steps: Vec<RolloutStep>,
}

fn parse_step(s: &str) -> Result<RolloutStep, String> {
    let (h, p) = s
        .split_once(':')
        .ok_or_else(|| format!("step '{s}' is not HOURS:PERCENT"))?;
    let num = |v: &str| {
        v.parse::<f64>()
            .map_err(|e| format!("step '{s}': '{v}': {e}"))
    };
    Ok(RolloutStep {
        after_hours: num(h)?,
        percent: num(p)?,
    })
}

/// Sets the schedule in the draft (validated) and writes it.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let mut draft = repo.load_draft(&args.channel)?;
    let n = args.steps.len();
    let rollout = Rollout {
        start: args.start,
        steps: args.steps,
    };
    set_rollout(&mut draft, &args.version, rollout).context("setting the rollout")?;
    let path = repo.save_draft(&draft)?;
    println!(
        "release {}: rollout from {} in {n} step(s); wrote {}",
        args.version,
        args.start,
        path.display()
    );
    Ok(())
}
