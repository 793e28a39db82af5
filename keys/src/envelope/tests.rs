//! Tests of `envelope`.

use super::*;

const TYPE: &str = "application/vnd.upd.test+json";
const PAYLOAD: &[u8] = br#"{"serial":7}"#;

fn keys(n: usize) -> Vec<SigningKey> {
    (0..n).map(|_| SigningKey::generate().unwrap().0).collect()
}

fn trust(keys: &[SigningKey]) -> (BTreeMap<KeyId, PublicKey>, Vec<KeyId>) {
    let map = keys
        .iter()
        .map(|k| (k.key_id().clone(), k.public()))
        .collect();
    (map, keys.iter().map(|k| k.key_id().clone()).collect())
}

/// Serialise and re-parse, as a verifier on another machine would see it.
fn wire(env: &Envelope) -> Envelope {
    Envelope::parse(&env.to_json_bytes(), 1 << 20).unwrap()
}

#[test]
fn pae_matches_the_dsse_spec_example() {
    // The DSSE spec's worked example of the pre-authentication encoding.
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
    );
}

#[test]
fn sign_verify_roundtrip_returns_exact_payload() {
    // One key, threshold 1, through JSON and back.
    let ks = keys(1);
    let (map, ids) = trust(&ks);
    let env = wire(&Envelope::sign(TYPE, PAYLOAD, &[&ks[0]]));
    assert_eq!(env.verify(TYPE, &map, &ids, 1).unwrap(), PAYLOAD);
    let json: serde_json::Value = serde_json::from_slice(&env.to_json_bytes()).unwrap();
    assert_eq!(json["payloadType"], TYPE);
    assert_eq!(json["signatures"][0]["keyid"], ks[0].key_id().as_str());
}

#[test]
fn every_flipped_payload_byte_is_rejected() {
    // Tamper with each byte of the payload in turn; none may verify.
    let ks = keys(1);
    let (map, ids) = trust(&ks);
    let env = Envelope::sign(TYPE, PAYLOAD, &[&ks[0]]);
    for i in 0..PAYLOAD.len() {
        let mut bad = env.clone();
        bad.payload[i] ^= 0x01;
        let err = bad.verify(TYPE, &map, &ids, 1).unwrap_err();
        assert!(
            matches!(err, KeyError::ThresholdNotMet { valid: 0, .. }),
            "byte {i}: {err}"
        );
    }
}

