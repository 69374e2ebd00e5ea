//! One answered handshake on the server side until its stream connects, as a sans-io state
//! machine: [`ServerSession`] (npm `hyperdht` 6.34 `Server._onpeerholepunch` and the wait for the
//! client's first packet). The server's shell ([`super::server`]) feeds it the client's first
//! UDX packet, PEER_HOLEPUNCH rounds for its slot, the NAT sample, punch-socket hits, the relay
//! pairing and timer expiries, and executes its [`SessionAction`]s.
//!
//! - The client's first UDX packet on our main socket connects the stream (direct, LAN, or a
//!   consistent-NAT punch where the client reached our mapping).
//! - Each PEER_HOLEPUNCH round is answered: it classifies our NAT, verifies the client's address
//!   by token echo, and when the client punches, punches too by the [`Strategy`] both classes
//!   call for, echoing the client's probes; with birthday sockets the stream is created on the
//!   socket a probe reached and connects on its first packet there.
//! - When the punch fails or the client aborts, the agreed blind relay pairs the stream.

use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use super::connect::{RelayChoice, direct_path, random_bytes};
use super::crypto::{secretbox_open, secretbox_seal};
use super::holepunch::{NatClass, NatSampler, RandomPunchGate, Strategy, address_token};
use super::messages::{Holepunch, HolepunchPayload, RelayInfo};
use super::path::{PathInfo, PathKind};
use super::punch::Hit;
use super::schedule::{ProbeOp, ProbeSchedule};
use super::{error_codes, firewall};
use crate::dht::Id;
use crate::relay::RELAY_TIMEOUT;

/// How long a server waits for the client's first UDX packet (JS waits 10 s).
pub const SERVER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server keeps punching once the client asked it to (covers the longest client
/// budget: a JS client sprays random ports for ≈ 35 s).
pub const PUNCH_DURATION: Duration = Duration::from_secs(40);
/// PEER_HOLEPUNCH rounds held while our NAT is being classified (the client sends a few).
pub(crate) const SESSION_QUEUE: usize = 8;

/// Identifies one PEER_HOLEPUNCH request the shell holds until the machine answers or drops it.
pub(crate) type RoundId = u64;

/// Something [`ServerSession`] asks its shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionAction {
    /// Answer PEER_HOLEPUNCH request `round` with this sealed payload.
    Answer {
        /// The request.
        round: RoundId,
        /// The sealed [`HolepunchPayload`].
        payload: Vec<u8>,
    },
    /// Forget request `round` without an answer (it was not for us, or was junk).
    Drop {
        /// The request.
        round: RoundId,
    },
    /// Classify our main socket's NAT with these nodes; answer with
    /// [`ServerSession::handle_nat`].
    SampleNat {
        /// The nodes we announced to.
        nodes: Vec<SocketAddrV4>,
    },
    /// Open the punch sockets (only probes from `hosts` count); report hits with
    /// [`ServerSession::handle_hit`].
    OpenPunch {
        /// The client's hosts.
        hosts: Vec<Ipv4Addr>,
    },
    /// Send a probe (socket 0, the main socket, works without punch sockets).
    Probe(ProbeOp),
    /// Create our stream on punch socket `socket` (so its first packet is reported there).
    CreateStreamOn {
        /// The punch socket.
        socket: usize,
    },
    /// Close the punch sockets (the punch stopped).
    ClosePunch,
    /// Pair our stream through this relay; answer with [`ServerSession::handle_relay`].
    PairRelay(RelayChoice),
}

/// Where the session's stream connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionPath {
    /// On the main socket, with this path.
    Main(PathInfo),
    /// On birthday socket `socket`, from `from` (holepunched).
    Socket {
        /// The punch socket the stream lives on.
        socket: usize,
        /// The client's punched address.
        from: SocketAddrV4,
    },
    /// Through the relay (the shell holds the pairing).
    Relayed,
}

/// The end of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionOutcome {
    /// The stream can connect on this path.
    Connected(SessionPath),
    /// No connection: why.
    Failed(String),
}

