//! Adding a release to a draft: identities read from inside the images, the merge rule, the import.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use semver::Version;
use upd_channels::chunks::{self, ChunkIndex};
use upd_channels::compat;
use upd_channels::manifest::{
    ExtBuild, ExtIdentity, IndexRef, Manifest, OsBuild, OsIdentity, Release, Sha256, Target,
};
use upd_channels::name::{Name, RelPath};
use upd_channels::osrelease::OsRelease;
use upd_channels::version::OsVersion;
use upd_durable::{atomic_write, PathError};
use upd_image::{read_extension_release, read_os_release, systemd_version};

use super::{ext_image_path, hash_image, os_image_path, Repo, RepoError, Result};

/// An extension image offered for a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtSource {
    /// The extension name (the image merges as `<name>.raw`).
    pub name: Name,
    /// The image file.
    pub image: PathBuf,
    /// Its version; when absent, `SYSEXT_VERSION_ID=` of its extension-release is used.
    pub version: Option<Version>,
}

/// What [`add_release`] did to the draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new release entry.
    Release,
    /// This many extension builds appended to an existing release with the same OS image.
    Extensions(usize),
}

fn field_err(image: &Path, field: &str, reason: String) -> RepoError {
    RepoError::ReleaseField {
        image: image.to_path_buf(),
        field: field.to_string(),
        reason,
    }
}

fn parse_version(image: &Path, field: &str, value: &str, hint: &str) -> Result<Version> {
    Version::parse(value).map_err(|e| {
        field_err(
            image,
            field,
            format!("'{value}' is not a semantic version ({e}); {hint}"),
        )
    })
}

/// Reads the identity and version of an OS image from its own os-release: the version is
/// `version` if given, else `IMAGE_VERSION=`, else `VERSION_ID=`.
pub fn inspect_os(
    image: &Path,
    version: Option<&OsVersion>,
    architecture: &str,
) -> Result<(OsVersion, OsIdentity)> {
    let os = read_os_release(image)?;
    let mut identity = OsIdentity::from_release(&os, architecture);
    identity.systemd = systemd_version(image)?;
    if Name::new(&identity.id).is_err() {
        let reason = format!("'{}' is missing or not a safe name", identity.id);
        return Err(field_err(image, "ID", reason));
    }
    let version = if let Some(v) = version {
        v.clone()
    } else {
        let (field, value) = ["IMAGE_VERSION", "VERSION_ID"]
            .iter()
            .find_map(|k| os.get_nonempty(k).map(|v| (*k, v)))
            .ok_or_else(|| {
                let reason = "neither IMAGE_VERSION nor VERSION_ID is set; pass --version";
                field_err(image, "VERSION_ID", reason.to_string())
            })?;
        OsVersion::parse(value)
            .map_err(|e| field_err(image, field, format!("{e}; pass --version")))?
    };
    Ok((version, identity))
}

/// Reads an extension image's own extension-release, refuses it when systemd-sysext would not
/// merge it as `<name>.raw` on `os`, and returns its version and identity.
pub fn inspect_ext(
    ext: &ExtSource,
    os_version: &OsVersion,
    os: &OsIdentity,
) -> Result<(Version, ExtIdentity)> {
    let (found, release) = read_extension_release(&ext.image, ext.name.as_str())?;
    let image_name = format!("{}.raw", ext.name);
    compat::check(&image_name, &found, &release, &os.to_host()).map_err(|source| {
        RepoError::Incompatible {
            image: ext.image.clone(),
            os_version: os_version.clone(),
            source: Box::new(source),
        }
    })?;
    let version = match &ext.version {
        Some(v) => v.clone(),
        None => ext_version(&ext.image, &release)?,
    };
    Ok((version, ExtIdentity::from_release(&release)))
}

fn ext_version(image: &Path, release: &OsRelease) -> Result<Version> {
    let hint = "give it as NAME=PATH:EXTVERSION";
    let value = release.get_nonempty("SYSEXT_VERSION_ID").ok_or_else(|| {
        field_err(
            image,
            "SYSEXT_VERSION_ID",
            format!("not set in the extension-release; {hint}"),
        )
    })?;
    parse_version(image, "SYSEXT_VERSION_ID", value, hint)
}

