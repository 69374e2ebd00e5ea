//! The tokio driver: owns the two UDP sockets and runs a [`HyperNode`] in one task.

use std::collections::HashMap;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace, warn};

use super::messages::{Handshake, Holepunch, RelayInfo};
use super::mutable::MutableValue;
use super::node::{HyperEvent, HyperNode, LookupResult, OpId, OpResult, RelayStats};
use crate::dht::{
    Event, Id, IncomingRequest, LimitStats, Node, NodeConfig, QueryReply, RequestError, RequestId,
    SocketKind, SourceLimits, UserRequest, hash,
};
use crate::keys::KeyPair;

/// Depth of the command channel from handles to the driver task.
const COMMAND_QUEUE: usize = 64;
/// Receive buffer: larger than any DHT datagram (UDP payload max).
const RECV_BUF: usize = 65_536;
/// Most callers waiting for the bootstrap at once.
const MAX_BOOTSTRAP_WAITERS: usize = 64;
/// Depth of a listener's server-event channel; events beyond it are dropped (clients retry).
const SERVER_EVENT_QUEUE: usize = 64;
/// Most raw requests awaiting a response at once.
const MAX_RAW_REQUESTS: usize = 1024;

/// A handshake or holepunch relayed to a key this node listens on (server role hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// PEER_HANDSHAKE: answer with [`DhtNode::answer_handshake`].
    Handshake {
        /// The request (keep it to answer).
        req: IncomingRequest,
        /// The decoded handshake.
        handshake: Handshake,
    },
    /// PEER_HOLEPUNCH: answer with [`DhtNode::answer_holepunch`].
    Holepunch {
        /// The request (keep it to answer).
        req: IncomingRequest,
        /// The decoded holepunch message.
        holepunch: Holepunch,
    },
}

/// A datagram socket the driver can run on (tokio's `UdpSocket`, later the UDX socket driver).
pub trait DatagramSocket: Send + Sync + fmt::Debug + 'static {
    /// Receives one datagram.
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>>;
    /// Sends one datagram.
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        to: SocketAddr,
    ) -> Poll<io::Result<usize>>;
    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl DatagramSocket for UdpSocket {
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        Self::poll_recv_from(self, cx, buf)
    }
    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        to: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        Self::poll_send_to(self, cx, buf, to)
    }
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Self::local_addr(self)
    }
}

/// Errors of the DHT driver.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// Binding or socket I/O failed.
    #[error("dht socket: {0}")]
    Io(#[from] io::Error),
    /// Only IPv4 is supported by the DHT.
    #[error("the dht needs an IPv4 address, got {0}")]
    NotIpv4(SocketAddr),
    /// The node was destroyed.
    #[error("dht node closed")]
    Closed,
    /// The operation failed.
    #[error("dht request failed: {0}")]
    Request(#[from] RequestError),
}

/// Configuration of a [`DhtNode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtConfig {
    /// Host to bind both sockets on (never 0.0.0.0 unless given).
    pub host: Ipv4Addr,
    /// Server socket port (0 = any).
    pub port: u16,
    /// Bootstrap nodes.
    pub bootstrap: Vec<SocketAddrV4>,
    /// Stay ephemeral (default) or become persistent after the firewall test.
    pub ephemeral: bool,
    /// With `ephemeral`: become persistent after ~20 min of stable, reachable uptime.
    pub adaptive: bool,
    /// Known public address of the server socket (bootstrapper mode; implies unfirewalled).
    /// `Some` with port 0 means "the bound server address".
    pub public_addr: Option<SocketAddrV4>,
    /// RNG seed (random if `None`).
    pub seed: Option<[u8; 32]>,
    /// Per-source request rate and reply budget of the node's request handling.
    pub limits: SourceLimits,
}

impl DhtConfig {
    /// An ephemeral node on `host` with these bootstrap nodes.
    pub fn new(host: Ipv4Addr, bootstrap: Vec<SocketAddrV4>) -> Self {
        Self {
            host,
            port: 0,
            bootstrap,
            ephemeral: true,
            adaptive: false,
            public_addr: None,
            seed: None,
            limits: SourceLimits::default(),
        }
    }
}

