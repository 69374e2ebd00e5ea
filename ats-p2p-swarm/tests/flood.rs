//! Floods against a listening server. Alone in its binary: it bounds this process's memory,
//! which other tests running beside it would disturb.

// Test helpers may unwrap: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod punch_hostile;
