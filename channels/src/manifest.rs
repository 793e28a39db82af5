//! The channel manifest schema and its strict validation.
//!
//! A manifest is the signed payload of a DSSE envelope; it is parsed from the exact bytes that
//! were verified (see [`crate::verify`]), never from re-serialised JSON.

use std::collections::BTreeSet;
use std::fmt;

use crate::version::OsVersion;
use chrono::{DateTime, Utc};
use semver::Version;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name::{Name, RelPath};

/// DSSE payload type of a channel manifest.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.upd.manifest+json";
/// Largest manifest accepted, checked before parsing (endless-data defence).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The manifest schema this code reads and writes.
pub const SCHEMA: u32 = 1;

/// Why a manifest was refused before any signature question.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("manifest is {size} bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not valid JSON for the schema (includes bad names, paths and hashes).
    #[error("manifest does not follow the schema: {0}")]
    Json(#[from] serde_json::Error),
    /// Valid JSON, but a rule of the schema is broken.
    #[error("manifest is invalid: {0}")]
    Invalid(String),
}

/// A SHA-256 digest, written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("sha256 '{s}' is not 64 hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
        Ok(Self(out))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({})", self.to_hex())
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_hex(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The signed description of one channel: every release with its OS image and extension builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version ([`SCHEMA`]).
    pub schema: u32,
    /// The channel this manifest is for (mix-and-match defence).
    pub channel: Name,
    /// Monotonically increasing serial (rollback defence).
    pub serial: u64,
    /// When it was signed.
    pub issued: DateTime<Utc>,
    /// After this instant the manifest is refused (freeze defence).
    pub expires: DateTime<Utc>,
    /// Releases, in ascending version order (systemd's version order, see [`crate::version`]).
    #[serde(default)]
    pub releases: Vec<Release>,
}

/// One OS release and the extension builds made for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The OS version (`IMAGE_VERSION`, else `VERSION_ID`), ordered as systemd orders versions.
    pub version: OsVersion,
    /// The OS image and the identity its os-release carries.
    pub os: OsBuild,
    /// Extension builds for this release.
    #[serde(default)]
    pub extensions: Vec<ExtBuild>,
    /// Rollout waves; absent means every machine at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// A paused rollout starts no new machine.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// A withdrawn release is never installed; machines that only staged it drop it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub withdrawn: bool,
    /// A barrier: every machine must pass through this version before going beyond it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub barrier: bool,
    /// For a withdrawn release: the safe release its machines are directed back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<OsVersion>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The OS (USR) image of a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsBuild {
    /// What the image's os-release declares.
    pub identity: OsIdentity,
    /// Where the image is and what it hashes to.
    pub image: Target,
}

/// The os-release fields that decide which extensions merge on an OS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsIdentity {
    /// `ID=`
    pub id: String,
    /// `VERSION_ID=`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// `SYSEXT_LEVEL=`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysext_level: Option<String>,
    /// The systemd architecture name the OS is built for (`x86-64`, `arm64`, ...).
    pub architecture: String,
    /// `ID_LIKE=` words (systemd 257 merges an extension whose `ID` is one of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub id_like: Vec<String>,
    /// The major version of the systemd the OS image carries, whose merge rules apply to its
    /// extensions; absent when unknown (the strictest rules apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<u32>,
}

/// The extension-release fields of an extension image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtIdentity {
    /// `ID=` (or `_any`).
    pub id: String,
    /// `VERSION_ID=`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// `SYSEXT_LEVEL=`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysext_level: Option<String>,
    /// `ARCHITECTURE=`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// `SYSEXT_SCOPE=`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A file of the channel: relative path, exact size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Path relative to the channel repository.
    pub path: RelPath,
    /// Exact size in bytes; never more is accepted.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256,
    /// The image's content-defined chunk index, for delta downloads (absent in older manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_index: Option<IndexRef>,
}

/// The chunk index file of an image ([`crate::chunks`]): covered by the manifest's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRef {
    /// Path relative to the channel repository.
    pub path: RelPath,
    /// Exact size in bytes, at most [`crate::chunks::MAX_INDEX_BYTES`].
    pub size: u64,
    /// SHA-256 of the index file.
    pub sha256: Sha256,
}