/// A snapshot of a node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id when persistent.
    pub id: Option<Id>,
    /// Nodes in the routing table.
    pub table_len: usize,
    /// Whether firewalled.
    pub firewalled: bool,
    /// Whether the bootstrap finished.
    pub bootstrapped: bool,
    /// (targets, records, forwards) stored.
    pub stored: (usize, usize, usize),
    /// Relayed handshake / holepunch counters.
    pub relayed: RelayStats,
    /// Our address as sampled from peers (port 0 = randomized NAT).
    pub nat_addr: Option<SocketAddrV4>,
    /// Our reachable server address, only when unfirewalled.
    pub remote_addr: Option<SocketAddrV4>,
    /// Per-source limit counters (requests dropped, replies truncated, events dropped).
    pub limits: LimitStats,
    /// Relayed handshakes/holepunches not delivered to a listener: its queue was full or the
    /// node's event queue was.
    pub server_events_dropped: u64,
}

enum Command {
    Op(Box<OpCmd>, oneshot::Sender<Result<OpResult, RequestError>>),
    Listen(Id, mpsc::Sender<ServerEvent>),
    Unlisten(Id),
    Raw(
        Box<UserRequest>,
        oneshot::Sender<Result<QueryReply, RequestError>>,
    ),
    AnswerHandshake(Box<(IncomingRequest, Handshake, Vec<u8>)>),
    AnswerHolepunch(Box<(IncomingRequest, Holepunch, Vec<u8>)>),
    Bootstrapped(oneshot::Sender<()>),
    Ready(oneshot::Sender<()>),
    Info(oneshot::Sender<NodeInfo>),
    Destroy(oneshot::Sender<()>),
}

enum OpCmd {
    ImmutablePut(Vec<u8>),
    ImmutableGet(Id),
    MutablePut(KeyPair, u64, Vec<u8>),
    MutableGet([u8; 32], u64),
    Lookup(Id),
    FindPeer([u8; 32]),
    FindNode(Id),
    Announce(Id, KeyPair, Vec<SocketAddrV4>),
    Unannounce(Id, KeyPair),
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Command")
    }
}

/// A running DHT node (HyperDHT + dht-rpc) on two UDP sockets.
#[derive(Debug)]
pub struct DhtNode {
    tx: mpsc::Sender<Command>,
    server_addr: SocketAddrV4,
    client_addr: SocketAddrV4,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for DhtNode {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn v4(a: SocketAddr) -> Result<SocketAddrV4, DhtError> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        other => Err(DhtError::NotIpv4(other)),
    }
}

impl DhtNode {
    /// Binds the server socket on `host:port` and the client socket on `host:0`, then starts
    /// the bootstrap in a background task.
    pub async fn bind(config: DhtConfig) -> Result<Self, DhtError> {
        let server = UdpSocket::bind(SocketAddrV4::new(config.host, config.port)).await?;
        let client = UdpSocket::bind(SocketAddrV4::new(config.host, 0)).await?;
        Self::with_sockets(config, Arc::new(server), Arc::new(client))
    }

