//! Rust ↔ Rust secret streams over `tokio::io::duplex` and TCP on 127.0.0.1.
// Test helpers outside #[test] fns may unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ats_p2p_swarm::noise::{NoiseConfig, NoiseError, NoiseHandshake, Pattern, Step};
use ats_p2p_swarm::secret_stream::{RawStream, SecretStream, SecretStreamError};
use ats_p2p_swarm::{KeyPair, PublicKey};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

async fn pair_duplex(
    buf: usize,
) -> (
    SecretStream<tokio::io::DuplexStream>,
    SecretStream<tokio::io::DuplexStream>,
) {
    let (a, b) = tokio::io::duplex(buf);
    let ka = KeyPair::from_seed([1; 32]);
    let kb = KeyPair::from_seed([2; 32]);
    let pb = kb.public_key();
    let pa = ka.public_key();
    let (x, y) = tokio::join!(
        SecretStream::connect(a, ka, Some(pb)),
        SecretStream::accept(b, kb, move |k: &PublicKey| *k == pa)
    );
    (x.unwrap(), y.unwrap())
}

/// Writes `len` pattern bytes in uneven chunks, then shuts down; returns the SHA-256.
async fn send_all<W: AsyncWrite + Unpin>(mut w: W, len: usize, seed: usize) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut sent = 0;
    let sizes = [1usize, 7, 1000, 65536, 200_000, 3, 70_000];
    let mut k = 0;
    while sent < len {
        let n = sizes[k % sizes.len()].min(len - sent);
        k += 1;
        let chunk: Vec<u8> = (sent..sent + n).map(|i| pattern_byte(i + seed)).collect();
        w.write_all(&chunk).await.unwrap();
        hasher.update(&chunk);
        sent += n;
    }
    w.shutdown().await.unwrap();
    hasher.finalize().into()
}

async fn recv_all<R: AsyncRead + Unpin>(mut r: R) -> (usize, [u8; 32]) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 50_000];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    (total, hasher.finalize().into())
}

async fn bulk_both_ways<S: RawStream + Send + 'static>(
    a: SecretStream<S>,
    b: SecretStream<S>,
    len: usize,
) {
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let (sa, sb, (na, ha), (nb, hb)) = tokio::join!(
        send_all(aw, len, 0),
        send_all(bw, len, 99),
        recv_all(br),
        recv_all(ar)
    );
    assert_eq!((na, nb), (len, len));
    assert_eq!(sa, ha);
    assert_eq!(sb, hb);
}

