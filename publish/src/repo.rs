//! The publisher's channel repository on disk: layout, roots, drafts, image import, adding releases.
//!
//! ```text
//! REPO/roots/N.root.json                  signed root documents, N = 1, 2, ...
//! REPO/channels/<channel>/manifest.json   the signed manifest (DSSE envelope)
//! REPO/channels/<channel>/draft.json      the unsigned working copy (plain manifest JSON)
//! REPO/images/os/<ID>-<version>.raw
//! REPO/images/ext/<name>/<name>-<extversion>-<osversion>.raw
//! ```
//! The directory is static: any HTTP server can publish it, and target paths are relative to it.

mod edit;
mod release;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use semver::Version;
use upd_channels::compat::Incompatible;
use upd_channels::manifest::{Manifest, SchemaError, Sha256, Target};
use upd_channels::name::{Name, NameError, RelPath};
use upd_channels::version::OsVersion;
use upd_durable::{atomic_write, rename_durable, sweep_tmp, tmp_sibling, PathError};
use upd_image::ImageError;
use upd_keys::{KeyError, TrustedRoot};

pub use edit::{
    check_rollout, promote, set_barrier, set_build_paused, set_build_rollout, set_paused,
    set_rollout, withdraw, withdraw_build, BuildRef, Promoted,
};
pub use release::{add_release, inspect_ext, inspect_os, Added, ExtSource};

/// Mode asked for the files the repository writes; the umask decides, as for `File::create`.
const FILE_MODE: u32 = 0o666;

/// Why a repository operation was refused; nothing was written when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A file or directory could not be read or written.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A draft or manifest file is not a valid manifest.
    #[error("{path}: {source}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: SchemaError,
    },
    /// A channel has no draft (the channel was never created with `init`).
    #[error("channel '{channel}' has no draft at {path} (create it with `upd-channel init --channel {channel}`)")]
    NoDraft {
        /// The channel.
        channel: Name,
        /// Where the draft was expected.
        path: PathBuf,
    },
    /// `init` would overwrite a root.
    #[error("{path} already exists; refusing to overwrite a root (use rotate-root)")]
    RootExists {
        /// The existing root.
        path: PathBuf,
    },
    /// The repository has no `roots/1.root.json`.
    #[error("no root in {path} (create one with `upd-channel init`)")]
    NoRoot {
        /// The roots directory.
        path: PathBuf,
    },
    /// A root file or the chain of roots was refused.
    #[error("{path}: {source}")]
    Root {
        /// The root file (the last one of the chain).
        path: PathBuf,
        /// Why.
        source: KeyError,
    },
    /// A signed manifest envelope could not be read.
    #[error("{path}: not a readable manifest envelope: {reason}")]
    Envelope {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading inside an image failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// An extension would not merge on the release it is added to.
    #[error("{image}: refused for OS release {os_version}: {source}")]
    Incompatible {
        /// The extension image.
        image: PathBuf,
        /// The OS release it was meant for.
        os_version: OsVersion,
        /// The systemd-sysext rule that fails.
        source: Box<Incompatible>,
    },
    /// A field of an os-release or extension-release file is missing or unusable.
    #[error("{image}: {field}: {reason}")]
    ReleaseField {
        /// The image read.
        image: PathBuf,
        /// The field (`ID`, `VERSION_ID`, `SYSEXT_VERSION_ID`, ...).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A name or path is unsafe.
    #[error("{what}: {source}")]
    Name {
        /// What the name is for.
        what: String,
        /// Why it was refused.
        source: NameError,
    },
    /// The release exists with a different OS image.
    #[error("release {version} already has OS image {existing_path} (sha256 {existing}); the new image has sha256 {new}: a release's OS image never changes, publish a new version")]
    OsImageDiffers {
        /// The release.
        version: OsVersion,
        /// Its image path.
        existing_path: RelPath,
        /// Its image hash (hex).
        existing: String,
        /// The hash of the image offered (hex).
        new: String,
    },
    /// The extension build is already in the release.
    #[error("release {version} already lists extension {name} {ext_version}")]
    DuplicateExt {
        /// The release.
        version: OsVersion,
        /// The extension.
        name: Name,
        /// Its version.
        ext_version: Version,
    },
    /// An image of the same path but different content is already in the repository.
    #[error("{path} already exists with sha256 {existing}, the new image has {new}; refusing to replace a published image")]
    ImageExists {
        /// The repository file.
        path: PathBuf,
        /// Its hash.
        existing: Sha256,
        /// The hash of the image offered.
        new: Sha256,
    },
    /// The channel has no release with this version.
    #[error("channel '{channel}' has no release {version}")]
    NoRelease {
        /// The channel.
        channel: Name,
        /// The version asked for.
        version: OsVersion,
    },
    /// The release has no such extension build.
    #[error("release {version} has no extension build {build} (builds of it: {have})")]
    NoBuild {
        /// The release.
        version: OsVersion,
        /// The build asked for.
        build: String,
        /// The versions of that extension the release has.
        have: String,
    },
    /// A rollout schedule step is unusable.
    #[error("rollout step {step} ({hours}:{percent}): {reason}")]
    RolloutStep {
        /// The step's position on the command line, from 1.
        step: usize,
        /// Its hours after the start.
        hours: f64,
        /// Its percentage of the fleet.
        percent: f64,
        /// What is wrong with it.
        reason: String,
    },
    /// A withdrawn release cannot send its machines to the release asked for.
    #[error("channel '{channel}': release {version}: redirect_to {to} {reason}")]
    BadRedirect {
        /// The channel.
        channel: Name,
        /// The release being withdrawn.
        version: OsVersion,
        /// The release asked for as the safe one.
        to: OsVersion,
        /// Why it is not a safe target.
        reason: &'static str,
    },
    /// The target channel already has this version with other content.
    #[error("channel '{channel}' already has release {version} with different content ({differs}); a published release never changes, publish a new version")]
    PromoteConflict {
        /// The release.
        version: OsVersion,
        /// The target channel.
        channel: Name,
        /// What differs (target first, then source).
        differs: String,
    },
    /// A file a release names is missing from the repository or differs from its entry.
    #[error("{path}: {reason}")]
    TargetMismatch {
        /// The repository file.
        path: PathBuf,
        /// What is wrong (missing, size or hash differs).
        reason: String,
    },
    /// The edited draft breaks a manifest rule.
    #[error("the draft would be invalid: {0}")]
    Invalid(String),
}

/// Shorthand for results of this module.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RepoError + 'a {
    move |source| RepoError::Io(PathError::new(op, path, source))
}

