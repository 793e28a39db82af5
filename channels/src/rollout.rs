//! Rollout waves: a machine's place in the fleet, wariness, and when a schedule reaches it.
//!
//! Everything here is pure: the machine id, the time and the wariness are passed in.
//!
//! A machine is *eligible* for a release at `now` when the share of the fleet the schedule
//! allows at `now` (0–100) is at least its effective position × 100. Because the share never
//! shrinks over time (the manifest requires steps that grow in time and share), a machine
//! never loses eligibility once it has it.

use crate::version::OsVersion;
use chrono::{DateTime, Duration, Utc};
use ring::digest::{Context, SHA256};

use crate::manifest::Rollout;

/// Domain separator of the fleet position hash (change it and every machine moves).
const POSITION_DOMAIN: &[u8] = b"upd rollout position v1";

/// Milliseconds per hour: the resolution at which schedules are evaluated.
const MS_PER_HOUR: f64 = 3_600_000.0;

/// Farthest a schedule is followed: about 10,000 years, in milliseconds.
const MAX_MS: f64 = 3.2e14;

/// The machine's place in the fleet for one release of one channel, uniform in [0, 1).
///
/// SHA-256 over a domain tag and the three inputs, each length-prefixed (u64, big endian) so
/// that no two different triples share an encoding; the first 53 bits of the digest divided
/// by 2^53 (53 bits, so that the f64 is exact and never rounds up to 1.0). The machine id is
/// trimmed and lowercased first, as systemd writes it. A new release (or channel) draws a
/// fresh, independent position, so the same machines are not always first.
pub fn fleet_position(machine_id: &str, channel: &str, release: &OsVersion) -> f64 {
    let id = machine_id.trim().to_ascii_lowercase();
    position(
        POSITION_DOMAIN,
        &[
            id.as_bytes(),
            channel.as_bytes(),
            release.to_string().as_bytes(),
        ],
    )
}

/// SHA-256 over `domain` and each field prefixed with its length (so no two field lists
/// collide), as a number in [0, 1).
fn position(domain: &[u8], fields: &[&[u8]]) -> f64 {
    let mut ctx = Context::new(&SHA256);
    ctx.update(domain);
    for field in fields {
        ctx.update(&(field.len() as u64).to_be_bytes());
        ctx.update(field);
    }
    unit_interval(ctx.finish().as_ref())
}

/// Domain separator of an extension build's own fleet position.
const BUILD_POSITION_DOMAIN: &[u8] = b"upd build rollout position v1";

/// The machine's place in the fleet for one extension build with waves of its own, uniform in
/// [0, 1): as [`fleet_position`], over the channel, the release, the extension's name and the
/// build's version, so that each build draws a fresh sample of the fleet.
pub fn build_position(
    machine_id: &str,
    channel: &str,
    release: &OsVersion,
    name: &str,
    version: &semver::Version,
) -> f64 {
    let id = machine_id.trim().to_ascii_lowercase();
    let (release, version) = (release.to_string(), version.to_string());
    position(
        BUILD_POSITION_DOMAIN,
        &[
            id.as_bytes(),
            channel.as_bytes(),
            release.as_bytes(),
            name.as_bytes(),
            version.as_bytes(),
        ],
    )
}

/// The first 53 bits of `digest` as a number in [0, 1).
pub(crate) fn unit_interval(digest: &[u8]) -> f64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// The position after wariness: `p + w·(1 − p)`.
///
/// Wariness 0 leaves the position unchanged; 1 puts the machine last (position 1, reached only
/// when the schedule reaches 100 %); in between, the machine moves that fraction of the way
/// towards the end. The result is monotone in both `p` and `w` and stays in [0, 1]. Inputs are
/// clamped to [0, 1]; a NaN wariness counts as 1 (most careful), a NaN position as 1 (last).
pub fn effective_position(position: f64, wariness: f64) -> f64 {
    let p = clamp_unit(position);
    let w = clamp_unit(wariness);
    (p + w * (1.0 - p)).clamp(0.0, 1.0)
}

