//! Which release this machine goes to (explicit version, signed redirect, waves, failed
//! releases, barriers), what the publisher's withdrawal does to a staged one, and the record of
//! the last choice that `upd status` shows.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use chrono::{DateTime, Utc};
use upd_channels::builds::{self, Admission, Plan, Wanted};
use upd_channels::manifest::{ExtBuild, Manifest, Release};
use upd_channels::osrelease::HostIdentity;
use upd_channels::select;
use upd_channels::version::OsVersion;

use crate::host::machine::{Host, Machine};
use crate::host::slot::Slots;
use crate::ops::reboot;
use crate::ops::session::{known_releases, running_release, Session};
use crate::ops::Error;
use crate::state::State;

/// The OS release `upd pull` goes to: `version` if given (waves bypassed, never signatures; an
/// older one only with `allow_downgrade`); else the safe release the publisher directs machines
/// on a withdrawn release to; else the newest eligible one; else the running one. Also returns
/// the selection it made on its own (`None` for an explicit version or without OS slots).
pub fn target_release<'a>(
    s: &Session,
    manifest: &'a Manifest,
    host: &Host,
    version: Option<&OsVersion>,
    allow_downgrade: bool,
    now: DateTime<Utc>,
) -> Result<(&'a Release, Option<Next<'a>>), Error> {
    if let Some(v) = version {
        return Ok((asked_for(manifest, host, v, allow_downgrade)?, None));
    }
    let Some(next) = next_release(&s.machine, &s.state, manifest, &host.version, now) else {
        return Ok((running_release(manifest, host)?, None));
    };
    for k in &next.skipped {
        tracing::info!(release = %k.version, why = %k.why, "passed over");
    }
    let release = match next.release {
        Some(r) => {
            if next.redirected {
                tracing::warn!(running = %host.version, to = %r.version, "the running release is withdrawn; the signed manifest directs this machine to a safe release");
            }
            r
        }
        None => running_release(manifest, host)?,
    };
    Ok((release, Some(next)))
}

/// Why a machine whose running OS its channel does not list (after `upd channel` to a channel
/// without it) waits: `None` when the channel lists the running release. Such a machine still
/// moves to a release the channel offers it ([`target_release`] chooses it); only when there is
/// none does it wait, exiting 0, until there is.
pub fn waiting_why(manifest: &Manifest, host: &Host) -> Option<String> {
    if manifest.release(&host.version).is_some() {
        return None;
    }
    Some(format!(
        "channel {} lists no release for the running OS {} and none this machine can move to yet (it lists: {}); waiting until it does",
        manifest.channel,
        host.version,
        known_releases(manifest)
    ))
}

/// The release an operator named: in the channel, not withdrawn (unless running), not older
/// than the running one unless `allow_downgrade`.
fn asked_for<'a>(
    manifest: &'a Manifest,
    host: &Host,
    v: &OsVersion,
    allow_downgrade: bool,
) -> Result<&'a Release, Error> {
    let r = manifest.release(v).ok_or_else(|| Error::NoSuchRelease {
        version: v.clone(),
        channel: manifest.channel.to_string(),
        known: known_releases(manifest),
    })?;
    if r.withdrawn && *v != host.version {
        return Err(Error::Withdrawn(v.clone()));
    }
    if *v < host.version && !allow_downgrade {
        return Err(Error::Downgrade {
            version: v.clone(),
            running: host.version.clone(),
        });
    }
    Ok(r)
}

/// The OS release this machine moves to on its own, as `pull` and `check` see it.
#[derive(Debug)]
pub struct Next<'a> {
    /// The release (`None`: stay).
    pub release: Option<&'a Release>,
    /// It is the safe release the publisher directs machines on the withdrawn running one to.
    pub redirected: bool,
    /// What the waves, failed releases and barriers chose (before any redirect).
    pub selected: Option<&'a Release>,
    /// Newer releases passed over, and why.
    pub skipped: Vec<select::Skipped>,
}

