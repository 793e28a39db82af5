//! The journaled switch of the active extension set: journal → links → zero-gap swap (or refresh)
//! → check → commit, and the reconciliation that finishes or undoes a switch cut short.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use upd_image as image;

use crate::host::failpoint;
use crate::host::machine::{Machine, MachineError};
use crate::host::swap::{self, SwapError};
use crate::host::sysext::{compare_merged, merged_set, SysextError, RELEASE_DIR};
use crate::state::{Generation, LinkSet, State, StateError, SwitchPhase, TransitionError};

/// Why a switch failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// Links or the machine.
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// The state file.
    #[error(transparent)]
    State(#[from] StateError),
    /// A transition not allowed from the current state.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Reading a release file from a store image.
    #[error(transparent)]
    Image(#[from] image::ImageError),
    /// The new set did not merge as expected; the previous set was restored.
    #[error("the new extension set did not merge as expected ({cause}); switched back to the previous set")]
    RolledBack {
        /// What went wrong.
        cause: Box<SwapError>,
    },
    /// The refresh or check failed and so did restoring the previous set.
    #[error("switching failed ({cause}) and restoring the previous set failed too ({restore})")]
    RestoreFailed {
        /// The first failure.
        cause: Box<SwapError>,
        /// The failure while restoring.
        restore: Box<SwitchError>,
    },
    /// systemd-sysext itself.
    #[error(transparent)]
    Sysext(#[from] SysextError),
    /// Putting a set in place on the live system.
    #[error(transparent)]
    Swap(#[from] SwapError),
}

/// Name → the release file content expected merged (`None`: must not be merged).
type Expected = BTreeMap<String, Option<Vec<u8>>>;

fn expected_for(m: &Machine, set: &LinkSet) -> Result<Expected, SwitchError> {
    let mut out = Expected::new();
    for (name, target) in set {
        let content = match target.as_ref().and_then(|t| m.resolve_target(t)) {
            Some(img) => {
                let inner = format!("{RELEASE_DIR}/extension-release.{name}");
                image::read_file(&img, &inner, image::MAX_RELEASE_LEN)?
            }
            None => None,
        };
        out.insert(name.clone(), content);
    }
    Ok(out)
}

/// The set merged under `root` holds every name of `expected` with the release file of its image
/// (or not at all); extensions upd does not manage are ignored.
fn check_merged(root: &Path, expected: &Expected) -> Result<(), SysextError> {
    let actual = merged_set(root)?;
    let mut want: BTreeMap<String, Vec<u8>> = actual
        .iter()
        .filter(|(n, _)| !expected.contains_key(*n))
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    for (n, c) in expected {
        if let Some(c) = c {
            want.insert(n.clone(), c.clone());
        }
    }
    compare_merged(&actual, &want)
}

/// A live switch that failed, and whether the live hierarchies had been changed by then.
struct Failed {
    cause: Box<SwapError>,
    touched: bool,
}

impl Failed {
    fn new(cause: SwapError, touched: bool) -> Self {
        Self {
            cause: Box::new(cause),
            touched,
        }
    }
}

/// Put the set the links name now in place on the live system with no instant of a bare /usr
/// (see [`swap`]), checked against `expected` before and after (`None`: no check, for an undo).
///
/// The new overlay is assembled and checked in a private mount namespace first, so a failure there
/// leaves the live overlay untouched (`touched: false`). A kernel without mount-beneath falls back
/// to a live `systemd-sysext refresh`, with one warning.
fn switch_live(m: &Machine, expected: Option<&Expected>) -> Result<(), Failed> {
    let root = m.root.dir();
    let check = || expected.map_or(Ok(()), |e| check_merged(root, e));
    failpoint::hit("switch-before-refresh");
    tracing::info!("live switch started: assembling the new overlay in a private mount namespace");
    let assembled = match swap::assemble(&m.sysext(), check) {
        Ok(a) => a,
        Err(SwapError::Unsupported { call, errno }) => {
            return refresh_live(m, expected, call, errno)
        }
        Err(cause) => return Err(Failed::new(cause, false)),
    };
    failpoint::hit("switch-checked");
    match swap::swap(assembled, || failpoint::hit("switch-beneath")) {
        Ok(()) => {}
        Err(SwapError::Unsupported { call, errno }) => {
            return refresh_live(m, expected, call, errno)
        }
        Err(cause) => return Err(Failed::new(cause, true)),
    }
    failpoint::hit("switch-swapped");
    tracing::info!("live switch done: the new overlay is in place, the old one detached");
    check().map_err(|e| Failed::new(SwapError::Live(e), true))
}

/// Today's switch, for a kernel without mount-beneath: `systemd-sysext refresh` on the live system
/// (unmerge, then merge: a moment without extensions), then the check.
fn refresh_live(
    m: &Machine,
    expected: Option<&Expected>,
    call: &'static str,
    errno: nix::errno::Errno,
) -> Result<(), Failed> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            %call, %errno,
            "no mount beneath on this kernel (Linux 6.5 or later needed): falling back to \
             systemd-sysext refresh, which leaves /usr without extensions for a moment"
        );
    });
    let live = |e| Failed::new(SwapError::Live(e), true);
    m.sysext().refresh().map_err(live)?;
    failpoint::hit("switch-refreshed");
    expected
        .map_or(Ok(()), |e| check_merged(m.root.dir(), e))
        .map_err(live)
}

