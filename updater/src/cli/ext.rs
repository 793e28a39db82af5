//! `upd ext enable|disable NAME`.

use super::exit;
use crate::config::{set_extension_enabled, Name};
use crate::host::machine::Machine;

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
