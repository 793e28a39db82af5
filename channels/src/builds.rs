//! Choosing the extension builds for a release: a pure function of the manifest, the host, the
//! enabled extensions and the builds' rollout (what this machine may take now).

use std::collections::BTreeMap;

use crate::compat;
use crate::manifest::{ExtBuild, Release};
use crate::osrelease::HostIdentity;
use crate::version::OsVersion;
use semver::VersionReq;

/// An enabled extension and the builds it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Extension name.
    pub name: String,
    /// Version requirement (`*` when none was configured).
    pub req: VersionReq,
}

/// What was decided for one enabled extension.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Extension name.
    pub name: String,
    /// The build to run on the target release, if one qualifies.
    pub build: Option<ExtBuild>,
    /// Why no build qualifies (or why the newest one was passed over).
    pub problem: Option<String>,
    /// A newer build that qualifies but that this machine may not take yet, and why (its waves
    /// have not reached this machine, or its rollout is paused).
    pub waiting: Option<String>,
}

/// What this machine may take: each build's rollout admission, and the builds it runs.
pub struct Admission<'a> {
    /// `Ok` when this machine may take the build now, else why not (see
    /// [`crate::select::build_wave_check`]).
    pub admit: &'a dyn Fn(&ExtBuild) -> Result<(), String>,
    /// Extension name → SHA-256 (hex) of the build running now. A running build that is not
    /// withdrawn stays a candidate even when its rollout is paused or its waves are later for
    /// this machine: a pause starts no one, it sends no one back.
    pub running: &'a BTreeMap<String, String>,
}

impl Admission<'_> {
    /// Every build admitted (no waves apply: a release or build pulled by version), the
    /// withdrawn ones excepted.
    pub fn bypass() -> Admission<'static> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        Admission {
            admit: &|b: &ExtBuild| {
                if b.withdrawn {
                    Err("withdrawn by the publisher".into())
                } else {
                    Ok(())
                }
            },
            running: &NONE,
        }
    }
}

/// The builds chosen for one release.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The release planned for.
    pub release: OsVersion,
    /// One choice per enabled extension, in configuration order.
    pub choices: Vec<Choice>,
}

impl Plan {
    /// Choices with a build.
    pub fn chosen(&self) -> impl Iterator<Item = &ExtBuild> {
        self.choices.iter().filter_map(|c| c.build.as_ref())
    }

    /// Choices without a build.
    pub fn blocked(&self) -> impl Iterator<Item = &Choice> {
        self.choices.iter().filter(|c| c.build.is_none())
    }

    /// Whether the chosen set differs from `current` (name → sha256 hex of the running build).
    pub fn differs_from(&self, current: &BTreeMap<String, String>) -> bool {
        let want: BTreeMap<String, String> = self
            .chosen()
            .map(|b| (b.name.to_string(), b.image.sha256.to_hex()))
            .collect();
        &want != current
    }
}

/// Choose, for each wanted extension, the newest build of `release` that meets its requirement,
/// that systemd-sysext would merge on `host` (judged from the manifest's declared identity; the
/// image itself is checked again after download) and that this machine may take now (`adm`: its
/// rollout admits the machine, or the machine runs it already and it is not withdrawn).
pub fn plan(release: &Release, host: &HostIdentity, wanted: &[Wanted], adm: &Admission) -> Plan {
    let choices = wanted
        .iter()
        .map(|w| choose(release, host, w, adm))
        .collect();
    Plan {
        release: release.version.clone(),
        choices,
    }
}

