//! The holepunch rounds of a connect (§3.8): once our main socket's NAT is classified, a probe
//! round and a punch round of PEER_HOLEPUNCH through the server's relay (classes, addresses,
//! tokens whose echo verifies each side's address), or an abort that sends both sides to the
//! relay. A good punch round starts the probing ([`super::probing`]).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use tracing::debug;

use super::{ClientAction, ClientConnect, Pending, Phase};
use crate::dht::{QueryReply, SocketKind, UserRequest};
use crate::hyperdht::crypto::{secretbox_open, secretbox_seal};
use crate::hyperdht::endpoint::random_bytes;
use crate::hyperdht::holepunch::{NatClass, NatSampler, Strategy, address_token};
use crate::hyperdht::messages::{Holepunch, HolepunchPayload, Mode, RelayInfo};
use crate::hyperdht::schedule::ProbeOp;
use crate::hyperdht::terms::NoPathReason;
use crate::hyperdht::{commands, error_codes};

/// How long one PEER_HOLEPUNCH round trip through a relay may take (retries included).
pub const HOLEPUNCH_ROUND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before repeating a probe round when the server's class was still unknown (JS: 1 s).
pub(crate) const UNKNOWN_RETRY_PAUSE: Duration = Duration::from_millis(300);

/// What the client learned from the handshake, for the punch.
#[derive(Debug, Clone)]
pub(super) struct PunchPlan {
    /// The relay of the server's list to send PEER_HOLEPUNCH through.
    pub(super) server_relay: RelayInfo,
    /// The server's address as the handshake relay saw it.
    pub(super) server_address: SocketAddrV4,
    /// The server's holepunch slot.
    pub(super) id: u64,
    /// The server's class as its Noise payload said (our servers say RANDOM early).
    pub(super) remote_hint: NatClass,
    /// The server's addresses from its Noise payload.
    pub(super) remote_addresses: Vec<SocketAddrV4>,
}

/// Which PEER_HOLEPUNCH round is waiting for its answer.
#[derive(Debug, Clone)]
pub(super) enum Round {
    /// The probe round (`retried`: the repeat after an unknown server class).
    Probe { retried: bool },
    /// The punch round (tokens, `punching`).
    Punch,
    /// Telling the server we stop; then the relay fallback with this reason.
    Abort(NoPathReason),
}

impl ClientConnect {
    /// Our main socket's NAT class, as sampled.
    pub(crate) fn handle_nat(&mut self, nat: NatSampler, now: Instant) {
        self.nat = Some(nat);
        if matches!(self.phase, Phase::AwaitNat) {
            self.start_punch(now);
        }
    }

    pub(super) fn await_nat(&mut self, now: Instant) {
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

    pub(super) fn with_punch(&self, punch: String) -> NoPathReason {
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
        let nonce: [u8; 24] = random_bytes();
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
        self.start_probing(strategy, remote_addrs, now);
    }

    /// The round in flight got no answer in time.
    pub(super) fn round_timed_out(&mut self, now: Instant) {
        self.pending.retain(|_, p| !matches!(p, Pending::Round));
        self.on_round(Err("the server's relay did not answer".into()), now);
    }

    /// The pause after an unclassified server is over: the probe round once more.
    pub(super) fn repeat_probe_round(&mut self, now: Instant) {
        self.round += 1;
        let probe = self.probe_payload();
        self.send_round(&probe, Round::Probe { retried: true }, now);
    }

    /// The server's relay answered the round in flight (`Err`: the request failed, with why).
    pub(super) fn on_round_reply(&mut self, result: Result<QueryReply, String>, now: Instant) {
        let answer = result
            .map_err(|e| format!("the server's relay failed: {e}"))
            .and_then(|reply| self.open_round_answer(&reply));
        self.on_round(answer, now);
    }
}
