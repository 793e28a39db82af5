//! Choosing the extension builds for a release: a pure function of the manifest, the host and
//! the enabled extensions.

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

/// Choose, for each wanted extension, the newest build of `release` that meets its requirement
/// and that systemd-sysext would merge on `host` (judged from the manifest's declared identity;
/// the image itself is checked again after download).
pub fn plan(release: &Release, host: &HostIdentity, wanted: &[Wanted]) -> Plan {
    let choices = wanted.iter().map(|w| choose(release, host, w)).collect();
    Plan {
        release: release.version.clone(),
        choices,
    }
}

fn choose(release: &Release, host: &HostIdentity, w: &Wanted) -> Choice {
    let all: Vec<&ExtBuild> = release.builds_of(&w.name).collect();
    let mut first_refusal = None;
    for b in all.iter().filter(|b| w.req.matches(&b.version)) {
        let image = format!("{}.raw", b.name);
        match compat::check(&image, b.name.as_str(), &b.release.to_release(), host) {
            Ok(()) => {
                return Choice {
                    name: w.name.clone(),
                    build: Some((*b).clone()),
                    problem: None,
                }
            }
            Err(e) => {
                first_refusal.get_or_insert_with(|| format!("{} {}: {e}", b.name, b.version));
            }
        }
    }
    let problem = match first_refusal {
        Some(p) => p,
        None if all.is_empty() => {
            format!(
                "release {} has no build of extension '{}'",
                release.version, w.name
            )
        }
        None => {
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
        let p = plan(&release(), &host(), &[want("hello", "*")]);
        assert_eq!(
            p.choices[0].build.as_ref().unwrap().version.to_string(),
            "1.0.0"
        );
        let p = plan(&release(), &host(), &[want("hello", ">=1.1")]);
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
        let p = plan(&release(), &host(), &[want("docker", "~24.0")]);
        let mut cur = BTreeMap::new();
        assert!(p.differs_from(&cur));
        cur.insert("docker".to_string(), "ab".repeat(32));
        assert!(!p.differs_from(&cur));
    }
}
