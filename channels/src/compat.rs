//! sysext compatibility rules, as systemd-sysext applies them at merge time.
//!
//! The rules follow `extension_release_validate()` step by step — systemd 252's
//! (src/shared/extension-release.c), and where 257 differs, 257's (src/shared/extension-util.c)
//! when the host's systemd is known to be 257 or later ([`Rules`]) — plus the naming rule of the image dissection that precedes it: an image
//! `NAME.raw` (or a directory `NAME`) must carry `usr/lib/extension-release.d/extension-release.NAME`.
//! As in systemd, a field set to the empty string counts as absent.

use std::fmt;

use crate::osrelease::{HostIdentity, OsRelease};

/// The scopes an extension without `SYSEXT_SCOPE=` is good for (systemd 252 default).
pub const DEFAULT_SCOPES: [&str; 2] = ["system", "portable"];

/// Which systemd's merge rules apply, from the major version of the systemd that will merge.
///
/// The two differ in one step of `extension_release_validate()`: 257 also accepts an
/// extension whose `ID` is one of the host's `ID_LIKE` words; 252 wants the host's `ID`. Both
/// were read and tried in booted containers; the versions between them were not, so they get
/// 252's rules, as does an unknown version: stricter never merges less than upd promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// systemd 252 (Debian 12), and any systemd not known to be 257 or later.
    Systemd252,
    /// systemd 257 (Debian 13) and later.
    Systemd257,
}

/// The first systemd whose rules upd applies as [`Rules::Systemd257`].
pub const ID_LIKE_SINCE: u32 = 257;

impl Rules {
    /// The rules of systemd `version` (`None`: unknown).
    pub fn of(version: Option<u32>) -> Rules {
        match version {
            Some(v) if v >= ID_LIKE_SINCE => Rules::Systemd257,
            _ => Rules::Systemd252,
        }
    }
}

/// The rule that makes systemd-sysext skip an extension, with the values on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incompatible {
    /// The release file is named after another image than the one it is in.
    ReleaseFileName {
        /// The image name without `.raw`, which the release file must carry.
        image: String,
        /// The NAME of the `extension-release.NAME` file found.
        found: String,
    },
    /// The extension-release file sets no field at all.
    EmptyRelease {
        /// The image name.
        image: String,
    },
    /// `SYSEXT_SCOPE=` does not list the scope the host merges in.
    Scope {
        /// The image name.
        image: String,
        /// The extension's scopes (the default "system portable" when unset).
        extension: Vec<String>,
        /// The host's scope, "system" for systemd-sysext.
        host: String,
    },
    /// `ARCHITECTURE=` names another architecture than the host's.
    Architecture {
        /// The image name.
        image: String,
        /// The extension's architecture.
        extension: String,
        /// The host's architecture.
        host: String,
    },
    /// The extension has no `ID=`.
    MissingId {
        /// The image name.
        image: String,
        /// The host's ID it would have had to match.
        host: String,
    },
    /// `ID=` names another OS than the host's.
    Id {
        /// The image name.
        image: String,
        /// The extension's ID.
        extension: String,
        /// The host's ID.
        host: String,
    },
    /// Both declare `SYSEXT_LEVEL=` and the levels differ.
    SysextLevel {
        /// The image name.
        image: String,
        /// The extension's level.
        extension: String,
        /// The host's level.
        host: String,
    },
    /// The host has a `VERSION_ID=` (and no shared SYSEXT_LEVEL) but the extension has none.
    MissingVersionId {
        /// The image name.
        image: String,
        /// The host's VERSION_ID.
        host: String,
    },
    /// `VERSION_ID=` differs from the host's.
    VersionId {
        /// The image name.
        image: String,
        /// The extension's VERSION_ID.
        extension: String,
        /// The host's VERSION_ID.
        host: String,
    },
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Incompatible::{
            Architecture, EmptyRelease, Id, MissingId, MissingVersionId, ReleaseFileName, Scope,
            SysextLevel, VersionId,
        };
        match self {
            ReleaseFileName { image, found } => write!(
                f,
                "image '{image}' carries extension-release.{found}, but systemd-sysext only accepts \
                 extension-release.{image} (the release file must be named after the image)"
            ),
            EmptyRelease { image } => write!(f, "extension '{image}' has an empty extension-release file"),
            Scope { image, extension, host } => write!(
                f,
                "extension '{image}' is for scope '{}', not for the host's '{host}' scope",
                extension.join(" ")
            ),
            Architecture { image, extension, host } => {
                write!(f, "extension '{image}' is built for architecture {extension}, the host is {host}")
            }
            MissingId { image, host } => write!(
                f,
                "extension '{image}' has no ID in its extension-release (it must be '{host}' or '_any')"
            ),
            Id { image, extension, host } => {
                write!(f, "extension '{image}' is built for OS '{extension}', the host is '{host}'")
            }
            SysextLevel { image, extension, host } => {
                write!(f, "extension '{image}' is built for SYSEXT_LEVEL {extension}, the host has {host}")
            }
            MissingVersionId { image, host } => write!(
                f,
                "extension '{image}' declares no VERSION_ID (nor a SYSEXT_LEVEL the host shares), \
                 the host has VERSION_ID {host}"
            ),
            VersionId { image, extension, host } => {
                write!(f, "extension '{image}' is built for VERSION_ID {extension}, the host has {host}")
            }
        }
    }
}