/// Why a release the operator rolled back from is passed over.
pub const HELD: &str = "rolled back from by the operator on this machine; held back until a newer release appears (`upd pull VERSION` takes it again)";

/// The publisher's signed redirect away from a withdrawn running release, else the newest
/// eligible release (failed releases, releases rolled back from, waves, wariness, pause,
/// barriers). `None` without OS
/// slots: such a machine only follows its running release. Reads only.
pub fn next_release<'a>(
    m: &Machine,
    state: &State,
    manifest: &'a Manifest,
    running: &OsVersion,
    now: DateTime<Utc>,
) -> Option<Next<'a>> {
    Slots::of(m)?;
    let id = m.machine_id();
    let channel = manifest.channel.to_string();
    let passed: BTreeSet<String> = state
        .failed_releases
        .union(&state.held_releases)
        .cloned()
        .collect();
    let mut sel = select::select(manifest, running, &passed, |r| {
        select::wave_check(r, &id, &channel, m.settings.wariness, now)
    });
    for k in &mut sel.skipped {
        if state.held_releases.contains(&k.version) && !state.failed_releases.contains(&k.version) {
            k.why = HELD.into();
        }
    }
    let redirect = select::redirect(manifest, running);
    Some(Next {
        redirected: redirect.is_some(),
        release: redirect.or(sel.target),
        selected: sel.target,
        skipped: sel.skipped,
    })
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
    /// Why this machine is waiting instead of following the channel (the channel lists no
    /// release for the running OS and none to move to).
    #[serde(default)]
    pub waiting: Option<String>,
    /// Newer extension builds for the running OS this machine may not take yet, and why (their
    /// rollout waves, a pause): "NAME VERSION: why".
    #[serde(default)]
    pub builds_waiting: Vec<String>,
}

/// Record what `next` chose, for `upd status` (a failure to write is only logged).
pub fn record_selection(m: &Machine, next: &Next<'_>, now: DateTime<Utc>) {
    let rec = LastSelection {
        at: now,
        target: next.selected.map(|r| r.version.to_string()),
        passed_over: next.skipped.clone(),
        waiting: None,
        builds_waiting: Vec::new(),
    };
    write_selection(m, &rec);
}

/// Record that this machine waits, and why, for `upd status` (a failure to write is only logged).
pub fn record_waiting(m: &Machine, why: &str, now: DateTime<Utc>) {
    let rec = LastSelection {
        at: now,
        target: None,
        passed_over: Vec::new(),
        waiting: Some(why.to_string()),
        builds_waiting: Vec::new(),
    };
    write_selection(m, &rec);
}

/// Record the running OS's extension builds that wait for their rollout, for `upd status` (next
/// to the last OS selection; a failure to write is only logged).
pub fn record_builds_waiting(m: &Machine, plan: &Plan, now: DateTime<Utc>) {
    let waiting: Vec<String> = plan
        .choices
        .iter()
        .filter_map(|c| c.waiting.clone())
        .collect();
    let last = last_selection(m);
    if last
        .as_ref()
        .map_or(waiting.is_empty(), |l| l.builds_waiting == waiting)
    {
        return;
    }
    let rec = LastSelection {
        builds_waiting: waiting,
        ..last.unwrap_or(LastSelection {
            at: now,
            target: None,
            passed_over: Vec::new(),
            waiting: None,
            builds_waiting: Vec::new(),
        })
    };
    write_selection(m, &rec);
}

/// Forget a recorded wait (the channel lists the running release again).
pub fn clear_waiting(m: &Machine) {
    if last_selection(m).is_some_and(|l| l.waiting.is_some()) {
        let _ = fs::remove_file(m.state_dir().join(SELECTION_FILE));
    }
}

fn write_selection(m: &Machine, rec: &LastSelection) {
    let bytes = serde_json::to_vec_pretty(rec).expect("plain struct");
    let path = m.state_dir().join(SELECTION_FILE);
    if let Err(e) = upd_durable::atomic_write(&path, &bytes, 0o644) {
        tracing::warn!(error = %e, "could not record the selection");
    }
}

