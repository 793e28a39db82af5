//! `upd pull` for the running OS: check the channel, fetch the chosen extension builds, check them
//! from inside the images against the running host, then switch.

mod error;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use semver::Version;
use upd_channels::compat;
use upd_channels::manifest::{ExtBuild, ExtIdentity, Manifest, Release};
use upd_durable::{sweep_tmp, PathError};
use upd_image as image;

use crate::channel;
use crate::fetch::{ensure_free_space, FetchConfig, FetchError, FetchItem, Fetcher, Progress};
use crate::lock::ProcessLock;
use crate::machine::{Host, Machine};
use crate::plan::{self, Plan, Wanted};
use crate::slot::Slots;
use crate::stage::{self, StageOptions, StageReport};
use crate::state::{ExtImage, Generation, LinkSet, State};
use crate::switch::{self, Reconciled};
use crate::target;
use upd_channels::osrelease::HostIdentity;

pub use error::PullError;

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
    /// Whether an unfinished switch was found and finished or undone first.
    pub reconciled: String,
}

/// Everything a command needs after taking the lock and reconciling.
pub struct Session {
    /// The machine.
    pub machine: Machine,
    /// The loaded state (mutated in memory; saved by the step that changes it).
    pub state: State,
    /// What reconciliation did.
    pub reconciled: Reconciled,
    _lock: ProcessLock,
}

impl Session {
    /// Lock, sweep leftovers, load the state and finish or undo a switch cut short (`live`: refresh allowed).
    pub fn open(
        machine: Machine,
        wait: bool,
        live: bool,
        now: DateTime<Utc>,
    ) -> Result<Self, PullError> {
        let state_dir = machine.state_dir();
        fs::create_dir_all(&state_dir)
            .map_err(|e| PathError::new("create directory", &state_dir, e))?;
        let lock = ProcessLock::acquire(&state_dir, wait)?;
        sweep_tmp(&state_dir)?;
        sweep_tmp(&machine.link_dir())?;
        if let Ok(rd) = fs::read_dir(machine.store_dir()) {
            for e in rd.flatten() {
                sweep_tmp(&e.path())?;
            }
        }
        let mut state = State::load(&state_dir)?;
        let reconciled = switch::reconcile(&machine, &mut state, now, live)?;
        Ok(Self {
            machine,
            state,
            reconciled,
            _lock: lock,
        })
    }

