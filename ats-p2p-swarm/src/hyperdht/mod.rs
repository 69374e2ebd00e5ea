//! HyperDHT (npm `hyperdht` 6.34) on top of [`crate::dht`]: command numbers, namespaces, message
//! codecs, the node side (records, router forwards, handshake/holepunch relaying) and the client
//! side (lookup, announce, unannounce, find_peer) as a sans-io [`HyperDhtCore`], plus a tokio
//! driver ([`DhtNode`], [`Bootstrap`]).
//!
//! Connecting by key follows the same split, state machine vs shell:
//! - `client`: one connect, client side, sans-io, one file per job (`handshake`, `ping` for
//!   the direct/LAN race, `rounds` of PEER_HOLEPUNCH, `probing`, `relay` fallback, `events`
//!   to and from the shell); [`connect`] is its async shell ([`HyperDht::connect`]).
//! - `listener`: the listen loop's decisions, sans-io: msg1 deduplication (the same msg2 for
//!   copies through several relays) and the holepunch slots a PEER_HOLEPUNCH is routed by.
//! - `responder`: the server's half of Noise IK (msg1, firewall verdict, what msg2 carries:
//!   error, holepunch offer, relay), sans-io.
//! - `session`: one answered handshake, server side, sans-io, one file per job (`first_packet`,
//!   `rounds` answered, `probing` with birthday streams, `relay` pairing, `events` to and from
//!   the shell); [`server`] is its shell and the listener's ([`HyperDht::listen`]).
//! - [`holepunch`] decides how two NATs punch, `schedule` what to probe when, and `punch` owns
//!   the sockets that send and see the probes.
//! - `endpoint` is [`HyperDht`] itself: the sockets shared by DHT RPC, probes and UDX streams.
//!
//! Every [`Connection`] carries its [`PathInfo`].

mod client;
pub mod connect;
pub mod crypto;
mod driver;
mod endpoint;
pub mod holepunch;
mod listener;
pub mod messages;
pub mod mutable;
mod node;
pub mod path;
mod punch;
pub(crate) mod responder;
mod schedule;
pub mod server;
mod session;
pub mod store;
mod terms;

pub use connect::{ConnectError, Firewall, HyperDht, NoPathReason, RelayMode};
pub use driver::{Bootstrap, DatagramSocket, DhtConfig, DhtError, DhtNode, NodeInfo, ServerEvent};
pub use endpoint::UdxDatagrams;
pub use holepunch::NatClass;
pub use node::{
    HyperDhtCore, HyperEvent, LookupResult, MAX_HYPER_EVENTS, MAX_LOOKUP_RESULTS, MAX_OPS, OpId,
    OpResult, RelayStats,
};
pub use path::{Connection, PathInfo, PathKind};
pub use server::Server;

/// HyperDHT command numbers (sent with `internal = false`).
pub mod commands {
    /// Relayed Noise handshake.
    pub const PEER_HANDSHAKE: u64 = 0;
    /// Relayed holepunch negotiation.
    pub const PEER_HOLEPUNCH: u64 = 1;
    /// Find a server's forward record.
    pub const FIND_PEER: u64 = 2;
    /// Find records for a topic.
    pub const LOOKUP: u64 = 3;
    /// Store a record.
    pub const ANNOUNCE: u64 = 4;
    /// Remove a record.
    pub const UNANNOUNCE: u64 = 5;
    /// Mutable put.
    pub const MUTABLE_PUT: u64 = 6;
    /// Mutable get.
    pub const MUTABLE_GET: u64 = 7;
    /// Immutable put.
    pub const IMMUTABLE_PUT: u64 = 8;
    /// Immutable get.
    pub const IMMUTABLE_GET: u64 = 9;
    /// Plugin command.
    pub const PLUGIN: u64 = 10;
}

/// Firewall types in Noise and holepunch payloads.
pub mod firewall {
    /// Unknown.
    pub const UNKNOWN: u64 = 0;
    /// Reachable.
    pub const OPEN: u64 = 1;
    /// Consistent NAT mapping.
    pub const CONSISTENT: u64 = 2;
    /// Randomized NAT mapping.
    pub const RANDOM: u64 = 3;
}

/// HyperDHT error codes.
pub mod error_codes {
    /// No error.
    pub const NONE: u64 = 0;
    /// Aborted.
    pub const ABORTED: u64 = 1;
    /// Version mismatch.
    pub const VERSION_MISMATCH: u64 = 2;
    /// Try later.
    pub const TRY_LATER: u64 = 3;
    /// Mutable seq reused.
    pub const SEQ_REUSED: u64 = 16;
    /// Mutable seq too low.
    pub const SEQ_TOO_LOW: u64 = 17;
}
