//! The facade's integration tests: nodes on a real hub and a real local DHT, one binary with a
//! module per subject.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod hardening;
mod node;
mod pipeline;
mod resume;
mod save;
mod transfer_driver;
mod transfer_swarm;
