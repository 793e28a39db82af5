//! The report server (`upd-channel fleet serve`): POST /v1/reports stores a machine's report
//! after checking its token, size, schema and rate; GET / is the rollout page; GET /v1/status
//! the channel's status as JSON. Refusals are 4xx with a JSON error and store nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ring::digest::{digest, SHA256};
use upd_channels::report::{Report, MAX_REPORT_BYTES};

use super::db::Db;
use super::{page, status};

/// The server's limits (documented in docs/fleet.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Reports accepted per machine per minute (a burst of this many, refilled evenly).
    pub per_machine_per_minute: u32,
    /// Requests accepted per second from everyone together (a burst of twice this).
    pub global_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A burst above a machine's whole queue (64, `upd`'s QUEUE_CAP) and its next report,
            // so a queue kept through an outage is taken in one run.
            per_machine_per_minute: 100,
            global_per_second: 2000,
        }
    }
}

struct App {
    db: Db,
    token_sha256: Vec<u8>,
    per_machine: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    per_machine_per_minute: u32,
}

/// A refusal: its status and a JSON body `{"error":{"status":…,"kind":…,"message":…}}`.
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {"status": self.status.as_u16(), "kind": self.kind, "message": self.message}
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        resp
    }
}

/// Bind `addr` and return the bound address and the future that serves until it fails.
pub async fn bind(
    db: Db,
    token: &str,
    limits: Limits,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>> + Send)> {
    let minute = NonZeroU32::new(limits.per_machine_per_minute.max(1)).expect("at least 1");
    let second = NonZeroU32::new(limits.global_per_second.max(1)).expect("at least 1");
    let burst = second.saturating_mul(NonZeroU32::new(2).expect("2"));
    let app = Arc::new(App {
        db,
        token_sha256: digest(&SHA256, token.as_bytes()).as_ref().to_vec(),
        per_machine: RateLimiter::keyed(Quota::per_minute(minute)),
        global: RateLimiter::direct(Quota::per_second(second).allow_burst(burst)),
        per_machine_per_minute: minute.get(),
    });
    let router = Router::new()
        .route("/v1/reports", post(post_report))
        .route("/v1/status", get(get_status))
        .route("/", get(get_page))
        .fallback(|| async { Refusal::new(StatusCode::NOT_FOUND, "not_found", "no such page") })
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    // The keyed limiter keeps a cell per machine id seen: drop the ones refilled to full.
    let sweeper = app.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(90)).await;
            sweeper.per_machine.retain_recent();
        }
    });
    Ok((bound, async move { axum::serve(listener, router).await }))
}

/// POST /v1/reports: 202 when stored; 401, 413, 415, 400, 429 (nothing stored), 503 on a
/// database failure.
async fn post_report(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    match accept(&app, &headers, body).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"stored": true})),
        )
            .into_response(),
        Err(r) => {
            tracing::info!(status = %r.status, kind = r.kind, message = %r.message, "report refused");
            r.into_response()
        }
    }
}

async fn accept(app: &App, headers: &HeaderMap, body: Body) -> Result<(), Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer TOKEN",
        ));
    };
    // Equal digests of equal length: the comparison does not leak where the token differs.
    if digest(&SHA256, token.trim().as_bytes()).as_ref() != app.token_sha256.as_slice() {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong token",
        ));
    }
    if app.global.check().is_err() {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "the server takes no more reports this second; retry later",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim() == "application/json");
    if !json {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_REPORT_BYTES)
        .await
        .map_err(|_| {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a report is at most {MAX_REPORT_BYTES} bytes"),
            )
        })?;
    let report = Report::parse(&bytes)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_report", e.to_string()))?;
    if app.per_machine.check_key(&report.machine_id).is_err() {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "machine {} sent more than {} reports a minute",
                report.machine_id, app.per_machine_per_minute
            ),
        ));
    }
    app.db.insert(&report, Utc::now()).await.map_err(|e| {
        tracing::error!(error = %e, "storing a report");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the report database failed; retry later",
        )
    })
}

/// The query of the status and page: `?channel=NAME` (default `stable`).
#[derive(Debug, serde::Deserialize)]
struct ChannelQuery {
    channel: Option<String>,
}

/// The wave bounds the server's views use (percent).
pub const DEFAULT_WAVES: [f64; 5] = [1.0, 10.0, 25.0, 50.0, 100.0];

async fn get_status(State(app): State<Arc<App>>, Query(q): Query<ChannelQuery>) -> Response {
    let channel = q.channel.unwrap_or_else(|| "stable".into());
    match status::status(&app.db, &channel, &DEFAULT_WAVES).await {
        Ok(s) => axum::Json(s).into_response(),
        Err(e) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

async fn get_page(State(app): State<Arc<App>>, Query(q): Query<ChannelQuery>) -> Response {
    let channel = q.channel.unwrap_or_else(|| "stable".into());
    match page::render(&app.db, &channel).await {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}
