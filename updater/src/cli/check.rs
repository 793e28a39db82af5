//! `upd check`: what would be installed, and will it merge. Reads only: nothing on the machine
//! changes, not even the serial it saw.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use upd_channels::manifest::Manifest;
use upd_channels::select::Skipped;

use super::{exit, print_json, runtime};
use crate::host::machine::{Host, Machine};
use crate::ops::pull::extensions_to_apply;
use crate::ops::release::{next_release, waiting_why, BuildGate, GateMode};
use crate::ops::session::{running_release, wanted, View};
use crate::ops::stage::gate;
use crate::ops::Error;

/// Options of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
    /// Accepted for scripts written for older releases; `check` takes no lock, so it never waits.
    #[arg(long, hide = true)]
    wait: bool,
    /// Judge the channel as at this instant instead of now (RFC 3339, e.g.
    /// 2026-03-02T08:00:00Z): what this machine would do then, by the rollout waves and pauses
    /// of the manifest it fetches now, whose validity is judged at that instant too. Changes
    /// nothing.
    #[arg(long = "now", value_name = "RFC3339", value_parser = parse_instant)]
    pub(super) at: Option<DateTime<Utc>>,
}

fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{s}' is not an RFC 3339 time like 2026-03-02T08:00:00Z ({e})"))
}

#[derive(Serialize)]
struct ExtReport {
    name: String,
    /// The OS release the candidate is for: the running one.
    for_os: String,
    installed: Option<String>,
    candidate: Option<String>,
    will_merge: bool,
    reason: Option<String>,
    /// A newer build this machine may not take yet, and why (its rollout waves or a pause).
    waiting: Option<String>,
}

#[derive(Serialize)]
struct OsUpdate {
    version: String,
    /// Already staged and waiting for a reboot.
    staged: bool,
    /// Enabled extensions without a build that merges on it (the release is not staged until
    /// they have one, or are dropped with --drop-extension).
    blocked_by: Vec<String>,
    /// The extension builds that would be staged with it.
    extensions: BTreeMap<String, String>,
    /// The running release is withdrawn and the publisher directs this machine here.
    redirected: bool,
}

#[derive(Serialize)]
struct CheckReport {
    channel: String,
    serial: u64,
    os_running: String,
    os_newest: Option<String>,
    os_update: Option<OsUpdate>,
    passed_over: Vec<Skipped>,
    update_available: bool,
    /// Why this machine waits: its channel lists no release for the running OS and none to
    /// move to (`null` otherwise).
    waiting: Option<String>,
    extensions: Vec<ExtReport>,
}

/// Run `check`.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let _ = a.wait;
    let now = a.at.unwrap_or_else(Utc::now);
    let v = View::open(m)?;
    let manifest = runtime()?.block_on(v.check_channel(now))?;
    let report = report(&v, &manifest, now)?;
    if a.json {
        print_json(&report)?;
    } else {
        print_human(&report);
    }
    Ok(if report.update_available {
        exit::UPDATE_AVAILABLE
    } else {
        exit::OK
    })
}

/// What `check` found, from the verified manifest and the machine as it is.
fn report(v: &View, manifest: &Manifest, now: DateTime<Utc>) -> Result<CheckReport, Error> {
    let host = v.machine.host()?;
    // A running OS the channel does not list (after `upd channel`) has no builds to apply.
    let plan = running_release(manifest, &host).ok().map(|r| {
        BuildGate::new(&v.machine, &v.state, GateMode::Running, now).plan(
            r,
            &host.identity,
            &wanted(&v.machine),
        )
    });
    let installed = |n: &str| {
        v.state
            .active
            .as_ref()
            .and_then(|g| g.extensions.get(n))
            .map(|e| e.version.clone())
    };
    let extensions: Vec<ExtReport> = plan
        .iter()
        .flat_map(|p| &p.choices)
        .map(|c| ExtReport {
            name: c.name.clone(),
            for_os: host.version.to_string(),
            installed: installed(&c.name),
            candidate: c.build.as_ref().map(|b| b.version.to_string()),
            will_merge: c.build.is_some(),
            reason: c.problem.clone(),
            waiting: c.waiting.clone(),
        })
        .collect();
    let newest = manifest
        .releases
        .iter()
        .filter(|r| !r.withdrawn && r.version > host.version)
        .map(|r| r.version.to_string())
        .next_back();
    let (os_update, passed_over) = os_update(v, manifest, &host, now);
    // Only what `pull` would apply counts, decided by `pull`'s own code: a change of the running
    // OS's extension links (a blocked extension keeps its build), a switch cut short (its journal
    // is still in the state: `pull` finishes or undoes it first, so the merged set changes), or an
    // OS release that is not blocked and not staged yet.
    let ext_change = v.state.journal.is_some()
        || match &plan {
            Some(p) => extensions_to_apply(&v.machine, &v.state, p, &host, now)?.is_some(),
            None => false,
        };
    let waiting = waiting_why(manifest, &host).filter(|_| os_update.is_none());
    let update_available = ext_change
        || os_update
            .as_ref()
            .is_some_and(|o| o.blocked_by.is_empty() && !o.staged);
    Ok(CheckReport {
        channel: manifest.channel.to_string(),
        serial: manifest.serial,
        os_running: host.version.to_string(),
        os_newest: newest,
        os_update,
        passed_over,
        update_available,
        waiting,
        extensions,
    })
}

