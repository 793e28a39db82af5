//! The manifest verification pipeline: envelope → root → channel-key threshold → schema →
//! expiry → channel name → serial.

use chrono::{DateTime, Utc};
use upd_keys::{Envelope, KeyError, TrustedRoot};

use crate::manifest::{Manifest, SchemaError, MANIFEST_PAYLOAD_TYPE, MAX_MANIFEST_BYTES};
use crate::name::Name;

/// Why a manifest was refused; each variant reads as a sentence for an operator.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Signature, key, threshold, root expiry or envelope problem.
    #[error("signature check failed: {0}")]
    Signature(#[from] KeyError),
    /// The signed payload is not a valid manifest.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The manifest's own expiry passed (freeze attack, or a publisher that stopped signing).
    #[error("manifest for channel '{channel}' expired at {expires} (now {now}); refusing a frozen channel (if this machine's clock is wrong, set it: expiry is never bypassed)")]
    Expired {
        /// Channel name.
        channel: Name,
        /// Its expiry.
        expires: DateTime<Utc>,
        /// The time of the check.
        now: DateTime<Utc>,
    },
    /// A validly signed manifest of another channel (mix-and-match attack).
    #[error("manifest is for channel '{found}', but this machine follows '{expected}'")]
    WrongChannel {
        /// The channel configured.
        expected: Name,
        /// The channel the manifest names.
        found: Name,
    },
    /// An older serial than one already seen (rollback / replay attack).
    #[error("manifest serial {serial} is lower than {highest}, already seen for channel '{channel}': refusing a rollback")]
    Rollback {
        /// Channel name.
        channel: Name,
        /// The serial offered.
        serial: u64,
        /// The highest serial seen before.
        highest: u64,
    },
}

/// What a manifest is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The channel this machine follows.
    pub channel: &'a Name,
    /// The highest serial seen so far for that channel, if any.
    pub highest_serial: Option<u64>,
    /// The time of the check.
    pub now: DateTime<Utc>,
}

/// Verify a signed manifest envelope and return the manifest parsed from the exact signed bytes.
pub fn verify_manifest(
    envelope_bytes: &[u8],
    root: &TrustedRoot,
    expect: Expect<'_>,
) -> Result<Manifest, ManifestError> {
    // 1. Cap the size before parsing anything (endless data).
    let envelope = Envelope::parse(envelope_bytes, MAX_MANIFEST_BYTES * 2)?;
    // 2–3. Root not expired, a threshold of distinct channel keys signed these exact bytes.
    let payload = root.verify_channel(&envelope, MANIFEST_PAYLOAD_TYPE, expect.now)?;
    // 4. Parse and validate only the verified bytes.
    let manifest = Manifest::from_bytes(&payload)?;
    // 5. Expiry (freeze).
    if manifest.expires <= expect.now {
        return Err(ManifestError::Expired {
            channel: manifest.channel.clone(),
            expires: manifest.expires,
            now: expect.now,
        });
    }
    // 6. Channel name (mix-and-match).
    if &manifest.channel != expect.channel {
        return Err(ManifestError::WrongChannel {
            expected: expect.channel.clone(),
            found: manifest.channel.clone(),
        });
    }
    // 7. Serial never goes down (rollback).
    if let Some(highest) = expect.highest_serial {
        if manifest.serial < highest {
            return Err(ManifestError::Rollback {
                channel: manifest.channel.clone(),
                serial: manifest.serial,
                highest,
            });
        }
    }
    Ok(manifest)
}

/// Sign a manifest with the given channel keys into envelope bytes (for publishers and tests).
pub fn sign_manifest(manifest: &Manifest, keys: &[&upd_keys::SigningKey]) -> Vec<u8> {
    Envelope::sign(MANIFEST_PAYLOAD_TYPE, &manifest.to_bytes(), keys).to_json_bytes()
}

#[cfg(test)]
mod tests;
