//! Shared helpers of the integration tests: locating the JavaScript reference peers.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

pub mod sim;

/// The settings of every property test in this binary: a fixed seed (runs are reproducible), a
/// bounded case count, and failures persisted in the committed
/// `proptest-regressions/integration.txt`, whose seeds run before any new case.
pub fn proptest_config(cases: u32, seed: u64) -> proptest::test_runner::Config {
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

/// `interop/js`, failing loudly when its dependencies are not installed.
pub fn js_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/js"));
    assert!(
        dir.join("node_modules/@hyperswarm/secret-stream").is_dir(),
        "interop/js/node_modules is missing: run `npm ci --prefix interop/js` first"
    );
    dir
}

/// A `RngCore` that hands out fixed bytes (to reproduce a libsodium secretstream header).
pub struct FixedRng(pub Vec<u8>);

impl rand::RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        assert!(self.0.len() >= dest.len(), "FixedRng ran out of bytes");
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand::CryptoRng for FixedRng {}