/// One build of one extension for a release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtBuild {
    /// Extension name; the image is linked as `<name>.raw`.
    pub name: Name,
    /// The extension's own version (semver).
    pub version: Version,
    /// The image.
    pub image: Target,
    /// What the image's extension-release declares.
    pub release: ExtIdentity,
    /// This build's own rollout waves, with a fleet position of its own; absent means the
    /// build follows its release's waves and pause (and the machine's place in them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// A paused build starts no new machine (machines already running it keep it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// A withdrawn build is never chosen: machines running it switch to the newest other build.
    #[serde(default, skip_serializing_if = "is_false")]
    pub withdrawn: bool,
}

/// A rollout schedule: from `start`, a growing share of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// When the first step begins.
    pub start: DateTime<Utc>,
    /// Steps in time order; the share of the fleet grows linearly between them.
    pub steps: Vec<RolloutStep>,
}

/// One point of a rollout schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutStep {
    /// Hours after the rollout start.
    pub after_hours: f64,
    /// Share of the fleet (0–100) eligible at that time.
    pub percent: f64,
}

impl Manifest {
    /// A new, empty manifest for `channel` (serial 0; `sign` bumps it).
    pub fn new(channel: Name, now: DateTime<Utc>) -> Self {
        Self {
            schema: SCHEMA,
            channel,
            serial: 0,
            issued: now,
            expires: now,
            releases: Vec::new(),
        }
    }

    /// Parse and validate the exact payload bytes, capped at [`MAX_MANIFEST_BYTES`] before parsing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SchemaError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(SchemaError::TooLarge {
                size: bytes.len(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes)?;
        m.validate().map_err(SchemaError::Invalid)?;
        Ok(m)
    }

    /// Canonical pretty JSON for publishing (what gets signed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serialises");
        v.push(b'\n');
        v
    }

    /// The release with exactly this version.
    pub fn release(&self, version: &OsVersion) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == version)
    }

    /// Check every rule that JSON types alone do not express.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema != SCHEMA {
            return Err(format!(
                "schema {} is not supported (this upd reads {SCHEMA})",
                self.schema
            ));
        }
        if self.expires < self.issued {
            return Err(format!(
                "expires {} is before issued {}",
                self.expires, self.issued
            ));
        }
        for pair in self.releases.windows(2) {
            if pair[0].version >= pair[1].version {
                return Err(format!(
                    "releases must be in ascending version order without duplicates: {} then {}",
                    pair[0].version, pair[1].version
                ));
            }
        }
        for r in &self.releases {
            r.validate()
                .map_err(|e| format!("release {}: {e}", r.version))?;
            if let Some(to) = &r.redirect_to {
                if !r.withdrawn {
                    return Err(format!(
                        "release {}: redirect_to is only allowed on a withdrawn release",
                        r.version
                    ));
                }
                match self.release(to) {
                    Some(t) if !t.withdrawn => {}
                    Some(_) => {
                        return Err(format!(
                            "release {}: redirect_to {to} is itself withdrawn",
                            r.version
                        ))
                    }
                    None => {
                        return Err(format!(
                            "release {}: redirect_to {to} is not a release of this channel",
                            r.version
                        ))
                    }
                }
            }
        }
        Ok(())
    }
}

impl Release {
    /// A release every machine may take at once: no rollout, not paused, withdrawn or a barrier.
    pub fn new(version: OsVersion, os: OsBuild, extensions: Vec<ExtBuild>) -> Self {
        Release {
            version,
            os,
            extensions,
            rollout: None,
            paused: false,
            withdrawn: false,
            barrier: false,
            redirect_to: None,
        }
    }

    fn validate(&self) -> Result<(), String> {
        self.os.image.validate("OS image")?;
        if self.os.identity.id.is_empty() || self.os.identity.architecture.is_empty() {
            return Err("OS identity needs ID and ARCHITECTURE".into());
        }
        let mut seen = BTreeSet::new();
        for e in &self.extensions {
            if !seen.insert((&e.name, &e.version)) {
                return Err(format!(
                    "extension {} {} is listed twice",
                    e.name, e.version
                ));
            }
            e.image.validate(&format!("extension {}", e.name))?;
            if e.release.id.is_empty() {
                return Err(format!("extension {}: extension-release has no ID", e.name));
            }
            if let Some(r) = &e.rollout {
                r.validate()
                    .map_err(|why| format!("extension {} {}: {why}", e.name, e.version))?;
            }
        }
        if let Some(r) = &self.rollout {
            r.validate()?;
        }
        Ok(())
    }