#[tokio::test]
async fn duplex_bulk_both_ways_and_keys() {
    timeout(LIMIT, async {
        let (a, b) = pair_duplex(64 * 1024).await;
        assert_eq!(
            a.remote_public_key(),
            KeyPair::from_seed([2; 32]).public_key()
        );
        assert_eq!(
            b.remote_public_key(),
            KeyPair::from_seed([1; 32]).public_key()
        );
        assert_eq!(a.handshake_hash(), b.handshake_hash());
        assert!(a.is_initiator() && !b.is_initiator());
        bulk_both_ways(a, b, 8 << 20).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tcp_bulk_both_ways() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            SecretStream::accept(sock, KeyPair::from_seed([2; 32]), |_: &PublicKey| true)
                .await
                .unwrap()
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        let a = SecretStream::connect(sock, KeyPair::from_seed([1; 32]), None)
            .await
            .unwrap();
        let b = server.await.unwrap();
        bulk_both_ways(a, b, 16 << 20).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn half_close_lets_the_other_side_keep_writing() {
    timeout(LIMIT, async {
        let (mut a, mut b) = pair_duplex(4096).await;
        a.write_all(b"request").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request");
        // b can still answer after a's half-close
        b.write_all(b"response after eof").await.unwrap();
        b.shutdown().await.unwrap();
        let mut back = Vec::new();
        a.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"response after eof");
        assert!(
            a.write_all(b"x").await.is_err(),
            "write after shutdown must fail"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn keep_alives_are_sent_when_idle_and_filtered() {
    timeout(LIMIT, async {
        let (raw_a, mut tap) = tokio::io::duplex(1 << 16);
        let (raw_b, tap_b) = tokio::io::duplex(1 << 16);
        // Relay b<->tap with a byte counter on the a->b direction.
        let (mut tap_r, mut tap_w) = tokio::io::split(tap_b);
        let _ = &mut tap;
        let (mut ar, mut aw) = tokio::io::split(tap);
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = counted.clone();
        let fwd = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = ar.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                c2.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                tap_w.write_all(&buf[..n]).await.unwrap();
            }
            let _ = tap_w.shutdown().await;
        });
        let back = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tap_r, &mut aw).await;
        });
        let (a, b) = tokio::join!(
            SecretStream::connect(raw_a, KeyPair::from_seed([1; 32]), None),
            SecretStream::accept(raw_b, KeyPair::from_seed([2; 32]), |_: &PublicKey| true)
        );
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        let after_handshake = counted.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(after_handshake, 35 + 67 + 59);
        // a idles while polling a read for 12 s: two keep-alives (20 bytes each) go out
        let mut one = [0u8; 1];
        let r = timeout(Duration::from_millis(12_000), a.read(&mut one)).await;
        assert!(r.is_err(), "nothing to read yet");
        assert_eq!(
            counted.load(std::sync::atomic::Ordering::SeqCst) - after_handshake,
            40
        );
        // b's reader filters them: the first byte it sees is real data
        let reader = tokio::spawn(async move {
            let mut got = [0u8; 5];
            b.read_exact(&mut got).await.unwrap();
            got
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        a.write_all(b"hello").await.unwrap();
        a.flush().await.unwrap();
        assert_eq!(&reader.await.unwrap(), b"hello");
        drop(a);
        fwd.await.unwrap();
        back.abort();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn wrong_expected_key_fails_on_both_sides() {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(4096);
        let wrong = KeyPair::from_seed([9; 32]).public_key();
        let (x, y) = tokio::join!(
            SecretStream::connect(a, KeyPair::from_seed([1; 32]), Some(wrong)),
            SecretStream::accept(b, KeyPair::from_seed([2; 32]), |_: &PublicKey| true)
        );
        assert!(matches!(
            x.unwrap_err(),
            SecretStreamError::Noise(NoiseError::Rejected(k)) if k == KeyPair::from_seed([2; 32]).public_key()
        ));
        assert!(y.is_err(), "the responder must not get a session");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn responder_firewall_refuses_unknown_key() {
    timeout(LIMIT, async {
        let (a, b) = tokio::io::duplex(4096);
        let allowed = KeyPair::from_seed([7; 32]).public_key();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen2 = seen.clone();
        let (x, y) = tokio::join!(
            SecretStream::connect(a, KeyPair::from_seed([1; 32]), None),
            SecretStream::accept(b, KeyPair::from_seed([2; 32]), move |k: &PublicKey| {
                *seen2.lock().unwrap() = Some(*k);
                *k == allowed
            })
        );
        assert!(matches!(
            y.unwrap_err(),
            SecretStreamError::Noise(NoiseError::Rejected(_))
        ));
        assert!(x.is_err(), "the initiator must not get a session either");
        assert_eq!(
            *seen.lock().unwrap(),
            Some(KeyPair::from_seed([1; 32]).public_key())
        );
    })
    .await
    .unwrap();
}

/// HyperDHT mode: an IK handshake done elsewhere, then `from_handshake` on both ends.
#[tokio::test]
async fn from_ik_handshake() {
    timeout(LIMIT, async {
        let ki = KeyPair::from_seed([1; 32]);
        let kr = KeyPair::from_seed([2; 32]);
        let mut i =
            NoiseHandshake::new(NoiseConfig::ik_initiator(ki, b"prologue", kr.public_key()))
                .unwrap();
        let mut r = NoiseHandshake::new(NoiseConfig::ik_responder(kr, b"prologue")).unwrap();
        assert_eq!(i.next_step(), Step::Write);
        let m1 = i.write_message(b"client").unwrap();
        assert_eq!(r.read_message(&m1).unwrap(), b"client");
        r.handle_verdict(true).unwrap();
        let m2 = r.write_message(b"server").unwrap();
        assert_eq!(i.read_message(&m2).unwrap(), b"server");
        let (hi, hr) = (i.into_handshake().unwrap(), r.into_handshake().unwrap());
        let hash = hi.hash;
        let (a, b) = tokio::io::duplex(1 << 16);
        let a = SecretStream::from_handshake(a, hi).await.unwrap();
        let b = SecretStream::from_handshake(b, hr).await.unwrap();
        assert_eq!(a.handshake_hash(), hash);
        bulk_both_ways(a, b, 1 << 20).await;
        let _ = Pattern::IK;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn eof_inside_the_handshake_is_an_error() {
    timeout(LIMIT, async {
        let (a, mut b) = tokio::io::duplex(4096);
        let client = tokio::spawn(SecretStream::connect(a, KeyPair::from_seed([1; 32]), None));
        let mut first = [0u8; 35];
        b.read_exact(&mut first).await.unwrap();
        assert_eq!(&first[..3], &[32, 0, 0]);
        drop(b);
        assert!(matches!(
            client.await.unwrap().unwrap_err(),
            SecretStreamError::UnexpectedEof | SecretStreamError::Io(_)
        ));
    })
    .await
    .unwrap();
}

/// A raw pipe that moves 7 bytes at a time: every frame is split across many reads and writes,
/// and every write path meets backpressure.
#[tokio::test]
async fn tiny_raw_buffer_bulk() {
    timeout(LIMIT, async {
        let (a, b) = pair_duplex(7).await;
        bulk_both_ways(a, b, 300_000).await;
    })
    .await
    .unwrap();
}

/// Reader and writer halves in separate tasks on a multi-threaded runtime, over TCP with small
/// socket buffers: the halves must not steal each other's wake-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_halves_in_separate_tasks() {
    timeout(LIMIT, async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            socket2::SockRef::from(&sock)
                .set_recv_buffer_size(32 * 1024)
                .unwrap();
            SecretStream::accept(sock, KeyPair::generate(), |_: &PublicKey| true)
                .await
                .unwrap()
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        socket2::SockRef::from(&sock)
            .set_send_buffer_size(32 * 1024)
            .unwrap();
        let a = SecretStream::connect(sock, KeyPair::generate(), None)
            .await
            .unwrap();
        let b = server.await.unwrap();
        let len = 8 << 20;
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let t1 = tokio::spawn(send_all(aw, len, 1));
        let t2 = tokio::spawn(send_all(bw, len, 2));
        let t3 = tokio::spawn(recv_all(br));
        let t4 = tokio::spawn(recv_all(ar));
        let (sa, sb) = (t1.await.unwrap(), t2.await.unwrap());
        let ((na, ha), (nb, hb)) = (t3.await.unwrap(), t4.await.unwrap());
        assert_eq!((na, nb), (len, len));
        assert_eq!((sa, sb), (ha, hb));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn vectored_writes_arrive_in_order_and_seal_header_with_payload() {
    use ats_p2p_swarm::secret_stream::{MAX_FRAME_PLAINTEXT, VECTORED_SLACK};
    use std::io::IoSlice;
    timeout(LIMIT, async {
        let (mut a, mut b) = pair_duplex(1 << 20).await;
        // A 5-byte header and a full payload (one message), a tiny pair (coalesced), and an
        // oversized pair (split at the cap).
        let header = [9u8; 5];
        let payload: Vec<u8> = (0..MAX_FRAME_PLAINTEXT).map(pattern_byte).collect();
        let big: Vec<u8> = (0..3 * MAX_FRAME_PLAINTEXT)
            .map(|i| pattern_byte(i + 7))
            .collect();
        let mut expected = Vec::new();
        let writes: Vec<Vec<&[u8]>> = vec![
            vec![&header, &payload],
            vec![b"ab", b"cd"],
            vec![&header, &big],
            vec![&[], &payload[..100]],
        ];
        let writer = async {
            for parts in &writes {
                let mut done = 0usize;
                let total: usize = parts.iter().map(|p| p.len()).sum();
                while done < total {
                    // Rebuild the slices past what was written.
                    let mut skip = done;
                    let mut slices = Vec::new();
                    for p in parts {
                        if skip >= p.len() {
                            skip -= p.len();
                            continue;
                        }
                        slices.push(IoSlice::new(&p[skip..]));
                        skip = 0;
                    }
                    let n = a.write_vectored(&slices).await.unwrap();
                    assert!(n > 0);
                    assert!(n <= MAX_FRAME_PLAINTEXT + VECTORED_SLACK);
                    done += n;
                }
            }
            a.shutdown().await.unwrap();
        };
        for parts in &writes {
            for p in parts {
                expected.extend_from_slice(p);
            }
        }
        let reader = async {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::join!(writer, reader);
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    })
    .await
    .unwrap();
}

/// The message API keeps boundaries (what protomux over a secret stream needs), interleaves
/// with byte writes in order, refuses empty messages, and ends with `None` at a clean EOF.
#[tokio::test]
async fn messages_keep_their_boundaries() {
    timeout(LIMIT, async {
        let (mut a, mut b) = pair_duplex(4096).await;
        let sizes = [1usize, 2, 100, 5000, 70_000, 3];
        let send = async move {
            for (i, n) in sizes.iter().enumerate() {
                a.send_message(&vec![i as u8; *n]).await.unwrap();
            }
            // A byte write in between becomes its own message, in order.
            a.write_all(b"bytes").await.unwrap();
            a.flush().await.unwrap();
            a.send_message(b"last").await.unwrap();
            let empty = a.send_message(b"").await;
            assert_eq!(empty.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
            a.shutdown().await.unwrap();
            a
        };
        let recv = async move {
            for (i, n) in sizes.iter().enumerate() {
                let m = b.recv_message().await.unwrap().unwrap();
                assert_eq!(m.len(), *n, "message {i}");
                assert!(m.iter().all(|x| *x == i as u8));
            }
            assert_eq!(&b.recv_message().await.unwrap().unwrap()[..], b"bytes");
            assert_eq!(&b.recv_message().await.unwrap().unwrap()[..], b"last");
            assert!(b.recv_message().await.unwrap().is_none());
        };
        let (_a, ()) = tokio::join!(send, recv);
    })
    .await
    .unwrap();
}

/// A byte read that stopped inside a message leaves the rest as the next `recv_message`.
#[tokio::test]
async fn message_after_partial_byte_read() {
    timeout(LIMIT, async {
        let (mut a, mut b) = pair_duplex(4096).await;
        a.send_message(b"0123456789").await.unwrap();
        a.send_message(b"next").await.unwrap();
        let mut four = [0u8; 4];
        b.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"0123");
        assert_eq!(&b.recv_message().await.unwrap().unwrap()[..], b"456789");
        assert_eq!(&b.recv_message().await.unwrap().unwrap()[..], b"next");
    })
    .await
    .unwrap();
}

/// A peer sending a frame over the production limit gets the stream failed with a clear error
/// (issue #12: 16 MiB frames were accepted), while a frame at the limit passes, and a stream
/// configured for a bigger peer takes it.
#[tokio::test]
async fn frame_over_the_production_limit_fails_the_stream() {
    use ats_p2p_swarm::secret_stream::frame::MAX_FRAME_LEN;
    use ats_p2p_swarm::secret_stream::{DEFAULT_MAX_FRAME_LEN, LARGEST_SENT_FRAME};
    const ABYTES: usize = 17;
    const {
        assert!(DEFAULT_MAX_FRAME_LEN >= LARGEST_SENT_FRAME);
        assert!(
            DEFAULT_MAX_FRAME_LEN < 1 << 20,
            "the production limit is not the protocol's"
        );
    };
    let at_limit = vec![7u8; DEFAULT_MAX_FRAME_LEN - ABYTES];
    let over = vec![9u8; DEFAULT_MAX_FRAME_LEN - ABYTES + 1];
    timeout(LIMIT, async {
        // The raw duplex holds both messages: the writes complete without a reader.
        let (mut a, mut b) = pair_duplex(1 << 20).await;
        a.send_message(&at_limit).await.unwrap();
        a.send_message(&over).await.unwrap();
        let m = b.recv_message().await.unwrap().unwrap();
        assert_eq!(m.len(), at_limit.len());
        let err = b.recv_message().await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let inner = err.get_ref().unwrap().downcast_ref::<SecretStreamError>();
        assert!(
            matches!(
                inner,
                Some(SecretStreamError::FrameTooLong { len, max })
                    if *len == DEFAULT_MAX_FRAME_LEN + 1 && *max == DEFAULT_MAX_FRAME_LEN
            ),
            "{err}"
        );
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        // The stream is dead for good: reads and writes fail from now on.
        assert!(b.recv_message().await.is_err());
        assert!(b.send_message(b"after").await.is_err());

        // Configured for a peer that writes bigger messages, the same frame passes.
        let (mut a, mut b) = pair_duplex(1 << 20).await;
        b.set_max_frame_len(MAX_FRAME_LEN);
        a.send_message(&over).await.unwrap();
        assert_eq!(b.recv_message().await.unwrap().unwrap().len(), over.len());
    })
    .await
    .unwrap();
}
