//! dht-rpc, wire-compatible with npm `dht-rpc` 6.27: message codec, routing table, tokens, NAT
//! sampling and the iterative query machine, as a sans-io core ([`RpcNode`]).
//!
//! The core never reads a clock, never draws OS randomness and owns no socket. Its calling
//! contract (str0m style): feed input with [`RpcNode::handle_datagram`] / [`RpcNode::handle_timeout`],
//! issue commands ([`RpcNode::query`], [`RpcNode::request`]), then drain [`RpcNode::poll_transmit`] and
//! [`RpcNode::poll_event`] until both return `None`, and sleep until [`RpcNode::poll_timeout`].

pub mod config;
mod congestion;
mod event;
mod limits;
mod message;
mod nat;
mod node;
mod query;
mod request;
mod table;

use std::net::SocketAddrV4;

use blake2::digest::Digest;
use blake2::digest::consts::U32;

pub use config::RpcConfig;
pub use event::Event;
pub use limits::{LimitStats, SourceLimits};
pub use message::{Id, MAX_CLOSER_NODES, Message, REQUEST_ID, RESPONSE_ID, Request, Response};
pub use nat::NatSampler;
pub use node::RpcNode;
pub use query::{Commit, QueryId, QueryOptions, QueryReply};
pub use request::{IncomingRequest, RequestError, RequestId, SocketKind, Transmit, UserRequest};
pub use table::{RoutingTable, TableNode};

use crate::encoding::ipv4_bytes;

/// Kademlia bucket size and query width.
pub const K: usize = 20;

/// dht-rpc's internal command numbers (`lib/commands.js`).
pub mod commands {
    /// Keep-alive.
    pub const PING: u64 = 0;
    /// Reply to the port in the value: tests the sender's server socket reachability.
    pub const PING_NAT: u64 = 1;
    /// Ask for nodes closer to the target.
    pub const FIND_NODE: u64 = 2;
    /// "The node at this address looks down."
    pub const DOWN_HINT: u64 = 3;
    /// Reply after a delay.
    pub const DELAYED_PING: u64 = 4;
}

/// dht-rpc error codes (`lib/errors.js`).
pub mod errors {
    /// The command is not known to the responder.
    pub const UNKNOWN_COMMAND: u64 = 1;
    /// The token in the request is not valid.
    pub const INVALID_TOKEN: u64 = 2;
}

/// BLAKE2b-256 of `data` (libsodium `crypto_generichash`, unkeyed).
pub fn hash(data: &[u8]) -> Id {
    hash_batch(&[data])
}

/// BLAKE2b-256 over the concatenation of `parts`.
pub fn hash_batch(parts: &[&[u8]]) -> Id {
    let mut h = blake2::Blake2b::<U32>::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// A node's id: BLAKE2b-256 of its 6-byte `ipv4Address` (`lib/peer.js`).
pub fn node_id(addr: &SocketAddrV4) -> Id {
    hash(&ipv4_bytes(addr))
}

/// XOR-distance comparison of `a` and `b` to `target` (dht-rpc `_compare`).
pub fn cmp_distance(target: &Id, a: &Id, b: &Id) -> std::cmp::Ordering {
    for ((t, x), y) in target.iter().zip(a.iter()).zip(b.iter()) {
        let dx = t ^ x;
        let dy = t ^ y;
        if dx != dy {
            return dx.cmp(&dy);
        }
    }
    std::cmp::Ordering::Equal
}
