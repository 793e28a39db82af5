//! upd-publish: the publisher's side of upd, its channel repository on disk and a development HTTP server.

pub mod fleet;
pub mod repo;
pub mod serve;