fn choose(release: &Release, host: &HostIdentity, w: &Wanted, adm: &Admission) -> Choice {
    let all: Vec<&ExtBuild> = release.builds_of(&w.name).collect();
    let mut first_refusal = None;
    let mut waiting = None;
    for b in all.iter().filter(|b| w.req.matches(&b.version)) {
        let image = format!("{}.raw", b.name);
        if let Err(e) = compat::check(&image, b.name.as_str(), &b.release.to_release(), host) {
            first_refusal.get_or_insert_with(|| format!("{} {}: {e}", b.name, b.version));
            continue;
        }
        let runs_it = adm
            .running
            .get(b.name.as_str())
            .is_some_and(|sha| *sha == b.image.sha256.to_hex());
        match (adm.admit)(b) {
            Err(_) if runs_it && !b.withdrawn => {}
            Err(why) => {
                if !b.withdrawn {
                    waiting.get_or_insert_with(|| format!("{} {}: {why}", b.name, b.version));
                }
                continue;
            }
            Ok(()) => {}
        }
        return Choice {
            name: w.name.clone(),
            build: Some((*b).clone()),
            problem: None,
            waiting,
        };
    }
    let problem = match (waiting.clone(), first_refusal) {
        (Some(w), _) => w,
        (None, Some(p)) => p,
        (None, None) if all.iter().any(|b| b.withdrawn && w.req.matches(&b.version)) => {
            format!(
                "every build of '{}' in release {} that matches {} is withdrawn",
                w.name, release.version, w.req
            )
        }
        (None, None) if all.is_empty() => {
            format!(
                "release {} has no build of extension '{}'",
                release.version, w.name
            )
        }
        (None, None) => {
            let have: Vec<String> = all.iter().map(|b| b.version.to_string()).collect();
            format!(
                "no build of '{}' in release {} matches {} (available: {})",
                w.name,
                release.version,
                w.req,
                have.join(", ")
            )
        }
    };
    Choice {
        name: w.name.clone(),
        build: None,
        problem: Some(problem),
        waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    fn release() -> Release {
        let h = "ab".repeat(32);
        let ext = |name: &str, v: &str, vid: &str| {
            serde_json::json!({"name": name, "version": v,
                "image": {"path": format!("e/{name}-{v}.raw"), "size": 1, "sha256": h},
                "release": {"id": "updos", "version_id": vid}})
        };
        let m = serde_json::json!({"schema": 1, "channel": "s", "serial": 1,
            "issued": "2026-01-01T00:00:00Z", "expires": "2027-01-01T00:00:00Z",
            "releases": [{"version": "2.0.0",
                "os": {"identity": {"id": "updos", "version_id": "2", "architecture": "x86-64"},
                       "image": {"path": "os.raw", "size": 1, "sha256": h}},
                "extensions": [ext("docker", "24.0.5", "2"), ext("docker", "25.0.0", "2"),
                               ext("hello", "1.1.0", "1"), ext("hello", "1.0.0", "2")]}]});
        Manifest::from_bytes(&serde_json::to_vec(&m).unwrap())
            .unwrap()
            .releases
            .remove(0)
    }

    fn host() -> HostIdentity {
        HostIdentity {
            id: "updos".into(),
            version_id: Some("2".into()),
            sysext_level: None,
            architecture: "x86-64".into(),
            scope: Some("system".into()),
            id_like: Vec::new(),
            systemd: None,
        }
    }

    fn want(name: &str, req: &str) -> Wanted {
        Wanted {
            name: name.into(),
            req: req.parse().unwrap(),
        }
    }

    #[test]
    fn newest_build_within_the_requirement() {
        let p = plan(
            &release(),
            &host(),
            &[want("docker", "*"), want("docker", "~24.0")],
            &Admission::bypass(),
        );
        assert_eq!(
            p.choices[0].build.as_ref().unwrap().version.to_string(),
            "25.0.0"
        );
        assert_eq!(
            p.choices[1].build.as_ref().unwrap().version.to_string(),
            "24.0.5"
        );
    }

    #[test]
    fn incompatible_newest_build_is_passed_over_and_said() {
        // hello 1.1.0 declares VERSION_ID=1, the host has 2: systemd-sysext would skip it.
        let p = plan(
            &release(),
            &host(),
            &[want("hello", "*")],
            &Admission::bypass(),
        );
        assert_eq!(
            p.choices[0].build.as_ref().unwrap().version.to_string(),
            "1.0.0"
        );
        let p = plan(
            &release(),
            &host(),
            &[want("hello", ">=1.1")],
            &Admission::bypass(),
        );
        assert!(p.choices[0].build.is_none());
        let why = p.choices[0].problem.as_deref().unwrap();
        assert!(why.contains("VERSION_ID"), "{why}");
    }

    #[test]
    fn missing_or_unmatched_builds_are_named() {
        let p = plan(
            &release(),
            &host(),
            &[want("podman", "*"), want("docker", "^26")],
            &Admission::bypass(),
        );
        assert!(p.choices[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("no build of extension 'podman'"));
        let why = p.choices[1].problem.as_deref().unwrap();
        assert!(
            why.contains("^26") && why.contains("24.0.5, 25.0.0") || why.contains("25.0.0, 24.0.5"),
            "{why}"
        );
        assert_eq!(p.blocked().count(), 2);
    }

    #[test]
    fn differs_from_compares_exact_builds() {
        let p = plan(
            &release(),
            &host(),
            &[want("docker", "~24.0")],
            &Admission::bypass(),
        );
        let mut cur = BTreeMap::new();
        assert!(p.differs_from(&cur));
        cur.insert("docker".to_string(), "ab".repeat(32));
        assert!(!p.differs_from(&cur));
    }

    /// An admission that refuses `refused` (name and version) with a reason, else admits;
    /// `running` the builds the machine runs.
    fn plan_with(
        wanted: &str,
        refused: &[&str],
        running: &BTreeMap<String, String>,
        r: &Release,
    ) -> Choice {
        let admit = |b: &ExtBuild| {
            if b.withdrawn {
                Err("withdrawn by the publisher".to_string())
            } else if refused.contains(&format!("{} {}", b.name, b.version).as_str()) {
                Err("rollout paused by the publisher".to_string())
            } else {
                Ok(())
            }
        };
        let adm = Admission {
            admit: &admit,
            running,
        };
        plan(r, &host(), &[want(wanted, "*")], &adm)
            .choices
            .remove(0)
    }

    fn sha_of(r: &Release, name: &str, version: &str) -> String {
        r.builds_of(name)
            .find(|b| b.version.to_string() == version)
            .unwrap()
            .image
            .sha256
            .to_hex()
    }

    #[test]
    fn a_build_not_admitted_waits_and_an_older_admitted_one_is_chosen() {
        let r = release();
        let c = plan_with("docker", &["docker 25.0.0"], &BTreeMap::new(), &r);
        assert_eq!(c.build.unwrap().version.to_string(), "24.0.5");
        let w = c.waiting.unwrap();
        assert!(w.starts_with("docker 25.0.0: rollout paused"), "{w}");
        // Nothing admitted: no build, and the problem says why it waits.
        let c = plan_with(
            "docker",
            &["docker 25.0.0", "docker 24.0.5"],
            &BTreeMap::new(),
            &r,
        );
        assert!(c.build.is_none());
        assert!(c
            .problem
            .unwrap()
            .starts_with("docker 25.0.0: rollout paused"));
    }

    #[test]
    fn a_running_build_is_kept_while_paused_but_not_when_withdrawn() {
        let mut r = release();
        let running = BTreeMap::from([("docker".to_string(), sha_of(&r, "docker", "25.0.0"))]);
        // Paused after this machine took it: kept (a pause sends no one back).
        let c = plan_with("docker", &["docker 25.0.0"], &running, &r);
        assert_eq!(c.build.unwrap().version.to_string(), "25.0.0");
        assert!(c.waiting.is_none());
        // Withdrawn: the newest other build, and the withdrawal is no "waiting".
        for b in &mut r.extensions {
            if b.name.as_str() == "docker" && b.version.to_string() == "25.0.0" {
                b.withdrawn = true;
            }
        }
        let c = plan_with("docker", &[], &running, &r);
        assert_eq!(c.build.unwrap().version.to_string(), "24.0.5");
        assert!(c.waiting.is_none());
        for b in &mut r.extensions {
            b.withdrawn = true;
        }
        let c = plan_with("docker", &[], &running, &r);
        assert!(c.build.is_none());
        assert!(c.problem.unwrap().contains("is withdrawn"));
    }

    #[test]
    fn bypass_admits_all_but_withdrawn_builds() {
        let mut r = release();
        for b in &mut r.extensions {
            b.paused = true;
        }
        let p = plan(&r, &host(), &[want("docker", "*")], &Admission::bypass());
        assert_eq!(
            p.choices[0].build.as_ref().unwrap().version.to_string(),
            "25.0.0"
        );
        r.extensions
            .iter_mut()
            .for_each(|b| b.withdrawn = b.version.major == 25);
        let p = plan(&r, &host(), &[want("docker", "*")], &Admission::bypass());
        assert_eq!(
            p.choices[0].build.as_ref().unwrap().version.to_string(),
            "24.0.5"
        );
    }
}
