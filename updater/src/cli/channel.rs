//! `upd channel [NAME]`: show or switch the channel this machine follows.

use super::exit;
use crate::config::{set_channel, Name, CHANNEL_DROPIN};
use crate::host::machine::Machine;

/// Options of `channel`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The channel to follow from now on (omit to show the current one).
    name: Option<String>,
}

/// Run `channel`: show or switch the channel followed. The next `upd update` follows it; a
/// release older than the running one is only taken with `upd pull VERSION --allow-downgrade`.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let Some(name) = &a.name else {
        println!("{}", m.settings.channel);
        return Ok(exit::OK);
    };
    let name = Name::new(name).map_err(|e| anyhow::anyhow!("channel name {name:?}: {e}"))?;
    let (now, overridden) = set_channel(&m.root, &name)?;
    if overridden {
        anyhow::bail!(
            "a configuration file read after {CHANNEL_DROPIN} sets CHANNEL={}; change it there",
            now.channel
        );
    }
    eprintln!(
        "upd: following channel {name} (was {}); the next `upd update` checks it. Moving to an older release needs `upd pull VERSION --allow-downgrade`",
        m.settings.channel
    );
    Ok(exit::OK)
}
