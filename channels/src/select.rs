//! Choosing the OS release a machine moves to: a pure function of the manifest, the running
//! version and what the machine remembers (failed releases), with rollout eligibility plugged in.

use std::collections::BTreeSet;

use crate::manifest::{ExtBuild, Manifest, Release, Rollout};
use crate::rollout;
use crate::version::OsVersion;
use chrono::{DateTime, Utc};

/// A newer release passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Skipped {
    /// The release.
    pub version: String,
    /// Why it was not chosen.
    pub why: String,
}

/// The outcome of selection.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection<'a> {
    /// The newest release this machine should run now (`None`: stay on the running one).
    pub target: Option<&'a Release>,
    /// Newer releases passed over, newest first.
    pub skipped: Vec<Skipped>,
}

/// Pick the newest release above `running` that is not withdrawn, has not failed on this machine,
/// lies at or below the first barrier above `running`, and passes `eligible` (rollout waves,
/// pause; `Err(reason)` to pass it over).
pub fn select<'a>(
    manifest: &'a Manifest,
    running: &OsVersion,
    failed: &BTreeSet<String>,
    eligible: impl Fn(&Release) -> Result<(), String>,
) -> Selection<'a> {
    let barrier = manifest
        .releases
        .iter()
        .filter(|r| r.barrier && r.version > *running)
        .map(|r| &r.version)
        .min();
    let mut skipped = Vec::new();
    let mut newer: Vec<&Release> = manifest
        .releases
        .iter()
        .filter(|r| r.version > *running)
        .collect();
    newer.sort_by(|a, b| b.version.cmp(&a.version));
    for r in newer {
        let why = if r.withdrawn {
            Some("withdrawn by the publisher".to_string())
        } else if failed.contains(&r.version.to_string()) {
            Some("failed to boot on this machine; waiting for a newer release".to_string())
        } else if let Some(b) = barrier.filter(|b| r.version > **b) {
            Some(format!("barrier: this machine must pass through {b} first"))
        } else {
            eligible(r).err()
        };
        match why {
            Some(why) => skipped.push(Skipped {
                version: r.version.to_string(),
                why,
            }),
            None => {
                return Selection {
                    target: Some(r),
                    skipped,
                }
            }
        }
    }
    Selection {
        target: None,
        skipped,
    }
}

/// Why a machine without a machine id takes nothing rolled out in waves.
pub const NO_MACHINE_ID: &str = "this machine has no machine id (MACHINE_ID_PATH is missing or empty), so it has no place in the rollout waves; it takes releases and builds rolled out in waves only when pulled by version";

/// Rollout eligibility of `release` for one machine at `now`: a paused rollout starts no one, and
/// the machine's wave (its fleet position, moved later by `wariness`) must have been reached. A
/// machine without a machine id has no place in the waves: machines without one would all share
/// one position and move as one wave, so it takes no release that has waves.
pub fn wave_check(
    release: &Release,
    machine_id: &str,
    channel: &str,
    wariness: f64,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if release.paused {
        return Err("rollout paused by the publisher".into());
    }
    let Some(r) = &release.rollout else {
        return Ok(());
    };
    if machine_id.trim().is_empty() {
        return Err(NO_MACHINE_ID.into());
    }
    let pos = rollout::fleet_position(machine_id, channel, &release.version);
    wave(r, rollout::effective_position(pos, wariness), now)
}

/// Rollout eligibility of extension build `build` of `release` for one machine at `now`. A
/// withdrawn build is never taken; a paused one starts no one. A build with waves of its own is
/// judged by them at its own fleet position ([`rollout::build_position`]); one without follows
/// its release ([`wave_check`]: the release's pause and waves at the machine's place in them),
/// so a new build for a paused release, or for one whose waves have not reached this machine,
/// waits like the release.
pub fn build_wave_check(
    release: &Release,
    build: &ExtBuild,
    machine_id: &str,
    channel: &str,
    wariness: f64,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if build.withdrawn {
        return Err("withdrawn by the publisher".into());
    }
    if build.paused {
        return Err("rollout paused by the publisher".into());
    }
    let Some(r) = &build.rollout else {
        return wave_check(release, machine_id, channel, wariness, now);
    };
    if machine_id.trim().is_empty() {
        return Err(NO_MACHINE_ID.into());
    }
    let pos = rollout::build_position(
        machine_id,
        channel,
        &release.version,
        build.name.as_str(),
        &build.version,
    );
    wave(r, rollout::effective_position(pos, wariness), now)
}

