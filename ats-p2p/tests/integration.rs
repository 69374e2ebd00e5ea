//! The facade's integration tests: nodes on a real hub and a real local DHT, one binary with a
//! module per subject.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod hardening;
// The throwaway PostgreSQL cluster of the signal crate's tests (one home for it).
mod node;
#[path = "../../ats-p2p-signal/tests/common/pg.rs"]
#[allow(dead_code, unreachable_pub)]
mod pg;
mod pipeline;
mod save;
mod transfer_driver;
mod transfer_swarm;
