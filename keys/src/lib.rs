//! upd-keys: Ed25519 keys, DSSE signed envelopes, signature thresholds and rotating roots of trust.

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
