//! Generation transitions: small methods that check the source state, change memory only, and log history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Event, Generation, LinkSet, State, SwitchJournal, RETIRED_LIMIT};

/// How far a journaled link switch got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchPhase {
    /// Intent recorded; links may be partly switched. Recovery: restore `from`.
    Started,
    /// Every link points at `to`; the refresh and its check remain. Recovery: refresh and check, or undo.
    Linked,
    /// The switch failed and `from` is being restored. Recovery: restore `from`.
    RollingBack,
}

/// A transition asked for from a state that does not allow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The current state does not allow this step.
    #[error("cannot {action}: {why}")]
    Refused {
        /// The step asked for.
        action: &'static str,
        /// Why not.
        why: String,
    },
    /// A manifest serial lower than one already accepted (a rollback attack, or a misconfigured server).
    #[error(
        "manifest serial {got} for channel {channel} is lower than serial {highest} already seen"
    )]
    SerialRollback {
        /// The channel.
        channel: String,
        /// The highest serial accepted before.
        highest: u64,
        /// The serial offered.
        got: u64,
    },
}

fn refuse(action: &'static str, why: impl Into<String>) -> TransitionError {
    TransitionError::Refused {
        action,
        why: why.into(),
    }
}

impl State {
    /// Accept manifest `serial` for `channel`, refusing one lower than the highest seen (equal is a re-fetch).
    pub fn record_serial(&mut self, channel: &str, serial: u64) -> Result<(), TransitionError> {
        let highest = self.highest_serial.get(channel).copied().unwrap_or(0);
        if serial < highest {
            return Err(TransitionError::SerialRollback {
                channel: channel.to_string(),
                highest,
                got: serial,
            });
        }
        self.highest_serial.insert(channel.to_string(), serial);
        Ok(())
    }

    /// Record the intent to switch links to `target` (same OS as active). Refused while a journal exists.
    pub fn begin_switch(
        &mut self,
        target: Generation,
        from: LinkSet,
        to: LinkSet,
    ) -> Result<(), TransitionError> {
        const ACTION: &str = "begin a link switch";
        if let Some(j) = &self.journal {
            return Err(refuse(
                ACTION,
                format!(
                    "a switch to generation {} is unfinished ({:?}); run `upd boot` first",
                    j.target.id, j.phase
                ),
            ));
        }
        if let Some(a) = self
            .active
            .as_ref()
            .filter(|a| a.os_version != target.os_version)
        {
            return Err(refuse(
                ACTION,
                format!(
                    "the target runs OS {} but OS {} is active; an OS change is staged as pending",
                    target.os_version, a.os_version
                ),
            ));
        }
        self.journal = Some(SwitchJournal {
            target,
            from,
            to,
            phase: SwitchPhase::Started,
        });
        Ok(())
    }

    /// Note that every link now points at the journal's `to` set.
    pub fn mark_linked(&mut self) -> Result<(), TransitionError> {
        self.step_journal(
            "mark the links switched",
            &[SwitchPhase::Started],
            SwitchPhase::Linked,
        )
    }

    /// Note that the switch failed and the `from` links are being restored.
    pub fn begin_rollback(&mut self) -> Result<(), TransitionError> {
        let from = [SwitchPhase::Started, SwitchPhase::Linked];
        self.step_journal("roll the switch back", &from, SwitchPhase::RollingBack)
    }

    fn step_journal(
        &mut self,
        action: &'static str,
        from: &[SwitchPhase],
        to: SwitchPhase,
    ) -> Result<(), TransitionError> {
        let j = self
            .journal
            .as_mut()
            .ok_or_else(|| refuse(action, "no switch is in progress"))?;
        if !from.contains(&j.phase) {
            return Err(refuse(
                action,
                format!("the switch is {:?}, not {from:?}", j.phase),
            ));
        }
        j.phase = to;
        Ok(())
    }

    /// Complete a switch whose links are in place and checked: target → active, active → previous.
    pub fn finish_switch(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        const ACTION: &str = "finish the switch";
        match &self.journal {
            None => return Err(refuse(ACTION, "no switch is in progress")),
            Some(j) if j.phase != SwitchPhase::Linked => {
                return Err(refuse(
                    ACTION,
                    format!("the switch is {:?}, not Linked", j.phase),
                ))
            }
            Some(_) => {}
        }
        let target = self.journal.take().expect("checked").target;
        self.push_history(now, Event::Switched, &target);
        let active = self.active.replace(target);
        self.replace_previous(active);
        Ok(())
    }

