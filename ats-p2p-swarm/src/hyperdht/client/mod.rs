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
//!
//! One file per job: [`events`] what crosses to the shell, [`handshake`] msg1/msg2 and the
//! first path to try, [`ping`] the direct/LAN PING race, [`rounds`] the PEER_HOLEPUNCH
//! rounds, [`probing`] the probes by strategy, [`relay`] the fallback. This file holds the
//! machine itself: its phases, its start, and the `poll_*`/`handle_*` entry points that hand
//! each input to the job it belongs to.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::dht::{Id, QueryReply, UserRequest, hash};
use crate::hyperdht::crypto::ns;
use crate::hyperdht::endpoint::random_bytes;
#[cfg(doc)]
use crate::hyperdht::holepunch::Strategy;
use crate::hyperdht::holepunch::{NatClass, NatSampler, RandomPunchGate};
use crate::hyperdht::schedule::ProbeSchedule;
use crate::hyperdht::terms::{ConnectError, NoPathReason, RelayChoice, RelayMode};
use crate::noise::{self, NoiseConfig, NoiseHandshake};

mod events;
mod handshake;
mod ping;
mod probing;
mod relay;
mod rounds;

pub(crate) use self::events::{ClientAction, ClientConnected, ClientParams, ClientPath, RequestId};
pub(crate) use self::handshake::handshake_relays;
pub use self::handshake::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKE_RELAYS};
pub use self::ping::{LAN_PING_TIMEOUT, PATH_TIMEOUT};
pub use self::rounds::HOLEPUNCH_ROUND_TIMEOUT;
use self::rounds::{PunchPlan, Round};

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
    actions: VecDeque<ClientAction>,
    outcome: Option<Result<ClientConnected, ConnectError>>,
    pending: HashMap<RequestId, Pending>,
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
            actions: VecDeque::new(),
            outcome: None,
            pending: HashMap::new(),
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
            token_secret: random_bytes(),
            peer: None,
            sockets: 1,
            early_hit: None,
        };
        // Classify our NAT while the handshake runs (cached for the next connect).
        this.actions.push_back(ClientAction::SampleNat { nodes });
        this.send_msg1(relays, msg1);
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
            Pending::Ping(addr) => self.on_ping_reply(addr, result, now),
            Pending::Round => self.on_round_reply(result, now),
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
            Phase::Round { deadline, .. } if now >= *deadline => self.round_timed_out(now),
            Phase::Pause { until } if now >= *until => self.repeat_probe_round(now),
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
}

#[cfg(test)]
mod tests;
