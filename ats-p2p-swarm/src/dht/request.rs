//! Datagrams and requests at the node's edges: what goes out ([`Transmit`]), what the
//! application asks ([`UserRequest`]) and answers ([`IncomingRequest`]), and how a request fails.

use std::net::SocketAddrV4;

use super::Id;

/// Which of the node's two UDP sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// The server socket (its port is the node's public port when unfirewalled).
    Server,
    /// The client socket (requests go out here while firewalled).
    Client,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Socket to send from.
    pub socket: SocketKind,
    /// Destination.
    pub to: SocketAddrV4,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// Identifies a user request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Why a request or query failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No reply after all retransmissions.
    #[error("request timed out")]
    Timeout,
    /// Too many requests or queries in flight.
    #[error("too many requests in flight")]
    Busy,
    /// The node is shutting down.
    #[error("node destroyed")]
    Destroyed,
    /// No node in the closest set accepted the commit.
    #[error("too few nodes responded")]
    TooFewNodes,
}

/// An application request (internal = false) received by this node, to be answered with
/// [`RpcNode::reply`](super::RpcNode::reply), [`RpcNode::error_reply`](super::RpcNode::error_reply) or
/// [`RpcNode::relay`](super::RpcNode::relay), or ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Socket it arrived on; replies go out on it.
    pub socket: SocketKind,
    /// UDP source.
    pub from: SocketAddrV4,
    /// Sender's verified id.
    pub from_id: Option<Id>,
    /// Transaction id.
    pub tid: u16,
    /// Our address as the sender sees it.
    pub to: SocketAddrV4,
    /// The sender's token (already validated when present).
    pub token: Option<Id>,
    /// Whether this is a dht-rpc command (always false for events).
    pub internal: bool,
    /// Command number.
    pub command: u64,
    /// Target.
    pub target: Option<Id>,
    /// Value.
    pub value: Option<Vec<u8>>,
}

/// An explicit request to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRequest {
    /// Destination.
    pub to: SocketAddrV4,
    /// Token from the destination.
    pub token: Option<Id>,
    /// dht-rpc command (true) or application command (false).
    pub internal: bool,
    /// Command.
    pub command: u64,
    /// Target.
    pub target: Option<Id>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Socket override (default: client socket while firewalled, else server socket).
    pub socket: Option<SocketKind>,
    /// Retransmissions (default [`DEFAULT_RETRIES`](super::config::DEFAULT_RETRIES)).
    pub retries: Option<u32>,
}
