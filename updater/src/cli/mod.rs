//! The `upd` command line: global options and one module per subcommand, each of which runs an
//! operation and renders its result; `exit` holds the documented exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Root, Settings};
use crate::host::machine::Machine;

mod boot;
mod channel;
mod check;
mod config;
pub mod exit;
mod ext;
mod fleet;
mod gc;
mod list;
pub mod log;
mod mark_good;
pub mod notify;
mod progress;
mod pull;
pub mod report;
mod rollback;
mod status;

/// upd: atomic OS and system-extension updates from a signed channel.
#[derive(Debug, Parser)]
#[command(name = "upd", version, about, after_help = exit::help())]
pub struct Cli {
    /// Operate on the machine rooted at DIR (like systemd-sysext --root).
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// An extra configuration file read after the layered ones (a host path).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override a setting, KEY=VALUE (repeatable, before or after the subcommand; all apply,
    /// later ones win); wins over every file.
    #[arg(long = "set", value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
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
    /// Show every effective setting and where it came from (default, FILE:LINE, drop-in, --set).
    Config(config::Args),
}

/// The id of the `--set` given after a subcommand.
const SET_AFTER: &str = "set_after_subcommand";

impl Cli {
    /// The whole command line as parsed, each subcommand with its own `--set` (what the man
    /// pages and completions are generated from).
    pub fn full_command() -> clap::Command {
        fn with_set(c: clap::Command) -> clap::Command {
            c.mut_subcommands(|sc| {
            with_set(
                sc.arg(
                    clap::Arg::new(SET_AFTER)
                        .long("set")
                        .value_name("KEY=VALUE")
                        .action(clap::ArgAction::Append)
                        .help("Override a setting, KEY=VALUE (repeatable; adds to those given before the subcommand)"),
                ),
            )
        })
        }
        with_set(Cli::command())
    }

    /// Parse `args`. `--set` is not a clap global: a global's values given after the
    /// subcommand replace those given before it, so every subcommand gets its own `--set`
    /// and the values are appended in command-line order.
    pub fn parse_from_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::full_command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let mut sub = matches.subcommand();
        while let Some((_, m)) = sub {
            if let Some(v) = m.get_many::<String>(SET_AFTER) {
                cli.set.extend(v.cloned());
            }
            sub = m.subcommand();
        }
        Ok(cli)
    }

    fn machine(&self) -> anyhow::Result<Machine> {
        let root = Root::new(&self.root);
        let (config, set) = (self.config.as_deref(), &self.set);
        let Some(name) = self.command.tolerant() else {
            let settings = Settings::load(&root, config, set)?;
            return Ok(Machine::new(root, settings));
        };
        let (settings, ignored) = Settings::load_tolerant(&root, config, set)?;
        for e in &ignored {
            tracing::error!("configuration error, left out by `upd {name}`: {e}");
        }
        Ok(Machine::new(root, settings))
    }
}

impl Command {
    /// Run the subcommand: `config` reads the files itself, every other one on the machine
    /// that `cli`'s options load.
    fn run(&self, cli: &Cli) -> anyhow::Result<u8> {
        if let Command::Config(a) = self {
            return config::run(&Root::new(&cli.root), cli.config.as_deref(), &cli.set, a);
        }
        let m = cli.machine()?;
        let Some((kind, before)) = self.reports().zip(fleet::before(&m)) else {
            return self.run_on(m);
        };
        let result = self.run_on(m.clone());
        let code = match &result {
            Ok(code) => *code,
            Err(e) => exit::of(e),
        };
        fleet::after(&m, kind, &before, code);
        result
    }

    /// Which fleet report the command sends (when `REPORT_URL` is set).
    fn reports(&self) -> Option<fleet::Kind> {
        match self {
            // `check --now` asks about another instant: nothing happened to report.
            Command::Check(a) if a.at.is_none() => Some(fleet::Kind::Check),
            Command::Pull(_) | Command::Update(_) => Some(fleet::Kind::Pull),
            Command::Boot(_) => Some(fleet::Kind::Boot),
            Command::MarkGood(_) => Some(fleet::Kind::MarkGood),
            _ => None,
        }
    }

    fn run_on(&self, m: Machine) -> anyhow::Result<u8> {
        match self {
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
            Command::Config(_) => Ok(exit::OK),
        }
    }

    /// The name of a command that goes past configuration errors (see
    /// [`Settings::load_tolerant`]): `boot` and `mark-good`, which a typo must neither stop
    /// from linking the booted OS's set nor turn into sending a healthy OS back.
    fn tolerant(&self) -> Option<&'static str> {
        match self {
            Command::Boot(_) => Some("boot"),
            Command::MarkGood(_) => Some("mark-good"),
            _ => None,
        }
    }

    /// Whether the command was asked for `--json` output (then its failure is JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Status(a) => a.json,
            Command::Check(a) => a.json,
            Command::List(a) => a.json,
            Command::Pull(a) | Command::Update(a) => a.json,
            Command::Boot(a) => a.json,
            Command::Config(a) => a.json,
            Command::MarkGood(a) => a.json,
            Command::Rollback(a) => a.json,
            Command::Gc(_) | Command::Ext(_) | Command::Channel(_) => false,
        }
    }
}

/// Parse the command line, run the subcommand, print the error chain once and map it to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if let Err(e) = log::init(cli.verbose) {
        eprintln!("upd: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let code = match cli.command.run(&cli) {
        Ok(code) => code,
        Err(e) => {
            let report = report::Report::of(&e);
            if cli.command.json() {
                println!("{}", report.json());
            }
            let prio = if log::stderr_is_journal() { "<3>" } else { "" };
            eprintln!("{prio}upd: {}", report.line());
            notify::status(&format!(
                "failed ({}, exit {}): {}",
                report.kind, report.exit_code, report.message
            ));
            report.exit_code
        }
    };
    notify::stopping();
    ExitCode::from(code)
}

/// Print `value` as JSON on stdout, with the output schema version as `schema` (unless it
/// carries its own, as the manifest `list` prints does).
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(value)?;
    if let Some(o) = v.as_object_mut() {
        o.entry("schema").or_insert(report::SCHEMA.into());
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
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
        super::Cli::parse_from_args(["upd", "ext", "enable", "x", "--set", "A=1"]).unwrap();
        super::Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_exit_code() {
        use clap::CommandFactory;
        let help = super::Cli::command().render_long_help().to_string();
        for (code, name, _) in super::exit::TABLE {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{code}  {name} "))),
                "exit code {code} ({name}) missing from upd --help:\n{help}"
            );
        }
    }

    #[test]
    fn every_set_applies_before_and_after_the_subcommand() {
        // Issue 10, defect 9: the subcommand's --set used to replace the global ones.
        let cli = super::Cli::parse_from_args([
            "upd", "--set", "A=1", "check", "--set", "B=2", "--set", "C=3",
        ])
        .unwrap();
        assert_eq!(cli.set, ["A=1", "B=2", "C=3"]);
    }
}
