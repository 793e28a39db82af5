//! upd: the machine-side agent that fetches, verifies, stages and switches OS and sysext images in lockstep.
//!
//! Laid out by role (see ARCHITECTURE.md): `cli` renders and dispatches, `ops` orchestrates,
//! `rules` decides without I/O, `host` does the machine's I/O, `remote` talks to servers,
//! `state` and `config` hold what persists and what the operator set.

pub mod cli;
pub mod config;
pub mod host;
pub mod ops;
pub mod remote;
pub mod rules;
pub mod state;
