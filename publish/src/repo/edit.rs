//! Draft edits for fleet rollout: waves, pause, withdraw with redirect, barriers, promotion.

use upd_channels::manifest::{ExtBuild, Manifest, Release, Rollout};
use upd_channels::name::Name;
use upd_channels::version::OsVersion;

use super::{RepoError, Result};

fn release_mut<'a>(draft: &'a mut Manifest, version: &OsVersion) -> Result<&'a mut Release> {
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
fn edit(
    draft: &mut Manifest,
    version: &OsVersion,
    f: impl FnOnce(&mut Release) -> Result<()>,
) -> Result<()> {
    let mut next = draft.clone();
    f(release_mut(&mut next, version)?)?;
    next.validate().map_err(RepoError::Invalid)?;
    *draft = next;
    Ok(())
}

/// One extension build of a release, as the publisher names it: `NAME=VERSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRef {
    /// The extension.
    pub name: Name,
    /// The build's version.
    pub version: semver::Version,
}

impl std::str::FromStr for BuildRef {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (n, v) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not NAME=VERSION (e.g. hello=1.1.0)"))?;
        Ok(BuildRef {
            name: Name::new(n).map_err(|e| format!("'{s}': {e}"))?,
            version: v
                .parse()
                .map_err(|e| format!("'{s}': '{v}' is not a semantic version ({e})"))?,
        })
    }
}

impl std::fmt::Display for BuildRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// Applies `f` to build `build` of release `version` of a copy of `draft`, validates, commits.
fn edit_build(
    draft: &mut Manifest,
    version: &OsVersion,
    build: &BuildRef,
    f: impl FnOnce(&mut ExtBuild),
) -> Result<()> {
    edit(draft, version, |r| {
        let have: Vec<String> = r
            .builds_of(build.name.as_str())
            .map(|b| b.version.to_string())
            .collect();
        let b = r
            .extensions
            .iter_mut()
            .find(|b| b.name == build.name && b.version == build.version)
            .ok_or_else(|| RepoError::NoBuild {
                version: version.clone(),
                build: build.to_string(),
                have: if have.is_empty() {
                    "none".into()
                } else {
                    have.join(", ")
                },
            })?;
        f(b);
        Ok(())
    })
}

/// Gives one extension build waves of its own (a fresh fleet position per build) and resumes it.
pub fn set_build_rollout(
    draft: &mut Manifest,
    version: &OsVersion,
    build: &BuildRef,
    rollout: Rollout,
) -> Result<()> {
    check_rollout(&rollout)?;
    edit_build(draft, version, build, |b| {
        b.rollout = Some(rollout);
        b.paused = false;
    })
}

/// Pauses (no new machine takes it; machines running it keep it) or resumes one build.
pub fn set_build_paused(
    draft: &mut Manifest,
    version: &OsVersion,
    build: &BuildRef,
    paused: bool,
) -> Result<()> {
    edit_build(draft, version, build, |b| b.paused = paused)
}

/// Withdraws one build: no machine takes it, and machines running it switch to the newest other
/// build of the extension for the release.
pub fn withdraw_build(draft: &mut Manifest, version: &OsVersion, build: &BuildRef) -> Result<()> {
    edit_build(draft, version, build, |b| b.withdrawn = true)
}

/// Checks a schedule step by step, naming the first bad step: at least one step, hours finite
/// and not negative, percent within 0–100, both never decreasing (a share that shrank would
/// take the release away from machines that already have it).
pub fn check_rollout(rollout: &Rollout) -> Result<()> {
    let bad = |index: usize, reason: String| {
        let s = &rollout.steps[index];
        RepoError::RolloutStep {
            step: index + 1,
            hours: s.after_hours,
            percent: s.percent,
            reason,
        }
    };
    if rollout.steps.is_empty() {
        return Err(RepoError::Invalid(
            "a rollout needs at least one step".into(),
        ));
    }
    let (mut hours, mut percent) = (0.0f64, 0.0f64);
    for (i, s) in rollout.steps.iter().enumerate() {
        if !s.after_hours.is_finite() || s.after_hours < 0.0 {
            return Err(bad(i, "hours must be a number of 0 or more".into()));
        }
        if !s.percent.is_finite() || !(0.0..=100.0).contains(&s.percent) {
            return Err(bad(i, format!("percent {} is outside 0..100", s.percent)));
        }
        if s.after_hours < hours {
            let reason = format!(
                "{} hours is earlier than the previous step's {hours}: rollout steps must grow in time and share",
                s.after_hours
            );
            return Err(bad(i, reason));
        }
        if s.percent < percent {
            let reason = format!(
                "{}% is less than the previous step's {percent}%: rollout steps must grow in time and share",
                s.percent
            );
            return Err(bad(i, reason));
        }
        (hours, percent) = (s.after_hours, s.percent);
    }
    Ok(())
}

