//! A real single-member etcd (Debian's etcd-server) on free 127.0.0.1 ports with its own data directory, killed on drop.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use tempfile::TempDir;

/// The etcd binary of the Debian package.
const ETCD: &str = "/usr/bin/etcd";

/// A running etcd server, its client URL on loopback.
pub struct Etcd {
    child: Child,
    client_url: String,
    dir: TempDir,
    http: reqwest::Client,
}

impl Etcd {
    /// Start etcd on free loopback ports and wait until it answers a range; a few tries if a port was taken meanwhile.
    pub async fn start() -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(etcd) => return Ok(etcd),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three tries were made"))
    }

    async fn try_start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (client, peer) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(ETCD)
            .args(["--name", "upd-test"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("upd-test={peer_url}")])
            .args(["--initial-cluster-state", "new", "--logger", "zap"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {ETCD} (Debian package etcd-server)"))?;
        let mut etcd = Self {
            child,
            client_url,
            dir,
            http: reqwest::Client::new(),
        };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("etcd exited with {status} while starting: {}", self.log());
            }
            if self.current_revision().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("etcd did not answer within 20 s: {}", self.log())
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> reqwest::Url {
        self.client_url.parse().expect("a loopback URL parses")
    }

    /// etcd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// The store's current revision.
    pub async fn current_revision(&self) -> anyhow::Result<i64> {
        let answer = self
            .call("/v3/kv/range", json!({ "key": B64.encode("\0") }))
            .await?;
        int(&answer["header"]["revision"])
    }

    /// `key`'s value and mod revision as of store revision `revision` (latest if None); None if absent then.
    pub async fn value_at(
        &self,
        key: &str,
        revision: Option<i64>,
    ) -> anyhow::Result<Option<(Vec<u8>, i64)>> {
        let mut req = json!({ "key": B64.encode(key) });
        if let Some(r) = revision {
            req["revision"] = json!(r.to_string());
        }
        let answer = self.call("/v3/kv/range", req).await?;
        let Some(kv) = answer["kvs"].get(0) else {
            return Ok(None);
        };
        let value = B64.decode(kv["value"].as_str().unwrap_or_default())?;
        Ok(Some((value, int(&kv["mod_revision"])?)))
    }

    /// Put `value` at `key` unconditionally (as an operator or another tool would).
    pub async fn put(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let req = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        self.call("/v3/kv/put", req).await.map(|_| ())
    }

    async fn call(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.client_url))
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("etcd {path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (etcd binds it itself).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// protobuf JSON int64: a string, left out when 0.
fn int(v: &Value) -> anyhow::Result<i64> {
    match v {
        Value::Null => Ok(0),
        Value::String(s) => Ok(s.parse()?),
        other => other.as_i64().context("not an integer"),
    }
}
