//! The client role of connect-by-key (npm `hyperdht` 6.34 `connect`) as a sans-io state
//! machine: [`ClientConnect`]. The async shell ([`super::connect`]) sends what
//! [`ClientConnect::poll_action`] asks for and feeds back replies ([`ClientConnect::handle_response`]),
//! the NAT sample, punch-socket hits, the relay pairing and timer expiries, each with an explicit
//! `Instant`; [`ClientConnect::poll_outcome`] is the end.
//!
//! The flow: send Noise IK msg1 through up to [`MAX_HANDSHAKE_RELAYS`] DHT nodes holding the
//! server's record (PEER_HANDSHAKE, first valid msg2 wins), then find a path, first that works:
//! 1. **Direct**: the server is reachable (OPEN), or was reached without a relay: a dht-rpc PING
//!    race to its advertised addresses (§3.8 step 3), for [`PATH_TIMEOUT`].
//! 2. **LAN**: both peers look the same from the relay (same host or NAT): the PING race to the
//!    server's addresses, for [`LAN_PING_TIMEOUT`].
//! 3. **Holepunch** (§3.8): with our main socket's NAT class, a probe round and a punch round of
//!    PEER_HOLEPUNCH through the server's relay (classes, addresses, tokens whose echo verifies
//!    each side's address), then probing by the [`Strategy`] both classes call for until a
//!    probe from the server arrives.
//! 4. **Relay** (§3.10): when both NATs are random or the punch fails, through the blind relay
//!    named in either handshake payload.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use super::connect::{ConnectError, NoPathReason, PAYLOAD_VERSION, RelayChoice, RelayMode};
use super::crypto::{holepunch_secret, ns, secretbox_open, secretbox_seal};
use super::holepunch::{NatClass, NatSampler, RandomPunchGate, Strategy, address_token};
use super::messages::{Handshake, Holepunch, HolepunchPayload, Mode, NoisePayload, RelayInfo};
use super::node::LookupResult;
use super::punch::Hit;
use super::schedule::{ProbeOp, ProbeSchedule};
use super::{commands, error_codes, firewall};
use crate::dht::{Id, QueryReply, SocketKind, UserRequest, hash};
use crate::keys::{KeyPair, PublicKey};
use crate::noise::{self, NoiseConfig, NoiseHandshake};

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
/// Pause before repeating a probe round when the server's class was still unknown (JS: 1 s).
pub(crate) const UNKNOWN_RETRY_PAUSE: Duration = Duration::from_millis(300);
/// dht-rpc retries of one PING of the direct/LAN race.
const PING_RETRIES: u32 = 2;

/// The DHT nodes to sample our NAT with and the ones holding `remote`'s record (the handshake
/// relays, at most [`MAX_HANDSHAKE_RELAYS`]), from a FIND_PEER result.
pub(crate) fn handshake_relays(
    found: &[LookupResult],
    remote: &PublicKey,
) -> Result<(Vec<SocketAddrV4>, Vec<SocketAddrV4>), ConnectError> {
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
    Ok((nodes, relays))
}

/// Identifies one request the machine asked for; the shell passes it back with the answer.
pub(crate) type RequestId = u64;

/// Something [`ClientConnect`] asks its shell to do.
#[derive(Debug, Clone)]
pub(crate) enum ClientAction {
    /// Send this DHT request; answer with [`ClientConnect::handle_response`].
    Request {
        /// Passed back with the answer.
        id: RequestId,
        /// The request.
        req: UserRequest,
    },
    /// Classify our main socket's NAT, asking these nodes first; answer with
    /// [`ClientConnect::handle_nat`].
    SampleNat {
        /// DHT nodes near the server.
        nodes: Vec<SocketAddrV4>,
    },
    /// Open the punch sockets (only probes from `hosts` count); report what they see with
    /// [`ClientConnect::handle_hit`].
    OpenPunch {
        /// The peer's hosts.
        hosts: Vec<Ipv4Addr>,
    },
    /// Send a probe (or open a birthday socket and probe from it).
    Probe(ProbeOp),
    /// Close the punch sockets (the punch failed).
    ClosePunch,
    /// Pair our stream through this relay; answer with [`ClientConnect::handle_relay`].
    PairRelay(RelayChoice),
}

