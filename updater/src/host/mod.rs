//! The machine's own I/O: paths and links, OS slots and their GPT, systemd-sysext and the zero-gap
//! swap of its overlays, the process lock, health checks and the crash points of the tests.

pub mod direct_read;
pub mod failpoint;
pub mod gpt;
pub mod health;
pub mod lock;
pub mod machine;
pub mod slot;
pub mod swap;
pub mod sysext;
