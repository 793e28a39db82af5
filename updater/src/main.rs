//! upd: command-line entry point; only dispatches.

fn main() -> std::process::ExitCode {
    upd::cli::main()
}
