//! `upd-channel rollout`: a release's waves, from a start time, a growing share of the fleet.

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use upd_channels::manifest::{Rollout, RolloutStep};
use upd_publish::repo::{set_build_rollout, set_rollout, BuildRef};

use crate::common;

/// Arguments of `rollout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: common::ReleaseRef,
    /// Give one extension build of the release waves of its own instead (NAME=VERSION), with a
    /// fleet position drawn afresh for that build; a build without follows its release's waves.
    #[arg(long = "ext", value_name = "NAME=VERSION")]
    ext: Option<BuildRef>,
    /// When the first wave starts: RFC 3339 (e.g. 2026-03-01T08:00:00Z) or `now`.
    #[arg(long, value_parser = parse_start)]
    start: Start,
    /// A wave, HOURS:PERCENT after the start (e.g. 0:1 24:10 72:100).
    #[arg(long = "step", required = true, num_args = 1.., value_parser = parse_step)]
    steps: Vec<RolloutStep>,
}

/// The `--start` value: a fixed instant, or the moment the command runs.
#[derive(Debug, Clone, Copy)]
enum Start {
    At(DateTime<Utc>),
    Now,
}

fn parse_start(s: &str) -> Result<Start, String> {
    if s == "now" {
        return Ok(Start::Now);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| Start::At(t.with_timezone(&Utc)))
        .map_err(|e| {
            format!("'{s}' is neither `now` nor an RFC 3339 time like 2026-03-01T08:00:00Z ({e})")
        })
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
    let n = args.steps.len();
    let start = match args.start {
        Start::At(t) => t,
        Start::Now => Utc::now(),
    };
    let rollout = Rollout {
        start,
        steps: args.steps,
    };
    let r = &args.release;
    let path = r.edit_draft(|draft, v| {
        match &args.ext {
            Some(b) => set_build_rollout(draft, v, b, rollout),
            None => set_rollout(draft, v, rollout),
        }
        .context("setting the rollout")?;
        Ok(())
    })?;
    let what = match &args.ext {
        Some(b) => format!("build {b} of release {}", r.version),
        None => format!("release {}", r.version),
    };
    println!(
        "{what}: rollout from {} in {n} step(s); wrote {}",
        start.to_rfc3339_opts(SecondsFormat::Secs, true),
        path.display()
    );
    Ok(())
}
