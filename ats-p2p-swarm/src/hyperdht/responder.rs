//! The server's half of the Noise IK handshake (npm `hyperdht` 6.34 `Server._addHandshake`),
//! sans-io: read msg1, let the key [`Firewall`] decide on the client's key *before* anything
//! is answered, decode the client's payload and say what our answer must carry
//! ([`Accepted::answer`]: error code, holepunch offer, relay). The shell ([`super::server`])
//! then writes msg2 with [`Accepted::finish`].

use super::crypto::ns;
use super::listener::Slot;
use super::messages::{HolepunchInfo, NoisePayload, RelayInfo};
use super::terms::{ConnectError, Firewall, PAYLOAD_VERSION, RelayChoice, RelayMode};
use super::{error_codes, firewall};
use crate::keys::{KeyPair, PublicKey};
use crate::noise::{self, NoiseConfig, NoiseHandshake, Step};

/// Holepunch relays offered in a Noise payload (JS offers all of its announce relays, ≤ 20; a
/// few keep msg2 small and the client uses one).
pub const MAX_PAYLOAD_RELAYS: usize = 8;

/// What reading msg1 decided.
#[derive(Debug)]
pub(crate) enum Msg1 {
    /// The firewall refused this key: no answer at all.
    Refused(PublicKey),
    /// The key is allowed; msg2 is still to be written.
    Accepted(Box<Accepted>),
}

/// An allowed msg1, waiting for our payload.
#[derive(Debug)]
pub(crate) struct Accepted {
    noise: NoiseHandshake,
    /// The client's key.
    pub(crate) remote_key: PublicKey,
    /// The client's payload.
    pub(crate) payload: NoisePayload,
}

/// What our msg2 carries and what follows it, from [`Accepted::answer`].
#[derive(Debug)]
pub(crate) struct Answer {
    /// Our payload for msg2.
    pub(crate) payload: NoisePayload,
    /// The relay both sides fall back to, if any.
    pub(crate) relay: Option<RelayChoice>,
    /// We offered a holepunch slot (we are not reachable).
    pub(crate) punch: bool,
    /// The client's stream to connect to; `None`: the handshake ends with msg2.
    pub(crate) remote_id: Option<u32>,
}

/// Reads msg1 as `key_pair`'s responder and asks `firewall` about the client's key.
pub(crate) fn read_msg1(
    key_pair: &KeyPair,
    msg1: &[u8],
    firewall: &Firewall,
) -> Result<Msg1, ConnectError> {
    let prologue = ns::peer_handshake();
    let mut noise = NoiseHandshake::new(NoiseConfig::ik_responder(key_pair.clone(), &prologue))?;
    let client_payload = noise.read_message(msg1)?;
    let Step::Verdict(remote_key) = noise.next_step() else {
        return Err(ConnectError::HandshakeFailed);
    };
    if !firewall(&remote_key) {
        return Ok(Msg1::Refused(remote_key));
    }
    noise.handle_verdict(true)?;
    let payload = NoisePayload::decode(&client_payload).map_err(|_| ConnectError::Payload(0))?;
    Ok(Msg1::Accepted(Box::new(Accepted {
        noise,
        remote_key,
        payload,
    })))
}

impl Accepted {
    /// The client's UDX stream id, when it sent a usable one.
    pub(crate) fn remote_id(&self) -> Option<u32> {
        self.payload
            .udx
            .as_ref()
            .and_then(|u| u32::try_from(u.id).ok())
    }

    /// The error code our answer must carry: a version we do not speak, or no stream to
    /// connect to (then the handshake ends with msg2).
    pub(crate) fn answer_error(&self) -> u64 {
        if self.payload.version != PAYLOAD_VERSION {
            error_codes::VERSION_MISMATCH
        } else if self.remote_id().is_none() {
            error_codes::ABORTED
        } else {
            error_codes::NONE
        }
    }

