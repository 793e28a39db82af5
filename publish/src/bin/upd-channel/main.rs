//! upd-channel: publish signed upd channels (keys, roots, releases, signatures, verification, serving).

mod add_release;
mod barrier;
mod common;
mod fleet;
mod fleet_bench;
mod generate_docs;
mod init;
mod keygen;
mod pause;
mod promote;
mod rollout;
mod rotate_root;
mod serve;
mod sign;
mod status;
mod verify;
mod withdraw;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Publish signed upd channels: a static directory any HTTP server can serve.
#[derive(Debug, Parser)]
#[command(name = "upd-channel", version, about)]
struct Cli {
    /// More log output (-v info, -vv debug); UPD_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an Ed25519 signing key (PKCS#8, mode 0600).
    Keygen(keygen::Args),
    /// Create a repository: root version 1 and an empty draft per channel.
    Init(init::Args),
    /// Publish the next root version, signed by the old and the new root keys.
    RotateRoot(rotate_root::Args),
    /// Add a release (OS image and extension builds) to a channel's draft.
    AddRelease(add_release::Args),
    /// Sign a channel's draft into its manifest, or co-sign the manifest.
    Sign(sign::Args),
    /// Verify a channel as a machine would, from a directory or a URL.
    Verify(verify::Args),
    /// Serve a repository over HTTP (development and demos).
    Serve(serve::Args),
    /// Set a release's rollout waves in a channel's draft.
    Rollout(rollout::Args),
    /// Pause a release's rollout in a channel's draft.
    Pause(pause::Args),
    /// Resume a paused rollout in a channel's draft.
    Resume(pause::Args),
    /// Withdraw a release in a channel's draft, optionally redirecting to a safe release.
    Withdraw(withdraw::Args),
    /// Make a release a barrier every machine passes through (or clear it) in a channel's draft.
    Barrier(barrier::Args),
    /// Copy a release from one channel's signed manifest into another channel's draft.
    Promote(promote::Args),
    /// Show a channel's releases: flags and the share of the fleet each rollout reaches now.
    Status(status::Args),
    /// The owner's view: the report server, the rollout's status, the rollout guard.
    Fleet(fleet::Args),
    /// Write the man pages and shell completions to a directory (scripts/gen-docs).
    #[command(hide = true)]
    GenerateDocs(generate_docs::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_logging(cli.verbose);
    let result = match cli.command {
        Command::Keygen(a) => keygen::run(a),
        Command::Init(a) => init::run(a),
        Command::RotateRoot(a) => rotate_root::run(a),
        Command::AddRelease(a) => add_release::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Rollout(a) => rollout::run(a),
        Command::Pause(a) => pause::run(a, true),
        Command::Resume(a) => pause::run(a, false),
        Command::Withdraw(a) => withdraw::run(a),
        Command::Barrier(a) => barrier::run(a),
        Command::Promote(a) => promote::run(a),
        Command::Status(a) => status::run(a),
        Command::Fleet(a) => fleet::run(a),
        Command::GenerateDocs(a) => generate_docs::run(a, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upd-channel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        // The clap definition itself: conflicting names, bad defaults and the like panic here.
        super::Cli::command().debug_assert();
    }
}
