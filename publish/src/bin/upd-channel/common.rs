//! Helpers shared by the subcommands: logging, key loading, channel names, durations.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use upd_channels::manifest::Manifest;
use upd_channels::name::Name;
use upd_channels::version::OsVersion;
use upd_keys::SigningKey;
use upd_publish::repo::Repo;

/// Logs go to stderr; `UPD_LOG` (an env filter) overrides the `-v` level.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("UPD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Loads each key file, naming the file that fails.
pub fn load_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>> {
    paths
        .iter()
        .map(|p| SigningKey::load(p).with_context(|| format!("loading key {}", p.display())))
        .collect()
}

/// Borrows each key, as the signing APIs take them.
pub fn refs(keys: &[SigningKey]) -> Vec<&SigningKey> {
    keys.iter().collect()
}

/// Parses a channel name from the command line.
pub fn channel(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| e.to_string())
}

/// `now + days`, refusing absurd values.
pub fn expires_in(now: DateTime<Utc>, days: i64) -> Result<DateTime<Utc>> {
    anyhow::ensure!(
        (0..=36_500).contains(&days),
        "--expires-days {days} is outside 0..36500"
    );
    Ok(now + Duration::days(days))
}

/// The release a draft edit applies to: `--repo`, `--channel`, `--version`.
#[derive(Debug, clap::Args)]
pub struct ReleaseRef {
    /// The repository directory.
    #[arg(long)]
    pub repo: PathBuf,
    /// The channel whose draft is edited.
    #[arg(long, value_parser = channel)]
    pub channel: Name,
    /// The release.
    #[arg(long)]
    pub version: OsVersion,
}

impl ReleaseRef {
    /// Load the channel's draft, apply `edit` to this release, validate and write it; the path written.
    pub fn edit_draft(
        &self,
        edit: impl FnOnce(&mut Manifest, &OsVersion) -> Result<()>,
    ) -> Result<PathBuf> {
        let repo = Repo::new(&self.repo);
        let mut draft = repo.load_draft(&self.channel)?;
        edit(&mut draft, &self.version)?;
        Ok(repo.save_draft(&draft)?)
    }
}
