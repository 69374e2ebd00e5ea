//! Connect by key (npm `hyperdht` 6.34 `connect`): the client role, and the [`HyperDht`] node
//! whose DHT RPC, holepunch probes and UDX streams share its sockets. The server role is in
//! [`super::server`].
//!
//! [`HyperDht::connect`] finds the server's record (FIND_PEER), sends Noise IK msg1 through up
//! to [`MAX_HANDSHAKE_RELAYS`] relays in parallel, then finds a path, first that works:
//! 1. **Direct**: the server is reachable (OPEN), or was reached without a relay: a dht-rpc PING
//!    race to its advertised addresses (§3.8 step 3).
//! 2. **LAN**: both peers look the same from the relay (same host or NAT): the PING race to the
//!    server's private addresses, for [`LAN_PING_TIMEOUT`].
//! 3. **Holepunch** (§3.8): classify our main socket's NAT (ping [`NAT_SAMPLES`] DHT nodes from
//!    it), a probe round and a punch round of PEER_HOLEPUNCH through the server's relay (firewall
//!    classes, addresses, tokens whose echo verifies each side's address), then probing by the
//!    strategy both classes call for ([`Strategy`]): consistent ↔ consistent, consistent →
//!    random (random ports), random → consistent (birthday sockets).
//! 4. **Relay** (§3.10): when both NATs are random or the punch fails, through the blind relay
//!    named in either handshake payload.
//!
//! Every [`Connection`] says which path it took ([`PathInfo`]). When none works,
//! [`ConnectError::NoPath`] says what was detected and what would help.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{FutureExt, select_all};
use rand::RngCore;
use tokio::io::ReadBuf;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, trace};

use super::crypto::{holepunch_secret, ns, secretbox_open, secretbox_seal};
use super::driver::{DatagramSocket, DhtConfig, DhtError, DhtNode};
use super::holepunch::{
    NAT_SAMPLES, NatClass, NatSampler, RandomPunchGate, Strategy, address_token,
};
use super::messages::{
    Handshake, Holepunch, HolepunchPayload, Mode, NoisePayload, RelayInfo, UdxInfo,
};
use super::path::{Connection, PathInfo, PathKind};
pub(crate) use super::punch::ProbeSchedule;
use super::punch::{PunchSockets, probe_until_hit};
use super::{commands, error_codes, firewall};
use crate::dht::{Id, SocketKind, UserRequest, hash};
use crate::keys::{KeyPair, PublicKey};
use crate::noise::{NoiseConfig, NoiseError, NoiseHandshake};
use crate::secret_stream::{SecretStream, SecretStreamError};
use crate::udx::{EndpointError, SocketEvent, UdxSocket, UdxStream};

/// The key firewall: returns `true` to accept a remote public key. Decided during the handshake.
pub type Firewall = Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>;

/// How long a client waits for the handshake reply from a relay (dht-rpc retries included).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client's PING race for a direct path may take before it gives up.
pub const PATH_TIMEOUT: Duration = Duration::from_secs(5);
/// Relays the client sends msg1 through in parallel (JS uses up to 2).
pub const MAX_HANDSHAKE_RELAYS: usize = 2;
/// How long the LAN/same-host PING race may take when holepunching is the fallback.
pub const LAN_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one PEER_HOLEPUNCH round trip through a relay may take (retries included).
pub const HOLEPUNCH_ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a NAT classification may wait for the DHT nodes' pongs.
pub const NAT_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a socket's NAT classification is reused.
pub const NAT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Pause before repeating a probe round when the server's class was still unknown (JS: 1 s).
const UNKNOWN_RETRY_PAUSE: Duration = Duration::from_millis(300);
/// Probe notifications buffered per subscriber (older ones are dropped; one is enough).
const PROBE_QUEUE: usize = 1024;
/// Most streams waiting for their first packet at once (per node).
pub(crate) const MAX_PENDING_STREAMS: usize = 1024;
/// Noise payload version.
pub(crate) const PAYLOAD_VERSION: u64 = 1;

