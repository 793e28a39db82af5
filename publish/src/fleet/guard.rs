//! The rollout guard's decision (pure): which releases of a channel to pause, given the fleet's
//! status and the channel's signed manifest. `upd-channel fleet guard` applies it through the
//! same draft edit as `upd-channel pause` and signs.

use serde::Serialize;
use upd_channels::manifest::Manifest;

use super::status::FleetStatus;

/// What the guard does about one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Its failure share passed the bound: pause it.
    Pause,
    /// Over the bound, but the signed manifest already has it paused.
    AlreadyPaused,
    /// Over the bound, but withdrawn already: nothing to pause.
    Withdrawn,
    /// Within the bound.
    Within,
    /// Fewer machines tried it than `--min-tried`.
    TooFew,
    /// Reported by machines but not in the manifest (an older release dropped from it).
    NotListed,
}

/// The guard's verdict on one release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The release.
    pub version: String,
    /// Machines that tried it.
    pub tried: i64,
    /// Of those, failed or fallen back.
    pub failed: i64,
    /// failed / tried.
    pub share: f64,
    /// What the guard does.
    pub action: Action,
}

/// Decide for each release machines tried: pause when `failed / tried > max_failed` (a
/// fraction) and at least `min_tried` machines tried it.
pub fn decide(
    status: &FleetStatus,
    signed: &Manifest,
    max_failed: f64,
    min_tried: i64,
) -> Vec<Verdict> {
    status
        .releases
        .iter()
        .filter(|r| r.counts.tried > 0)
        .map(|r| {
            let failed = r.counts.failed + r.counts.fallen_back;
            let share = r.failure_share.unwrap_or(0.0);
            let listed = signed
                .releases
                .iter()
                .find(|m| m.version.to_string() == r.version);
            let action = match listed {
                _ if r.counts.tried < min_tried => Action::TooFew,
                _ if share <= max_failed => Action::Within,
                None => Action::NotListed,
                Some(m) if m.withdrawn => Action::Withdrawn,
                Some(m) if m.paused => Action::AlreadyPaused,
                Some(_) => Action::Pause,
            };
            Verdict {
                version: r.version.clone(),
                tried: r.counts.tried,
                failed,
                share,
                action,
            }
        })
        .collect()
}

/// `2%`, `0.5 %` or `0.02` as a fraction in 0..1.
pub fn parse_bound(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, percent) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (t, false),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a percentage such as 2% (or a fraction 0.02)"))?;
    let f = if percent { v / 100.0 } else { v };
    if !(0.0..=1.0).contains(&f) || f.is_nan() {
        return Err(format!("{s:?}: expected 0% to 100%"));
    }
    Ok(f)
}

/// One line per verdict, for the terminal.
pub fn line(v: &Verdict, max_failed: f64) -> String {
    let what = match v.action {
        Action::Pause => "PAUSED",
        Action::AlreadyPaused => "over the bound, already paused: nothing to do",
        Action::Withdrawn => "over the bound, withdrawn already: nothing to do",
        Action::Within => "within the bound",
        Action::TooFew => "too few machines tried it to judge",
        Action::NotListed => "over the bound, not in the manifest: nothing to pause",
    };
    format!(
        "release {}: {} of {} machines failed or fell back ({:.1}%, bound {:.1}%): {what}",
        v.version,
        v.failed,
        v.tried,
        v.share * 100.0,
        max_failed * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse_as_percent_or_fraction() {
        assert_eq!(parse_bound("2%").unwrap(), 0.02);
        assert_eq!(parse_bound(" 50 %").unwrap(), 0.5);
        assert_eq!(parse_bound("0.1").unwrap(), 0.1);
        assert!(parse_bound("120%").unwrap_err().contains("0% to 100%"));
        assert!(parse_bound("two")
            .unwrap_err()
            .contains("expected a percentage"));
    }
}
