//! `upd ext enable|disable NAME` and `upd channel [NAME]`.

use super::exit;
use crate::config::{set_channel, set_extension_enabled, Name, CHANNEL_DROPIN};
use crate::machine::Machine;

/// Options of `ext`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Enable extension NAME (takes effect at the next pull).
    Enable {
        /// Extension name.
        name: String,
    },
    /// Disable extension NAME (its link goes at the next pull).
    Disable {
        /// Extension name.
        name: String,
    },
}

/// Run it.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let (name, on) = match &a.action {
        Action::Enable { name } => (name, true),
        Action::Disable { name } => (name, false),
    };
    let name = Name::new(name).map_err(|e| anyhow::anyhow!("extension name {name:?}: {e}"))?;
    let now = set_extension_enabled(&m.root, &name, on, &m.settings)?;
    let state = if now.extension_enabled(name.as_str()) {
        "enabled"
    } else {
        "disabled"
    };
    eprintln!("upd: {name} is {state}; run `upd pull` to apply");
    Ok(exit::OK)
}

/// Options of `channel`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    /// The channel to follow from now on (omit to show the current one).
    name: Option<String>,
}

/// Run `channel`: show or switch the channel followed. The next `upd update` follows it; a
/// release older than the running one is only taken with `upd pull VERSION --allow-downgrade`.
pub fn channel(m: Machine, a: &ChannelArgs) -> anyhow::Result<u8> {
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
