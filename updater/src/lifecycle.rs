//! The OS lifecycle around a reboot: `upd boot` (which generation came up), `upd mark-good`
//! (health checks, successful slot, pending → active), `upd rollback`, and image retention.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use chrono::{DateTime, Utc};
use serde::Serialize;
use upd_durable::PathError;

use crate::failpoint;
use crate::gpt::Prio;
use crate::machine::Machine;
use crate::pull::{PullError, Session};
use crate::slot::{SlotError, Slots};
use crate::state::{Generation, LinkSet, State, StateError};
use crate::switch;

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
pub fn boot(s: &mut Session, now: DateTime<Utc>) -> Result<BootReport, PullError> {
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
    let host = m.host()?;
    let version = host.version.to_string();
    let mut what = String::new();
    if let Some(p) = s.state.pending.clone() {
        let prio = match p.slot.as_deref() {
            Some(l) if l != booted => Some(slots.slot(l)?.prio),
            _ => None,
        };
        match pending_verdict(&p, &booted, &version, prio) {
            PendingVerdict::Booted => {
                what = format!(
                    "the new OS {version} booted from {booted}; waiting for `upd mark-good`"
                );
            }
            PendingVerdict::WrongOs => {
                tracing::error!(expected = %p.os_version, found = %version, slot = %booted, "the pending slot booted another OS version");
                fail(s, &slots, &booted, now)?;
                what = format!("slot {booted} booted OS {version}, not the staged {}: marked failed, the other slot boots next", p.os_version);
            }
            PendingVerdict::FellBack => {
                let l = p.slot.as_deref().expect("a fallback has a slot");
                s.state.fail_pending(now).map_err(StateError::from)?;
                s.state.save(&m.state_dir())?;
                slots.disarm(l)?;
                what = format!("the boot loader fell back from {l} (OS {} never became good): release marked failed", p.os_version);
            }
            PendingVerdict::NotYet => {}
        }
    }
    let target = booted_generation(&s.state, &booted, &version);
    let Some(target) = target else {
        return Ok(BootReport {
            slot: Some(booted),
            os_version: Some(version.clone()),
            generation: None,
            what: format!("no generation of OS {version} is known: links left as they are"),
        });
    };
    relink(&m, &s.state, &target)?;
    if what.is_empty() {
        what = format!("generation {} of OS {version} on {booted}", target.id);
    }
    Ok(BootReport {
        slot: Some(booted),
        os_version: Some(version),
        generation: Some(target.id),
        what,
    })
}

/// What a boot says about the pending generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingVerdict {
    /// Its slot booted with its OS: it waits for `upd mark-good`.
    Booted,
    /// Its slot booted, but with another OS version than the one staged.
    WrongOs,
    /// Another slot booted although the pending one was armed and its try is spent, never
    /// successful: the boot loader fell back.
    FellBack,
    /// Not booted yet (armed and waiting, or never armed because staging was cut short).
    NotYet,
}

