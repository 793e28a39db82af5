//! Fleet reports to the owner's report server (`REPORT_URL`): the report is queued on disk
//! (`STATE_DIR/report-queue.json`, at most [`QUEUE_CAP`], oldest dropped first) and the queue is
//! sent oldest first within [`BUDGET`]. Nothing here ever fails a command: every problem is a
//! warning, and what was not sent waits for the next run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{StatusCode, Url};
use upd_channels::report::Report;

use crate::host::machine::Machine;

/// Reports kept on disk while the server cannot be reached.
pub const QUEUE_CAP: usize = 64;
/// The whole send (connect and every request) is cut off after this.
pub const BUDGET: Duration = Duration::from_secs(2);
/// The queue's file name in the state directory.
pub const QUEUE_FILE: &str = "report-queue.json";

/// The queue file of machine `m`.
pub fn queue_path(m: &Machine) -> PathBuf {
    m.state_dir().join(QUEUE_FILE)
}

/// Queue `report` and, when `send`, send the queue (never fails; warns). Does nothing without
/// `REPORT_URL`. `upd boot` only queues: it runs before the network is up.
pub fn submit(m: &Machine, report: Report, send: bool) {
    let Some(url) = m.settings.report_url.clone() else {
        return;
    };
    let path = queue_path(m);
    let mut queue = load(&path);
    queue.push(report);
    if queue.len() > QUEUE_CAP {
        let drop = queue.len() - QUEUE_CAP;
        tracing::warn!(
            dropped = drop,
            "report queue full: dropping the oldest reports"
        );
        queue.drain(..drop);
    }
    if !send {
        store(&path, &queue);
        return;
    }
    let token = match &m.settings.report_token_file {
        Some(f) => upd_durable::read_secret(&m.root.join(f)).map_err(|e| e.to_string()),
        None => Err("REPORT_TOKEN_FILE is not set".to_string()),
    };
    let sent = match token {
        Ok(token) => send_all(&url, &token, &queue),
        Err(e) => {
            tracing::error!("fleet report not sent (kept in the queue): {e}");
            0
        }
    };
    queue.drain(..sent);
    store(&path, &queue);
}

/// The queue on disk; a missing or unreadable one is empty (with a warning when unreadable).
fn load(path: &Path) -> Vec<Report> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "report queue unreadable: starting a new one");
            return Vec::new();
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "report queue damaged: starting a new one");
        Vec::new()
    })
}

/// Write the queue (or remove it when empty).
fn store(path: &Path, queue: &[Report]) {
    let r = if queue.is_empty() {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
            _ => Ok(()),
        }
    } else {
        let bytes = serde_json::to_vec(queue).expect("reports serialise");
        upd_durable::atomic_write(path, &bytes, 0o600).map_err(|e| e.to_string())
    };
    if let Err(e) = r {
        tracing::warn!(path = %path.display(), "report queue not written: {e}");
    }
}

/// Send `queue` oldest first within [`BUDGET`]; the number of reports done with (sent, or
/// refused for good by the server). Stops at the first that may succeed later.
fn send_all(base: &Url, token: &str, queue: &[Report]) -> usize {
    let Ok(url) = base.join("v1/reports") else {
        tracing::warn!(%base, "REPORT_URL cannot take the path v1/reports");
        return 0;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("fleet report not sent: {e}");
            return 0;
        }
    };
    let client = match reqwest::Client::builder()
        .connect_timeout(BUDGET)
        .timeout(BUDGET)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("fleet report not sent: {e}");
            return 0;
        }
    };
    let mut done = 0;
    let all = async {
        for r in queue {
            let resp = client
                .post(url.clone())
                .bearer_auth(token)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(r).expect("reports serialise"))
                .send()
                .await;
            match resp {
                Ok(resp) if resp.status().is_success() => done += 1,
                Ok(resp) if permanent(resp.status()) => {
                    let status = resp.status();
                    let body = resp.text().await.unwrap_or_default();
                    tracing::warn!(%url, %status, %body, "the report server refused a report: dropped");
                    done += 1;
                }
                Ok(resp) => {
                    tracing::warn!(%url, status = %resp.status(), "fleet report not sent (kept in the queue)");
                    return;
                }
                Err(e) => {
                    tracing::warn!(%url, error = %e, "fleet report not sent (kept in the queue)");
                    return;
                }
            }
        }
    };
    // The timer is made inside the runtime (a tokio timer needs its reactor).
    let cut = rt
        .block_on(async { tokio::time::timeout(BUDGET, all).await })
        .is_err();
    // A name lookup still running in a blocking thread must not hold the command up.
    rt.shutdown_background();
    if cut {
        tracing::warn!(%url, budget = ?BUDGET, "fleet reports cut off (the rest kept in the queue)");
    }
    done
}

/// A refusal that sending again would not change (bad report); 401 is not one: a token fixed
/// later makes the queued reports go through.
fn permanent(s: StatusCode) -> bool {
    s.is_client_error()
        && ![
            StatusCode::UNAUTHORIZED,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
        ]
        .contains(&s)
}
