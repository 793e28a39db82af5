//! upd-keys: Ed25519 keys, DSSE signed envelopes, signature thresholds and rotating roots of trust.
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use upd_keys::{sign_root, Envelope, RootDocument, SigningKey, TrustedRoot};
//!
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
//! let (root_key, _pkcs8) = SigningKey::generate()?;
//! let (channel_key, _) = SigningKey::generate()?;
//! let doc = RootDocument::new(1, now + Duration::days(365),
//!     &[root_key.public()], 1, &[channel_key.public()], 1)?;
//! let shipped = sign_root(&doc, &[&root_key])?.to_json_bytes();
//!
//! let root = TrustedRoot::from_shipped(&shipped, now)?;
//! let manifest = Envelope::sign("application/vnd.upd.manifest+json", b"{}", &[&channel_key]);
//! let parsed = Envelope::parse(&manifest.to_json_bytes(), 1 << 20)?;
//! let payload = root.verify_channel(&parsed, "application/vnd.upd.manifest+json", now)?;
//! assert_eq!(payload, b"{}");
//! # Ok::<(), upd_keys::KeyError>(())
//! ```

mod envelope;
mod error;
mod key;
mod root;
#[cfg(test)]
mod testutil;
mod trusted;

pub use envelope::{pae, Envelope, Signature};
pub use error::{KeyError, Result};
pub use key::{write_new_key, KeyId, PublicKey, SigningKey};
pub use root::{sign_root, Role, Roles, RootDocument, MAX_ROOT_LEN, ROOT_PAYLOAD_TYPE, ROOT_TYPE};
pub use trusted::TrustedRoot;
