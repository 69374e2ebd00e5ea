//! Hub memory under a subscriber that never reads. Alone in its binary: it bounds this
//! process's memory, which other tests running beside it would disturb.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod slow_subscriber;
