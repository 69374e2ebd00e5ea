//! The handshake of a connect: Noise IK msg1 through up to [`MAX_HANDSHAKE_RELAYS`] DHT nodes
//! holding the server's record (PEER_HANDSHAKE), the first valid msg2 wins; reading it decides
//! the first path to try (the PING race, the LAN race, or the punch).

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::rounds::PunchPlan;
use super::{ClientConnect, Pending, Phase};
use crate::dht::{QueryReply, UserRequest};
use crate::hyperdht::crypto::holepunch_secret;
use crate::hyperdht::holepunch::NatClass;
use crate::hyperdht::messages::{Handshake, Mode, NoisePayload, RelayInfo};
use crate::hyperdht::node::LookupResult;
use crate::hyperdht::terms::{ConnectError, PAYLOAD_VERSION, RelayChoice};
use crate::hyperdht::{commands, error_codes, firewall};
use crate::keys::PublicKey;

/// How long a client waits for the handshake reply from a relay (dht-rpc retries included).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Relays the client sends msg1 through in parallel (JS uses up to 2).
pub const MAX_HANDSHAKE_RELAYS: usize = 2;

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

impl ClientConnect {
    /// Sends msg1 through each of `relays` (the connect fails at once when there is none).
    pub(super) fn send_msg1(&mut self, relays: Vec<SocketAddrV4>, msg1: Vec<u8>) {
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
                target: Some(self.target),
                value: Some(value.clone()),
                socket: None,
                retries: None,
            };
            self.request(req, Pending::Handshake(relay));
        }
        if self.pending.is_empty() {
            self.fail(ConnectError::PeerNotFound);
        }
    }

    pub(super) fn on_handshake_reply(
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
}
