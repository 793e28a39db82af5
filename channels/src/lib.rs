//! upd-channels: the pure rules of channels and releases, shared by the publisher and the updater.

pub mod builds;
pub mod chunks;
pub mod compat;
pub mod manifest;
pub mod name;
pub mod osrelease;
pub mod report;
pub mod rollout;
pub mod select;
pub mod verify;
pub mod version;
