//! `upd-channel rotate-root`: the next root version, signed by the old and the new root keys.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;
use upd_keys::{sign_root, RootDocument, SigningKey};
use upd_publish::repo::Repo;

use crate::common::{self, load_keys, refs};

/// Arguments of `rotate-root`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// Root keys of the current root (a threshold of them must sign).
    #[arg(long = "old-key", required = true, num_args = 1..)]
    old_keys: Vec<PathBuf>,
    /// Root keys of the new root.
    #[arg(long = "new-root-key", required = true, num_args = 1..)]
    new_root_keys: Vec<PathBuf>,
    /// Root signatures the new root requires.
    #[arg(long, default_value_t = 1)]
    root_threshold: u32,
    /// Channel keys of the new root; the current channel keys are kept when none is given.
    #[arg(long = "channel-key", num_args = 1..)]
    channel_keys: Vec<PathBuf>,
    /// Channel signatures the new root requires (default: the current one).
    #[arg(long)]
    channel_threshold: Option<u32>,
    /// Days until the new root expires.
    #[arg(long, default_value_t = 365)]
    expires_days: i64,
}

/// Builds root N+1, checks it rotates from root N, and writes it.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let now = Utc::now();
    let current = repo.trusted_root(now).or_else(|_| {
        // An expired current root may still be rotated away from: only trust its signatures.
        let roots = repo.read_roots()?;
        let (first, chain) = roots.split_first().context("no roots/1.root.json")?;
        let mut t = upd_keys::TrustedRoot::from_shipped(first, now)?;
        for next in chain {
            t = t.rotate(next, now)?;
        }
        anyhow::Ok(t)
    })?;
    let old = current.document();
    let old_keys = load_keys(&args.old_keys)?;
    let new_keys = load_keys(&args.new_root_keys)?;
    let channel = if args.channel_keys.is_empty() {
        old.roles
            .channel
            .keyids
            .iter()
            .map(|id| old.keys[id])
            .collect()
    } else {
        load_keys(&args.channel_keys)?
            .iter()
            .map(SigningKey::public)
            .collect::<Vec<_>>()
    };
    let version = old.version + 1;
    let doc = RootDocument::new(
        version,
        common::expires_in(now, args.expires_days)?,
        &new_keys.iter().map(SigningKey::public).collect::<Vec<_>>(),
        args.root_threshold,
        &channel,
        args.channel_threshold
            .unwrap_or(old.roles.channel.threshold),
    )
    .with_context(|| format!("building root version {version}"))?;
    let signers: Vec<&SigningKey> = refs(&old_keys).into_iter().chain(refs(&new_keys)).collect();
    let envelope = sign_root(&doc, &signers)?.to_json_bytes();
    current.rotate(&envelope, now).with_context(|| {
        format!(
            "root version {version} does not rotate from version {}",
            old.version
        )
    })?;
    let path = repo.write_root(version, &envelope)?;
    println!(
        "wrote {} (signed by {} old and {} new root keys)",
        path.display(),
        old_keys.len(),
        new_keys.len()
    );
    Ok(())
}
