//! A trusted root: the shipped root, rotation along a chain (TUF 5.3), expiry, channel checks.

use chrono::{DateTime, Utc};

use crate::envelope::{Envelope, Label};
use crate::error::{KeyError, Result};
use crate::root::{RootDocument, MAX_ROOT_LEN, ROOT_PAYLOAD_TYPE};

/// A root whose signatures were checked, kept with the exact envelope bytes it came from.
#[derive(Clone)]
pub struct TrustedRoot {
    doc: RootDocument,
    envelope: Vec<u8>,
}

impl std::fmt::Debug for TrustedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedRoot")
            .field("doc", &self.doc)
            .field("envelope_len", &self.envelope.len())
            .finish()
    }
}

/// Parses a root envelope and checks it against its own root role (TUF 5.3.4, second half).
fn open_self_signed(bytes: &[u8]) -> Result<(Envelope, RootDocument)> {
    let env = Envelope::parse(bytes, MAX_ROOT_LEN)?;
    if env.payload_type() != ROOT_PAYLOAD_TYPE {
        return Err(KeyError::PayloadType {
            actual: env.payload_type().to_owned(),
            expected: ROOT_PAYLOAD_TYPE.to_owned(),
        });
    }
    // The keys to check the document with come from the document itself; it is trusted only
    // once its own root threshold verified (and, on rotation, the previous root's too).
    let doc = RootDocument::from_json(env.unverified_payload())?;
    verify_by_root_role(&env, doc.version, &doc)?;
    Ok((env, doc))
}

/// Verifies `env`, the envelope of root version `version`, with the root role of `signer`.
fn verify_by_root_role(env: &Envelope, version: u64, signer: &RootDocument) -> Result<()> {
    let what = format!("root version {version}");
    let role = format!("version {} root", signer.version);
    let label = Label {
        what: &what,
        role: &role,
    };
    let root = &signer.roles.root;
    env.verify_labelled(
        ROOT_PAYLOAD_TYPE,
        &signer.keys,
        &root.keyids,
        root.threshold,
        &label,
    )?;
    Ok(())
}

impl TrustedRoot {
    /// Trusts the root shipped on the machine (TUF 5.3.1); it must carry its own root threshold.
    ///
    /// Expiry is deliberately not checked here, nor in [`TrustedRoot::rotate`]: a chain may
    /// lead from an expired shipped root to a fresh one, and only the final root must be
    /// unexpired (TUF 5.3.10). `now` is taken for symmetry with the rest of the API; use
    /// [`TrustedRoot::check_not_expired`], [`TrustedRoot::from_chain`] or
    /// [`TrustedRoot::verify_channel`], which do check it.
    pub fn from_shipped(bytes: &[u8], _now: DateTime<Utc>) -> Result<TrustedRoot> {
        let (_, doc) = open_self_signed(bytes)?;
        Ok(TrustedRoot {
            doc,
            envelope: bytes.to_vec(),
        })
    }

    /// Moves trust to the next root: it must be signed by this root's root threshold and its
    /// own, and be exactly one version newer. `self` is left as it was on any error.
    pub fn rotate(&self, next_envelope_bytes: &[u8], _now: DateTime<Utc>) -> Result<TrustedRoot> {
        // 5.3.4 (second half): the new root is signed by a threshold of its own root keys.
        let (env, next) = open_self_signed(next_envelope_bytes)?;
        // 5.3.4 (first half): ... and by a threshold of the trusted root's root keys.
        let current = &self.doc;
        verify_by_root_role(&env, next.version, current)?;
        // 5.3.5: the version is exactly one more (no skip, no replay of an old root).
        if next.version != current.version + 1 {
            return Err(KeyError::RootVersion {
                current: current.version,
                next: next.version,
            });
        }
        Ok(TrustedRoot {
            doc: next,
            envelope: next_envelope_bytes.to_vec(),
        })
    }

    /// Trusts `shipped`, rotates through `chain` in order, and checks the final root has not
    /// expired (intermediate roots may have).
    pub fn from_chain<B: AsRef<[u8]>>(
        shipped: &[u8],
        chain: &[B],
        now: DateTime<Utc>,
    ) -> Result<TrustedRoot> {
        let mut root = TrustedRoot::from_shipped(shipped, now)?;
        for next in chain {
            root = root.rotate(next.as_ref(), now)?;
        }
        root.check_not_expired(now)?;
        Ok(root)
    }

    /// Refuses a root whose expiry is not after `now` (TUF 5.3.10: freeze attack).
    pub fn check_not_expired(&self, now: DateTime<Utc>) -> Result<()> {
        if self.doc.expires <= now {
            return Err(KeyError::RootExpired {
                version: self.doc.version,
                expires: self.doc.expires,
                now,
            });
        }
        Ok(())
    }