    /// Forget a switch whose `from` links the caller has restored (any phase); active is unchanged.
    pub fn abort_switch(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        let j = self
            .journal
            .take()
            .ok_or_else(|| refuse("abort the switch", "no switch is in progress"))?;
        self.push_history(now, Event::SwitchAborted, &j.target);
        Ok(())
    }

    /// Record a staged OS generation that waits for a reboot. Refused while a switch or another pending exists.
    pub fn set_pending(
        &mut self,
        generation: Generation,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        const ACTION: &str = "stage a pending generation";
        if let Some(j) = &self.journal {
            return Err(refuse(
                ACTION,
                format!("a switch to generation {} is unfinished", j.target.id),
            ));
        }
        if let Some(p) = &self.pending {
            return Err(refuse(
                ACTION,
                format!(
                    "generation {} (OS {}) is already pending; drop it first",
                    p.id, p.os_version
                ),
            ));
        }
        self.push_history(now, Event::Staged, &generation);
        // Staging a release again (the operator pulled it by version) lifts a rollback's hold.
        self.held_releases.remove(&generation.os_version);
        self.pending = Some(generation);
        Ok(())
    }

    /// Drop the pending generation (withdrawn or superseded) and return it, so its images can go.
    pub fn drop_pending(&mut self, now: DateTime<Utc>) -> Result<Generation, TransitionError> {
        let g = self
            .pending
            .take()
            .ok_or_else(|| refuse("drop the pending generation", "none is pending"))?;
        self.push_history(now, Event::Dropped, &g);
        Ok(g)
    }

    /// The pending generation booted well: pending → active, active → previous.
    pub fn promote_pending(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        const ACTION: &str = "promote the pending generation";
        if self.journal.is_some() {
            return Err(refuse(ACTION, "a link switch is unfinished"));
        }
        let g = self
            .pending
            .take()
            .ok_or_else(|| refuse(ACTION, "none is pending"))?;
        self.push_history(now, Event::Promoted, &g);
        let active = self.active.replace(g);
        self.replace_previous(active);
        Ok(())
    }

    /// Make the previous generation pending again (an OS rollback waiting for its reboot), and
    /// hold back the active OS release it leaves: the machine does not stage it again on its own.
    pub fn stage_rollback(&mut self, now: DateTime<Utc>) -> Result<Generation, TransitionError> {
        const ACTION: &str = "roll back";
        if self.journal.is_some() {
            return Err(refuse(ACTION, "a link switch is unfinished"));
        }
        if let Some(p) = &self.pending {
            return Err(refuse(
                ACTION,
                format!(
                    "generation {} (OS {}) is pending; reboot into it or wait until it is dropped",
                    p.id, p.os_version
                ),
            ));
        }
        let g = self
            .previous
            .clone()
            .ok_or_else(|| refuse(ACTION, "there is no previous generation"))?;
        self.push_history(now, Event::RollbackStaged, &g);
        if let Some(a) = self
            .active
            .as_ref()
            .filter(|a| a.os_version != g.os_version)
        {
            self.held_releases.insert(a.os_version.clone());
        }
        self.pending = Some(g.clone());
        Ok(g)
    }

    /// The pending generation failed to boot: remember its release as failed and drop it.
    pub fn fail_pending(&mut self, now: DateTime<Utc>) -> Result<Generation, TransitionError> {
        let g = self
            .pending
            .take()
            .ok_or_else(|| refuse("mark the pending generation failed", "none is pending"))?;
        self.failed_releases.insert(g.os_version.clone());
        self.push_history(now, Event::Failed, &g);
        Ok(g)
    }

    /// Make `g` the previous generation; the one it replaces is retired (newest first, at most
    /// [`RETIRED_LIMIT`]), unless it is the same generation.
    pub fn replace_previous(&mut self, g: Option<Generation>) {
        let old = std::mem::replace(&mut self.previous, g);
        if let Some(old) = old {
            let again = |x: &Generation| Some(x.id) == self.previous.as_ref().map(|p| p.id);
            if !again(&old) && self.active.as_ref().map(|a| a.id) != Some(old.id) {
                self.retired.retain(|r| r.id != old.id);
                self.retired.insert(0, old);
                self.retired.truncate(RETIRED_LIMIT);
            }
        }
    }
}