/// `x` clamped to [0, 1], NaN taken as 1.
fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() {
        1.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Whether a machine at `position` (0–1, after wariness) may take the release at `now`.
///
/// No rollout means every machine at once.
pub fn eligible(rollout: Option<&Rollout>, position: f64, now: DateTime<Utc>) -> bool {
    match rollout {
        None => true,
        Some(r) => r.admits(position, now),
    }
}

impl Rollout {
    /// The schedule's points in (hours after start, percent), beginning at (0 h, 0 %).
    ///
    /// Before the first step the share grows linearly from 0 % at `start`; a first step at
    /// 0 hours therefore opens its share at `start` at once. Percentages are clamped to 0–100.
    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        std::iter::once((0.0, 0.0)).chain(
            self.steps
                .iter()
                .map(|s| (s.after_hours, s.percent.clamp(0.0, 100.0))),
        )
    }

    /// The percentage of the fleet (0–100) eligible at `now`.
    ///
    /// 0 before `start`; linear between steps (two steps at the same hour make a jump, and
    /// the later one counts from that hour on); the last step's share after the last step.
    pub fn share_at(&self, now: DateTime<Utc>) -> f64 {
        if now < self.start {
            return 0.0;
        }
        let hours = hours_between(self.start, now);
        let mut share = 0.0;
        let mut prev = (0.0, 0.0);
        for (t, p) in self.points() {
            if hours >= t {
                share = p;
            } else {
                let (t0, p0) = prev;
                if hours > t0 && t > t0 {
                    // Clamped into the segment so that rounding never makes the share dip.
                    share = (p0 + (p - p0) * ((hours - t0) / (t - t0))).clamp(p0, p);
                }
                break;
            }
            prev = (t, p);
        }
        share
    }

    /// Whether a machine at `position` may take the release at `now` (see [`eligible`]).
    pub fn admits(&self, position: f64, now: DateTime<Utc>) -> bool {
        now >= self.start && !position.is_nan() && self.share_at(now) >= position * 100.0
    }

    /// The first instant (to the millisecond) at which a machine at `position` is eligible.
    ///
    /// `None` if the schedule never reaches `position × 100` (its last step stays below) or
    /// the position is NaN. Agrees with [`Rollout::admits`]: admitted at the returned
    /// instant, and not one millisecond before it (unless that is before `start`).
    pub fn eligible_from(&self, position: f64) -> Option<DateTime<Utc>> {
        if position.is_nan() {
            return None;
        }
        let target = position.max(0.0) * 100.0;
        let mut prev = (0.0, 0.0);
        for (t, p) in self.points() {
            if p >= target {
                let (t0, p0) = prev;
                let hours = if p0 >= target || p <= p0 {
                    t0
                } else {
                    t0 + (t - t0) * ((target - p0) / (p - p0))
                };
                return self.settle(position, hours);
            }
            prev = (t, p);
        }
        None
    }

    /// The instant `hours` after start, moved by whole milliseconds to the first admitted one
    /// (the interpolation above and [`Rollout::share_at`] may round differently); `None`
    /// beyond the last representable instant.
    fn settle(&self, position: f64, hours: f64) -> Option<DateTime<Utc>> {
        let ms = (hours * MS_PER_HOUR).ceil();
        if !(0.0..=MAX_MS).contains(&ms) {
            return None;
        }
        let mut at = self
            .start
            .checked_add_signed(Duration::milliseconds(ms as i64))?;
        let step = Duration::milliseconds(1);
        // Rounding moves the answer by a few milliseconds at most; the bound keeps it finite.
        for _ in 0..1000 {
            if self.admits(position, at) {
                break;
            }
            at = at.checked_add_signed(step)?;
        }
        for _ in 0..1000 {
            match at.checked_sub_signed(step) {
                Some(before) if before >= self.start && self.admits(position, before) => {
                    at = before;
                }
                _ => break,
            }
        }
        self.admits(position, at).then_some(at)
    }
}

/// Hours from `from` to `to` (non-negative callers only), at millisecond resolution.
fn hours_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / MS_PER_HOUR
}

#[cfg(test)]
mod tests;
