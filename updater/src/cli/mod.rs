//! The `upd` command line: global options and one module per subcommand, each of which runs an
//! operation and renders its result; `exit` holds the documented exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Root, Settings};
use crate::host::machine::Machine;

mod boot;
mod channel;
mod check;
pub mod exit;
mod ext;
mod gc;
mod list;
mod mark_good;
mod progress;
mod pull;
mod rollback;
mod status;

/// upd: atomic OS and system-extension updates from a signed channel.
#[derive(Debug, Parser)]
#[command(name = "upd", version, about)]
pub struct Cli {
    /// Operate on the machine rooted at DIR (like systemd-sysext --root).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// An extra configuration file read after the layered ones (a host path).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a setting, KEY=VALUE (repeatable); wins over every file.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// More log output (-v info, -vv debug); UPD_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the running OS, generations, links and any unfinished switch.
    Status(status::Args),
    /// Check the channel and report what would be installed and whether it will merge.
    Check(check::Args),
    /// List the releases and extension builds of the channel.
    List(list::Args),
    /// Fetch, verify, check and switch to the newest builds for the running OS.
    Pull(pull::Args),
    /// What the timer runs: like pull, with plain logs.
    Update(pull::Args),
    /// Remove store images no generation uses.
    Gc(gc::Args),
    /// Early boot: finish or undo a switch cut short and link the generation of the booted OS slot, before systemd-sysext merges.
    Boot(boot::Args),
    /// After a healthy boot: run health checks, mark the slot successful, make the new generation active.
    MarkGood(mark_good::Args),
    /// Go back to the previous generation (its OS slot boots next, or its extension set now).
    Rollback(rollback::Args),
    /// Enable or disable an extension.
    Ext(ext::Args),
    /// Show or switch the channel this machine follows.
    Channel(channel::Args),
}

impl Cli {
    fn machine(&self) -> anyhow::Result<Machine> {
        let root = Root::new(&self.root);
        let settings = Settings::load(&root, self.config.as_deref(), &self.set)?;
        Ok(Machine::new(root, settings))
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,upd=info",
        1 => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("UPD_LOG").unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Parse the command line, run the subcommand, print the error chain once and map it to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = cli.machine().and_then(|m| match &cli.command {
        Command::Status(a) => status::run(m, a),
        Command::Check(a) => check::run(m, a),
        Command::List(a) => list::run(m, a),
        Command::Pull(a) => pull::run(m, a, false),
        Command::Update(a) => pull::run(m, a, true),
        Command::Gc(a) => gc::run(m, a),
        Command::Boot(a) => boot::run(m, a),
        Command::MarkGood(a) => mark_good::run(m, a),
        Command::Rollback(a) => rollback::run(m, a),
        Command::Ext(a) => ext::run(m, a),
        Command::Channel(a) => channel::run(m, a),
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("upd: {e:#}");
            ExitCode::from(exit::of(&e))
        }
    }
}

/// Print `value` as JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A tokio runtime for one command.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