/// Judge the pending generation `p` after a boot of slot `booted` running `version`;
/// `pending_prio` is the gptprio of the pending slot when another slot booted.
pub fn pending_verdict(
    p: &Generation,
    booted: &str,
    version: &str,
    pending_prio: Option<Prio>,
) -> PendingVerdict {
    match (p.slot.as_deref(), pending_prio) {
        (Some(l), _) if l == booted && p.os_version == version => PendingVerdict::Booted,
        (Some(l), _) if l == booted => PendingVerdict::WrongOs,
        (Some(_), Some(prio)) if prio.priority > 0 && prio.tries == 0 && !prio.successful => {
            PendingVerdict::FellBack
        }
        _ => PendingVerdict::NotYet,
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

/// Point every upd-owned link at `target`'s images (removing those of other generations).
fn relink(m: &Machine, state: &State, target: &Generation) -> Result<(), PullError> {
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

/// What `upd mark-good` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum MarkGood {
    /// The pending generation is active now.
    Promoted {
        /// Its id.
        generation: u64,
        /// Its OS version.
        os_version: String,
        /// Store images removed beyond retention.
        removed: Vec<PathBuf>,
    },
    /// Nothing was pending on the booted slot; the slot is (still) marked successful.
    AlreadyGood,
    /// Health checks failed on a new OS: marked failed, the other slot boots next.
    SentBack {
        /// The failed release.
        os_version: String,
        /// The failing check and its output.
        why: String,
    },
    /// No OS slots are configured and the health checks passed.
    NoSlots,
}

/// `upd mark-good`: run the health checks; on success mark the booted slot successful and make
/// a pending generation that booted active (active → previous) and remove unused images; on
/// failure of a new OS, mark it failed and give the other slot the next boot.
pub fn mark_good(s: &mut Session, now: DateTime<Utc>) -> Result<MarkGood, PullError> {
    let m = s.machine.clone();
    let health = run_health_checks(&m);
    let Some(slots) = Slots::of(&m) else {
        return match health {
            Ok(()) => Ok(MarkGood::NoSlots),
            Err(why) => Err(PullError::Unhealthy(why)),
        };
    };
    let booted = slots.booted(&m)?;
    let pending_booted = s
        .state
        .pending
        .clone()
        .filter(|p| p.slot.as_deref() == Some(booted.as_str()));
    match (pending_booted, health) {
        (Some(p), Ok(())) => {
            slots.mark_successful(&booted)?;
            failpoint::hit("markgood-slot");
            s.state.promote_pending(now).map_err(StateError::from)?;
            s.state.save(&m.state_dir())?;
            failpoint::hit("markgood-promoted");
            let removed = collect_garbage(&m, &s.state)?;
            Ok(MarkGood::Promoted {
                generation: p.id,
                os_version: p.os_version,
                removed,
            })
        }
        (Some(p), Err(why)) => {
            fail(s, &slots, &booted, now)?;
            Ok(MarkGood::SentBack {
                os_version: p.os_version,
                why,
            })
        }
        (None, Ok(())) => {
            if !slots.slot(&booted)?.prio.successful {
                slots.mark_successful(&booted)?;
            }
            Ok(MarkGood::AlreadyGood)
        }
        (None, Err(why)) => Err(PullError::Unhealthy(why)),
    }
}

/// The pending generation on the booted slot failed: mark its release failed, make the slot
/// unbootable and the other (known-good) slot the next boot.
fn fail(s: &mut Session, slots: &Slots, booted: &str, now: DateTime<Utc>) -> Result<(), PullError> {
    s.state.fail_pending(now).map_err(StateError::from)?;
    s.state.save(&s.machine.state_dir())?;
    slots.disarm(booted)?;
    slots.prioritize(slots.other(booted))?;
    Ok(())
}

/// Run every executable in `HEALTH_DIR`, in name order; the first failure is reported with its output.
pub fn run_health_checks(m: &Machine) -> Result<(), String> {
    let dir = m.root.join(&m.settings.health_dir);
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut checks: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.is_file() && fs::metadata(p).is_ok_and(|md| md.permissions().mode() & 0o111 != 0)
        })
        .collect();
    checks.sort();
    for c in checks {
        let out = Command::new(&c)
            .env("UPD_ROOT", m.root.dir())
            .output()
            .map_err(|e| format!("health check {} could not run: {e}", c.display()))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "health check {} failed ({}): {}",
                c.display(),
                out.status,
                text.trim()
            ));
        }
        tracing::info!(check = %c.display(), "health check passed");
    }
    Ok(())
}

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
pub fn rollback(s: &mut Session, now: DateTime<Utc>) -> Result<Rollback, PullError> {
    let m = s.machine.clone();
    let prev = s.state.previous.clone().ok_or(PullError::NoRollback(
        "there is no previous generation".into(),
    ))?;
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
    let v = crate::machine::os_version(&osr).unwrap_or_default();
    if v != prev.os_version {
        return Err(PullError::NoRollback(format!(
            "slot {label} no longer holds OS {} (it holds '{v}')",
            prev.os_version
        )));
    }
    // A rollback cut short after recording it (pending is the previous generation) just goes on.
    let resumed = s.state.pending.as_ref().is_some_and(|p| p.id == prev.id);
    if !resumed {
        s.state
            .stage_rollback(now)
            .map_err(|e| PullError::NoRollback(e.to_string()))?;
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

/// Remove store images that neither the active, pending nor previous generation uses (partial
/// downloads stay, for resuming); returns what was removed.
pub fn collect_garbage(m: &Machine, state: &State) -> Result<Vec<PathBuf>, PathError> {
    let keep: BTreeSet<(String, String)> = [&state.active, &state.pending, &state.previous]
        .into_iter()
        .flatten()
        .flat_map(|g| {
            g.extensions
                .iter()
                .map(|(n, e)| (n.clone(), e.file.clone()))
        })
        .collect();
    let mut removed = Vec::new();
    let Ok(dirs) = fs::read_dir(m.store_dir()) else {
        return Ok(removed);
    };
    for d in dirs.flatten() {
        let name = d.file_name().to_string_lossy().into_owned();
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            if file.ends_with(".partial") || keep.contains(&(name.clone(), file.clone())) {
                continue;
            }
            let p = f.path();
            fs::remove_file(&p).map_err(|e| PathError::new("remove", &p, e))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Whether the booted set will change at the next boot, and why (for `upd status` and strategies).
pub fn reboot_needed(m: &Machine, state: &State) -> Result<Option<String>, SlotError> {
    let (Some(p), Some(slots)) = (&state.pending, Slots::of(m)) else {
        return Ok(None);
    };
    let Some(l) = &p.slot else {
        return Ok(None);
    };
    let booted = slots.booted(m)?;
    let prio = slots.slot(l)?.prio;
    let armed = prio.priority > 0 && (prio.tries > 0 || prio.successful);
    Ok((booted != *l && armed).then(|| {
        format!(
            "generation {} (OS {}) is staged on {l} and boots next",
            p.id, p.os_version
        )
    }))
}

#[cfg(test)]
mod tests;
