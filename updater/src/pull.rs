//! `upd pull` for the running OS: check the channel, fetch the chosen extension builds, check them
//! from inside the images against the running host, then switch.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use semver::Version;
use upd_channels::compat;
use upd_channels::image;
use upd_channels::manifest::{ExtBuild, ExtIdentity, Manifest, Release};

use crate::channel::{self, ChannelError};
use crate::fetch::{ensure_free_space, FetchConfig, FetchError, FetchItem, Fetcher, Progress};
use crate::fsutil::{sweep_tmp, PathError};
use crate::lock::{LockError, ProcessLock};
use crate::machine::{Host, Machine, MachineError};
use crate::plan::{self, Plan, Wanted};
use crate::select;
use crate::slot::Slots;
use crate::stage::{self, StageOptions, StageReport};
use crate::state::{ExtImage, Generation, LinkSet, State, StateError};
use crate::switch::{self, Reconciled, SwitchError};
use upd_channels::osrelease::HostIdentity;

/// Why a pull or check stopped; the machine is left as it was (or on the complete new set).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Another upd holds the lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// State file.
    #[error(transparent)]
    State(#[from] StateError),
    /// The machine (os-release, links).
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// Channel, root or manifest.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Downloads.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Several downloads failed.
    #[error("{} download(s) failed: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Fetches(Vec<FetchError>),
    /// The running OS is not a release of the channel.
    #[error(
        "the running OS {version} is not a release of channel '{channel}' (releases: {known})"
    )]
    UnknownOs {
        /// Host version.
        version: Version,
        /// Channel.
        channel: String,
        /// Known versions.
        known: String,
    },
    /// The OS slots.
    #[error(transparent)]
    Slot(#[from] crate::slot::SlotError),
    /// An OS release some enabled extension has no merging build for.
    #[error("OS release {release} is not staged: {}; an extension can be left out on purpose with --drop-extension NAME", .blockers.join("; "))]
    Gated {
        /// The release.
        release: String,
        /// What blocks it, one line per extension.
        blockers: Vec<String>,
    },
    /// `--drop-extension` named an extension that is not enabled.
    #[error("--drop-extension {0}: no such extension is enabled")]
    NotEnabled(String),
    /// The new OS booted and waits for `upd mark-good`.
    #[error("OS {0} booted from the new slot and is not marked good yet; run `upd mark-good` (or `upd rollback`) first")]
    AwaitingMarkGood(String),
    /// Health checks failed and there was no new OS to send back.
    #[error("health checks failed: {0}")]
    Unhealthy(String),
    /// `upd rollback` has nothing to go back to.
    #[error("cannot roll back: {0}")]
    NoRollback(String),
    /// The reboot strategy could not run.
    #[error("reboot: {0}")]
    Reboot(String),
    /// The release asked for is not in the manifest.
    #[error("release {version} is not in channel '{channel}' (releases: {known})")]
    NoSuchRelease {
        /// Asked for.
        version: Version,
        /// Channel.
        channel: String,
        /// Known versions.
        known: String,
    },
    /// The release asked for is withdrawn.
    #[error("release {0} is withdrawn by the publisher")]
    Withdrawn(Version),
    /// An older OS release was asked for.
    #[error("release {version} is older than the running OS {running}; use `upd rollback` for the previous generation")]
    Downgrade {
        /// Asked for.
        version: Version,
        /// Running.
        running: Version,
    },
    /// An image that systemd-sysext would not merge, or that differs from what the manifest declares.
    #[error("refused image {path}: {why}")]
    Incompatible {
        /// The image.
        path: PathBuf,
        /// The rule that fails.
        why: String,
    },
    /// The switch.
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// File system.
    #[error(transparent)]
    Io(#[from] PathError),
}

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

/// The OS release `upd pull` goes to: `version` if given (waves bypassed, never signatures; an
/// older one only with `allow_downgrade`); else the safe release the publisher directs machines
/// on a withdrawn release to; else the newest eligible one; else the running one.
pub fn target_release<'a>(
    s: &Session,
    manifest: &'a Manifest,
    host: &Host,
    version: Option<&Version>,
    allow_downgrade: bool,
    now: DateTime<Utc>,
) -> Result<&'a Release, PullError> {
    if let Some(v) = version {
        let r = manifest
            .release(v)
            .ok_or_else(|| PullError::NoSuchRelease {
                version: v.clone(),
                channel: manifest.channel.to_string(),
                known: known(manifest),
            })?;
        if r.withdrawn && *v != host.version {
            return Err(PullError::Withdrawn(v.clone()));
        }
        if *v < host.version && !allow_downgrade {
            return Err(PullError::Downgrade {
                version: v.clone(),
                running: host.version.clone(),
            });
        }
        return Ok(r);
    }
    if Slots::of(&s.machine).is_some() {
        if let Some(r) = select::redirect(manifest, &host.version) {
            tracing::warn!(running = %host.version, to = %r.version, "the running release is withdrawn; the signed manifest directs this machine to a safe release");
            return Ok(r);
        }
        let sel = select_for(&s.machine, &s.state, manifest, &host.version, now);
        for k in &sel.skipped {
            tracing::info!(release = %k.version, why = %k.why, "passed over");
        }
        if let Some(r) = sel.target {
            return Ok(r);
        }
    }
    running_release(manifest, host)
}

