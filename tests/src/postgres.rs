//! A real PostgreSQL cluster of its own (Debian's postgresql: `initdb` from
//! /usr/lib/postgresql/*/bin) in a temp dir, run as the `postgres` user on a free 127.0.0.1 port,
//! stopped and removed on drop.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context};
use tempfile::TempDir;

/// The PostgreSQL server binaries of the newest installed major version.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("/usr/lib/postgresql (Debian package postgresql; scripts/prereqs installs it)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .context("no /usr/lib/postgresql/*/bin/initdb (Debian package postgresql)")
}

/// A running cluster: superuser `fleet`, trust authentication on 127.0.0.1 only.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: TempDir,
}

impl Postgres {
    /// initdb, start and wait; a few tries if the port was taken meanwhile.
    pub fn start() -> anyhow::Result<Postgres> {
        let mut last = None;
        for _ in 0..3 {
            match Postgres::try_start() {
                Ok(pg) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three tries were made"))
    }

    fn try_start() -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("upd-pg-").tempdir()?;
        // The server refuses to run as root: the cluster belongs to the postgres user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let data = dir.path().join("data");
        chown_postgres(dir.path())?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let pg = Postgres {
            bin,
            data,
            port,
            _dir: dir,
        };
        pg.as_postgres(
            "initdb",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-U",
                "fleet",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            pg.port,
            pg.data.display()
        );
        let log = pg.data.join("server.log").display().to_string();
        pg.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
        pg.as_postgres(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "fleet",
                "fleet",
            ],
        )?;
        Ok(pg)
    }

    /// Run a PostgreSQL program of `bin` as the postgres user; its output, or the error with it.
    fn as_postgres(&self, program: &str, args: &[&str]) -> anyhow::Result<Output> {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program} as postgres"))?;
        if !out.status.success() {
            bail!(
                "{program} {args:?}: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// The connection URL of database `fleet`.
    pub fn url(&self) -> String {
        format!("postgres://fleet@127.0.0.1:{}/fleet", self.port)
    }

    /// The data directory (for logs on failure).
    pub fn data(&self) -> &Path {
        &self.data
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.as_postgres("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}

/// Give `dir` to the postgres user.
fn chown_postgres(dir: &Path) -> anyhow::Result<()> {
    let st = Command::new("chown")
        .arg("postgres:postgres")
        .arg(dir)
        .status()
        .context("chown")?;
    anyhow::ensure!(st.success(), "chown postgres {}: {st}", dir.display());
    Ok(())
}
