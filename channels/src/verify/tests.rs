//! Each refusal of the verification pipeline, on real signatures made at test time.

use super::*;
use chrono::Duration;
use upd_keys::{sign_root, RootDocument, SigningKey};

struct World {
    root_key: SigningKey,
    chan: Vec<SigningKey>,
    now: DateTime<Utc>,
}

fn key() -> SigningKey {
    SigningKey::generate().unwrap().0
}

impl World {
    fn new(channel_keys: usize) -> Self {
        let now = "2026-11-25T12:00:00Z".parse().unwrap();
        Self {
            root_key: key(),
            chan: (0..channel_keys).map(|_| key()).collect(),
            now,
        }
    }

    fn root(&self, threshold: u32, expires: DateTime<Utc>) -> TrustedRoot {
        let pubs: Vec<_> = self.chan.iter().map(SigningKey::public).collect();
        let doc =
            RootDocument::new(1, expires, &[self.root_key.public()], 1, &pubs, threshold).unwrap();
        let env = sign_root(&doc, &[&self.root_key]).unwrap();
        TrustedRoot::from_shipped(&env.to_json_bytes(), self.now).unwrap()
    }

    fn manifest(&self, channel: &str, serial: u64) -> Manifest {
        let mut m = Manifest::new(Name::new(channel).unwrap(), self.now - Duration::hours(1));
        m.serial = serial;
        m.expires = self.now + Duration::days(7);
        m
    }

    fn expect<'a>(&self, channel: &'a Name, highest: Option<u64>) -> Expect<'a> {
        Expect {
            channel,
            highest_serial: highest,
            now: self.now,
        }
    }
}

#[test]
fn accepts_a_good_manifest() {
    let w = World::new(1);
    let stable = Name::new("stable").unwrap();
    let bytes = sign_manifest(&w.manifest("stable", 5), &[&w.chan[0]]);
    let m = verify_manifest(
        &bytes,
        &w.root(1, w.now + Duration::days(30)),
        w.expect(&stable, Some(5)),
    )
    .unwrap();
    assert_eq!(m.serial, 5);
}

#[test]
fn every_flipped_byte_is_refused() {
    let w = World::new(1);
    let stable = Name::new("stable").unwrap();
    let root = w.root(1, w.now + Duration::days(30));
    let m = w.manifest("stable", 1);
    let good = Envelope::sign(MANIFEST_PAYLOAD_TYPE, &m.to_bytes(), &[&w.chan[0]]);
    let payload = m.to_bytes();
    // Every byte of the signed payload, re-wrapped with the original signature.
    for i in 0..payload.len() {
        let mut p = payload.clone();
        p[i] ^= 0x01;
        let mut json: serde_json::Value = serde_json::from_slice(&good.to_json_bytes()).unwrap();
        use base64::Engine;
        json["payload"] = base64::engine::general_purpose::STANDARD.encode(&p).into();
        let bytes = serde_json::to_vec(&json).unwrap();
        let err = verify_manifest(&bytes, &root, w.expect(&stable, None)).unwrap_err();
        assert!(
            matches!(err, ManifestError::Signature(_)),
            "payload byte {i}: {err}"
        );
    }
    // Every byte of the envelope as served: refused, or (a flip in the unsigned key-id hint)
    // the very same manifest; never a different one.
    let env = good.to_json_bytes();
    let mut refused = 0;
    for i in 0..env.len() {
        let mut e = env.clone();
        e[i] ^= 0x01;
        match verify_manifest(&e, &root, w.expect(&stable, None)) {
            Err(_) => refused += 1,
            Ok(got) => assert_eq!(got, m, "envelope byte {i} changed an accepted manifest"),
        }
    }
    assert!(
        refused > env.len() * 9 / 10,
        "only {refused} of {} flips refused",
        env.len()
    );
}

#[test]
fn wrong_key_and_too_few_signatures() {
    let w = World::new(2);
    let stable = Name::new("stable").unwrap();
    let m = w.manifest("stable", 1);
    let stranger = key();
    let root1 = w.root(1, w.now + Duration::days(30));
    let err = verify_manifest(
        &sign_manifest(&m, &[&stranger]),
        &root1,
        w.expect(&stable, None),
    )
    .unwrap_err();
    assert!(matches!(err, ManifestError::Signature(_)), "{err}");
    assert!(
        err.to_string().contains(stranger.key_id().as_str()),
        "names the unknown key: {err}"
    );

    let root2 = w.root(2, w.now + Duration::days(30));
    let one = sign_manifest(&m, &[&w.chan[0]]);
    let err = verify_manifest(&one, &root2, w.expect(&stable, None)).unwrap_err();
    assert!(err.to_string().contains('2'), "{err}");
    let same_twice = sign_manifest(&m, &[&w.chan[0], &w.chan[0]]);
    assert!(verify_manifest(&same_twice, &root2, w.expect(&stable, None)).is_err());
    let both = sign_manifest(&m, &[&w.chan[0], &w.chan[1]]);
    assert!(verify_manifest(&both, &root2, w.expect(&stable, None)).is_ok());
}

#[test]
fn expired_root_and_expired_manifest() {
    let w = World::new(1);
    let stable = Name::new("stable").unwrap();
    let bytes = sign_manifest(&w.manifest("stable", 1), &[&w.chan[0]]);
    let old_root = w.root(1, w.now - Duration::seconds(1));
    let err = verify_manifest(&bytes, &old_root, w.expect(&stable, None)).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");

    let mut m = w.manifest("stable", 1);
    m.expires = w.now - Duration::minutes(1);
    m.issued = w.now - Duration::days(1);
    let bytes = sign_manifest(&m, &[&w.chan[0]]);
    let err = verify_manifest(
        &bytes,
        &w.root(1, w.now + Duration::days(1)),
        w.expect(&stable, None),
    )
    .unwrap_err();
    assert!(matches!(err, ManifestError::Expired { .. }), "{err}");
}

#[test]
fn rollback_and_mix_and_match() {
    let w = World::new(1);
    let stable = Name::new("stable").unwrap();
    let root = w.root(1, w.now + Duration::days(30));
    let old = sign_manifest(&w.manifest("stable", 4), &[&w.chan[0]]);
    let err = verify_manifest(&old, &root, w.expect(&stable, Some(5))).unwrap_err();
    assert!(
        matches!(
            err,
            ManifestError::Rollback {
                serial: 4,
                highest: 5,
                ..
            }
        ),
        "{err}"
    );

    let beta = sign_manifest(&w.manifest("beta", 9), &[&w.chan[0]]);
    let err = verify_manifest(&beta, &root, w.expect(&stable, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest is for channel 'beta', but this machine follows 'stable'"
    );
}

#[test]
fn oversized_envelope_refused_before_parsing() {
    let w = World::new(1);
    let stable = Name::new("stable").unwrap();
    let big = vec![b'{'; MAX_MANIFEST_BYTES * 2 + 1];
    let err = verify_manifest(
        &big,
        &w.root(1, w.now + Duration::days(1)),
        w.expect(&stable, None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("limit"), "{err}");
}