/// How the client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientPath {
    /// A PING to this address answered (the server is reachable, or on our LAN / host).
    Direct(SocketAddrV4),
    /// A probe from the server arrived on punch socket `socket` from `from`.
    Holepunched {
        /// Index of the punch socket (0 = main).
        socket: usize,
        /// The server's punched address.
        from: SocketAddrV4,
    },
    /// The relay pairing succeeded.
    Relayed,
}

/// A finished connect: the Noise result, the server's stream id, and the path.
#[derive(Debug, Clone)]
pub(crate) struct ClientConnected {
    /// The Noise IK result (keys for the secret stream).
    pub(crate) handshake: noise::Handshake,
    /// The server's UDX stream id.
    pub(crate) remote_id: u32,
    /// How the server was reached.
    pub(crate) path: ClientPath,
}

/// What starting a connect needs.
#[derive(Clone)]
pub(crate) struct ClientParams {
    /// Our identity.
    pub(crate) key_pair: KeyPair,
    /// The server's key.
    pub(crate) remote: PublicKey,
    /// DHT nodes holding the server's record (from [`handshake_relays`]).
    pub(crate) relays: Vec<SocketAddrV4>,
    /// DHT nodes near the server (to sample our NAT with).
    pub(crate) nodes: Vec<SocketAddrV4>,
    /// Our Noise payload (addresses, UDX stream id, class when known).
    pub(crate) payload: NoisePayload,
    /// The relay we propose, if any.
    pub(crate) our_relay: Option<RelayChoice>,
    /// Whether we may relay.
    pub(crate) relay_mode: RelayMode,
    /// The node's random-punch limit, shared with its other punches.
    pub(crate) gate: Arc<Mutex<RandomPunchGate>>,
}

/// What the client learned from the handshake, for the punch.
#[derive(Debug, Clone)]
struct PunchPlan {
    /// The relay of the server's list to send PEER_HOLEPUNCH through.
    server_relay: RelayInfo,
    /// The server's address as the handshake relay saw it.
    server_address: SocketAddrV4,
    /// The server's holepunch slot.
    id: u64,
    /// The server's class as its Noise payload said (our servers say RANDOM early).
    remote_hint: NatClass,
    /// The server's addresses from its Noise payload.
    remote_addresses: Vec<SocketAddrV4>,
}

/// Which PEER_HOLEPUNCH round is waiting for its answer.
#[derive(Debug, Clone)]
enum Round {
    /// The probe round (`retried`: the repeat after an unknown server class).
    Probe { retried: bool },
    /// The punch round (tokens, `punching`).
    Punch,
    /// Telling the server we stop; then the relay fallback with this reason.
    Abort(NoPathReason),
}

/// Where the connect is.
#[derive(Debug)]
enum Phase {
    /// msg1 sent through the relays; waiting for the first valid msg2.
    Handshake { deadline: Instant },
    /// PING race to the server's addresses (`lan`: before a punch).
    Ping { lan: bool, deadline: Instant },
    /// Waiting for our NAT class to start the punch.
    AwaitNat,
    /// A PEER_HOLEPUNCH round is in flight.
    Round { round: Round, deadline: Instant },
    /// Waiting before repeating the probe round.
    Pause { until: Instant },
    /// Probing by strategy until a probe from the server arrives.
    Probing {
        schedule: ProbeSchedule,
        next: Instant,
        holds_gate: bool,
    },
    /// Pairing through the relay.
    Relaying,
    /// Finished (the outcome is ready or was taken).
    Done,
}

