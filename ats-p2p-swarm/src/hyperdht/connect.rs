//! Connect by key and listen with a key firewall (npm `hyperdht` 6.34 `connect` / `createServer`).
//!
//! [`HyperDht`] runs the DHT RPC on two UDX sockets ([`UdxDatagrams`] adapts a [`UdxSocket`] to
//! [`DatagramSocket`]): DHT messages, 1-byte holepunch probes and UDX stream packets share the
//! node's server socket as in JS. Only the configured host is bound and advertised.
//!
//! - Server ([`HyperDht::listen`]): announces itself (signed self-announce, refreshed every
//!   [`REANNOUNCE_INTERVAL`]), answers PEER_HANDSHAKE with Noise IK (prologue
//!   `NS_PEER_HANDSHAKE`), deduplicated by msg1 bytes (identical msg2 for copies), decides the
//!   firewall from the remote public key *before* answering (a refused key gets no reply),
//!   connects its raw UDX stream on the client's first packet (the client always sends first),
//!   then starts the secret stream as responder.
//! - Client ([`HyperDht::connect`]): FIND_PEER, PEER_HANDSHAKE through up to
//!   [`MAX_HANDSHAKE_RELAYS`] relays in parallel, IK initiator, then a dht-rpc PING race to the
//!   server's advertised addresses and its relay-observed address (§3.8 step 3: the address that
//!   answers first wins, so one host ends on 127.0.0.1), then the secret stream as initiator.
//!
//! - Holepunch (consistent NATs): a firewalled server puts `holepunch: {id, relays}` in its
//!   payload (the relays are the nodes its self-announce was stored on, each with the server's
//!   address as that node saw it, as hyperdht's announcer reports them, so JS clients punch too).
//!   When the relay sees client and server on different hosts (different NATs) the Rust client
//!   holepunches at once; on one host/NAT it first waits for the PING race (`LAN_PING_TIMEOUT`),
//!   as hyperdht's LAN shortcut. To punch it sends PEER_HOLEPUNCH through the handshake's relay
//!   from its main socket; the server answers every PEER_HOLEPUNCH round with `punching`, its
//!   relay-observed address and a token (echoing the client's), and both sides send 1-byte
//!   probes to the other's relay-observed address every [`PUNCH_INTERVAL`]; the client connects
//!   once a server probe arrives. Otherwise `connect` fails with [`ConnectError::NoPath`] after
//!   [`PUNCH_DURATION`] (random NATs). Not implemented: the random-NAT strategies (birthday
//!   sockets), separate pool sockets, blind relays, verifying the echoed token.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{FutureExt, select_all};
use rand::RngCore;
use tokio::io::ReadBuf;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, trace};

use super::crypto::{holepunch_secret, ns, secretbox_open, secretbox_seal};
use super::driver::{DatagramSocket, DhtConfig, DhtError, DhtNode, ServerEvent};
use super::messages::{
    Handshake, Holepunch, HolepunchInfo, HolepunchPayload, Mode, NoisePayload, RelayInfo, UdxInfo,
};
use super::{commands, error_codes, firewall};
use crate::dht::{Id, IncomingRequest, SocketKind, UserRequest, hash};
use crate::keys::{KeyPair, PublicKey};
use crate::noise::{NoiseConfig, NoiseError, NoiseHandshake, Step};
use crate::secret_stream::{SecretStream, SecretStreamError};
use crate::udx::{EndpointError, SocketEvent, UdxSocket, UdxStream};

/// A connection: the secret stream over a UDX stream (`AsyncRead + AsyncWrite`).
pub type Connection = SecretStream<UdxStream>;

