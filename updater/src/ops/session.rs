//! Opening the machine for a command: a [`Session`] (lock, sweep, reconcile) for the commands
//! that change it, a [`View`] (state as it is, nothing written) for the ones that only look, and
//! what both need: the fetcher, the channel check, the enabled extensions and the phase.

use std::fs;

use chrono::{DateTime, Utc};
use upd_channels::builds::Wanted;
use upd_channels::manifest::{Manifest, Release};

use crate::host::lock::ProcessLock;
use crate::host::machine::{Host, Machine};
use crate::host::slot::Slots;
use crate::ops::switch::{self, Reconciled};
use crate::ops::Error;
use crate::remote::channel;
use crate::remote::fetch::{FetchConfig, FetchError, Fetcher};
use crate::rules::phase::{Booted, Phase};
use crate::state::State;
use upd_durable::sweep_tmp;

/// Everything a command that changes the machine needs, after taking the lock and reconciling.
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
    ) -> Result<Self, Error> {
        let state_dir = machine.state_dir();
        upd_durable::create_dir_durable(&state_dir)?;
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
    pub async fn check_channel(&mut self, now: DateTime<Utc>) -> Result<Manifest, Error> {
        let fetched = fetch_channel(&self.machine, &self.state, now).await?;
        channel::commit(&self.machine, &mut self.state, &fetched)?;
        self.state.save(&self.machine.state_dir())?;
        Ok(fetched.manifest)
    }

    /// The phase of the machine as it booted (see [`observe`]).
    pub fn phase(&self) -> Result<Phase, Error> {
        observe(&self.machine, &self.state)
    }
}

/// The machine as it is, for the commands that only look: no lock, no sweep, no reconciliation,
/// and nothing is written (not even the serial a check sees).
pub struct View {
    /// The machine.
    pub machine: Machine,
    /// The state file as it is on disk (a missing one reads as empty).
    pub state: State,
}

impl View {
    /// Load the state; changes nothing.
    pub fn open(machine: Machine) -> Result<Self, Error> {
        let state = State::load(&machine.state_dir())?;
        Ok(Self { machine, state })
    }

    /// Check the channel as [`Session::check_channel`] does, remembering nothing.
    pub async fn check_channel(&self, now: DateTime<Utc>) -> Result<Manifest, Error> {
        Ok(fetch_channel(&self.machine, &self.state, now)
            .await?
            .manifest)
    }
}

/// Fetch and verify the channel with the configured fetcher; nothing is written.
async fn fetch_channel(
    m: &Machine,
    state: &State,
    now: DateTime<Utc>,
) -> Result<channel::Fetched, Error> {
    let fetcher = fetcher(m)?;
    Ok(channel::fetch_verified(m, state, &fetcher, now).await?)
}

/// The phase of `state` on this machine: reads the booted slot and the booted OS version, then
/// [`phase_on`].
pub fn observe(m: &Machine, state: &State) -> Result<Phase, Error> {
    let Some(slots) = Slots::of(m) else {
        return Ok(Phase::of(state, None));
    };
    let slot = slots.booted(m)?;
    phase_on(&slots, &slot, &m.host()?.version.to_string(), state)
}

/// The phase of `state` after `slot` of `slots` booted `os_version`, for a caller that read
/// those already: reads the pending slot's gptprio (when that slot is not the booted one) and
/// applies [`Phase::of`].
pub fn phase_on(
    slots: &Slots,
    slot: &str,
    os_version: &str,
    state: &State,
) -> Result<Phase, Error> {
    let pending_prio = match state.pending.as_ref().and_then(|p| p.slot.as_deref()) {
        Some(l) if l != slot => Some(slots.slot(l)?.prio),
        _ => None,
    };
    Ok(Phase::of(
        state,
        Some(Booted {
            slot,
            os_version,
            pending_prio,
        }),
    ))
}

/// The fetcher configured from the settings.
pub fn fetcher(m: &Machine) -> Result<Fetcher, FetchError> {
    let s = &m.settings;
    Fetcher::new(FetchConfig {
        timeout_connect: s.connect_timeout,
        stall_timeout: s.stall_timeout,
        retries: s.retries,
        parallel: s.parallel_downloads,
        ranges_per_request: s.ranges_per_request,
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
pub fn running_release<'a>(manifest: &'a Manifest, host: &Host) -> Result<&'a Release, Error> {
    manifest
        .release(&host.version)
        .ok_or_else(|| Error::UnknownOs {
            version: host.version.clone(),
            channel: manifest.channel.to_string(),
            known: known_releases(manifest),
        })
}

/// The channel's release versions, comma-separated, for error messages.
pub fn known_releases(manifest: &Manifest) -> String {
    manifest
        .releases
        .iter()
        .map(|r| r.version.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