/// Whether schedule `r` admits a machine at effective position `pos` at `now`, else when it will.
fn wave(r: &Rollout, pos: f64, now: DateTime<Utc>) -> Result<(), String> {
    if rollout::eligible(Some(r), pos, now) {
        return Ok(());
    }
    Err(match r.eligible_from(pos) {
        Some(t) => format!(
            "rollout wave: this machine (fleet position {:.1}%) becomes eligible at {}",
            pos * 100.0,
            t.format("%Y-%m-%d %H:%M UTC")
        ),
        None => format!(
            "rollout wave: the schedule never reaches this machine's fleet position {:.1}%",
            pos * 100.0
        ),
    })
}

/// The release the publisher directs machines on a withdrawn `running` release to, if any.
pub fn redirect<'a>(manifest: &'a Manifest, running: &OsVersion) -> Option<&'a Release> {
    let r = manifest.release(running)?;
    let to = r.redirect_to.as_ref().filter(|_| r.withdrawn)?;
    manifest.release(to).filter(|t| !t.withdrawn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{OsBuild, OsIdentity, Sha256, Target};
    use crate::manifest::{Rollout, RolloutStep};
    use crate::name::{Name, RelPath};

    fn release(v: &str) -> Release {
        let os = OsBuild {
            identity: OsIdentity {
                id: "updos".into(),
                version_id: Some(v.into()),
                sysext_level: None,
                architecture: "x86-64".into(),
                id_like: Vec::new(),
                systemd: None,
            },
            image: Target {
                path: RelPath::new(&format!("os/{}.raw", v.replace('~', "_"))).unwrap(),
                size: 1,
                sha256: Sha256([0; 32]),
                chunk_index: None,
            },
        };
        Release::new(v.parse().unwrap(), os, Vec::new())
    }

    fn manifest(rs: Vec<Release>) -> Manifest {
        let mut m = Manifest::new(Name::new("stable").unwrap(), Utc::now());
        m.releases = rs;
        m
    }

    fn pick(m: &Manifest, running: &str, failed: &[&str]) -> (Option<String>, Vec<String>) {
        let failed = failed
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        let s = select(m, &running.parse().unwrap(), &failed, |_| Ok(()));
        (
            s.target.map(|r| r.version.to_string()),
            s.skipped.into_iter().map(|k| k.version).collect(),
        )
    }

    #[test]
    fn newest_above_running_that_qualifies() {
        let mut w = release("3.0.0");
        w.withdrawn = true;
        let m = manifest(vec![release("1.0.0"), release("2.0.0"), w]);
        assert_eq!(
            pick(&m, "1.0.0", &[]),
            (Some("2.0.0".into()), vec!["3.0.0".into()])
        );
        assert_eq!(pick(&m, "2.0.0", &[]), (None, vec!["3.0.0".into()]));
        assert_eq!(
            pick(&m, "1.0.0", &["2.0.0"]),
            (None, vec!["3.0.0".into(), "2.0.0".into()])
        );
        // Never a downgrade.
        assert_eq!(pick(&m, "2.5.0", &[]).0, None);
    }

    #[test]
    fn distribution_versions_are_ordered_as_systemd_orders_them() {
        // Debian's 9 < 10 (a string order would say otherwise), Ubuntu's point releases.
        let m = manifest(vec![release("9"), release("10"), release("12")]);
        assert_eq!(pick(&m, "9", &[]).0, Some("12".into()));
        assert_eq!(pick(&m, "12", &[]).0, None);
        let m = manifest(vec![release("22.04"), release("24.04"), release("24.10")]);
        assert_eq!(pick(&m, "24.04", &[]).0, Some("24.10".into()));
        // A '~' pre-release is older than its release.
        let m = manifest(vec![release("2.0.0~rc1"), release("2.0.0")]);
        assert_eq!(pick(&m, "2.0.0~rc1", &[]).0, Some("2.0.0".into()));
    }

    #[test]
    fn failed_release_is_retried_only_when_a_newer_one_appears() {
        let m = manifest(vec![release("1.0.0"), release("2.0.0"), release("2.1.0")]);
        assert_eq!(pick(&m, "1.0.0", &["2.0.0"]).0, Some("2.1.0".into()));
    }

    #[test]
    fn barrier_stops_the_way_up() {
        let mut b = release("2.0.0");
        b.barrier = true;
        let m = manifest(vec![release("1.0.0"), b, release("3.0.0")]);
        assert_eq!(pick(&m, "1.0.0", &[]).0, Some("2.0.0".into()));
        assert_eq!(pick(&m, "2.0.0", &[]).0, Some("3.0.0".into()));
    }

    #[test]
    fn eligibility_passes_over_with_a_reason() {
        let m = manifest(vec![release("1.0.0"), release("2.0.0"), release("2.1.0")]);
        let s = select(&m, &"1.0.0".parse().unwrap(), &BTreeSet::new(), |r| {
            if r.version.as_str() == "2.1.0" {
                Err("not yet in this machine's wave".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(s.target.unwrap().version.to_string(), "2.0.0");
        assert_eq!(s.skipped[0].why, "not yet in this machine's wave");
    }

    #[test]
    fn waves_pause_and_redirect() {
        let now = Utc::now();
        let mut r = release("2.0.0");
        assert_eq!(wave_check(&r, "m1", "stable", 0.0, now), Ok(()));
        r.paused = true;
        assert!(wave_check(&r, "m1", "stable", 0.0, now)
            .unwrap_err()
            .contains("paused"));
        r.paused = false;
        r.rollout = Some(Rollout {
            start: now - chrono::Duration::hours(1),
            steps: vec![
                RolloutStep {
                    after_hours: 0.0,
                    percent: 0.0,
                },
                RolloutStep {
                    after_hours: 10.0,
                    percent: 100.0,
                },
            ],
        });
        // After one hour of ten, about 10% of machines are in; over 1000 ids, some but not all.
        let admitted = (0..1000)
            .filter(|i| wave_check(&r, &format!("{i:032x}"), "stable", 0.0, now).is_ok())
            .count();
        assert!((50..200).contains(&admitted), "{admitted}");
        let late = wave_check(&r, "m1", "stable", 1.0, now).unwrap_err();
        assert!(late.contains("becomes eligible at"), "{late}");
        // Redirect only from a withdrawn release, only to one that is not withdrawn.
        let mut bad = release("2.0.0");
        bad.redirect_to = Some("1.0.0".parse().unwrap());
        let m = manifest(vec![release("1.0.0"), bad.clone()]);
        assert_eq!(redirect(&m, &"2.0.0".parse().unwrap()), None);
        bad.withdrawn = true;
        let m = manifest(vec![release("1.0.0"), bad]);
        let to = redirect(&m, &"2.0.0".parse().unwrap()).unwrap();
        assert_eq!(to.version.to_string(), "1.0.0");
    }

    fn build(name: &str, v: &str) -> ExtBuild {
        ExtBuild::new(
            Name::new(name).unwrap(),
            v.parse().unwrap(),
            Target {
                path: RelPath::new(&format!("e/{name}-{v}.raw")).unwrap(),
                size: 1,
                sha256: Sha256([1; 32]),
                chunk_index: None,
            },
            crate::manifest::ExtIdentity {
                id: "updos".into(),
                version_id: None,
                sysext_level: None,
                architecture: None,
                scope: None,
            },
        )
    }

    fn schedule(start: DateTime<Utc>, hours: f64) -> Rollout {
        Rollout {
            start,
            steps: vec![RolloutStep {
                after_hours: hours,
                percent: 100.0,
            }],
        }
    }

    #[test]
    fn a_build_follows_its_release_unless_it_has_waves_of_its_own() {
        let now = Utc::now();
        let id = "0123456789abcdef0123456789abcdef";
        let mut r = release("1.0.0");
        let mut b = build("hello", "1.1.0");
        assert_eq!(build_wave_check(&r, &b, id, "stable", 0.0, now), Ok(()));
        // The defect found from outside: release paused, its rollout starting tomorrow; a new
        // build for it must wait like the release.
        r.paused = true;
        r.rollout = Some(schedule(now + chrono::Duration::days(1), 24.0));
        let why = build_wave_check(&r, &b, id, "stable", 0.0, now).unwrap_err();
        assert!(why.contains("paused"), "{why}");
        r.paused = false;
        let why = build_wave_check(&r, &b, id, "stable", 0.0, now).unwrap_err();
        assert!(why.starts_with("rollout wave: this machine"), "{why}");
        assert_eq!(
            build_wave_check(&r, &b, id, "stable", 0.0, now + chrono::Duration::days(3)),
            Ok(())
        );
        // Waves of its own: the release's no longer matter, the build's do.
        b.rollout = Some(schedule(now - chrono::Duration::days(10), 1.0));
        assert_eq!(build_wave_check(&r, &b, id, "stable", 0.0, now), Ok(()));
        b.rollout = Some(schedule(now + chrono::Duration::days(1), 1.0));
        assert!(build_wave_check(&r, &b, id, "stable", 0.0, now).is_err());
        b.rollout = None;
        r.rollout = None;
        b.paused = true;
        assert!(build_wave_check(&r, &b, id, "stable", 0.0, now)
            .unwrap_err()
            .contains("paused"));
        b.paused = false;
        b.withdrawn = true;
        assert!(build_wave_check(&r, &b, id, "stable", 0.0, now)
            .unwrap_err()
            .contains("withdrawn"));
    }

    #[test]
    fn a_machine_without_an_id_takes_nothing_rolled_out_in_waves() {
        let now = Utc::now();
        let mut r = release("2.0.0");
        let mut b = build("hello", "1.1.0");
        // Without waves everyone moves at once, id or not.
        assert_eq!(wave_check(&r, "", "stable", 0.0, now), Ok(()));
        assert_eq!(build_wave_check(&r, &b, " \n", "stable", 0.0, now), Ok(()));
        r.rollout = Some(schedule(now - chrono::Duration::days(10), 1.0));
        assert_eq!(
            wave_check(&r, "", "stable", 0.0, now),
            Err(NO_MACHINE_ID.into())
        );
        assert_eq!(
            build_wave_check(&r, &b, "", "stable", 0.0, now),
            Err(NO_MACHINE_ID.into())
        );
        r.rollout = None;
        b.rollout = Some(schedule(now - chrono::Duration::days(10), 1.0));
        assert_eq!(
            build_wave_check(&r, &b, "", "stable", 0.0, now),
            Err(NO_MACHINE_ID.into())
        );
    }

    #[test]
    fn each_build_draws_its_own_fleet_position() {
        let release: OsVersion = "1.0.0".parse().unwrap();
        let ids: Vec<String> = (0..200).map(|i| format!("{i:032x}")).collect();
        let pos = |v: &str| -> Vec<f64> {
            ids.iter()
                .map(|id| {
                    rollout::build_position(id, "stable", &release, "hello", &v.parse().unwrap())
                })
                .collect()
        };
        let (a, b) = (pos("1.1.0"), pos("1.2.0"));
        assert!(a.iter().chain(&b).all(|p| (0.0..1.0).contains(p)));
        // Independent samples: the first 10 % of one build are not the first 10 % of the next.
        let first = |v: &[f64]| v.iter().map(|p| *p < 0.1).collect::<Vec<_>>();
        assert_ne!(first(&a), first(&b));
        let os: Vec<f64> = ids
            .iter()
            .map(|id| rollout::fleet_position(id, "stable", &release))
            .collect();
        assert_ne!(first(&a), first(&os));
    }
}
