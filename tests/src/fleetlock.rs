//! A small FleetLock server on 127.0.0.1 (a test double): N slots in memory, a refuse-everything mode, and a record of requests.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use serde_json::{json, Value};

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The request path, e.g. `/v1/pre-reboot`.
    pub path: String,
    /// The `fleet-lock-protocol` header, if sent.
    pub protocol_header: Option<String>,
    /// The raw body.
    pub body: String,
}

#[derive(Debug, Default)]
struct Inner {
    slots: usize,
    holders: BTreeSet<String>,
    refuse: Option<String>,
    received: Vec<Received>,
}

type Shared = Arc<Mutex<Inner>>;

/// A running FleetLock server; stops when dropped.
pub struct FleetLockServer {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl FleetLockServer {
    /// Serve a semaphore of `slots` slots on an ephemeral 127.0.0.1 port.
    pub async fn start(slots: usize) -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner: Shared = Arc::new(Mutex::new(Inner {
            slots,
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner, task })
    }

    /// The base URL (no trailing slash).
    pub fn url(&self) -> reqwest::Url {
        format!("http://{}", self.addr)
            .parse()
            .expect("a loopback URL parses")
    }

    /// Refuse every request with this reason (`Some`), or serve normally again (`None`).
    pub fn refuse_all(&self, reason: Option<&str>) {
        self.inner.lock().unwrap().refuse = reason.map(str::to_string);
    }

    /// The ids holding a slot.
    pub fn holders(&self) -> Vec<String> {
        self.inner.lock().unwrap().holders.iter().cloned().collect()
    }

    /// Every request received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }
}

impl Drop for FleetLockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reply(status: StatusCode, kind: &str, value: &str) -> (StatusCode, String) {
    (status, json!({ "kind": kind, "value": value }).to_string())
}

async fn handle(
    State(inner): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let protocol_header = headers
        .get("fleet-lock-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut s = inner.lock().unwrap();
    s.received.push(Received {
        path: uri.path().to_string(),
        protocol_header: protocol_header.clone(),
        body: body.clone(),
    });
    if protocol_header.as_deref() != Some("true") {
        return reply(
            StatusCode::BAD_REQUEST,
            "missing_header",
            "fleet-lock-protocol: true required",
        );
    }
    if let Some(reason) = s.refuse.clone() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "refused", &reason);
    }
    let params: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(id) = params["client_params"]["id"]
        .as_str()
        .filter(|id| !id.is_empty())
    else {
        return reply(
            StatusCode::BAD_REQUEST,
            "bad_params",
            "client_params.id missing",
        );
    };
    let id = id.to_string();
    match uri.path() {
        "/v1/pre-reboot" if s.holders.contains(&id) => (StatusCode::OK, String::new()),
        "/v1/pre-reboot" if s.holders.len() >= s.slots => {
            let value = format!("all {} slots held", s.slots);
            reply(StatusCode::CONFLICT, "failed_lock", &value)
        }
        "/v1/pre-reboot" => {
            s.holders.insert(id);
            (StatusCode::OK, String::new())
        }
        "/v1/steady-state" => {
            s.holders.remove(&id);
            (StatusCode::OK, String::new())
        }
        _ => reply(StatusCode::NOT_FOUND, "not_found", uri.path()),
    }
}
