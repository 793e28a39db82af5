//! upd: command-line entry point; only dispatches.
fn main() {}
