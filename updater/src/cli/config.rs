//! `upd config`: every effective setting and where it came from, checked as every command loads it.

use std::path::Path;

use super::{exit, print_json};
use crate::config::{explain, render_line, Root};

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
    // Each value as a line that reads back as that value (quoted where it has to be).
    let lines: Vec<String> = settings
        .iter()
        .map(|e| render_line(e.key, &e.value).unwrap_or_else(|| format!("{}={}", e.key, e.value)))
        .collect();
    let width = lines.iter().map(String::len).max().unwrap_or(0);
    for (line, e) in lines.iter().zip(&settings) {
        println!("{line:width$}  # {}", e.source);
    }
    Ok(exit::OK)
}
