//! Tests that run the real `ats-p2p` binary, one test binary with a module per subject. The NAT
//! tests use the swarm crate's network-namespace lab.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../ats-p2p-swarm/tests/support/netlab.rs"]
mod netlab;

mod cli_basic;
mod directories;
mod e2e;
mod faults;
mod hub_cli;
mod mcp;
mod nat;
mod resume;
