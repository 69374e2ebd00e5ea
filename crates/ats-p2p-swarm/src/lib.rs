//! Hyperswarm transport for ats-p2p: UDX streams, the Noise secret stream and HyperDHT.
//!
//! Work in progress: see the project's issues. Only [`keys`] is usable so far.
#![forbid(unsafe_code)]

pub mod keys;

pub use keys::{KeyPair, PublicKey};
pub mod udx;
