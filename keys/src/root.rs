//! The root document: its JSON schema, validation, and signing by publishers.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::error::{KeyError, Result};
use crate::key::{KeyId, PublicKey, SigningKey};

/// DSSE payload type of a signed root document.
pub const ROOT_PAYLOAD_TYPE: &str = "application/vnd.upd.root+json";
/// The `type` field of every root document.
pub const ROOT_TYPE: &str = "upd-root";
/// Largest root envelope accepted, in bytes (a root lists a handful of keys).
pub const MAX_ROOT_LEN: usize = 1 << 20;

/// The keys allowed to sign for one role and how many of them must.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Key ids of the role, each present in the root's `keys`.
    pub keyids: Vec<KeyId>,
    /// Distinct valid signatures required.
    pub threshold: u32,
}

/// The two roles of a root: who signs roots, who signs channel manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Signs the next root.
    pub root: Role,
    /// Signs channel manifests.
    pub channel: Role,
}

/// A root document, the payload of a root envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootDocument {
    /// Always [`ROOT_TYPE`].
    #[serde(rename = "type")]
    pub doc_type: String,
    /// Starts at 1 and grows by exactly one per rotation.
    pub version: u64,
    /// After this instant the root may not vouch for new manifests.
    pub expires: DateTime<Utc>,
    /// Every key any role uses, by key id.
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// Who may sign what.
    pub roles: Roles,
}

impl RootDocument {
    /// Builds and validates a root from the public keys of each role.
    pub fn new(
        version: u64,
        expires: DateTime<Utc>,
        root_keys: &[PublicKey],
        root_threshold: u32,
        channel_keys: &[PublicKey],
        channel_threshold: u32,
    ) -> Result<RootDocument> {
        let role = |keys: &[PublicKey], threshold| Role {
            keyids: keys.iter().map(PublicKey::key_id).collect(),
            threshold,
        };
        let doc = RootDocument {
            doc_type: ROOT_TYPE.to_owned(),
            version,
            expires,
            keys: root_keys
                .iter()
                .chain(channel_keys)
                .map(|k| (k.key_id(), *k))
                .collect(),
            roles: Roles {
                root: role(root_keys, root_threshold),
                channel: role(channel_keys, channel_threshold),
            },
        };
        doc.validate()?;
        Ok(doc)
    }

    /// Parses and validates the JSON payload of a root envelope.
    pub fn from_json(bytes: &[u8]) -> Result<RootDocument> {
        let doc: RootDocument = serde_json::from_slice(bytes).map_err(KeyError::RootJson)?;
        doc.validate()?;
        Ok(doc)
    }