    /// Verifies an envelope with the channel role's keys and threshold, on an unexpired root;
    /// returns the exact signed payload bytes.
    pub fn verify_channel(
        &self,
        envelope: &Envelope,
        payload_type: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<u8>> {
        self.check_not_expired(now)?;
        let channel = &self.doc.roles.channel;
        let what = format!("{payload_type} envelope");
        let label = Label {
            what: &what,
            role: "channel",
        };
        envelope.verify_labelled(
            payload_type,
            &self.doc.keys,
            &channel.keyids,
            channel.threshold,
            &label,
        )
    }

    /// The verified root document.
    pub fn document(&self) -> &RootDocument {
        &self.doc
    }

    /// The root's version.
    pub fn version(&self) -> u64 {
        self.doc.version
    }

    /// The root's expiry.
    pub fn expires(&self) -> DateTime<Utc> {
        self.doc.expires
    }

    /// The exact envelope bytes this root was verified from (to persist as the new trusted root).
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{doc, keys, now, signed, MANIFEST};
    use chrono::Duration;

    #[test]
    fn shipped_root_verifies_channel_envelopes() {
        // Root key signs the root; only the channel key may sign manifests.
        let ks = keys(2);
        let (root_key, channel_key) = (&ks[0], &ks[1]);
        let root = TrustedRoot::from_shipped(
            &signed(&doc(1, &[root_key], 1, &[channel_key], 1), &[root_key]),
            now(),
        )
        .unwrap();
        assert_eq!(root.version(), 1);
        let good = Envelope::sign(MANIFEST, b"m", &[channel_key]);
        assert_eq!(root.verify_channel(&good, MANIFEST, now()).unwrap(), b"m");
        let by_root_key = Envelope::sign(MANIFEST, b"m", &[root_key]);
        let err = root
            .verify_channel(&by_root_key, MANIFEST, now())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0 valid signature(s) from trusted channel keys, 1 required"),
            "{err}"
        );
        assert!(err.contains(root_key.key_id().as_str()), "{err}");
    }

    #[test]
    fn channel_threshold_two_needs_two_distinct_keys() {
        // One channel key signing twice is still one signature.
        let ks = keys(3);
        let root = TrustedRoot::from_shipped(
            &signed(&doc(1, &[&ks[0]], 1, &[&ks[1], &ks[2]], 2), &[&ks[0]]),
            now(),
        )
        .unwrap();
        let twice = Envelope::sign(MANIFEST, b"m", &[&ks[1], &ks[1]]);
        let err = root
            .verify_channel(&twice, MANIFEST, now())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{MANIFEST} envelope has 1 valid signature(s) from trusted channel keys, 2 required")), "{err}");
        let both = Envelope::sign(MANIFEST, b"m", &[&ks[2], &ks[1]]);
        assert!(root.verify_channel(&both, MANIFEST, now()).is_ok());
    }

    #[test]
    fn shipped_root_must_meet_its_own_threshold() {
        // A root needing 2 of its root keys but signed by 1 is not trusted even when shipped.
        let ks = keys(3);
        let bytes = signed(&doc(1, &[&ks[0], &ks[1]], 2, &[&ks[2]], 1), &[&ks[0]]);
        let err = TrustedRoot::from_shipped(&bytes, now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("root version 1 has 1 valid signature(s) from trusted version 1 root keys, 2 required"), "{err}");
    }

    #[test]
    fn rotation_chain_with_key_changes_verifies_step_by_step() {
        // v1 root key A; v2 root key B; v3 root keys C+D (2 of 2); channel key changes each time.
        let ks = keys(7);
        let (a, b, c, d) = (&ks[0], &ks[1], &ks[2], &ks[3]);
        let (ch1, ch2, ch3) = (&ks[4], &ks[5], &ks[6]);
        let v1 =
            TrustedRoot::from_shipped(&signed(&doc(1, &[a], 1, &[ch1], 1), &[a]), now()).unwrap();
        let v2 = v1
            .rotate(&signed(&doc(2, &[b], 1, &[ch2], 1), &[a, b]), now())
            .unwrap();
        let v3 = v2
            .rotate(&signed(&doc(3, &[c, d], 2, &[ch3], 1), &[b, c, d]), now())
            .unwrap();
        assert_eq!((v1.version(), v2.version(), v3.version()), (1, 2, 3));
        for (root, channel_key) in [(&v1, ch1), (&v2, ch2), (&v3, ch3)] {
            for other in [ch1, ch2, ch3] {
                let env = Envelope::sign(MANIFEST, b"m", &[other]);
                let ok = root.verify_channel(&env, MANIFEST, now()).is_ok();
                assert_eq!(
                    ok,
                    other.key_id() == channel_key.key_id(),
                    "root v{}",
                    root.version()
                );
            }
        }
        // The persisted envelope bytes replay as the same chain.
        let chain = [v2.envelope_bytes(), v3.envelope_bytes()];
        let replayed = TrustedRoot::from_chain(v1.envelope_bytes(), &chain, now()).unwrap();
        assert_eq!(replayed.document(), v3.document());
    }

