//! The HyperDHT endpoint [`HyperDht`]: two UDX sockets shared by DHT RPC, holepunch probes and
//! UDX streams ([`UdxDatagrams`] routes what arrives), the NAT-class cache of the main socket,
//! the relay proposal, and our Noise payload. Connecting is in [`super::connect`] (client) and
//! listening in [`super::server`].

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::io::ReadBuf;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, trace};

use super::driver::{DatagramSocket, DhtConfig, DhtNode};
use super::error_codes;
use super::holepunch::{NAT_SAMPLES, NatClass, NatSampler, RandomPunchGate};
use super::messages::{NoisePayload, UdxInfo};
use super::terms::{ConnectError, PAYLOAD_VERSION, RelayChoice, RelayMode};
use crate::dht::{SocketKind, UserRequest};
use crate::keys::{KeyPair, PublicKey};
use crate::udx::{SocketEvent, UdxSocket, UdxStream};

/// How long a NAT classification may wait for the DHT nodes' pongs.
pub const NAT_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a socket's NAT classification is reused.
pub const NAT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Probe notifications buffered per subscriber (older ones are dropped; one is enough).
const PROBE_QUEUE: usize = 1024;
/// Most streams waiting for their first packet at once (per node).
pub(crate) const MAX_PENDING_STREAMS: usize = 1024;
/// How long a relay lookup's answer is reused.
const RELAY_CACHE_TTL: Duration = Duration::from_secs(60);

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
    pub(crate) random_punches: Arc<Mutex<RandomPunchGate>>,
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
            random_punches: Arc::default(),
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
