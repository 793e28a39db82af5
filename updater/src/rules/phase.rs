//! The phase of the machine in its A/B lifecycle: one pure derivation from the state file, the
//! booted slot and OS, and the pending slot's gptprio, used by every command instead of its own
//! checks.

use serde::Serialize;

use crate::rules::gptprio::Prio;
use crate::state::{Generation, State};

/// Where the machine stands between two generations.
///
/// The pending OS generation outranks an extension switch cut short: commands that change the
/// machine reconcile such a switch before they look, and `status` shows the journal on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum Phase {
    /// Nothing pending, no switch in flight.
    Idle,
    /// A journaled extension switch was cut short; the next run finishes or undoes it.
    Switching,
    /// A new OS generation waits on the other slot. `armed`: the boot loader tries it next
    /// (priority above zero with a try left, or a successful slot for a rollback).
    Staged {
        /// Whether the next boot goes to it.
        armed: bool,
    },
    /// The pending generation's slot booted with its OS: it waits for `upd mark-good`.
    BootedPending,
    /// The pending generation's slot booted, but with another OS version than the one staged.
    WrongOs,
    /// Another slot booted although the pending one was armed and its try is spent, never
    /// successful: the boot loader fell back.
    FellBack,
}

/// What was seen of the booted machine, for [`Phase::of`].
#[derive(Debug, Clone, Copy)]
pub struct Booted<'a> {
    /// The slot that booted.
    pub slot: &'a str,
    /// The OS version that booted (os-release `IMAGE_VERSION`, else `VERSION_ID`).
    pub os_version: &'a str,
    /// The gptprio of the pending generation's slot, when that is not the booted one.
    pub pending_prio: Option<Prio>,
}

impl Phase {
    /// The phase of `state` after booting `booted` (`None`: no A/B slots, or they cannot be read).
    pub fn of(state: &State, booted: Option<Booted<'_>>) -> Phase {
        let Some(p) = &state.pending else {
            return if state.journal.is_some() {
                Phase::Switching
            } else {
                Phase::Idle
            };
        };
        let (Some(b), Some(slot)) = (booted, p.slot.as_deref()) else {
            return Phase::Staged { armed: false };
        };
        if slot == b.slot {
            return if p.os_version == b.os_version {
                Phase::BootedPending
            } else {
                Phase::WrongOs
            };
        }
        match b.pending_prio {
            Some(prio) if prio.priority > 0 && prio.tries == 0 && !prio.successful => {
                Phase::FellBack
            }
            Some(prio) => Phase::Staged {
                armed: prio.priority > 0,
            },
            None => Phase::Staged { armed: false },
        }
    }

    /// The pending generation's slot is the one running (with its OS or not).
    pub fn pending_booted(self) -> bool {
        matches!(self, Phase::BootedPending | Phase::WrongOs)
    }

    /// The next boot changes the running set: a staged generation is armed.
    pub fn reboot_needed(self) -> bool {
        self == Phase::Staged { armed: true }
    }
}

/// The generation that belongs to what booted: the pending one on its slot, else the active or
/// previous one of that OS version (preferring the one recorded on the booted slot).
pub fn booted_generation(state: &State, booted: &str, version: &str) -> Option<Generation> {
    let on_slot = |g: &&Generation| g.slot.as_deref() == Some(booted) && g.os_version == version;
    let same_os = |g: &&Generation| g.slot.is_none() && g.os_version == version;
    let pending = state.pending.iter().find(on_slot);
    let settled = [&state.active, &state.previous].into_iter().flatten();
    pending
        .or_else(|| settled.clone().find(on_slot))
        .or_else(|| settled.clone().find(same_os))
        .cloned()
}

#[cfg(test)]
mod tests;
