//! The network-namespace NAT lab (needs root, `ip netns` and iptables; see docs/nat-lab.md):
//! one binary, so the lab's namespace bookkeeping is shared by every test in it.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "support/lab_peer.rs"]
mod lab_peer;
#[path = "support/matrix.rs"]
mod matrix;
#[path = "support/netlab.rs"]
mod netlab;

mod netlab_js;
mod netlab_matrix;
mod netlab_rust;
