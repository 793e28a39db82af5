//! Which release this machine goes to (explicit version, signed redirect, waves, failed
//! releases, barriers), what the publisher's withdrawal does to a staged one, and the record of
//! the last choice that `upd status` shows.

use std::fs;

use chrono::{DateTime, Utc};
use semver::Version;
use upd_channels::manifest::{Manifest, Release};

use crate::machine::{Host, Machine};
use crate::pull::{running_release, PullError, Session};
use crate::select;
use crate::slot::Slots;
use crate::state::{State, StateError};

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
    let next = next_release(&s.machine, &s.state, manifest, &host.version, now);
    for k in &next.skipped {
        tracing::info!(release = %k.version, why = %k.why, "passed over");
    }
    match next.release {
        Some(r) => {
            if next.redirected {
                tracing::warn!(running = %host.version, to = %r.version, "the running release is withdrawn; the signed manifest directs this machine to a safe release");
            }
            Ok(r)
        }
        None => running_release(manifest, host),
    }
}

/// The OS release this machine moves to on its own, as `pull` and `check` see it.
#[derive(Debug)]
pub struct Next<'a> {
    /// The release (`None`: stay; always `None` without OS slots).
    pub release: Option<&'a Release>,
    /// It is the safe release the publisher directs machines on the withdrawn running one to.
    pub redirected: bool,
    /// Newer releases passed over, and why.
    pub skipped: Vec<select::Skipped>,
}

/// The publisher's signed redirect away from a withdrawn running release, else the newest
/// eligible release (failed releases, waves, wariness, pause, barriers; recorded for `status`).
pub fn next_release<'a>(
    m: &Machine,
    state: &State,
    manifest: &'a Manifest,
    running: &Version,
    now: DateTime<Utc>,
) -> Next<'a> {
    if Slots::of(m).is_none() {
        return Next {
            release: None,
            redirected: false,
            skipped: Vec::new(),
        };
    }
    let sel = select_for(m, state, manifest, running, now);
    let redirect = select::redirect(manifest, running);
    Next {
        redirected: redirect.is_some(),
        release: redirect.or(sel.target),
        skipped: sel.skipped,
    }
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
    if let Err(e) = upd_durable::atomic_write(&path, &bytes, 0o644) {
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
