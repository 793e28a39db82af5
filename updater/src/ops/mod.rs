//! The operations: each command's orchestration of rules and I/O, with one error type.
//!
//! `session` opens the machine (lock, sweep, reconcile) for the commands that change it, or a
//! read-only view for the ones that only look; `pull` goes to the target release, through
//! `stage` for a new OS or `switch` for new extension builds of the running one; `boot`,
//! `mark_good` and `rollback` drive the A/B lifecycle; `reboot` applies the strategy.

pub mod boot;
pub mod error;
pub mod gc;
pub mod mark_good;
pub mod pull;
pub mod reboot;
pub mod release;
pub mod rollback;
pub mod session;
pub mod stage;
pub mod store;
pub mod switch;

pub use error::Error;
