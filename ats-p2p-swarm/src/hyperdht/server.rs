//! The server role (npm `hyperdht` 6.34 `createServer`): listen on a key, answer handshakes
//! behind the key firewall, and bring each accepted handshake to a connection.
//!
//! [`HyperDht::listen`] announces the key (signed self-announce, refreshed every
//! [`REANNOUNCE_INTERVAL`]) and answers PEER_HANDSHAKE with Noise IK, deduplicated by msg1
//! bytes (identical msg2 for copies sent through several relays). The firewall decides on the
//! remote key *before* msg2: a refused key gets no answer. Each answered handshake then runs as
//! its own task (`SessionShell`), the thin async shell of a sans-io `ServerSession` (module
//! `session` has the rules), until its stream connects or it times out.
//!
//! This file is the I/O only: which handshakes are answered and which slot a PEER_HOLEPUNCH
//! goes to is decided by the sans-io `Listener` (module `listener`), what msg2 says by the
//! `responder`, everything after msg2 by the `ServerSession`.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

use super::crypto::holepunch_secret;
use super::driver::ServerEvent;
use super::endpoint::HyperDht;
use super::holepunch::NatSampler;
pub use super::listener::HANDSHAKE_CLEAR_WAIT;
use super::listener::{HandshakeVerdict, Listener, Slot};
use super::messages::{Handshake, Holepunch, RelayInfo};
use super::path::{Connection, PathInfo, PathKind};
use super::punch::{PunchSockets, next_hit};
pub use super::responder::MAX_PAYLOAD_RELAYS;
use super::responder::{Answer, Msg1, read_msg1};
use super::schedule::ProbeOp;
pub use super::session::{PUNCH_DURATION, SERVER_CONNECT_TIMEOUT};
use super::session::{
    RoundId, SESSION_QUEUE, ServerSession, SessionAction, SessionOutcome, SessionParams,
    SessionPath,
};
use super::terms::{ConnectError, Firewall, RelayMode};
use crate::dht::{IncomingRequest, hash};
use crate::keys::{KeyPair, PublicKey};
use crate::relay::{RelayError, RelayedPath};
use crate::secret_stream::SecretStream;
use crate::udx::UdxStream;
use crate::wait;
use futures::future::BoxFuture;

/// Self-announce refresh period (JS re-announces every ~5 min; relays forget after 20 min).
pub const REANNOUNCE_INTERVAL: Duration = Duration::from_secs(60);
/// Accepted connections queued before the application takes them.
const ACCEPT_QUEUE: usize = 16;

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

/// The channel to one handshake's session task: PEER_HOLEPUNCH rounds for its slot.
type SessionRounds = mpsc::Sender<(IncomingRequest, Holepunch)>;

async fn run_server(
    dht: Arc<HyperDht>,
    key_pair: KeyPair,
    firewall: Firewall,
    mut relays: Vec<RelayInfo>,
    mut events: mpsc::Receiver<ServerEvent>,
    accepted: mpsc::Sender<Connection>,
) {
    let target = hash(key_pair.public_key().as_bytes());
    let mut listener = Listener::new();
    let mut sessions: HashMap<Slot, SessionRounds> = HashMap::new();
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
                sessions.retain(|slot, tx| {
                    let open = !tx.is_closed();
                    if !open {
                        listener.handle_session_ended(*slot);
                    }
                    open
                });
                let (req, handshake) = match ev {
                    ServerEvent::Handshake { req, handshake } => (req, handshake),
                    ServerEvent::Holepunch { req, holepunch } => {
                        let slot = holepunch.id;
                        let open = listener.handle_holepunch(slot, now);
                        forget_sessions(&mut listener, &mut sessions);
                        match sessions.get(&slot).filter(|_| open) {
                            Some(tx) => {
                                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send((req, holepunch)) {
                                    debug!(slot, "holepunch session queue full: round dropped (the client resends)");
                                }
                            }
                            None => trace!(id = slot, "holepunch for an unknown slot"),
                        }
                        continue;
                    }
                };
                let verdict = listener.handle_handshake(&handshake.noise, now);
                forget_sessions(&mut listener, &mut sessions);
                let slot = match verdict {
                    HandshakeVerdict::Repeat(msg2) => {
                        let _ = dht.node.answer_handshake(req, handshake, msg2).await;
                        continue;
                    }
                    HandshakeVerdict::Ignore => continue,
                    HandshakeVerdict::Answer { slot } => slot,
                };
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
                let (msg2, session) = answer.unwrap_or_else(|e| {
                    debug!(error = %e, "handshake failed");
                    (None, None)
                });
                listener.handle_answered(slot, msg2, session.is_some(), Instant::now());
                forget_sessions(&mut listener, &mut sessions);
                if let Some(tx) = session {
                    sessions.insert(slot, tx);
                }
            }
        }
    }
}

/// Drops the channels of the slots the listener closed.
fn forget_sessions(listener: &mut Listener, sessions: &mut HashMap<Slot, SessionRounds>) {
    while let Some(slot) = listener.poll_forget() {
        sessions.remove(&slot);
    }
}

