//! The owner's view of the fleet: the report server, its database (SQLite or PostgreSQL), the
//! status of a channel's rollout, the page, and the rollout guard's decision.

pub mod db;
pub mod guard;
pub mod page;
pub mod server;
pub mod status;
