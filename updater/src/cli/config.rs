//! `upd config`: every effective setting and where it came from, checked as every command loads it.

use std::path::Path;

use super::{exit, print_json};
use crate::config::{explain, Root};

/// Options of `config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the settings as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

/// Run `config`: load the configuration (a bad line is the error, with its file and line) and
/// print one `KEY=VALUE  # source` line per key, a valid configuration file in itself.
pub fn run(root: &Root, config: Option<&Path>, set: &[String], a: &Args) -> anyhow::Result<u8> {
    let settings = explain(root, config, set)?;
    if a.json {
        print_json(&serde_json::json!({ "settings": settings }))?;
        return Ok(exit::OK);
    }
    let width = settings
        .iter()
        .map(|e| e.key.len() + e.value.len() + 1)
        .max()
        .unwrap_or(0);
    for e in &settings {
        let line = format!("{}={}", e.key, e.value);
        println!("{line:width$}  # {}", e.source);
    }
    Ok(exit::OK)
}
