//! `upd-channel fleet bench` (hidden; scripts/bench-fleet): simulated machines report a rollout
//! to a running report server; prints reports/s and the ingest latency percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use tokio::sync::Semaphore;

/// Arguments of `fleet bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's base URL.
    #[arg(long)]
    url: String,
    /// The token file.
    #[arg(long)]
    token_file: PathBuf,
    /// Simulated machines.
    #[arg(long, default_value_t = 100_000)]
    machines: u64,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// The reports of machine `i` over the rollout: all check; half stage, boot and are marked
/// good (2 % of those fail their health check).
fn reports(i: u64) -> Vec<serde_json::Value> {
    let id = format!(
        "{:032x}",
        u128::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    );
    let pos = (i % 1000) as f64 / 1000.0;
    let base = |event: &str, os: &str, pending: Option<&str>, error: Option<&str>| {
        serde_json::json!({
            "version": 1, "machine_id": id, "group": format!("g{}", i % 4), "channel": "stable",
            "event": event, "time": Utc::now().to_rfc3339(),
            "booted": {"os": os, "generation": 1}, "pending": pending, "phase": "idle",
            "error": error, "fleet_position": pending.map(|_| pos)
        })
    };
    let mut out = vec![base("check", "1.0.0", None, None)];
    if i.is_multiple_of(2) {
        out.push(base("stage", "1.0.0", Some("2.0.0"), None));
        out.push(base("boot", "2.0.0", Some("2.0.0"), None));
        if i.is_multiple_of(100) {
            out.push(base(
                "mark-good",
                "2.0.0",
                Some("2.0.0"),
                Some("rolled_back"),
            ));
        } else {
            out.push(base("mark-good", "2.0.0", None, None));
        }
    }
    out
}

/// Send every machine's reports (each machine's in order) and print the figures.
pub async fn run(a: Args) -> Result<()> {
    let token = upd_durable::read_secret(&a.token_file).context("reading --token-file")?;
    let url = format!(
        "{}v1/reports",
        a.url.trim_end_matches('/').to_string() + "/"
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()?;
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..a.machines {
        let permit = gate.clone().acquire_owned().await?;
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut refused = 0u64;
            for r in reports(i) {
                let t = Instant::now();
                let resp = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&r).expect("serialises"))
                    .send()
                    .await;
                lat.push(t.elapsed());
                if !resp.is_ok_and(|r| r.status().is_success()) {
                    refused += 1;
                }
            }
            drop(permit);
            (lat, refused)
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (lat, r) = t.await?;
        all.extend(lat);
        refused += r;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "machines={} reports={} refused={refused} seconds={secs:.1} reports_per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        a.machines,
        all.len(),
        all.len() as f64 / secs,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
    Ok(())
}