/// What a session needs to start.
#[derive(Debug, Clone)]
pub(crate) struct SessionParams {
    /// Keys the holepunch payloads (from the Noise handshake hash).
    pub(crate) secret: Id,
    /// Our stream's id on the main socket.
    pub(crate) local_id: u32,
    /// The nodes we announced to (holepunch relays and NAT samplers).
    pub(crate) relays: Vec<RelayInfo>,
    /// The relay both sides fall back to, if any.
    pub(crate) relay: Option<RelayChoice>,
    /// The node's random-punch limit, shared with its other punches.
    pub(crate) gate: Arc<Mutex<RandomPunchGate>>,
}

/// A PEER_HOLEPUNCH round that waits for our NAT class.
#[derive(Debug)]
struct Queued {
    round: RoundId,
    from: SocketAddrV4,
    peer: SocketAddrV4,
    remote: HolepunchPayload,
}

/// One answered handshake, server side.
#[derive(Debug)]
pub(crate) struct ServerSession {
    params: SessionParams,
    actions: VecDeque<SessionAction>,
    outcome: Option<SessionOutcome>,
    finished: bool,
    deadline: Instant,
    token_secret: [u8; 32],
    /// Highest round seen.
    round: u64,
    remote_class: Option<NatClass>,
    remote_addresses: Vec<SocketAddrV4>,
    remote_punching: bool,
    verified_host: Option<Ipv4Addr>,
    /// A holepunch round arrived (a first packet from a public address is then punched).
    rounds_seen: bool,
    local: Option<NatSampler>,
    sampling: bool,
    queued: VecDeque<Queued>,
    schedule: Option<ProbeSchedule>,
    next_step: Option<Instant>,
    /// Punch sockets opened (main included).
    sockets: usize,
    holds_gate: bool,
    /// Birthday sockets our stream was created on.
    streams: HashSet<usize>,
    pairing: bool,
    /// A first packet that came while the relay pairing ran: the path if the pairing fails.
    first_while_pairing: Option<PathInfo>,
}

impl ServerSession {
    /// A session whose msg2 was just sent.
    pub(crate) fn new(params: SessionParams, now: Instant) -> Self {
        Self {
            params,
            actions: VecDeque::new(),
            outcome: None,
            finished: false,
            deadline: now + SERVER_CONNECT_TIMEOUT,
            token_secret: random_bytes(),
            round: 0,
            remote_class: None,
            remote_addresses: Vec::new(),
            remote_punching: false,
            verified_host: None,
            rounds_seen: false,
            local: None,
            sampling: false,
            queued: VecDeque::new(),
            schedule: None,
            next_step: None,
            sockets: 1,
            holds_gate: false,
            streams: HashSet::new(),
            pairing: false,
            first_while_pairing: None,
        }
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<SessionAction> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        Some(
            self.next_step
                .map_or(self.deadline, |s| s.min(self.deadline)),
        )
    }

    /// The end, once.
    pub(crate) fn poll_outcome(&mut self) -> Option<SessionOutcome> {
        self.outcome.take()
    }

    fn done(&self) -> bool {
        self.finished
    }

    /// The client's first UDX packet reached our stream on the main socket. While the relay
    /// pairing runs, that packet is most likely the client's first one through the relay (it
    /// learns of the pairing first): the pairing's answer decides, and this path is used only
    /// if the pairing fails. Taking it at once would drop the pairing and with it the relay's
    /// forwarding of this very stream.
    pub(crate) fn handle_first_packet(&mut self, from: SocketAddr, now: Instant) {
        if self.done() {
            return;
        }
        let punched = self.schedule.is_some() || self.rounds_seen;
        let path = match from {
            SocketAddr::V4(_) if punched && PathKind::of_direct(from) == PathKind::Direct => {
                PathInfo {
                    kind: PathKind::Holepunched,
                    remote_addr: from,
                    relay: None,
                }
            }
            SocketAddr::V4(a) => direct_path(a),
            other => PathInfo {
                kind: PathKind::Direct,
                remote_addr: other,
                relay: None,
            },
        };
        if self.pairing {
            self.first_while_pairing = Some(path);
            return;
        }
        self.finish(SessionOutcome::Connected(SessionPath::Main(path)), now);
    }

