//! DSSE envelopes, root documents and manifests: parse, round-trip, and never a forged verdict.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use upd_channels::manifest::Manifest;
use upd_channels::name::Name;
use upd_channels::verify::{verify_manifest, Expect};
use upd_keys::{Envelope, KeyError, RootDocument, SigningKey, TrustedRoot};

/// A channel key made for this process and a root (signed by a root key made likewise) that
/// trusts it: nothing the fuzzer writes can carry their signatures.
fn trust() -> &'static (SigningKey, TrustedRoot) {
    static TRUST: OnceLock<(SigningKey, TrustedRoot)> = OnceLock::new();
    TRUST.get_or_init(|| {
        let (root_key, _) = SigningKey::generate().expect("key");
        let (channel, _) = SigningKey::generate().expect("key");
        let expires = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap();
        let doc = RootDocument::new(1, expires, &[root_key.public()], 1, &[channel.public()], 1)
            .expect("root");
        let bytes = upd_keys::sign_root(&doc, &[&root_key])
            .expect("sign")
            .to_json_bytes();
        let root = TrustedRoot::from_shipped(&bytes, expires).expect("root");
        (channel, root)
    })
}

/// An envelope: what parses writes back and parses the same; no signature in it verifies for a
/// key made in this process.
pub fn envelope(data: &[u8]) {
    let Ok(env) = Envelope::parse(data, 1 << 20) else {
        return;
    };
    let again = Envelope::parse(&env.to_json_bytes(), 1 << 20).expect("written envelope parses");
    assert_eq!(again, env);
    let (key, _) = trust();
    let keys = BTreeMap::from([(key.key_id().clone(), key.public())]);
    let err = env
        .verify(env.payload_type(), &keys, &[key.key_id().clone()], 1)
        .expect_err("a fuzzed envelope never carries this process's signature");
    assert!(matches!(err, KeyError::ThresholdNotMet { .. }), "{err}");
}

/// A root envelope: if the shipped-root check passes, its document is valid and re-parses from
/// the payload; it never rotates onto itself; a root document alone round-trips.
pub fn root(data: &[u8]) {
    if let Ok(doc) = RootDocument::from_json(data) {
        assert_eq!(
            RootDocument::from_json(&doc.to_json_bytes()).expect("round trip"),
            doc
        );
    }
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let Ok(root) = TrustedRoot::from_shipped(data, now) else {
        return;
    };
    root.document().validate().expect("a trusted root is valid");
    assert!(
        root.rotate(data, now).is_err(),
        "a root rotated onto itself"
    );
    assert_eq!(root.envelope_bytes(), data);
}

/// A manifest payload: what parses writes back and parses the same, every path stays inside its
/// base; signed by the trusted channel key it verifies exactly when its expiry, channel and
/// serial say so, and gives the same manifest; the same bytes unsigned never verify.
pub fn manifest(data: &[u8]) {
    let (key, root) = trust();
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let stable = Name::new("stable").expect("name");
    let expect = Expect {
        channel: &stable,
        highest_serial: Some(3),
        now,
    };
    assert!(
        verify_manifest(data, root, expect).is_err(),
        "unsigned bytes verified"
    );
    let Ok(m) = Manifest::from_bytes(data) else {
        return;
    };
    let again = Manifest::from_bytes(&m.to_bytes()).expect("written manifest parses");
    assert_eq!(again, m);
    let base = std::path::Path::new("/store");
    for r in &m.releases {
        assert!(r.os.image.path.under(base).starts_with(base));
        for e in &r.extensions {
            let p = e.image.path.under(base);
            assert!(p.starts_with(base) && !p.components().any(|c| c.as_os_str() == ".."));
        }
    }
    let signed =
        Envelope::sign(upd_channels::manifest::MANIFEST_PAYLOAD_TYPE, data, &[key]).to_json_bytes();
    let verdict = verify_manifest(&signed, root, expect);
    let should = m.expires > now && m.channel == stable && m.serial >= 3;
    match verdict {
        Ok(v) => assert!(should && v == m),
        Err(e) => assert!(!should, "refused a good manifest: {e}"),
    }
}