    /// Checks type, version, that each key sits under its own id, and each role.
    pub fn validate(&self) -> Result<()> {
        if self.doc_type != ROOT_TYPE {
            return Err(KeyError::RootType {
                actual: self.doc_type.clone(),
            });
        }
        if self.version == 0 {
            return Err(KeyError::RootVersionZero);
        }
        for (listed, key) in &self.keys {
            let actual = key.key_id();
            if &actual != listed {
                return Err(KeyError::KeyIdMismatch {
                    version: self.version,
                    listed: listed.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        self.validate_role("root", &self.roles.root)?;
        self.validate_role("channel", &self.roles.channel)
    }

    fn validate_role(&self, name: &'static str, role: &Role) -> Result<()> {
        let mut seen = BTreeSet::new();
        for id in &role.keyids {
            if !self.keys.contains_key(id) {
                return Err(KeyError::UnknownKeyId {
                    version: self.version,
                    role: name,
                    keyid: id.to_string(),
                });
            }
            if !seen.insert(id) {
                return Err(KeyError::DuplicateRoleKey {
                    version: self.version,
                    role: name,
                    keyid: id.to_string(),
                });
            }
        }
        if role.threshold == 0 || role.threshold as usize > role.keyids.len() {
            return Err(KeyError::RoleThreshold {
                version: self.version,
                role: name,
                threshold: role.threshold,
                count: role.keyids.len(),
            });
        }
        Ok(())
    }

    /// The canonical payload bytes that get signed.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a root document always serialises")
    }
}

/// Signs a (validated) root document into a root envelope.
pub fn sign_root(doc: &RootDocument, keys: &[&SigningKey]) -> Result<Envelope> {
    doc.validate()?;
    Ok(Envelope::sign(
        ROOT_PAYLOAD_TYPE,
        &doc.to_json_bytes(),
        keys,
    ))
}

#[cfg(test)]
mod tests {
    use crate::testutil::{doc, keys};
    use crate::RootDocument;

    #[test]
    fn root_document_validation_table() {
        // Each broken field of an otherwise good document is refused with its own error.
        let ks = keys(2);
        let good = serde_json::to_value(doc(1, &[&ks[0]], 1, &[&ks[1]], 1)).unwrap();
        let root_id = ks[0].key_id().to_string();
        let other_id = ks[1].key_id().to_string();
        let stranger = "0".repeat(64);
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit, &str)> = vec![
            (
                "type",
                Box::new(|v| v["type"] = "other".into()),
                "expected \"upd-root\"",
            ),
            (
                "version 0",
                Box::new(|v| v["version"] = 0.into()),
                "root version 0 is invalid",
            ),
            (
                "threshold 0",
                Box::new(|v| v["roles"]["root"]["threshold"] = 0.into()),
                "threshold 0 must be between 1",
            ),
            (
                "threshold > keys",
                Box::new(|v| v["roles"]["channel"]["threshold"] = 2.into()),
                "role channel threshold 2",
            ),
            (
                "unknown role key",
                Box::new(move |v| v["roles"]["root"]["keyids"] = serde_json::json!([stranger])),
                "names unknown key id 0000",
            ),
            (
                "duplicate role key",
                {
                    let id = root_id.clone();
                    Box::new(move |v| v["roles"]["root"]["keyids"] = serde_json::json!([id, id]))
                },
                "more than once",
            ),
            (
                "key under wrong id",
                {
                    let (r, o) = (root_id.clone(), other_id.clone());
                    Box::new(move |v| {
                        let keys = v["keys"].as_object_mut().unwrap();
                        let (a, b) = (keys[&r].clone(), keys[&o].clone());
                        keys.insert(r.clone(), b);
                        keys.insert(o.clone(), a);
                    })
                },
                "has key id",
            ),
            (
                "bad expiry",
                Box::new(|v| v["expires"] = "tomorrow".into()),
                "not valid JSON",
            ),
            (
                "extra field",
                Box::new(|v| v["surprise"] = true.into()),
                "not valid JSON",
            ),
        ];
        assert!(RootDocument::from_json(&serde_json::to_vec(&good).unwrap()).is_ok());
        for (name, edit, expect) in cases {
            let mut v = good.clone();
            edit(&mut v);
            let err = RootDocument::from_json(&serde_json::to_vec(&v).unwrap())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{name}: {err}");
        }
    }

    #[test]
    fn root_json_has_the_documented_shape() {
        // Field names as published: type, version, expires (RFC 3339), keys, roles.
        let ks = keys(2);
        let v: serde_json::Value =
            serde_json::from_slice(&doc(1, &[&ks[0]], 1, &[&ks[1]], 1).to_json_bytes()).unwrap();
        assert_eq!(v["type"], "upd-root");
        assert_eq!(v["version"], 1);
        assert_eq!(v["expires"], "2027-06-01T12:00:00Z");
        assert_eq!(v["keys"][ks[1].key_id().as_str()]["keytype"], "ed25519");
        assert_eq!(v["roles"]["channel"]["keyids"][0], ks[1].key_id().as_str());
        assert_eq!(v["roles"]["root"]["threshold"], 1);
    }
}
