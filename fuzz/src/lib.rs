//! The property checks behind each fuzz target; the workspace's stable `cargo test` runs the same
//! checks on the seed corpora (tests/tests/e2e/corpus.rs includes `checks/` by path).
pub mod checks;
