//! Fetching and verifying the channel manifest, with a conditional GET and a verified local cache.

use std::fs;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use upd_channels::manifest::{Manifest, MAX_MANIFEST_BYTES};
use upd_channels::name::Name;
use upd_channels::verify::{verify_manifest, Expect, ManifestError};

use crate::host::machine::Machine;
use crate::remote::fetch::{FetchError, Fetcher, ManifestFetch};
use crate::remote::trust::{self, Rotated, TrustError};
use crate::state::State;
use upd_durable::{atomic_write, PathError};

/// Why the channel could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// `SERVER` is not set.
    #[error("no SERVER is configured (set SERVER= in /etc/upd/upd.conf)")]
    NoServer,
    /// The trusted root.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// The download.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The manifest was refused: the machine is left as it was.
    #[error("refused the manifest from {url}: {source}")]
    Refused {
        /// Where it came from.
        url: String,
        /// Why.
        #[source]
        source: ManifestError,
    },
    /// The server said 304 but there is no cached copy.
    #[error("the server answered 304 Not Modified but {0} is missing")]
    NoCache(PathBuf),
    /// Cache I/O.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// A verified manifest and how it was obtained; nothing is written until [`commit`].
#[derive(Debug)]
pub struct Fetched {
    /// The manifest, parsed from the exact verified bytes.
    pub manifest: Manifest,
    /// Whether the server said nothing changed.
    pub not_modified: bool,
    /// The exact verified bytes (to cache).
    bytes: Vec<u8>,
    /// The server's ETag for them.
    etag: Option<String>,
    /// Roots accepted by rotation on the way.
    rotated: Rotated,
    /// The channel keys of the root it was verified under ([`trust::channel_keys`]).
    keys: String,
}

/// The base URLs of the channel repository: `SERVER`'s first URL, then its mirrors, in order.
pub fn servers(m: &Machine) -> Result<Vec<String>, ChannelError> {
    let first = m.settings.server.as_ref().ok_or(ChannelError::NoServer)?;
    let all = std::iter::once(first).chain(&m.settings.mirrors);
    Ok(all
        .map(|s| s.as_str().trim_end_matches('/').to_string())
        .collect())
}

/// Check the channel: follow root rotations, conditional GET of the manifest, and verify it
/// against the trusted root and the highest serial `state` has seen. Reads only; [`commit`]
/// records what a command that acts on it must remember.
///
/// Mirrors are tried in order: one that cannot be reached, answers an error or serves a
/// document that is refused (stale, tampered, replayed) is passed over for the next, so a bad
/// mirror never blocks a good one. All failing, the first mirror's error is the verdict.
pub async fn fetch_verified(
    m: &Machine,
    state: &State,
    fetcher: &Fetcher,
    now: DateTime<Utc>,
) -> Result<Fetched, ChannelError> {
    let mut first = None;
    let servers = servers(m)?;
    for server in &servers {
        match fetch_verified_from(m, state, fetcher, server, now).await {
            Ok(f) => return Ok(f),
            Err(e @ (ChannelError::Io(_) | ChannelError::NoServer)) => return Err(e),
            Err(e) if servers.len() == 1 => return Err(e),
            Err(e) => {
                tracing::warn!(mirror = %server, error = %e, "passed over a mirror");
                first.get_or_insert(e);
            }
        }
    }
    Err(first.expect("at least one server"))
}

/// [`fetch_verified`] from one mirror.
async fn fetch_verified_from(
    m: &Machine,
    state: &State,
    fetcher: &Fetcher,
    server: &str,
    now: DateTime<Utc>,
) -> Result<Fetched, ChannelError> {
    let state_dir = m.state_dir();
    let root = trust::load(&m.settings.keys_dir(&m.root), &state_dir, now)?;
    let (root, rotated) = trust::update(root, fetcher, server, now).await?;
    let channel: &Name = &m.settings.channel;
    let url = format!("{server}/channels/{channel}/manifest.json");
    let cache = state_dir.join("manifest.json");
    let etag = state.manifest_etag.clone().filter(|_| cache.exists());
    let (bytes, new_etag, not_modified) = match fetcher
        .fetch_manifest(&url, etag.as_deref(), MAX_MANIFEST_BYTES as u64 * 2)
        .await?
    {
        ManifestFetch::Fetched { bytes, etag } => (bytes, etag, false),
        ManifestFetch::NotModified => {
            let b = fs::read(&cache).map_err(|_| ChannelError::NoCache(cache.clone()))?;
            (b, etag, true)
        }
    };
    let keys = trust::channel_keys(&root);
    let expect = Expect {
        channel,
        highest_serial: highest_serial(state, channel, &keys),
        now,
    };
    let manifest =
        verify_manifest(&bytes, &root, expect).map_err(|source| ChannelError::Refused {
            url: url.clone(),
            source,
        })?;
    tracing::debug!(channel = %channel, serial = manifest.serial, not_modified, "manifest verified");
    warn_if_issued_ahead(&manifest, now);
    Ok(Fetched {
        manifest,
        not_modified,
        bytes,
        etag: new_etag,
        rotated,
        keys,
    })
}

/// How far ahead of the machine's clock a manifest's issue time may be before upd says so.
const ISSUED_AHEAD_TOLERANCE_SECS: i64 = 300;

/// A manifest issued in the machine's future means the clock is behind (or the publisher's
/// ahead): it is still accepted (its signature, serial and expiry hold), with a warning, since
/// a clock that is behind also delays the expiry check (a frozen channel is noticed late).
fn warn_if_issued_ahead(manifest: &Manifest, now: DateTime<Utc>) {
    if manifest.issued > now + chrono::Duration::seconds(ISSUED_AHEAD_TOLERANCE_SECS) {
        tracing::warn!(
            issued = %manifest.issued,
            now = %now,
            "the manifest was issued in this machine's future: its clock is probably behind (expiry is checked against it)"
        );
    }
}

/// The highest serial seen for `channel`, if it was seen under the channel keys `keys`. After
/// the root rotates the channel keys, serials start afresh (TUF 5.3.11, fast-forward recovery):
/// a serial pushed to the maximum by a compromised old key no longer pins the machine, and
/// the old key's manifests are refused by their signature instead.
fn highest_serial(state: &State, channel: &Name, keys: &str) -> Option<u64> {
    let same_keys = state.serial_keys.as_deref().is_none_or(|k| k == keys);
    state
        .highest_serial
        .get(channel.as_str())
        .copied()
        .filter(|_| same_keys)
}

/// Remember a verified check: cache the rotated roots and the manifest bytes, and record the
/// serial and ETag in `state` (in memory; the caller saves it), so that a replayed older
/// manifest is refused from now on.
pub fn commit(m: &Machine, state: &mut State, fetched: &Fetched) -> Result<(), ChannelError> {
    let state_dir = m.state_dir();
    trust::store_rotated(&state_dir, &fetched.rotated)?;
    if state.serial_keys.as_deref() != Some(fetched.keys.as_str()) {
        if state.serial_keys.is_some() {
            tracing::warn!("the root rotated the channel keys: manifest serials start afresh");
            state.highest_serial.clear();
        }
        state.serial_keys = Some(fetched.keys.clone());
    }
    state
        .record_serial(m.settings.channel.as_str(), fetched.manifest.serial)
        .expect("verify_manifest checked the serial");
    if !fetched.not_modified {
        atomic_write(&state_dir.join("manifest.json"), &fetched.bytes, 0o644)?;
        state.manifest_etag.clone_from(&fetched.etag);
    }
    Ok(())
}
