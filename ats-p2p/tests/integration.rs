//! The facade's integration tests: nodes on a real hub and a real local DHT, one binary with a
//! module per subject.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod directories;
mod hardening;
// The throwaway PostgreSQL cluster of the signal crate's tests (one home for it).
mod node;
#[path = "../../ats-p2p-signal/tests/common/pg.rs"]
#[allow(dead_code, unreachable_pub)]
mod pg;
mod pipeline;
mod resume;
mod save;
mod transfer_driver;
mod transfer_swarm;

/// The settings of every property test in this binary: a fixed seed (runs are reproducible), a
/// bounded case count, and failures persisted in the committed
/// `proptest-regressions/integration.txt`, whose seeds run before any new case.
pub(crate) fn proptest_config(cases: u32, seed: u64) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/proptest-regressions/integration.txt"
            )),
        )),
        ..proptest::test_runner::Config::default()
    }
}
