//! The signal crate's integration tests against a real hub on loopback, one binary with a
//! module per subject. The slow-subscriber test, which measures this process's memory, is alone
//! in `tests/memory.rs`.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

mod access;
mod catch_up;
mod client_errors;
mod exposure;
mod fuzz_targets;
mod http_api;
mod instances;
mod lifecycle;
mod resilience;
