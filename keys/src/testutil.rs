//! Test fixtures shared by the unit tests: fresh keys, a fixed clock, signed roots.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::{sign_root, PublicKey, RootDocument, SigningKey};

/// Payload type used for channel envelopes in tests.
pub const MANIFEST: &str = "application/vnd.upd.manifest+json";

/// The fixed "now" of the tests.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap()
}

/// `n` freshly generated keys.
pub fn keys(n: usize) -> Vec<SigningKey> {
    (0..n).map(|_| SigningKey::generate().unwrap().0).collect()
}

/// A root document expiring a year after `now()`.
pub fn doc(
    version: u64,
    root: &[&SigningKey],
    root_t: u32,
    channel: &[&SigningKey],
    channel_t: u32,
) -> RootDocument {
    let publics = |ks: &[&SigningKey]| ks.iter().map(|k| k.public()).collect::<Vec<PublicKey>>();
    let expires = now() + Duration::days(365);
    RootDocument::new(
        version,
        expires,
        &publics(root),
        root_t,
        &publics(channel),
        channel_t,
    )
    .unwrap()
}

/// The root envelope bytes of `doc` signed by `signers`.
pub fn signed(doc: &RootDocument, signers: &[&SigningKey]) -> Vec<u8> {
    sign_root(doc, signers).unwrap().to_json_bytes()
}