    /// Check the channel (root rotation, conditional GET, verification) and commit the serial
    /// and ETag it recorded, so that a replayed older manifest is refused from now on.
    pub async fn check_channel(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<channel::Fetched, PullError> {
        let fetcher = fetcher(&self.machine)?;
        let fetched =
            channel::fetch_verified(&self.machine, &mut self.state, &fetcher, now).await?;
        self.state.save(&self.machine.state_dir())?;
        Ok(fetched)
    }
}

/// The fetcher configured from the settings.
pub fn fetcher(m: &Machine) -> Result<Fetcher, FetchError> {
    let s = &m.settings;
    Fetcher::new(FetchConfig {
        timeout_connect: s.connect_timeout,
        stall_timeout: s.stall_timeout,
        retries: s.retries,
        parallel: s.parallel_downloads,
        ..FetchConfig::default()
    })
}

/// The enabled extensions with their requirements.
pub fn wanted(m: &Machine) -> Vec<Wanted> {
    m.settings
        .extensions
        .iter()
        .map(|(n, r)| Wanted {
            name: n.as_str().to_string(),
            req: r.clone(),
        })
        .collect()
}

/// The release of the running OS.
pub fn running_release<'a>(manifest: &'a Manifest, host: &Host) -> Result<&'a Release, PullError> {
    manifest
        .release(&host.version)
        .ok_or_else(|| PullError::UnknownOs {
            version: host.version.clone(),
            channel: manifest.channel.to_string(),
            known: manifest
                .releases
                .iter()
                .map(|r| r.version.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The store file name of a build: name, version and a hash prefix (two builds never share a file).
pub fn store_file_name(b: &ExtBuild) -> String {
    format!(
        "{}-{}-{}.raw",
        b.name,
        b.version,
        &b.image.sha256.to_hex()[..12]
    )
}

/// Name → sha256 of the active generation's builds.
pub fn current_builds(state: &State) -> BTreeMap<String, String> {
    state
        .active
        .iter()
        .flat_map(|g| g.extensions.iter())
        .map(|(n, e)| (n.clone(), e.sha256.clone()))
        .collect()
}

impl PullReport {
    pub(crate) fn empty(release: &str) -> Self {
        PullReport {
            release: release.to_string(),
            changed: BTreeMap::new(),
            problems: Vec::new(),
            downloaded: 0,
            resumed: 0,
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
}

/// Run `upd pull`: stage a newer OS release, or bring the running OS's extensions up to date.
pub async fn pull(
    s: &mut Session,
    version: Option<&Version>,
    opts: &StageOptions,
    progress: &dyn Fn() -> Arc<dyn Progress>,
    now: DateTime<Utc>,
) -> Result<Outcome, PullError> {
    let fetched = s.check_channel(now).await?;
    let host = s.machine.host()?;
    target::drop_withdrawn(s, &fetched.manifest, now)?;
    let release = target::target_release(
        s,
        &fetched.manifest,
        &host,
        version,
        opts.allow_downgrade,
        now,
    )?;
    // The new OS booted but is not marked good: nothing else moves until it is (or is sent back).
    if let Some(p) = s.state.pending.as_ref() {
        let booted = Slots::of(&s.machine)
            .map(|sl| sl.booted(&s.machine))
            .transpose()?;
        if booted.is_some() && p.slot == booted {
            return Err(PullError::AwaitingMarkGood(p.os_version.clone()));
        }
    }
    if release.version != host.version {
        return Ok(Outcome::Staged(
            stage::stage(s, release, opts, progress, now).await?,
        ));
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
) -> Result<PullReport, PullError> {
    let m = s.machine.clone();
    let fetcher = fetcher(&m)?;
    let host = host.clone();
    let plan = plan::plan(release, &host.identity, &wanted(&m));
    let mut report = PullReport {
        release: release.version.to_string(),
        changed: BTreeMap::new(),
        problems: plan.blocked().filter_map(|c| c.problem.clone()).collect(),
        downloaded: 0,
        resumed: 0,
        reconciled: format!("{:?}", s.reconciled),
    };
    let (target, to) = target_generation(&m, &s.state, &plan, &host, now);
    let current = current_links_of(&m, &s.state, &to)?;
    if current == to {
        tracing::info!(release = %release.version, "extensions are up to date");
        return Ok(report);
    }
    let new_files = download(&m, &fetcher, &plan, progress, &mut report).await?;
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

fn current_links_of(m: &Machine, state: &State, to: &LinkSet) -> Result<LinkSet, PullError> {
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
    let before = state
        .active
        .as_ref()
        .map(|a| &a.extensions)
        .unwrap_or(&empty);
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

/// Download the chosen builds that are not in the store yet; re-hash those that are.
pub(crate) async fn download(
    m: &Machine,
    fetcher: &Fetcher,
    plan: &Plan,
    progress: &dyn Fn() -> Arc<dyn Progress>,
    report: &mut PullReport,
) -> Result<Vec<PathBuf>, PullError> {
    let server = channel::server(m)?;
    let mut items = Vec::new();
    for b in plan.chosen() {
        let dest = m.store_file(b.name.as_str(), &store_file_name(b));
        if dest.exists() && cached_hash(&dest)? == b.image.sha256 {
            continue;
        }
        if dest.exists() {
            tracing::warn!(path = %dest.display(), "store image does not match its hash; fetching it again");
            fs::remove_file(&dest).map_err(|e| PathError::new("remove", &dest, e))?;
        }
        let dir = dest.parent().expect("store files have a directory");
        fs::create_dir_all(dir).map_err(|e| PathError::new("create directory", dir, e))?;
        items.push(FetchItem {
            url: b.image.path.url_under(&server),
            dest,
            size: b.image.size,
            sha256: b.image.sha256.0,
            progress: progress(),
        });
    }
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let needed: u64 = items.iter().map(|i| i.size).sum();
    fs::create_dir_all(m.store_dir())
        .map_err(|e| PathError::new("create directory", &m.store_dir(), e))?;
    ensure_free_space(&m.store_dir(), needed)?;
    let results = fetcher
        .fetch_all(&items, m.settings.parallel_downloads)
        .await;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(o) => {
                report.downloaded += o.bytes_downloaded;
                report.resumed += o.resumed_from;
            }
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(items.into_iter().map(|i| i.dest).collect()),
        1 => Err(errors.remove(0).into()),
        _ => Err(PullError::Fetches(errors)),
    }
}

/// Read each chosen image's extension-release from inside the image and apply systemd-sysext's
/// rules against `host` (running or upcoming); the image must also declare what the manifest says.
pub(crate) fn check_images(m: &Machine, plan: &Plan, host: &HostIdentity) -> Result<(), PullError> {
    for b in plan.chosen() {
        let path = m.store_file(b.name.as_str(), &store_file_name(b));
        let bad = |why: String| PullError::Incompatible {
            path: path.clone(),
            why,
        };
        let (found, release) = image::read_extension_release(&path, b.name.as_str())
            .map_err(|e| bad(e.to_string()))?;
        compat::check(&format!("{}.raw", b.name), &found, &release, host)
            .map_err(|e| bad(e.to_string()))?;
        let inside = ExtIdentity::from_release(&release);
        if inside != b.release {
            return Err(bad(format!(
                "its extension-release says {inside:?}, the signed manifest says {:?}",
                b.release
            )));
        }
    }
    Ok(())
}

/// SHA-256 of an image already in the store, re-checked before it is reused.
fn cached_hash(path: &std::path::Path) -> Result<upd_channels::manifest::Sha256, PathError> {
    upd_durable::hash_file(path).map(|(_, h)| upd_channels::manifest::Sha256(h))
}
