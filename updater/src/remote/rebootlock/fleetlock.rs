//! The `fleet-lock` strategy: a FleetLock client, speaking the protocol as Zincati does.
//!
//! Protocol (coreos/zincati `src/fleet_lock/mod.rs`, airlock `internal/server`):
//! 1. `POST <base>/v1/pre-reboot` before rebooting, `POST <base>/v1/steady-state` once healthy;
//! 2. header `fleet-lock-protocol: true`;
//! 3. body `{"client_params":{"id":"<node id>","group":"<group>"}}`;
//! 4. any 2xx is success; otherwise the body may be `{"kind":..,"value":..}` saying why.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::{Outcome, RebootLockError};

/// A machine's client of a FleetLock server.
#[derive(Debug, Clone)]
pub struct FleetLock {
    base: Url,
    body: String,
    http: reqwest::Client,
}

#[derive(Serialize)]
struct Body<'a> {
    client_params: ClientParams<'a>,
}

#[derive(Serialize)]
struct ClientParams<'a> {
    id: &'a str,
    group: &'a str,
}

/// The server's error reply.
#[derive(Deserialize)]
struct Rejection {
    kind: String,
    value: String,
}

impl FleetLock {
    /// A client of the server at base URL `url`, for machine `id` in `group`.
    pub fn new(url: Url, group: &str, id: &str) -> Self {
        let mut base = url;
        // Zincati joins relative paths onto the base: without a trailing slash its last segment would be dropped.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let body = serde_json::to_string(&Body {
            client_params: ClientParams { id, group },
        })
        .expect("two strings always serialise");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_mins(1))
            .build()
            .expect("a reqwest client with rustls and timeouts builds");
        Self { base, body, http }
    }

    /// Ask for a reboot slot (`pre-reboot`); a refusal is `Denied` with the server's reason.
    pub async fn acquire(&self) -> Result<Outcome, RebootLockError> {
        match self.post("v1/pre-reboot").await? {
            None => Ok(Outcome::Acquired),
            Some((_, reason)) => Ok(Outcome::Denied { reason }),
        }
    }

    /// Give the slot back (`steady-state`); a refusal is an error.
    pub async fn release(&self) -> Result<(), RebootLockError> {
        match self.post("v1/steady-state").await? {
            None => Ok(()),
            Some((status, reason)) => Err(RebootLockError::FleetLockRefused {
                url: self.url("v1/steady-state").to_string(),
                status: status.as_u16(),
                reason,
            }),
        }
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("a relative path joins onto an http URL")
    }

    /// POST the client params; None on 2xx, else the status and the reason.
    async fn post(&self, path: &str) -> Result<Option<(StatusCode, String)>, RebootLockError> {
        let url = self.url(path);
        let unreachable = |source| RebootLockError::FleetLockUnreachable {
            url: url.to_string(),
            source,
        };
        let resp = self
            .http
            .post(url.clone())
            .header("fleet-lock-protocol", "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone())
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(None);
        }
        let body = resp.bytes().await.map_err(unreachable)?;
        Ok(Some((status, reason(status, &body))))
    }
}

/// The reason of a refusal (an untrusted body): the server's `kind: value`, else the status and
/// at most 200 characters of the body text.
pub fn reason(status: StatusCode, body: &[u8]) -> String {
    if let Ok(r) = serde_json::from_slice::<Rejection>(body) {
        format!("{}: {} (HTTP {})", r.kind, r.value, status.as_u16())
    } else {
        let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
        format!("HTTP {}: {}", status.as_u16(), text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_zincatis_client_params() {
        let c = FleetLock::new("http://h/".parse().unwrap(), "workers", "abc");
        assert_eq!(
            c.body,
            r#"{"client_params":{"id":"abc","group":"workers"}}"#
        );
    }

    #[test]
    fn paths_join_onto_the_base_with_or_without_a_trailing_slash() {
        let c = FleetLock::new("http://h:1/lock".parse().unwrap(), "g", "i");
        assert_eq!(
            c.url("v1/pre-reboot").as_str(),
            "http://h:1/lock/v1/pre-reboot"
        );
        let c = FleetLock::new("http://h:1".parse().unwrap(), "g", "i");
        assert_eq!(
            c.url("v1/steady-state").as_str(),
            "http://h:1/v1/steady-state"
        );
    }

    #[test]
    fn a_refusal_gives_the_servers_kind_and_value_or_the_raw_body() {
        let body = br#"{"kind":"failed_lock","value":"semaphore currently full"}"#;
        assert_eq!(
            reason(StatusCode::CONFLICT, body),
            "failed_lock: semaphore currently full (HTTP 409)"
        );
        assert_eq!(reason(StatusCode::BAD_GATEWAY, b"oops\n"), "HTTP 502: oops");
    }
}
