//! Hostile input to the secret stream: random bytes, truncated frames, oversized lengths, wrong
//! ids, tampered ciphertext. Every case must end in a clear error or "need more bytes", never a
//! panic, never plaintext that was not sent, and never a buffer beyond the frame limit.
// Test helpers outside #[test] fns may unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::noise::{Handshake, NoiseConfig, NoiseHandshake};
use ats_p2p_swarm::secret_stream::{Input, SecretStream, SecretStreamCore, SecretStreamError};
use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// A real IK handshake between two fixed keys (made once: ephemeral keys are random).
fn handshakes() -> (Handshake, Handshake) {
    static PAIR: std::sync::OnceLock<(Handshake, Handshake)> = std::sync::OnceLock::new();
    PAIR.get_or_init(make_handshakes).clone()
}

fn make_handshakes() -> (Handshake, Handshake) {
    let ki = KeyPair::from_seed([1; 32]);
    let kr = KeyPair::from_seed([2; 32]);
    let mut i = NoiseHandshake::new(NoiseConfig::ik_initiator(ki, b"", kr.public_key())).unwrap();
    let mut r = NoiseHandshake::new(NoiseConfig::ik_responder(kr, b"")).unwrap();
    let m1 = i.write_message(b"").unwrap();
    r.read_message(&m1).unwrap();
    r.handle_verdict(true).unwrap();
    let m2 = r.write_message(b"").unwrap();
    i.read_message(&m2).unwrap();
    (i.into_handshake().unwrap(), r.into_handshake().unwrap())
}

/// The initiator's wire bytes: id+header then `messages`; returns (wire, frame boundaries).
fn transcript(messages: &[Vec<u8>]) -> (Vec<u8>, SecretStreamCore) {
    let (hi, hr) = handshakes();
    let mut tx = SecretStreamCore::from_handshake(hi);
    let now = Instant::now();
    for m in messages {
        tx.send(m, now).unwrap();
    }
    let wire = tx.transmit().to_vec();
    let rx = SecretStreamCore::from_handshake(hr);
    (wire, rx)
}

/// Feeds `wire` in `chunk`-sized pieces; returns the messages delivered and the final outcome.
fn feed(
    rx: &mut SecretStreamCore,
    wire: &[u8],
    chunk: usize,
) -> (Vec<Vec<u8>>, Result<(), SecretStreamError>, usize) {
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut max_cap = 0;
    for piece in wire.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            max_cap = max_cap.max(buf.capacity());
            match rx.handle_input(&mut buf) {
                Ok(Input::Message(m)) => got.push(m.to_vec()),
                Ok(Input::Open) => {}
                Ok(Input::NeedMore) => break,
                Ok(Input::Verdict(_)) => panic!("no verdict after a pre-made handshake"),
                Err(e) => return (got, Err(e), max_cap),
            }
        }
    }
    (got, Ok(()), max_cap)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(crate::common::proptest_config(cases, 0x5eed_3003))
}

