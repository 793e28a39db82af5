//! `upd boot`, early in the boot before systemd-sysext merges: see which slot and OS came up,
//! settle the pending generation (booted, wrong OS, fell back) and point the links at the
//! generation of what booted.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::host::failpoint;
use crate::host::machine::Machine;
use crate::host::slot::Slots;
use crate::ops::session::{phase_on, Session};
use crate::ops::Error;
use crate::rules::phase::{booted_generation, Phase};
use crate::state::{Generation, LinkSet, State};

/// What `upd boot` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    /// The slot that booted (`None`: no A/B slots configured).
    pub slot: Option<String>,
    /// The OS version that booted.
    pub os_version: Option<String>,
    /// The generation whose links are in place now.
    pub generation: Option<u64>,
    /// In words.
    pub what: String,
}

/// `upd boot`: see which slot and OS came up and point the links at that generation — the
/// pending one if the new OS booted, the one on the booted slot otherwise. A pending OS whose
/// slot the boot loader gave up on (tries spent, never successful) is marked failed.
///
/// Links are a function of (booted slot, state) only, so a run cut short is simply run again.
pub fn boot(s: &mut Session, now: DateTime<Utc>) -> Result<BootReport, Error> {
    let m = s.machine.clone();
    let Some(slots) = Slots::of(&m) else {
        return Ok(BootReport {
            slot: None,
            os_version: m.host().ok().map(|h| h.version.to_string()),
            generation: s.state.active.as_ref().map(|g| g.id),
            what: "no OS slots configured (DISK unset): links left as they are".into(),
        });
    };
    let booted = slots.booted(&m)?;
    let version = m.host()?.version.to_string();
    let what = settle_pending(s, &slots, &booted, &version, now)?;
    let Some(target) = booted_generation(&s.state, &booted, &version) else {
        return Ok(BootReport {
            slot: Some(booted),
            os_version: Some(version.clone()),
            generation: None,
            what: format!("no generation of OS {version} is known: links left as they are"),
        });
    };
    relink(&m, &s.state, &target)?;
    Ok(BootReport {
        what: what
            .unwrap_or_else(|| format!("generation {} of OS {version} on {booted}", target.id)),
        slot: Some(booted),
        os_version: Some(version),
        generation: Some(target.id),
    })
}

/// Act on what the boot says about the pending generation: a wrong OS on its slot or a fallback
/// marks its release failed. Returns what happened, in words, when there is something to say.
fn settle_pending(
    s: &mut Session,
    slots: &Slots,
    booted: &str,
    version: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, Error> {
    let Some(p) = s.state.pending.clone() else {
        return Ok(None);
    };
    Ok(match phase_on(slots, booted, version, &s.state)? {
        Phase::BootedPending => Some(format!(
            "the new OS {version} booted from {booted}; waiting for `upd mark-good`"
        )),
        Phase::WrongOs => {
            tracing::error!(expected = %p.os_version, found = %version, slot = %booted, "the pending slot booted another OS version");
            fail(s, slots, booted, now)?;
            Some(format!("slot {booted} booted OS {version}, not the staged {}: marked failed, the other slot boots next", p.os_version))
        }
        Phase::FellBack => {
            let l = p.slot.as_deref().expect("a fallback has a slot");
            s.state.fail_pending(now)?;
            s.state.save(&s.machine.state_dir())?;
            slots.disarm(l)?;
            Some(format!("the boot loader fell back from {l} (OS {} never became good): release marked failed", p.os_version))
        }
        Phase::Idle | Phase::Switching | Phase::Staged { .. } => None,
    })
}

/// Point every upd-owned link at `target`'s images (removing those of other generations).
fn relink(m: &Machine, state: &State, target: &Generation) -> Result<(), Error> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for g in [&state.active, &state.pending, &state.previous]
        .into_iter()
        .flatten()
    {
        names.extend(g.extensions.keys().cloned());
    }
    let mut to = LinkSet::new();
    for n in names {
        if m.current_link(&n).is_err() {
            continue; // an administrator's image: never touched
        }
        let t = target
            .extensions
            .get(&n)
            .map(|e| m.link_target(&n, &e.file));
        to.insert(n, t);
    }
    m.apply_links(&to, || failpoint::hit("boot-link"))?;
    Ok(())
}

/// The pending generation on the booted slot failed: mark its release failed, make the slot
/// unbootable and the other (known-good) slot the next boot.
pub fn fail(s: &mut Session, slots: &Slots, booted: &str, now: DateTime<Utc>) -> Result<(), Error> {
    s.state.fail_pending(now)?;
    s.state.save(&s.machine.state_dir())?;
    slots.disarm(booted)?;
    slots.prioritize(slots.other(booted))?;
    Ok(())
}
