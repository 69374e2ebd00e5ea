//! The server role (npm `hyperdht` 6.34 `createServer`): listen on a key, answer handshakes
//! behind the key firewall, and bring each accepted handshake to a connection.
//!
//! [`HyperDht::listen`] announces the key (signed self-announce, refreshed every
//! [`REANNOUNCE_INTERVAL`]) and answers PEER_HANDSHAKE with Noise IK, deduplicated by msg1
//! bytes (identical msg2 for copies sent through several relays). The firewall decides on the
//! remote key *before* msg2: a refused key gets no answer. Each answered handshake then runs as
//! its own task (`HandshakeTask`) until its stream connects or it times out:
//! - the client's first UDX packet on our main socket connects the stream (direct, LAN, or a
//!   consistent-NAT punch where the client reaches our mapping);
//! - PEER_HOLEPUNCH rounds for its slot arrive on the task's queue: it classifies our NAT,
//!   verifies the client's address by token echo, and when the client punches, punches too by
//!   the strategy both classes call for, echoing the client's probes; with birthday sockets the
//!   stream is created on the socket a probe reached and connects on its first packet there.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

use super::connect::{
    ConnectError, Firewall, HyperDht, PAYLOAD_VERSION, ProbeSchedule, RelayChoice, RelayMode,
    direct_path, random_bytes,
};
use super::crypto::{holepunch_secret, ns, secretbox_open, secretbox_seal};
use super::driver::ServerEvent;
use super::holepunch::{NatClass, NatSampler, Strategy, address_token};
use super::messages::{
    Handshake, Holepunch, HolepunchInfo, HolepunchPayload, NoisePayload, RelayInfo,
};
use super::path::{Connection, PathInfo, PathKind};
use super::punch::{Hit, PunchSockets};
use super::{error_codes, firewall};
use crate::dht::{Id, IncomingRequest, hash};
use crate::keys::{KeyPair, PublicKey};
use crate::noise::{NoiseConfig, NoiseHandshake, Step};
use crate::relay::{RELAY_TIMEOUT, RelayError, RelayedPath};
use crate::secret_stream::SecretStream;
use crate::udx::UdxStream;
use futures::future::BoxFuture;