    /// Our answer by hyperdht's rules, from `payload` (our addresses, stream id and class):
    /// - the error code of [`Self::answer_error`];
    /// - unless we are reachable, a holepunch offer under `slot`: the nodes we announced to
    ///   (`relays`, at most [`MAX_PAYLOAD_RELAYS`]), each with our address as it saw us (a JS
    ///   client only holepunches when this list is non-empty);
    /// - the relay: ours (`ours`, proposed in the payload; we pair as initiator) if we have
    ///   one, else the client's (it pairs as initiator); none when relaying is disabled.
    pub(crate) fn answer(
        &self,
        mut payload: NoisePayload,
        slot: Slot,
        relays: &[RelayInfo],
        mode: RelayMode,
        ours: Option<RelayChoice>,
    ) -> Answer {
        payload.error = self.answer_error();
        let punch = payload.firewall != firewall::OPEN;
        if punch {
            payload.holepunch = Some(HolepunchInfo {
                id: slot,
                relays: relays.iter().take(MAX_PAYLOAD_RELAYS).copied().collect(),
            });
        }
        let relay = match mode {
            RelayMode::Disabled => None,
            _ => match ours {
                Some(ours) => {
                    payload.relay_through = Some(ours.to_payload());
                    Some(ours)
                }
                None => RelayChoice::agree(mode, None, self.payload.relay_through.as_ref()),
            },
        };
        let remote_id = self
            .remote_id()
            .filter(|_| payload.error == error_codes::NONE);
        Answer {
            payload,
            relay,
            punch,
            remote_id,
        }
    }

