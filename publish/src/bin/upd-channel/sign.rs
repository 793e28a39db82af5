//! `upd-channel sign`: the draft signed into the channel's manifest, or a co-signature added.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;
use upd_channels::manifest::{MANIFEST_PAYLOAD_TYPE, MAX_MANIFEST_BYTES};
use upd_channels::name::Name;
use upd_channels::verify::sign_manifest;
use upd_keys::Envelope;
use upd_publish::repo::Repo;

use crate::common::{self, load_keys, refs};

/// Arguments of `sign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The channel to sign.
    #[arg(long, value_parser = common::channel)]
    channel: Name,
    /// Channel key files to sign with.
    #[arg(long = "key", required = true, num_args = 1..)]
    keys: Vec<PathBuf>,
    /// Days until the manifest expires (machines refuse it afterwards).
    #[arg(long, default_value_t = 7)]
    expires_days: i64,
    /// Co-sign the existing manifest.json without changing its payload.
    #[arg(long)]
    add_signature: bool,
}

/// Signs (serial bumped, issued now) or co-signs, and writes manifest.json atomically.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let keys = load_keys(&args.keys)?;
    let path = repo.manifest_file(&args.channel);
    let envelope = if args.add_signature {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut env = Envelope::parse(&bytes, MAX_MANIFEST_BYTES * 2)
            .with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(
            env.payload_type() == MANIFEST_PAYLOAD_TYPE,
            "{}: payload type is {}, not a manifest",
            path.display(),
            env.payload_type()
        );
        for key in &keys {
            env.add_signature(key);
        }
        env.to_json_bytes()
    } else {
        sign_draft(&repo, &args.channel, &keys, args.expires_days)?
    };
    repo.write_manifest(&args.channel, &envelope)?;
    report_signatures(&repo, &path, &envelope)
}

/// The channel's draft signed with a new serial, issued now: the draft is saved and the
/// envelope returned (for the caller to write). Shared by `sign` and `fleet guard`.
pub fn sign_draft(
    repo: &Repo,
    channel: &Name,
    keys: &[upd_keys::SigningKey],
    expires_days: i64,
) -> Result<Vec<u8>> {
    let now = Utc::now();
    let mut draft = repo.load_draft(channel)?;
    let published = repo.published_serial(channel)?.unwrap_or(0);
    draft.serial = draft.serial.max(published) + 1;
    draft.issued = now;
    draft.expires = common::expires_in(now, expires_days)?;
    draft
        .validate()
        .map_err(anyhow::Error::msg)
        .context("validating the draft")?;
    let envelope = sign_manifest(&draft, &refs(keys));
    repo.save_draft(&draft)?;
    println!(
        "serial {} issued {} expires {}",
        draft.serial, draft.issued, draft.expires
    );
    Ok(envelope)
}

/// Say how many signatures the written manifest carries, against the root's threshold.
pub fn report_signatures(repo: &Repo, path: &std::path::Path, envelope: &[u8]) -> Result<()> {
    let count = Envelope::parse(envelope, usize::MAX)?.signatures().len();
    let threshold = repo
        .trusted_root(Utc::now())
        .map(|r| r.document().roles.channel.threshold);
    match threshold {
        Ok(t) if (count as u32) < t => println!(
            "wrote {} with {count} signature(s); {t} required: co-sign with --add-signature",
            path.display()
        ),
        _ => println!("wrote {} with {count} signature(s)", path.display()),
    }
    Ok(())
}