/// How long a server waits for the client's first UDX packet (JS waits 10 s).
pub const SERVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server keeps punching once the client asked it to (covers the longest client
/// budget: a JS client sprays random ports for ≈ 35 s).
pub const PUNCH_DURATION: Duration = Duration::from_secs(40);
/// How long a handshake's msg2 is kept for duplicates (JS `handshakeClearWait`).
pub const HANDSHAKE_CLEAR_WAIT: Duration = Duration::from_secs(10);
/// Self-announce refresh period (JS re-announces every ~5 min; relays forget after 20 min).
pub const REANNOUNCE_INTERVAL: Duration = Duration::from_secs(60);
/// Holepunch relays offered in a Noise payload (JS offers all of its announce relays, ≤ 20; a
/// few keep msg2 small and the client uses one).
pub const MAX_PAYLOAD_RELAYS: usize = 8;
/// Most handshakes remembered for deduplication at once (bounded memory under floods).
const MAX_HANDSHAKES: usize = 1024;
/// Accepted connections queued before the application takes them.
const ACCEPT_QUEUE: usize = 16;
/// Holepunch sessions (slots) a server keeps at once; older ones are dropped.
const MAX_PUNCH_SESSIONS: usize = 256;
/// PEER_HOLEPUNCH messages queued per session (the client sends a few rounds).
const SESSION_QUEUE: usize = 8;

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

impl HyperDht {
    /// Listens on `key_pair`: announces it and accepts connections from keys `firewall` allows.
    pub async fn listen(
        self: &Arc<Self>,
        key_pair: KeyPair,
        firewall: Firewall,
    ) -> Result<Server, ConnectError> {
        let pk = key_pair.public_key();
        let events = self.node.listen(pk.as_bytes()).await?;
        self.ready().await?;
        // Like JS `listen()`: resolve once the first self-announce finished.
        let target = hash(pk.as_bytes());
        let relays = self
            .node
            .announce_relays(target, &key_pair, Vec::new())
            .await?;
        debug!(relays = relays.len(), "listening");
        // Classify our NAT now, so the first handshake can already say RANDOM.
        {
            let dht = self.clone();
            let nodes: Vec<SocketAddrV4> = relays.iter().map(|r| r.relay_address).collect();
            tokio::spawn(async move {
                dht.sample_nat(&nodes).await;
            });
        }
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
}

struct Seen {
    at: Instant,
    msg2: Option<Vec<u8>>,
}

/// The run loop's handle on one handshake's task (its holepunch slot).
struct Session {
    at: Instant,
    tx: mpsc::Sender<(IncomingRequest, Holepunch)>,
}

async fn run_server(
    dht: Arc<HyperDht>,
    key_pair: KeyPair,
    firewall: Firewall,
    mut relays: Vec<RelayInfo>,
    mut events: mpsc::Receiver<ServerEvent>,
    accepted: mpsc::Sender<Connection>,
) {
    let target = hash(key_pair.public_key().as_bytes());
    let mut seen: HashMap<Vec<u8>, Seen> = HashMap::new();
    let mut sessions: HashMap<u64, Session> = HashMap::new();
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
                sessions.retain(|_, s| !s.tx.is_closed() && now.duration_since(s.at) < SERVER_CONNECT_TIMEOUT + PUNCH_DURATION);
                let (req, handshake) = match ev {
                    ServerEvent::Handshake { req, handshake } => (req, handshake),
                    ServerEvent::Holepunch { req, holepunch } => {
                        match sessions.get(&holepunch.id) {
                            Some(s) => {
                                let slot = holepunch.id;
                                if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send((req, holepunch)) {
                                    debug!(slot, "holepunch session queue full: round dropped (the client resends)");
                                }
                            }
                            None => trace!(id = holepunch.id, "holepunch for an unknown slot"),
                        }
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
                let answer = Responder {
                    dht: &dht,
                    key_pair: &key_pair,
                    firewall: &firewall,
                    relays: &relays,
                    accepted: &accepted,
                    slot,
                }
                .respond(req, handshake)
                .await;
                let msg2 = match answer {
                    Ok((m, session)) => {
                        if let Some(session) = session {
                            if sessions.len() >= MAX_PUNCH_SESSIONS
                                && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| *k) {
                                    sessions.remove(&oldest);
                                }
                            sessions.insert(slot, session);
                        }
                        m
                    }
                    Err(e) => {
                        debug!(error = %e, "handshake failed");
                        None
                    }
                };
                // Only a handshake that decrypted is remembered: junk cannot fill the table.
                if msg2.is_some() {
                    seen.insert(key, Seen { at: now, msg2 });
                }
            }
        }
    }
}

/// What answering one handshake needs from the server loop.
struct Responder<'a> {
    dht: &'a Arc<HyperDht>,
    key_pair: &'a KeyPair,
    firewall: &'a Firewall,
    relays: &'a [RelayInfo],
    accepted: &'a mpsc::Sender<Connection>,
    slot: u64,
}

