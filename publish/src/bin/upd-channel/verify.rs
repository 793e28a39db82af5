//! `upd-channel verify`: a channel checked exactly as a machine checks it, from a directory or a URL.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::Utc;
use upd_channels::manifest::MAX_MANIFEST_BYTES;
use upd_channels::name::Name;
use upd_channels::verify::{verify_manifest, Expect};
use upd_keys::{TrustedRoot, MAX_ROOT_LEN};

use crate::common;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["repo", "url"])))]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: Option<PathBuf>,
    /// The repository's base URL.
    #[arg(long)]
    url: Option<String>,
    /// The channel to verify.
    #[arg(long, value_parser = common::channel)]
    channel: Name,
    /// The trusted root to start from (default: the source's roots/1.root.json); newer roots
    /// are followed from the source.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The highest serial already seen: a lower one is refused as a rollback.
    #[arg(long)]
    highest_serial: Option<u64>,
}

/// Where the repository's files come from.
enum Source {
    Dir(PathBuf),
    Url(String, tokio::runtime::Runtime, reqwest::Client),
}

impl Source {
    /// The file at `rel`, `None` when absent, at most `limit + 1` bytes (so that size checks see
    /// an oversized file as oversized without reading it all).
    fn get(&self, rel: &str, limit: usize) -> Result<Option<Vec<u8>>> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(rel);
                let file = match std::fs::File::open(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    r => r.with_context(|| format!("opening {}", path.display()))?,
                };
                let mut buf = Vec::new();
                file.take(limit as u64 + 1)
                    .read_to_end(&mut buf)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(Some(buf))
            }
            Source::Url(base, rt, client) => {
                let url = format!("{}/{rel}", base.trim_end_matches('/'));
                rt.block_on(fetch(client, &url, limit))
                    .with_context(|| format!("fetching {url}"))
            }
        }
    }

    fn describe(&self, rel: &str) -> String {
        match self {
            Source::Dir(dir) => dir.join(rel).display().to_string(),
            Source::Url(base, ..) => format!("{}/{rel}", base.trim_end_matches('/')),
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str, limit: usize) -> Result<Option<Vec<u8>>> {
    let mut resp = client.get(url).send().await?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    resp.error_for_status_ref()?;
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > limit {
            buf.truncate(limit + 1);
            break;
        }
    }
    Ok(Some(buf))
}

/// Follows the root chain, verifies the manifest, prints a summary; any refusal is an error.
pub fn run(args: Args) -> Result<()> {
    let source = match (&args.repo, &args.url) {
        (Some(dir), _) => Source::Dir(dir.clone()),
        (None, Some(url)) => Source::Url(
            url.clone(),
            tokio::runtime::Runtime::new()?,
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        ),
        (None, None) => bail!("give --repo or --url"),
    };
    let now = Utc::now();
    let root = trusted_root(&source, args.root.as_ref(), now)?;
    let rel = format!("channels/{}/manifest.json", args.channel);
    let bytes = source
        .get(&rel, MAX_MANIFEST_BYTES * 2)?
        .with_context(|| format!("{} does not exist", source.describe(&rel)))?;
    let expect = Expect {
        channel: &args.channel,
        highest_serial: args.highest_serial,
        now,
    };
    let manifest = verify_manifest(&bytes, &root, expect)
        .with_context(|| format!("{} refused", source.describe(&rel)))?;
    println!(
        "channel {}: OK (root version {}), serial {}, issued {}, expires {}",
        manifest.channel,
        root.version(),
        manifest.serial,
        manifest.issued,
        manifest.expires
    );
    for r in &manifest.releases {
        let exts: Vec<String> = r
            .extensions
            .iter()
            .map(|e| format!("{} {}", e.name, e.version))
            .collect();
        let flags = crate::status::flags(r);
        println!(
            "  release {}{flags}: {} [{}]; {}",
            r.version,
            r.os.image.path,
            exts.join(", "),
            crate::status::rollout_state(r, now)
        );
    }
    Ok(())
}

/// The starting root, rotated through `roots/N+1.root.json`, ... as long as the source has them.
fn trusted_root(
    source: &Source,
    start: Option<&PathBuf>,
    now: chrono::DateTime<Utc>,
) -> Result<TrustedRoot> {
    let first = match start {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => source
            .get("roots/1.root.json", MAX_ROOT_LEN)?
            .with_context(|| format!("{} does not exist", source.describe("roots/1.root.json")))?,
    };
    let mut root =
        TrustedRoot::from_shipped(&first, now).context("the starting root is refused")?;
    loop {
        let rel = format!("roots/{}.root.json", root.version() + 1);
        let Some(next) = source.get(&rel, MAX_ROOT_LEN)? else {
            break;
        };
        root = root
            .rotate(&next, now)
            .with_context(|| format!("{} refused", source.describe(&rel)))?;
    }
    root.check_not_expired(now).context("the newest root")?;
    Ok(root)
}