/// The key firewall: returns `true` to accept a remote public key. Decided during the handshake.
pub type Firewall = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// How long a client waits for the handshake reply from a relay (dht-rpc retries included).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client's PING race for a direct path may take before it gives up.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a server waits for the client's first UDX packet (JS waits 10 s).
pub const SERVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handshake's msg2 is kept for duplicates (JS `handshakeClearWait`).
pub const HANDSHAKE_CLEAR_WAIT: Duration = Duration::from_secs(10);
/// Self-announce refresh period (JS re-announces every ~5 min; relays forget after 20 min).
pub const REANNOUNCE_INTERVAL: Duration = Duration::from_secs(60);
/// Relays the client sends msg1 through in parallel (JS uses up to 2).
pub const MAX_HANDSHAKE_RELAYS: usize = 2;
/// Most handshakes remembered for deduplication at once (bounded memory under floods).
const MAX_HANDSHAKES: usize = 1024;
/// Accepted connections queued before the application takes them.
const ACCEPT_QUEUE: usize = 16;
/// Most streams waiting for their first packet at once (per node).
const MAX_PENDING_STREAMS: usize = 1024;
/// Probe notifications buffered per subscriber (older ones are dropped; one is enough).
const PROBE_QUEUE: usize = 64;
/// How long the LAN/same-host PING race may take when holepunching is the fallback.
const LAN_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Holepunch relays offered in a Noise payload (JS offers all of its announce relays, ≤ 20; a
/// few keep msg2 small and the client uses one).
pub const MAX_PAYLOAD_RELAYS: usize = 8;
/// Interval between holepunch probes (JS: every second for consistent NATs).
pub const PUNCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long both sides punch before giving up (JS: 10 s).
pub const PUNCH_DURATION: Duration = Duration::from_secs(10);
/// Holepunch sessions a server keeps at once (slot ids); older ones are dropped.
const MAX_PUNCH_SESSIONS: usize = 256;
/// Noise payload version.
const PAYLOAD_VERSION: u64 = 1;

/// Errors of connect / listen.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The DHT failed.
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// UDX socket or stream error.
    #[error("udx: {0}")]
    Udx(#[from] EndpointError),
    /// Noise failed.
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// Secret stream setup failed.
    #[error("secret stream: {0}")]
    SecretStream(#[from] SecretStreamError),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// No node holds an announcement of this key.
    #[error("peer not found on the dht")]
    PeerNotFound,
    /// No relay answered the handshake (refused by the firewall, or unreachable).
    #[error("peer handshake timed out or was refused")]
    HandshakeFailed,
    /// The server's Noise payload was unusable or carried an error code.
    #[error("peer payload error (code {0})")]
    Payload(u64),
    /// No direct path answered and holepunching did not succeed (ABORTED).
    #[error("no path to the peer (holepunch aborted)")]
    NoPath,
    /// The connection setup timed out.
    #[error("connection timed out")]
    Timeout,
}

type Waiters = Arc<Mutex<HashMap<u32, oneshot::Sender<SocketAddr>>>>;

/// A [`DatagramSocket`] over a [`UdxSocket`]: non-UDX datagrams go to the DHT; firewall events
/// (first packet for a stream that waits for its peer) go to the stream's waiter.
pub struct UdxDatagrams {
    socket: Arc<UdxSocket>,
    events: Mutex<mpsc::Receiver<SocketEvent>>,
    waiters: Waiters,
    probes: broadcast::Sender<SocketAddr>,
}

impl fmt::Debug for UdxDatagrams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdxDatagrams")
            .field("local", &self.socket.local_addr())
            .finish_non_exhaustive()
    }
}

impl UdxDatagrams {
    fn new(
        socket: Arc<UdxSocket>,
        waiters: Waiters,
        probes: broadcast::Sender<SocketAddr>,
    ) -> io::Result<Self> {
        let events = socket
            .take_events()
            .ok_or_else(|| io::Error::other("udx socket events already taken"))?;
        Ok(Self {
            socket,
            events: Mutex::new(events),
            waiters,
            probes,
        })
    }
}

