//! `upd pull` for the running OS: check the channel, go to the target release (staging a new
//! OS, or fetching the chosen extension builds, checking them from inside the images against
//! the running host, then switching).

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use upd_channels::builds::Plan;
use upd_channels::manifest::Release;
use upd_channels::version::OsVersion;

use crate::host::machine::{Host, Machine};
use crate::ops::release::{self, BuildGate, GateMode};
use crate::ops::session::{self, wanted, Session};
use crate::ops::stage::{self, StageOptions, StageReport};
use crate::ops::store::{self, check_images, store_file_name, Downloaded};
use crate::ops::switch;
use crate::ops::Error;
use crate::remote::fetch::Progress;
use crate::state::{ExtImage, Generation, LinkSet, State};

/// What a pull did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// The release pulled for.
    pub release: String,
    /// Name → (from version, to version); `None` where absent.
    pub changed: BTreeMap<String, (Option<String>, Option<String>)>,
    /// Enabled extensions left as they were, and why.
    pub problems: Vec<String>,
    /// Bytes received from the network for images.
    pub downloaded: u64,
    /// Bytes reused from partial files of an earlier run.
    pub resumed: u64,
    /// Bytes copied from images already in the store instead of downloaded (delta downloads).
    pub reused: u64,
    /// Whether an unfinished switch was found and finished or undone first.
    pub reconciled: String,
}

impl PullReport {
    /// A report of nothing done for `release`.
    pub fn empty(release: &str) -> Self {
        PullReport {
            release: release.to_string(),
            changed: BTreeMap::new(),
            problems: Vec::new(),
            downloaded: 0,
            resumed: 0,
            reused: 0,
            reconciled: String::new(),
        }
    }
}

/// What `upd pull` did: an extension switch on the running OS, or an OS release staged.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// Extensions of the running OS (possibly nothing to do).
    Extensions(PullReport),
    /// A new OS release staged in the inactive slot, waiting for a reboot.
    Staged(StageReport),
    /// Nothing done: the channel lists no release for the running OS and none to move to.
    Waiting {
        /// Why, as `upd status` shows it.
        why: String,
    },
}

/// Run `upd pull`: stage a newer OS release, or bring the running OS's extensions up to date.
pub async fn pull(
    s: &mut Session,
    version: Option<&OsVersion>,
    opts: &StageOptions,
    progress: &dyn Fn() -> Arc<dyn Progress>,
    now: DateTime<Utc>,
) -> Result<Outcome, Error> {
    let manifest = s.check_channel(now).await?;
    let host = s.machine.host()?;
    release::drop_withdrawn(s, &manifest, now)?;
    let (release, next) =
        match release::target_release(s, &manifest, &host, version, opts.allow_downgrade, now) {
            Err(Error::UnknownOs { .. }) if version.is_none() => {
                // The channel does not list the running OS and offers nothing to move to: wait
                // (exit 0) until it does, and say why in `upd status`.
                let why = release::waiting_why(&manifest, &host).unwrap_or_default();
                release::record_waiting(&s.machine, &why, now);
                tracing::info!("{why}");
                return Ok(Outcome::Waiting { why });
            }
            r => r?,
        };
    match &next {
        Some(next) => release::record_selection(&s.machine, next, now),
        None => release::clear_waiting(&s.machine),
    }
    // The new OS booted but is not marked good: nothing else moves until it is (or is sent back).
    if let Some(p) = s.state.pending.as_ref() {
        if s.phase()?.pending_booted() {
            return Err(Error::AwaitingMarkGood(p.os_version.clone()));
        }
    }
    if release.version != host.version {
        let mode = if version.is_some() {
            GateMode::Bypass
        } else {
            GateMode::Staging
        };
        // The booted image bounds the seed of a delta download (and its index plans it), if the
        // channel still lists it.
        let booted_image = session::running_release(&manifest, &host)
            .ok()
            .map(|r| &r.os.image);
        return match stage::stage(s, release, opts, mode, booted_image, progress, now).await {
            Err(Error::Gated { release, blockers }) if version.is_none() => {
                // A blocked OS release holds nothing else back: the running OS's own builds
                // still apply (as `check` counts them); the OS update stays blocked and says so.
                // (A running OS the channel does not list has no builds to apply.)
                if let Ok(running) = session::running_release(&manifest, &host) {
                    let report = pull_extensions(s, running, &host, progress, now).await?;
                    tracing::info!(release = %running.version, changed = ?report.changed, blocked = %release, "extensions of the running OS are up to date; the OS update stays blocked");
                }
                Err(Error::Gated { release, blockers })
            }
            staged => Ok(Outcome::Staged(staged?)),
        };
    }
    Ok(Outcome::Extensions(
        pull_extensions(s, release, &host, progress, now).await?,
    ))
}

