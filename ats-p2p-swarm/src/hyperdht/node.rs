//! The sans-io HyperDHT node: wraps [`Node`] and handles HyperDHT commands.

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
    Event, Id, IncomingRequest, Node, QueryId, QueryOptions, QueryReply, RequestError, RequestId,
    SocketKind, UserRequest, errors, hash,
};
use crate::encoding::{Reader, Writer};
use crate::keys::KeyPair;

mod router;

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
    /// Values returned by nodes during a get walk (unverified; see [`HyperNode::immutable_get`]).
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
    /// [`HyperNode::answer_handshake`]).
    PeerHandshake {
        /// The request.
        req: IncomingRequest,
        /// Its decoded value.
        handshake: Handshake,
    },
    /// A relayed PEER_HOLEPUNCH for a key this node listens on (answer with
    /// [`HyperNode::answer_holepunch`]).
    PeerHolepunch {
        /// The request.
        req: IncomingRequest,
        /// Its decoded value.
        holepunch: Holepunch,
    },
    /// A raw request's response or failure (from [`HyperNode::request`]).
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

/// The sans-io HyperDHT node. Calling contract as [`Node`]: after any input, drain
/// [`HyperNode::poll_transmit`] and [`HyperNode::poll_event`], then wait for
/// [`HyperNode::poll_timeout`].
#[derive(Debug)]
pub struct HyperNode {
    dht: Node,
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

impl HyperNode {
    /// Wraps a dht-rpc node.
    pub fn new(dht: Node) -> Self {
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
    pub fn dht(&self) -> &Node {
        &self.dht
    }

    /// The dht-rpc node, mutably (raw requests, relays).
    pub fn dht_mut(&mut self) -> &mut Node {
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
            .is_none_or(|t| now.saturating_duration_since(t) >= crate::dht::node::TICK_INTERVAL)
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

    // ----- client operations -----

    fn start(
        &mut self,
        now: Instant,
        target: Id,
        command: u64,
        kind: OpKind,
    ) -> Result<OpId, RequestError> {
        self.start_with(now, target, command, None, kind)
    }

    fn start_with(
        &mut self,
        now: Instant,
        target: Id,
        command: u64,
        value: Option<Vec<u8>>,
        kind: OpKind,
    ) -> Result<OpId, RequestError> {
        if self.ops.len() >= MAX_OPS {
            return Err(RequestError::Busy);
        }
        let internal = matches!(kind, OpKind::FindNode);
        let q = self
            .dht
            .query(now, QueryOptions::new(target, internal, command, value))?;
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.ops.insert(
            id,
            Op {
                target,
                kind,
                results: Vec::new(),
                values: Vec::new(),
                commits_pending: 0,
                accepted: 0,
                closest: Vec::new(),
                relays: Vec::new(),
            },
        );
        self.by_query.insert(q, id);
        self.process(now);
        Ok(id)
    }

    /// LOOKUP walk for `topic`; ends with [`OpResult::Lookup`].
    pub fn lookup(&mut self, now: Instant, topic: Id) -> Result<OpId, RequestError> {
        self.start(now, topic, commands::LOOKUP, OpKind::Lookup)
    }

    /// FIND_PEER walk for `H(public_key)`; ends with [`OpResult::Lookup`] (one record per node).
    pub fn find_peer(&mut self, now: Instant, public_key: &[u8; 32]) -> Result<OpId, RequestError> {
        self.start(now, hash(public_key), commands::FIND_PEER, OpKind::FindPeer)
    }

    /// FIND_NODE walk; ends with [`OpResult::Closest`].
    pub fn find_node(&mut self, now: Instant, target: Id) -> Result<OpId, RequestError> {
        self.start(
            now,
            target,
            crate::dht::commands::FIND_NODE,
            OpKind::FindNode,
        )
    }

    /// LOOKUP walk, then a signed ANNOUNCE to each of the closest nodes.
    pub fn announce(
        &mut self,
        now: Instant,
        topic: Id,
        key_pair: KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<OpId, RequestError> {
        let kind = OpKind::Announce {
            key_pair: Box::new(key_pair),
            relay_addresses,
            unannounce: false,
        };
        self.start(now, topic, commands::LOOKUP, kind)
    }

    /// LOOKUP walk, then a signed UNANNOUNCE to each of the closest nodes.
    pub fn unannounce(
        &mut self,
        now: Instant,
        topic: Id,
        key_pair: KeyPair,
    ) -> Result<OpId, RequestError> {
        self.store
            .remove_record(&topic, key_pair.public_key().as_bytes());
        if hash(key_pair.public_key().as_bytes()) == topic {
            self.store.remove_forward(&topic);
        }
        let kind = OpKind::Announce {
            key_pair: Box::new(key_pair),
            relay_addresses: Vec::new(),
            unannounce: true,
        };
        self.start(now, topic, commands::LOOKUP, kind)
    }

    /// IMMUTABLE_GET walk, then IMMUTABLE_PUT of `value` to the closest nodes (target
    /// `H(value)`); ends with [`OpResult::Announced`].
    pub fn immutable_put(&mut self, now: Instant, value: Vec<u8>) -> Result<OpId, RequestError> {
        let target = hash(&value);
        let kind = OpKind::Put {
            command: commands::IMMUTABLE_PUT,
            value,
        };
        self.start(now, target, commands::IMMUTABLE_GET, kind)
    }

    /// IMMUTABLE_GET walk; ends with [`OpResult::Values`] (check `H(value) == target`).
    pub fn immutable_get(&mut self, now: Instant, target: Id) -> Result<OpId, RequestError> {
        self.start(now, target, commands::IMMUTABLE_GET, OpKind::Get)
    }

    /// MUTABLE_GET walk, then a signed MUTABLE_PUT to the closest nodes (target `H(pk)`).
    pub fn mutable_put(
        &mut self,
        now: Instant,
        key_pair: &KeyPair,
        seq: u64,
        value: Vec<u8>,
    ) -> Result<OpId, RequestError> {
        let pk = *key_pair.public_key().as_bytes();
        let signed = MutableValue::sign(key_pair, seq, value);
        let kind = OpKind::Put {
            command: commands::MUTABLE_PUT,
            value: encode_mutable_put(&pk, &signed),
        };
        let mut w = Writer::new();
        w.uint(0);
        self.start_with(
            now,
            hash(&pk),
            commands::MUTABLE_GET,
            Some(w.into_vec()),
            kind,
        )
    }

    /// MUTABLE_GET walk for values with seq ≥ `seq`; ends with [`OpResult::Values`] (decode with
    /// [`MutableValue::decode`] and check [`MutableValue::verify`]).
    pub fn mutable_get(
        &mut self,
        now: Instant,
        public_key: &[u8; 32],
        seq: u64,
    ) -> Result<OpId, RequestError> {
        let mut w = Writer::new();
        w.uint(seq);
        self.start_with(
            now,
            hash(public_key),
            commands::MUTABLE_GET,
            Some(w.into_vec()),
            OpKind::Get,
        )
    }

    /// A raw request; its outcome arrives as [`HyperEvent::Dht`].
    pub fn request(&mut self, now: Instant, req: UserRequest) -> Result<RequestId, RequestError> {
        let r = self.dht.request(now, req);
        self.process(now);
        r
    }

    fn on_query_reply(&mut self, query: QueryId, reply: QueryReply) {
        let Some(op) = self.by_query.get(&query).and_then(|o| self.ops.get_mut(o)) else {
            return;
        };
        if matches!(op.kind, OpKind::Get) {
            if let Some(v) = reply.value {
                if op.values.len() < MAX_LOOKUP_RESULTS {
                    op.values.push((reply.from, v));
                }
            }
            return;
        }
        if !matches!(op.kind, OpKind::Lookup | OpKind::FindPeer)
            || op.results.len() >= MAX_LOOKUP_RESULTS
        {
            return;
        }
        let Some(value) = reply.value.as_deref() else {
            return;
        };
        // Decode by the command asked: a LOOKUP reply is `array(peer) ‖ bump`, a FIND_PEER
        // reply is one peer record.
        let result = if matches!(op.kind, OpKind::FindPeer) {
            PeerRecord::decode(value).ok().map(|p| LookupResult {
                from: reply.from,
                peers: vec![p],
                bump: 0,
            })
        } else {
            LookupReply::decode(value).ok().map(|l| LookupResult {
                from: reply.from,
                peers: l.peers,
                bump: l.bump,
            })
        };
        if let Some(r) = result {
            op.results.push(r);
        }
    }

    fn on_query_done(
        &mut self,
        now: Instant,
        query: QueryId,
        closest: Vec<QueryReply>,
        error: Option<RequestError>,
    ) {
        let Some(op_id) = self.by_query.remove(&query) else {
            return;
        };
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        let result = match &op.kind {
            OpKind::Lookup | OpKind::FindPeer => OpResult::Lookup(std::mem::take(&mut op.results)),
            OpKind::FindNode => OpResult::Closest(closest),
            OpKind::Get => OpResult::Values(std::mem::take(&mut op.values)),
            OpKind::Put { command, value } => {
                let (command, value, target) = (*command, value.clone(), op.target);
                op.closest = closest.iter().map(|r| r.from).collect();
                let mut sent = Vec::new();
                for r in &closest {
                    let Some(token) = r.token else { continue };
                    let req = UserRequest {
                        to: r.from,
                        token: Some(token),
                        internal: false,
                        command,
                        target: Some(target),
                        value: Some(value.clone()),
                        socket: None,
                        retries: None,
                    };
                    if let Ok(rid) = self.dht.request(now, req) {
                        sent.push(rid);
                    }
                }
                let n = sent.len();
                for rid in sent {
                    self.by_request.insert(rid, op_id);
                }
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.commits_pending = n;
                }
                if n > 0 {
                    self.process(now);
                    return;
                }
                OpResult::Failed(error.unwrap_or(RequestError::TooFewNodes))
            }
            OpKind::Announce {
                key_pair,
                relay_addresses,
                unannounce,
            } => {
                let (key_pair, relay_addresses, unannounce) =
                    (key_pair.clone(), relay_addresses.clone(), *unannounce);
                let target = op.target;
                op.closest = closest.iter().map(|r| r.from).collect();
                let mut sent = Vec::new();
                for r in &closest {
                    let (Some(token), Some(node_id)) = (r.token, r.id) else {
                        continue;
                    };
                    let peer = PeerRecord {
                        public_key: *key_pair.public_key().as_bytes(),
                        relay_addresses: if unannounce {
                            Vec::new()
                        } else {
                            relay_addresses.clone()
                        },
                    };
                    let nsv = if unannounce {
                        ns::unannounce()
                    } else {
                        ns::announce()
                    };
                    let signature =
                        sign_announce(&nsv, &target, &node_id, &token, &peer, None, &key_pair);
                    let value = Announce {
                        peer: Some(peer),
                        refresh: None,
                        signature: Some(signature),
                        bump: 0,
                    }
                    .encode();
                    let req = UserRequest {
                        to: r.from,
                        token: Some(token),
                        internal: false,
                        command: if unannounce {
                            commands::UNANNOUNCE
                        } else {
                            commands::ANNOUNCE
                        },
                        target: Some(target),
                        value: Some(value),
                        socket: None,
                        retries: None,
                    };
                    if let Ok(rid) = self.dht.request(now, req) {
                        sent.push(rid);
                    }
                }
                let n = sent.len();
                for rid in sent {
                    self.by_request.insert(rid, op_id);
                }
                if let Some(op) = self.ops.get_mut(&op_id) {
                    op.commits_pending = n;
                }
                if n > 0 {
                    self.process(now);
                    return;
                }
                OpResult::Failed(error.unwrap_or(RequestError::TooFewNodes))
            }
        };
        self.ops.remove(&op_id);
        self.push(HyperEvent::OpDone { op: op_id, result });
    }

    /// One commit answered: `relay` is the accepting node and our address as it saw us.
    fn on_commit(&mut self, op_id: OpId, relay: Option<RelayInfo>) {
        let Some(op) = self.ops.get_mut(&op_id) else {
            return;
        };
        op.commits_pending = op.commits_pending.saturating_sub(1);
        if let Some(relay) = relay {
            op.accepted += 1;
            op.relays.push(relay);
        }
        if op.commits_pending > 0 {
            return;
        }
        let result = if op.accepted > 0 {
            OpResult::Announced {
                accepted: op.accepted,
                closest: std::mem::take(&mut op.closest),
                relays: std::mem::take(&mut op.relays),
            }
        } else {
            OpResult::Failed(RequestError::TooFewNodes)
        };
        self.ops.remove(&op_id);
        self.push(HyperEvent::OpDone { op: op_id, result });
    }

    // ----- node side -----

    fn on_request(&mut self, now: Instant, req: IncomingRequest) {
        match req.command {
            commands::PEER_HANDSHAKE => return self.on_peer_handshake(now, req),
            commands::PEER_HOLEPUNCH => return self.on_peer_holepunch(now, req),
            _ => {}
        }
        let Some(own_id) = self.dht.id() else {
            self.dht.error_reply(&req, errors::UNKNOWN_COMMAND, false);
            return;
        };
        match req.command {
            commands::FIND_PEER => {
                let Some(target) = req.target else { return };
                let rec = self.store.forward(now, &target).map(|f| f.record.clone());
                self.dht.reply(&req, rec, true, true);
            }
            commands::LOOKUP => {
                let Some(target) = req.target else { return };
                let (mut records, bump) = self.store.records(now, &target, LOOKUP_RECORDS);
                let fwd = self
                    .store
                    .forward(now, &target)
                    .map(|f| f.record.as_slice());
                if let Some(f) = fwd {
                    if records.len() < LOOKUP_RECORDS {
                        records.push(f);
                    }
                }
                // An unproven source gets the records that fit its reply budget (the reply's
                // fixed part, id and token aside); the rest of a flood's replies stay small.
                if let Some(budget) = self.dht.reply_budget(&req) {
                    let room = budget.saturating_sub(REPLY_OVERHEAD);
                    while !records.is_empty()
                        && LookupReply::encode_raw(&records, bump).len() > room
                    {
                        records.pop();
                    }
                }
                let value = (!records.is_empty()).then(|| LookupReply::encode_raw(&records, bump));
                self.dht.reply(&req, value, true, true);
            }
            commands::ANNOUNCE | commands::UNANNOUNCE => self.on_announce(now, own_id, req),
            commands::MUTABLE_PUT | commands::IMMUTABLE_PUT => {
                let (Some(target), Some(_), Some(value)) =
                    (req.target, req.token, req.value.as_deref())
                else {
                    return;
                };
                let r = if req.command == commands::MUTABLE_PUT {
                    self.values.put_mutable(now, &target, value)
                } else {
                    self.values.put_immutable(now, &target, value)
                };
                match r {
                    Ok(()) => self.dht.reply(&req, None, true, true),
                    Err(PutError::Drop) => {}
                    Err(PutError::SeqReused) => {
                        self.dht.error_reply(&req, error_codes::SEQ_REUSED, false)
                    }
                    Err(PutError::SeqTooLow) => {
                        self.dht.error_reply(&req, error_codes::SEQ_TOO_LOW, false)
                    }
                }
            }
            commands::MUTABLE_GET => {
                let Some(target) = req.target else { return };
                let Some(seq) = req
                    .value
                    .as_deref()
                    .and_then(|v| Reader::new(v).uint().ok())
                else {
                    return;
                };
                let value = self
                    .values
                    .get_mutable(now, &target)
                    .filter(|v| v.seq >= seq)
                    .map(MutableValue::encode);
                self.dht.reply(&req, value, true, true);
            }
            commands::IMMUTABLE_GET => {
                let Some(target) = req.target else { return };
                let value = self.values.get_immutable(now, &target).map(<[u8]>::to_vec);
                self.dht.reply(&req, value, true, true);
            }
            _ => self.dht.error_reply(&req, errors::UNKNOWN_COMMAND, false),
        }
    }

    fn on_announce(&mut self, now: Instant, own_id: Id, req: IncomingRequest) {
        let (Some(target), Some(token)) = (req.target, req.token) else {
            return;
        };
        let Some(ann) = req.value.as_deref().and_then(|v| Announce::decode(v).ok()) else {
            return;
        };
        let (Some(mut peer), Some(sig)) = (ann.peer, ann.signature) else {
            // Peer-less refresh announces are not supported: ignored, as hyperdht ignores
            // unknown refresh tokens.
            return;
        };
        let unannounce = req.command == commands::UNANNOUNCE;
        let nsv = if unannounce {
            ns::unannounce()
        } else {
            ns::announce()
        };
        if !verify_announce(
            &nsv,
            &target,
            &own_id,
            &token,
            &peer,
            ann.refresh.as_ref(),
            &sig,
        ) {
            trace!(from = %req.from, "announce with a bad signature dropped");
            return;
        }
        let self_announce = hash(&peer.public_key) == target;
        if unannounce {
            if self_announce {
                self.store.remove_forward(&target);
            }
            self.store.remove_record(&target, &peer.public_key);
        } else {
            peer.relay_addresses.truncate(MAX_RELAY_ADDRESSES_STORED);
            let record = peer.encode();
            if self_announce {
                self.store.set_forward(now, target, req.from, record);
                self.store.remove_record(&target, &peer.public_key);
            } else {
                self.store.add_record(now, target, peer.public_key, record);
                self.store.bump(&target, ann.bump, self.wall_ms);
            }
        }
        self.dht.reply(&req, None, false, false);
    }
}