/// Sets (or replaces) the rollout schedule of a release and resumes it.
pub fn set_rollout(draft: &mut Manifest, version: &OsVersion, rollout: Rollout) -> Result<()> {
    check_rollout(&rollout)?;
    edit(draft, version, |r| {
        r.rollout = Some(rollout);
        r.paused = false;
        Ok(())
    })
}

/// Pauses (no new machine starts) or resumes a release's rollout.
pub fn set_paused(draft: &mut Manifest, version: &OsVersion, paused: bool) -> Result<()> {
    edit(draft, version, |r| {
        r.paused = paused;
        Ok(())
    })
}

/// Makes a release a barrier (every machine passes through it) or clears the flag.
pub fn set_barrier(draft: &mut Manifest, version: &OsVersion, barrier: bool) -> Result<()> {
    edit(draft, version, |r| {
        r.barrier = barrier;
        Ok(())
    })
}

/// Withdraws a release, optionally directing its machines back to a safe release, which must
/// be another release of the same channel that is not itself withdrawn.
pub fn withdraw(
    draft: &mut Manifest,
    version: &OsVersion,
    redirect_to: Option<OsVersion>,
) -> Result<()> {
    if let Some(to) = &redirect_to {
        let reason = match draft.release(to) {
            _ if to == version => Some("is the release being withdrawn"),
            None => Some("is not a release of this channel"),
            Some(t) if t.withdrawn => Some("is itself withdrawn"),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return Err(RepoError::BadRedirect {
                channel: draft.channel.clone(),
                version: version.clone(),
                to: to.clone(),
                reason,
            });
        }
    }
    edit(draft, version, |r| {
        r.withdrawn = true;
        r.redirect_to = redirect_to;
        Ok(())
    })
}

/// What [`promote`] did to the target draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promoted {
    /// The release was added.
    Added,
    /// The target already had the identical release; only the rollout was updated if asked.
    AlreadyPresent,
}

/// The parts of a release that make up its content (not the channel's rollout decisions, the
/// builds' own included).
fn content(r: &Release) -> (&OsVersion, &upd_channels::manifest::OsBuild, Vec<ExtBuild>) {
    let builds = r
        .extensions
        .iter()
        .map(|b| ExtBuild {
            rollout: None,
            paused: false,
            withdrawn: false,
            ..b.clone()
        })
        .collect();
    (&r.version, &r.os, builds)
}

/// Copies release `version` of `from` (another channel's verified manifest) into `to`.
///
/// The OS and extension entries are copied as they are: their images are repository files that
/// both channels share. Rollout decisions (pause, withdrawal, redirect, barrier) are not carried
/// over, and the wave schedule only with `with_rollout`: each channel decides its own. A version
/// the target already has must have identical content; it is then left as it is.
pub fn promote(
    from: &Manifest,
    to: &mut Manifest,
    version: &OsVersion,
    with_rollout: bool,
) -> Result<Promoted> {
    let source = from.release(version).ok_or(RepoError::NoRelease {
        channel: from.channel.clone(),
        version: version.clone(),
    })?;
    let mut release = source.clone();
    release.rollout = source.rollout.clone().filter(|_| with_rollout);
    release.paused = false;
    release.withdrawn = false;
    release.barrier = false;
    release.redirect_to = None;
    for b in &mut release.extensions {
        b.rollout = b.rollout.take().filter(|_| with_rollout);
        b.paused = false;
        b.withdrawn = false;
    }
    let mut next = to.clone();
    let outcome = match next.releases.iter_mut().find(|r| &r.version == version) {
        Some(existing) if content(existing) == content(&release) => {
            if with_rollout {
                existing.rollout = release.rollout;
                for (e, b) in existing.extensions.iter_mut().zip(&release.extensions) {
                    e.rollout.clone_from(&b.rollout);
                }
            }
            Promoted::AlreadyPresent
        }
        Some(existing) => {
            return Err(RepoError::PromoteConflict {
                version: version.clone(),
                channel: to.channel.clone(),
                differs: differences(existing, &release),
            })
        }
        None => {
            super::add_release(&mut next, release)?;
            Promoted::Added
        }
    };
    next.validate().map_err(RepoError::Invalid)?;
    *to = next;
    Ok(outcome)
}

/// Names what differs between two releases of the same version, for the refusal message.
fn differences(a: &Release, b: &Release) -> String {
    let mut out = Vec::new();
    if a.os.image != b.os.image {
        out.push(format!(
            "OS image {} sha256 {} vs {} sha256 {}",
            a.os.image.path, a.os.image.sha256, b.os.image.path, b.os.image.sha256
        ));
    } else if a.os != b.os {
        out.push("OS identity".to_string());
    }
    if a.extensions != b.extensions {
        let list = |r: &Release| {
            let v: Vec<String> = r
                .extensions
                .iter()
                .map(|e| format!("{} {} ({})", e.name, e.version, e.image.sha256))
                .collect();
            format!("[{}]", v.join(", "))
        };
        out.push(format!("extensions {} vs {}", list(a), list(b)));
    }
    out.join("; ")
}

#[cfg(test)]
mod tests;
