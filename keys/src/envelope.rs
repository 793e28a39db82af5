//! DSSE envelopes: Ed25519 signatures over PAE(type, payload), verified against a key threshold.

use std::collections::{BTreeMap, BTreeSet};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{KeyError, Result};
use crate::key::{KeyId, PublicKey, SigningKey};

/// DSSE allows standard or URL-safe base64, padded or not; we write standard padded.
const DECODE_CONFIG: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const DECODE_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, DECODE_CONFIG);
const DECODE_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, DECODE_CONFIG);

fn decode_b64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    DECODE_STANDARD
        .decode(text)
        .or_else(|_| DECODE_URL_SAFE.decode(text))
}

/// DSSE pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload_type.len() + payload.len() + 32);
    out.extend_from_slice(
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

/// One DSSE signature as it appears on the wire (untrusted until verified).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Key id the signer claims; DSSE makes it optional, so it may be empty.
    #[serde(default)]
    pub keyid: String,
    /// Base64 Ed25519 signature over the PAE.
    pub sig: String,
}

/// A DSSE envelope: a typed payload and its signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EnvelopeJson", into = "EnvelopeJson")]
pub struct Envelope {
    payload_type: String,
    payload: Vec<u8>,
    signatures: Vec<Signature>,
}

/// The wire form of [`Envelope`] (payload still base64).
#[derive(Serialize, Deserialize)]
struct EnvelopeJson {
    #[serde(rename = "payloadType")]
    payload_type: String,
    payload: String,
    signatures: Vec<Signature>,
}

impl TryFrom<EnvelopeJson> for Envelope {
    type Error = KeyError;

    fn try_from(json: EnvelopeJson) -> Result<Self> {
        Ok(Envelope {
            payload: decode_b64(&json.payload).map_err(KeyError::PayloadBase64)?,
            payload_type: json.payload_type,
            signatures: json.signatures,
        })
    }
}

impl From<Envelope> for EnvelopeJson {
    fn from(env: Envelope) -> Self {
        EnvelopeJson {
            payload: STANDARD.encode(&env.payload),
            payload_type: env.payload_type,
            signatures: env.signatures,
        }
    }
}

/// How a verification names what it checks and whose keys it trusts, for its error message.
pub(crate) struct Label<'a> {
    /// The thing verified: "envelope", "root version 2", ...
    pub what: &'a str,
    /// The trusted keys: "channel", "version 1 root", ...
    pub role: &'a str,
}

impl Envelope {
    /// Creates an envelope over `payload` signed by each of `keys`.
    pub fn sign(payload_type: &str, payload: &[u8], keys: &[&SigningKey]) -> Envelope {
        let mut env = Envelope {
            payload_type: payload_type.to_owned(),
            payload: payload.to_vec(),
            signatures: Vec::new(),
        };
        for key in keys {
            env.add_signature(key);
        }
        env
    }

    /// Adds one more signature (a co-signer's) over the same payload.
    pub fn add_signature(&mut self, key: &SigningKey) {
        let sig = key.sign(&pae(&self.payload_type, &self.payload));
        self.signatures.push(Signature {
            keyid: key.key_id().to_string(),
            sig: STANDARD.encode(sig),
        });
    }

