//! Hyperswarm transport for ats-p2p: UDX streams, the Noise secret stream and HyperDHT.
//!
//! Usable so far: [`keys`] (Ed25519 identities), [`encoding`] (compact-encoding), [`dht`]
//! (sans-io dht-rpc: codec, routing table, tokens, NAT/firewall detection, queries) and
//! [`hyperdht`] (HyperDHT records, announce/lookup, handshake/holepunch relaying, mutable and
//! immutable values, and the tokio driver [`hyperdht::DhtNode`] / [`hyperdht::Bootstrap`]).
//! The connect/listen roles (Noise IK, holepunching, UDX streams) and the swarm API come next.
#![forbid(unsafe_code)]

pub mod dht;
pub mod encoding;
pub mod hyperdht;
pub mod keys;

pub use keys::{KeyPair, PublicKey};
pub mod udx;
