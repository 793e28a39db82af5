//! One property check per fuzz target: each feeds untrusted bytes to the parser's own entry point
//! and asserts more than "no panic" where that is cheap (round trips, order laws, refusals).

mod cmdline;
mod config;
mod delta;
mod gpt;
mod http;
mod keys;
mod osrelease;
mod rebootlock;
mod report;
mod state;
mod version;

pub use cmdline::cmdline;
pub use config::{config, window};
pub use delta::{byteranges, chunkindex};
pub use gpt::gpt;
pub use http::contentrange;
pub use keys::{envelope, manifest, root};
pub use osrelease::osrelease;
pub use rebootlock::{etcd, fleetlock};
pub use report::report;
pub use state::state;
pub use version::version;

/// The input as text, if it is UTF-8 (every parser here takes `&str` or refuses non-UTF-8 first).
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}