    /// Something a punch socket saw.
    pub(crate) fn handle_hit(&mut self, hit: Hit, now: Instant) {
        if self.done() || self.schedule.is_none() {
            return;
        }
        match hit {
            Hit::Probe { socket, from } => {
                // Non-initiator: answer every probe from the peer (JS echoes too).
                self.actions
                    .push_back(SessionAction::Probe(ProbeOp::Send { socket, to: from }));
                if socket != 0 && self.streams.insert(socket) {
                    self.actions
                        .push_back(SessionAction::CreateStreamOn { socket });
                }
            }
            Hit::FirstPacket {
                socket,
                local_id,
                from,
            } if local_id == self.params.local_id && self.streams.contains(&socket) => {
                self.finish(
                    SessionOutcome::Connected(SessionPath::Socket { socket, from }),
                    now,
                );
            }
            Hit::FirstPacket { .. } => {}
        }
    }

    /// Our stream could not be created on punch socket `socket`.
    pub(crate) fn handle_stream_failed(&mut self, socket: usize) {
        self.streams.remove(&socket);
    }

    /// A birthday socket could not be opened.
    pub(crate) fn handle_open_failed(&mut self) {
        self.sockets = self.sockets.saturating_sub(1).max(1);
        if let Some(s) = self.schedule.as_mut() {
            s.handle_open_failed();
        }
    }

    /// The punch sockets stopped reporting.
    pub(crate) fn handle_punch_closed(&mut self, now: Instant) {
        self.stop_punching(false, now);
    }

    /// Our main socket's NAT class, as sampled: the held rounds are answered now.
    pub(crate) fn handle_nat(&mut self, nat: NatSampler, now: Instant) {
        self.sampling = false;
        if self.local.is_none() {
            self.local = Some(nat);
        }
        while let Some(q) = self.queued.pop_front() {
            if self.done() {
                self.actions
                    .push_back(SessionAction::Drop { round: q.round });
                continue;
            }
            self.answer_round(q, now);
        }
    }

    /// The relay pairing's result (`Err`: why it failed).
    pub(crate) fn handle_relay(&mut self, result: Result<(), String>, now: Instant) {
        self.pairing = false;
        if self.done() {
            return;
        }
        match result {
            Ok(()) => self.finish(SessionOutcome::Connected(SessionPath::Relayed), now),
            Err(e) => match self.first_while_pairing.take() {
                Some(path) => {
                    debug!(error = %e, "relay pairing failed; the client's packet came directly");
                    self.finish(SessionOutcome::Connected(SessionPath::Main(path)), now);
                }
                None => self.finish(
                    SessionOutcome::Failed(format!("relay pairing failed: {e}")),
                    now,
                ),
            },
        }
    }

