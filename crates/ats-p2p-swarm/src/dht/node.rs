//! The sans-io dht-rpc node: two logical sockets, inflight requests, tokens, routing table
//! upkeep, NAT sampling, firewall detection, bootstrap and iterative queries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

use super::message::{Message, Request, Response};
use super::nat::NatSampler;
use super::query::{Commit, Query, Seen};
use super::table::{AddOutcome, RoutingTable, TableNode};
use super::{Id, K, commands, errors, hash, keyed_hash, node_id};
use crate::encoding::ipv4_bytes;

/// Per-transmission request timeout (dht-rpc default).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// Retransmissions of a plain request (4 transmissions in all).
pub const DEFAULT_RETRIES: u32 = 3;
/// Congestion slot length and secret-rotation timer (dht-rpc `_drain`).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(750);
/// Token secrets rotate every this many drain ticks (7.5 s).
pub const ROTATE_SECRETS_TICKS: u32 = 10;
/// Background upkeep tick (dht-rpc `TICK_INTERVAL`).
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);
/// Sends allowed per congestion slot (dht-rpc `MAX_WINDOW`); twice that over the 4-slot window.
pub const MAX_WINDOW: usize = 80;
/// Most requests in flight at once (tids are 16-bit); beyond it requests fail with `Busy`.
pub const MAX_INFLIGHT: usize = 4096;
/// Most concurrent queries; beyond it `query` fails with `Busy`.
pub const MAX_QUERIES: usize = 256;
/// Most queued outgoing datagrams before the oldest are dropped (the driver drains per input).
pub const MAX_TRANSMITS: usize = 8192;
/// Most queued events before new ones are dropped (the driver drains per input).
pub const MAX_EVENTS: usize = 8192;
/// Most delayed pings waiting (the rest are dropped).
pub const MAX_DELAYED_PINGS: usize = 64;
/// Largest DELAYED_PING delay honoured (dht-rpc `maxPingDelay`).
pub const MAX_PING_DELAY: Duration = Duration::from_secs(10);
/// Most concurrent liveness checks started by DOWN_HINTs.
pub const MAX_CHECKS: usize = 10;
/// Most concurrent pings of full-row incumbents.
pub const MAX_REPINGS: usize = 3;
/// DOWN_HINTs sent per tick at most.
pub const DOWN_HINTS_PER_TICK: usize = 50;
/// Ticks between refreshes when idle (~5 min).
pub const REFRESH_TICKS: u64 = 60;
/// A node that answered within this many ticks is "recent".
const RECENT_NODE: u64 = 12;
/// A node older than this many ticks is "old".
const OLD_NODE: u64 = 360;
/// Nodes asked in a firewall check.
const FIREWALL_CHECK_NODES: usize = 5;

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

/// Identifies a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// Identifies a user request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// A response as seen by a query or request owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryReply {
    /// Responder address (UDP source).
    pub from: SocketAddrV4,
    /// Responder id, if it sent one that matches `H(from)`.
    pub id: Option<Id>,
    /// Our address as the responder saw it.
    pub to: SocketAddrV4,
    /// Token for later requests to the responder.
    pub token: Option<Id>,
    /// Closer nodes.
    pub closer_nodes: Vec<SocketAddrV4>,
    /// Error code (0 = none).
    pub error: u64,
    /// Reply value.
    pub value: Option<Vec<u8>>,
}

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
/// [`Node::reply`], [`Node::error_reply`] or [`Node::relay`], or ignored.
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
    /// Retransmissions (default [`DEFAULT_RETRIES`]).
    pub retries: Option<u32>,
}

/// Options of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOptions {
    /// Target id.
    pub target: Id,
    /// dht-rpc command (true) or application command (false).
    pub internal: bool,
    /// Command.
    pub command: u64,
    /// Value sent to every node.
    pub value: Option<Vec<u8>>,
    /// Parallel requests (default 10).
    pub concurrency: usize,
    /// Commit phase.
    pub commit: Commit,
    /// Seed nodes (else the routing table, else the bootstrap nodes).
    pub nodes: Vec<SocketAddrV4>,
}

impl QueryOptions {
    /// A query with defaults: concurrency 10, no commit, seeds from the table.
    pub fn new(target: Id, internal: bool, command: u64, value: Option<Vec<u8>>) -> Self {
        Self {
            target,
            internal,
            command,
            value,
            concurrency: 10,
            commit: Commit::None,
            nodes: Vec::new(),
        }
    }
}

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
    /// The bootstrap walk (and firewall test) finished.
    Bootstrapped,
    /// The node became persistent (has an id and stores records).
    Persistent,
}

/// Configuration of a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Stay ephemeral (true) or become persistent after the firewall test (false).
    pub ephemeral: bool,
    /// Known public address of the server socket: the node starts unfirewalled and, unless
    /// ephemeral, persistent with `id = H(public_addr)` (a bootstrapper).
    pub public_addr: Option<SocketAddrV4>,
    /// Local port of the server socket (sent in PING_NAT).
    pub server_port: u16,
    /// Start firewalled (dht-rpc default true).
    pub firewalled: bool,
    /// Query concurrency.
    pub concurrency: usize,
    /// Seed of the node's random generator (table id, tokens, tids).
    pub seed: [u8; 32],
}

impl NodeConfig {
    /// Defaults: ephemeral, firewalled, concurrency 10.
    pub fn new(bootstrap: Vec<SocketAddrV4>, server_port: u16, seed: [u8; 32]) -> Self {
        Self {
            bootstrap,
            ephemeral: true,
            public_addr: None,
            server_port,
            firewalled: true,
            concurrency: 10,
            seed,
        }
    }
}