    /// Writes msg2 carrying `payload`; returns it and the handshake's keys.
    pub(crate) fn finish(
        mut self,
        payload: &NoisePayload,
    ) -> Result<(Vec<u8>, noise::Handshake), ConnectError> {
        let msg2 = self.noise.write_message(&payload.encode())?;
        let hs = self.noise.into_handshake()?;
        Ok((msg2, hs))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hyperdht::messages::UdxInfo;

    fn server() -> KeyPair {
        KeyPair::from_seed([0x51; 32])
    }

    fn client() -> KeyPair {
        KeyPair::from_seed([0xc1; 32])
    }

    fn payload(version: u64, udx: Option<u64>) -> NoisePayload {
        NoisePayload {
            version,
            error: 0,
            firewall: 0,
            holepunch: None,
            addresses4: Vec::new(),
            addresses6: Vec::new(),
            udx: udx.map(|id| UdxInfo {
                version: 1,
                reusable_socket: false,
                id,
                seq: 0,
            }),
            secret_stream: Some(1),
            relay_through: None,
            relay_addresses: None,
        }
    }

    /// A real msg1 from the client carrying `payload`, and its initiator state.
    fn msg1_with(payload: &[u8]) -> (NoiseHandshake, Vec<u8>) {
        let mut i = NoiseHandshake::new(NoiseConfig::ik_initiator(
            client(),
            &ns::peer_handshake(),
            server().public_key(),
        ))
        .unwrap();
        let m = i.write_message(payload).unwrap();
        (i, m)
    }

    fn msg1(p: &NoisePayload) -> (NoiseHandshake, Vec<u8>) {
        msg1_with(&p.encode())
    }

    fn allow_all() -> Firewall {
        Arc::new(|_| true)
    }

    #[test]
    fn an_allowed_key_completes_the_handshake() {
        let (mut i, m) = msg1(&payload(PAYLOAD_VERSION, Some(9)));
        let Msg1::Accepted(a) = read_msg1(&server(), &m, &allow_all()).unwrap() else {
            panic!("accepted");
        };
        assert_eq!(a.remote_key, client().public_key());
        assert_eq!(a.remote_id(), Some(9));
        assert_eq!(a.answer_error(), error_codes::NONE);
        let (msg2, hs) = a.finish(&payload(PAYLOAD_VERSION, Some(3))).unwrap();
        let back = i.read_message(&msg2).unwrap();
        assert_eq!(NoisePayload::decode(&back).unwrap().udx.unwrap().id, 3);
        let ih = i.into_handshake().unwrap();
        assert_eq!(ih.hash, hs.hash);
        assert_eq!(ih.tx, hs.rx);
    }

    #[test]
    fn a_refused_key_gets_nothing() {
        let (_, m) = msg1(&payload(PAYLOAD_VERSION, Some(9)));
        let refuse: Firewall = Arc::new(|_| false);
        match read_msg1(&server(), &m, &refuse).unwrap() {
            Msg1::Refused(k) => assert_eq!(k, client().public_key()),
            Msg1::Accepted(_) => panic!("refused"),
        }
    }

    #[test]
    fn bad_versions_and_missing_streams_are_answered_with_an_error() {
        // A version we do not speak (the payload then carries only its version).
        let (_, m) = msg1_with(&[2]);
        let Msg1::Accepted(a) = read_msg1(&server(), &m, &allow_all()).unwrap() else {
            panic!("accepted");
        };
        assert_eq!(a.answer_error(), error_codes::VERSION_MISMATCH);
        let (_, m) = msg1(&payload(PAYLOAD_VERSION, None));
        let Msg1::Accepted(a) = read_msg1(&server(), &m, &allow_all()).unwrap() else {
            panic!("accepted");
        };
        assert_eq!(a.answer_error(), error_codes::ABORTED);
    }

    fn accepted(client_payload: &NoisePayload) -> Accepted {
        let (_, m) = msg1(client_payload);
        match read_msg1(&server(), &m, &allow_all()).unwrap() {
            Msg1::Accepted(a) => *a,
            Msg1::Refused(_) => panic!("accepted"),
        }
    }

    fn relay_info(i: u8) -> RelayInfo {
        RelayInfo {
            relay_address: std::net::SocketAddrV4::new([10, 0, 0, i].into(), 49737),
            peer_address: std::net::SocketAddrV4::new([203, 0, 113, 9].into(), 5000),
        }
    }

    fn relay_choice(seed: u8) -> RelayChoice {
        RelayChoice {
            key: KeyPair::from_seed([seed; 32]).public_key(),
            token: [seed; 32],
            initiator: true,
        }
    }

    #[test]
    fn the_answer_offers_a_holepunch_only_when_not_reachable() {
        let a = accepted(&payload(PAYLOAD_VERSION, Some(9)));
        let relays: Vec<RelayInfo> = (1..=12).map(relay_info).collect();
        let mut ours = payload(PAYLOAD_VERSION, Some(3));
        ours.firewall = firewall::RANDOM;
        let answer = a.answer(ours.clone(), 7, &relays, RelayMode::Disabled, None);
        let offer = answer.payload.holepunch.expect("a holepunch offer");
        assert_eq!(offer.id, 7);
        assert_eq!(offer.relays, relays[..MAX_PAYLOAD_RELAYS].to_vec());
        assert!(answer.punch);
        assert_eq!(answer.remote_id, Some(9));
        assert_eq!(answer.payload.error, error_codes::NONE);
        ours.firewall = firewall::OPEN;
        let answer = a.answer(ours, 7, &relays, RelayMode::Disabled, None);
        assert!(answer.payload.holepunch.is_none());
        assert!(!answer.punch);
    }

    #[test]
    fn the_answer_names_our_relay_first_then_the_clients() {
        let mut client_payload = payload(PAYLOAD_VERSION, Some(9));
        client_payload.relay_through = Some(relay_choice(0xaa).to_payload());
        let a = accepted(&client_payload);
        let ours = payload(PAYLOAD_VERSION, Some(3));
        // Ours, proposed in the payload.
        let answer = a.answer(
            ours.clone(),
            0,
            &[],
            RelayMode::Auto,
            Some(relay_choice(0xbb)),
        );
        assert_eq!(answer.relay, Some(relay_choice(0xbb)));
        assert_eq!(
            answer.payload.relay_through,
            Some(relay_choice(0xbb).to_payload())
        );
        // None of ours: the client's, and it pairs as initiator.
        let answer = a.answer(ours.clone(), 0, &[], RelayMode::Auto, None);
        let theirs = answer.relay.expect("the client's relay");
        assert_eq!(theirs.key, relay_choice(0xaa).key);
        assert!(!theirs.initiator);
        assert!(answer.payload.relay_through.is_none());
        // Relaying disabled: none at all.
        let answer = a.answer(ours, 0, &[], RelayMode::Disabled, Some(relay_choice(0xbb)));
        assert_eq!(answer.relay, None);
        assert!(answer.payload.relay_through.is_none());
    }

    #[test]
    fn an_answer_with_an_error_connects_nothing() {
        let a = accepted(&payload(PAYLOAD_VERSION, None));
        let answer = a.answer(
            payload(PAYLOAD_VERSION, Some(3)),
            0,
            &[],
            RelayMode::Auto,
            None,
        );
        assert_eq!(answer.payload.error, error_codes::ABORTED);
        assert_eq!(answer.remote_id, None);
    }

    #[test]
    fn junk_msg1_is_an_error_not_a_panic() {
        for junk in [&[][..], &[0u8; 31][..], &[0xff; 200][..]] {
            assert!(read_msg1(&server(), junk, &allow_all()).is_err());
        }
        // An undecodable payload inside a valid msg1.
        let (_, m) = msg1_with(&[0xff; 5]);
        assert!(matches!(
            read_msg1(&server(), &m, &allow_all()),
            Err(ConnectError::Payload(0))
        ));
    }
}