/// What answering one handshake needs from the server loop.
struct Responder<'a> {
    dht: &'a Arc<HyperDht>,
    key_pair: &'a KeyPair,
    firewall: &'a Firewall,
    relays: &'a [RelayInfo],
    accepted: &'a mpsc::Sender<Connection>,
    slot: Slot,
}

impl Responder<'_> {
    /// Runs the responder side of one handshake; returns msg2 (None when refused) and, for a
    /// handshake that goes on to connect and offered a holepunch, the channel to its session.
    async fn respond(
        self,
        req: IncomingRequest,
        handshake: Handshake,
    ) -> Result<(Option<Vec<u8>>, Option<SessionRounds>), ConnectError> {
        let dht = self.dht;
        let accepted = match read_msg1(self.key_pair, &handshake.noise, self.firewall)? {
            Msg1::Refused(pk) => {
                debug!(remote = %pk.to_hex(), "firewall refused key");
                return Ok((None, None));
            }
            Msg1::Accepted(a) => *a,
        };
        let raw = dht.create_stream()?;
        let local = dht.local_payload(raw.local_id(), true).await;
        let mode = dht.relay_mode();
        let ours = match mode {
            RelayMode::Disabled => None,
            _ => dht.propose_relay(&accepted.remote_key).await,
        };
        let Answer {
            payload,
            relay,
            punch,
            remote_id,
        } = accepted.answer(local, self.slot, self.relays, mode, ours);
        let (msg2, hs) = accepted.finish(&payload)?;
        let Some(remote_id) = remote_id else {
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
        let machine = ServerSession::new(
            SessionParams {
                secret: holepunch_secret(&hs.hash),
                local_id: raw.local_id(),
                relays: self.relays.to_vec(),
                relay,
                gate: dht.random_punches.clone(),
            },
            Instant::now(),
        );
        let shell = SessionShell {
            dht: dht.clone(),
            hs,
            raw: Some(raw),
            remote_id,
            key_pair: self.key_pair.clone(),
            accepted: self.accepted.clone(),
            machine,
            rounds: HashMap::new(),
            next_round: 0,
            sockets: None,
            streams: HashMap::new(),
            sampling: None,
            pairing: None,
            relayed: None,
        };
        tokio::spawn(shell.run(first, rx));
        Ok((Some(msg2), punch.then_some(tx)))
    }
}

/// The I/O of one answered handshake: drives its [`ServerSession`] until the stream connects.
struct SessionShell {
    dht: Arc<HyperDht>,
    hs: crate::noise::Handshake,
    raw: Option<UdxStream>,
    remote_id: u32,
    key_pair: KeyPair,
    accepted: mpsc::Sender<Connection>,
    machine: ServerSession,
    /// PEER_HOLEPUNCH requests waiting for the machine's answer.
    rounds: HashMap<RoundId, (IncomingRequest, Holepunch)>,
    next_round: RoundId,
    sockets: Option<PunchSockets>,
    /// Our stream on the birthday sockets a probe reached, by socket index.
    streams: HashMap<usize, UdxStream>,
    sampling: Option<BoxFuture<'static, NatSampler>>,
    pairing: Option<BoxFuture<'static, Result<RelayedPath, RelayError>>>,
    relayed: Option<RelayedPath>,
}

