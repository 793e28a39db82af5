//! The trusted root: the shipped root, then each newer root accepted by rotation, cached in the state directory.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use upd_keys::{KeyError, TrustedRoot, MAX_ROOT_LEN};

use crate::remote::fetch::{FetchError, Fetcher, ManifestFetch};
use upd_durable::{atomic_write, PathError};

/// Why no trusted root could be established.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// No shipped root in any keys directory.
    #[error(
        "no trusted root: {path} cannot be read ({source}); install the channel's root.json there"
    )]
    NoRoot {
        /// The file looked for.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A root (shipped, cached or fetched) was refused.
    #[error("root {what} refused: {source}")]
    Refused {
        /// Which root.
        what: String,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The server offers a longer chain of root rotations than one check follows.
    #[error("the server offers more than {cap} root rotations in one check ({url} is one too many); refusing the chain")]
    TooManyRotations {
        /// [`MAX_ROOT_ROTATIONS`].
        cap: usize,
        /// The root past the cap.
        url: String,
    },
    /// Fetching a newer root failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Writing the cache failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// Load the shipped root from `keys_dir/root.json`, then the cached newer root chain from the state directory.
pub fn load(
    keys_dir: &Path,
    state_dir: &Path,
    now: DateTime<Utc>,
) -> Result<TrustedRoot, TrustError> {
    let shipped = keys_dir.join("root.json");
    let bytes = fs::read(&shipped).map_err(|source| TrustError::NoRoot {
        path: shipped.clone(),
        source,
    })?;
    let refused = |what: &Path, source| TrustError::Refused {
        what: what.display().to_string(),
        source,
    };
    let mut root = TrustedRoot::from_shipped(&bytes, now).map_err(|e| refused(&shipped, e))?;
    // Cached rotations: roots/N.root.json in the state directory, applied in order.
    let dir = state_dir.join("roots");
    loop {
        let next = dir.join(format!("{}.root.json", root.version() + 1));
        let Ok(b) = fs::read(&next) else { break };
        root = root.rotate(&b, now).map_err(|e| refused(&next, e))?;
    }
    Ok(root)
}

/// Roots accepted by rotation in one check, not yet cached: (version, exact bytes).
pub type Rotated = Vec<(u64, Vec<u8>)>;

/// Most root rotations followed in one check (TUF's maximum number of root rotations): a
/// server that still offers a next root after this many is refused at the cap, not followed on.
pub const MAX_ROOT_ROTATIONS: usize = 64;

/// Follow the server's root rotations (`SERVER/roots/N+1.root.json` until 404, at most
/// [`MAX_ROOT_ROTATIONS`]); returns the newest trusted root and the rotated roots to cache with
/// [`store_rotated`] once the check is committed. Nothing is written here.
pub async fn update(
    mut root: TrustedRoot,
    fetcher: &Fetcher,
    server: &str,
    now: DateTime<Utc>,
) -> Result<(TrustedRoot, Rotated), TrustError> {
    let mut rotated = Rotated::new();
    while let Some((url, bytes)) = next_root(fetcher, server, root.version() + 1).await? {
        if rotated.len() == MAX_ROOT_ROTATIONS {
            return Err(TrustError::TooManyRotations {
                cap: MAX_ROOT_ROTATIONS,
                url,
            });
        }
        root = root
            .rotate(&bytes, now)
            .map_err(|source| TrustError::Refused {
                what: url.clone(),
                source,
            })?;
        tracing::info!(version = root.version(), "accepted a rotated root");
        rotated.push((root.version(), bytes));
    }
    // TUF 5.3.10: only the final root must be unexpired; a refused one is never cached.
    root.check_not_expired(now)
        .map_err(|source| TrustError::Refused {
            what: format!("version {}", root.version()),
            source,
        })?;
    Ok((root, rotated))
}

/// Root `n` as the server offers it (`None`: 404, no further rotation).
async fn next_root(
    fetcher: &Fetcher,
    server: &str,
    n: u64,
) -> Result<Option<(String, Vec<u8>)>, TrustError> {
    let url = format!("{}/roots/{n}.root.json", server.trim_end_matches('/'));
    match fetcher
        .fetch_manifest(&url, None, MAX_ROOT_LEN as u64)
        .await
    {
        Ok(ManifestFetch::Fetched { bytes, .. }) => Ok(Some((url, bytes))),
        Ok(ManifestFetch::NotModified) | Err(FetchError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The channel keys a root names, as one comparable string (sorted key ids): manifest serials
/// are only comparable between manifests signed under the same channel keys.
pub fn channel_keys(root: &TrustedRoot) -> String {
    let mut ids: Vec<&str> = root
        .document()
        .roles
        .channel
        .keyids
        .iter()
        .map(upd_keys::KeyId::as_str)
        .collect();
    ids.sort_unstable();
    ids.join(",")
}

/// Cache rotated roots as `roots/N.root.json` in the state directory, where [`load`] finds them.
pub fn store_rotated(state_dir: &Path, rotated: &Rotated) -> Result<(), PathError> {
    for (n, bytes) in rotated {
        atomic_write(
            &state_dir.join("roots").join(format!("{n}.root.json")),
            bytes,
            0o644,
        )?;
    }
    Ok(())
}