/// A channel repository rooted at a directory.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

impl Repo {
    /// The repository at `root` (nothing is read yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `roots/N.root.json`.
    pub fn root_file(&self, version: u64) -> PathBuf {
        self.root.join("roots").join(format!("{version}.root.json"))
    }

    /// `channels/<channel>/draft.json`.
    pub fn draft_file(&self, channel: &Name) -> PathBuf {
        self.root
            .join("channels")
            .join(channel.as_str())
            .join("draft.json")
    }

    /// `channels/<channel>/manifest.json`.
    pub fn manifest_file(&self, channel: &Name) -> PathBuf {
        self.root
            .join("channels")
            .join(channel.as_str())
            .join("manifest.json")
    }

    /// The bytes of `roots/1.root.json`, `2.root.json`, ... up to the first missing one.
    pub fn read_roots(&self) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for version in 1.. {
            let path = self.root_file(version);
            match fs::read(&path) {
                Ok(bytes) => out.push(bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_err("read", &path)(e)),
            }
        }
        Ok(out)
    }

    /// The newest root, trusted by following the chain from `roots/1.root.json`.
    pub fn trusted_root(&self, now: DateTime<Utc>) -> Result<TrustedRoot> {
        let roots = self.read_roots()?;
        let Some((first, chain)) = roots.split_first() else {
            return Err(RepoError::NoRoot {
                path: self.root.join("roots"),
            });
        };
        TrustedRoot::from_chain(first, chain, now).map_err(|source| RepoError::Root {
            path: self.root_file(roots.len() as u64),
            source,
        })
    }

    /// Writes `roots/N.root.json`, refusing to replace an existing one.
    pub fn write_root(&self, version: u64, envelope: &[u8]) -> Result<PathBuf> {
        let path = self.root_file(version);
        if path.exists() {
            return Err(RepoError::RootExists { path });
        }
        atomic_write(&path, envelope, FILE_MODE)?;
        Ok(path)
    }

    /// Loads and validates a channel's draft.
    pub fn load_draft(&self, channel: &Name) -> Result<Manifest> {
        let path = self.draft_file(channel);
        let bytes = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RepoError::NoDraft {
                    channel: channel.clone(),
                    path,
                })
            }
            r => r.map_err(io_err("read", &path))?,
        };
        Manifest::from_bytes(&bytes).map_err(|source| RepoError::Manifest { path, source })
    }

    /// Validates and writes a channel's draft atomically; returns its path.
    pub fn save_draft(&self, draft: &Manifest) -> Result<PathBuf> {
        draft.validate().map_err(RepoError::Invalid)?;
        let path = self.draft_file(&draft.channel);
        atomic_write(&path, &draft.to_bytes(), FILE_MODE)?;
        Ok(path)
    }

    /// The serial of the published manifest, read without verifying it (the publisher's own file).
    pub fn published_serial(&self, channel: &Name) -> Result<Option<u64>> {
        Ok(self.published_manifest(channel)?.map(|m| m.serial))
    }

    /// The payload of the published manifest, read without verifying its signatures (the
    /// publisher's own file; machines use [`upd_channels::verify`]); `None` before the first `sign`.
    pub fn published_manifest(&self, channel: &Name) -> Result<Option<Manifest>> {
        let path = self.manifest_file(channel);
        let bytes = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            r => r.map_err(io_err("read", &path))?,
        };
        let bad = |reason: String| RepoError::Envelope {
            path: path.clone(),
            reason,
        };
        let env: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let payload = env["payload"]
            .as_str()
            .ok_or_else(|| bad("no payload".into()))?;
        let payload = STANDARD.decode(payload).map_err(|e| bad(e.to_string()))?;
        let m = Manifest::from_bytes(&payload).map_err(|e| bad(e.to_string()))?;
        Ok(Some(m))
    }

    /// Writes a channel's signed manifest atomically, then its pre-compressed sibling
    /// `manifest.json.gz` (what `upd-channel serve`, or any static server or CDN that serves
    /// pre-compressed files, sends to clients that accept gzip); returns the manifest's path.
    /// The sibling is written second, so it is never older than the manifest it compresses
    /// (the server refuses an older one as stale).
    pub fn write_manifest(&self, channel: &Name, envelope: &[u8]) -> Result<PathBuf> {
        let path = self.manifest_file(channel);
        atomic_write(&path, envelope, FILE_MODE)?;
        let gz = path.with_file_name("manifest.json.gz");
        atomic_write(&gz, &gzip(envelope), FILE_MODE)?;
        Ok(path)
    }

    /// Copies `src` to `rel` under the repository via a temporary file and a
    /// rename, and returns its target; an identical file already there is kept.
    pub fn import_image(&self, src: &Path, rel: &RelPath) -> Result<Target> {
        let (size, sha256) = hash_image(src)?;
        let dest = rel.under(&self.root);
        if dest.exists() {
            let (_, existing) = hash_image(&dest)?;
            if existing != sha256 {
                return Err(RepoError::ImageExists {
                    path: dest,
                    existing,
                    new: sha256,
                });
            }
        } else {
            let dir = dest.parent().expect("a repository path has a parent");
            fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
            // The temporary name carries the process id: what an import killed midway left
            // (perhaps a whole image) goes first.
            sweep_tmp(dir)?;
            let tmp = tmp_sibling(&dest);
            // A copy, not a hard link: a builder rewriting its output in place must not change
            // a published image under its signed hash.
            let copied = (|| -> Result<()> {
                fs::copy(src, &tmp).map_err(io_err("copy to", &tmp))?;
                File::open(&tmp)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err("fsync", &tmp))?;
                Ok(rename_durable(&tmp, &dest)?)
            })();
            if copied.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            copied?;
        }
        Ok(Target {
            path: rel.clone(),
            size,
            sha256,
            chunk_index: None,
        })
    }
}