    /// Runs on caller-provided sockets (e.g. the UDX socket driver's datagram channel).
    pub fn with_sockets(
        config: DhtConfig,
        server: Arc<dyn DatagramSocket>,
        client: Arc<dyn DatagramSocket>,
    ) -> Result<Self, DhtError> {
        let server_addr = v4(server.local_addr()?)?;
        let client_addr = v4(client.local_addr()?)?;
        let seed = config.seed.unwrap_or_else(|| {
            let mut s = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut s);
            s
        });
        let mut nc = NodeConfig::new(config.bootstrap.clone(), server_addr.port(), seed);
        nc.ephemeral = config.ephemeral;
        nc.adaptive = config.adaptive;
        nc.limits = config.limits;
        nc.public_addr = config
            .public_addr
            .map(|a| if a.port() == 0 { server_addr } else { a });
        let node = HyperNode::new(Node::new(nc));
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(run(node, server, client, rx));
        Ok(Self {
            tx,
            server_addr,
            client_addr,
            task: Some(task),
        })
    }

    /// The server socket's bound address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.server_addr
    }

    /// The client socket's bound address.
    pub fn client_addr(&self) -> SocketAddrV4 {
        self.client_addr
    }

    async fn op(&self, cmd: OpCmd) -> Result<OpResult, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Op(Box::new(cmd), tx))
            .await
            .map_err(|_| DhtError::Closed)?;
        let r = rx.await.map_err(|_| DhtError::Closed)??;
        match r {
            OpResult::Failed(e) => Err(DhtError::Request(e)),
            ok => Ok(ok),
        }
    }

    /// Waits until the bootstrap walk (and firewall test) finished.
    pub async fn bootstrapped(&self) -> Result<(), DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Bootstrapped(tx))
            .await
            .map_err(|_| DhtError::Closed)?;
        rx.await.map_err(|_| DhtError::Closed)
    }

    /// Waits until the first bootstrap walk finished: the routing table is filled, so lookups,
    /// announces and connects can start. Unlike [`Self::bootstrapped`] it does not wait for the
    /// NAT and firewall tests, which take seconds behind a NAT (JS does not wait for them either).
    pub async fn ready(&self) -> Result<(), DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Ready(tx))
            .await
            .map_err(|_| DhtError::Closed)?;
        rx.await.map_err(|_| DhtError::Closed)
    }

    /// Node state.
    pub async fn info(&self) -> Result<NodeInfo, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Info(tx))
            .await
            .map_err(|_| DhtError::Closed)?;
        rx.await.map_err(|_| DhtError::Closed)
    }

    /// Records announced under `topic`, per answering node.
    pub async fn lookup(&self, topic: Id) -> Result<Vec<LookupResult>, DhtError> {
        match self.op(OpCmd::Lookup(topic)).await? {
            OpResult::Lookup(r) => Ok(r),
            _ => Err(DhtError::Closed),
        }
    }

    /// The forward records of the server with `public_key`.
    pub async fn find_peer(&self, public_key: [u8; 32]) -> Result<Vec<LookupResult>, DhtError> {
        match self.op(OpCmd::FindPeer(public_key)).await? {
            OpResult::Lookup(r) => Ok(r),
            _ => Err(DhtError::Closed),
        }
    }

    /// The closest replies of a FIND_NODE walk.
    pub async fn find_node(&self, target: Id) -> Result<Vec<QueryReply>, DhtError> {
        match self.op(OpCmd::FindNode(target)).await? {
            OpResult::Closest(r) => Ok(r),
            _ => Err(DhtError::Closed),
        }
    }

    /// Announces `key_pair` on `topic`; returns how many nodes stored it.
    pub async fn announce(
        &self,
        topic: Id,
        key_pair: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<usize, DhtError> {
        Ok(self
            .announce_relays(topic, key_pair, relay_addresses)
            .await?
            .len())
    }

    /// Announces `key_pair` on `topic`; returns the nodes that stored it, each with our address
    /// as that node saw us (what a firewalled server offers clients as holepunch relays).
    pub async fn announce_relays(
        &self,
        topic: Id,
        key_pair: &KeyPair,
        relay_addresses: Vec<SocketAddrV4>,
    ) -> Result<Vec<RelayInfo>, DhtError> {
        match self
            .op(OpCmd::Announce(topic, key_pair.clone(), relay_addresses))
            .await?
        {
            OpResult::Announced { relays, .. } => Ok(relays),
            _ => Err(DhtError::Closed),
        }
    }

    /// Removes `key_pair`'s record from `topic`; returns how many nodes accepted.
    pub async fn unannounce(&self, topic: Id, key_pair: &KeyPair) -> Result<usize, DhtError> {
        match self.op(OpCmd::Unannounce(topic, key_pair.clone())).await? {
            OpResult::Announced { accepted, .. } => Ok(accepted),
            _ => Err(DhtError::Closed),
        }
    }

    /// Server role hook: routes PEER_HANDSHAKE / PEER_HOLEPUNCH for `H(public_key)` to the
    /// returned channel instead of relaying them.
    pub async fn listen(
        &self,
        public_key: &[u8; 32],
    ) -> Result<mpsc::Receiver<ServerEvent>, DhtError> {
        let (tx, rx) = mpsc::channel(SERVER_EVENT_QUEUE);
        self.send(Command::Listen(hash(public_key), tx)).await?;
        Ok(rx)
    }

    /// Stops routing handshakes for `public_key` locally.
    pub async fn unlisten(&self, public_key: &[u8; 32]) -> Result<(), DhtError> {
        self.send(Command::Unlisten(hash(public_key))).await
    }

    /// Answers a [`ServerEvent::Handshake`] with Noise `msg2` (per its relay mode).
    pub async fn answer_handshake(
        &self,
        req: IncomingRequest,
        handshake: Handshake,
        noise: Vec<u8>,
    ) -> Result<(), DhtError> {
        self.send(Command::AnswerHandshake(Box::new((req, handshake, noise))))
            .await
    }

    /// Answers a [`ServerEvent::Holepunch`] with an encrypted holepunch payload.
    pub async fn answer_holepunch(
        &self,
        req: IncomingRequest,
        holepunch: Holepunch,
        payload: Vec<u8>,
    ) -> Result<(), DhtError> {
        self.send(Command::AnswerHolepunch(Box::new((
            req, holepunch, payload,
        ))))
        .await
    }

    /// Sends one raw dht-rpc request (e.g. a client's PEER_HANDSHAKE to a relay).
    pub async fn request(&self, req: UserRequest) -> Result<QueryReply, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Raw(Box::new(req), tx)).await?;
        Ok(rx.await.map_err(|_| DhtError::Closed)??)
    }

    async fn send(&self, cmd: Command) -> Result<(), DhtError> {
        self.tx.send(cmd).await.map_err(|_| DhtError::Closed)
    }

    /// Stores `value` under `H(value)` on the closest nodes; returns the target.
    pub async fn immutable_put(&self, value: Vec<u8>) -> Result<Id, DhtError> {
        let target = hash(&value);
        match self.op(OpCmd::ImmutablePut(value)).await? {
            OpResult::Announced { .. } => Ok(target),
            _ => Err(DhtError::Closed),
        }
    }

    /// The value stored under `target` whose hash matches, if any node has it.
    pub async fn immutable_get(&self, target: Id) -> Result<Option<Vec<u8>>, DhtError> {
        match self.op(OpCmd::ImmutableGet(target)).await? {
            OpResult::Values(v) => Ok(v.into_iter().map(|(_, v)| v).find(|v| hash(v) == target)),
            _ => Err(DhtError::Closed),
        }
    }

    /// Stores a signed mutable value under `H(public key)` at `seq`.
    pub async fn mutable_put(
        &self,
        key_pair: &KeyPair,
        seq: u64,
        value: Vec<u8>,
    ) -> Result<(), DhtError> {
        match self
            .op(OpCmd::MutablePut(key_pair.clone(), seq, value))
            .await?
        {
            OpResult::Announced { .. } => Ok(()),
            _ => Err(DhtError::Closed),
        }
    }

    /// The highest-seq validly signed value (seq ≥ `seq`) for `public_key`.
    pub async fn mutable_get(
        &self,
        public_key: [u8; 32],
        seq: u64,
    ) -> Result<Option<MutableValue>, DhtError> {
        match self.op(OpCmd::MutableGet(public_key, seq)).await? {
            OpResult::Values(v) => Ok(v
                .iter()
                .filter_map(|(_, b)| MutableValue::decode(b).ok())
                .filter(|m| m.seq >= seq && m.verify(&public_key))
                .max_by_key(|m| m.seq)),
            _ => Err(DhtError::Closed),
        }
    }

    /// Stops the node and waits for its task to end.
    pub async fn destroy(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Destroy(tx)).await.is_ok() {
            let _ = rx.await;
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// A persistent, unfirewalled node with an explicit address: the bootstrap of a local network.
#[derive(Debug)]
pub struct Bootstrap {
    node: DhtNode,
}

impl Bootstrap {
    /// Binds `addr` (port 0 = any) and serves as a bootstrapper at the bound address.
    pub async fn spawn(addr: SocketAddrV4) -> Result<Self, DhtError> {
        let mut cfg = DhtConfig::new(*addr.ip(), Vec::new());
        cfg.port = addr.port();
        cfg.ephemeral = false;
        cfg.public_addr = Some(SocketAddrV4::new(*addr.ip(), 0));
        Ok(Self {
            node: DhtNode::bind(cfg).await?,
        })
    }

    /// The address others bootstrap from.
    pub fn addr(&self) -> SocketAddrV4 {
        self.node.local_addr()
    }

    /// The underlying node.
    pub fn node(&self) -> &DhtNode {
        &self.node
    }

    /// Stops it.
    pub async fn destroy(self) {
        self.node.destroy().await;
    }
}

async fn recv(sock: &dyn DatagramSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    let mut rb = ReadBuf::new(buf);
    let from = poll_fn(|cx| sock.poll_recv_from(cx, &mut rb)).await?;
    Ok((rb.filled().len(), from))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Hands a relayed handshake or holepunch to its listener without blocking the node: a
/// listener that does not keep up loses it, counted and logged (the client retransmits; a
/// blocked DHT task would stop every other peer's traffic instead).
fn deliver(listener: &mpsc::Sender<ServerEvent>, event: ServerEvent, dropped: &mut u64) {
    match listener.try_send(event) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            *dropped += 1;
            warn!(
                dropped = *dropped,
                "listener queue full: relayed handshake/holepunch dropped"
            );
        }
        // The listener went away; its `Unlisten` is on the way.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

async fn run(
    mut node: HyperNode,
    server: Arc<dyn DatagramSocket>,
    client: Arc<dyn DatagramSocket>,
    mut rx: mpsc::Receiver<Command>,
) {
    let mut sbuf = vec![0u8; RECV_BUF];
    let mut cbuf = vec![0u8; RECV_BUF];
    let mut waiters: HashMap<OpId, oneshot::Sender<Result<OpResult, RequestError>>> =
        HashMap::new();
    let mut boot_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut bootstrapped = false;
    let mut walked = false;
    let mut ready_waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut listeners: HashMap<Id, mpsc::Sender<ServerEvent>> = HashMap::new();
    let mut raw: HashMap<RequestId, oneshot::Sender<Result<QueryReply, RequestError>>> =
        HashMap::new();
    let mut server_events_dropped: u64 = 0;
    node.set_wall_clock_ms(wall_ms());
    node.handle_timeout(Instant::now());
    loop {
        while let Some(t) = node.poll_transmit() {
            let sock = match t.socket {
                SocketKind::Server => &server,
                SocketKind::Client => &client,
            };
            let to = SocketAddr::V4(t.to);
            if let Err(e) = poll_fn(|cx| sock.poll_send_to(cx, &t.payload, to)).await {
                debug!(%to, error = %e, "dht send failed");
            }
        }
        while let Some(e) = node.poll_event() {
            match e {
                HyperEvent::OpDone { op, result } => {
                    if let Some(w) = waiters.remove(&op) {
                        let _ = w.send(Ok(result));
                    }
                }
                HyperEvent::Walked => {
                    walked = true;
                    for w in ready_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
                HyperEvent::Bootstrapped => {
                    bootstrapped = true;
                    walked = true;
                    for w in ready_waiters.drain(..) {
                        let _ = w.send(());
                    }
                    for w in boot_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
                HyperEvent::PeerHandshake { req, handshake } => {
                    if let Some(l) = req.target.and_then(|t| listeners.get(&t)) {
                        deliver(
                            l,
                            ServerEvent::Handshake { req, handshake },
                            &mut server_events_dropped,
                        );
                    }
                }
                HyperEvent::PeerHolepunch { req, holepunch } => {
                    if let Some(l) = req.target.and_then(|t| listeners.get(&t)) {
                        deliver(
                            l,
                            ServerEvent::Holepunch { req, holepunch },
                            &mut server_events_dropped,
                        );
                    }
                }
                HyperEvent::Dht(Event::Response { request, reply }) => {
                    if let Some(w) = raw.remove(&request) {
                        let _ = w.send(Ok(reply));
                    }
                }
                HyperEvent::Dht(Event::RequestFailed { request, error }) => {
                    if let Some(w) = raw.remove(&request) {
                        let _ = w.send(Err(error));
                    }
                }
                other => trace!(?other, "unhandled dht event"),
            }
        }
        let deadline = node.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let now = Instant::now();
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::Destroy(done) => {
                        node.dht_mut().destroy();
                        let _ = done.send(());
                        break;
                    }
                    Command::Info(reply) => {
                        let d = node.dht();
                        let _ = reply.send(NodeInfo {
                            id: d.id(),
                            table_len: d.table().len(),
                            firewalled: d.is_firewalled(),
                            bootstrapped: d.is_bootstrapped(),
                            stored: node.store().sizes(),
                            relayed: node.relay_stats(),
                            nat_addr: d.nat_address(),
                            remote_addr: d.remote_address(),
                            limits: d.limit_stats(),
                            server_events_dropped: server_events_dropped + node.events_dropped(),
                        });
                    }
                    Command::Bootstrapped(reply) => {
                        if bootstrapped {
                            let _ = reply.send(());
                        } else if boot_waiters.len() < MAX_BOOTSTRAP_WAITERS {
                            boot_waiters.push(reply);
                        }
                    }
                    Command::Ready(reply) => {
                        if walked {
                            let _ = reply.send(());
                        } else if ready_waiters.len() < MAX_BOOTSTRAP_WAITERS {
                            ready_waiters.push(reply);
                        }
                    }
                    Command::Listen(target, tx) => {
                        node.listen(target);
                        listeners.insert(target, tx);
                    }
                    Command::Unlisten(target) => {
                        node.unlisten(&target);
                        listeners.remove(&target);
                    }
                    Command::Raw(req, reply) => {
                        if raw.len() >= MAX_RAW_REQUESTS {
                            let _ = reply.send(Err(RequestError::Busy));
                        } else {
                            match node.request(now, *req) {
                                Ok(id) => { raw.insert(id, reply); }
                                Err(e) => { let _ = reply.send(Err(e)); }
                            }
                        }
                    }
                    Command::AnswerHandshake(a) => {
                        let (req, hs, noise) = *a;
                        node.answer_handshake(&req, &hs, noise, Some(SocketKind::Server));
                    }
                    Command::AnswerHolepunch(a) => {
                        let (req, hp, payload) = *a;
                        node.answer_holepunch(&req, &hp, payload, Some(SocketKind::Server));
                    }
                    Command::Op(op, reply) => {
                        let started = match *op {
                            OpCmd::Lookup(t) => node.lookup(now, t),
                            OpCmd::ImmutablePut(v) => node.immutable_put(now, v),
                            OpCmd::ImmutableGet(t) => node.immutable_get(now, t),
                            OpCmd::MutablePut(kp, seq, v) => node.mutable_put(now, &kp, seq, v),
                            OpCmd::MutableGet(pk, seq) => node.mutable_get(now, &pk, seq),
                            OpCmd::FindPeer(pk) => node.find_peer(now, &pk),
                            OpCmd::FindNode(t) => node.find_node(now, t),
                            OpCmd::Announce(t, kp, relays) => node.announce(now, t, kp, relays),
                            OpCmd::Unannounce(t, kp) => node.unannounce(now, t, kp),
                        };
                        match started {
                            Ok(id) => { waiters.insert(id, reply); }
                            Err(e) => { let _ = reply.send(Err(e)); }
                        }
                    }
                }
            }
            r = recv(server.as_ref(), &mut sbuf) => {
                if let (Ok((n, SocketAddr::V4(from))), Some(buf)) = (&r, sbuf.get(..r.as_ref().map_or(0, |x| x.0))) {
                    let _ = n;
                    node.handle_datagram(Instant::now(), SocketKind::Server, *from, buf);
                }
            }
            r = recv(client.as_ref(), &mut cbuf) => {
                if let (Ok((n, SocketAddr::V4(from))), Some(buf)) = (&r, cbuf.get(..r.as_ref().map_or(0, |x| x.0))) {
                    let _ = n;
                    node.handle_datagram(Instant::now(), SocketKind::Client, *from, buf);
                }
            }
            () = sleep => {
                node.set_wall_clock_ms(wall_ms());
                node.handle_timeout(Instant::now());
            }
        }
    }
}