/// The last selection recorded by `pull` or `update`.
pub fn last_selection(m: &Machine) -> Option<LastSelection> {
    serde_json::from_slice(&fs::read(m.state_dir().join(SELECTION_FILE)).ok()?).ok()
}

/// A pending generation (staged, not booted) of a release the publisher withdrew is dropped:
/// its slot is made unbootable and the reboot signal removed. Returns the dropped version.
pub fn drop_withdrawn(
    s: &mut Session,
    manifest: &Manifest,
    now: DateTime<Utc>,
) -> Result<Option<String>, Error> {
    let Some(p) = s.state.pending.clone() else {
        return Ok(None);
    };
    let withdrawn = p
        .os_version
        .parse::<OsVersion>()
        .ok()
        .and_then(|v| manifest.release(&v))
        .is_some_and(|r| r.withdrawn);
    let Some(slots) = Slots::of(&s.machine).filter(|_| withdrawn) else {
        return Ok(None);
    };
    if s.phase()?.pending_booted() {
        return Ok(None); // already running it: the redirect, not a drop, moves it away
    }
    if let Some(l) = &p.slot {
        slots.disarm(l)?;
    }
    s.state.drop_pending(now)?;
    s.state.save(&s.machine.state_dir())?;
    reboot::clear_signal(&s.machine);
    tracing::warn!(release = %p.os_version, "the staged release was withdrawn by the publisher; dropped it");
    Ok(Some(p.os_version))
}

/// Which extension builds this machine may take now: their rollout (waves, pause, withdrawal)
/// at this machine's place in the fleet, and the builds it runs (kept through a pause).
#[derive(Debug, Clone)]
pub struct BuildGate {
    machine_id: String,
    channel: String,
    wariness: f64,
    now: DateTime<Utc>,
    running: BTreeMap<String, String>,
    mode: GateMode,
}

/// How a release's builds are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// The running release's builds: each by its own waves, or by its release's.
    Running,
    /// The release being staged, which this machine was admitted to (its waves, a signed
    /// redirect): builds that follow it are admitted with it; builds with waves, a pause or a
    /// withdrawal of their own are judged by those.
    Staging,
    /// A release or build pulled by version: waves and pauses bypassed on purpose, withdrawn
    /// builds still never taken.
    Bypass,
}

impl BuildGate {
    /// The gate of machine `m` (its id, channel, wariness, and its running builds from `state`).
    pub fn new(m: &Machine, state: &State, mode: GateMode, now: DateTime<Utc>) -> Self {
        let running = state
            .active
            .iter()
            .flat_map(|g| &g.extensions)
            .map(|(n, e)| (n.clone(), e.sha256.clone()))
            .collect();
        BuildGate {
            machine_id: m.machine_id(),
            channel: m.settings.channel.to_string(),
            wariness: m.settings.wariness,
            now,
            running,
            mode,
        }
    }

    /// Whether this machine may take build `b` of `release` now, else why not.
    pub fn admits(&self, release: &Release, b: &ExtBuild) -> Result<(), String> {
        let follows = b.rollout.is_none() && !b.paused && !b.withdrawn;
        match self.mode {
            GateMode::Bypass if b.withdrawn => Err("withdrawn by the publisher".into()),
            GateMode::Bypass => Ok(()),
            GateMode::Staging if follows => Ok(()),
            GateMode::Staging | GateMode::Running => select::build_wave_check(
                release,
                b,
                &self.machine_id,
                &self.channel,
                self.wariness,
                self.now,
            ),
        }
    }

    /// The builds of `release` for `wanted` on `host` that this machine may take now.
    pub fn plan(&self, release: &Release, host: &HostIdentity, wanted: &[Wanted]) -> Plan {
        let admit = |b: &ExtBuild| self.admits(release, b);
        let adm = Admission {
            admit: &admit,
            running: &self.running,
        };
        builds::plan(release, host, wanted, &adm)
    }
}
