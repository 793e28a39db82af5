//! upd-keys: Ed25519 keys, DSSE signed envelopes, signature thresholds and rotating roots of trust.
