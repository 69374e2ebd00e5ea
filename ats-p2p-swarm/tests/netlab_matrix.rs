//! The NAT matrix of issue 11 in the network-namespace lab: NATs consistent/random ×
//! consistent/random (client behind router A first), each cell moving 16 MiB each way with both
//! SHA-256s checked and both sides reporting the expected path (`holepunched`, or `relayed`
//! through a blind relay on the public side when both NATs randomize). See `docs/nat-lab.md`.
//!
//! - JS↔JS cells (npm `hyperdht`) are the reference the Rust cells must match.
//! - Rust↔Rust, Rust server↔JS client and JS server↔Rust client cells, and random↔random through
//!   our relay and through npm `blind-relay`, exercise `ats_p2p_swarm::hyperdht`'s random-NAT
//!   punching and relay fallback (the Rust peer is `support/lab_peer.rs`).
//!
//! The Rust peers are this test binary re-executed inside the namespaces: the `#[ignore]`d
//! `matrix_rust_peer` entry point runs a peer when `ATS_NETLAB_ROLE` is set (a no-op otherwise).
//! Skipped (with a printed reason) where the lab cannot be built, except under `CI`, where that
//! fails.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use crate::lab_peer;
use crate::matrix;
use crate::netlab;

use matrix::{RustPeer, check_cell};
use netlab::NatKind::Consistent;

/// This test binary, running only `matrix_rust_peer`.
fn rust_peer() -> RustPeer {
    RustPeer {
        program: std::env::current_exe().unwrap().display().to_string(),
        args: [
            "--ignored",
            "--exact",
            "netlab_matrix::matrix_rust_peer",
            "--nocapture",
            "--test-threads=1",
        ]
        .map(str::to_owned)
        .to_vec(),
    }
}

/// Declares one `#[test]` per cell of [`matrix::CELLS`], by name.
macro_rules! cells {
    ($($(#[$attr:meta])* $name:ident;)*) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                check_cell(matrix::cell(stringify!($name)), &rust_peer());
            }
        )*

        /// The cells that have a test above.
        const TESTED: &[&str] = &[$(stringify!($name)),*];
    };
}

/// Every cell of the matrix has its test (and no test names a cell that does not exist).
#[test]
fn every_cell_has_a_test() {
    let mut cells: Vec<&str> = matrix::CELLS.iter().map(|(n, _)| *n).collect();
    let mut tested = TESTED.to_vec();
    cells.sort_unstable();
    tested.sort_unstable();
    assert_eq!(cells, tested);
}

cells! {
    // JS ↔ JS: npm hyperdht's own behaviour in this lab (must pass today).
    js_consistent_consistent;
    js_consistent_random;
    js_random_consistent;
    js_random_random_npm_relay;

    // Rust ↔ Rust.
    rust_consistent_consistent;
    rust_consistent_random;
    rust_random_consistent;
    rust_random_random_our_relay;
    rust_random_random_found_relay;
    rust_random_random_npm_relay;

    // JS client → Rust server.
    js_to_rust_consistent_consistent;
    js_to_rust_consistent_random;
    js_to_rust_random_consistent;
    js_to_rust_random_random_our_relay;
    js_to_rust_random_random_npm_relay;

    // Rust client → JS server.
    rust_to_js_consistent_consistent;
    rust_to_js_consistent_random;
    rust_to_js_random_consistent;
    rust_to_js_random_random_our_relay;
    rust_to_js_random_random_npm_relay;

    // JS ↔ JS through our relay (a blind-relay server that npm peers use with relayThrough).
    js_random_random_our_relay;
}

/// Peer entry point, run inside a lab namespace by the cells above (no-op without the env).
#[test]
#[ignore = "helper process for the NAT matrix"]
fn matrix_rust_peer() {
    let Some(args) = lab_peer::PeerArgs::from_env().unwrap() else {
        return;
    };
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    if let Err(e) = lab_peer::run(&args) {
        panic!("rust lab peer: {e}");
    }
}

/// Where the lab cannot be built (here: no `ip` or `iptables` on `PATH`), a lab test skips
/// visibly, except under `CI`, where it fails.
#[test]
fn unavailable_lab_fails_under_ci_and_skips_visibly_elsewhere() {
    let exe = std::env::current_exe().unwrap();
    let probe = |ci: bool| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--ignored",
            "--exact",
            "netlab_matrix::lab_probe",
            "--nocapture",
        ])
        .env("ATS_NETLAB_PROBE", "1")
        .env("PATH", "/nonexistent");
        if ci {
            cmd.env("CI", "true");
        } else {
            cmd.env_remove("CI");
        }
        cmd.output().unwrap()
    };
    let elsewhere = probe(false);
    let stderr = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(elsewhere.status.success(), "must skip, not fail: {stderr}");
    assert!(
        stderr.contains("SKIP: network-namespace NAT lab unavailable"),
        "the skip must be visible: {stderr}"
    );
    let ci = probe(true);
    let out = String::from_utf8_lossy(&ci.stderr);
    assert!(!ci.status.success(), "must fail under CI: {out}");
    assert!(out.contains("CI must run it"), "must say why: {out}");
}

/// Helper process of the test above: tries to build a lab (no-op without the env).
#[test]
#[ignore = "helper process for unavailable_lab_fails_under_ci_and_skips_visibly_elsewhere"]
fn lab_probe() {
    if std::env::var_os("ATS_NETLAB_PROBE").is_none() {
        return;
    }
    assert!(netlab::NetLab::start(Consistent).is_none());
}
