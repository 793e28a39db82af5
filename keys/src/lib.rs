//! upd-keys: Ed25519 keys, DSSE signed envelopes, signature thresholds and rotating roots of trust.

mod envelope;
mod error;
mod key;

pub use envelope::{pae, Envelope, Signature};
pub use error::{KeyError, Result};
pub use key::{write_new_key, KeyId, PublicKey, SigningKey};
