//! A secret-stream receiver fed real, edited and junk frames.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::BytesMut;
use rand::SeedableRng as _;
use rand::rngs::StdRng;

use super::Cursor;
use super::noise::{initiator, noise_payload, respond};
use crate::noise::Handshake;
use crate::secret_stream::{Input as StreamInput, SecretStreamCore};

/// The two sides of one completed IK handshake (computed once: it costs several DH operations).
fn handshakes() -> &'static (Handshake, Handshake) {
    static PAIR: OnceLock<(Handshake, Handshake)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let mut client = initiator();
        let msg1 = client
            .write_message(&noise_payload(true, 1).encode())
            .unwrap_or_default();
        let Some((_, msg2, server)) = respond(&msg1, true) else {
            panic!("the reference handshake failed");
        };
        assert!(client.read_message(&msg2).is_ok());
        let Ok(client) = client.into_handshake() else {
            panic!("the reference handshake did not complete");
        };
        (client, server)
    })
}

/// A secret-stream receiver in production's configuration (HyperDHT: the IK handshake is done,
/// the default frame limit, `DEFAULT_MAX_FRAME_LEN`) fed a byte stream the input builds: optionally the
/// sender's real id+header frame and real encrypted messages of fuzzer-chosen contents (up to
/// 4 KiB with flag 2, so both cipher paths run), then
/// fuzzer-chosen byte edits and junk, delivered in fuzzer-chosen chunk sizes. Checks that the
/// messages delivered are always a prefix of those really sent (nothing forged, reordered or
/// altered gets through), and all of them when nothing was tampered with.
pub fn secret_stream(data: &[u8]) {
    let mut input = Cursor { data };
    let (client_hs, server_hs) = handshakes();
    let flags = input.byte();
    let mut sender =
        SecretStreamCore::from_handshake_with_rng(client_hs.clone(), StdRng::from_seed([1; 32]));
    let mut receiver =
        SecretStreamCore::from_handshake_with_rng(server_hs.clone(), StdRng::from_seed([2; 32]));
    let now = Instant::now();

    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut wire = Vec::new();
    if flags & 1 != 0 {
        // The sender's id+header frame, then its messages.
        let n = usize::from(input.byte() % 8);
        for _ in 0..n {
            let msg = if flags & 2 != 0 {
                // Long messages reach the fast ChaCha20-Poly1305 path (from
                // `FAST_PATH_MIN_LEN` bytes, lengths ≡ 0 or 8 mod 16): the fuzzer picks the
                // length and the first bytes, a fill does the rest.
                let len = usize::from(input.u16() % 4096);
                let prefix = usize::from(input.byte() % 65);
                let mut msg = input.take(len.min(prefix)).to_vec();
                msg.resize(len, 0xa5);
                msg
            } else {
                let len = usize::from(input.byte());
                input.take(len).to_vec()
            };
            assert!(sender.send(&msg, now).is_ok());
            if !msg.is_empty() {
                sent.push(msg);
            }
        }
        wire.extend_from_slice(sender.transmit());
    }
    let pristine = wire.clone();
    let edits = usize::from(input.byte() % 4);
    for _ in 0..edits {
        let pos = usize::from(input.u16());
        let xor = input.byte();
        let len = wire.len();
        if let Some(b) = wire.get_mut(pos % len.max(1)) {
            *b ^= xor;
        }
    }
    let chunk = usize::from(input.byte()) + 1;
    wire.extend_from_slice(input.rest());
    let tampered = wire.get(..pristine.len()) != Some(&pristine[..]);

    let mut delivered: Vec<Vec<u8>> = Vec::new();
    let mut rx = BytesMut::new();
    'feed: for piece in wire.chunks(chunk) {
        rx.extend_from_slice(piece);
        loop {
            match receiver.handle_input(&mut rx) {
                Ok(StreamInput::NeedMore) => break,
                Ok(StreamInput::Open) => {}
                Ok(StreamInput::Message(m)) => {
                    assert!(!m.is_empty(), "keep-alive delivered as a message");
                    delivered.push(m.to_vec());
                }
                Ok(StreamInput::Verdict(_)) => panic!("verdict after a finished handshake"),
                // Junk after the real messages may fail the stream, but only after every real
                // message came out (checked below).
                Err(_) => break 'feed,
            }
        }
    }
    assert!(
        delivered.len() <= sent.len() && delivered[..] == sent[..delivered.len()],
        "delivered messages that were not sent"
    );
    if !tampered {
        assert_eq!(
            delivered, sent,
            "untampered messages were not all delivered"
        );
    }
}