/// Switch the links to `to`, making `target` the active generation, with the real systemd-sysext.
///
/// Order: journal (saved) → links, each by rename → journal `Linked` (saved) → the new overlay
/// assembled and checked in a private namespace → swapped in beneath the live one → checked live →
/// commit (saved). On a failure the previous links come back, and the previous set is put back live
/// if the live overlay had been changed by then (otherwise it never was).
pub fn switch(
    m: &Machine,
    state: &mut State,
    target: Generation,
    to: LinkSet,
    now: DateTime<Utc>,
) -> Result<(), SwitchError> {
    let dir = m.state_dir();
    let expected = expected_for(m, &to)?;
    let from = m.current_links(to.keys())?;
    state.begin_switch(target, from, to.clone())?;
    state.save(&dir)?;
    failpoint::hit("switch-journaled");
    if let Err(e) = m.apply_links(&to, || failpoint::hit("switch-link")) {
        // Nothing was refreshed yet: put the old links back now rather than at the next run.
        tracing::error!(error = %e, "placing the new links failed; restoring the old ones");
        undo(m, state, now, false)?;
        return Err(e.into());
    }
    state.mark_linked()?;
    state.save(&dir)?;
    failpoint::hit("switch-linked");
    match switch_live(m, Some(&expected)) {
        Ok(()) => {
            state.finish_switch(now)?;
            state.save(&dir)?;
            failpoint::hit("switch-committed");
            Ok(())
        }
        Err(Failed { cause, touched }) => {
            tracing::error!(error = %cause, "the new set is not in place as expected; switching back");
            match undo(m, state, now, touched) {
                Ok(()) => Err(SwitchError::RolledBack { cause }),
                Err(restore) => Err(SwitchError::RestoreFailed {
                    cause,
                    restore: Box::new(restore),
                }),
            }
        }
    }
}

/// Restore the journal's `from` links and forget the switch; put their set in place when `live`.
fn undo(m: &Machine, state: &mut State, now: DateTime<Utc>, live: bool) -> Result<(), SwitchError> {
    let dir = m.state_dir();
    let j = state
        .journal
        .clone()
        .expect("undo is only called with a journal");
    if j.phase != SwitchPhase::RollingBack {
        state.begin_rollback()?;
        state.save(&dir)?;
    }
    m.apply_links(&j.from, || failpoint::hit("undo-link"))?;
    if live {
        switch_live(m, None).map_err(|f| SwitchError::Swap(*f.cause))?;
    }
    state.abort_switch(now)?;
    state.save(&dir)?;
    Ok(())
}

/// What reconciliation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// No switch was in progress.
    Nothing,
    /// A switch cut short before all its links were in place was undone.
    Undone,
    /// A switch whose links were all in place was completed.
    Completed,
}

/// Finish or undo a switch cut short (upd killed, power lost). `live`: the system is running and
/// may be refreshed (an `upd` command); otherwise early boot, before systemd-sysext merges.
///
/// A switch that had not placed every link is undone (its `from` links are complete and
/// checked); one whose links were all placed is completed, after a refresh and check when live.
pub fn reconcile(
    m: &Machine,
    state: &mut State,
    now: DateTime<Utc>,
    live: bool,
) -> Result<Reconciled, SwitchError> {
    let Some(j) = state.journal.clone() else {
        return Ok(Reconciled::Nothing);
    };
    tracing::warn!(generation = j.target.id, phase = ?j.phase, "found an unfinished switch");
    match j.phase {
        SwitchPhase::Started | SwitchPhase::RollingBack => {
            undo(m, state, now, live)?;
            Ok(Reconciled::Undone)
        }
        SwitchPhase::Linked => {
            // Make sure every link is really in place (a crash may have hit between renames of a rollback).
            m.apply_links(&j.to, || {})?;
            if live {
                // A swap cut short may have left the new overlay beneath the old one: the swap
                // peels such a stack first, never baring /usr.
                let expected = expected_for(m, &j.to)?;
                if let Err(Failed { cause, touched }) = switch_live(m, Some(&expected)) {
                    undo(m, state, now, touched)?;
                    return Err(SwitchError::RolledBack { cause });
                }
            }
            state.finish_switch(now)?;
            state.save(&m.state_dir())?;
            Ok(Reconciled::Completed)
        }
    }
}
