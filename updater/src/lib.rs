//! upd: the machine-side agent that fetches, verifies, stages and switches OS and sysext images in lockstep.

pub mod channel;
pub mod cli;
pub mod config;
pub mod failpoint;
pub mod fetch;
pub mod gpt;
pub mod lifecycle;
pub mod lock;
pub mod machine;
pub mod plan;
pub mod pull;
pub mod reboot;
pub mod rebootlock;
pub mod select;
pub mod slot;
pub mod stage;
pub mod state;
pub mod switch;
pub mod sysext;
pub mod target;
pub mod trust;
pub mod window;
