//! `upd pull [VERSION]` and `upd update`.

use chrono::Utc;
use upd_channels::version::OsVersion;

use super::{exit, notify, print_json, progress::Factory, runtime};
use crate::host::machine::Machine;
use crate::ops::pull::{pull, Outcome, PullReport};
use crate::ops::reboot::{self, RebootOutcome};
use crate::ops::session::Session;
use crate::ops::stage::{StageOptions, StageReport};
use crate::rules::window;

/// Options of `pull` and `update`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The OS release to go to (default: the newest one for this machine). Bypasses rollout
    /// waves, never signatures.
    version: Option<OsVersion>,
    /// Leave this enabled extension out of a new OS generation, on purpose (repeatable).
    #[arg(long = "drop-extension", value_name = "NAME")]
    drop_extension: Vec<String>,
    /// Allow VERSION to be older than the running OS (e.g. after switching channels); still signed.
    #[arg(long, requires = "version")]
    allow_downgrade: bool,
    /// Wait for another upd to finish instead of failing.
    #[arg(long)]
    wait: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
    /// Run as the timer does (plain log lines, no bars).
    #[arg(long)]
    unattended: bool,
}

/// Run it; `update` also applies the reboot strategy after staging a new OS.
pub fn run(m: Machine, a: &Args, update: bool) -> anyhow::Result<u8> {
    if update && a.unattended && !m.settings.update_jitter.is_zero() {
        // Spread a fleet's checks: a per-machine delay that changes every day.
        let day = Utc::now().timestamp().div_euclid(86_400) as u64;
        let d = window::jitter(&m.machine_id(), m.settings.update_jitter, day);
        tracing::info!(delay = ?d, "waiting before checking (UPDATE_JITTER_SECS)");
        std::thread::sleep(d);
    }
    let now = Utc::now();
    notify::status("waiting for the upd lock");
    let mut s = Session::open(m, a.wait, true, now)?;
    notify::status(&format!("checking channel {}", s.machine.settings.channel));
    let factory = Factory::new(update || a.unattended);
    let opts = StageOptions {
        drop_extensions: a.drop_extension.clone(),
        allow_downgrade: a.allow_downgrade,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(pull(
        &mut s,
        a.version.as_ref(),
        &opts,
        &|| factory.make(),
        now,
    ))?;
    let reboot = match &outcome {
        Outcome::Staged(r) => {
            let why = format!(
                "OS {} is staged on {} (generation {})",
                r.release, r.slot, r.generation
            );
            Some(if update {
                rt.block_on(reboot::after_stage(&s.machine, &why, now))?
            } else {
                reboot::signal(&s.machine, &why)?;
                RebootOutcome::Signalled
            })
        }
        Outcome::Extensions(_) | Outcome::Waiting { .. } => None,
    };
    notify::status(&summary(&outcome, reboot.as_ref()));
    if a.json {
        print_json(&serde_json::json!({ "outcome": outcome, "reboot": reboot }))?;
        return Ok(exit::OK);
    }
    match &outcome {
        Outcome::Staged(r) => print_staged(r, reboot.as_ref()),
        Outcome::Extensions(report) => print_extensions(report),
        Outcome::Waiting { why } => eprintln!("upd: waiting: {why}"),
    }
    Ok(exit::OK)
}

/// What the pull came to, in one line (the unit's last status).
fn summary(outcome: &Outcome, reboot: Option<&RebootOutcome>) -> String {
    match outcome {
        Outcome::Staged(r) => {
            let next = match reboot {
                Some(RebootOutcome::Waiting { why }) => format!("not rebooting yet: {why}"),
                Some(RebootOutcome::Rebooting) => "rebooting".into(),
                _ => "reboot needed".into(),
            };
            format!("OS {} staged on {}; {next}", r.release, r.slot)
        }
        Outcome::Extensions(p) if p.changed.is_empty() => {
            format!("up to date: release {}", p.release)
        }
        Outcome::Extensions(p) => {
            let moves: Vec<String> = p
                .changed
                .iter()
                .map(|(n, (f, t))| {
                    let (f, t) = (f.as_deref().unwrap_or("-"), t.as_deref().unwrap_or("-"));
                    format!("{n} {f} -> {t}")
                })
                .collect();
            format!("switched: {}", moves.join(", "))
        }
        Outcome::Waiting { why } => format!("waiting: {why}"),
    }
}

fn print_staged(r: &StageReport, reboot: Option<&RebootOutcome>) {
    let verb = if r.already_staged {
        "already staged"
    } else {
        "staged"
    };
    eprintln!(
        "upd: OS {} {verb} on {} as generation {} (downloaded {} bytes)",
        r.release, r.slot, r.generation, r.downloaded
    );
    for (n, v) in &r.extensions {
        eprintln!("upd:   {n} {v}");
    }
    for d in &r.dropped {
        eprintln!("upd:   {d} DROPPED on request");
    }
    match reboot {
        Some(RebootOutcome::Waiting { why }) => eprintln!("upd: not rebooting yet: {why}"),
        Some(RebootOutcome::Rebooting) => eprintln!("upd: rebooting"),
        _ => eprintln!("upd: reboot to switch (signalled in /run/reboot-required)"),
    }
}

fn print_extensions(report: &PullReport) {
    if report.changed.is_empty() {
        eprintln!("upd: up to date: release {}", report.release);
    } else {
        for (name, (from, to)) in &report.changed {
            let f = from.as_deref().unwrap_or("-");
            let t = to.as_deref().unwrap_or("-");
            eprintln!("upd: {name}: {f} -> {t}");
        }
        eprintln!(
            "upd: switched to the new set (downloaded {} bytes, resumed {}, reused {} from the store)",
            report.downloaded, report.resumed, report.reused
        );
    }
    for p in &report.problems {
        eprintln!("upd: warning: kept as is: {p}");
    }
}
