//! Ed25519 signing keys (PKCS#8 files), public keys and their SHA-256 key ids.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::error::{KeyError, Result};

/// Length of a raw Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;

/// Lowercase hex SHA-256 of a raw 32-byte Ed25519 public key; checked on every parse.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// The id as 64 lowercase hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self> {
        let ok = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(KeyError::InvalidKeyId {
                value: s.to_owned(),
            })
        }
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyError;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A raw Ed25519 public key; JSON form `{"keytype":"ed25519","public":"<hex>"}`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PublicKeyJson", into = "PublicKeyJson")]
pub struct PublicKey([u8; PUBLIC_KEY_LEN]);

/// The wire form of [`PublicKey`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicKeyJson {
    keytype: String,
    public: String,
}

impl PublicKey {
    /// Wraps raw public key bytes; they must be exactly 32.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let raw: [u8; PUBLIC_KEY_LEN] =
            bytes.try_into().map_err(|_| KeyError::InvalidPublicKey {
                reason: format!("{} bytes, expected {PUBLIC_KEY_LEN}", bytes.len()),
            })?;
        Ok(PublicKey(raw))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// The key id: lowercase hex SHA-256 of the raw key.
    pub fn key_id(&self) -> KeyId {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        KeyId(hex::encode(digest.as_ref()))
    }

    /// True if `signature` is this key's valid Ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl TryFrom<PublicKeyJson> for PublicKey {
    type Error = KeyError;

    fn try_from(json: PublicKeyJson) -> Result<Self> {
        if json.keytype != "ed25519" {
            return Err(KeyError::InvalidPublicKey {
                reason: format!("keytype {:?}, expected \"ed25519\"", json.keytype),
            });
        }
        let bytes = hex::decode(&json.public).map_err(|e| KeyError::InvalidPublicKey {
            reason: format!("public is not hex: {e}"),
        })?;
        PublicKey::from_bytes(&bytes)
    }
}

impl From<PublicKey> for PublicKeyJson {
    fn from(key: PublicKey) -> Self {
        PublicKeyJson {
            keytype: "ed25519".to_owned(),
            public: hex::encode(key.0),
        }
    }
}

/// An Ed25519 private key able to sign; its `Debug` never shows secret material.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
    key_id: KeyId,
}

impl SigningKey {
    /// Generates a fresh key; returns it and its PKCS#8 v2 document (to store).
    pub fn generate() -> Result<(SigningKey, Vec<u8>)> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        let key = Self::parse(pkcs8.as_ref(), "generated key")?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    /// Parses an Ed25519 PKCS#8 document (v2 as ring writes it, or v1 as OpenSSL does).
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey> {
        Self::parse(pkcs8, "in-memory key")
    }

    /// Loads a PKCS#8 key file (DER, as written by [`write_new_key`]).
    pub fn load(path: impl AsRef<Path>) -> Result<SigningKey> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| KeyError::ReadKey {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    fn parse(pkcs8: &[u8], source_name: &str) -> Result<SigningKey> {
        // maybe_unchecked also accepts PKCS#8 v1 (no embedded public key, e.g. `openssl
        // genpkey`); for v2 documents it still checks the embedded public key.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|e| {
            KeyError::InvalidPkcs8 {
                source_name: source_name.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let public = PublicKey::from_bytes(pair.public_key().as_ref())?;
        let key_id = public.key_id();
        Ok(SigningKey {
            pair,
            public,
            key_id,
        })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The key id of the public half.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Signs `message` (raw Ed25519, 64 bytes).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.key_id)
    }
}

/// Generates a key and writes it as a new PKCS#8 file with mode 0600; never overwrites.
pub fn write_new_key(path: impl AsRef<Path>) -> Result<SigningKey> {
    let path = path.as_ref();
    let (key, pkcs8) = SigningKey::generate()?;
    let write_err = |source| KeyError::WriteKey {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| match source.kind() {
            ErrorKind::AlreadyExists => KeyError::KeyExists {
                path: path.to_owned(),
            },
            _ => write_err(source),
        })?;
    file.write_all(&pkcs8).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    // Make the new directory entry durable too.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pkcs8_roundtrip_keeps_key_id_and_signs_verifiably() {
        // A generated key, reloaded from its PKCS#8 bytes, is the same key.
        let (key, pkcs8) = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(key.key_id(), again.key_id());
        let sig = again.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellO", &sig));
    }

    #[test]
    fn key_id_is_sha256_of_raw_public_key() {
        // The id is recomputable by anyone from the 32 public bytes.
        let (key, _) = SigningKey::generate().unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public().as_bytes());
        assert_eq!(key.key_id().as_str(), hex::encode(digest.as_ref()));
    }

    #[test]
    fn openssl_style_pkcs8_v1_loads_rfc8032_vector() {
        // `openssl genpkey -algorithm ed25519 -outform DER` writes v1 (no public key); the
        // public key derived from RFC 8032 test 1's secret must be the published one.
        let seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        let der = hex::decode(format!("302e020100300506032b657004220420{seed}")).unwrap();
        let key = SigningKey::from_pkcs8(&der).unwrap();
        assert_eq!(
            hex::encode(key.public().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn garbage_is_not_a_key() {
        // Random bytes are rejected with a message naming the source.
        let err = SigningKey::from_pkcs8(b"not a key").unwrap_err();
        assert!(err.to_string().contains("in-memory key"), "{err}");
    }

    #[test]
    fn public_key_json_shape_and_validation() {
        // Serialises as {"keytype","public"}; wrong type or length is refused.
        let (key, _) = SigningKey::generate().unwrap();
        let json = serde_json::to_value(key.public()).unwrap();
        assert_eq!(json["keytype"], "ed25519");
        assert_eq!(json["public"], hex::encode(key.public().as_bytes()));
        let back: PublicKey = serde_json::from_value(json).unwrap();
        assert_eq!(back, key.public());
        let bad = [
            r#"{"keytype":"rsa","public":"00"}"#,
            r#"{"keytype":"ed25519","public":"0011"}"#,
            r#"{"keytype":"ed25519","public":"zz"}"#,
        ];
        for text in bad {
            assert!(serde_json::from_str::<PublicKey>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn key_id_parsing_table() {
        // Only 64 lowercase hex characters are a key id, also through serde.
        let good = "a".repeat(64);
        let cases = [
            (good.as_str(), true),
            (&good[..63], false),
            ("A".repeat(64).as_str(), false),
            ("g".repeat(64).as_str(), false),
            ("", false),
        ]
        .map(|(s, ok)| (s.to_owned(), ok));
        for (text, ok) in cases {
            assert_eq!(text.parse::<KeyId>().is_ok(), ok, "{text:?}");
            let json = serde_json::to_string(&text).unwrap();
            assert_eq!(serde_json::from_str::<KeyId>(&json).is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn new_key_file_is_0600_and_never_overwritten() {
        // write_new_key creates a private file, loads back, and refuses an existing path.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("channel.pk8");
        let key = write_new_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(SigningKey::load(&path).unwrap().key_id(), key.key_id());
        let before = std::fs::read(&path).unwrap();
        let err = write_new_key(&path).unwrap_err();
        assert!(matches!(err, KeyError::KeyExists { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn missing_key_file_names_its_path() {
        // A load error says which file.
        let err = SigningKey::load("/nonexistent/upd/key.pk8").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/upd/key.pk8"),
            "{err}"
        );
    }
}
