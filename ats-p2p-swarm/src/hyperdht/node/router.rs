//! Relaying PEER_HANDSHAKE / PEER_HOLEPUNCH (hyperdht `lib/router.js`) and the server-role answers.

use super::*;

impl HyperDhtCore {
    pub(super) fn on_peer_handshake(&mut self, now: Instant, req: IncomingRequest) {
        let Some(hs) = req.value.as_deref().and_then(|v| Handshake::decode(v).ok()) else {
            return;
        };
        let Some(target) = req.target else { return };
        if self.listening.contains(&target) {
            if !hs.noise.is_empty() {
                self.push(HyperEvent::PeerHandshake { req, handshake: hs });
            }
            return;
        }
        let relay = self.store.forward(now, &target).map(|f| f.relay);
        if hs.noise.is_empty() {
            return;
        }
        match hs.mode {
            Mode::FromClient => {
                let Some(to) = hs.relay_address.or(relay) else {
                    // Help the client route: empty reply with closer nodes.
                    self.dht.reply(&req, None, false, true);
                    return;
                };
                let value = Handshake {
                    mode: Mode::FromRelay,
                    noise: hs.noise,
                    peer_address: Some(req.from),
                    relay_address: None,
                };
                self.relayed.handshakes_to_server += 1;
                self.dht.relay(&req, Some(value.encode()), to, None);
            }
            Mode::FromRelay => {
                let Some(to) = relay else { return };
                let value = Handshake {
                    mode: Mode::FromSecondRelay,
                    noise: hs.noise,
                    peer_address: hs.peer_address,
                    relay_address: Some(req.from),
                };
                self.relayed.handshakes_to_server += 1;
                self.dht.relay(&req, Some(value.encode()), to, None);
            }
            Mode::FromServer => {
                let Some(client) = hs.peer_address else {
                    return;
                };
                let value = Handshake {
                    mode: Mode::Reply,
                    noise: hs.noise,
                    peer_address: Some(req.from),
                    relay_address: None,
                };
                self.relayed.handshakes_to_client += 1;
                self.dht.reply_to(&req, client, Some(value.encode()));
            }
            _ => {}
        }
    }

    pub(super) fn on_peer_holepunch(&mut self, now: Instant, req: IncomingRequest) {
        let Some(hp) = req.value.as_deref().and_then(|v| Holepunch::decode(v).ok()) else {
            return;
        };
        let Some(target) = req.target else { return };
        let relay = self.store.forward(now, &target).map(|f| f.relay);
        match hp.mode {
            Mode::FromClient => {
                let Some(to) = hp.peer_address.or(relay) else {
                    return;
                };
                let value = Holepunch {
                    mode: Mode::FromRelay,
                    id: hp.id,
                    payload: hp.payload,
                    peer_address: Some(req.from),
                };
                self.relayed.holepunches_to_server += 1;
                self.dht.relay(&req, Some(value.encode()), to, None);
            }
            Mode::FromRelay if self.listening.contains(&target) && hp.peer_address.is_some() => {
                self.push(HyperEvent::PeerHolepunch { req, holepunch: hp });
            }
            Mode::FromServer => {
                let Some(client) = hp.peer_address else {
                    return;
                };
                let value = Holepunch {
                    mode: Mode::Reply,
                    id: hp.id,
                    payload: hp.payload,
                    peer_address: Some(req.from),
                };
                self.relayed.holepunches_to_client += 1;
                self.dht.reply_to(&req, client, Some(value.encode()));
            }
            _ => {}
        }
    }

    /// Server role: answers a [`HyperEvent::PeerHandshake`] with Noise `msg2`, following the
    /// request's mode (direct REPLY, or FROM_SERVER back through the relay). `socket` overrides
    /// the sending socket (a firewalled server sends from its holepunch socket).
    pub fn answer_handshake(
        &mut self,
        req: &IncomingRequest,
        hs: &Handshake,
        noise: Vec<u8>,
        socket: Option<SocketKind>,
    ) {
        match hs.mode {
            Mode::FromClient => {
                let value = Handshake {
                    mode: Mode::Reply,
                    noise,
                    peer_address: None,
                    relay_address: None,
                };
                self.dht
                    .reply(&req.clone(), Some(value.encode()), false, false);
            }
            Mode::FromRelay => {
                let value = Handshake {
                    mode: Mode::FromServer,
                    noise,
                    peer_address: hs.peer_address,
                    relay_address: None,
                };
                self.dht.relay(req, Some(value.encode()), req.from, socket);
            }
            Mode::FromSecondRelay => {
                let Some(to) = hs.relay_address else { return };
                let value = Handshake {
                    mode: Mode::FromServer,
                    noise,
                    peer_address: hs.peer_address,
                    relay_address: None,
                };
                self.dht.relay(req, Some(value.encode()), to, socket);
            }
            _ => {}
        }
    }

    /// Server role: answers a relayed [`HyperEvent::PeerHolepunch`] with an encrypted payload.
    pub fn answer_holepunch(
        &mut self,
        req: &IncomingRequest,
        hp: &Holepunch,
        payload: Vec<u8>,
        socket: Option<SocketKind>,
    ) {
        let value = Holepunch {
            mode: Mode::FromServer,
            id: 0,
            payload,
            peer_address: hp.peer_address,
        };
        self.dht.relay(req, Some(value.encode()), req.from, socket);
    }
}
