//! Talking to servers: streaming downloads, the channel manifest and its root of trust, and the
//! fleet's reboot locks.

pub mod channel;
pub mod fetch;
pub mod fleetreport;
pub mod rebootlock;
pub mod trust;