    #[test]
    fn rotation_refusals_table() {
        // Offered next roots that must not be accepted; the trusted root stays as it was.
        let ks = keys(4);
        let (old, new, ch, stranger) = (&ks[0], &ks[1], &ks[2], &ks[3]);
        let v1 = TrustedRoot::from_shipped(&signed(&doc(1, &[old], 1, &[ch], 1), &[old]), now())
            .unwrap();
        let next = |version| doc(version, &[new], 1, &[ch], 1);
        let manifest =
            Envelope::sign(MANIFEST, &next(2).to_json_bytes(), &[old, new]).to_json_bytes();
        let cases: [(&str, Vec<u8>, &str); 7] = [
            (
                "only new keys",
                signed(&next(2), &[new]),
                "from trusted version 1 root keys, 1 required",
            ),
            (
                "only old keys",
                signed(&next(2), &[old]),
                "from trusted version 2 root keys, 1 required",
            ),
            (
                "stranger",
                signed(&next(2), &[stranger, new]),
                "from trusted version 1 root keys",
            ),
            (
                "version skipped",
                signed(&next(3), &[old, new]),
                "root version 3 does not follow 1",
            ),
            (
                "version repeated",
                signed(&next(1), &[old, new]),
                "root version 1 does not follow 1",
            ),
            (
                "not a root",
                manifest,
                "payload type application/vnd.upd.manifest+json",
            ),
            ("garbage", b"{not json".to_vec(), "not valid DSSE JSON"),
        ];
        for (name, bytes, expect) in cases {
            let err = v1.rotate(&bytes, now()).unwrap_err().to_string();
            assert!(err.contains(expect), "{name}: {err}");
            assert_eq!(v1.version(), 1, "{name}");
        }
        let v2 = v1.rotate(&signed(&next(2), &[old, new]), now()).unwrap();
        assert_eq!(v2.version(), 2);
    }

    #[test]
    fn expired_root_is_refused_for_channel_envelopes() {
        // A root past its expiry must not vouch for a manifest, however well signed.
        let ks = keys(2);
        let root = TrustedRoot::from_shipped(
            &signed(&doc(1, &[&ks[0]], 1, &[&ks[1]], 1), &[&ks[0]]),
            now(),
        )
        .unwrap();
        let env = Envelope::sign(MANIFEST, b"m", &[&ks[1]]);
        let later = root.expires() + Duration::seconds(1);
        let err = root.verify_channel(&env, MANIFEST, later).unwrap_err();
        assert!(
            matches!(err, KeyError::RootExpired { version: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("root version 1 expired at 2027-06-01"),
            "{err}"
        );
        // Expiry is exclusive: at the very instant it is already expired.
        assert!(root.check_not_expired(root.expires()).is_err());
        assert!(root
            .check_not_expired(root.expires() - Duration::seconds(1))
            .is_ok());
    }

    #[test]
    fn chain_through_an_expired_intermediate_root_is_accepted() {
        // Like TUF: v1 (shipped) and v2 expired long ago, v3 is fresh; only v3 must be valid.
        let ks = keys(2);
        let (r, ch) = (&ks[0], &ks[1]);
        let stale = |version| {
            let mut d = doc(version, &[r], 1, &[ch], 1);
            d.expires = now() - Duration::days(30);
            signed(&d, &[r])
        };
        let (v1, v2) = (stale(1), stale(2));
        let v3 = signed(&doc(3, &[r], 1, &[ch], 1), &[r]);
        let root = TrustedRoot::from_chain(&v1, &[&v2, &v3], now()).unwrap();
        assert_eq!(root.version(), 3);
        let env = Envelope::sign(MANIFEST, b"m", &[ch]);
        assert!(root.verify_channel(&env, MANIFEST, now()).is_ok());
        // A chain that ends on an expired root is refused.
        let err = TrustedRoot::from_chain(&v1, &[&v2], now()).unwrap_err();
        assert!(
            matches!(err, KeyError::RootExpired { version: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn oversized_root_envelope_is_refused() {
        // A shipped or offered root larger than MAX_ROOT_LEN is not parsed at all.
        let big = vec![b' '; MAX_ROOT_LEN + 1];
        let err = TrustedRoot::from_shipped(&big, now()).unwrap_err();
        assert!(matches!(err, KeyError::EnvelopeTooLarge { .. }), "{err}");
    }
}