#[test]
fn random_bytes_never_panic_and_stay_bounded() {
    let mut runner = runner(300);
    runner
        .run(
            &(
                proptest::collection::vec(any::<u8>(), 0..4096),
                1usize..600,
                any::<bool>(),
            ),
            |(bytes, chunk, xx)| {
                let mut rx = if xx {
                    SecretStreamCore::xx_responder(KeyPair::from_seed([3; 32])).unwrap()
                } else {
                    SecretStreamCore::from_handshake(handshakes().1)
                };
                rx.set_max_frame_len(64 * 1024);
                let (got, _res, max_cap) = feed(&mut rx, &bytes, chunk);
                prop_assert!(got.is_empty(), "random bytes must never authenticate");
                prop_assert!(max_cap <= 64 * 1024 + 8192, "buffer grew to {max_cap}");
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn truncated_stream_delivers_a_prefix_then_waits() {
    let messages: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; i * 37 + 1]).collect();
    let (wire, _) = transcript(&messages);
    let mut runner = runner(200);
    runner
        .run(&(0..wire.len(), 1usize..300), |(cut, chunk)| {
            let (_, mut rx) = transcript(&[]);
            let (got, res, _) = feed(&mut rx, &wire[..cut], chunk);
            prop_assert!(
                res.is_ok(),
                "a truncated stream is not an error until EOF: {res:?}"
            );
            prop_assert_eq!(&got[..], &messages[..got.len()]);
            Ok(())
        })
        .unwrap();
}

#[test]
fn tampered_ciphertext_is_refused() {
    let messages: Vec<Vec<u8>> = (0..10).map(|i| vec![0xA5; i * 100 + 3]).collect();
    let (wire, _) = transcript(&messages);
    // sanity: the untampered wire delivers everything
    let (_, mut rx) = transcript(&[]);
    let (got, res, _) = feed(&mut rx, &wire, 999);
    assert!(res.is_ok());
    assert_eq!(got, messages);
    let mut runner = runner(300);
    runner
        .run(
            &(0..wire.len(), 0u8..8, 1usize..5000),
            |(pos, bit, chunk)| {
                let (_, mut rx) = transcript(&[]);
                let mut bad = wire.clone();
                bad[pos] ^= 1 << bit;
                let (got, res, _) = feed(&mut rx, &bad, chunk);
                // never a message that was not sent, and the tampered frame never passes
                prop_assert!(got.len() < messages.len() || res.is_err());
                prop_assert_eq!(&got[..], &messages[..got.len()]);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn oversized_length_is_refused_before_buffering() {
    let (_, mut rx) = transcript(&[]);
    rx.set_max_frame_len(1 << 16);
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0, 0, 0][..]);
    match rx.handle_input(&mut buf) {
        Err(SecretStreamError::FrameTooLong { len, max }) => {
            assert_eq!((len, max), ((1 << 24) - 1, 1 << 16));
        }
        other => panic!("expected FrameTooLong, got {other:?}"),
    }
    assert!(buf.capacity() < 1024);
    // and a failed stream stays failed
    assert!(matches!(
        rx.handle_input(&mut buf),
        Err(SecretStreamError::Failed)
    ));
}

#[test]
fn wrong_id_and_bad_header_length() {
    let (wire, _) = transcript(&[b"data".to_vec()]);
    let mut bad = wire.clone();
    bad[3] ^= 0x80; // first byte of the id
    let (_, mut rx) = transcript(&[]);
    let (got, res, _) = feed(&mut rx, &bad, 1000);
    assert!(got.is_empty());
    assert!(
        matches!(res, Err(SecretStreamError::WrongStreamId)),
        "{res:?}"
    );

    let (_, mut rx) = transcript(&[]);
    let (_, res, _) = feed(
        &mut rx,
        &[55, 0, 0]
            .iter()
            .copied()
            .chain([0u8; 55])
            .collect::<Vec<_>>(),
        100,
    );
    assert!(
        matches!(res, Err(SecretStreamError::BadHeaderLength(55))),
        "{res:?}"
    );

    // the initiator's own id sent back to it (a reflection) is refused too
    let (hi, _) = handshakes();
    let mut me = SecretStreamCore::from_handshake(hi.clone());
    let mirror = SecretStreamCore::from_handshake(hi);
    let reflected = mirror.transmit().to_vec();
    let (_, res, _) = feed(&mut me, &reflected, 100);
    assert!(
        matches!(res, Err(SecretStreamError::WrongStreamId)),
        "{res:?}"
    );

    // a too-short encrypted message after a good header
    let (wire, _) = transcript(&[]);
    let mut short = wire.clone();
    short.extend_from_slice(&[3, 0, 0, 1, 2, 3]);
    let (_, mut rx) = transcript(&[]);
    let (_, res, _) = feed(&mut rx, &short, 7);
    assert!(
        matches!(res, Err(SecretStreamError::MessageTooShort(3))),
        "{res:?}"
    );
}

#[tokio::test]
async fn async_stream_reports_garbage_and_truncation_as_errors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(Duration::from_secs(20), async {
        // garbage instead of a Noise handshake
        let (a, mut b) = tokio::io::duplex(4096);
        b.write_all(&[0x20, 0, 0]).await.unwrap();
        b.write_all(&[0x5a; 32]).await.unwrap(); // not a valid point: DH fails
        let r = SecretStream::accept(a, KeyPair::generate(), |_: &_| true).await;
        assert!(r.is_err());

        // a pre-made stream whose peer dies inside a frame
        let (hi, hr) = handshakes();
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut s = SecretStream::from_handshake(a, hi).await.unwrap();
        let mut peer = SecretStreamCore::from_handshake(hr);
        peer.send(b"complete message", Instant::now()).unwrap();
        peer.send(b"this one is cut", Instant::now()).unwrap();
        let wire = peer.transmit().to_vec();
        let (_br, mut bw) = tokio::io::split(b);
        bw.write_all(&wire[..wire.len() - 5]).await.unwrap();
        bw.shutdown().await.unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"complete message");
        let err = s.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    })
    .await
    .unwrap();
}
