//! The sans-io dht-rpc node: two logical sockets, inflight requests, tokens, routing table
//! upkeep, NAT sampling, firewall detection, bootstrap and iterative queries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

use super::config::*;
use super::congestion::Congestion;
use super::event::Event;
use super::limits::{LimitStats, SourceLimiter};
use super::message::{Message, Request, Response};
use super::nat::NatSampler;
use super::query::{Commit, Query, QueryId, QueryOptions, QueryReply, Seen};
use super::request::{IncomingRequest, RequestError, RequestId, SocketKind, Transmit, UserRequest};
use super::table::{AddOutcome, RoutingTable, TableNode};
use super::{Id, K, commands, errors, hash, node_id};
use crate::crypto::keyed_blake2b_256;
use crate::encoding::ipv4_bytes;

mod bootstrap;
mod requests;
mod serve;
mod upkeep;
mod walk;

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

#[derive(Debug)]
enum Phase {
    Idle,
    Walking {
        query: QueryId,
        round: u8,
    },
    /// The walk ended while the quick PING_NAT was still in flight.
    AwaitQuickNat {
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
pub struct RpcNode {
    cfg: RpcConfig,
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
    /// The first walk finished ([`Event::Walked`] was pushed).
    walked_once: bool,
    quick_nat_inflight: bool,
    bootstrapped_once: bool,
    last_tick_at: Option<Instant>,
    stable_ticks: u64,
    last_checked_host: Option<Ipv4Addr>,
    test_nat: bool,
    fw: Option<FwCheck>,
    destroyed: bool,
    recent: VecDeque<Id>,
    last_now: Option<Instant>,
    limiter: SourceLimiter,
    limit_stats: LimitStats,
}

impl RpcNode {
    /// A node; nothing is sent until the first [`RpcNode::handle_timeout`].
    pub fn new(cfg: RpcConfig) -> Self {
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
            walked_once: false,
            quick_nat_inflight: false,
            bootstrapped_once: false,
            last_tick_at: None,
            stable_ticks: STABLE_TICKS,
            last_checked_host: None,
            test_nat: false,
            fw: None,
            destroyed: false,
            recent: VecDeque::new(),
            last_now: None,
            limiter: SourceLimiter::new(cfg.limits),
            limit_stats: LimitStats::default(),
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
        self.bootstrapped_once
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
        keyed_blake2b_256(&secret, &[host.to_string().as_bytes()])
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

    /// When [`RpcNode::handle_timeout`] must be called next.
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

    /// Queues an event. Only incoming application requests are ever dropped (counted, logged):
    /// their sender retransmits, while a lost completion would leave its owner waiting forever.
    fn push_event(&mut self, e: Event) {
        if matches!(e, Event::Request(_)) && self.events.len() >= MAX_EVENTS {
            self.limit_stats.events_dropped += 1;
            debug!(
                dropped = self.limit_stats.events_dropped,
                "dht event queue full: incoming request dropped"
            );
            return;
        }
        self.events.push_back(e);
    }

    /// Counters of the per-source limits and the event queue.
    pub fn limit_stats(&self) -> LimitStats {
        self.limit_stats
    }

    /// Reply bytes `req`'s source may receive now: `None` when unlimited (the request carried a
    /// valid token, proving its source receives, or the source is exempt). A reply over budget is
    /// truncated: callers with a divisible value (records) cut it to fit first.
    pub fn reply_budget(&self, req: &IncomingRequest) -> Option<usize> {
        if req.token.is_some() {
            return None;
        }
        self.limiter.reply_budget(req.from.ip())
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
        if socket == SocketKind::Server
            && let Some(fw) = &mut self.fw
            && fw.hosts.len() < 64
        {
            fw.hosts.insert(*from.ip());
        }
        let external = socket != self.request_socket();
        match Message::decode(buf) {
            Ok(Message::Request(req)) => {
                if !self.limiter.admit(now, *from.ip(), buf.len()) {
                    self.limit_stats.requests_dropped += 1;
                    trace!(%from, "request over its source's rate dropped");
                    return;
                }
                self.on_request(now, socket, from, req, external);
            }
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
            req.token.is_some(),
        );
    }

    /// Replies to `to` instead of the requester (relay REPLY legs), on the request's socket.
    /// Not cut to `to`'s reply budget: `to` (the client) may never have sent us anything (a
    /// second relay), and the reply carries the requester's value, no larger than its request;
    /// the requester's own request rate bounds it.
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
            true,
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
            req.token.is_some(),
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
}