/// Adds `release` to `draft`: a new version is inserted in order; an existing version with
/// the identical OS build gets the new extension builds appended; anything else is refused.
pub fn add_release(draft: &mut Manifest, release: Release) -> Result<Added> {
    let pos = draft
        .releases
        .partition_point(|r| r.version < release.version);
    let Some(existing) = draft
        .releases
        .get_mut(pos)
        .filter(|r| r.version == release.version)
    else {
        draft.releases.insert(pos, release);
        return Ok(Added::Release);
    };
    if existing.os != release.os {
        return Err(RepoError::OsImageDiffers {
            version: release.version,
            existing_path: existing.os.image.path.clone(),
            existing: existing.os.image.sha256.to_hex(),
            new: release.os.image.sha256.to_hex(),
        });
    }
    for ext in &release.extensions {
        if existing
            .extensions
            .iter()
            .any(|e| e.name == ext.name && e.version == ext.version)
        {
            return Err(RepoError::DuplicateExt {
                version: release.version.clone(),
                name: ext.name.clone(),
                ext_version: ext.version.clone(),
            });
        }
    }
    let n = release.extensions.len();
    existing.extensions.extend(release.extensions);
    Ok(Added::Extensions(n))
}

/// An image to import: its manifest target and the bytes of its chunk index.
struct Planned {
    target: Target,
    index: Vec<u8>,
}

/// Hash `src` and chunk it ([`chunks::DEFAULT_PARAMS`]); the index goes next to the image as
/// `<path>.chunks`, named with its size and SHA-256 in the target so the signature covers it.
fn planned_target(src: &Path, path: RelPath) -> Result<Planned> {
    let (size, sha256) = hash_image(src)?;
    let file = File::open(src).map_err(|e| PathError::new("open", src, e))?;
    let index = ChunkIndex::build(
        BufReader::with_capacity(1 << 20, file),
        chunks::DEFAULT_PARAMS,
    )
    .map_err(|e| PathError::new("chunk", src, e))?;
    if index.size != size {
        return Err(RepoError::Invalid(format!(
            "{} changed while it was read ({size} bytes hashed, {} chunked)",
            src.display(),
            index.size
        )));
    }
    let index = index.to_bytes();
    let index_path = RelPath::new(&format!("{path}.chunks")).map_err(|source| RepoError::Name {
        what: "chunk index path".to_string(),
        source,
    })?;
    let chunk_index = Some(IndexRef {
        path: index_path,
        size: index.len() as u64,
        sha256: Sha256(chunks::sha256(&index)),
    });
    Ok(Planned {
        target: Target {
            path,
            size,
            sha256,
            chunk_index,
        },
        index,
    })
}

impl Repo {
    /// Reads the images, checks every extension against the OS, adds the release to the
    /// channel's draft in memory, then imports the images and writes the draft once.
    /// Nothing is written when any check fails.
    pub fn add_release(
        &self,
        channel: &Name,
        os_image: &Path,
        version: Option<&OsVersion>,
        exts: &[ExtSource],
        architecture: &str,
    ) -> Result<(Release, Added)> {
        let mut draft = self.load_draft(channel)?;
        let (version, identity) = inspect_os(os_image, version, architecture)?;
        let os_planned = planned_target(os_image, os_image_path(&identity.id, &version)?)?;
        let mut builds = Vec::new();
        let mut indexes = vec![os_planned.index];
        for ext in exts {
            let (ext_version, release) = inspect_ext(ext, &version, &identity)?;
            let path = ext_image_path(&ext.name, &ext_version, &version)?;
            let planned = planned_target(&ext.image, path)?;
            indexes.push(planned.index);
            builds.push(ExtBuild::new(
                ext.name.clone(),
                ext_version,
                planned.target,
                release,
            ));
        }
        let os = OsBuild {
            identity,
            image: os_planned.target,
        };
        let release = Release::new(version, os, builds);
        let added = add_release(&mut draft, release.clone())?;
        draft.validate().map_err(RepoError::Invalid)?;
        self.import_checked(os_image, &release.os.image, &indexes[0])?;
        for ((src, build), index) in exts.iter().zip(&release.extensions).zip(&indexes[1..]) {
            self.import_checked(&src.image, &build.image, index)?;
        }
        self.save_draft(&draft)?;
        Ok((release, added))
    }

    /// Imports `src` and checks the bytes that landed are the ones planned, then writes its
    /// chunk index (derived from those very bytes, so rewriting one that exists changes nothing).
    fn import_checked(&self, src: &Path, planned: &Target, index: &[u8]) -> Result<()> {
        let landed = self.import_image(src, &planned.path)?;
        if landed.sha256 != planned.sha256 {
            return Err(RepoError::ImageExists {
                path: planned.path.under(self.root()),
                existing: landed.sha256,
                new: planned.sha256,
            });
        }
        if let Some(ix) = &planned.chunk_index {
            atomic_write(&ix.path.under(self.root()), index, 0o644)?;
        }
        Ok(())
    }
}