/// Whether and through which blind relay this node may connect when no direct path exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// Find relays announced on the DHT ([`crate::relay::RELAY_TOPIC`]).
    #[default]
    Auto,
    /// Always this relay.
    Pinned(PublicKey),
    /// Never relay (and refuse a relay the peer proposes).
    Disabled,
}

/// How long a relay lookup's answer is reused.
const RELAY_CACHE_TTL: Duration = Duration::from_secs(60);

/// The relay of one connection attempt: which, the pairing token, and whether we are the
/// pairing initiator (the side that proposed it, hyperdht's rule).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayChoice {
    pub(crate) key: PublicKey,
    pub(crate) token: [u8; 32],
    pub(crate) initiator: bool,
}

impl RelayChoice {
    /// The relay both sides use: the peer's proposal if it made one, else ours.
    pub(crate) fn agree(
        mode: RelayMode,
        ours: Option<Self>,
        theirs: Option<&super::messages::RelayThroughInfo>,
    ) -> Option<Self> {
        if mode == RelayMode::Disabled {
            return None;
        }
        match theirs {
            Some(t) => Some(Self {
                key: PublicKey::from_bytes(t.public_key),
                token: t.token,
                initiator: false,
            }),
            None => ours,
        }
    }

    pub(crate) fn to_payload(self) -> super::messages::RelayThroughInfo {
        super::messages::RelayThroughInfo {
            version: 1,
            public_key: *self.key.as_bytes(),
            token: self.token,
        }
    }
}

/// What was found out about a peer that could not be reached (for the error message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoPathReason {
    /// Our NAT class, as sampled.
    pub local: NatClass,
    /// The peer's NAT class, as it said.
    pub remote: NatClass,
    /// Why the holepunch did not connect.
    pub punch: String,
    /// Why no relay carried the connection (`None`: a relay was not tried).
    pub relay: Option<String>,
}

impl fmt::Display for NoPathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let both_random = self.local == NatClass::Random && self.remote == NatClass::Random;
        if both_random {
            write!(f, "both peers behind randomizing NATs")?;
        } else {
            write!(
                f,
                "holepunch failed ({}; our NAT {}, the peer's {})",
                self.punch, self.local, self.remote
            )?;
        }
        match &self.relay {
            Some(r) => write!(f, "; relay: {r}"),
            None => write!(f, "; no relay reachable: run a hub or pass --relay"),
        }
    }
}

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
    /// No DHT node answered the bootstrap: nothing can be found or announced.
    #[error("no DHT bootstrap node answered (check --bootstrap and the network)")]
    NoBootstrap,
    /// No node holds an announcement of this key.
    #[error("peer not found on the dht")]
    PeerNotFound,
    /// No relay answered the handshake (refused by the firewall, or unreachable).
    #[error("peer handshake timed out or was refused")]
    HandshakeFailed,
    /// The server's Noise payload was unusable or carried an error code.
    #[error("peer payload error (code {0})")]
    Payload(u64),
    /// No direct path answered, holepunching did not connect, and no relay carried it.
    #[error("no path to the peer: {0}")]
    NoPath(NoPathReason),
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
    pub(crate) node: Arc<DhtNode>,
    pub(crate) server: Arc<UdxSocket>,
    client: Arc<UdxSocket>,
    pub(crate) waiters: Waiters,
    host: Ipv4Addr,
    bootstrap: Vec<SocketAddrV4>,
    pub(crate) probes: broadcast::Sender<SocketAddr>,
    /// The main socket's NAT class, reused for [`NAT_CACHE_TTL`].
    nat: Mutex<Option<(Instant, NatSampler)>>,
    /// One random punch at a time (JS's abuse limit).
    pub(crate) random_punches: Mutex<RandomPunchGate>,
    /// A DHT node answered the bootstrap walk once.
    reached_dht: AtomicBool,
    /// Whether and how to relay.
    relay_mode: Mutex<RelayMode>,
    /// Relays found on the DHT, and when.
    relays_found: Mutex<Option<(Instant, Vec<PublicKey>)>>,
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

