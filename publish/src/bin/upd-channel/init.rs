//! `upd-channel init`: root version 1 and an empty draft per channel.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;
use upd_channels::manifest::Manifest;
use upd_channels::name::Name;
use upd_keys::{sign_root, RootDocument, TrustedRoot};
use upd_publish::repo::Repo;

use crate::common::{self, load_keys, refs};

/// Arguments of `init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory (created if missing).
    #[arg(long)]
    repo: PathBuf,
    /// Root key files (sign this and the next root).
    #[arg(long = "root-key", required = true, num_args = 1..)]
    root_keys: Vec<PathBuf>,
    /// Root signatures required.
    #[arg(long, default_value_t = 1)]
    root_threshold: u32,
    /// Channel key files (their public keys may sign manifests).
    #[arg(long = "channel-key", required = true, num_args = 1..)]
    channel_keys: Vec<PathBuf>,
    /// Channel signatures required on a manifest.
    #[arg(long, default_value_t = 1)]
    channel_threshold: u32,
    /// Days until the root expires.
    #[arg(long, default_value_t = 365)]
    expires_days: i64,
    /// Channels to create an empty draft for.
    #[arg(long = "channel", value_parser = common::channel)]
    channels: Vec<Name>,
}

/// Builds, self-checks and writes `roots/1.root.json`, then the drafts.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let now = Utc::now();
    let root_keys = load_keys(&args.root_keys)?;
    let channel_keys = load_keys(&args.channel_keys)?;
    let public = |keys: &[upd_keys::SigningKey]| {
        keys.iter()
            .map(upd_keys::SigningKey::public)
            .collect::<Vec<_>>()
    };
    let doc = RootDocument::new(
        1,
        common::expires_in(now, args.expires_days)?,
        &public(&root_keys),
        args.root_threshold,
        &public(&channel_keys),
        args.channel_threshold,
    )
    .context("building root version 1")?;
    let envelope = sign_root(&doc, &refs(&root_keys))
        .context("signing root version 1")?
        .to_json_bytes();
    TrustedRoot::from_shipped(&envelope, now).context("checking the new root")?;
    for channel in &args.channels {
        let draft = repo.draft_file(channel);
        anyhow::ensure!(
            !draft.exists(),
            "{} already exists; nothing written",
            draft.display()
        );
    }
    let path = repo.write_root(1, &envelope)?;
    println!(
        "wrote {} (root threshold {}, channel threshold {})",
        path.display(),
        args.root_threshold,
        args.channel_threshold
    );
    for channel in &args.channels {
        let path = repo.save_draft(&Manifest::new(channel.clone(), now))?;
        println!("wrote {} (empty draft)", path.display());
    }
    Ok(())
}
