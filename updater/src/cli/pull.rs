//! `upd pull [VERSION]` and `upd update`.

use chrono::Utc;
use semver::Version;

use super::{exit, print_json, progress::Factory, runtime};
use crate::machine::Machine;
use crate::pull::{pull, Session};

/// Options of `pull` and `update`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The OS release to pull for (default: the running one). Bypasses rollout waves, never signatures.
    version: Option<Version>,
    /// Wait for another upd to finish instead of failing.
    #[arg(long)]
    wait: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Run as the timer does (plain log lines, no bars).
    #[arg(long)]
    unattended: bool,
}

/// Run it.
pub fn run(m: Machine, a: &Args, timer: bool) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, a.wait, true, now)?;
    let factory = Factory::new(timer || a.unattended);
    let report = runtime()?.block_on(pull(&mut s, a.version.as_ref(), &|| factory.make(), now))?;
    if a.json {
        print_json(&report)?;
    } else if report.changed.is_empty() {
        eprintln!("upd: up to date: release {}", report.release);
    } else {
        for (name, (from, to)) in &report.changed {
            let f = from.as_deref().unwrap_or("-");
            let t = to.as_deref().unwrap_or("-");
            eprintln!("upd: {name}: {f} -> {t}");
        }
        eprintln!(
            "upd: switched to the new set (downloaded {} bytes, resumed {})",
            report.downloaded, report.resumed
        );
    }
    for p in &report.problems {
        eprintln!("upd: warning: kept as is: {p}");
    }
    Ok(exit::OK)
}
