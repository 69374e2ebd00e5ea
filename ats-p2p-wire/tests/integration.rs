//! The wire crate's integration tests, one binary with a module per subject.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod external_hash;
mod fuzz_corpus;
mod golden;
mod proptests;
mod resume;
mod transfer;
