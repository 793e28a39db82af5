//! `upd mark-good`, after a healthy boot: run the health checks, then mark the booted slot
//! successful and make the pending generation active, or send a failing new OS back.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::host::failpoint;
use crate::host::health;
use crate::host::slot::Slots;
use crate::ops::boot::fail;
use crate::ops::gc::collect_garbage;
use crate::ops::session::{phase_on, Session};
use crate::ops::Error;

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
pub fn mark_good(s: &mut Session, now: DateTime<Utc>) -> Result<MarkGood, Error> {
    let m = s.machine.clone();
    let health = health::run_checks(&m);
    let Some(slots) = Slots::of(&m) else {
        return match health {
            Ok(()) => Ok(MarkGood::NoSlots),
            Err(why) => Err(Error::Unhealthy(why)),
        };
    };
    let booted = slots.booted(&m)?;
    let phase = phase_on(&slots, &booted, &m.host()?.version.to_string(), &s.state)?;
    let pending_booted = s.state.pending.clone().filter(|_| phase.pending_booted());
    match (pending_booted, health) {
        (Some(p), Ok(())) => {
            slots.mark_successful(&booted)?;
            failpoint::hit("markgood-slot");
            s.state.promote_pending(now)?;
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
        (None, Err(why)) => Err(Error::Unhealthy(why)),
    }
}