fn print_human(report: &CheckReport) {
    println!(
        "channel {} serial {}; running OS {}",
        report.channel, report.serial, report.os_running
    );
    match &report.os_update {
        Some(o) if o.staged => println!("OS {} is staged; reboot to switch", o.version),
        Some(o) if o.blocked_by.is_empty() => {
            if o.redirected {
                println!("the running release {} is WITHDRAWN; the signed manifest directs this machine to {}", report.os_running, o.version);
            }
            println!(
                "OS update available: {} (all enabled extensions have builds that merge on it)",
                o.version
            );
            for (n, v) in &o.extensions {
                println!("    with {n} {v} (for OS {})", o.version);
            }
        }
        Some(o) => {
            println!("OS update {} is BLOCKED until these extensions have a build for it (or are dropped with --drop-extension):", o.version);
            for b in &o.blocked_by {
                println!("    {b}");
            }
        }
        None => {
            if let Some(n) = &report.os_newest {
                println!("newer OS release in the channel: {n} (not for this machine now)");
            }
        }
    }
    for k in &report.passed_over {
        println!("  passed over {}: {}", k.version, k.why);
    }
    if let Some(w) = &report.waiting {
        println!("waiting: {w}");
    }
    println!("extensions for the running OS {}:", report.os_running);
    for e in &report.extensions {
        let cand = e.candidate.as_deref().unwrap_or("-");
        let inst = e.installed.as_deref().unwrap_or("-");
        match (&e.reason, &e.waiting) {
            (None, _) => println!(
                "  {:20} installed {inst:12} candidate {cand:12} merges: yes",
                e.name
            ),
            // Nothing it may take yet: not a build that fails to merge.
            (Some(r), Some(w)) if r == w => println!(
                "  {:20} installed {inst:12} candidate {cand:12} waits",
                e.name
            ),
            (Some(r), _) => println!(
                "  {:20} installed {inst:12} candidate {cand:12} merges: NO: {r}",
                e.name
            ),
        }
        if let Some(w) = &e.waiting {
            println!("  {:20} waits: {w}", "");
        }
    }
}

/// The OS release `pull` would stage, with what blocks it; and the newer releases passed over.
fn os_update(
    v: &View,
    manifest: &Manifest,
    host: &Host,
    now: DateTime<Utc>,
) -> (Option<OsUpdate>, Vec<Skipped>) {
    // The same choice as `pull`: a signed redirect, else waves, wariness, pause, barriers.
    let Some(next) = next_release(&v.machine, &v.state, manifest, &host.version, now) else {
        return (None, Vec::new());
    };
    let Some(r) = next.release else {
        return (None, next.skipped);
    };
    let staged = v
        .state
        .pending
        .as_ref()
        .is_some_and(|p| p.os_version == r.version.to_string());
    let bg = BuildGate::new(&v.machine, &v.state, GateMode::Staging, now);
    let (blocked_by, extensions) = match gate(&v.machine, r, &[], &bg) {
        Ok((plan, _)) => (
            Vec::new(),
            plan.chosen()
                .map(|b| (b.name.to_string(), b.version.to_string()))
                .collect(),
        ),
        Err(Error::Gated { blockers, .. }) => (blockers, BTreeMap::new()),
        Err(e) => (vec![e.to_string()], BTreeMap::new()),
    };
    let o = OsUpdate {
        version: r.version.to_string(),
        staged,
        blocked_by,
        extensions,
        redirected: next.redirected,
    };
    (Some(o), next.skipped)
}
