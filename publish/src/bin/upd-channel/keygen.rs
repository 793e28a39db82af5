//! `upd-channel keygen`: a new Ed25519 key file.

use std::path::PathBuf;

use anyhow::{Context, Result};

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the PKCS#8 key (created with mode 0600, never overwritten).
    #[arg(long)]
    out: PathBuf,
}

/// Writes the key, then prints its key id (stderr) and public key JSON (stdout).
pub fn run(args: Args) -> Result<()> {
    let key = upd_keys::write_new_key(&args.out)
        .with_context(|| format!("creating key {}", args.out.display()))?;
    eprintln!("wrote {} (key id {})", args.out.display(), key.key_id());
    let public = serde_json::json!({ "keyid": key.key_id().as_str(), "public": key.public() });
    println!("{}", serde_json::to_string_pretty(&public)?);
    Ok(())
}
