//! Hyperswarm transport for ats-p2p: UDX streams, the Noise secret stream and HyperDHT.
//!
//! - [`keys`]: Ed25519 identity keys.
//! - [`crypto`]: keyed BLAKE2b-256, the one hash helper the layers share.
//! - [`encoding`]: compact-encoding, as a checked reader and a writer.
//! - [`udx`]: UDX reliable streams over UDP: a sans-io core and a tokio socket driver.
//! - [`noise`]: sans-io Noise XX / IK handshakes with Hyperswarm's Ed25519 DH.
//! - [`secret_stream`]: the Hyperswarm secret stream (framing, secretstream encryption, the
//!   sans-io core and a tokio `AsyncRead + AsyncWrite` wrapper).
//! - [`dht`]: sans-io dht-rpc: codec, routing table, tokens, NAT/firewall detection, queries.
//! - [`hyperdht`]: HyperDHT records, announce/lookup, handshake/holepunch relaying, mutable and
//!   immutable values, and the tokio driver [`hyperdht::DhtNode`] / [`hyperdht::Bootstrap`].
//!
//!   [`hyperdht::HyperDht`] connects and listens by key (Noise IK over the DHT, key firewall,
//!   UDX streams on the DHT's own sockets).
//! - [`relay`]: blind relays (npm `blind-relay`): the relay server and the client that pairs
//!   two peers' UDX streams through one.
//! - [`swarm`]: the Hyperswarm-style API: topics, connection dedup, an allowlist firewall.
//! - [`wait`]: the deadline and optional-work waits of every async shell's `select!`.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod dht;
pub mod encoding;
#[doc(hidden)]
pub mod fuzzing;
pub mod hyperdht;
pub mod keys;
pub mod noise;
pub mod relay;
pub mod secret_stream;
pub mod swarm;
pub mod udx;
pub mod wait;

pub use keys::{KeyPair, PublicKey};
