//! Noise IK as HyperDHT runs it: the server's pure half of `hyperdht::server` against arbitrary
//! and edited msg1, the client against arbitrary msg2.

use std::sync::{Arc, OnceLock};

use super::Cursor;
use crate::KeyPair;
use crate::hyperdht::crypto::ns;
use crate::hyperdht::messages::{NoisePayload, UdxInfo};
use crate::hyperdht::{Firewall, error_codes, responder};
use crate::keys::PublicKey;
use crate::noise::{Handshake, NoiseConfig, NoiseHandshake};

/// The server's (responder's) fixed identity (derived once: key derivation costs).
fn server_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::from_seed([0x51; 32])).clone()
}

/// The client's (initiator's) fixed identity.
fn client_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::from_seed([0xc1; 32])).clone()
}

/// The initiator as `hyperdht::connect` builds it, with a fixed ephemeral key.
pub(super) fn initiator() -> NoiseHandshake {
    let mut cfg = NoiseConfig::ik_initiator(
        client_keys(),
        &ns::peer_handshake(),
        server_keys().public_key(),
    );
    cfg.ephemeral_seed = Some([0xce; 32]);
    match NoiseHandshake::new(cfg) {
        Ok(hs) => hs,
        Err(e) => panic!("initiator: {e}"),
    }
}

/// The payload our fuzzed server answers with.
fn server_payload() -> NoisePayload {
    noise_payload(true, 7)
}

/// A version-1 Noise payload, with a UDX stream id or without one.
pub(super) fn noise_payload(with_udx: bool, id: u32) -> NoisePayload {
    NoisePayload {
        version: 1,
        error: 0,
        firewall: 0,
        holepunch: None,
        addresses4: Vec::new(),
        addresses6: Vec::new(),
        udx: with_udx.then_some(UdxInfo {
            version: 1,
            reusable_socket: false,
            id: u64::from(id),
            seq: 0,
        }),
        secret_stream: Some(1),
        relay_through: None,
        relay_addresses: None,
    }
}

/// What the server does with msg1: exactly production's pure half of `hyperdht::server`
/// ([`responder::read_msg1`]: read msg1, ask the firewall before anything is answered, decode
/// the client's payload; then [`responder::Accepted::finish`] writes msg2). Returns the client's
/// payload, msg2 and the server's handshake, or `None` when refused or invalid. Checks that
/// the firewall is asked only about the real client's key, that a refused key is never
/// answered, and the error code the answer must carry.
pub(super) fn respond(msg1: &[u8], allow: bool) -> Option<(NoisePayload, Vec<u8>, Handshake)> {
    let firewall: Firewall = Arc::new(move |key: &PublicKey| {
        // Only the holder of the client's secret key can make msg1 carry a key.
        assert_eq!(
            *key,
            client_keys().public_key(),
            "verdict for a key nobody sent"
        );
        allow
    });
    match responder::read_msg1(&server_keys(), msg1, &firewall) {
        Err(_) => None,
        Ok(responder::Msg1::Refused(key)) => {
            assert!(!allow, "an allowed key was refused");
            assert_eq!(key, client_keys().public_key());
            None
        }
        Ok(responder::Msg1::Accepted(accepted)) => {
            assert!(allow, "a refused key was accepted");
            let payload = accepted.payload.clone();
            let expected_error = if payload.version != 1 {
                error_codes::VERSION_MISMATCH
            } else if payload.udx.is_none_or(|u| u32::try_from(u.id).is_err()) {
                error_codes::ABORTED
            } else {
                error_codes::NONE
            };
            assert_eq!(accepted.answer_error(), expected_error);
            let (msg2, hs) = match accepted.finish(&server_payload()) {
                Ok(done) => done,
                Err(e) => panic!("msg2 after an accepted msg1: {e}"),
            };
            Some((payload, msg2, hs))
        }
    }
}

/// Noise IK as HyperDHT runs it. The first input byte picks the case (`byte & 3`), whether
/// the server's firewall allows the client (bit 2 clear) and whether the client's payload is
/// a well-formed Noise payload (bit 3 set) or raw bytes:
/// 0. the server (fixed static key) reads arbitrary bytes as msg1;
/// 1. a real msg1 carrying the payload, then fuzzer-chosen byte edits, truncation or
///    extension: an unmodified message with a decodable payload must complete the handshake
///    on both sides with equal keys, and any modification must be refused;
/// 2. (and 3) the client reads arbitrary bytes as msg2 after sending a real msg1.
///
/// Returns whether a handshake completed (so a test can show an honest input reaches the
/// success path).
pub fn noise_ik(data: &[u8]) -> bool {
    let mut input = Cursor { data };
    let case = input.byte();
    let allow = case & 4 == 0;
    match case & 3 {
        0 => {
            let msg1 = input.rest();
            if let Some((payload, _, _)) = respond(msg1, allow) {
                // Forging msg1 needs the client's secret key: fuzzing never succeeds.
                panic!("arbitrary msg1 accepted (payload {payload:?})");
            }
            false
        }
        1 => {
            let payload_len = usize::from(input.byte());
            let raw = input.take(payload_len);
            let payload = if case & 8 != 0 {
                let mut fields = Cursor { data: raw };
                let flags = fields.byte();
                noise_payload(flags & 1 == 0, fields.u32()).encode()
            } else {
                raw.to_vec()
            };
            let mut client = initiator();
            let msg1 = match client.write_message(&payload) {
                Ok(m) => m,
                Err(e) => panic!("msg1: {e}"),
            };
            let mut edited = msg1.clone();
            let edits = usize::from(input.byte() % 4);
            for _ in 0..edits {
                let pos = usize::from(input.u16());
                let xor = input.byte();
                if let Some(b) = edited.get_mut(pos % msg1.len()) {
                    *b ^= xor;
                }
            }
            match input.byte() % 4 {
                0 => {
                    let cut = usize::from(input.u16()) % (edited.len() + 1);
                    edited.truncate(cut);
                }
                1 => edited.extend_from_slice(input.take(8)),
                _ => {}
            }
            let decodable = NoisePayload::decode(&payload).ok();
            match respond(&edited, allow) {
                Some((got, msg2, server_hs)) => {
                    assert_eq!(edited, msg1, "a modified msg1 was accepted");
                    assert_eq!(Some(got), decodable, "payload changed in transit");
                    let reply = client.read_message(&msg2);
                    assert_eq!(reply, Ok(server_payload().encode()));
                    let client_hs = match client.into_handshake() {
                        Ok(hs) => hs,
                        Err(e) => panic!("client handshake: {e}"),
                    };
                    assert_eq!(client_hs.tx, server_hs.rx);
                    assert_eq!(client_hs.rx, server_hs.tx);
                    assert_eq!(client_hs.hash, server_hs.hash);
                    assert_eq!(server_hs.remote_public_key, client_keys().public_key());
                    true
                }
                None => {
                    assert!(
                        !allow || edited != msg1 || decodable.is_none(),
                        "an unmodified msg1 with a valid payload was refused"
                    );
                    false
                }
            }
        }
        _ => {
            let mut client = initiator();
            if client.write_message(b"").is_err() {
                panic!("msg1");
            }
            let msg2 = input.rest();
            if client.read_message(msg2).is_ok() {
                panic!("arbitrary msg2 accepted");
            }
            assert!(client.into_handshake().is_err());
            false
        }
    }
}
