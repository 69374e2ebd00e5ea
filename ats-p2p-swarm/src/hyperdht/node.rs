//! The sans-io HyperDHT node: wraps [`RpcNode`] and handles HyperDHT commands.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddrV4;
use std::time::Instant;

use tracing::{trace, warn};

use super::crypto::{ns, sign_announce, verify_announce};
use super::messages::{Announce, Handshake, Holepunch, LookupReply, Mode, PeerRecord, RelayInfo};
use super::mutable::{MutableValue, PutError, ValueStore, encode_mutable_put};
use super::store::{LOOKUP_RECORDS, MAX_RELAY_ADDRESSES_STORED, Store};
use super::{commands, error_codes};
use crate::dht::{
    Event, Id, IncomingRequest, QueryId, QueryOptions, QueryReply, RequestError, RequestId,
    RpcNode, SocketKind, UserRequest, errors, hash,
};
use crate::encoding::{Reader, Writer};
use crate::keys::KeyPair;

mod ops;
mod router;
mod serve;

/// Most concurrent client operations (lookups, announces, ...); beyond it they fail `Busy`.
pub const MAX_OPS: usize = 128;
/// Most queued HyperDHT events before relayed handshakes/holepunches are dropped (the driver
/// drains per input).
pub const MAX_HYPER_EVENTS: usize = 4096;
/// Most lookup results kept per operation.
pub const MAX_LOOKUP_RESULTS: usize = 256;
/// Bytes of a reply around its value: header (10), id (32), token (32) and the value's length
/// prefix (3); what a LOOKUP's records must leave room for within a reply budget.
const REPLY_OVERHEAD: usize = 77;

/// Identifies a client operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Records returned by one node during a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResult {
    /// The node.
    pub from: SocketAddrV4,
    /// Its records.
    pub peers: Vec<PeerRecord>,
    /// Its bump.
    pub bump: u64,
}

/// Outcome of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// Lookup / find_peer results.
    Lookup(Vec<LookupResult>),
    /// Announce or unannounce: nodes that accepted.
    Announced {
        /// How many of the closest nodes accepted.
        accepted: usize,
        /// The closest nodes asked.
        closest: Vec<SocketAddrV4>,
        /// The nodes that accepted, each with our address as it saw us (JS `announcer.relays`:
        /// a firewalled server hands these to clients as holepunch relays).
        relays: Vec<RelayInfo>,
    },
    /// A FIND_NODE walk's closest replies.
    Closest(Vec<QueryReply>),
    /// Values returned by nodes during a get walk (unverified; see [`HyperDhtCore::immutable_get`]).
    Values(Vec<(SocketAddrV4, Vec<u8>)>),
    /// The operation failed.
    Failed(RequestError),
}

/// Output of the HyperDHT node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HyperEvent {
    /// An operation finished.
    OpDone {
        /// The operation.
        op: OpId,
        /// Its result.
        result: OpResult,
    },
    /// A PEER_HANDSHAKE for a key this node listens on (hook for the server role; answer with
    /// [`HyperDhtCore::answer_handshake`]).
    PeerHandshake {
        /// The request.
        req: IncomingRequest,
        /// Its decoded value.
        handshake: Handshake,
    },
    /// A relayed PEER_HOLEPUNCH for a key this node listens on (answer with
    /// [`HyperDhtCore::answer_holepunch`]).
    PeerHolepunch {
        /// The request.
        req: IncomingRequest,
        /// Its decoded value.
        holepunch: Holepunch,
    },
    /// A raw request's response or failure (from [`HyperDhtCore::request`]).
    Dht(Event),
    /// The first bootstrap walk finished (lookups and connects can start).
    Walked,
    /// The bootstrap finished.
    Bootstrapped,
    /// The node became persistent.
    Persistent,
}

#[derive(Debug)]
enum OpKind {
    /// LOOKUP: each reply is `array(peer) ‖ bump`.
    Lookup,
    /// FIND_PEER: each reply is one peer record (never parsed as a LOOKUP reply: a record whose
    /// key starts with byte 0 would read as an empty peer list).
    FindPeer,
    /// Re-send `command` with `value` and each closest node's token (put commits).
    Put {
        command: u64,
        value: Vec<u8>,
    },
    /// Collect reply values.
    Get,
    Announce {
        key_pair: Box<KeyPair>,
        relay_addresses: Vec<SocketAddrV4>,
        unannounce: bool,
    },
    FindNode,
}

#[derive(Debug)]
struct Op {
    target: Id,
    kind: OpKind,
    results: Vec<LookupResult>,
    values: Vec<(SocketAddrV4, Vec<u8>)>,
    commits_pending: usize,
    accepted: usize,
    closest: Vec<SocketAddrV4>,
    relays: Vec<RelayInfo>,
}

/// The sans-io HyperDHT node. Calling contract as [`RpcNode`]: after any input, drain
/// [`HyperDhtCore::poll_transmit`] and [`HyperDhtCore::poll_event`], then wait for
/// [`HyperDhtCore::poll_timeout`].
#[derive(Debug)]
pub struct HyperDhtCore {
    dht: RpcNode,
    store: Store,
    values: ValueStore,
    listening: HashSet<Id>,
    ops: HashMap<OpId, Op>,
    by_query: HashMap<QueryId, OpId>,
    by_request: HashMap<RequestId, OpId>,
    next_op: u64,
    events: VecDeque<HyperEvent>,
    wall_ms: u64,
    last_expire: Option<Instant>,
    relayed: RelayStats,
    events_dropped: u64,
}

