//! The report server of a test: the real `upd-channel fleet serve` on a free 127.0.0.1 port, on
//! SQLite (a file in its temp dir) or on a PostgreSQL cluster of its own; and how machines are
//! pointed at it.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};

use upd_tests::bins;
use upd_tests::postgres::Postgres;

use crate::os::node::Node;
use crate::pull::rig::text_of;

/// Which database the server stores reports in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A running report server (killed on drop; the PostgreSQL cluster is stopped after it).
pub(crate) struct ReportServer {
    child: Child,
    /// The base URL (`http://127.0.0.1:PORT/`).
    pub(crate) url: String,
    /// The `--db` value.
    pub(crate) db: String,
    /// The fleet's token.
    pub(crate) token: String,
    pub(crate) rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    // Dropped after the child is killed (fields drop in order): the cluster, then the files.
    _pg: Option<Postgres>,
    dir: tempfile::TempDir,
}

impl ReportServer {
    /// Start the server on `backend` with the default limits and `extra` options.
    pub(crate) fn start(backend: Backend, extra: &[&str]) -> ReportServer {
        let dir = tempfile::Builder::new()
            .prefix("upd-fleet-")
            .tempdir()
            .unwrap();
        let (db, pg) = match backend {
            Backend::Sqlite => (
                format!("sqlite:{}", dir.path().join("reports.db").display()),
                None,
            ),
            Backend::Postgres => {
                let pg = Postgres::start().expect("a PostgreSQL cluster of the test's own");
                (pg.url(), Some(pg))
            }
        };
        let token = hex::encode(rand16());
        let token_file = dir.path().join("token");
        fs::write(&token_file, format!("{token}\n")).unwrap();
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
        let mut child = Command::new(bins::upd_channel())
            .args(["fleet", "serve", "--listen", "127.0.0.1:0", "--db", &db])
            .arg("--token-file")
            .arg(&token_file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.path().join("server.log")).unwrap())
            .spawn()
            .expect("start upd-channel fleet serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_string();
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "fleet serve printed {url:?}; log:\n{}",
            fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        ReportServer {
            child,
            url,
            db,
            token,
            rt: tokio::runtime::Runtime::new().unwrap(),
            http: reqwest::Client::new(),
            _pg: pg,
            dir,
        }
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the server process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// POST `body` to /v1/reports with `token` (None: no Authorization) and content type `ctype`:
    /// the status and the JSON answer.
    pub(crate) fn post(
        &self,
        body: Vec<u8>,
        token: Option<&str>,
        ctype: &str,
    ) -> (u16, serde_json::Value) {
        self.rt.block_on(async {
            let mut req = self
                .http
                .post(format!("{}v1/reports", self.url))
                .header("content-type", ctype)
                .body(body);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.expect("the server answers");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            let v =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
            (status, v)
        })
    }

    /// GET `path` (relative to the base URL): the status and body.
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        self.rt.block_on(async {
            let resp = self
                .http
                .get(format!("{}{path}", self.url))
                .send()
                .await
                .expect("the server answers");
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    }

    /// `upd-channel fleet SUB --db DB ARGS…`.
    pub(crate) fn fleet(&self, sub: &str, args: &[&str]) -> Output {
        Command::new(bins::upd_channel())
            .args(["fleet", sub, "--db", &self.db])
            .args(args)
            .output()
            .unwrap()
    }

    /// `fleet status --channel stable --json`, parsed.
    pub(crate) fn status(&self) -> serde_json::Value {
        let out = self.fleet("status", &["--channel", "stable", "--json"]);
        assert!(out.status.success(), "fleet status: {}", text_of(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The release `version`'s entry of [`ReportServer::status`] (null when absent).
    pub(crate) fn release(&self, version: &str) -> serde_json::Value {
        self.status()["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == version)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// Point `node`'s upd at this server: the token file (mode 0600) and the two config lines.
    pub(crate) fn enroll(&self, node: &Node) {
        let root = node.m.root();
        let token = root.join("etc/upd/report.token");
        fs::write(&token, &self.token).unwrap();
        fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
        let conf = root.join("etc/upd/upd.conf");
        let mut text = fs::read_to_string(&conf).unwrap();
        text += &format!(
            "REPORT_URL={}\nREPORT_TOKEN_FILE=/etc/upd/report.token\n",
            self.url
        );
        fs::write(&conf, text).unwrap();
    }
}

impl Drop for ReportServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- report server log:\n{}", self.log());
        }
    }
}

/// 16 random bytes.
pub(crate) fn rand16() -> [u8; 16] {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b
}

/// A valid version-1 report of machine `id` (edit it to make it bad).
pub(crate) fn report(id: &str, event: &str) -> serde_json::Value {
    serde_json::json!({
        "version": 1, "machine_id": id, "group": "default", "channel": "stable",
        "event": event, "time": chrono::Utc::now().to_rfc3339(),
        "booted": {"os": "1.0.0", "generation": 1}, "pending": null, "phase": "idle",
        "error": null, "fleet_position": null
    })
}

/// Runs a test body once on SQLite and once on a real PostgreSQL: `mod NAME { sqlite, postgres }`.
macro_rules! on_both_dbs {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[test]
            fn sqlite() {
                $body(Backend::Sqlite);
            }
            #[test]
            fn postgres() {
                $body(Backend::Postgres);
            }
        }
    };
}
pub(crate) use on_both_dbs;
