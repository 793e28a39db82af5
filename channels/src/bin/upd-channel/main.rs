//! upd-channel: publish signed upd channels.
fn main() {}
