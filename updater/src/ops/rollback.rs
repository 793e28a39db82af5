//! `upd rollback`: back to the previous generation — for another OS by giving its slot the
//! next boot, for the same OS by a journaled switch of the extension set.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::host::failpoint;
use crate::host::machine::{os_version, Machine};
use crate::host::slot::Slots;
use crate::ops::session::Session;
use crate::ops::switch;
use crate::ops::Error;
use crate::state::{Generation, LinkSet, State};

/// What `upd rollback` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum Rollback {
    /// The previous OS boots next (pending until it is marked good).
    OsStaged {
        /// The generation.
        generation: u64,
        /// Its OS.
        os_version: String,
        /// Its slot.
        slot: String,
    },
    /// Same OS: the previous extension set is active again now.
    Switched {
        /// The generation.
        generation: u64,
    },
}

/// `upd rollback`: back to the previous generation — for another OS by giving its slot the next
/// boot (after checking the slot still holds that OS), for the same OS by a journaled switch.
pub fn rollback(s: &mut Session, now: DateTime<Utc>) -> Result<Rollback, Error> {
    let m = s.machine.clone();
    let prev = s
        .state
        .previous
        .clone()
        .ok_or(Error::NoRollback("there is no previous generation".into()))?;
    let active = s.state.active.clone();
    let same_os = active
        .as_ref()
        .is_some_and(|a| a.os_version == prev.os_version && a.slot == prev.slot);
    if same_os || prev.slot.is_none() {
        let to: LinkSet = link_set(&m, &s.state, &prev);
        let target = Generation {
            id: s.state.next_generation_id(),
            created: now,
            ..prev.clone()
        };
        let id = target.id;
        switch::switch(&m, &mut s.state, target, to, now)?;
        return Ok(Rollback::Switched { generation: id });
    }
    let slots = Slots::require(&m)?;
    let label = prev.slot.clone().expect("checked above");
    let info = slots.slot(&label)?;
    let osr = slots.os_release(&info)?;
    let v = os_version(&osr).unwrap_or_default();
    if v != prev.os_version {
        return Err(Error::NoRollback(format!(
            "slot {label} no longer holds OS {} (it holds '{v}')",
            prev.os_version
        )));
    }
    // A rollback cut short after recording it (pending is the previous generation) just goes on.
    let resumed = s.state.pending.as_ref().is_some_and(|p| p.id == prev.id);
    if !resumed {
        s.state
            .stage_rollback(now)
            .map_err(|e| Error::NoRollback(e.to_string()))?;
        s.state.save(&m.state_dir())?;
    }
    failpoint::hit("rollback-pending");
    slots.prioritize(&label)?;
    Ok(Rollback::OsStaged {
        generation: prev.id,
        os_version: prev.os_version,
        slot: label,
    })
}

/// Links for `g`, removing links of the active generation's other extensions.
fn link_set(m: &Machine, state: &State, g: &Generation) -> LinkSet {
    let mut to = LinkSet::new();
    for n in state.active.iter().flat_map(|a| a.extensions.keys()) {
        to.insert(n.clone(), None);
    }
    for (n, e) in &g.extensions {
        to.insert(n.clone(), Some(m.link_target(n, &e.file)));
    }
    to
}