    /// The builds of extension `name` in this release, newest first.
    pub fn builds_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ExtBuild> + 'a {
        let mut v: Vec<&ExtBuild> = self
            .extensions
            .iter()
            .filter(|e| e.name.as_str() == name)
            .collect();
        v.sort_by(|a, b| b.version.cmp(&a.version));
        v.into_iter()
    }
}

impl ExtBuild {
    /// A build that follows its release's waves: no rollout of its own, not paused or withdrawn.
    pub fn new(name: Name, version: Version, image: Target, release: ExtIdentity) -> Self {
        ExtBuild {
            name,
            version,
            image,
            release,
            rollout: None,
            paused: false,
            withdrawn: false,
        }
    }

    /// Whether this build has waves of its own (else it follows its release's).
    pub fn own_rollout(&self) -> bool {
        self.rollout.is_some()
    }
}

impl Target {
    fn validate(&self, what: &str) -> Result<(), String> {
        if self.size == 0 {
            return Err(format!("{what} {} has size 0", self.path));
        }
        if let Some(ix) = &self.chunk_index {
            let min = (crate::chunks::HEADER_LEN + crate::chunks::RECORD_LEN) as u64;
            if !(min..=crate::chunks::MAX_INDEX_BYTES).contains(&ix.size) {
                return Err(format!(
                    "{what} {}: chunk index {} is {} bytes, outside {min}..={}",
                    self.path,
                    ix.path,
                    ix.size,
                    crate::chunks::MAX_INDEX_BYTES
                ));
            }
            if ix.path == self.path {
                return Err(format!(
                    "{what} {}: the chunk index is the image itself",
                    self.path
                ));
            }
        }
        Ok(())
    }
}

impl Rollout {
    fn validate(&self) -> Result<(), String> {
        if self.steps.is_empty() {
            return Err("rollout has no steps".into());
        }
        let mut last = (0.0f64, 0.0f64);
        for s in &self.steps {
            if !(0.0..=100.0).contains(&s.percent) || !s.percent.is_finite() {
                return Err(format!("rollout percent {} is outside 0..100", s.percent));
            }
            if !s.after_hours.is_finite() || s.after_hours < last.0 || s.percent < last.1 {
                return Err("rollout steps must grow in time and share".into());
            }
            last = (s.after_hours, s.percent);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

impl ExtIdentity {
    /// The identity an extension-release file declares.
    pub fn from_release(r: &crate::osrelease::OsRelease) -> Self {
        let f = |k: &str| r.get_nonempty(k).map(str::to_string);
        Self {
            id: f("ID").unwrap_or_default(),
            version_id: f("VERSION_ID"),
            sysext_level: f("SYSEXT_LEVEL"),
            architecture: f("ARCHITECTURE"),
            scope: f("SYSEXT_SCOPE"),
        }
    }

    /// This identity as extension-release fields, for the compatibility rules.
    pub fn to_release(&self) -> crate::osrelease::OsRelease {
        let mut text = format!("ID={}\n", quote(&self.id));
        for (k, v) in [
            ("VERSION_ID", &self.version_id),
            ("SYSEXT_LEVEL", &self.sysext_level),
            ("ARCHITECTURE", &self.architecture),
            ("SYSEXT_SCOPE", &self.scope),
        ] {
            if let Some(v) = v {
                text.push_str(&format!("{k}={}\n", quote(v)));
            }
        }
        crate::osrelease::OsRelease::parse(&text).expect("quoted fields always parse")
    }
}

impl OsIdentity {
    /// The identity an os-release file declares, on `architecture`.
    pub fn from_release(r: &crate::osrelease::OsRelease, architecture: &str) -> Self {
        let f = |k: &str| r.get_nonempty(k).map(str::to_string);
        Self {
            id: f("ID").unwrap_or_default(),
            version_id: f("VERSION_ID"),
            sysext_level: f("SYSEXT_LEVEL"),
            architecture: architecture.to_string(),
            id_like: crate::osrelease::id_like_of(r),
            systemd: None,
        }
    }

    /// The host systemd-sysext would see when this OS runs.
    pub fn to_host(&self) -> crate::osrelease::HostIdentity {
        crate::osrelease::HostIdentity {
            id: self.id.clone(),
            version_id: self.version_id.clone(),
            sysext_level: self.sysext_level.clone(),
            architecture: self.architecture.clone(),
            scope: Some("system".to_string()),
            id_like: self.id_like.clone(),
            systemd: self.systemd,
        }
    }
}

fn quote(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}