#[derive(Debug, Clone)]
enum Owner {
    Query(QueryId),
    Commit(QueryId),
    User(RequestId),
    QuickNat,
    FirewallCheck,
    Check {
        id: Id,
        last_seen: u64,
    },
    Reping {
        old: Id,
        new: TableNode,
        last_seen: u64,
    },
    Fire,
}

#[derive(Debug)]
struct Inflight {
    to: SocketAddrV4,
    socket: SocketKind,
    bytes: Vec<u8>,
    sent: u32,
    retries: u32,
    deadline: Option<Instant>,
    cycled: bool,
    owner: Owner,
}

#[derive(Debug, Default)]
struct Congestion {
    i: usize,
    total: usize,
    window: [usize; 4],
}

impl Congestion {
    fn is_full(&self) -> bool {
        self.total >= 2 * MAX_WINDOW || self.window.get(self.i).copied().unwrap_or(0) >= MAX_WINDOW
    }
    fn send(&mut self) {
        self.total += 1;
        if let Some(w) = self.window.get_mut(self.i) {
            *w += 1;
        }
    }
    fn recv(&mut self) {
        if let Some(w) = self.window.get_mut(self.i) {
            if *w > 0 {
                *w -= 1;
                self.total = self.total.saturating_sub(1);
            }
        }
    }
    fn drain(&mut self) {
        self.i = (self.i + 1) & 3;
        if let Some(w) = self.window.get_mut(self.i) {
            self.total = self.total.saturating_sub(*w);
            *w = 0;
        }
    }
}

#[derive(Debug)]
enum Phase {
    Idle,
    Walking {
        query: QueryId,
        round: u8,
    },
    FirewallCheck {
        round: u8,
        pending: usize,
        only_firewall: bool,
    },
    Done,
}

#[derive(Debug)]
struct FwCheck {
    hosts: HashSet<Ipv4Addr>,
    pongs: Vec<(SocketAddrV4, SocketAddrV4)>,
    asked: usize,
}

/// The sans-io dht-rpc node. See the [module docs](super) for the calling contract.
#[derive(Debug)]
pub struct Node {
    cfg: NodeConfig,
    rng: StdRng,
    table: RoutingTable,
    ephemeral: bool,
    firewalled: bool,
    nat: NatSampler,
    bootstrap_samples: Vec<SocketAddrV4>,
    secrets: [Id; 2],
    rotate_in: u32,
    tick: u64,
    refresh_in: u64,
    next_tick: Option<Instant>,
    next_drain: Option<Instant>,
    inflight: HashMap<u16, Inflight>,
    send_queue: VecDeque<u16>,
    next_tid: u16,
    congestion: Congestion,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    queries: HashMap<QueryId, Query>,
    next_query: u64,
    next_request: u64,
    delayed: Vec<(Instant, Transmit)>,
    checks: usize,
    repinging: usize,
    down_hints_this_tick: usize,
    phase: Phase,
    quick_nat_pending: bool,
    test_nat: bool,
    fw: Option<FwCheck>,
    destroyed: bool,
    recent: VecDeque<Id>,
    last_now: Option<Instant>,
}

impl Node {
    /// A node; nothing is sent until the first [`Node::handle_timeout`].
    pub fn new(cfg: NodeConfig) -> Self {
        let mut rng = StdRng::from_seed(cfg.seed);
        let mut secrets = [[0u8; 32]; 2];
        rng.fill(&mut secrets[0]);
        rng.fill(&mut secrets[1]);
        let mut random_id = [0u8; 32];
        rng.fill(&mut random_id);
        let next_tid: u16 = rng.r#gen();
        let mut nat = NatSampler::new();
        let (table_id, firewalled, ephemeral) = match cfg.public_addr {
            Some(addr) => {
                nat.add(*addr.ip(), addr.port());
                (
                    if cfg.ephemeral {
                        random_id
                    } else {
                        node_id(&addr)
                    },
                    false,
                    cfg.ephemeral,
                )
            }
            None => (random_id, cfg.firewalled, true),
        };
        let refresh_in = REFRESH_TICKS - rng.gen_range(0..REFRESH_TICKS / 2);
        Self {
            rng,
            table: RoutingTable::new(table_id),
            ephemeral,
            firewalled,
            nat,
            bootstrap_samples: Vec::new(),
            secrets,
            rotate_in: ROTATE_SECRETS_TICKS,
            tick: 0,
            refresh_in,
            next_tick: None,
            next_drain: None,
            inflight: HashMap::new(),
            send_queue: VecDeque::new(),
            next_tid,
            congestion: Congestion::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            queries: HashMap::new(),
            next_query: 0,
            next_request: 0,
            delayed: Vec::new(),
            checks: 0,
            repinging: 0,
            down_hints_this_tick: 0,
            phase: Phase::Idle,
            quick_nat_pending: false,
            test_nat: false,
            fw: None,
            destroyed: false,
            recent: VecDeque::new(),
            last_now: None,
            cfg,
        }
    }

    // ----- getters -----

    /// Our node id, when persistent.
    pub fn id(&self) -> Option<Id> {
        (!self.ephemeral).then(|| *self.table.id())
    }

    /// The routing table.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// True while firewalled (requests go out on the client socket).
    pub fn is_firewalled(&self) -> bool {
        self.firewalled
    }