impl DatagramSocket for UdxDatagrams {
    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddr>> {
        let mut rx = self.events.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::other("udx socket closed")));
                }
                Poll::Ready(Some(SocketEvent::Datagram { from, data })) if data.len() == 1 => {
                    // A holepunch probe (§3.8): not RPC; tell whoever is punching.
                    let _ = self.probes.send(from);
                }
                Poll::Ready(Some(SocketEvent::Datagram { from, data })) => {
                    let n = data.len().min(buf.remaining());
                    if let Some(d) = data.get(..n) {
                        buf.put_slice(d);
                    }
                    return Poll::Ready(Ok(from));
                }
                Poll::Ready(Some(SocketEvent::Firewall { local_id, from })) => {
                    let w = self
                        .waiters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&local_id);
                    match w {
                        Some(w) => {
                            let _ = w.send(from);
                        }
                        None => trace!(local_id, %from, "first packet for an unexpected stream"),
                    }
                }
            }
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        to: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_send_to(cx, buf, to)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.socket.local_addr())
    }
}

/// A HyperDHT node whose DHT RPC and UDX streams share its sockets; connects and listens by key.
#[derive(Debug)]
pub struct HyperDht {
    node: Arc<DhtNode>,
    server: Arc<UdxSocket>,
    client: Arc<UdxSocket>,
    waiters: Waiters,
    host: std::net::Ipv4Addr,
    probes: broadcast::Sender<SocketAddr>,
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

fn random_stream_id() -> u32 {
    rand::rngs::OsRng.next_u32()
}

impl HyperDht {
    /// Binds the server UDX socket on `config.host:config.port` and the client socket on
    /// `config.host:0`, and starts the DHT on them.
    pub async fn bind(config: DhtConfig) -> Result<Self, ConnectError> {
        let host = config.host;
        let server = Arc::new(UdxSocket::bind(SocketAddrV4::new(host, config.port).into()).await?);
        let client = Arc::new(UdxSocket::bind(SocketAddrV4::new(host, 0).into()).await?);
        let waiters: Waiters = Arc::default();
        let (probes, _) = broadcast::channel(PROBE_QUEUE);
        let s = UdxDatagrams::new(server.clone(), waiters.clone(), probes.clone())?;
        let c = UdxDatagrams::new(client.clone(), waiters.clone(), probes.clone())?;
        let node = DhtNode::with_sockets(config, Arc::new(s), Arc::new(c))?;
        Ok(Self {
            node: Arc::new(node),
            server,
            client,
            waiters,
            host,
            probes,
        })
    }

    /// The DHT node (lookup, announce, …).
    pub fn dht(&self) -> &DhtNode {
        &self.node
    }

    /// The server socket's address (DHT server socket and UDX streams).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn wait_first_packet(&self, id: u32) -> Option<oneshot::Receiver<SocketAddr>> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= MAX_PENDING_STREAMS {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        w.insert(id, tx);
        Some(rx)
    }

    fn create_stream(&self) -> Result<UdxStream, ConnectError> {
        let mut last = None;
        for _ in 0..8 {
            match self.server.create_stream(random_stream_id()) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(ConnectError::Timeout, ConnectError::Udx))
    }