    /// The envelope as JSON bytes, ready to publish.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("an envelope always serialises")
    }

    /// Parses untrusted JSON, refusing anything over `max_len` bytes before parsing it.
    pub fn parse(bytes: &[u8], max_len: usize) -> Result<Envelope> {
        if bytes.len() > max_len {
            return Err(KeyError::EnvelopeTooLarge {
                len: bytes.len(),
                limit: max_len,
            });
        }
        serde_json::from_slice(bytes).map_err(KeyError::EnvelopeJson)
    }

    /// The declared payload type (untrusted until [`Envelope::verify`] succeeds).
    pub fn payload_type(&self) -> &str {
        &self.payload_type
    }

    /// The payload before any verification; only for reading a root's own keys from it.
    pub(crate) fn unverified_payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signatures as found.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Checks type and that at least `threshold` distinct `allowed` keys signed; returns the
    /// exact signed payload bytes.
    pub fn verify(
        &self,
        expected_payload_type: &str,
        keys: &BTreeMap<KeyId, PublicKey>,
        allowed: &[KeyId],
        threshold: u32,
    ) -> Result<Vec<u8>> {
        let label = Label {
            what: "envelope",
            role: "allowed",
        };
        self.verify_labelled(expected_payload_type, keys, allowed, threshold, &label)
    }

    /// [`Envelope::verify`] with a caller-chosen description for the threshold error.
    pub(crate) fn verify_labelled(
        &self,
        expected_payload_type: &str,
        keys: &BTreeMap<KeyId, PublicKey>,
        allowed: &[KeyId],
        threshold: u32,
        label: &Label<'_>,
    ) -> Result<Vec<u8>> {
        if threshold == 0 {
            return Err(KeyError::ZeroThreshold);
        }
        if self.payload_type != expected_payload_type {
            return Err(KeyError::PayloadType {
                actual: self.payload_type.clone(),
                expected: expected_payload_type.to_owned(),
            });
        }
        let trusted: BTreeMap<&KeyId, &PublicKey> = allowed
            .iter()
            .filter_map(|id| keys.get(id).map(|key| (id, key)))
            .collect();
        let tally = self.tally(&trusted);
        if tally.valid.len() < threshold as usize {
            return Err(KeyError::ThresholdNotMet {
                what: label.what.to_owned(),
                role: label.role.to_owned(),
                valid: tally.valid.len(),
                threshold,
                notes: tally.notes(),
            });
        }
        Ok(self.payload.clone())
    }

    /// Sorts every signature into valid (by distinct key), bad, or from an unknown key.
    fn tally<'k>(&self, trusted: &BTreeMap<&'k KeyId, &PublicKey>) -> Tally<'k> {
        let message = pae(&self.payload_type, &self.payload);
        let mut tally = Tally::default();
        for signature in &self.signatures {
            let Ok(sig) = decode_b64(&signature.sig) else {
                tally.bad.insert(signature.keyid.clone());
                continue;
            };
            if signature.keyid.is_empty() {
                // DSSE: a signature without a key id may be checked against every trusted key.
                match trusted.iter().find(|(_, key)| key.verify(&message, &sig)) {
                    Some((id, _)) => tally.valid.insert(*id),
                    None => tally.unknown.insert(String::new()),
                };
                continue;
            }
            let known = trusted
                .iter()
                .find(|(id, _)| id.as_str() == signature.keyid);
            match known {
                Some((id, key)) if key.verify(&message, &sig) => tally.valid.insert(*id),
                Some(_) => tally.bad.insert(signature.keyid.clone()),
                None => tally.unknown.insert(signature.keyid.clone()),
            };
        }
        tally
    }
}

/// The verdict on each signature of an envelope.
#[derive(Default)]
struct Tally<'k> {
    /// Trusted key ids with at least one valid signature (a set: duplicates count once).
    valid: BTreeSet<&'k KeyId>,
    /// Trusted key ids whose signature did not verify (or was not base64).
    bad: BTreeSet<String>,
    /// Key ids that are not trusted for this role ("" for signatures without key id).
    unknown: BTreeSet<String>,
}

impl Tally<'_> {
    /// "; unknown key id(s): a, b; invalid signature(s) from key id(s): c", or "".
    fn notes(&self) -> String {
        let list = |ids: &BTreeSet<String>| {
            ids.iter()
                .map(|id| {
                    if id.is_empty() {
                        "(none given)"
                    } else {
                        id.as_str()
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut notes = String::new();
        if self.unknown.is_empty() && self.bad.is_empty() && self.valid.is_empty() {
            notes.push_str("; the envelope has no signatures");
        }
        if !self.unknown.is_empty() {
            notes.push_str(&format!("; unknown key id(s): {}", list(&self.unknown)));
        }
        if !self.bad.is_empty() {
            notes.push_str(&format!(
                "; invalid signature(s) from key id(s): {}",
                list(&self.bad)
            ));
        }
        notes
    }
}

#[cfg(test)]
mod tests;