impl Responder<'_> {
    /// Runs the responder side of one handshake; returns msg2 (None when refused) and, for a
    /// handshake that goes on to connect, the session handle of its holepunch slot.
    async fn respond(
        self,
        req: IncomingRequest,
        handshake: Handshake,
    ) -> Result<(Option<Vec<u8>>, Option<Session>), ConnectError> {
        let dht = self.dht;
        let prologue = ns::peer_handshake();
        let mut noise =
            NoiseHandshake::new(NoiseConfig::ik_responder(self.key_pair.clone(), &prologue))?;
        let client_payload = noise.read_message(&handshake.noise)?;
        let mut remote_key = None;
        if let Step::Verdict(pk) = noise.next_step() {
            remote_key = Some(pk);
            let allow = (self.firewall)(&pk);
            noise.handle_verdict(allow)?;
            if !allow {
                debug!(remote = %pk.to_hex(), "firewall refused key");
                return Ok((None, None));
            }
        }
        let Some(remote_key) = remote_key else {
            return Err(ConnectError::HandshakeFailed);
        };
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
                id: self.slot,
                relays: self
                    .relays
                    .iter()
                    .take(MAX_PAYLOAD_RELAYS)
                    .copied()
                    .collect(),
            });
        }
        // hyperdht's rule: the server's relay if it has one (it pairs as initiator), else the
        // client's (the client pairs as initiator).
        let relay = match dht.relay_mode() {
            RelayMode::Disabled => None,
            _ => match dht.propose_relay(&remote_key).await {
                Some(ours) => {
                    payload.relay_through = Some(ours.to_payload());
                    Some(ours)
                }
                None => RelayChoice::agree(dht.relay_mode(), None, cp.relay_through.as_ref()),
            },
        };
        let msg2 = noise.write_message(&payload.encode())?;
        let hs = noise.into_handshake()?;
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
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let task = HandshakeTask {
            dht: dht.clone(),
            secret: holepunch_secret(&hs.hash),
            hs,
            raw: Some(raw),
            remote_id,
            relays: self.relays.to_vec(),
            accepted: self.accepted.clone(),
            punch: ServerPunch::default(),
            relay,
            key_pair: self.key_pair.clone(),
            pairing: None,
        };
        tokio::spawn(task.run(first, rx));
        Ok((
            Some(msg2),
            punch.then(|| Session {
                at: Instant::now(),
                tx,
            }),
        ))
    }
}

/// The server's view of one holepunch.
#[derive(Default)]
struct ServerPunch {
    round: u64,
    remote_class: Option<NatClass>,
    remote_addresses: Vec<SocketAddrV4>,
    remote_punching: bool,
    verified_host: Option<Ipv4Addr>,
    local: Option<NatSampler>,
    token_secret: Option<[u8; 32]>,
    sockets: Option<PunchSockets>,
    schedule: Option<ProbeSchedule>,
    holds_gate: bool,
    /// A holepunch round arrived (a first packet from a public address is then punched).
    rounds_seen: bool,
    /// Streams created on birthday sockets a probe reached, by socket index.
    streams: HashMap<usize, UdxStream>,
}

/// One answered handshake until its stream connects.
struct HandshakeTask {
    dht: Arc<HyperDht>,
    hs: crate::noise::Handshake,
    secret: Id,
    raw: Option<UdxStream>,
    remote_id: u32,
    relays: Vec<RelayInfo>,
    accepted: mpsc::Sender<Connection>,
    punch: ServerPunch,
    /// The relay both sides fall back to, if any.
    relay: Option<RelayChoice>,
    /// Our key (we connect to the relay with it).
    key_pair: KeyPair,
    /// The relay pairing, once the punch failed.
    pairing: Option<BoxFuture<'static, Result<RelayedPath, RelayError>>>,
}

impl HandshakeTask {
    /// Falls back to the relay (when there is one and the pairing has not started).
    fn start_relay(&mut self, why: &str) {
        if self.pairing.is_some() {
            return;
        }
        let (Some(relay), Some(raw)) = (self.relay, self.raw.as_ref()) else {
            debug!(why, "no path and no relay");
            return;
        };
        debug!(why, relay = %relay.key.to_hex(), "falling back to the relay");
        let dht = self.dht.clone();
        let key_pair = self.key_pair.clone();
        let local_id = raw.local_id();
        self.pairing = Some(Box::pin(async move {
            dht.pair_relay(&key_pair, relay, local_id).await
        }));
    }