impl Repo {
    /// Checks that every image `release` names is in the repository with its size and SHA-256.
    pub fn check_release_files(&self, release: &upd_channels::manifest::Release) -> Result<()> {
        let targets =
            std::iter::once(&release.os.image).chain(release.extensions.iter().map(|e| &e.image));
        for t in targets {
            let path = t.path.under(&self.root);
            if !path.is_file() {
                return Err(RepoError::TargetMismatch {
                    path,
                    reason: format!(
                        "missing from the repository (release {} names it)",
                        release.version
                    ),
                });
            }
            let (size, sha256) = hash_image(&path)?;
            if size != t.size || sha256 != t.sha256 {
                return Err(RepoError::TargetMismatch {
                    path,
                    reason: format!(
                        "is {size} bytes with sha256 {sha256}; release {} names {} bytes with sha256 {}",
                        release.version, t.size, t.sha256
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `images/os/<ID>-<version>.raw`.
pub fn os_image_path(id: &str, version: &OsVersion) -> Result<RelPath> {
    rel(&format!("images/os/{id}-{version}.raw"), "OS image path")
}

/// `images/ext/<name>/<name>-<extversion>-<osversion>.raw`.
pub fn ext_image_path(name: &Name, ext: &Version, os: &OsVersion) -> Result<RelPath> {
    rel(
        &format!("images/ext/{name}/{name}-{ext}-{os}.raw"),
        "extension image path",
    )
}

fn rel(s: &str, what: &str) -> Result<RelPath> {
    RelPath::new(s).map_err(|source| RepoError::Name {
        what: what.to_string(),
        source,
    })
}

/// Size and SHA-256 of an image, as a manifest target records them.
fn hash_image(path: &Path) -> Result<(u64, Sha256)> {
    let (size, sha256) = upd_durable::hash_file(path)?;
    Ok((size, Sha256(sha256)))
}

/// `data` gzip-compressed at the best level (deterministic: no name, no time in the header).
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests;