/// Counters of relayed messages (for tests and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// PEER_HANDSHAKE messages forwarded toward a server.
    pub handshakes_to_server: u64,
    /// PEER_HANDSHAKE replies forwarded to a client.
    pub handshakes_to_client: u64,
    /// PEER_HOLEPUNCH messages forwarded toward a server.
    pub holepunches_to_server: u64,
    /// PEER_HOLEPUNCH replies forwarded to a client.
    pub holepunches_to_client: u64,
}

impl HyperDhtCore {
    /// Wraps a dht-rpc node.
    pub fn new(dht: RpcNode) -> Self {
        Self {
            dht,
            store: Store::new(),
            values: ValueStore::default(),
            listening: HashSet::new(),
            ops: HashMap::new(),
            by_query: HashMap::new(),
            by_request: HashMap::new(),
            next_op: 0,
            events: VecDeque::new(),
            wall_ms: 0,
            last_expire: None,
            relayed: RelayStats::default(),
            events_dropped: 0,
        }
    }

    /// The dht-rpc node.
    pub fn dht(&self) -> &RpcNode {
        &self.dht
    }

    /// The dht-rpc node, mutably (raw requests, relays).
    pub fn dht_mut(&mut self) -> &mut RpcNode {
        &mut self.dht
    }

    /// The mutable/immutable value store.
    pub fn values(&self) -> &ValueStore {
        &self.values
    }

    /// The record store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Relay counters.
    pub fn relay_stats(&self) -> RelayStats {
        self.relayed
    }

    /// Sets the wall clock (Unix ms) used to bound announce bumps.
    pub fn set_wall_clock_ms(&mut self, ms: u64) {
        self.wall_ms = ms;
    }

    /// Routes handshakes for `H(public_key)` to this node's [`HyperEvent::PeerHandshake`].
    pub fn listen(&mut self, target: Id) {
        self.listening.insert(target);
    }

    /// Stops routing handshakes for `target` locally.
    pub fn unlisten(&mut self, target: &Id) {
        self.listening.remove(target);
    }

    // ----- sans-io plumbing -----

    /// Next datagram.
    pub fn poll_transmit(&mut self) -> Option<crate::dht::Transmit> {
        self.dht.poll_transmit()
    }

    /// Next timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.dht.poll_timeout()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<HyperEvent> {
        self.events.pop_front()
    }

    /// Timer input.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.dht.handle_timeout(now);
        if self
            .last_expire
            .is_none_or(|t| now.saturating_duration_since(t) >= crate::dht::config::TICK_INTERVAL)
        {
            self.last_expire = Some(now);
            self.store.expire(now);
            self.values.expire(now);
        }
        self.process(now);
    }

    /// Datagram input.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        buf: &[u8],
    ) {
        self.dht.handle_datagram(now, socket, from, buf);
        self.process(now);
    }

    /// Queues an event. Only network-driven events (a relayed handshake or holepunch for a key
    /// we listen on) are ever dropped, counted and logged: their client retransmits. Completions
    /// are bounded by [`MAX_OPS`] and raw requests in flight, and never lost.
    fn push(&mut self, e: HyperEvent) {
        let from_network = matches!(
            e,
            HyperEvent::PeerHandshake { .. } | HyperEvent::PeerHolepunch { .. }
        );
        if from_network && self.events.len() >= MAX_HYPER_EVENTS {
            self.events_dropped += 1;
            warn!(
                dropped = self.events_dropped,
                "hyperdht event queue full: relayed handshake/holepunch dropped"
            );
            return;
        }
        self.events.push_back(e);
    }

    /// Relayed handshakes and holepunches dropped because the event queue was full.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    fn process(&mut self, now: Instant) {
        while let Some(e) = self.dht.poll_event() {
            match e {
                Event::Request(req) => self.on_request(now, req),
                Event::QueryReply { query, reply } => self.on_query_reply(query, reply),
                Event::QueryDone {
                    query,
                    closest,
                    error,
                } => self.on_query_done(now, query, closest, error),
                Event::Response { request, reply } => match self.by_request.remove(&request) {
                    Some(op) => {
                        let relay = (reply.error == 0).then_some(RelayInfo {
                            relay_address: reply.from,
                            peer_address: reply.to,
                        });
                        self.on_commit(op, relay)
                    }
                    None => self.push(HyperEvent::Dht(Event::Response { request, reply })),
                },
                Event::RequestFailed { request, error } => match self.by_request.remove(&request) {
                    Some(op) => self.on_commit(op, None),
                    None => self.push(HyperEvent::Dht(Event::RequestFailed { request, error })),
                },
                Event::Walked => self.push(HyperEvent::Walked),
                Event::Bootstrapped => self.push(HyperEvent::Bootstrapped),
                Event::Persistent => self.push(HyperEvent::Persistent),
            }
        }
    }
}