/// Bring the running OS's extensions to the newest builds of its release.
async fn pull_extensions(
    s: &mut Session,
    release: &Release,
    host: &Host,
    progress: &dyn Fn() -> Arc<dyn Progress>,
    now: DateTime<Utc>,
) -> Result<PullReport, Error> {
    let m = s.machine.clone();
    let fetcher = session::fetcher(&m)?;
    let host = host.clone();
    let plan = BuildGate::new(&m, &s.state, GateMode::Running, now).plan(
        release,
        &host.identity,
        &wanted(&m),
    );
    for c in &plan.choices {
        if let Some(w) = &c.waiting {
            tracing::info!(extension = %c.name, "{w}");
        }
    }
    release::record_builds_waiting(&m, &plan, now);
    let mut report = PullReport {
        release: release.version.to_string(),
        changed: BTreeMap::new(),
        problems: plan.blocked().filter_map(|c| c.problem.clone()).collect(),
        downloaded: 0,
        resumed: 0,
        reused: 0,
        reconciled: format!("{:?}", s.reconciled),
    };
    let Some((target, to)) = extensions_to_apply(&m, &s.state, &plan, &host, now)? else {
        tracing::info!(release = %release.version, "extensions are up to date");
        return Ok(report);
    };
    let mut moved = Downloaded::default();
    let new_files = store::download(&m, &fetcher, &plan, progress, &mut moved).await?;
    report.downloaded = moved.bytes;
    report.resumed = moved.resumed;
    report.reused = moved.reused;
    if let Err(e) = check_images(&m, &plan, &host.identity) {
        for f in new_files {
            let _ = fs::remove_file(f);
        }
        return Err(e);
    }
    report.changed = diff(&s.state, &target);
    let id = s.state.next_generation_id();
    let target = Generation { id, ..target };
    switch::switch(&m, &mut s.state, target, to, now)?;
    Ok(report)
}

/// What `pull` would change among the running OS's extensions: the generation and links `plan`
/// leads to (blocked extensions keep their build, disabled ones are unlinked), or `None` when the
/// links on the machine are those already. `pull` applies exactly this and `check` reports it
/// (its exit 100), so the two never disagree. Reads only.
pub fn extensions_to_apply(
    m: &Machine,
    state: &State,
    plan: &Plan,
    host: &Host,
    now: DateTime<Utc>,
) -> Result<Option<(Generation, LinkSet)>, Error> {
    let (target, to) = target_generation(m, state, plan, host, now);
    let current = current_links_of(m, state, &to)?;
    Ok((current != to).then_some((target, to)))
}

fn current_links_of(m: &Machine, state: &State, to: &LinkSet) -> Result<LinkSet, Error> {
    let mut names: Vec<&String> = to.keys().collect();
    if let Some(a) = &state.active {
        names.extend(a.extensions.keys());
    }
    Ok(m.current_links(names)?)
}

/// The generation the plan leads to, and its links. Blocked extensions keep their current build.
fn target_generation(
    m: &Machine,
    state: &State,
    plan: &Plan,
    host: &Host,
    now: DateTime<Utc>,
) -> (Generation, LinkSet) {
    let mut exts = BTreeMap::new();
    let mut to = LinkSet::new();
    for b in plan.chosen() {
        let file = store_file_name(b);
        to.insert(
            b.name.to_string(),
            Some(m.link_target(b.name.as_str(), &file)),
        );
        exts.insert(b.name.to_string(), ExtImage::of(b, file));
    }
    if let Some(active) = &state.active {
        for (name, img) in &active.extensions {
            let enabled = m.settings.extension_enabled(name);
            if enabled && !exts.contains_key(name) {
                to.insert(name.clone(), Some(m.link_target(name, &img.file)));
                exts.insert(name.clone(), img.clone());
            } else if !enabled {
                to.insert(name.clone(), None);
            }
        }
    }
    let gen = Generation {
        id: 0,
        os_version: host.version.to_string(),
        slot: None,
        extensions: exts,
        created: now,
    };
    (gen, to)
}

fn diff(state: &State, target: &Generation) -> BTreeMap<String, (Option<String>, Option<String>)> {
    let empty = BTreeMap::new();
    let before = state.active.as_ref().map_or(&empty, |a| &a.extensions);
    let mut out = BTreeMap::new();
    for name in before.keys().chain(target.extensions.keys()) {
        let (a, b) = (before.get(name), target.extensions.get(name));
        if a != b {
            out.insert(
                name.clone(),
                (a.map(|e| e.version.clone()), b.map(|e| e.version.clone())),
            );
        }
    }
    out
}