impl SessionShell {
    async fn run(
        mut self,
        first: Option<oneshot::Receiver<SocketAddr>>,
        mut holepunches: mpsc::Receiver<(IncomingRequest, Holepunch)>,
    ) {
        let local_id = self.raw.as_ref().map_or(0, UdxStream::local_id);
        let Some(mut first) = first else {
            debug!("too many streams waiting for their first packet");
            return;
        };
        let mut holepunches_open = true;
        // The first packet is reported once (a oneshot must not be polled again after that).
        let mut first_open = true;
        let outcome = loop {
            while let Some(action) = self.machine.poll_action() {
                self.execute(action).await;
            }
            if let Some(outcome) = self.machine.poll_outcome() {
                break outcome;
            }
            let timeout = self.machine.poll_timeout();
            tokio::select! {
                biased;
                from = &mut first, if first_open => match from {
                    Ok(from) => {
                        first_open = false;
                        self.machine.handle_first_packet(from, Instant::now());
                    }
                    Err(_) => break SessionOutcome::Failed("the node stopped".into()),
                },
                hit = next_hit(&mut self.sockets), if self.sockets.is_some() => match hit {
                    Some(hit) => self.machine.handle_hit(hit, Instant::now()),
                    None => {
                        self.sockets = None;
                        self.machine.handle_punch_closed(Instant::now());
                    }
                },
                paired = wait::optional(&mut self.pairing), if self.pairing.is_some() => {
                    self.pairing = None;
                    let result = match paired {
                        Ok(rp) => {
                            self.relayed = Some(rp);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    self.machine.handle_relay(result, Instant::now());
                }
                msg = holepunches.recv(), if holepunches_open => match msg {
                    Some((req, hp)) => {
                        let round = self.next_round;
                        self.next_round += 1;
                        let from = req.from;
                        self.machine.handle_holepunch(round, from, &hp, Instant::now());
                        self.rounds.insert(round, (req, hp));
                    }
                    None => holepunches_open = false,
                },
                nat = wait::optional(&mut self.sampling), if self.sampling.is_some() => {
                    self.sampling = None;
                    self.machine.handle_nat(nat, Instant::now());
                }
                () = wait::sleep_until(timeout), if timeout.is_some() => self.machine.handle_timeout(Instant::now()),
            }
        };
        // Answer (or drop) what the machine said last.
        while let Some(action) = self.machine.poll_action() {
            self.execute(action).await;
        }
        self.dht.forget_first_packet(local_id);
        self.connect(outcome);
    }

    /// Brings the outcome's stream to a connection.
    fn connect(&mut self, outcome: SessionOutcome) {
        let (stream, remote, path, keep): (_, _, _, Option<Arc<dyn Send + Sync>>) = match outcome {
            SessionOutcome::Connected(SessionPath::Main(path)) => {
                let Some(raw) = self.raw.take() else { return };
                (raw, (self.remote_id, path.remote_addr), path, None)
            }
            SessionOutcome::Connected(SessionPath::Socket { socket, from }) => {
                let Some(stream) = self.streams.remove(&socket) else {
                    return;
                };
                let keep = self
                    .sockets
                    .as_mut()
                    .and_then(|s| s.take(socket))
                    .map(|s| s as Arc<dyn Send + Sync>);
                let path = PathInfo {
                    kind: PathKind::Holepunched,
                    remote_addr: SocketAddr::V4(from),
                    relay: None,
                };
                (stream, (self.remote_id, SocketAddr::V4(from)), path, keep)
            }
            SessionOutcome::Connected(SessionPath::Relayed) => {
                let (Some(raw), Some(rp)) = (self.raw.take(), self.relayed.take()) else {
                    return;
                };
                let path = PathInfo {
                    kind: PathKind::Relayed,
                    remote_addr: rp.relay_addr(),
                    relay: Some(rp.relay_key()),
                };
                let remote = (rp.remote_stream_id(), rp.relay_addr());
                (
                    raw,
                    remote,
                    path,
                    Some(Arc::new(rp) as Arc<dyn Send + Sync>),
                )
            }
            SessionOutcome::Failed(why) => {
                debug!(why, "handshake did not connect");
                return;
            }
        };
        self.sockets = None;
        if let Err(e) = stream.connect(remote.0, remote.1) {
            debug!(error = %e, "stream connect failed");
            return;
        }
        start_responder(stream, self.hs.clone(), path, keep, self.accepted.clone());
    }

    async fn execute(&mut self, action: SessionAction) {
        match action {
            SessionAction::Answer { round, payload } => {
                let Some((req, hp)) = self.rounds.remove(&round) else {
                    return;
                };
                if let Err(e) = self.dht.node.answer_holepunch(req, hp, payload).await {
                    debug!(error = %e, "holepunch answer failed");
                }
            }
            SessionAction::Drop { round } => {
                self.rounds.remove(&round);
            }
            SessionAction::SampleNat { nodes } => {
                let dht = self.dht.clone();
                self.sampling = Some(Box::pin(async move { dht.sample_nat(&nodes).await }));
            }
            SessionAction::OpenPunch { hosts } => {
                self.sockets = Some(PunchSockets::new(
                    self.dht.server.clone(),
                    self.dht.probes.subscribe(),
                    hosts,
                ));
            }
            SessionAction::Probe(ProbeOp::Send { socket: 0, to }) => {
                if let Err(e) = self.dht.server.send_to(SocketAddr::V4(to), &[0]).await {
                    trace!(error = %e, %to, "probe send failed");
                }
            }
            SessionAction::Probe(op) => {
                let host = self.dht.host();
                let opened = match self.sockets.as_mut() {
                    Some(s) => s.execute(op, host).await,
                    None => false,
                };
                if !opened {
                    self.machine.handle_open_failed();
                }
            }
            SessionAction::CreateStreamOn { socket } => {
                let local_id = self.raw.as_ref().map_or(0, UdxStream::local_id);
                match self
                    .sockets
                    .as_ref()
                    .and_then(|s| s.create_stream_on(socket, local_id))
                {
                    Some(st) => {
                        self.streams.insert(socket, st);
                    }
                    None => self.machine.handle_stream_failed(socket),
                }
            }
            SessionAction::ClosePunch => {
                self.sockets = None;
                self.streams.clear();
            }
            SessionAction::PairRelay(relay) => {
                let dht = self.dht.clone();
                let key_pair = self.key_pair.clone();
                let local_id = self.raw.as_ref().map_or(0, UdxStream::local_id);
                self.pairing = Some(Box::pin(async move {
                    dht.pair_relay(&key_pair, relay, local_id).await
                }));
            }
        }
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