    async fn local_payload(&self, stream_id: u32, server: bool) -> NoisePayload {
        let remote = self.node.info().await.ok().and_then(|i| i.remote_addr);
        let open = server && remote.is_some();
        let mut addresses4 = Vec::new();
        if let Some(r) = remote {
            addresses4.push(r);
        }
        if let Some(l) = v4(self.server.local_addr()) {
            if !addresses4.contains(&l) && l.ip() == &self.host {
                addresses4.push(l);
            }
        }
        NoisePayload {
            version: PAYLOAD_VERSION,
            error: error_codes::NONE,
            firewall: if open {
                firewall::OPEN
            } else {
                firewall::UNKNOWN
            },
            holepunch: None,
            addresses4,
            addresses6: Vec::new(),
            udx: Some(UdxInfo {
                version: 1,
                reusable_socket: false,
                id: u64::from(stream_id),
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through: None,
            relay_addresses: None,
        }
    }

    /// Listens on `key_pair`: announces it and accepts connections from keys `firewall` allows.
    pub async fn listen(
        self: &Arc<Self>,
        key_pair: KeyPair,
        firewall: Firewall,
    ) -> Result<Server, ConnectError> {
        let pk = key_pair.public_key();
        let events = self.node.listen(pk.as_bytes()).await?;
        self.node.bootstrapped().await?;
        // Like JS `listen()`: resolve once the first self-announce finished.
        let target = hash(pk.as_bytes());
        let relays = self
            .node
            .announce_relays(target, &key_pair, Vec::new())
            .await?;
        debug!(relays = relays.len(), "listening");
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let dht = self.clone();
        let kp = key_pair.clone();
        let task =
            tokio::spawn(async move { run_server(dht, kp, firewall, relays, events, tx).await });
        Ok(Server {
            dht: self.clone(),
            public_key: pk,
            rx,
            task: Some(task),
        })
    }

    /// Connects to the server listening on `remote`, authenticating as `key_pair`.
    pub async fn connect(
        &self,
        key_pair: &KeyPair,
        remote: &PublicKey,
    ) -> Result<Connection, ConnectError> {
        self.node.bootstrapped().await?;
        let started = Instant::now();
        let found = self.node.find_peer(*remote.as_bytes()).await?;
        let relays: Vec<SocketAddrV4> = found
            .iter()
            .filter(|r| r.peers.iter().any(|p| p.public_key == *remote.as_bytes()))
            .map(|r| r.from)
            .take(MAX_HANDSHAKE_RELAYS)
            .collect();
        if relays.is_empty() {
            return Err(ConnectError::PeerNotFound);
        }
        let raw = self.create_stream()?;
        let prologue = ns::peer_handshake();
        let mut noise = NoiseHandshake::new(NoiseConfig::ik(
            true,
            key_pair.clone(),
            &prologue,
            Some(*remote),
        ))?;
        let payload = self.local_payload(raw.local_id(), false).await;
        let msg1 = noise.write_message(&payload.encode())?;
        let target = hash(remote.as_bytes());
        let value = Handshake {
            mode: Mode::FromClient,
            noise: msg1,
            peer_address: None,
            relay_address: None,
        }
        .encode();
        let asks = relays.iter().map(|r| {
            let node = self.node.clone();
            let req = UserRequest {
                to: *r,
                token: None,
                internal: false,
                command: commands::PEER_HANDSHAKE,
                target: Some(target),
                value: Some(value.clone()),
                socket: None,
                retries: None,
            };
            let relay = *r;
            async move {
                let reply = node.request(req).await.ok()?;
                if reply.from != relay {
                    return None;
                }
                let hs = Handshake::decode(reply.value.as_deref()?).ok()?;
                (hs.mode == Mode::Reply && !hs.noise.is_empty()).then_some((reply, hs))
            }
            .boxed()
        });
        let first = first_some(asks.collect());
        let (reply, hs) = tokio::time::timeout(HANDSHAKE_TIMEOUT, first)
            .await
            .map_err(|_| ConnectError::HandshakeFailed)?
            .ok_or(ConnectError::HandshakeFailed)?;
        let server_address = hs.peer_address.unwrap_or(reply.from);
        let remote_payload = noise.read_message(&hs.noise)?;
        let handshake = noise.into_handshake()?;
        let secret = holepunch_secret(&handshake.hash);
        let rp = NoisePayload::decode(&remote_payload).map_err(|_| ConnectError::Payload(0))?;
        if rp.version != PAYLOAD_VERSION || rp.error != error_codes::NONE {
            return Err(ConnectError::Payload(rp.error));
        }
        let remote_id = rp
            .udx
            .as_ref()
            .and_then(|u| u32::try_from(u.id).ok())
            .ok_or(ConnectError::Payload(error_codes::ABORTED))?;
        let mut candidates: Vec<SocketAddrV4> = Vec::new();
        for a in rp.addresses4.iter().chain(std::iter::once(&server_address)) {
            if !candidates.contains(a) {
                candidates.push(*a);
            }
        }
        // Holepunching is the fallback when the server is firewalled and was reached via a relay.
        let punch = rp
            .holepunch
            .as_ref()
            .map(|h| h.id)
            .filter(|_| rp.firewall != firewall::OPEN && hs.peer_address.is_some());
        // As hyperdht: the LAN shortcut is only worth waiting for when both peers look the same
        // from the relay (same host or same NAT); behind different NATs holepunch at once.
        let same_network = reply.to.ip() == server_address.ip();
        let addr = match punch {
            Some(id) if !same_network => {
                self.holepunch(reply.from, server_address, target, id, &secret)
                    .await?
            }
            Some(id) => match self.race_ping(&candidates, LAN_PING_TIMEOUT).await {
                Ok(a) => a,
                Err(_) => {
                    self.holepunch(reply.from, server_address, target, id, &secret)
                        .await?
                }
            },
            None => self.race_ping(&candidates, PATH_TIMEOUT).await?,
        };
        debug!(%addr, remote_id, elapsed_ms = started.elapsed().as_millis(), "direct path");
        raw.connect(remote_id, SocketAddr::V4(addr))?;
        Ok(SecretStream::from_handshake(raw, handshake).await?)
    }

    /// dht-rpc PING to every candidate; the first to answer is the path (§3.8 step 3).
    async fn race_ping(
        &self,
        candidates: &[SocketAddrV4],
        limit: Duration,
    ) -> Result<SocketAddrV4, ConnectError> {
        let pings = candidates.iter().map(|c| {
            let node = self.node.clone();
            let to = *c;
            async move {
                let req = UserRequest {
                    to,
                    token: None,
                    internal: true,
                    command: 0,
                    target: None,
                    value: None,
                    socket: None,
                    retries: Some(2),
                };
                node.request(req).await.ok().map(|_| to)
            }
            .boxed()
        });
        tokio::time::timeout(limit, first_some(pings.collect()))
            .await
            .map_err(|_| ConnectError::NoPath)?
            .ok_or(ConnectError::NoPath)
    }

    /// Client side of a consistent-NAT holepunch (§3.8): PEER_HOLEPUNCH through `relay`, then
    /// 1-byte probes to the server's relay-observed address from our main socket until one of
    /// the server's probes arrives (both NAT mappings are open) or [`PUNCH_DURATION`] passes.
    async fn holepunch(
        &self,
        relay: SocketAddrV4,
        server: SocketAddrV4,
        target: Id,
        id: u64,
        secret: &Id,
    ) -> Result<SocketAddrV4, ConnectError> {
        let mut probes = self.probes.subscribe();
        let payload = HolepunchPayload {
            firewall: firewall::CONSISTENT,
            punching: true,
            remote_address: Some(server),
            ..HolepunchPayload::default()
        };
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let value = Holepunch {
            mode: Mode::FromClient,
            id,
            payload: secretbox_seal(secret, &nonce, &payload.encode()),
            peer_address: Some(server),
        }
        .encode();
        let req = UserRequest {
            to: relay,
            token: None,
            internal: false,
            command: commands::PEER_HOLEPUNCH,
            target: Some(target),
            value: Some(value),
            // From the main socket: the relay tells the server this socket's NAT mapping.
            socket: Some(SocketKind::Server),
            retries: None,
        };
        let node = self.node.clone();
        let ask = tokio::spawn(async move { node.request(req).await });
        let deadline = tokio::time::Instant::now() + PUNCH_DURATION;
        let mut tick = tokio::time::interval(PUNCH_INTERVAL);
        let result = loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.server.send_to(SocketAddr::V4(server), &[0]).await {
                        debug!(error = %e, "probe send failed");
                    }
                }
                p = probes.recv() => match p {
                    Ok(SocketAddr::V4(from)) if from == server => break Ok(server),
                    Err(broadcast::error::RecvError::Closed) => break Err(ConnectError::NoPath),
                    _ => {}
                },
                () = tokio::time::sleep_until(deadline) => break Err(ConnectError::NoPath),
            }
        };
        ask.abort();
        debug!(%server, ok = result.is_ok(), "holepunch finished");
        result
    }

    /// Sends a probe to `to` every [`PUNCH_INTERVAL`] for [`PUNCH_DURATION`] (server side).
    fn spawn_prober(self: &Arc<Self>, to: SocketAddrV4) {
        let dht = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + PUNCH_DURATION;
            let mut tick = tokio::time::interval(PUNCH_INTERVAL);
            while tokio::time::Instant::now() < deadline {
                tick.tick().await;
                if let Err(e) = dht.server.send_to(SocketAddr::V4(to), &[0]).await {
                    debug!(error = %e, "probe send failed");
                }
            }
        });
    }

    /// Stops the node and closes its sockets.
    pub async fn destroy(self) {
        if let Ok(node) = Arc::try_unwrap(self.node) {
            node.destroy().await;
        }
        if let Ok(s) = Arc::try_unwrap(self.server) {
            s.close().await;
        }
        if let Ok(s) = Arc::try_unwrap(self.client) {
            s.close().await;
        }
    }

    /// The server UDX socket: where every connection's stream lives (the blind relay creates
    /// its relay entries there, and relayed raw streams must live there too).
    pub(crate) fn server_socket(&self) -> &Arc<UdxSocket> {
        &self.server
    }
}

