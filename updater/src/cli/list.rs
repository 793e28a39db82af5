//! `upd list`: the channel's releases and extension builds. Reads only.

use chrono::Utc;

use super::{exit, print_json, runtime};
use crate::host::machine::Machine;
use crate::ops::session::View;

/// Options of `list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

/// Run `list`.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let now = Utc::now();
    let manifest = runtime()?.block_on(View::open(m)?.check_channel(now))?;
    if a.json {
        return print_json(&manifest).map(|()| exit::OK);
    }
    println!(
        "channel {} serial {} expires {}",
        manifest.channel, manifest.serial, manifest.expires
    );
    for r in &manifest.releases {
        let flags = [
            (r.withdrawn, " withdrawn"),
            (r.paused, " paused"),
            (r.barrier, " barrier"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, t)| *t)
        .collect::<String>();
        println!(
            "{} ({} {}){flags}",
            r.version,
            r.os.identity.id,
            r.os.identity.version_id.as_deref().unwrap_or("-")
        );
        for e in &r.extensions {
            println!("  {} {} ({} bytes)", e.name, e.version, e.image.size);
        }
    }
    Ok(exit::OK)
}