#[test]
fn flipped_signature_byte_is_rejected_and_named() {
    // A corrupted signature from a trusted key is reported as invalid, not unknown.
    let ks = keys(1);
    let (map, ids) = trust(&ks);
    let mut env = Envelope::sign(TYPE, PAYLOAD, &[&ks[0]]);
    let mut sig = decode_b64(&env.signatures[0].sig).unwrap();
    sig[10] ^= 0x80;
    env.signatures[0].sig = STANDARD.encode(sig);
    let err = wire(&env)
        .verify(TYPE, &map, &ids, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid signature(s) from key id(s)"), "{err}");
    assert!(err.contains(ks[0].key_id().as_str()), "{err}");
}

#[test]
fn wrong_and_unknown_keys_are_named_in_the_error() {
    // Signed by a key that is not trusted: zero valid, and the error names that key id.
    let ks = keys(2);
    let (map, ids) = trust(&ks[..1]);
    let env = Envelope::sign(TYPE, PAYLOAD, &[&ks[1]]);
    let err = env.verify(TYPE, &map, &ids, 1).unwrap_err().to_string();
    assert!(err.contains("0 valid signature(s)"), "{err}");
    assert!(
        err.contains(&format!("unknown key id(s): {}", ks[1].key_id())),
        "{err}"
    );
}

#[test]
fn known_key_outside_the_allowed_role_does_not_count() {
    // The key is in the map but not allowed for this role (e.g. a root key on a manifest).
    let ks = keys(2);
    let (map, _) = trust(&ks);
    let env = Envelope::sign(TYPE, PAYLOAD, &[&ks[1]]);
    let allowed = [ks[0].key_id().clone()];
    assert!(env.verify(TYPE, &map, &allowed, 1).is_err());
}

#[test]
fn thresholds_table() {
    // Distinct trusted signers against threshold 2; duplicates of one key count once.
    let ks = keys(3);
    let (map, ids) = trust(&ks[..2]);
    let cases: [(&str, Vec<&SigningKey>, bool); 5] = [
        ("one of two", vec![&ks[0]], false),
        ("both", vec![&ks[0], &ks[1]], true),
        ("one key twice", vec![&ks[0], &ks[0]], false),
        ("one trusted plus unknown", vec![&ks[0], &ks[2]], false),
        ("both plus unknown", vec![&ks[2], &ks[1], &ks[0]], true),
    ];
    for (name, signers, ok) in cases {
        let result = wire(&Envelope::sign(TYPE, PAYLOAD, &signers)).verify(TYPE, &map, &ids, 2);
        assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
        if let Err(e) = result {
            assert!(
                e.to_string()
                    .contains("1 valid signature(s) from trusted allowed keys, 2 required"),
                "{name}: {e}"
            );
        }
    }
}

#[test]
fn add_signature_cosigns() {
    // A second signer added later lifts the envelope over threshold 2.
    let ks = keys(2);
    let (map, ids) = trust(&ks);
    let mut env = Envelope::sign(TYPE, PAYLOAD, &[&ks[0]]);
    assert!(env.verify(TYPE, &map, &ids, 2).is_err());
    env.add_signature(&ks[1]);
    assert_eq!(wire(&env).verify(TYPE, &map, &ids, 2).unwrap(), PAYLOAD);
}

#[test]
fn signature_without_keyid_is_matched_against_trusted_keys() {
    // DSSE makes keyid optional: such a signature still counts for the key that made it.
    let ks = keys(1);
    let (map, ids) = trust(&ks);
    let mut env = Envelope::sign(TYPE, PAYLOAD, &[&ks[0]]);
    env.signatures[0].keyid.clear();
    assert_eq!(wire(&env).verify(TYPE, &map, &ids, 1).unwrap(), PAYLOAD);
}

#[test]
fn wrong_payload_type_is_refused() {
    // A validly signed root must not pass as a manifest (or the reverse).
    let ks = keys(1);
    let (map, ids) = trust(&ks);
    let env = Envelope::sign("application/other", PAYLOAD, &[&ks[0]]);
    let err = env.verify(TYPE, &map, &ids, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("payload type application/other, expected {TYPE}")
    );
}

#[test]
fn zero_threshold_and_unsigned_are_refused() {
    // Threshold 0 would accept anything; an unsigned envelope says so.
    let ks = keys(1);
    let (map, ids) = trust(&ks);
    let signed = Envelope::sign(TYPE, PAYLOAD, &[&ks[0]]);
    assert!(matches!(
        signed.verify(TYPE, &map, &ids, 0),
        Err(KeyError::ZeroThreshold)
    ));
    let unsigned = Envelope::sign(TYPE, PAYLOAD, &[]);
    let err = unsigned
        .verify(TYPE, &map, &ids, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no signatures"), "{err}");
}

#[test]
fn oversized_envelope_is_refused_before_parsing() {
    // Not even JSON: the size check must come first.
    let bytes = vec![b'x'; 5000];
    let err = Envelope::parse(&bytes, 4096).unwrap_err();
    assert_eq!(err.to_string(), "envelope is 5000 bytes, limit 4096");
}

#[test]
fn malformed_envelopes_are_refused() {
    // Broken JSON and broken base64 are errors, not panics.
    for text in [
        "{",
        r#"{"payloadType":"t","payload":"***","signatures":[]}"#,
        r#"{"payloadType":"t"}"#,
    ] {
        assert!(Envelope::parse(text.as_bytes(), 1024).is_err(), "{text}");
    }
}

#[test]
fn url_safe_unpadded_payload_is_accepted() {
    // DSSE readers accept either base64 alphabet, padded or not.
    let ks = keys(1);
    let (map, ids) = trust(&ks);
    let payload = [0xfb_u8, 0xff, 0xfe, 0x01];
    let env = Envelope::sign(TYPE, &payload, &[&ks[0]]);
    let mut json: serde_json::Value = serde_json::from_slice(&env.to_json_bytes()).unwrap();
    json["payload"] = "-__-AQ".into();
    let parsed = Envelope::parse(&serde_json::to_vec(&json).unwrap(), 1024).unwrap();
    assert_eq!(parsed.verify(TYPE, &map, &ids, 1).unwrap(), payload);
}