pub(crate) fn random_stream_id() -> u32 {
    rand::rngs::OsRng.next_u32()
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// The address this host uses towards `to` (no packet is sent: a connected UDP socket only
/// picks its route), for advertising a LAN address when bound to 0.0.0.0.
fn route_source(to: SocketAddrV4) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect(to).ok()?;
    match s.local_addr().ok()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(*a.ip()),
        _ => None,
    }
}

/// What the client learned from the handshake, for the punch.
struct PunchPlan {
    /// The relay of the server's list to send PEER_HOLEPUNCH through.
    server_relay: RelayInfo,
    /// The server's address as the handshake relay saw it.
    server_address: SocketAddrV4,
    /// The server's holepunch slot.
    id: u64,
    /// Keys the holepunch payloads.
    secret: Id,
    /// The server's DHT target.
    target: Id,
    /// The server's class as its Noise payload said (our servers say RANDOM early).
    remote_hint: NatClass,
    /// The server's addresses from its Noise payload.
    remote_addresses: Vec<SocketAddrV4>,
}

/// Where a client's punch ended.
struct PunchWin {
    sockets: PunchSockets,
    socket: usize,
    from: SocketAddrV4,
}

impl HyperDht {
    /// Binds the server UDX socket on `config.host:config.port` and the client socket on
    /// `config.host:0`, and starts the DHT on them.
    pub async fn bind(config: DhtConfig) -> Result<Self, ConnectError> {
        let host = config.host;
        let bootstrap = config.bootstrap.clone();
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
            bootstrap,
            probes,
            nat: Mutex::new(None),
            random_punches: Mutex::new(RandomPunchGate::default()),
            reached_dht: AtomicBool::new(false),
            relay_mode: Mutex::new(RelayMode::Auto),
            relays_found: Mutex::new(None),
        })
    }

    /// Sets whether and through which relay connections may go when no direct path exists.
    pub fn set_relay_mode(&self, mode: RelayMode) {
        *self.relay_mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// The relay mode.
    pub fn relay_mode(&self) -> RelayMode {
        *self.relay_mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relay we would propose for a connection with `peer` (never the peer itself), with a
    /// fresh token: the pinned one, or one announced on the DHT (looked up at most every
    /// minute).
    pub(crate) async fn propose_relay(&self, peer: &PublicKey) -> Option<RelayChoice> {
        let key = match self.relay_mode() {
            RelayMode::Disabled => return None,
            RelayMode::Pinned(k) => k,
            RelayMode::Auto => {
                let cached = {
                    let g = self.relays_found.lock().unwrap_or_else(|e| e.into_inner());
                    g.as_ref()
                        .filter(|(at, _)| at.elapsed() < RELAY_CACHE_TTL)
                        .map(|(_, r)| r.clone())
                };
                let found = match cached {
                    Some(r) => r,
                    None => {
                        let r = crate::relay::find_relays(self).await.unwrap_or_default();
                        *self.relays_found.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((Instant::now(), r.clone()));
                        r
                    }
                };
                found.into_iter().find(|k| k != peer)?
            }
        };
        (key != *peer).then(|| RelayChoice {
            key,
            token: crate::relay::relay_token(),
            initiator: true,
        })
    }

    /// Pairs through `relay` for our stream `local_id` (boxed: a relay connection is itself a
    /// [`Self::connect`]).
    pub(crate) fn pair_relay<'a>(
        &'a self,
        key_pair: &'a KeyPair,
        relay: RelayChoice,
        local_id: u32,
    ) -> futures::future::BoxFuture<'a, Result<crate::relay::RelayedPath, crate::relay::RelayError>>
    {
        Box::pin(async move {
            crate::relay::pair_through(
                self,
                key_pair,
                &relay.key,
                relay.initiator,
                relay.token,
                local_id,
            )
            .await
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

    /// Waits for the first bootstrap walk (not for the NAT tests) and checks that a DHT node
    /// answered; a node with bootstrap nodes that never answer fails with
    /// [`ConnectError::NoBootstrap`] instead of waiting for peers that cannot be found.
    pub async fn ready(&self) -> Result<(), ConnectError> {
        self.node.ready().await?;
        if self.bootstrap.is_empty() || self.reached_dht.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Once a node answered, later empty tables (nodes timing out) are the DHT's business.
        let info = self.node.info().await?;
        if info.table_len == 0 {
            return Err(ConnectError::NoBootstrap);
        }
        self.reached_dht.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn wait_first_packet(&self, id: u32) -> Option<oneshot::Receiver<SocketAddr>> {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= MAX_PENDING_STREAMS {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        w.insert(id, tx);
        Some(rx)
    }

    pub(crate) fn forget_first_packet(&self, id: u32) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    pub(crate) fn create_stream(&self) -> Result<UdxStream, ConnectError> {
        let mut last = None;
        for _ in 0..8 {
            match self.server.create_stream(random_stream_id()) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.map_or(ConnectError::Timeout, ConnectError::Udx))
    }

    /// The host our punch sockets bind (the main socket's).
    pub(crate) fn host(&self) -> Ipv4Addr {
        self.host
    }

    /// Our Noise payload: our reachable and LAN addresses, our UDX stream id, and our NAT
    /// class when it is already known (OPEN when reachable; our RANDOM tells a peer that is
    /// random too to go straight to a relay).
    pub(crate) async fn local_payload(&self, stream_id: u32, server: bool) -> NoisePayload {
        let remote = self.node.info().await.ok().and_then(|i| i.remote_addr);
        let open = server && remote.is_some();
        let mut addresses4 = Vec::new();
        if let Some(r) = remote {
            addresses4.push(r);
        }
        if let Some(l) = v4(self.server.local_addr()) {
            let lan = if l.ip().is_unspecified() {
                self.bootstrap
                    .first()
                    .and_then(|b| route_source(*b))
                    .map(|ip| SocketAddrV4::new(ip, l.port()))
            } else {
                Some(l)
            };
            if let Some(lan) = lan.filter(|a| !addresses4.contains(a)) {
                addresses4.push(lan);
            }
        }
        let cached = self.cached_nat_class();
        let class = if open {
            NatClass::Open
        } else if cached == NatClass::Random {
            NatClass::Random
        } else {
            NatClass::Unknown
        };
        NoisePayload {
            version: PAYLOAD_VERSION,
            error: error_codes::NONE,
            firewall: class.to_wire(),
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

    fn cached_nat_class(&self) -> NatClass {
        let guard = self.nat.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some((at, s)) if at.elapsed() < NAT_CACHE_TTL => s.class(),
            _ => NatClass::Unknown,
        }
    }

    /// Classifies the main socket's NAT (JS `Nat.autoSample`): PINGs [`NAT_SAMPLES`] DHT nodes
    /// (from `nodes`, then the bootstrap nodes) from the main socket and counts where they saw
    /// it. Cached for [`NAT_CACHE_TTL`] once settled.
    pub(crate) async fn sample_nat(&self, nodes: &[SocketAddrV4]) -> NatSampler {
        {
            let guard = self.nat.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, s)) = &*guard
                && at.elapsed() < NAT_CACHE_TTL
                && s.settled()
            {
                return s.clone();
            }
        }
        let firewalled = self.node.info().await.map_or(true, |i| i.firewalled);
        let mut sampler = NatSampler::new(firewalled);
        if !firewalled {
            return sampler;
        }
        let mut targets: Vec<SocketAddrV4> = Vec::new();
        for n in nodes.iter().chain(self.bootstrap.iter()) {
            if !targets.contains(n) && targets.len() < 2 * NAT_SAMPLES {
                targets.push(*n);
            }
        }
        let mut pings: futures::stream::FuturesUnordered<_> = targets
            .iter()
            .map(|to| {
                let node = self.node.clone();
                let req = UserRequest {
                    to: *to,
                    token: None,
                    internal: true,
                    command: 0,
                    target: None,
                    value: None,
                    socket: Some(SocketKind::Server),
                    retries: Some(1),
                };
                async move { node.request(req).await.ok() }
            })
            .collect();
        let deadline = tokio::time::Instant::now() + NAT_SAMPLE_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut pings));
            match next.await {
                Ok(Some(Some(reply))) => {
                    sampler.add(reply.to, reply.from);
                    if sampler.settled() && sampler.class() != NatClass::Unknown {
                        break;
                    }
                }
                Ok(Some(None)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if sampler.class() == NatClass::Unknown {
            sampler.conclude();
        }
        debug!(class = %sampler.class(), samples = sampler.sampled(), "nat sampled");
        if sampler.class() != NatClass::Unknown {
            *self.nat.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), sampler.clone()));
        }
        sampler
    }

    /// Connects to the server listening on `remote`, authenticating as `key_pair`.
    pub async fn connect(
        &self,
        key_pair: &KeyPair,
        remote: &PublicKey,
    ) -> Result<Connection, ConnectError> {
        self.ready().await?;
        let started = Instant::now();
        let found = self.node.find_peer(*remote.as_bytes()).await?;
        let nodes: Vec<SocketAddrV4> = found.iter().map(|r| r.from).collect();
        let relays: Vec<SocketAddrV4> = found
            .iter()
            .filter(|r| r.peers.iter().any(|p| p.public_key == *remote.as_bytes()))
            .map(|r| r.from)
            .take(MAX_HANDSHAKE_RELAYS)
            .collect();
        if relays.is_empty() {
            return Err(ConnectError::PeerNotFound);
        }
        // Classify our NAT while the handshake runs (it is cached for the next connect).
        let sampling = {
            let nodes = nodes.clone();
            async move { self.sample_nat(&nodes).await }
        }
        .shared();
        let raw = self.create_stream()?;
        let local_id = raw.local_id();
        let our_relay = self.propose_relay(remote).await;
        let prologue = ns::peer_handshake();
        let mut noise = NoiseHandshake::new(NoiseConfig::ik_initiator(
            key_pair.clone(),
            &prologue,
            *remote,
        ))?;
        let mut payload = self.local_payload(local_id, false).await;
        payload.relay_through = our_relay.map(RelayChoice::to_payload);
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
        let first = tokio::time::timeout(HANDSHAKE_TIMEOUT, first_some(asks.collect()));
        tokio::pin!(first);
        // Drive the sampling while waiting for the answer (its result is taken later).
        let mut sampled = false;
        let answered = loop {
            tokio::select! {
                a = &mut first => break a,
                _ = sampling.clone(), if !sampled => sampled = true,
            }
        };
        let (reply, hs) = answered
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
        let relayed = hs.peer_address.is_some();
        let relay = RelayChoice::agree(self.relay_mode(), our_relay, rp.relay_through.as_ref());
        let holepunchable = rp.holepunch.as_ref().filter(|h| !h.relays.is_empty());
        let plan = match holepunchable {
            Some(h) if relayed && rp.firewall != firewall::OPEN => {
                let server_relay = h
                    .relays
                    .iter()
                    .find(|r| r.relay_address == reply.from)
                    .or_else(|| h.relays.first())
                    .copied()
                    .unwrap_or(RelayInfo {
                        relay_address: reply.from,
                        peer_address: server_address,
                    });
                Some(PunchPlan {
                    server_relay,
                    server_address,
                    id: h.id,
                    secret,
                    target,
                    remote_hint: NatClass::from_wire(rp.firewall),
                    remote_addresses: rp.addresses4.clone(),
                })
            }
            _ => None,
        };
        // As hyperdht: the LAN shortcut is only worth waiting for when both peers look the same
        // from the relay (same host or same NAT); behind different NATs punch at once.
        let same_network = reply.to.ip() == server_address.ip();
        let (raw, path, keep): (UdxStream, PathInfo, Option<Arc<dyn Send + Sync>>) = match plan {
            None => match self.race_ping(&candidates, PATH_TIMEOUT).await {
                Ok(addr) => {
                    raw.connect(remote_id, SocketAddr::V4(addr))?;
                    (raw, direct_path(addr), None)
                }
                Err(_) => {
                    let reason = NoPathReason {
                        local: NatClass::Unknown,
                        remote: NatClass::from_wire(rp.firewall),
                        punch: "the peer's addresses did not answer and it cannot holepunch".into(),
                        relay: None,
                    };
                    let (path, guard) = self.relay_fallback(key_pair, relay, &raw, reason).await?;
                    (raw, path, Some(guard))
                }
            },
            Some(plan) => {
                let lan = if same_network {
                    self.race_ping(&candidates, LAN_PING_TIMEOUT).await.ok()
                } else {
                    None
                };
                match lan {
                    Some(addr) => {
                        raw.connect(remote_id, SocketAddr::V4(addr))?;
                        (raw, direct_path(addr), None)
                    }
                    None => {
                        let local = sampling.await;
                        let punched = if relay.is_some()
                            && local.class() == NatClass::Random
                            && plan.remote_hint == NatClass::Random
                        {
                            // Both random and a relay at hand: straight to it (the server
                            // learns it from our abort).
                            self.abort_punch(&plan, 0).await;
                            Err(NoPathReason {
                                local: NatClass::Random,
                                remote: NatClass::Random,
                                punch: "both NATs randomize ports".into(),
                                relay: None,
                            })
                        } else {
                            self.client_punch(&plan, &local).await
                        };
                        match punched {
                            Ok(mut win) => {
                                let (raw, keep) = if win.socket == 0 {
                                    (raw, None)
                                } else {
                                    let Some(s) =
                                        win.sockets.create_stream_on(win.socket, local_id)
                                    else {
                                        return Err(ConnectError::Timeout);
                                    };
                                    drop(raw);
                                    let keep = win
                                        .sockets
                                        .take(win.socket)
                                        .map(|s| s as Arc<dyn Send + Sync>);
                                    (s, keep)
                                };
                                raw.connect(remote_id, SocketAddr::V4(win.from))?;
                                let path = PathInfo {
                                    kind: PathKind::Holepunched,
                                    remote_addr: SocketAddr::V4(win.from),
                                    relay: None,
                                };
                                (raw, path, keep)
                            }
                            Err(reason) => {
                                let (path, guard) =
                                    self.relay_fallback(key_pair, relay, &raw, reason).await?;
                                (raw, path, Some(guard))
                            }
                        }
                    }
                }
            }
        };
        debug!(path = %path, remote_id, elapsed_ms = started.elapsed().as_millis(), "path found");
        let stream = SecretStream::from_handshake(raw, handshake).await?;
        let conn = Connection::new(stream, path);
        Ok(match keep {
            Some(g) => conn.keep(g),
            None => conn,
        })
    }

    /// When no direct or punched path exists: pairs `raw` through the agreed relay, or fails
    /// with what was detected.
    async fn relay_fallback(
        &self,
        key_pair: &KeyPair,
        relay: Option<RelayChoice>,
        raw: &UdxStream,
        mut reason: NoPathReason,
    ) -> Result<(PathInfo, Arc<dyn Send + Sync>), ConnectError> {
        let Some(relay) = relay else {
            if self.relay_mode() == RelayMode::Disabled {
                reason.relay = Some("relaying is disabled (--no-relay)".into());
            }
            return Err(ConnectError::NoPath(reason));
        };
        debug!(punch = %reason.punch, relay = %relay.key.to_hex(), "falling back to the relay");
        match self.pair_relay(key_pair, relay, raw.local_id()).await {
            Ok(rp) => {
                raw.connect(rp.remote_stream_id(), rp.relay_addr())?;
                let path = PathInfo {
                    kind: PathKind::Relayed,
                    remote_addr: rp.relay_addr(),
                    relay: Some(rp.relay_key()),
                };
                Ok((path, Arc::new(rp)))
            }
            Err(e) => {
                reason.relay = Some(format!("relay {} failed: {e}", relay.key.to_hex()));
                Err(ConnectError::NoPath(reason))
            }
        }
    }

    /// Sends one PEER_HOLEPUNCH through `via` (to reach the server at `peer`) and returns the
    /// server's decrypted answer and the server's address as that relay saw it.
    async fn holepunch_round(
        &self,
        plan: &PunchPlan,
        payload: &HolepunchPayload,
    ) -> Result<(HolepunchPayload, SocketAddrV4), String> {
        let nonce: [u8; 24] = random_bytes();
        let value = Holepunch {
            mode: Mode::FromClient,
            id: plan.id,
            payload: secretbox_seal(&plan.secret, &nonce, &payload.encode()),
            peer_address: Some(plan.server_relay.peer_address),
        }
        .encode();
        let req = UserRequest {
            to: plan.server_relay.relay_address,
            token: None,
            internal: false,
            command: commands::PEER_HOLEPUNCH,
            target: Some(plan.target),
            value: Some(value),
            // From the main socket: the relay tells the server this socket's NAT mapping.
            socket: Some(SocketKind::Server),
            retries: None,
        };
        let reply = tokio::time::timeout(HOLEPUNCH_ROUND_TIMEOUT, self.node.request(req))
            .await
            .map_err(|_| "the server's relay did not answer".to_string())?
            .map_err(|e| format!("the server's relay failed: {e}"))?;
        let hp = reply
            .value
            .as_deref()
            .and_then(|v| Holepunch::decode(v).ok())
            .ok_or_else(|| "the server sent no holepunch answer".to_string())?;
        let plain = secretbox_open(&plan.secret, &hp.payload)
            .map_err(|_| "the server's holepunch answer does not authenticate".to_string())?;
        let answer = HolepunchPayload::decode(&plain)
            .map_err(|_| "the server's holepunch answer is malformed".to_string())?;
        Ok((answer, hp.peer_address.unwrap_or(plan.server_address)))
    }

    /// Tells the server we stop punching (so it can take the relay at once).
    async fn abort_punch(&self, plan: &PunchPlan, round: u64) {
        let payload = HolepunchPayload {
            error: error_codes::ABORTED,
            round,
            ..HolepunchPayload::default()
        };
        if let Err(e) = self.holepunch_round(plan, &payload).await {
            debug!(error = %e, "holepunch abort not acknowledged");
        }
    }

    /// The client's holepunch (§3.8): probe round, punch round, then probing by strategy until
    /// a probe from the server arrives.
    async fn client_punch(
        &self,
        plan: &PunchPlan,
        local_nat: &NatSampler,
    ) -> Result<PunchWin, NoPathReason> {
        let local = local_nat.class();
        let mut reason = NoPathReason {
            local,
            remote: plan.remote_hint,
            punch: String::new(),
            relay: None,
        };
        if local == NatClass::Random && plan.remote_hint == NatClass::Random {
            reason.punch = "both NATs randomize ports".into();
            self.abort_punch(plan, 0).await;
            return Err(reason);
        }
        let addresses = local_nat.addresses();
        let mut hosts: Vec<Ipv4Addr> = vec![*plan.server_address.ip()];
        for a in plan
            .remote_addresses
            .iter()
            .chain([&plan.server_relay.peer_address])
        {
            if !hosts.contains(a.ip()) {
                hosts.push(*a.ip());
            }
        }
        let mut sockets = PunchSockets::new(self.server.clone(), self.probes.subscribe(), hosts);
        // Open our mapping towards the server (JS sends this with a low TTL).
        sockets.probe(0, plan.server_address).await;
        let mut round = 0u64;
        let mut probe = HolepunchPayload {
            firewall: local.to_wire(),
            round,
            addresses: addresses.clone(),
            remote_address: Some(plan.server_address),
            ..HolepunchPayload::default()
        };
        let (mut answer, mut peer) = self
            .holepunch_round(plan, &probe)
            .await
            .map_err(|e| with_punch(&reason, e))?;
        if answer.error == error_codes::NONE
            && NatClass::from_wire(answer.firewall) == NatClass::Unknown
        {
            // The server had not classified its NAT yet: give it a moment (JS waits 1 s).
            tokio::time::sleep(UNKNOWN_RETRY_PAUSE).await;
            round += 1;
            probe.round = round;
            (answer, peer) = self
                .holepunch_round(plan, &probe)
                .await
                .map_err(|e| with_punch(&reason, e))?;
        }
        reason.remote = NatClass::from_wire(answer.firewall);
        if answer.error != error_codes::NONE {
            return Err(with_punch(
                &reason,
                format!("the server aborted the holepunch (code {})", answer.error),
            ));
        }
        // A consistent server tells us where it is; open our mapping there too.
        if let Some(a) = answer.addresses.as_ref().and_then(|a| a.first())
            && *a != plan.server_address
            && a.port() != 0
        {
            sockets.probe(0, *a).await;
        }
        match Strategy::choose(local, reason.remote, None) {
            Strategy::BothRandom => {
                self.abort_punch(plan, round + 1).await;
                return Err(with_punch(&reason, "both NATs randomize ports".into()));
            }
            Strategy::Unknown => {
                self.abort_punch(plan, round + 1).await;
                return Err(with_punch(&reason, "a NAT could not be classified".into()));
            }
            _ => {}
        }
        // Punch round: prove our address (echo its token), ask it to prove its own.
        let token_secret: [u8; 32] = random_bytes();
        let our_token = address_token(&token_secret, *peer.ip());
        round += 1;
        let punch = HolepunchPayload {
            firewall: local.to_wire(),
            round,
            punching: true,
            addresses: addresses.clone(),
            token: Some(our_token),
            remote_token: answer.token,
            ..HolepunchPayload::default()
        };
        let (answer, _) = self
            .holepunch_round(plan, &punch)
            .await
            .map_err(|e| with_punch(&reason, e))?;
        if answer.error != error_codes::NONE {
            let why = if answer.error == error_codes::TRY_LATER {
                "the server is busy with another random-NAT punch (try later)".to_string()
            } else {
                format!("the server aborted the holepunch (code {})", answer.error)
            };
            return Err(with_punch(&reason, why));
        }
        if !answer.punching {
            return Err(with_punch(&reason, "the server does not punch".into()));
        }
        let verified_host = (answer.remote_token == Some(our_token)).then_some(*peer.ip());
        let remote_addrs: Vec<SocketAddrV4> = answer
            .addresses
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(std::iter::once(peer))
            .collect();
        let verified = verified_host.and_then(|h| {
            remote_addrs
                .iter()
                .find(|a| *a.ip() == h && a.port() != 0)
                .or_else(|| remote_addrs.iter().find(|a| *a.ip() == h))
                .copied()
        });
        let strategy = Strategy::choose(local, reason.remote, verified);
        peer = verified.unwrap_or(peer);
        debug!(?strategy, %peer, "client punching");
        let gate = strategy.is_random();
        if gate {
            let ok = self
                .random_punches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .try_begin(Instant::now());
            if !ok {
                return Err(with_punch(
                    &reason,
                    "another random-NAT punch is running on this node".into(),
                ));
            }
        }
        let result = probe_until_hit(&mut sockets, strategy, &remote_addrs, self.host, true).await;
        if gate {
            self.random_punches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end(Instant::now(), result.is_ok());
        }
        match result {
            Ok((socket, from)) => Ok(PunchWin {
                sockets,
                socket,
                from,
            }),
            Err(e) => Err(with_punch(&reason, e)),
        }
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
            .map_err(|_| ConnectError::Timeout)?
            .ok_or(ConnectError::Timeout)
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

fn with_punch(reason: &NoPathReason, punch: String) -> NoPathReason {
    NoPathReason {
        punch,
        ..reason.clone()
    }
}

/// The path of a connection made without punching.
pub(crate) fn direct_path(addr: SocketAddrV4) -> PathInfo {
    PathInfo {
        kind: PathKind::of_direct(SocketAddr::V4(addr)),
        remote_addr: SocketAddr::V4(addr),
        relay: None,
    }
}

/// Resolves to the first `Some` of the futures, or `None` when all gave `None`.
pub(crate) async fn first_some<T>(
    mut futs: Vec<futures::future::BoxFuture<'static, Option<T>>>,
) -> Option<T> {
    while !futs.is_empty() {
        let (r, _, rest) = select_all(futs).await;
        if r.is_some() {
            return r;
        }
        futs = rest;
    }
    None
}