impl std::error::Error for Incompatible {}

/// The name systemd gives an image: the file name without `.raw` (a directory keeps its name).
pub fn image_base_name(image_name: &str) -> &str {
    image_name.strip_suffix(".raw").unwrap_or(image_name)
}

/// Decides whether systemd-sysext would merge the extension `image_name` (`foo.raw` or `foo`),
/// whose release file is `extension-release.<release_file_name>` with contents `ext`, onto `host`.
pub fn check(
    image_name: &str,
    release_file_name: &str,
    ext: &OsRelease,
    host: &HostIdentity,
) -> Result<(), Incompatible> {
    let image = image_base_name(image_name).to_string();
    // 0. The dissection only looks for extension-release.<image name>.
    if release_file_name != image {
        return Err(Incompatible::ReleaseFileName {
            image,
            found: release_file_name.to_string(),
        });
    }
    // 1. No extension-release data at all: ignored.
    if ext.is_empty() {
        return Err(Incompatible::EmptyRelease { image });
    }
    // 2. SYSEXT_SCOPE, when the host has a scope: absent means "system portable".
    if let Some(scope) = &host.scope {
        let scopes: Vec<String> = match ext.sysext_scope() {
            Some(s) => s.split_ascii_whitespace().map(str::to_string).collect(),
            None => DEFAULT_SCOPES
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        };
        if !scopes.contains(scope) {
            return Err(Incompatible::Scope {
                image,
                extension: scopes,
                host: scope.clone(),
            });
        }
    }
    // 3. ARCHITECTURE, when present and not "_any", must be the host's.
    if let Some(arch) = ext.get_nonempty("ARCHITECTURE") {
        if arch != "_any" && arch != host.architecture {
            let (extension, host) = (arch.to_string(), host.architecture.clone());
            return Err(Incompatible::Architecture {
                image,
                extension,
                host,
            });
        }
    }
    // 4. ID is required.
    let Some(id) = ext.get_nonempty("ID") else {
        return Err(Incompatible::MissingId {
            image,
            host: host.id.clone(),
        });
    };
    // 5. ID "_any": no host OS dependency, no version needed.
    if id == "_any" {
        return Ok(());
    }
    // 6. Otherwise the ID must be the host's (or, under 257's rules, one of its ID_LIKE).
    let like = Rules::of(host.systemd) == Rules::Systemd257 && host.id_like.iter().any(|l| l == id);
    if id != host.id && !like {
        return Err(Incompatible::Id {
            image,
            extension: id.to_string(),
            host: host.id.clone(),
        });
    }
    check_version(image, ext, host)
}

/// Steps 7-9: the version rules, once the ID matched.
fn check_version(image: String, ext: &OsRelease, host: &HostIdentity) -> Result<(), Incompatible> {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let (host_version, host_level) = (nonempty(&host.version_id), nonempty(&host.sysext_level));
    // 7. A rolling host (neither VERSION_ID nor SYSEXT_LEVEL) accepts any version.
    if host_version.is_none() && host_level.is_none() {
        return Ok(());
    }
    // 8. When both sides declare SYSEXT_LEVEL, it alone decides.
    if let (Some(host), Some(ext_level)) = (host_level, ext.get_nonempty("SYSEXT_LEVEL")) {
        if ext_level != host {
            return Err(Incompatible::SysextLevel {
                image,
                extension: ext_level.to_string(),
                host,
            });
        }
        return Ok(());
    }
    // 9. Otherwise, if the host has a VERSION_ID, the extension's must exist and be equal.
    if let Some(host) = host_version {
        match ext.get_nonempty("VERSION_ID") {
            None => return Err(Incompatible::MissingVersionId { image, host }),
            Some(v) if v != host => {
                return Err(Incompatible::VersionId {
                    image,
                    extension: v.to_string(),
                    host,
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
