//! The tokio driver: owns the two UDP sockets and runs a [`HyperDhtCore`] in one task.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use rand::RngCore;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

mod run;
mod socket;

use run::{Command, OpCmd, run};
pub use socket::DatagramSocket;

use super::messages::{Handshake, Holepunch, RelayInfo};
use super::mutable::MutableValue;
use super::node::{HyperDhtCore, LookupResult, OpResult, RelayStats};
use crate::dht::{
    Id, IncomingRequest, LimitStats, QueryReply, RequestError, RpcConfig, RpcNode, SourceLimits,
    UserRequest, hash,
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
        let mut nc = RpcConfig::new(config.bootstrap.clone(), server_addr.port(), seed);
        nc.ephemeral = config.ephemeral;
        nc.adaptive = config.adaptive;
        nc.limits = config.limits;
        nc.public_addr = config
            .public_addr
            .map(|a| if a.port() == 0 { server_addr } else { a });
        let node = HyperDhtCore::new(RpcNode::new(nc));
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
