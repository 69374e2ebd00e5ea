//! Shared helpers for the ats-p2p benchmarks.