    async fn run(
        mut self,
        first: Option<oneshot::Receiver<SocketAddr>>,
        mut holepunches: mpsc::Receiver<(IncomingRequest, Holepunch)>,
    ) {
        let local_id = self.raw.as_ref().map_or(0, UdxStream::local_id);
        let mut deadline = tokio::time::Instant::now() + SERVER_CONNECT_TIMEOUT;
        let Some(mut first) = first else {
            debug!("too many streams waiting for their first packet");
            return;
        };
        let mut step_wait: Option<Duration> = None;
        let mut connected = false;
        let mut holepunches_open = true;
        loop {
            if step_wait.is_none()
                && let Some(schedule) = self.punch.schedule.as_mut()
            {
                step_wait = schedule.next_step().map(|s| s.wait());
                if step_wait.is_none() {
                    let why = schedule.exhausted_reason();
                    self.stop_punching(false);
                    self.start_relay(&why);
                    deadline = deadline.max(tokio::time::Instant::now() + RELAY_TIMEOUT);
                }
            }
            let pairing = self.pairing.as_mut();
            let has_pairing = pairing.is_some();
            let sockets = self.punch.sockets.as_mut();
            let has_sockets = sockets.is_some();
            tokio::select! {
                biased;
                from = &mut first => {
                    let Ok(from) = from else { break };
                    let Some(raw) = self.raw.take() else { break };
                    let path = match from {
                        SocketAddr::V4(a)
                            if (self.punch.schedule.is_some() || self.punch.rounds_seen)
                                && PathKind::of_direct(from) == PathKind::Direct =>
                        {
                            PathInfo {
                                kind: PathKind::Holepunched,
                                remote_addr: SocketAddr::V4(a),
                                relay: None,
                            }
                        }
                        SocketAddr::V4(a) => direct_path(a),
                        other => PathInfo { kind: PathKind::Direct, remote_addr: other, relay: None },
                    };
                    if raw.connect(self.remote_id, from).is_ok() {
                        start_responder(raw, self.hs.clone(), path, None, self.accepted.clone());
                        connected = true;
                    }
                    break;
                }
                hit = async { match sockets { Some(s) => s.next_hit().await, None => None } }, if has_sockets => {
                    match hit {
                        Some(Hit::Probe { socket, from }) => {
                            // Non-initiator: answer every probe from the peer (JS echoes too).
                            if let Some(s) = self.punch.sockets.as_ref() {
                                s.probe(socket, from).await;
                                if socket != 0 && !self.punch.streams.contains_key(&socket)
                                    && let Some(st) = s.create_stream_on(socket, local_id) {
                                        self.punch.streams.insert(socket, st);
                                    }
                            }
                        }
                        Some(Hit::FirstPacket { socket, local_id: id, from }) if id == local_id => {
                            let Some(stream) = self.punch.streams.remove(&socket) else { continue };
                            let keep = self
                                .punch
                                .sockets
                                .as_mut()
                                .and_then(|s| s.take(socket))
                                .map(|s| s as Arc<dyn Send + Sync>);
                            if stream.connect(self.remote_id, SocketAddr::V4(from)).is_ok() {
                                let path = PathInfo {
                                    kind: PathKind::Holepunched,
                                    remote_addr: SocketAddr::V4(from),
                                    relay: None,
                                };
                                start_responder(stream, self.hs.clone(), path, keep, self.accepted.clone());
                                connected = true;
                            }
                            break;
                        }
                        Some(Hit::FirstPacket { .. }) => {}
                        None => {
                            self.stop_punching(false);
                        }
                    }
                }
                paired = async { match pairing { Some(p) => p.await, None => Err(RelayError::ChannelClosed) } }, if has_pairing => {
                    self.pairing = None;
                    match paired {
                        Ok(rp) => {
                            let Some(raw) = self.raw.take() else { break };
                            if raw.connect(rp.remote_stream_id(), rp.relay_addr()).is_ok() {
                                let path = PathInfo {
                                    kind: PathKind::Relayed,
                                    remote_addr: rp.relay_addr(),
                                    relay: Some(rp.relay_key()),
                                };
                                start_responder(raw, self.hs.clone(), path, Some(Arc::new(rp)), self.accepted.clone());
                                connected = true;
                            }
                            break;
                        }
                        Err(e) => {
                            debug!(error = %e, "relay pairing failed");
                            break;
                        }
                    }
                }
                msg = holepunches.recv(), if holepunches_open => {
                    let Some((req, hp)) = msg else {
                        holepunches_open = false;
                        continue;
                    };
                    if self.on_holepunch(req, hp).await {
                        deadline = deadline.max(tokio::time::Instant::now() + PUNCH_DURATION);
                    }
                    if self.pairing.is_some() {
                        deadline = deadline.max(tokio::time::Instant::now() + RELAY_TIMEOUT);
                    }
                }
                () = tokio::time::sleep(step_wait.unwrap_or(Duration::from_secs(3600))), if step_wait.is_some() => {
                    step_wait = None;
                    let host = self.dht.host();
                    if let (Some(schedule), Some(sockets)) = (self.punch.schedule.as_mut(), self.punch.sockets.as_mut()) {
                        schedule.run_step(sockets, host).await;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    debug!("client never sent its first packet");
                    break;
                }
            }
        }
        self.dht.forget_first_packet(local_id);
        self.stop_punching(connected);
    }

    fn stop_punching(&mut self, connected: bool) {
        self.punch.schedule = None;
        self.punch.sockets = None;
        self.punch.streams.clear();
        if std::mem::take(&mut self.punch.holds_gate) {
            self.dht
                .random_punches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end(Instant::now(), connected);
        }
    }

    /// Answers one PEER_HOLEPUNCH round (JS `Server._onpeerholepunch`). Returns true when the
    /// punching started with this round.
    async fn on_holepunch(&mut self, req: IncomingRequest, hp: Holepunch) -> bool {
        // The relay tells us the client's address as it saw it (its NAT mapping).
        let Some(peer) = hp.peer_address else {
            return false;
        };
        let Ok(plain) = secretbox_open(&self.secret, &hp.payload) else {
            debug!("holepunch payload does not authenticate");
            return false;
        };
        let Ok(remote) = HolepunchPayload::decode(&plain) else {
            return false;
        };
        let token_secret = *self.punch.token_secret.get_or_insert_with(random_bytes);
        let token = address_token(&token_secret, *peer.ip());
        let from_our_relay = self.relays.iter().any(|r| r.relay_address == req.from);
        if remote.error != error_codes::NONE {
            debug!(code = remote.error, "client aborted the holepunch");
            self.stop_punching(false);
            self.start_relay("the client aborted the holepunch");
            let reply = self.abort_payload(error_codes::ABORTED);
            answer(&self.dht, &self.secret, req, hp, &reply).await;
            return false;
        }
        let echoed = from_our_relay && remote.remote_token == Some(token);
        if remote.round >= self.punch.round {
            self.punch.round = remote.round;
            self.punch.remote_class = Some(NatClass::from_wire(remote.firewall));
            self.punch.remote_addresses = remote.addresses.clone().unwrap_or_default();
            self.punch.remote_punching = remote.punching;
            self.punch.rounds_seen = true;
            if echoed {
                self.punch.verified_host = Some(*peer.ip());
            }
        }
        if self.punch.local.is_none() {
            let nodes: Vec<SocketAddrV4> = self.relays.iter().map(|r| r.relay_address).collect();
            self.punch.local = Some(self.dht.sample_nat(&nodes).await);
        }
        let Some(local_nat) = self.punch.local.as_mut() else {
            return false;
        };
        local_nat.freeze();
        let local = local_nat.class();
        let local_addresses = local_nat.addresses();
        // Fast mode: the client opened a session to our address; answer it at once.
        if matches!(local, NatClass::Consistent | NatClass::Open)
            && remote
                .remote_address
                .is_some_and(|a| local_addresses.as_ref().is_some_and(|l| l.contains(&a)))
            && let Err(e) = self.dht.server.send_to(SocketAddr::V4(peer), &[0]).await
        {
            trace!(error = %e, "fast-mode probe failed");
        }
        let mut started = false;
        if self.punch.remote_punching && self.punch.schedule.is_none() {
            let mut remote_addrs = self.punch.remote_addresses.clone();
            if !remote_addrs.contains(&peer) {
                remote_addrs.push(peer);
            }
            let verified = self.punch.verified_host.and_then(|h| {
                remote_addrs
                    .iter()
                    .find(|a| *a.ip() == h && a.port() != 0)
                    .or_else(|| remote_addrs.iter().find(|a| *a.ip() == h))
                    .copied()
            });
            let remote_class = self.punch.remote_class.unwrap_or(NatClass::Unknown);
            let strategy = Strategy::choose(local, remote_class, verified);
            debug!(?strategy, %peer, "server punching");
            match strategy {
                Strategy::Consistent | Strategy::RandomPorts { .. } | Strategy::Birthday { .. } => {
                    if strategy.is_random() {
                        let ok = self
                            .dht
                            .random_punches
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .try_begin(Instant::now());
                        if !ok {
                            self.start_relay("another random punch is running");
                            let reply = self.abort_payload(error_codes::TRY_LATER);
                            answer(&self.dht, &self.secret, req, hp, &reply).await;
                            return false;
                        }
                        self.punch.holds_gate = true;
                    }
                    let mut hosts: Vec<Ipv4Addr> = vec![*peer.ip()];
                    for a in &remote_addrs {
                        if !hosts.contains(a.ip()) {
                            hosts.push(*a.ip());
                        }
                    }
                    self.punch.sockets = Some(PunchSockets::new(
                        self.dht.server.clone(),
                        self.dht.probes.subscribe(),
                        hosts,
                    ));
                    self.punch.schedule = Some(ProbeSchedule::new(strategy, remote_addrs));
                    started = true;
                }
                _ => {
                    self.start_relay("no punch strategy for these NATs");
                    let reply = self.abort_payload(error_codes::ABORTED);
                    answer(&self.dht, &self.secret, req, hp, &reply).await;
                    return false;
                }
            }
        }
        let reply = HolepunchPayload {
            error: error_codes::NONE,
            firewall: local.to_wire(),
            round: self.punch.round,
            connected: false,
            punching: self.punch.schedule.is_some(),
            addresses: local_addresses,
            remote_address: None,
            token: from_our_relay.then_some(token),
            remote_token: remote.token,
        };
        answer(&self.dht, &self.secret, req, hp, &reply).await;
        started
    }

    fn abort_payload(&self, error: u64) -> HolepunchPayload {
        HolepunchPayload {
            error,
            firewall: firewall::UNKNOWN,
            round: self.punch.round,
            ..HolepunchPayload::default()
        }
    }
}

/// Sends a holepunch answer sealed with the session's secret.
async fn answer(
    dht: &HyperDht,
    secret: &Id,
    req: IncomingRequest,
    hp: Holepunch,
    payload: &HolepunchPayload,
) {
    let nonce: [u8; 24] = random_bytes();
    let sealed = secretbox_seal(secret, &nonce, &payload.encode());
    if let Err(e) = dht.node.answer_holepunch(req, hp, sealed).await {
        debug!(error = %e, "holepunch answer failed");
    }
}

fn start_responder(
    raw: UdxStream,
    hs: crate::noise::Handshake,
    path: PathInfo,
    keep: Option<Arc<dyn Send + Sync>>,
    accepted: mpsc::Sender<Connection>,
) {
    tokio::spawn(async move {
        match SecretStream::from_handshake(raw, hs).await {
            Ok(c) => {
                let conn = Connection::new(c, path);
                let conn = match keep {
                    Some(g) => conn.keep(g),
                    None => conn,
                };
                let _ = accepted.send(conn).await;
            }
            Err(e) => debug!(error = %e, "secret stream setup failed"),
        }
    });
}