    /// Timer expiry: call at (or after) [`Self::poll_timeout`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.done() {
            return;
        }
        if now >= self.deadline {
            self.finish(
                SessionOutcome::Failed("the client never sent its first packet".into()),
                now,
            );
            return;
        }
        if self.next_step.is_some_and(|t| now >= t) {
            self.next_step = None;
            if let Some(schedule) = self.schedule.as_mut() {
                for op in schedule.run_step(self.sockets, &mut rand::rngs::OsRng) {
                    let opens = matches!(op, ProbeOp::OpenAndSend { .. });
                    self.actions.push_back(SessionAction::Probe(op));
                    if opens {
                        // Our stream waits on every socket we probe from: the client may answer
                        // a probe with its first UDX packet before any probe of its own reaches
                        // that socket, and that packet must find the stream.
                        let socket = self.sockets;
                        self.sockets += 1;
                        if self.streams.insert(socket) {
                            self.actions
                                .push_back(SessionAction::CreateStreamOn { socket });
                        }
                    }
                }
            }
            self.schedule_next(now);
        }
    }

    /// One PEER_HOLEPUNCH round for our slot (JS `Server._onpeerholepunch`): `from` is the
    /// relay that forwarded it.
    pub(crate) fn handle_holepunch(
        &mut self,
        round: RoundId,
        from: SocketAddrV4,
        hp: &Holepunch,
        now: Instant,
    ) {
        if self.done() {
            self.actions.push_back(SessionAction::Drop { round });
            return;
        }
        // The relay tells us the client's address as it saw it (its NAT mapping).
        let remote = hp.peer_address.and_then(|peer| {
            let plain = secretbox_open(&self.params.secret, &hp.payload).ok()?;
            Some((peer, HolepunchPayload::decode(&plain).ok()?))
        });
        let Some((peer, remote)) = remote else {
            debug!("holepunch round without an address or that does not authenticate");
            self.actions.push_back(SessionAction::Drop { round });
            return;
        };
        if remote.error != error_codes::NONE {
            debug!(code = remote.error, "client aborted the holepunch");
            self.stop_punching(false, now);
            self.start_relay("the client aborted the holepunch", now);
            let reply = self.abort_payload(error_codes::ABORTED);
            self.answer(round, &reply);
            return;
        }
        let q = Queued {
            round,
            from,
            peer,
            remote,
        };
        if self.local.is_some() {
            self.answer_round(q, now);
            return;
        }
        if self.queued.len() >= SESSION_QUEUE {
            debug!("holepunch rounds queue full: round dropped (the client resends)");
            self.actions.push_back(SessionAction::Drop { round });
            return;
        }
        self.queued.push_back(q);
        if !self.sampling {
            self.sampling = true;
            let nodes = self.params.relays.iter().map(|r| r.relay_address).collect();
            self.actions.push_back(SessionAction::SampleNat { nodes });
        }
    }

    fn answer_round(&mut self, q: Queued, now: Instant) {
        let Queued {
            round,
            from,
            peer,
            remote,
        } = q;
        let token = address_token(&self.token_secret, *peer.ip());
        let from_our_relay = self.params.relays.iter().any(|r| r.relay_address == from);
        let echoed = from_our_relay && remote.remote_token == Some(token);
        if remote.round >= self.round {
            self.round = remote.round;
            self.remote_class = Some(NatClass::from_wire(remote.firewall));
            self.remote_addresses = remote.addresses.clone().unwrap_or_default();
            self.remote_punching = remote.punching;
            self.rounds_seen = true;
            if echoed {
                self.verified_host = Some(*peer.ip());
            }
        }
        let Some(local_nat) = self.local.as_mut() else {
            self.actions.push_back(SessionAction::Drop { round });
            return;
        };
        local_nat.freeze();
        let local = local_nat.class();
        let local_addresses = local_nat.addresses();
        // Fast mode: the client opened a session to our address; answer it at once.
        if matches!(local, NatClass::Consistent | NatClass::Open)
            && remote
                .remote_address
                .is_some_and(|a| local_addresses.as_ref().is_some_and(|l| l.contains(&a)))
        {
            self.actions.push_back(SessionAction::Probe(ProbeOp::Send {
                socket: 0,
                to: peer,
            }));
        }
        if self.remote_punching && self.schedule.is_none() {
            let mut remote_addrs = self.remote_addresses.clone();
            if !remote_addrs.contains(&peer) {
                remote_addrs.push(peer);
            }
            let verified = self.verified_host.and_then(|h| {
                remote_addrs
                    .iter()
                    .find(|a| *a.ip() == h && a.port() != 0)
                    .or_else(|| remote_addrs.iter().find(|a| *a.ip() == h))
                    .copied()
            });
            let remote_class = self.remote_class.unwrap_or(NatClass::Unknown);
            let strategy = Strategy::choose(local, remote_class, verified);
            debug!(?strategy, %peer, "server punching");
            match strategy {
                Strategy::Consistent | Strategy::RandomPorts { .. } | Strategy::Birthday { .. } => {
                    if strategy.is_random() {
                        let ok = self
                            .params
                            .gate
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .try_begin(now);
                        if !ok {
                            self.start_relay("another random punch is running", now);
                            let reply = self.abort_payload(error_codes::TRY_LATER);
                            self.answer(round, &reply);
                            return;
                        }
                        self.holds_gate = true;
                    }
                    let mut hosts: Vec<Ipv4Addr> = vec![*peer.ip()];
                    for a in &remote_addrs {
                        if !hosts.contains(a.ip()) {
                            hosts.push(*a.ip());
                        }
                    }
                    self.actions.push_back(SessionAction::OpenPunch { hosts });
                    self.schedule = Some(ProbeSchedule::new(strategy, remote_addrs));
                    self.deadline = self.deadline.max(now + PUNCH_DURATION);
                    self.schedule_next(now);
                }
                _ => {
                    self.start_relay("no punch strategy for these NATs", now);
                    let reply = self.abort_payload(error_codes::ABORTED);
                    self.answer(round, &reply);
                    return;
                }
            }
        }
        let reply = HolepunchPayload {
            error: error_codes::NONE,
            firewall: local.to_wire(),
            round: self.round,
            connected: false,
            punching: self.schedule.is_some(),
            addresses: local_addresses,
            remote_address: None,
            token: from_our_relay.then_some(token),
            remote_token: remote.token,
        };
        self.answer(round, &reply);
    }

    /// Plans the next probe step, or ends the punch when the budget is spent.
    fn schedule_next(&mut self, now: Instant) {
        let Some(schedule) = self.schedule.as_mut() else {
            return;
        };
        match schedule.next_wait() {
            Some(wait) => self.next_step = Some(now + wait),
            None => {
                let why = schedule.exhausted_reason();
                self.stop_punching(false, now);
                self.start_relay(&why, now);
            }
        }
    }

    fn answer(&mut self, round: RoundId, payload: &HolepunchPayload) {
        let nonce: [u8; 24] = random_bytes();
        let sealed = secretbox_seal(&self.params.secret, &nonce, &payload.encode());
        self.actions.push_back(SessionAction::Answer {
            round,
            payload: sealed,
        });
    }

    fn abort_payload(&self, error: u64) -> HolepunchPayload {
        HolepunchPayload {
            error,
            firewall: firewall::UNKNOWN,
            round: self.round,
            ..HolepunchPayload::default()
        }
    }

    /// Falls back to the relay (when there is one and the pairing has not started).
    fn start_relay(&mut self, why: &str, now: Instant) {
        if self.pairing {
            return;
        }
        let Some(relay) = self.params.relay else {
            debug!(why, "no path and no relay");
            return;
        };
        debug!(why, relay = %relay.key.to_hex(), "falling back to the relay");
        self.pairing = true;
        self.deadline = self.deadline.max(now + RELAY_TIMEOUT);
        self.actions.push_back(SessionAction::PairRelay(relay));
    }

    fn stop_punching(&mut self, connected: bool, now: Instant) {
        if self.schedule.take().is_some() {
            self.actions.push_back(SessionAction::ClosePunch);
        }
        self.next_step = None;
        self.streams.clear();
        if std::mem::take(&mut self.holds_gate) {
            self.params
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end(now, connected);
        }
    }

    fn finish(&mut self, outcome: SessionOutcome, now: Instant) {
        let connected = matches!(outcome, SessionOutcome::Connected(_));
        // The shell still needs the punch sockets to take the stream's: no ClosePunch here.
        self.schedule = None;
        self.next_step = None;
        if std::mem::take(&mut self.holds_gate) {
            self.params
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .end(now, connected);
        }
        for q in std::mem::take(&mut self.queued) {
            self.actions
                .push_back(SessionAction::Drop { round: q.round });
        }
        self.finished = true;
        self.outcome = Some(outcome);
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