/// What a request in flight was for.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Handshake(SocketAddrV4),
    Ping(SocketAddrV4),
    Round,
}

/// One connect attempt, client side.
pub(crate) struct ClientConnect {
    phase: Phase,
    actions: std::collections::VecDeque<ClientAction>,
    outcome: Option<Result<ClientConnected, ConnectError>>,
    pending: std::collections::HashMap<RequestId, Pending>,
    next_id: RequestId,
    noise: Option<NoiseHandshake>,
    handshake: Option<noise::Handshake>,
    remote_id: u32,
    target: Id,
    relay_mode: RelayMode,
    our_relay: Option<RelayChoice>,
    relay: Option<RelayChoice>,
    gate: Arc<Mutex<RandomPunchGate>>,
    /// Keys the holepunch payloads.
    secret: Id,
    candidates: Vec<SocketAddrV4>,
    remote_firewall: NatClass,
    plan: Option<PunchPlan>,
    nat: Option<NatSampler>,
    reason: NoPathReason,
    round: u64,
    token_secret: [u8; 32],
    /// The server's address as its relay saw it (or verified).
    peer: Option<SocketAddrV4>,
    /// Punch sockets opened (main included).
    sockets: usize,
    /// A probe from the server that arrived before probing began.
    early_hit: Option<(usize, SocketAddrV4)>,
}

