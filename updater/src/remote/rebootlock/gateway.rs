//! A minimal etcd v3 client over etcd's JSON HTTP gateway: range and one compare-and-put transaction.
//!
//! The gateway (`/v3/...`, served by etcd 3.4 and later on the client URL) speaks protobuf's
//! JSON mapping: keys and values are base64, 64-bit integers are strings, and fields at their
//! zero value are left out (a failed transaction has no `succeeded` at all).

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use reqwest::Url;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::json;

use super::RebootLockError;

/// One key's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The revision of the last write to the key.
    pub mod_revision: i64,
}

/// The condition of a compare-and-put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// The key does not exist (version 0).
    Absent,
    /// The key was last written at this revision. Unlike `version`, a revision never repeats,
    /// even if the key is deleted and created again, so there is no ABA.
    ModRevision(i64),
}

/// etcd's JSON gateway on a list of endpoints, tried in order while they cannot be reached.
#[derive(Debug, Clone)]
pub struct Gateway {
    endpoints: Vec<Url>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct RangeAnswer {
    #[serde(default)]
    kvs: Vec<RawKv>,
}

#[derive(Deserialize)]
struct RawKv {
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
}

#[derive(Deserialize)]
struct TxnAnswer {
    // Left out of the JSON when false.
    #[serde(default)]
    succeeded: bool,
}

/// protobuf's JSON mapping writes int64 as a string; accept a number too.
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        S(String),
        N(i64),
    }
    match Int::deserialize(d)? {
        Int::S(s) => s.parse().map_err(de::Error::custom),
        Int::N(n) => Ok(n),
    }
}

impl Gateway {
    /// A gateway client on `endpoints` (etcd client URLs), with connect and request timeouts.
    pub fn new(endpoints: Vec<Url>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a reqwest client with rustls and timeouts builds");
        Self { endpoints, http }
    }

    /// The current value of `key`, or None if absent; also returns the endpoint that answered.
    pub async fn get(&self, key: &str) -> Result<(Url, Option<Kv>), RebootLockError> {
        const PATH: &str = "/v3/kv/range";
        let (endpoint, body) = self.post(PATH, json!({ "key": B64.encode(key) })).await?;
        let bad = |why: String| RebootLockError::EtcdBadAnswer {
            endpoint: endpoint.to_string(),
            path: PATH,
            why,
        };
        let kv = decode_range(&body).map_err(bad)?;
        Ok((endpoint, kv))
    }

    /// Put `value` at `key` if `cmp` holds, in one transaction; returns whether it held.
    pub async fn put_if(
        &self,
        key: &str,
        cmp: Cmp,
        value: &[u8],
    ) -> Result<(Url, bool), RebootLockError> {
        const PATH: &str = "/v3/kv/txn";
        let key = B64.encode(key);
        let compare = match cmp {
            Cmp::Absent => {
                json!({ "target": "VERSION", "key": key, "version": "0", "result": "EQUAL" })
            }
            Cmp::ModRevision(r) => {
                json!({ "target": "MOD", "key": key, "mod_revision": r.to_string(), "result": "EQUAL" })
            }
        };
        let put = json!({ "request_put": { "key": key, "value": B64.encode(value) } });
        let txn = json!({ "compare": [compare], "success": [put] });
        let (endpoint, body) = self.post(PATH, txn).await?;
        let succeeded = decode_txn(&body).map_err(|why| RebootLockError::EtcdBadAnswer {
            endpoint: endpoint.to_string(),
            path: PATH,
            why,
        })?;
        Ok((endpoint, succeeded))
    }

    /// POST `body` to `path` on the first endpoint that can be reached; returns it and the 200 body.
    async fn post(
        &self,
        path: &'static str,
        body: serde_json::Value,
    ) -> Result<(Url, Vec<u8>), RebootLockError> {
        let mut last = None;
        for endpoint in &self.endpoints {
            let url = format!("{}{path}", endpoint.as_str().trim_end_matches('/'));
            let sent = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await;
            let resp = match sent {
                Ok(resp) => resp,
                // A transaction that timed out may have been applied: the caller's
                // compare-and-swap makes repeating it on the next endpoint harmless.
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    last = Some(RebootLockError::EtcdUnreachable {
                        endpoint: endpoint.to_string(),
                        source: e,
                    });
                    continue;
                }
                Err(e) => {
                    return Err(RebootLockError::EtcdUnreachable {
                        endpoint: endpoint.to_string(),
                        source: e,
                    })
                }
            };
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| RebootLockError::EtcdUnreachable {
                    endpoint: endpoint.to_string(),
                    source: e,
                })?;
            if !status.is_success() {
                return Err(RebootLockError::EtcdStatus {
                    endpoint: endpoint.to_string(),
                    path,
                    status: status.as_u16(),
                    message: error_message(&bytes),
                });
            }
            return Ok((endpoint.clone(), bytes.to_vec()));
        }
        Err(last.unwrap_or(RebootLockError::NoEndpoints))
    }
}

/// The first key of a `/v3/kv/range` answer (an untrusted body), or None when the key is absent;
/// the error says what is wrong with the body.
pub fn decode_range(body: &[u8]) -> Result<Option<Kv>, String> {
    let answer: RangeAnswer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Some(raw) = answer.kvs.into_iter().next() else {
        return Ok(None);
    };
    let value = B64
        .decode(raw.value)
        .map_err(|e| format!("value is not base64: {e}"))?;
    Ok(Some(Kv {
        value,
        mod_revision: raw.mod_revision,
    }))
}

/// Whether a `/v3/kv/txn` answer (an untrusted body) says the transaction's compare held.
pub fn decode_txn(body: &[u8]) -> Result<bool, String> {
    let answer: TxnAnswer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(answer.succeeded)
}

/// etcd's `{"error":..,"message":..,"code":..}` message, else the body as text (at most 200
/// characters of it).
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct EtcdError {
        message: String,
    }
    match serde_json::from_slice::<EtcdError>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_transaction_without_succeeded_reads_as_false() {
        let failed: TxnAnswer =
            serde_json::from_str(r#"{"header":{"revision":"2","raft_term":"2"}}"#).unwrap();
        assert!(!failed.succeeded);
        let ok: TxnAnswer = serde_json::from_str(r#"{"header":{},"succeeded":true}"#).unwrap();
        assert!(ok.succeeded);
    }

    #[test]
    fn range_answers_decode_with_string_integers_and_left_out_fields() {
        let absent: RangeAnswer = serde_json::from_str(r#"{"header":{"revision":"1"}}"#).unwrap();
        assert!(absent.kvs.is_empty());
        let one: RangeAnswer = serde_json::from_str(
            r#"{"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"7","version":"3","value":"YmFy"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(
            (one.kvs[0].mod_revision, one.kvs[0].value.as_str()),
            (7, "YmFy")
        );
    }

    #[test]
    fn etcd_error_bodies_give_their_message() {
        let body =
            br#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
        assert_eq!(error_message(body), "etcdserver: no leader");
        assert_eq!(error_message(b"Not Found"), "Not Found");
    }
}