    /// True while ephemeral.
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// True once the bootstrap walk finished.
    pub fn is_bootstrapped(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Our public address as sampled from peers (port 0 if inconsistent).
    pub fn nat_address(&self) -> Option<SocketAddrV4> {
        self.nat
            .host()
            .map(|h| SocketAddrV4::new(h, self.nat.port()))
    }

    /// Our reachable server address, only when unfirewalled and consistent.
    pub fn remote_address(&self) -> Option<SocketAddrV4> {
        let a = self.nat_address()?;
        (!self.firewalled && a.port() == self.cfg.server_port).then_some(a)
    }

    /// Requests in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Active queries.
    pub fn queries_len(&self) -> usize {
        self.queries.len()
    }

    /// Bootstrap nodes.
    pub fn bootstrap_nodes(&self) -> &[SocketAddrV4] {
        &self.cfg.bootstrap
    }

    /// The socket requests are sent from now.
    pub fn request_socket(&self) -> SocketKind {
        if self.firewalled {
            SocketKind::Client
        } else {
            SocketKind::Server
        }
    }

    /// `token(addr, i)`: keyed BLAKE2b of the host string with secret `i`.
    pub fn token(&self, host: &Ipv4Addr, i: usize) -> Id {
        let secret = self.secrets.get(i).copied().unwrap_or([0; 32]);
        keyed_hash(&secret, host.to_string().as_bytes())
    }

    // ----- output -----

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = [self.next_tick, self.next_drain]
            .into_iter()
            .flatten()
            .min();
        for f in self.inflight.values() {
            if let Some(d) = f.deadline {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        }
        for (d, _) in &self.delayed {
            t = Some(t.map_or(*d, |x| x.min(*d)));
        }
        t
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            debug!("dht event queue full, dropping event");
            return;
        }
        self.events.push_back(e);
    }

    fn push_transmit(&mut self, t: Transmit) {
        if self.transmits.len() >= MAX_TRANSMITS {
            self.transmits.pop_front();
        }
        self.transmits.push_back(t);
    }

    // ----- input -----

