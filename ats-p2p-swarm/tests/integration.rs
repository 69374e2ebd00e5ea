//! The swarm crate's integration tests on loopback, one binary with a module per subject.
//! The network-namespace lab is `tests/lab.rs`; the flood test, which measures this process's
//! memory, is alone in `tests/flood.rs`.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

mod bad_input;
mod connect_matrix;
mod dht_fuzz;
mod dht_golden;
mod dht_interop;
mod dht_limits;
mod dht_net;
mod dht_relay;
mod dht_wire;
mod js_interop;
mod noise_vectors;
mod relay;
mod secret_stream;
mod swarm;
mod udx_bad_input;
mod udx_driver;
mod udx_interop;
mod udx_sim;
