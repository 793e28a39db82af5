//! `upd-channel fleet serve|status|guard`: the report server, the rollout's status from its
//! database, and the guard that pauses a failing rollout (signing as `pause` + `sign` would).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use upd_channels::name::Name;
use upd_channels::version::OsVersion;
use upd_publish::fleet::db::Db;
use upd_publish::fleet::guard::{self, Action};
use upd_publish::fleet::server::{self, Limits, DEFAULT_WAVES};
use upd_publish::fleet::status;
use upd_publish::repo::{set_paused, Repo};

use crate::common::{self, load_keys};

/// Arguments of `fleet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serve the report endpoint (POST /v1/reports) and the rollout page (GET /).
    Serve(ServeArgs),
    /// Per release of a channel: machines running it, staged, booted, good, failed, fallen back.
    Status(StatusArgs),
    /// Pause each release whose failure share passes the bound, and sign the manifest.
    Guard(GuardArgs),
    /// Load generator for scripts/bench-fleet: simulated machines report a rollout.
    #[command(hide = true)]
    Bench(crate::fleet_bench::Args),
}

/// The report database.
#[derive(Debug, clap::Args)]
struct DbArg {
    /// sqlite:PATH (created when missing) or postgres://USER@HOST:PORT/DB.
    #[arg(long)]
    db: String,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[command(flatten)]
    db: DbArg,
    /// File holding the fleet's bearer token (mode 0600: not readable by group or others).
    #[arg(long)]
    token_file: PathBuf,
    /// Reports accepted per machine per minute.
    #[arg(long, default_value_t = Limits::default().per_machine_per_minute)]
    per_machine_per_minute: u32,
    /// Requests accepted per second from all machines together.
    #[arg(long, default_value_t = Limits::default().global_per_second)]
    global_per_second: u32,
    /// Database connections (PostgreSQL; SQLite has one writer).
    #[arg(long, default_value_t = 8)]
    connections: u32,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    db: DbArg,
    /// The channel.
    #[arg(long, value_parser = common::channel, default_value = "stable")]
    channel: Name,
    /// Upper bounds of the waves, percent of the fleet, ascending.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_WAVES)]
    waves: Vec<f64>,
    /// Print as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct GuardArgs {
    #[command(flatten)]
    db: DbArg,
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The channel.
    #[arg(long, value_parser = common::channel)]
    channel: Name,
    /// Channel key files to sign with.
    #[arg(long = "key", required = true, num_args = 1..)]
    keys: Vec<PathBuf>,
    /// Pause a release when more than this share of the machines that tried it failed their
    /// health check, were refused or fell back (2%, or 0.02).
    #[arg(long, value_parser = guard::parse_bound)]
    max_failed: f64,
    /// Judge a release only once at least this many machines tried it.
    #[arg(long, default_value_t = 1)]
    min_tried: i64,
    /// Days until the re-signed manifest expires.
    #[arg(long, default_value_t = 7)]
    expires_days: i64,
}

/// Run the subcommand.
pub fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        match args.command {
            Command::Serve(a) => serve(a).await,
            Command::Status(a) => status(a).await,
            Command::Guard(a) => guard(a).await,
            Command::Bench(a) => crate::fleet_bench::run(a).await,
        }
    })
}

async fn serve(a: ServeArgs) -> Result<()> {
    let token = upd_durable::read_secret(&a.token_file).context("reading --token-file")?;
    let db = Db::open(&a.db.db, a.connections).await?;
    let limits = Limits {
        per_machine_per_minute: a.per_machine_per_minute,
        global_per_second: a.global_per_second,
    };
    let (bound, fut) = server::bind(db, &token, limits, a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    println!("http://{bound}/");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    fut.await.context("serving reports")
}

fn check_waves(w: &[f64]) -> Result<()> {
    anyhow::ensure!(
        !w.is_empty()
            && w.windows(2).all(|p| p[0] < p[1])
            && w.iter().all(|b| (0.0..=100.0).contains(b)),
        "--waves {w:?}: expected ascending percentages in 0..100"
    );
    Ok(())
}

async fn status(a: StatusArgs) -> Result<()> {
    check_waves(&a.waves)?;
    let db = Db::open(&a.db.db, 3).await?;
    let st = status::status(&db, a.channel.as_str(), &a.waves).await?;
    db.close().await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", status::render(&st));
    }
    Ok(())
}

async fn guard(a: GuardArgs) -> Result<()> {
    let keys = load_keys(&a.keys)?;
    let repo = Repo::new(&a.repo);
    let signed = repo
        .published_manifest(&a.channel)?
        .with_context(|| format!("channel {} has no signed manifest to guard", a.channel))?;
    let db = Db::open(&a.db.db, 3).await?;
    let st = status::status(&db, a.channel.as_str(), &DEFAULT_WAVES).await?;
    db.close().await;
    let verdicts = guard::decide(&st, &signed, a.max_failed, a.min_tried);
    for v in &verdicts {
        println!("{}", guard::line(v, a.max_failed));
    }
    let pause: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.action == Action::Pause)
        .map(|v| v.version.as_str())
        .collect();
    if pause.is_empty() {
        println!("nothing to pause; manifest left as it is");
        return Ok(());
    }
    // The same edit as `upd-channel pause`, then the same signing as `upd-channel sign`.
    let mut draft = repo.load_draft(&a.channel)?;
    for v in &pause {
        set_paused(&mut draft, &OsVersion::parse(v)?, true)?;
    }
    repo.save_draft(&draft)?;
    let envelope = crate::sign::sign_draft(&repo, &a.channel, &keys, a.expires_days)?;
    let path = repo.write_manifest(&a.channel, &envelope)?;
    crate::sign::report_signatures(&repo, &path, &envelope)?;
    println!("paused {}; signed {}", pause.join(", "), path.display());
    Ok(())
}
