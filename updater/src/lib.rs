//! upd: the machine-side agent that fetches, verifies, stages and switches OS and sysext images in lockstep.

pub mod config;
pub mod fetch;
pub mod fsutil;
pub mod lock;
pub mod plan;
pub mod state;
pub mod sysext;
