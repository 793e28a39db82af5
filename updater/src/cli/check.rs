//! `upd check` (what would be installed, and will it merge) and `upd list` (the channel's releases).

use chrono::Utc;
use serde::Serialize;

use super::{exit, print_json, runtime};
use crate::machine::Machine;
use crate::plan;
use crate::pull::{current_builds, running_release, wanted, Session};

/// Options of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Wait for another upd to finish instead of failing.
    #[arg(long)]
    wait: bool,
}

/// Options of `list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ExtReport {
    name: String,
    installed: Option<String>,
    candidate: Option<String>,
    will_merge: bool,
    reason: Option<String>,
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
    extensions: std::collections::BTreeMap<String, String>,
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
    passed_over: Vec<crate::select::Skipped>,
    update_available: bool,
    extensions: Vec<ExtReport>,
}

/// Run `check`.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, a.wait, true, now)?;
    let fetched = runtime()?.block_on(s.check_channel(now))?;
    let host = s.machine.host()?;
    let manifest = &fetched.manifest;
    let release = running_release(manifest, &host)?;
    let p = plan::plan(release, &host.identity, &wanted(&s.machine));
    let current = current_builds(&s.state);
    let installed = |n: &str| {
        s.state
            .active
            .as_ref()
            .and_then(|g| g.extensions.get(n))
            .map(|e| e.version.clone())
    };
    let extensions: Vec<ExtReport> = p
        .choices
        .iter()
        .map(|c| ExtReport {
            name: c.name.clone(),
            installed: installed(&c.name),
            candidate: c.build.as_ref().map(|b| b.version.to_string()),
            will_merge: c.build.is_some(),
            reason: c.problem.clone(),
        })
        .collect();
    let newest = manifest
        .releases
        .iter()
        .filter(|r| !r.withdrawn && r.version > host.version)
        .map(|r| r.version.to_string())
        .next_back();
    let (os_update, passed_over) = os_update(&s, manifest, &host, now);
    // Only what `pull` can apply counts: extension builds for the running OS, or an OS release
    // that is not blocked and not staged yet.
    let update_available = p.differs_from(&current)
        || os_update
            .as_ref()
            .is_some_and(|o| o.blocked_by.is_empty() && !o.staged);
    let report = CheckReport {
        channel: manifest.channel.to_string(),
        serial: manifest.serial,
        os_running: host.version.to_string(),
        os_newest: newest,
        os_update,
        passed_over,
        update_available,
        extensions,
    };
    if a.json {
        print_json(&report)?;
    } else {
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
                )
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
        for e in &report.extensions {
            let cand = e.candidate.as_deref().unwrap_or("-");
            let inst = e.installed.as_deref().unwrap_or("-");
            match &e.reason {
                None => println!(
                    "  {:20} installed {inst:12} candidate {cand:12} merges: yes",
                    e.name
                ),
                Some(r) => println!(
                    "  {:20} installed {inst:12} candidate {cand:12} merges: NO: {r}",
                    e.name
                ),
            }
        }
    }
    Ok(if update_available {
        exit::UPDATE_AVAILABLE
    } else {
        exit::OK
    })
}

/// The OS release `pull` would stage, with what blocks it; and the newer releases passed over.
fn os_update(
    s: &Session,
    manifest: &upd_channels::manifest::Manifest,
    host: &crate::machine::Host,
    now: chrono::DateTime<Utc>,
) -> (Option<OsUpdate>, Vec<crate::select::Skipped>) {
    // The same choice as `pull`: a signed redirect, else waves, wariness, pause, barriers.
    let next = crate::target::next_release(&s.machine, &s.state, manifest, &host.version, now);
    let Some(r) = next.release else {
        return (None, next.skipped);
    };
    let staged = s
        .state
        .pending
        .as_ref()
        .is_some_and(|p| p.os_version == r.version.to_string());
    let (blocked_by, extensions) = match crate::stage::gate(s, r, &[]) {
        Ok((plan, _)) => (
            Vec::new(),
            plan.chosen()
                .map(|b| (b.name.to_string(), b.version.to_string()))
                .collect(),
        ),
        Err(crate::pull::PullError::Gated { blockers, .. }) => (blockers, Default::default()),
        Err(e) => (vec![e.to_string()], Default::default()),
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

/// Run `list`.
pub fn list(m: Machine, a: &ListArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, false, true, now)?;
    let fetched = runtime()?.block_on(s.check_channel(now))?;
    let manifest = fetched.manifest;
    if a.json {
        return print_json(&manifest).map(|_| exit::OK);
    }
    println!(
        "channel {} serial {} expires {}",
        manifest.channel, manifest.serial, manifest.expires
    );
    for r in &manifest.releases {
        let flags = [
            (r.withdrawn, " withdrawn"),
            (r.paused, " paused"),
            (r.barrier, " barrier"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, t)| *t)
        .collect::<String>();
        println!(
            "{} ({} {}){flags}",
            r.version,
            r.os.identity.id,
            r.os.identity.version_id.as_deref().unwrap_or("-")
        );
        for e in &r.extensions {
            println!("  {} {} ({} bytes)", e.name, e.version, e.image.size);
        }
    }
    Ok(exit::OK)
}