impl std::fmt::Debug for ClientConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnect")
            .field("phase", &self.phase)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl ClientConnect {
    /// Starts a connect: writes msg1 and asks for the handshake requests and the NAT sample.
    pub(crate) fn new(params: ClientParams, now: Instant) -> Result<Self, ConnectError> {
        let ClientParams {
            key_pair,
            remote,
            relays,
            nodes,
            mut payload,
            our_relay,
            relay_mode,
            gate,
        } = params;
        let prologue = ns::peer_handshake();
        let mut noise =
            NoiseHandshake::new(NoiseConfig::ik_initiator(key_pair, &prologue, remote))?;
        payload.relay_through = our_relay.map(RelayChoice::to_payload);
        let msg1 = noise.write_message(&payload.encode())?;
        let target = hash(remote.as_bytes());
        let mut this = Self {
            phase: Phase::Handshake {
                deadline: now + HANDSHAKE_TIMEOUT,
            },
            actions: std::collections::VecDeque::new(),
            outcome: None,
            pending: std::collections::HashMap::new(),
            next_id: 0,
            noise: Some(noise),
            handshake: None,
            remote_id: 0,
            target,
            relay_mode,
            our_relay,
            relay: None,
            gate,
            secret: [0; 32],
            candidates: Vec::new(),
            remote_firewall: NatClass::Unknown,
            plan: None,
            nat: None,
            reason: NoPathReason {
                local: NatClass::Unknown,
                remote: NatClass::Unknown,
                punch: String::new(),
                relay: None,
            },
            round: 0,
            token_secret: super::connect::random_bytes(),
            peer: None,
            sockets: 1,
            early_hit: None,
        };
        // Classify our NAT while the handshake runs (cached for the next connect).
        this.actions.push_back(ClientAction::SampleNat { nodes });
        let value = Handshake {
            mode: Mode::FromClient,
            noise: msg1,
            peer_address: None,
            relay_address: None,
        }
        .encode();
        for relay in relays {
            let req = UserRequest {
                to: relay,
                token: None,
                internal: false,
                command: commands::PEER_HANDSHAKE,
                target: Some(target),
                value: Some(value.clone()),
                socket: None,
                retries: None,
            };
            this.request(req, Pending::Handshake(relay));
        }
        if this.pending.is_empty() {
            this.fail(ConnectError::PeerNotFound);
        }
        Ok(this)
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] wants to be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Handshake { deadline }
            | Phase::Ping { deadline, .. }
            | Phase::Round { deadline, .. } => Some(*deadline),
            Phase::Pause { until } => Some(*until),
            Phase::Probing { next, .. } => Some(*next),
            Phase::AwaitNat | Phase::Relaying | Phase::Done => None,
        }
    }

    /// The end of the connect, once (after it, the machine does nothing more).
    pub(crate) fn poll_outcome(&mut self) -> Option<Result<ClientConnected, ConnectError>> {
        self.outcome.take()
    }

    /// The answer to request `id` (`Err`: the DHT request failed, with why).
    pub(crate) fn handle_response(
        &mut self,
        id: RequestId,
        result: Result<QueryReply, String>,
        now: Instant,
    ) {
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        match pending {
            Pending::Handshake(relay) => self.on_handshake_reply(relay, result, now),
            Pending::Ping(addr) => match (&self.phase, result) {
                (Phase::Ping { .. }, Ok(_)) => self.finish(ClientPath::Direct(addr)),
                (Phase::Ping { lan, .. }, Err(_)) => {
                    let lan = *lan;
                    if !self.pending.values().any(|p| matches!(p, Pending::Ping(_))) {
                        self.ping_failed(lan, now);
                    }
                }
                _ => {}
            },
            Pending::Round => {
                let answer = result
                    .map_err(|e| format!("the server's relay failed: {e}"))
                    .and_then(|reply| self.open_round_answer(&reply));
                self.on_round(answer, now);
            }
        }
    }

    /// Our main socket's NAT class, as sampled.
    pub(crate) fn handle_nat(&mut self, nat: NatSampler, now: Instant) {
        self.nat = Some(nat);
        if matches!(self.phase, Phase::AwaitNat) {
            self.start_punch(now);
        }
    }

    /// Something a punch socket saw.
    pub(crate) fn handle_hit(&mut self, hit: Hit, now: Instant) {
        let Hit::Probe { socket, from } = hit else {
            return;
        };
        match self.phase {
            Phase::Probing { .. } => self.punched(socket, from, now),
            Phase::Round { .. } | Phase::Pause { .. } if self.early_hit.is_none() => {
                self.early_hit = Some((socket, from));
            }
            _ => {}
        }
    }

    /// The punch sockets stopped reporting.
    pub(crate) fn handle_punch_closed(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Probing { .. }) {
            self.punch_failed("probe channel closed".into(), now);
        }
    }

    /// A birthday socket could not be opened.
    pub(crate) fn handle_open_failed(&mut self) {
        self.sockets = self.sockets.saturating_sub(1).max(1);
        if let Phase::Probing { schedule, .. } = &mut self.phase {
            schedule.handle_open_failed();
        }
    }

    /// The relay pairing's result (`Err`: why it failed).
    pub(crate) fn handle_relay(&mut self, result: Result<(), String>) {
        if !matches!(self.phase, Phase::Relaying) {
            return;
        }
        match result {
            Ok(()) => self.finish(ClientPath::Relayed),
            Err(e) => {
                let key = self.relay.map(|r| r.key.to_hex()).unwrap_or_default();
                let mut reason = self.reason.clone();
                reason.relay = Some(format!("relay {key} failed: {e}"));
                self.fail(ConnectError::NoPath(reason));
            }
        }
    }

    /// Timer expiry: call at (or after) [`Self::poll_timeout`].
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Handshake { deadline } if now >= *deadline => {
                self.fail(ConnectError::HandshakeFailed);
            }
            Phase::Ping { lan, deadline } if now >= *deadline => {
                let lan = *lan;
                self.ping_failed(lan, now);
            }
            Phase::Round { deadline, .. } if now >= *deadline => {
                self.pending.retain(|_, p| !matches!(p, Pending::Round));
                self.on_round(Err("the server's relay did not answer".into()), now);
            }
            Phase::Pause { until } if now >= *until => {
                self.round += 1;
                let probe = self.probe_payload();
                self.send_round(&probe, Round::Probe { retried: true }, now);
            }
            Phase::Probing { next, .. } if now >= *next => self.probe_step(now),
            _ => {}
        }
    }

    fn request(&mut self, req: UserRequest, pending: Pending) {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, pending);
        self.actions.push_back(ClientAction::Request { id, req });
    }

    fn fail(&mut self, e: ConnectError) {
        self.pending.clear();
        self.phase = Phase::Done;
        self.outcome = Some(Err(e));
    }

    fn finish(&mut self, path: ClientPath) {
        self.pending.clear();
        self.phase = Phase::Done;
        let Some(handshake) = self.handshake.take() else {
            self.outcome = Some(Err(ConnectError::HandshakeFailed));
            return;
        };
        self.outcome = Some(Ok(ClientConnected {
            handshake,
            remote_id: self.remote_id,
            path,
        }));
    }

    fn on_handshake_reply(
        &mut self,
        relay: SocketAddrV4,
        result: Result<QueryReply, String>,
        now: Instant,
    ) {
        if !matches!(self.phase, Phase::Handshake { .. }) {
            return;
        }
        let valid = result.ok().and_then(|reply| {
            if reply.from != relay {
                return None;
            }
            let hs = Handshake::decode(reply.value.as_deref()?).ok()?;
            (hs.mode == Mode::Reply && !hs.noise.is_empty()).then_some((reply, hs))
        });
        match valid {
            Some((reply, hs)) => {
                if let Err(e) = self.accept(&reply, &hs, now) {
                    self.fail(e);
                }
            }
            None => {
                let waiting = self
                    .pending
                    .values()
                    .any(|p| matches!(p, Pending::Handshake(_)));
                if !waiting {
                    self.fail(ConnectError::HandshakeFailed);
                }
            }
        }
    }

    /// msg2 arrived: read it, then pick the first path to try.
    fn accept(
        &mut self,
        reply: &QueryReply,
        hs: &Handshake,
        now: Instant,
    ) -> Result<(), ConnectError> {
        self.pending.clear();
        let server_address = hs.peer_address.unwrap_or(reply.from);
        let mut noise = self.noise.take().ok_or(ConnectError::HandshakeFailed)?;
        let remote_payload = noise.read_message(&hs.noise)?;
        let handshake = noise.into_handshake()?;
        self.secret = holepunch_secret(&handshake.hash);
        self.handshake = Some(handshake);
        let rp = NoisePayload::decode(&remote_payload).map_err(|_| ConnectError::Payload(0))?;
        if rp.version != PAYLOAD_VERSION || rp.error != error_codes::NONE {
            return Err(ConnectError::Payload(rp.error));
        }
        self.remote_id = rp
            .udx
            .as_ref()
            .and_then(|u| u32::try_from(u.id).ok())
            .ok_or(ConnectError::Payload(error_codes::ABORTED))?;
        for a in rp.addresses4.iter().chain(std::iter::once(&server_address)) {
            if !self.candidates.contains(a) {
                self.candidates.push(*a);
            }
        }
        self.remote_firewall = NatClass::from_wire(rp.firewall);
        let relayed = hs.peer_address.is_some();
        self.relay = RelayChoice::agree(self.relay_mode, self.our_relay, rp.relay_through.as_ref());
        let holepunchable = rp.holepunch.as_ref().filter(|h| !h.relays.is_empty());
        self.plan = match holepunchable {
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
                    remote_hint: NatClass::from_wire(rp.firewall),
                    remote_addresses: rp.addresses4.clone(),
                })
            }
            _ => None,
        };
        // As hyperdht: the LAN shortcut is only worth waiting for when both peers look the same
        // from the relay (same host or same NAT); behind different NATs punch at once.
        let same_network = reply.to.ip() == server_address.ip();
        match &self.plan {
            None => self.start_ping(false, now),
            Some(_) if same_network => self.start_ping(true, now),
            Some(_) => self.await_nat(now),
        }
        Ok(())
    }

    fn start_ping(&mut self, lan: bool, now: Instant) {
        let limit = if lan { LAN_PING_TIMEOUT } else { PATH_TIMEOUT };
        self.phase = Phase::Ping {
            lan,
            deadline: now + limit,
        };
        for to in self.candidates.clone() {
            let req = UserRequest {
                to,
                token: None,
                internal: true,
                command: 0,
                target: None,
                value: None,
                socket: None,
                retries: Some(PING_RETRIES),
            };
            self.request(req, Pending::Ping(to));
        }
    }

    fn ping_failed(&mut self, lan: bool, now: Instant) {
        self.pending.clear();
        if lan {
            self.await_nat(now);
        } else {
            let reason = NoPathReason {
                local: NatClass::Unknown,
                remote: self.remote_firewall,
                punch: "the peer's addresses did not answer and it cannot holepunch".into(),
                relay: None,
            };
            self.fallback(reason);
        }
    }

    fn await_nat(&mut self, now: Instant) {
        if self.nat.is_some() {
            self.start_punch(now);
        } else {
            self.phase = Phase::AwaitNat;
        }
    }

    fn local_class(&self) -> NatClass {
        self.nat
            .as_ref()
            .map_or(NatClass::Unknown, NatSampler::class)
    }

    /// The client's holepunch (§3.8) begins: the probe round.
    fn start_punch(&mut self, now: Instant) {
        let Some(plan) = self.plan.clone() else {
            return;
        };
        let local = self.local_class();
        self.reason = NoPathReason {
            local,
            remote: plan.remote_hint,
            punch: String::new(),
            relay: None,
        };
        if local == NatClass::Random && plan.remote_hint == NatClass::Random {
            // Both random: straight to the relay (the server learns it from our abort).
            let reason = self.with_punch("both NATs randomize ports".into());
            self.abort(0, reason, now);
            return;
        }
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
        self.actions.push_back(ClientAction::OpenPunch { hosts });
        // Open our mapping towards the server (JS sends this with a low TTL).
        self.actions.push_back(ClientAction::Probe(ProbeOp::Send {
            socket: 0,
            to: plan.server_address,
        }));
        self.round = 0;
        let probe = self.probe_payload();
        self.send_round(&probe, Round::Probe { retried: false }, now);
    }

    fn probe_payload(&self) -> HolepunchPayload {
        HolepunchPayload {
            firewall: self.local_class().to_wire(),
            round: self.round,
            addresses: self.nat.as_ref().and_then(NatSampler::addresses),
            remote_address: self.plan.as_ref().map(|p| p.server_address),
            ..HolepunchPayload::default()
        }
    }

    fn with_punch(&self, punch: String) -> NoPathReason {
        NoPathReason {
            punch,
            ..self.reason.clone()
        }
    }

    /// Sends one PEER_HOLEPUNCH through the server's relay, from our main socket (the relay
    /// tells the server this socket's NAT mapping).
    fn send_round(&mut self, payload: &HolepunchPayload, round: Round, now: Instant) {
        let Some(plan) = &self.plan else {
            return;
        };
        let nonce: [u8; 24] = super::connect::random_bytes();
        let value = Holepunch {
            mode: Mode::FromClient,
            id: plan.id,
            payload: secretbox_seal(&self.secret, &nonce, &payload.encode()),
            peer_address: Some(plan.server_relay.peer_address),
        }
        .encode();
        let req = UserRequest {
            to: plan.server_relay.relay_address,
            token: None,
            internal: false,
            command: commands::PEER_HOLEPUNCH,
            target: Some(self.target),
            value: Some(value),
            socket: Some(SocketKind::Server),
            retries: None,
        };
        self.pending.retain(|_, p| !matches!(p, Pending::Round));
        self.request(req, Pending::Round);
        self.phase = Phase::Round {
            round,
            deadline: now + HOLEPUNCH_ROUND_TIMEOUT,
        };
    }

    /// The server's decrypted answer and its address as the relay saw it.
    fn open_round_answer(
        &self,
        reply: &QueryReply,
    ) -> Result<(HolepunchPayload, SocketAddrV4), String> {
        let hp = reply
            .value
            .as_deref()
            .and_then(|v| Holepunch::decode(v).ok())
            .ok_or_else(|| "the server sent no holepunch answer".to_string())?;
        let plain = secretbox_open(&self.secret, &hp.payload)
            .map_err(|_| "the server's holepunch answer does not authenticate".to_string())?;
        let answer = HolepunchPayload::decode(&plain)
            .map_err(|_| "the server's holepunch answer is malformed".to_string())?;
        let fallback = self.plan.as_ref().map(|p| p.server_address);
        let peer = hp
            .peer_address
            .or(fallback)
            .ok_or_else(|| "no server address".to_string())?;
        Ok((answer, peer))
    }

    /// Tells the server we stop punching (so it can take the relay at once), then falls back.
    fn abort(&mut self, round: u64, reason: NoPathReason, now: Instant) {
        let payload = HolepunchPayload {
            error: error_codes::ABORTED,
            round,
            ..HolepunchPayload::default()
        };
        self.send_round(&payload, Round::Abort(reason), now);
    }

    fn on_round(&mut self, answer: Result<(HolepunchPayload, SocketAddrV4), String>, now: Instant) {
        let Phase::Round { round, .. } = &self.phase else {
            return;
        };
        match (round.clone(), answer) {
            (Round::Abort(reason), answer) => {
                if let Err(e) = answer {
                    debug!(error = %e, "holepunch abort not acknowledged");
                }
                self.fallback(reason);
            }
            (_, Err(e)) => {
                let reason = self.with_punch(e);
                self.fallback(reason);
            }
            (Round::Probe { retried }, Ok((answer, peer))) => {
                let unknown = NatClass::from_wire(answer.firewall) == NatClass::Unknown;
                if !retried && answer.error == error_codes::NONE && unknown {
                    // The server had not classified its NAT yet: give it a moment (JS: 1 s).
                    self.phase = Phase::Pause {
                        until: now + UNKNOWN_RETRY_PAUSE,
                    };
                } else {
                    self.after_probe_round(&answer, peer, now);
                }
            }
            (Round::Punch, Ok((answer, _))) => self.after_punch_round(&answer, now),
        }
    }

    fn after_probe_round(&mut self, answer: &HolepunchPayload, peer: SocketAddrV4, now: Instant) {
        self.reason.remote = NatClass::from_wire(answer.firewall);
        if answer.error != error_codes::NONE {
            let reason = self.with_punch(format!(
                "the server aborted the holepunch (code {})",
                answer.error
            ));
            self.fallback(reason);
            return;
        }
        let server_address = self.plan.as_ref().map(|p| p.server_address);
        // A consistent server tells us where it is; open our mapping there too.
        if let Some(a) = answer.addresses.as_ref().and_then(|a| a.first())
            && Some(*a) != server_address
            && a.port() != 0
        {
            self.actions
                .push_back(ClientAction::Probe(ProbeOp::Send { socket: 0, to: *a }));
        }
        let why = match Strategy::choose(self.reason.local, self.reason.remote, None) {
            Strategy::BothRandom => Some("both NATs randomize ports"),
            Strategy::Unknown => Some("a NAT could not be classified"),
            _ => None,
        };
        if let Some(why) = why {
            let reason = self.with_punch(why.into());
            self.abort(self.round + 1, reason, now);
            return;
        }
        // Punch round: prove our address (echo its token), ask it to prove its own.
        let our_token = address_token(&self.token_secret, *peer.ip());
        self.peer = Some(peer);
        self.round += 1;
        let punch = HolepunchPayload {
            firewall: self.local_class().to_wire(),
            round: self.round,
            punching: true,
            addresses: self.nat.as_ref().and_then(NatSampler::addresses),
            token: Some(our_token),
            remote_token: answer.token,
            ..HolepunchPayload::default()
        };
        self.send_round(&punch, Round::Punch, now);
    }

    fn after_punch_round(&mut self, answer: &HolepunchPayload, now: Instant) {
        if answer.error != error_codes::NONE {
            let why = if answer.error == error_codes::TRY_LATER {
                "the server is busy with another random-NAT punch (try later)".to_string()
            } else {
                format!("the server aborted the holepunch (code {})", answer.error)
            };
            let reason = self.with_punch(why);
            self.fallback(reason);
            return;
        }
        if !answer.punching {
            let reason = self.with_punch("the server does not punch".into());
            self.fallback(reason);
            return;
        }
        let Some(mut peer) = self.peer else {
            return;
        };
        let our_token = address_token(&self.token_secret, *peer.ip());
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
        let strategy = Strategy::choose(self.reason.local, self.reason.remote, verified);
        peer = verified.unwrap_or(peer);
        self.peer = Some(peer);
        debug!(?strategy, %peer, "client punching");
        let holds_gate = strategy.is_random();
        if holds_gate && !self.lock_gate().try_begin(now) {
            let reason = self.with_punch("another random-NAT punch is running on this node".into());
            self.fallback(reason);
            return;
        }
        let mut schedule = ProbeSchedule::new(strategy, remote_addrs);
        let Some(wait) = schedule.next_wait() else {
            let why = schedule.exhausted_reason();
            self.phase = Phase::Probing {
                schedule,
                next: now,
                holds_gate,
            };
            self.punch_failed(why, now);
            return;
        };
        self.phase = Phase::Probing {
            schedule,
            next: now + wait,
            holds_gate,
        };
        if let Some((socket, from)) = self.early_hit.take() {
            self.punched(socket, from, now);
        }
    }

    fn probe_step(&mut self, now: Instant) {
        let Phase::Probing { schedule, next, .. } = &mut self.phase else {
            return;
        };
        let ops = schedule.run_step(self.sockets, &mut rand::rngs::OsRng);
        match schedule.next_wait() {
            Some(wait) => *next = now + wait,
            None => {
                let why = schedule.exhausted_reason();
                self.punch_failed(why, now);
                return;
            }
        }
        for op in ops {
            if matches!(op, ProbeOp::OpenAndSend { .. }) {
                self.sockets += 1;
            }
            self.actions.push_back(ClientAction::Probe(op));
        }
    }

    fn lock_gate(&self) -> std::sync::MutexGuard<'_, RandomPunchGate> {
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release_gate(&mut self, connected: bool, now: Instant) {
        if let Phase::Probing { holds_gate, .. } = &mut self.phase
            && std::mem::take(holds_gate)
        {
            self.lock_gate().end(now, connected);
        }
    }

    fn punched(&mut self, socket: usize, from: SocketAddrV4, now: Instant) {
        self.release_gate(true, now);
        self.finish(ClientPath::Holepunched { socket, from });
    }

    fn punch_failed(&mut self, why: String, now: Instant) {
        self.release_gate(false, now);
        let reason = self.with_punch(why);
        self.fallback(reason);
    }

    /// When no direct or punched path exists: pair through the agreed relay, or fail with what
    /// was detected.
    fn fallback(&mut self, mut reason: NoPathReason) {
        self.pending.clear();
        if self.plan.is_some() {
            self.actions.push_back(ClientAction::ClosePunch);
        }
        let Some(relay) = self.relay else {
            if self.relay_mode == RelayMode::Disabled {
                reason.relay = Some("relaying is disabled (--no-relay)".into());
            }
            self.fail(ConnectError::NoPath(reason));
            return;
        };
        debug!(punch = %reason.punch, relay = %relay.key.to_hex(), "falling back to the relay");
        self.reason = reason;
        self.phase = Phase::Relaying;
        self.actions.push_back(ClientAction::PairRelay(relay));
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