    /// Timers: retransmissions, drain, tick, delayed pings. Starts the bootstrap on first call.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.destroyed {
            return;
        }
        self.last_now = Some(now);
        if self.next_tick.is_none() {
            self.next_tick = Some(now + TICK_INTERVAL);
            self.next_drain = Some(now + DRAIN_INTERVAL);
            self.start_bootstrap(now);
        }
        if self.next_drain.is_some_and(|d| d <= now) {
            self.next_drain = Some(now + DRAIN_INTERVAL);
            self.drain(now);
        }
        if self.next_tick.is_some_and(|d| d <= now) {
            self.next_tick = Some(now + TICK_INTERVAL);
            self.on_tick(now);
        }
        let due: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for tid in due {
            self.on_request_timeout(now, tid);
        }
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed.get(i).is_some_and(|(d, _)| *d <= now) {
                let (_, t) = self.delayed.swap_remove(i);
                self.push_transmit(t);
            } else {
                i += 1;
            }
        }
    }

    /// A datagram arrived on `socket` from `from`. Never panics on any input.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        buf: &[u8],
    ) {
        if self.destroyed || buf.len() < 2 || from.port() == 0 {
            return;
        }
        self.last_now = Some(now);
        if socket == SocketKind::Server {
            if let Some(fw) = &mut self.fw {
                if fw.hosts.len() < 64 {
                    fw.hosts.insert(*from.ip());
                }
            }
        }
        let external = socket != self.request_socket();
        match Message::decode(buf) {
            Ok(Message::Request(req)) => self.on_request(now, socket, from, req, external),
            Ok(Message::Response(res)) => self.on_response(now, from, res, external),
            Err(e) => trace!(%from, error = %e, "undecodable dht datagram"),
        }
    }

    // ----- application commands -----

    /// Starts an iterative query.
    pub fn query(&mut self, now: Instant, opts: QueryOptions) -> Result<QueryId, RequestError> {
        if self.destroyed {
            return Err(RequestError::Destroyed);
        }
        if self.queries.len() >= MAX_QUERIES {
            return Err(RequestError::Busy);
        }
        let id = QueryId(self.next_query);
        self.next_query += 1;
        let mut q = Query::new(
            opts.target,
            opts.internal,
            opts.command,
            opts.value,
            opts.concurrency,
            opts.commit,
        );
        let mut hints = Vec::new();
        for n in opts.nodes.iter().rev() {
            q.add_pending(*n, None, &mut hints);
        }
        if opts.nodes.is_empty() {
            self.add_from_table(&mut q);
            if q.pending.len() < K {
                for b in self.cfg.bootstrap.clone() {
                    q.add_pending(b, None, &mut hints);
                }
            }
        }
        self.queries.insert(id, q);
        self.refresh_in = REFRESH_TICKS;
        self.read_more(now, id);
        Ok(id)
    }

    /// Stops a query without a `QueryDone` event.
    pub fn cancel_query(&mut self, id: QueryId) {
        self.queries.remove(&id);
    }

    /// Sends one request; the outcome arrives as [`Event::Response`] or [`Event::RequestFailed`].
    pub fn request(&mut self, now: Instant, req: UserRequest) -> Result<RequestId, RequestError> {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let socket = req.socket.unwrap_or(self.request_socket());
        self.send_request(
            now,
            req.to,
            req.token,
            req.internal,
            req.command,
            req.target,
            req.value,
            socket,
            req.retries.unwrap_or(DEFAULT_RETRIES),
            Owner::User(id),
        )?;
        Ok(id)
    }

    /// Adds a node we learned about out of band (e.g. a bootstrapper with an id).
    pub fn add_node(&mut self, addr: SocketAddrV4) {
        let n = TableNode {
            id: node_id(&addr),
            addr,
            added: self.tick,
            pinged: self.tick,
            seen: self.tick,
        };
        self.add_table_node(n);
    }

    /// Stops everything; inflight requests fail with `Destroyed`.
    pub fn destroy(&mut self) {
        self.destroyed = true;
        let owners: Vec<Owner> = self.inflight.drain().map(|(_, f)| f.owner).collect();
        for o in owners {
            if let Owner::User(r) = o {
                self.push_event(Event::RequestFailed {
                    request: r,
                    error: RequestError::Destroyed,
                });
            }
        }
        self.queries.clear();
        self.send_queue.clear();
        self.delayed.clear();
    }

    /// Replies to an application request: `token` adds our token for the requester,
    /// `closer_nodes` adds the k closest nodes to its target.
    pub fn reply(
        &mut self,
        req: &IncomingRequest,
        value: Option<Vec<u8>>,
        token: bool,
        closer_nodes: bool,
    ) {
        self.send_reply(
            req.socket,
            req.tid,
            req.from,
            req.target.as_ref(),
            0,
            value,
            token,
            closer_nodes,
        );
    }

    /// Replies to `to` instead of the requester (relay REPLY legs), on the request's socket.
    pub fn reply_to(&mut self, req: &IncomingRequest, to: SocketAddrV4, value: Option<Vec<u8>>) {
        self.send_reply(
            req.socket,
            req.tid,
            to,
            req.target.as_ref(),
            0,
            value,
            false,
            false,
        );
    }

    /// Error reply (closer nodes included when the request had a target).
    pub fn error_reply(&mut self, req: &IncomingRequest, code: u64, token: bool) {
        self.send_reply(
            req.socket,
            req.tid,
            req.from,
            req.target.as_ref(),
            code,
            None,
            token,
            true,
        );
    }

    /// Forwards the request to `to` with the same tid/command/target and a new value, no token
    /// (dht-rpc `req.relay`). `socket` overrides the request's socket.
    pub fn relay(
        &mut self,
        req: &IncomingRequest,
        value: Option<Vec<u8>>,
        to: SocketAddrV4,
        socket: Option<SocketKind>,
    ) {
        let socket = socket.unwrap_or(req.socket);
        let msg = Request {
            tid: req.tid,
            to,
            id: self.own_id_for(socket),
            token: None,
            internal: req.internal,
            command: req.command,
            target: req.target,
            value,
        };
        self.push_transmit(Transmit {
            socket,
            to,
            payload: msg.encode(),
        });
    }

    // ----- internals -----

    fn own_id_for(&self, socket: SocketKind) -> Option<Id> {
        (!self.ephemeral && socket == SocketKind::Server).then(|| *self.table.id())
    }

    #[allow(clippy::too_many_arguments)]
    fn send_reply(
        &mut self,
        socket: SocketKind,
        tid: u16,
        to: SocketAddrV4,
        target: Option<&Id>,
        error: u64,
        value: Option<Vec<u8>>,
        token: bool,
        closer: bool,
    ) {
        let closer_nodes = match (target, closer) {
            (Some(t), true) => self
                .table
                .closest(t, K)
                .into_iter()
                .map(|n| n.addr)
                .collect(),
            _ => Vec::new(),
        };
        let res = Response {
            tid,
            to,
            id: self.own_id_for(socket),
            token: token.then(|| self.token(to.ip(), 1)),
            closer_nodes,
            error,
            value,
        };
        self.push_transmit(Transmit {
            socket,
            to,
            payload: res.encode(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn send_request(
        &mut self,
        now: Instant,
        to: SocketAddrV4,
        token: Option<Id>,
        internal: bool,
        command: u64,
        target: Option<Id>,
        value: Option<Vec<u8>>,
        socket: SocketKind,
        retries: u32,
        owner: Owner,
    ) -> Result<u16, RequestError> {
        if self.destroyed {
            return Err(RequestError::Destroyed);
        }
        if self.inflight.len() >= MAX_INFLIGHT {
            return Err(RequestError::Busy);
        }
        let mut tid = self.next_tid;
        while self.inflight.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        self.next_tid = tid.wrapping_add(1);
        let msg = Request {
            tid,
            to,
            id: self.own_id_for(socket),
            token,
            internal,
            command,
            target,
            value,
        };
        self.inflight.insert(
            tid,
            Inflight {
                to,
                socket,
                bytes: msg.encode(),
                sent: 0,
                retries,
                deadline: None,
                cycled: false,
                owner,
            },
        );
        if self.congestion.is_full() {
            self.send_queue.push_back(tid);
        } else {
            self.send_now(now, tid);
        }
        Ok(tid)
    }

    fn send_now(&mut self, now: Instant, tid: u16) {
        let Some(f) = self.inflight.get_mut(&tid) else {
            return;
        };
        f.sent += 1;
        f.deadline = Some(now + REQUEST_TIMEOUT);
        let t = Transmit {
            socket: f.socket,
            to: f.to,
            payload: f.bytes.clone(),
        };
        self.congestion.send();
        self.push_transmit(t);
    }

    fn drain(&mut self, now: Instant) {
        self.rotate_in = self.rotate_in.saturating_sub(1);
        if self.rotate_in == 0 {
            self.rotate_in = ROTATE_SECRETS_TICKS;
            let old0 = self.secrets[0];
            self.secrets[0] = self.secrets[1];
            self.secrets[1] = hash(&old0);
        }
        self.congestion.drain();
        while !self.congestion.is_full() {
            let Some(tid) = self.send_queue.pop_front() else {
                break;
            };
            self.send_now(now, tid);
        }
    }

    fn on_request_timeout(&mut self, now: Instant, tid: u16) {
        let Some(f) = self.inflight.get_mut(&tid) else {
            return;
        };
        f.deadline = None;
        let first_cycle = !f.cycled;
        f.cycled = true;
        let exhausted = f.sent > f.retries;
        if let (true, Owner::Query(q)) = (first_cycle, f.owner.clone()) {
            if let Some(q) = self.queries.get_mut(&q) {
                q.slow += 1;
            }
        }
        if !exhausted {
            if self.congestion.is_full() {
                self.send_queue.push_back(tid);
            } else {
                self.send_now(now, tid);
            }
            if let (true, Some(Owner::Query(q))) = (
                first_cycle,
                self.inflight.get(&tid).map(|f| f.owner.clone()),
            ) {
                self.read_more(now, q);
            }
            return;
        }
        let Some(f) = self.inflight.remove(&tid) else {
            return;
        };
        self.congestion.recv();
        // A timed-out table node is removed (dht-rpc `_ontimeout`).
        let id = node_id(&f.to);
        if self.table.get(&id).is_some_and(|n| n.addr == f.to) {
            self.table.remove(&id);
        }
        self.on_owner_error(now, f, RequestError::Timeout);
    }

    fn on_owner_error(&mut self, now: Instant, f: Inflight, err: RequestError) {
        match f.owner {
            Owner::Query(q) => {
                let mut hints = Vec::new();
                if let Some(query) = self.queries.get_mut(&q) {
                    if let Some(Seen::Pending(refs)) = query.seen.insert(f.to, Seen::Down) {
                        hints.extend(refs.into_iter().map(|r| (r, f.to)));
                    }
                    query.inflight = query.inflight.saturating_sub(1);
                    if f.cycled {
                        query.slow = query.slow.saturating_sub(1);
                    }
                    query.errors += 1;
                }
                self.send_down_hints(now, hints);
                self.read_more(now, q);
            }
            Owner::Commit(q) => self.on_commit_done(now, q, false),
            Owner::User(r) => self.push_event(Event::RequestFailed {
                request: r,
                error: err,
            }),
            Owner::QuickNat | Owner::Fire => {}
            Owner::FirewallCheck => self.on_fw_pong(now, None),
            Owner::Check { id, .. } => {
                self.checks = self.checks.saturating_sub(1);
                self.table.remove(&id);
            }
            Owner::Reping { old, new, .. } => {
                self.repinging = self.repinging.saturating_sub(1);
                self.table.remove(&old);
                self.add_table_node(new);
            }
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        socket: SocketKind,
        from: SocketAddrV4,
        req: Request,
        external: bool,
    ) {
        if let Some(t) = req.token {
            if t != self.token(from.ip(), 1) && t != self.token(from.ip(), 0) {
                self.send_reply(
                    socket,
                    req.tid,
                    from,
                    req.target.as_ref(),
                    errors::INVALID_TOKEN,
                    None,
                    true,
                    true,
                );
                return;
            }
        }
        let from_id = req.id.filter(|id| *id == node_id(&from));
        if from_id.is_some() {
            self.add_node_from_network(!external, from, from_id, req.to);
        }
        if req.internal {
            match req.command {
                commands::PING => {
                    self.send_reply(socket, req.tid, from, None, 0, None, false, false);
                }
                commands::PING_NAT => {
                    let Some(v) = req.value.as_deref() else {
                        return;
                    };
                    let Some(port) = v.get(..2).map(|b| u16::from_le_bytes([b[0], b[1]])) else {
                        return;
                    };
                    if port == 0 {
                        return;
                    }
                    let to = SocketAddrV4::new(*from.ip(), port);
                    self.send_reply(socket, req.tid, to, None, 0, None, false, false);
                }
                commands::FIND_NODE => {
                    if req.target.is_none() {
                        return;
                    }
                    self.send_reply(
                        socket,
                        req.tid,
                        from,
                        req.target.as_ref(),
                        0,
                        None,
                        false,
                        true,
                    );
                }
                commands::DOWN_HINT => {
                    let Some(v) = req.value.as_deref().and_then(|v| v.get(..6)) else {
                        return;
                    };
                    if self.checks < MAX_CHECKS {
                        let id = hash(v);
                        let tick = self.tick;
                        if let Some(n) = self.table.get(&id) {
                            if n.pinged < tick {
                                let addr = n.addr;
                                self.check(now, id, addr);
                            }
                        }
                    }
                    self.send_reply(socket, req.tid, from, None, 0, None, false, false);
                }
                commands::DELAYED_PING => {
                    let Some(v) = req.value.as_deref().and_then(|v| v.get(..4)) else {
                        return;
                    };
                    let ms = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    let delay = Duration::from_millis(u64::from(ms));
                    if delay > MAX_PING_DELAY || self.delayed.len() >= MAX_DELAYED_PINGS {
                        return;
                    }
                    let res = Response {
                        tid: req.tid,
                        to: from,
                        id: self.own_id_for(socket),
                        token: None,
                        closer_nodes: Vec::new(),
                        error: 0,
                        value: None,
                    };
                    self.delayed.push((
                        now + delay,
                        Transmit {
                            socket,
                            to: from,
                            payload: res.encode(),
                        },
                    ));
                }
                _ => {
                    self.send_reply(
                        socket,
                        req.tid,
                        from,
                        req.target.as_ref(),
                        errors::UNKNOWN_COMMAND,
                        None,
                        false,
                        true,
                    );
                }
            }
            return;
        }
        self.push_event(Event::Request(IncomingRequest {
            socket,
            from,
            from_id,
            tid: req.tid,
            to: req.to,
            token: req.token,
            internal: false,
            command: req.command,
            target: req.target,
            value: req.value,
        }));
    }

    fn on_response(&mut self, now: Instant, from: SocketAddrV4, res: Response, external: bool) {
        let Some(f) = self.inflight.remove(&res.tid) else {
            return;
        };
        self.send_queue.retain(|t| *t != res.tid);
        self.congestion.recv();
        let from_id = res.id.filter(|id| *id == node_id(&from));
        self.add_node_from_network(!external, from, from_id, res.to);
        let reply = QueryReply {
            from,
            id: from_id,
            to: res.to,
            token: res.token,
            closer_nodes: res.closer_nodes,
            error: res.error,
            value: res.value,
        };
        match f.owner {
            Owner::Query(q) => self.on_query_reply(now, q, f.to, f.cycled, reply),
            Owner::Commit(q) => self.on_commit_done(now, q, reply.error == 0),
            Owner::User(r) => self.push_event(Event::Response { request: r, reply }),
            Owner::QuickNat => self.test_nat = true,
            Owner::Fire => {}
            Owner::FirewallCheck => self.on_fw_pong(now, Some((reply.from, reply.to))),
            Owner::Check { id, last_seen } => {
                self.checks = self.checks.saturating_sub(1);
                if self.table.get(&id).is_some_and(|n| n.seen <= last_seen) {
                    self.table.remove(&id);
                }
            }
            Owner::Reping {
                old,
                new,
                last_seen,
            } => {
                self.repinging = self.repinging.saturating_sub(1);
                if self.table.get(&old).is_some_and(|n| n.seen <= last_seen) {
                    self.table.remove(&old);
                    self.add_table_node(new);
                }
            }
        }
    }

    fn nat_add(&mut self, addr: SocketAddrV4) {
        self.nat.add(*addr.ip(), addr.port());
    }

    fn add_node_from_network(
        &mut self,
        sample: bool,
        from: SocketAddrV4,
        id: Option<Id>,
        to: SocketAddrV4,
    ) {
        let Some(id) = id else {
            // Id-less replies (bootstrappers still ephemeral) give at most max(1, #bootstrap)
            // NAT samples.
            if sample
                && self.bootstrap_samples.len() < self.cfg.bootstrap.len().max(1)
                && !self.bootstrap_samples.contains(&from)
            {
                self.bootstrap_samples.push(from);
                self.nat_add(to);
            }
            return;
        };
        let tick = self.tick;
        if let Some(n) = self.table.get_mut(&id) {
            n.pinged = tick;
            n.seen = tick;
            self.touch_recent(id);
            return;
        }
        if sample {
            self.nat_add(to);
        }
        self.add_table_node(TableNode {
            id,
            addr: from,
            added: tick,
            pinged: tick,
            seen: tick,
        });
    }

    fn touch_recent(&mut self, id: Id) {
        self.recent.retain(|x| *x != id);
        if self.recent.len() >= 64 {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    fn add_table_node(&mut self, node: TableNode) {
        let id = node.id;
        match self.table.add(node.clone()) {
            AddOutcome::Added | AddOutcome::Refreshed => self.touch_recent(id),
            AddOutcome::Own => {}
            AddOutcome::Full(r) => self.on_full_row(r, node),
        }
    }

    fn on_full_row(&mut self, r: usize, new: TableNode) {
        if !self.is_bootstrapped() || self.repinging >= MAX_REPINGS {
            return;
        }
        let tick = self.tick;
        let oldest = self
            .table
            .row(r)
            .iter()
            .filter(|n| n.pinged != tick)
            .min_by_key(|n| (n.pinged, std::cmp::Reverse(n.added)))
            .cloned();
        let Some(old) = oldest else { return };
        if tick - old.pinged < RECENT_NODE && tick - old.added > OLD_NODE {
            return;
        }
        if let Some(n) = self.table.get_mut(&old.id) {
            n.pinged = tick;
        }
        self.repinging += 1;
        let owner = Owner::Reping {
            old: old.id,
            new,
            last_seen: old.seen,
        };
        let sock = self.request_socket();
        let Some(now) = self.last_now else {
            self.repinging -= 1;
            return;
        };
        if self
            .send_request(
                now,
                old.addr,
                None,
                true,
                commands::PING,
                None,
                None,
                sock,
                DEFAULT_RETRIES,
                owner,
            )
            .is_err()
        {
            self.repinging -= 1;
        }
    }

    fn check(&mut self, now: Instant, id: Id, addr: SocketAddrV4) {
        let tick = self.tick;
        let Some(n) = self.table.get_mut(&id) else {
            return;
        };
        n.pinged = tick;
        let last_seen = n.seen;
        self.checks += 1;
        let sock = self.request_socket();
        if self
            .send_request(
                now,
                addr,
                None,
                true,
                commands::PING,
                None,
                None,
                sock,
                DEFAULT_RETRIES,
                Owner::Check { id, last_seen },
            )
            .is_err()
        {
            self.checks -= 1;
        }
    }

    fn send_down_hints(&mut self, now: Instant, hints: Vec<(SocketAddrV4, SocketAddrV4)>) {
        for (to, down) in hints {
            if self.down_hints_this_tick >= DOWN_HINTS_PER_TICK {
                return;
            }
            self.down_hints_this_tick += 1;
            let sock = self.request_socket();
            let _ = self.send_request(
                now,
                to,
                None,
                true,
                commands::DOWN_HINT,
                None,
                Some(ipv4_bytes(&down).to_vec()),
                sock,
                DEFAULT_RETRIES,
                Owner::Fire,
            );
        }
    }

    fn on_tick(&mut self, now: Instant) {
        self.tick += 1;
        self.down_hints_this_tick = 0;
        if !self.is_bootstrapped() {
            return;
        }
        if self.tick & 7 == 0 {
            self.ping_some(now);
        }
        self.refresh_in = self.refresh_in.saturating_sub(1);
        if (self.tick & 63 == 0 && self.table.len() < K) || self.refresh_in == 0 {
            self.refresh(now);
        }
    }

    fn ping_some(&mut self, now: Instant) {
        let mut nodes: Vec<TableNode> = self.table.iter().cloned().collect();
        if nodes.is_empty() {
            self.refresh(now);
            return;
        }
        nodes.sort_by_key(|n| n.pinged);
        let tick = self.tick;
        let mut cnt = if self.inflight.len() > 2 { 3 } else { 5 };
        if nodes.first().is_some_and(|n| tick - n.pinged < RECENT_NODE) {
            cnt = 2;
        }
        for n in nodes.into_iter().take(cnt) {
            if n.pinged != tick {
                self.check(now, n.id, n.addr);
            }
        }
    }

    /// Runs a background FIND_NODE walk toward a random table node (or our id).
    pub fn refresh(&mut self, now: Instant) {
        let nodes: Vec<&TableNode> = self.table.iter().collect();
        let target = if nodes.is_empty() {
            *self.table.id()
        } else {
            let i = self.rng.gen_range(0..nodes.len());
            nodes.get(i).map_or(*self.table.id(), |n| n.id)
        };
        let mut opts = QueryOptions::new(target, true, commands::FIND_NODE, None);
        opts.concurrency = 2;
        let _ = self.query(now, opts);
    }

    // ----- bootstrap and firewall -----

    fn start_bootstrap(&mut self, now: Instant) {
        self.quick_nat_pending = self.firewalled && self.cfg.ephemeral;
        self.walk(now, 0);
    }

    fn walk(&mut self, now: Instant, round: u8) {
        let target = *self.table.id();
        // The query may finish synchronously (no seeds), so the phase is set first.
        self.phase = Phase::Walking {
            query: QueryId(self.next_query),
            round,
        };
        if self
            .query(
                now,
                QueryOptions::new(target, true, commands::FIND_NODE, None),
            )
            .is_err()
        {
            self.finish_bootstrap();
        }
    }

    fn finish_bootstrap(&mut self) {
        if !matches!(self.phase, Phase::Done) {
            self.phase = Phase::Done;
            self.push_event(Event::Bootstrapped);
        }
    }

    fn on_walk_done(&mut self, now: Instant, round: u8) {
        let force_persistent = !self.cfg.ephemeral;
        if round >= 1 || (!self.test_nat && !force_persistent) {
            self.finish_bootstrap();
            return;
        }
        // `_updateNetworkState(onlyFirewall = !forcePersistent)`
        let only_firewall = !force_persistent;
        if !self.ephemeral || (only_firewall && !self.firewalled) {
            self.finish_bootstrap();
            return;
        }
        if self.nat.host().is_none() || self.nat.port() == 0 {
            self.finish_bootstrap();
            return;
        }
        if !self.firewalled {
            self.become_unfirewalled(now, None, only_firewall, round);
            return;
        }
        // Firewall check: PING_NAT to the 5 most recent nodes, padded with bootstrap nodes.
        let mut targets: Vec<SocketAddrV4> = self
            .recent
            .iter()
            .rev()
            .filter_map(|id| self.table.get(id).map(|n| n.addr))
            .take(FIREWALL_CHECK_NODES)
            .collect();
        for b in &self.cfg.bootstrap {
            if targets.len() >= FIREWALL_CHECK_NODES {
                break;
            }
            if !targets.contains(b) {
                targets.push(*b);
            }
        }
        if targets.is_empty() {
            self.finish_bootstrap();
            return;
        }
        self.fw = Some(FwCheck {
            hosts: HashSet::new(),
            pongs: Vec::new(),
            asked: targets.len(),
        });
        let value = self.cfg.server_port.to_le_bytes().to_vec();
        let mut pending = 0;
        let sock = self.request_socket();
        for t in targets {
            if self
                .send_request(
                    now,
                    t,
                    None,
                    true,
                    commands::PING_NAT,
                    None,
                    Some(value.clone()),
                    sock,
                    DEFAULT_RETRIES,
                    Owner::FirewallCheck,
                )
                .is_ok()
            {
                pending += 1;
            }
        }
        self.phase = Phase::FirewallCheck {
            round,
            pending,
            only_firewall,
        };
        if pending == 0 {
            self.fw = None;
            self.finish_bootstrap();
        }
    }

    fn on_fw_pong(&mut self, now: Instant, pong: Option<(SocketAddrV4, SocketAddrV4)>) {
        let Phase::FirewallCheck {
            round,
            pending,
            only_firewall,
        } = &mut self.phase
        else {
            return;
        };
        *pending = pending.saturating_sub(1);
        let (round, left, only_firewall) = (*round, *pending, *only_firewall);
        if let (Some(p), Some(fw)) = (pong, self.fw.as_mut()) {
            fw.pongs.push(p);
        }
        if left > 0 {
            return;
        }
        let Some(fw) = self.fw.take() else { return };
        let mut sampler = NatSampler::new();
        let mut count = 0;
        for (from, to) in &fw.pongs {
            if fw.hosts.contains(from.ip()) {
                count += 1;
                sampler.add(*to.ip(), to.port());
            }
        }
        let need = if fw.asked >= FIREWALL_CHECK_NODES {
            3
        } else {
            1
        };
        let open = count >= need
            && sampler.host().is_some()
            && sampler.host() == self.nat.host()
            && sampler.port() != 0
            && sampler.port() == self.cfg.server_port;
        debug!(count, open, "dht firewall check");
        if !open {
            self.finish_bootstrap();
            return;
        }
        self.become_unfirewalled(now, Some(sampler), only_firewall, round);
    }

    fn become_unfirewalled(
        &mut self,
        now: Instant,
        sampler: Option<NatSampler>,
        only_firewall: bool,
        round: u8,
    ) {
        self.firewalled = false;
        let s = sampler.as_ref().unwrap_or(&self.nat);
        let (Some(host), port) = (s.host(), s.port()) else {
            self.walk(now, round + 1);
            return;
        };
        if host_differs(self.nat.host(), host) || port == 0 {
            self.walk(now, round + 1);
            return;
        }
        let addr = SocketAddrV4::new(host, port);
        if !only_firewall {
            self.ephemeral = false;
            if let Some(s) = sampler {
                self.nat = s;
                self.bootstrap_samples.clear();
            }
            let id = node_id(&addr);
            if *self.table.id() != id {
                self.table.rekey(id);
            }
            self.push_event(Event::Persistent);
        }
        self.walk(now, round + 1);
    }

    // ----- queries -----

    fn add_from_table(&self, q: &mut Query) {
        if q.pending.len() >= K {
            return;
        }
        q.from_table = true;
        let mut hints = Vec::new();
        for n in self
            .table
            .closest(&q.target, K - q.pending.len())
            .into_iter()
            .rev()
        {
            q.add_pending(n.addr, None, &mut hints);
        }
    }

    fn read_more(&mut self, now: Instant, id: QueryId) {
        let sock = self.request_socket();
        let mut visits = Vec::new();
        let finished = {
            let Some(q) = self.queries.get_mut(&id) else {
                return;
            };
            if q.committing || q.done {
                return;
            }
            let concurrency = q.concurrency + q.slow;
            while q.inflight + visits.len() < concurrency {
                let Some(next) = q.pending.pop() else { break };
                if !q.is_closer(&next.id) {
                    continue;
                }
                visits.push(next);
            }
            q.inflight += visits.len();
            q.pending.is_empty()
                && visits.is_empty()
                && (q.inflight == 0 || (q.slow == q.inflight && q.closest.len() >= K))
        };
        for v in visits {
            let Some(q) = self.queries.get(&id) else {
                return;
            };
            let (internal, command, target, value, retries) =
                (q.internal, q.command, q.target, q.value.clone(), q.retries);
            if self
                .send_request(
                    now,
                    v.addr,
                    None,
                    internal,
                    command,
                    Some(target),
                    value,
                    sock,
                    retries,
                    Owner::Query(id),
                )
                .is_err()
            {
                if let Some(q) = self.queries.get_mut(&id) {
                    q.inflight = q.inflight.saturating_sub(1);
                    q.errors += 1;
                }
            }
        }
        if finished {
            let retry_from_table = self
                .queries
                .get(&id)
                .is_some_and(|q| !q.from_table && q.successes < K / 4 && !self.table.is_empty());
            if retry_from_table {
                if let Some(mut q) = self.queries.remove(&id) {
                    self.add_from_table(&mut q);
                    self.queries.insert(id, q);
                }
                self.read_more(now, id);
                return;
            }
            self.flush_query(now, id);
        }
    }

    fn on_query_reply(
        &mut self,
        now: Instant,
        id: QueryId,
        to: SocketAddrV4,
        cycled: bool,
        reply: QueryReply,
    ) {
        let own = *self.table.id();
        let mut hints = Vec::new();
        let mut quick_nat = None;
        {
            let Some(q) = self.queries.get_mut(&id) else {
                return;
            };
            q.inflight = q.inflight.saturating_sub(1);
            if cycled {
                q.slow = q.slow.saturating_sub(1);
            }
            q.seen.insert(to, Seen::Done);
            if q.committing {
                return;
            }
            if reply.error == 0 {
                q.successes += 1;
            } else {
                q.errors += 1;
            }
            if reply.error == 0 && reply.id.is_some_and(|rid| q.is_closer(&rid)) {
                q.push_closest(reply.clone());
            }
            for n in &reply.closer_nodes {
                if node_id(n) == own || n.port() == 0 {
                    continue;
                }
                if !q.add_pending(*n, Some(reply.from), &mut hints) {
                    break;
                }
            }
        }
        if matches!(self.phase, Phase::Walking { query, .. } if query == id)
            && self.quick_nat_pending
        {
            self.quick_nat_pending = false;
            quick_nat = Some(reply.from);
        }
        self.send_down_hints(now, hints);
        if let Some(to) = quick_nat {
            let value = self.cfg.server_port.to_le_bytes().to_vec();
            let sock = self.request_socket();
            let _ = self.send_request(
                now,
                to,
                None,
                true,
                commands::PING_NAT,
                None,
                Some(value),
                sock,
                DEFAULT_RETRIES,
                Owner::QuickNat,
            );
        }
        if reply.error == 0 {
            self.push_event(Event::QueryReply { query: id, reply });
        }
        self.read_more(now, id);
    }

    fn flush_query(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        q.committing = true;
        if q.commit == Commit::None {
            self.end_query(now, id, None);
            return;
        }
        let (command, target, value, internal) = (q.command, q.target, q.value.clone(), q.internal);
        let closest: Vec<QueryReply> = q.closest.clone();
        let mut sent = Vec::new();
        for r in closest {
            let Some(token) = r.token else { continue };
            let sock = self.request_socket();
            if let Ok(tid) = self.send_request(
                now,
                r.from,
                Some(token),
                internal,
                command,
                Some(target),
                value.clone(),
                sock,
                DEFAULT_RETRIES,
                Owner::Commit(id),
            ) {
                sent.push(tid);
            }
        }
        if let Some(q) = self.queries.get_mut(&id) {
            q.commits_pending = sent.len();
        }
        if sent.is_empty() {
            self.end_query(now, id, Some(RequestError::TooFewNodes));
        }
    }

    fn on_commit_done(&mut self, now: Instant, id: QueryId, ok: bool) {
        let done = {
            let Some(q) = self.queries.get_mut(&id) else {
                return;
            };
            q.commits_pending = q.commits_pending.saturating_sub(1);
            if ok {
                q.commit_successes += 1;
            }
            (q.commits_pending == 0).then_some(q.commit_successes > 0)
        };
        if let Some(any_ok) = done {
            self.end_query(now, id, (!any_ok).then_some(RequestError::TooFewNodes));
        }
    }

    fn end_query(&mut self, now: Instant, id: QueryId, error: Option<RequestError>) {
        let Some(q) = self.queries.remove(&id) else {
            return;
        };
        if let Phase::Walking { query, round } = self.phase {
            if query == id {
                self.on_walk_done(now, round);
                return;
            }
        }
        self.push_event(Event::QueryDone {
            query: id,
            closest: q.closest,
            error,
        });
    }
}

fn host_differs(a: Option<Ipv4Addr>, b: Ipv4Addr) -> bool {
    a != Some(b)
}
