//! The node's output events.

use super::query::{QueryId, QueryReply};
use super::request::{IncomingRequest, RequestError, RequestId};

/// Output of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An application command arrived.
    Request(IncomingRequest),
    /// A successful (error = 0) reply during a query's walk.
    QueryReply {
        /// The query.
        query: QueryId,
        /// The reply.
        reply: QueryReply,
    },
    /// A query finished; `closest` holds the k closest replies with ids.
    QueryDone {
        /// The query.
        query: QueryId,
        /// Closest replies.
        closest: Vec<QueryReply>,
        /// Set when the commit phase failed everywhere.
        error: Option<RequestError>,
    },
    /// A user request got its response.
    Response {
        /// The request.
        request: RequestId,
        /// The response.
        reply: QueryReply,
    },
    /// A user request failed.
    RequestFailed {
        /// The request.
        request: RequestId,
        /// Why.
        error: RequestError,
    },
    /// The first bootstrap walk finished: the routing table is filled and the node can look up,
    /// announce and connect. The NAT and firewall tests may still run (`Bootstrapped` follows).
    Walked,
    /// The bootstrap walk (and firewall test) finished.
    Bootstrapped,
    /// The node became persistent (has an id and stores records).
    Persistent,
}