/// Resolves to the first `Some` of the futures, or `None` when all gave `None`.
async fn first_some<T>(mut futs: Vec<futures::future::BoxFuture<'static, Option<T>>>) -> Option<T> {
    while !futs.is_empty() {
        let (r, _, rest) = select_all(futs).await;
        if r.is_some() {
            return r;
        }
        futs = rest;
    }
    None
}

/// A listening server: accepted connections (remote key allowed by the firewall).
#[derive(Debug)]
pub struct Server {
    dht: Arc<HyperDht>,
    public_key: PublicKey,
    rx: mpsc::Receiver<Connection>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// The key this server listens on.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The next accepted connection; `None` once the server stopped.
    pub async fn accept(&mut self) -> Option<Connection> {
        self.rx.recv().await
    }

    /// Stops listening (no new handshakes are answered).
    pub async fn close(mut self) {
        let _ = self.dht.node.unlisten(self.public_key.as_bytes()).await;
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct Seen {
    at: Instant,
    msg2: Option<Vec<u8>>,
}

/// A firewalled server's holepunch slot (the `id` in its Noise payload).
struct PunchSession {
    at: Instant,
    secret: Id,
    punching: bool,
}

async fn run_server(
    dht: Arc<HyperDht>,
    key_pair: KeyPair,
    firewall: Firewall,
    mut relays: Vec<RelayInfo>,
    mut events: mpsc::Receiver<ServerEvent>,
    accepted: mpsc::Sender<Connection>,
) {
    // Keys the holepunch tokens (JS `SecurePayload.token`: a hash of the peer's host).
    let mut token_secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut token_secret);
    let target = hash(key_pair.public_key().as_bytes());
    let mut seen: HashMap<Vec<u8>, Seen> = HashMap::new();
    let mut sessions: HashMap<u64, PunchSession> = HashMap::new();
    let mut next_slot: u64 = 0;
    let mut announce = tokio::time::interval_at(
        tokio::time::Instant::now() + REANNOUNCE_INTERVAL,
        REANNOUNCE_INTERVAL,
    );
    loop {
        tokio::select! {
            _ = announce.tick() => {
                match dht.node.announce_relays(target, &key_pair, Vec::new()).await {
                    Ok(r) => {
                        debug!(accepted = r.len(), "self-announced");
                        relays = r;
                    }
                    Err(e) => debug!(error = %e, "self-announce failed"),
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                sessions.retain(|_, p| now.duration_since(p.at) < SERVER_CONNECT_TIMEOUT + PUNCH_DURATION);
                let (req, handshake) = match ev {
                    ServerEvent::Handshake { req, handshake } => (req, handshake),
                    ServerEvent::Holepunch { req, holepunch } => {
                        on_holepunch(&dht, &mut sessions, &relays, &token_secret, req, holepunch).await;
                        continue;
                    }
                };
                seen.retain(|_, s| now.duration_since(s.at) < HANDSHAKE_CLEAR_WAIT);
                if let Some(s) = seen.get(&handshake.noise) {
                    if let Some(m) = &s.msg2 {
                        let _ = dht.node.answer_handshake(req, handshake.clone(), m.clone()).await;
                    }
                    continue;
                }
                if seen.len() >= MAX_HANDSHAKES {
                    continue;
                }
                let key = handshake.noise.clone();
                let slot = next_slot;
                next_slot = next_slot.wrapping_add(1);
                let msg2 = match respond(&dht, &key_pair, &firewall, &relays, req, handshake, &accepted, slot).await {
                    Ok((m, secret)) => {
                        if let Some(secret) = secret {
                            if sessions.len() >= MAX_PUNCH_SESSIONS {
                                if let Some(oldest) = sessions.iter().min_by_key(|(_, p)| p.at).map(|(k, _)| *k) {
                                    sessions.remove(&oldest);
                                }
                            }
                            sessions.insert(slot, PunchSession { at: now, secret, punching: false });
                        }
                        m
                    }
                    Err(e) => {
                        debug!(error = %e, "handshake failed");
                        None
                    }
                };
                seen.insert(key, Seen { at: now, msg2 });
            }
        }
    }
}

/// Answers a relayed PEER_HOLEPUNCH for one of our slots and starts probing the client.
async fn on_holepunch(
    dht: &Arc<HyperDht>,
    sessions: &mut HashMap<u64, PunchSession>,
    relays: &[RelayInfo],
    token_secret: &[u8; 32],
    req: IncomingRequest,
    holepunch: Holepunch,
) {
    let Some(session) = sessions.get_mut(&holepunch.id) else {
        trace!(id = holepunch.id, "holepunch for an unknown slot");
        return;
    };
    let Ok(plain) = secretbox_open(&session.secret, &holepunch.payload) else {
        debug!("holepunch payload does not authenticate");
        return;
    };
    let Ok(remote) = HolepunchPayload::decode(&plain) else {
        return;
    };
    // The relay tells us the client's address as it saw it (its NAT mapping).
    let Some(client) = holepunch.peer_address else {
        return;
    };
    if !session.punching {
        session.punching = true;
        dht.spawn_prober(client);
    }
    // Our address as the forwarding relay saw it (where a JS client punches to), else as any
    // relay saw it; and a token for the client to echo, as JS servers send.
    let ours = relays
        .iter()
        .find(|r| r.relay_address == req.from)
        .or_else(|| relays.first())
        .map(|r| vec![r.peer_address]);
    let mut keyed = token_secret.to_vec();
    keyed.extend_from_slice(client.ip().to_string().as_bytes());
    let reply = HolepunchPayload {
        firewall: firewall::CONSISTENT,
        round: remote.round,
        punching: true,
        addresses: ours,
        remote_address: Some(client),
        token: Some(hash(&keyed)),
        remote_token: remote.token,
        ..HolepunchPayload::default()
    };
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = secretbox_seal(&session.secret, &nonce, &reply.encode());
    if let Err(e) = dht.node.answer_holepunch(req, holepunch, sealed).await {
        debug!(error = %e, "holepunch answer failed");
    }
}

/// Runs the responder side of one handshake; returns msg2 (None when refused) and, for a
/// firewalled server, the holepunch secret of the slot `slot`.
#[allow(clippy::too_many_arguments)] // the server loop's state, passed by reference
async fn respond(
    dht: &Arc<HyperDht>,
    key_pair: &KeyPair,
    firewall: &Firewall,
    relays: &[RelayInfo],
    req: IncomingRequest,
    handshake: Handshake,
    accepted: &mpsc::Sender<Connection>,
    slot: u64,
) -> Result<(Option<Vec<u8>>, Option<Id>), ConnectError> {
    let prologue = ns::peer_handshake();
    let mut noise = NoiseHandshake::new(NoiseConfig::ik(false, key_pair.clone(), &prologue, None))?;
    let client_payload = noise.read_message(&handshake.noise)?;
    if let Step::Verdict(pk) = noise.next_step() {
        let allow = firewall(&pk);
        noise.handle_verdict(allow)?;
        if !allow {
            debug!(remote = %pk.to_hex(), "firewall refused key");
            return Ok((None, None));
        }
    }
    let cp = NoisePayload::decode(&client_payload).map_err(|_| ConnectError::Payload(0))?;
    let remote_id = cp.udx.as_ref().and_then(|u| u32::try_from(u.id).ok());
    let raw = dht.create_stream()?;
    let mut payload = dht.local_payload(raw.local_id(), true).await;
    if cp.version != PAYLOAD_VERSION {
        payload.error = error_codes::VERSION_MISMATCH;
    } else if remote_id.is_none() {
        payload.error = error_codes::ABORTED;
    }
    let punch = payload.firewall != firewall::OPEN;
    if punch {
        // As hyperdht: the nodes we announced to, each with our address as it saw us; a JS
        // client only holepunches when this list is non-empty.
        payload.holepunch = Some(HolepunchInfo {
            id: slot,
            relays: relays.iter().take(MAX_PAYLOAD_RELAYS).copied().collect(),
        });
    }
    let msg2 = noise.write_message(&payload.encode())?;
    let hs = noise.into_handshake()?;
    let secret = punch.then(|| holepunch_secret(&hs.hash));
    let Some(remote_id) = remote_id.filter(|_| payload.error == error_codes::NONE) else {
        dht.node
            .answer_handshake(req, handshake, msg2.clone())
            .await?;
        return Ok((Some(msg2), None));
    };
    // Register for the first packet before answering, so it cannot be missed.
    let first = dht.wait_first_packet(raw.local_id());
    dht.node
        .answer_handshake(req, handshake, msg2.clone())
        .await?;
    // The client (secret-stream initiator) always sends first; its first UDX packet tells us
    // the address it actually uses (robust where the relay-observed address is another socket).
    if let Some(first) = first {
        let accepted = accepted.clone();
        let waiters = dht.waiters.clone();
        tokio::spawn(async move {
            let id = raw.local_id();
            match tokio::time::timeout(SERVER_CONNECT_TIMEOUT, first).await {
                Ok(Ok(from)) => {
                    if raw.connect(remote_id, from).is_ok() {
                        start_responder(raw, hs, accepted);
                    }
                }
                _ => {
                    waiters
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    debug!("client never sent its first packet");
                }
            }
        });
    }
    Ok((Some(msg2), secret))
}

fn start_responder(
    raw: UdxStream,
    hs: crate::noise::Handshake,
    accepted: mpsc::Sender<Connection>,
) {
    tokio::spawn(async move {
        match SecretStream::from_handshake(raw, hs).await {
            Ok(c) => {
                let _ = accepted.send(c).await;
            }
            Err(e) => debug!(error = %e, "secret stream setup failed"),
        }
    });
}
