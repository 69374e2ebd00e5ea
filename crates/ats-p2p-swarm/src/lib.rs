//! Hyperswarm transport for ats-p2p: UDX streams, the Noise secret stream and HyperDHT.
//!
//! - [`keys`]: Ed25519 identity keys.
//! - [`noise`]: sans-io Noise XX / IK handshakes with Hyperswarm's Ed25519 DH.
//! - [`secret_stream`]: the Hyperswarm secret stream (framing, secretstream encryption, the
//!   sans-io core and a tokio `AsyncRead + AsyncWrite` wrapper).
#![forbid(unsafe_code)]

pub mod keys;
pub mod noise;
pub mod secret_stream;

pub use keys::{KeyPair, PublicKey};
