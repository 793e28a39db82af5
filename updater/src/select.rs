//! Choosing the OS release a machine moves to: a pure function of the manifest, the running
//! version and what the machine remembers (failed releases), with rollout eligibility plugged in.

use std::collections::BTreeSet;

use semver::Version;
use upd_channels::manifest::{Manifest, Release};

/// A newer release passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
    running: &Version,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use upd_channels::manifest::{OsBuild, OsIdentity, Sha256, Target};
    use upd_channels::name::{Name, RelPath};

    fn release(v: &str) -> Release {
        Release {
            version: v.parse().unwrap(),
            os: OsBuild {
                identity: OsIdentity {
                    id: "updos".into(),
                    version_id: Some(v.into()),
                    sysext_level: None,
                    architecture: "x86-64".into(),
                },
                image: Target {
                    path: RelPath::new(&format!("os/{v}.raw")).unwrap(),
                    size: 1,
                    sha256: Sha256([0; 32]),
                },
            },
            extensions: Vec::new(),
            rollout: None,
            paused: false,
            withdrawn: false,
            barrier: false,
            redirect_to: None,
        }
    }

    fn manifest(rs: Vec<Release>) -> Manifest {
        let mut m = Manifest::new(Name::new("stable").unwrap(), Utc::now());
        m.releases = rs;
        m
    }

    fn pick(m: &Manifest, running: &str, failed: &[&str]) -> (Option<String>, Vec<String>) {
        let failed = failed.iter().map(|s| s.to_string()).collect();
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
            if r.version.minor == 1 {
                Err("not yet in this machine's wave".into())
            } else {
                Ok(())
            }
        });
        assert_eq!(s.target.unwrap().version.to_string(), "2.0.0");
        assert_eq!(s.skipped[0].why, "not yet in this machine's wave");
    }
}
