//! The PEER_HOLEPUNCH rounds for our slot (JS `Server._onpeerholepunch`): each is opened and
//! held until our NAT is classified, then answered with our class and addresses, a token that
//! verifies the client's address by its echo, and whether we punch; an abort from the client
//! sends us to the relay.

use std::net::SocketAddrV4;
use std::time::Instant;

use tracing::debug;

use super::{RoundId, ServerSession, SessionAction};
use crate::hyperdht::crypto::{secretbox_open, secretbox_seal};
use crate::hyperdht::endpoint::random_bytes;
use crate::hyperdht::holepunch::{NatClass, NatSampler, address_token};
use crate::hyperdht::messages::{Holepunch, HolepunchPayload};
use crate::hyperdht::schedule::ProbeOp;
use crate::hyperdht::{error_codes, firewall};

/// PEER_HOLEPUNCH rounds held while our NAT is being classified (the client sends a few).
pub(crate) const SESSION_QUEUE: usize = 8;

/// A PEER_HOLEPUNCH round that waits for our NAT class.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) round: RoundId,
    from: SocketAddrV4,
    peer: SocketAddrV4,
    remote: HolepunchPayload,
}

impl ServerSession {
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
        if self.remote_punching
            && self.schedule.is_none()
            && let Err(code) = self.start_punching(local, peer, now)
        {
            let reply = self.abort_payload(code);
            self.answer(round, &reply);
            return;
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

    fn answer(&mut self, round: RoundId, payload: &HolepunchPayload) {
        let nonce: [u8; 24] = random_bytes();
        let sealed = secretbox_seal(&self.params.secret, &nonce, &payload.encode());
        self.actions.push_back(SessionAction::Answer {
            round,
            payload: sealed,
        });
    }

    pub(super) fn abort_payload(&self, error: u64) -> HolepunchPayload {
        HolepunchPayload {
            error,
            firewall: firewall::UNKNOWN,
            round: self.round,
            ..HolepunchPayload::default()
        }
    }
}
