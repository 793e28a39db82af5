//! The one error type of upd-keys: each variant reads as a sentence an operator can act on.

use std::io;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

/// Everything that can go wrong with keys, envelopes and roots of trust.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A new key file could not be written.
    #[error("cannot write key file {path}: {source}")]
    WriteKey {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// `write_new_key` refuses to replace an existing key.
    #[error("key file {path} already exists; refusing to overwrite a key")]
    KeyExists {
        /// The existing key file.
        path: PathBuf,
    },
    /// Bytes that should hold an Ed25519 PKCS#8 private key do not.
    #[error("{source_name} is not an Ed25519 PKCS#8 private key ({reason})")]
    InvalidPkcs8 {
        /// Where the bytes came from (a path, or "in-memory key").
        source_name: String,
        /// What ring said.
        reason: String,
    },
    /// The system random source failed while generating a key.
    #[error("cannot generate an Ed25519 key: the system random source failed")]
    Generate,
    /// A key id is not 64 lowercase hex characters.
    #[error("invalid key id {value:?}: expected 64 lowercase hex characters (SHA-256 of the public key)")]
    InvalidKeyId {
        /// The rejected text.
        value: String,
    },
    /// A public key document is malformed.
    #[error("invalid public key: {reason}")]
    InvalidPublicKey {
        /// What is wrong with it.
        reason: String,
    },
    /// An envelope is larger than the caller allows; refused before parsing.
    #[error("envelope is {len} bytes, limit {limit}")]
    EnvelopeTooLarge {
        /// Size of the envelope.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An envelope is not DSSE JSON.
    #[error("envelope is not valid DSSE JSON: {0}")]
    EnvelopeJson(#[source] serde_json::Error),
    /// The envelope payload is not base64.
    #[error("envelope payload is not valid base64: {0}")]
    PayloadBase64(#[source] base64::DecodeError),
    /// The envelope carries another kind of document than expected.
    #[error("payload type {actual}, expected {expected}")]
    PayloadType {
        /// Payload type found in the envelope.
        actual: String,
        /// Payload type the caller expects.
        expected: String,
    },
    /// A threshold of zero would accept unsigned data.
    #[error("threshold 0 is invalid: at least one signature must be required")]
    ZeroThreshold,
    /// Too few distinct trusted keys signed.
    #[error("{what} has {valid} valid signature(s) from trusted {role} keys, {threshold} required{notes}")]
    ThresholdNotMet {
        /// What was verified ("envelope", "root version 2", ...).
        what: String,
        /// Which keys were trusted ("channel", "version 1 root", ...).
        role: String,
        /// Distinct trusted keys with a valid signature.
        valid: usize,
        /// Required number of distinct keys.
        threshold: u32,
        /// Unknown key ids and bad signatures, already formatted ("; unknown key id(s): ...").
        notes: String,
    },
    /// A root role names a key id that the root's `keys` does not hold.
    #[error("root version {version}: role {role} names unknown key id {keyid}")]
    UnknownKeyId {
        /// Root version.
        version: u64,
        /// Role name.
        role: &'static str,
        /// The unknown key id.
        keyid: String,
    },
    /// A role lists the same key twice, which would let one key count twice.
    #[error("root version {version}: role {role} lists key id {keyid} more than once")]
    DuplicateRoleKey {
        /// Root version.
        version: u64,
        /// Role name.
        role: &'static str,
        /// The repeated key id.
        keyid: String,
    },
    /// A `keys` entry is filed under an id that is not the hash of its key.
    #[error("root version {version}: key listed as {listed} has key id {actual}")]
    KeyIdMismatch {
        /// Root version.
        version: u64,
        /// The id the document uses.
        listed: String,
        /// The id computed from the public key.
        actual: String,
    },
    /// A role threshold cannot be met or is zero.
    #[error("root version {version}: role {role} threshold {threshold} must be between 1 and its {count} key(s)")]
    RoleThreshold {
        /// Root version.
        version: u64,
        /// Role name.
        role: &'static str,
        /// The threshold.
        threshold: u32,
        /// Number of key ids in the role.
        count: usize,
    },
    /// The root document is not JSON of the expected shape.
    #[error("root document is not valid JSON: {0}")]
    RootJson(#[source] serde_json::Error),
    /// The root document has the wrong `type`.
    #[error("root document type {actual:?}, expected \"upd-root\"")]
    RootType {
        /// The `type` found.
        actual: String,
    },
    /// Root versions start at 1.
    #[error("root version 0 is invalid: versions start at 1")]
    RootVersionZero,
    /// A rotation skipped or repeated a version.
    #[error("root version {next} does not follow {current}")]
    RootVersion {
        /// Version of the trusted root.
        current: u64,
        /// Version of the offered root.
        next: u64,
    },
    /// The trusted root has expired (freeze attack or a publisher who forgot to re-sign).
    #[error("root version {version} expired at {expires} (now {now}); if this machine's clock is wrong, set it: expiry is never bypassed")]
    RootExpired {
        /// Root version.
        version: u64,
        /// Its expiry.
        expires: DateTime<Utc>,
        /// The time it was checked against.
        now: DateTime<Utc>,
    },
}

/// Result alias of this crate.
pub type Result<T, E = KeyError> = std::result::Result<T, E>;
