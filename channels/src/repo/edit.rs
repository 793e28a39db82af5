//! Draft edits for fleet rollout: waves, pause, withdraw with redirect, promotion between channels.

use semver::Version;

use super::{RepoError, Result};
use crate::manifest::{Manifest, Release, Rollout};

fn release_mut<'a>(draft: &'a mut Manifest, version: &Version) -> Result<&'a mut Release> {
    let channel = draft.channel.clone();
    draft
        .releases
        .iter_mut()
        .find(|r| &r.version == version)
        .ok_or(RepoError::NoRelease {
            channel,
            version: version.clone(),
        })
}

/// Applies `edit` to release `version` of a copy of `draft`, validates, then commits it.
fn edit(draft: &mut Manifest, version: &Version, f: impl FnOnce(&mut Release)) -> Result<()> {
    let mut next = draft.clone();
    f(release_mut(&mut next, version)?);
    next.validate().map_err(RepoError::Invalid)?;
    *draft = next;
    Ok(())
}

/// Sets (or replaces) the rollout schedule of a release and resumes it.
pub fn set_rollout(draft: &mut Manifest, version: &Version, rollout: Rollout) -> Result<()> {
    edit(draft, version, |r| {
        r.rollout = Some(rollout);
        r.paused = false;
    })
}

/// Pauses (no new machine starts) or resumes a release's rollout.
pub fn set_paused(draft: &mut Manifest, version: &Version, paused: bool) -> Result<()> {
    edit(draft, version, |r| r.paused = paused)
}

/// Withdraws a release, optionally directing its machines back to a safe release.
pub fn withdraw(
    draft: &mut Manifest,
    version: &Version,
    redirect_to: Option<Version>,
) -> Result<()> {
    edit(draft, version, |r| {
        r.withdrawn = true;
        r.redirect_to = redirect_to;
    })
}

/// Copies release `version` of `from` (another channel's signed manifest) into `to`; rollout
/// state (waves, pause, withdrawal) is not carried over: the target channel decides its own.
pub fn promote(from: &Manifest, to: &mut Manifest, version: &Version) -> Result<()> {
    let mut release = from
        .release(version)
        .ok_or(RepoError::NoRelease {
            channel: from.channel.clone(),
            version: version.clone(),
        })?
        .clone();
    release.rollout = None;
    release.paused = false;
    release.withdrawn = false;
    release.redirect_to = None;
    let mut next = to.clone();
    super::add_release(&mut next, release)?;
    next.validate().map_err(RepoError::Invalid)?;
    *to = next;
    Ok(())
}