/// [`select::select`] for this machine: its failed releases, rollout waves and wariness.
pub fn select_for<'a>(
    m: &Machine,
    state: &State,
    manifest: &'a Manifest,
    running: &Version,
    now: DateTime<Utc>,
) -> select::Selection<'a> {
    let id = m.machine_id();
    let channel = manifest.channel.to_string();
    let sel = select::select(manifest, running, &state.failed_releases, |r| {
        select::wave_check(r, &id, &channel, m.settings.wariness, now)
    });
    record_selection(m, &sel, now);
    sel
}

/// The file keeping the last selection, for `upd status`.
pub const SELECTION_FILE: &str = "selection.json";

/// The last selection as `upd status` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastSelection {
    /// When the channel was checked.
    pub at: DateTime<Utc>,
    /// The release chosen, if any.
    pub target: Option<String>,
    /// Newer releases passed over and why (waves say when this machine becomes eligible).
    pub passed_over: Vec<select::Skipped>,
}

fn record_selection(m: &Machine, sel: &select::Selection<'_>, now: DateTime<Utc>) {
    let rec = LastSelection {
        at: now,
        target: sel.target.map(|r| r.version.to_string()),
        passed_over: sel.skipped.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&rec).expect("plain struct");
    let path = m.state_dir().join(SELECTION_FILE);
    if let Err(e) = crate::fsutil::atomic_write(&path, &bytes, 0o644) {
        tracing::warn!(error = %e, "could not record the selection");
    }
}

/// The last selection recorded by `check`, `pull` or `update`.
pub fn last_selection(m: &Machine) -> Option<LastSelection> {
    serde_json::from_slice(&fs::read(m.state_dir().join(SELECTION_FILE)).ok()?).ok()
}

/// A pending generation (staged, not booted) of a release the publisher withdrew is dropped:
/// its slot is made unbootable and the reboot signal removed. Returns the dropped version.
pub fn drop_withdrawn(
    s: &mut Session,
    manifest: &Manifest,
    now: DateTime<Utc>,
) -> Result<Option<String>, PullError> {
    let Some(p) = s.state.pending.clone() else {
        return Ok(None);
    };
    let withdrawn = p
        .os_version
        .parse::<Version>()
        .ok()
        .and_then(|v| manifest.release(&v))
        .is_some_and(|r| r.withdrawn);
    let Some(slots) = Slots::of(&s.machine).filter(|_| withdrawn) else {
        return Ok(None);
    };
    if p.slot.as_deref() == Some(slots.booted(&s.machine)?.as_str()) {
        return Ok(None); // already running it: the redirect, not a drop, moves it away
    }
    if let Some(l) = &p.slot {
        slots.disarm(l)?;
    }
    s.state.drop_pending(now).map_err(StateError::from)?;
    s.state.save(&s.machine.state_dir())?;
    crate::reboot::clear_signal(&s.machine);
    tracing::warn!(release = %p.os_version, "the staged release was withdrawn by the publisher; dropped it");
    Ok(Some(p.os_version))
}

fn known(manifest: &Manifest) -> String {
    manifest
        .releases
        .iter()
        .map(|r| r.version.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    drop_withdrawn(s, &fetched.manifest, now)?;
    let release = target_release(
        s,
        &fetched.manifest,
        &host,
        version,
        opts.allow_downgrade,
        now,
    )?;
    if release.version != host.version {
        return Ok(Outcome::Staged(
            stage::stage(s, release, opts, progress, now).await?,
        ));
    }
    if let Some(p) = s.state.pending.as_ref() {
        let booted = Slots::of(&s.machine)
            .map(|sl| sl.booted(&s.machine))
            .transpose()?;
        if booted.is_some() && p.slot == booted {
            return Err(PullError::AwaitingMarkGood(p.os_version.clone()));
        }
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
        exts.insert(
            b.name.to_string(),
            ExtImage {
                version: b.version.to_string(),
                file,
                sha256: b.image.sha256.to_hex(),
            },
        );
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
    upd_channels::repo::hash_file(path)
        .map(|(_, h)| h)
        .map_err(|e| PathError::new("hash", path, std::io::Error::other(e.to_string())))
}
