//! The tokio driver over real loopback UDP sockets.

// Helpers outside #[test] fns: a panic there is a failed test too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ats_p2p_swarm::udx::{SocketEvent, UdxSocket, UdxStream};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bind() -> UdxSocket {
    UdxSocket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Writes `n` random bytes, ends, and returns their SHA-256.
async fn send_random(w: &mut tokio::io::WriteHalf<UdxStream>, n: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    let mut rng = rand::rngs::StdRng::from_entropy();
    while left > 0 {
        let k = left.min(buf.len());
        rng.fill_bytes(&mut buf[..k]);
        h.update(&buf[..k]);
        w.write_all(&buf[..k]).await.unwrap();
        left -= k;
    }
    w.shutdown().await.unwrap();
    h.finalize().into()
}

async fn recv_all<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> (usize, [u8; 32]) {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        let k = r.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k;
    }
    (n, h.finalize().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_to_rust_both_ways_sha_checked() {
    timeout(TEST_TIMEOUT, async {
        let sa = bind().await;
        let sb = bind().await;
        let a = sa.create_stream(1).unwrap();
        let b = sb.create_stream(2).unwrap();
        a.connect(2, sb.local_addr()).unwrap();
        b.connect(1, sa.local_addr()).unwrap();
        const N: usize = 16 * 1024 * 1024;
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let (sha_a, sha_b, (nb, got_b), (na, got_a)) = tokio::join!(
            send_random(&mut aw, N),
            send_random(&mut bw, N),
            recv_all(&mut br),
            recv_all(&mut ar),
        );
        assert_eq!((na, nb), (N, N));
        assert_eq!(got_b, sha_a);
        assert_eq!(got_a, sha_b);
        drop((ar, aw, br, bw));
        sa.close().await;
        sb.close().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn firewall_event_then_connect_accepts_the_first_packet() {
    timeout(TEST_TIMEOUT, async {
        let sa = bind().await;
        let sb = bind().await;
        let mut events = sb.take_events().unwrap();
        let a = sa.create_stream(10).unwrap();
        let mut b = sb.create_stream(20).unwrap();
        a.connect(20, sb.local_addr()).unwrap();
        let (_ar, mut aw) = tokio::io::split(a);
        aw.write_all(b"hello over udx").await.unwrap();
        let ev = events.recv().await.unwrap();
        assert_eq!(
            ev,
            SocketEvent::Firewall {
                local_id: 20,
                from: sa.local_addr()
            }
        );
        b.connect(10, sa.local_addr()).unwrap();
        let mut buf = [0u8; 14];
        // The stashed first packet is replayed at connect: no retransmission wait (1 s RTO).
        timeout(Duration::from_millis(500), b.read_exact(&mut buf))
            .await
            .expect("first packet replayed")
            .unwrap();
        assert_eq!(&buf, b"hello over udx");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn non_udx_datagrams_reach_the_caller_and_send_to_works() {
    timeout(TEST_TIMEOUT, async {
        let sa = bind().await;
        let sb = bind().await;
        let mut events = sb.take_events().unwrap();
        assert!(sb.take_events().is_none());
        // short, bad magic, unknown stream id
        let unknown = [
            0xff, 0x01, 0, 0, 99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        for d in [&b"dht"[..], &[0u8; 40][..], &unknown[..]] {
            sa.send_to(sb.local_addr(), d).await.unwrap();
            let ev = events.recv().await.unwrap();
            assert_eq!(
                ev,
                SocketEvent::Datagram {
                    from: sa.local_addr(),
                    data: bytes::Bytes::copy_from_slice(d)
                }
            );
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn drop_sends_destroy_and_the_peer_read_fails() {
    timeout(TEST_TIMEOUT, async {
        let sa = bind().await;
        let sb = bind().await;
        let mut a = sa.create_stream(1).unwrap();
        let mut b = sb.create_stream(2).unwrap();
        a.connect(2, sb.local_addr()).unwrap();
        b.connect(1, sa.local_addr()).unwrap();
        a.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.unwrap();
        drop(a);
        let err = b.read(&mut one).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn bind_uses_exactly_the_given_address() {
    let s = UdxSocket::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(s.local_addr().ip().to_string(), "127.0.0.1");
    assert_ne!(s.local_addr().port(), 0);
    let s6 = UdxSocket::bind("[::1]:0".parse().unwrap()).await;
    if let Ok(s6) = s6 {
        assert_eq!(s6.local_addr().ip().to_string(), "::1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_one_socket() {
    timeout(TEST_TIMEOUT, async {
        let sa = bind().await;
        let sb = bind().await;
        const STREAMS: u32 = 8;
        const N: usize = 1024 * 1024;
        let mut tasks = Vec::new();
        for i in 0..STREAMS {
            let a = sa.create_stream(100 + i).unwrap();
            let b = sb.create_stream(200 + i).unwrap();
            a.connect(200 + i, sb.local_addr()).unwrap();
            b.connect(100 + i, sa.local_addr()).unwrap();
            tasks.push(tokio::spawn(async move {
                let (_ar, mut aw) = tokio::io::split(a);
                let (mut br, _bw) = tokio::io::split(b);
                let (sent, (n, got)) = tokio::join!(send_random(&mut aw, N), recv_all(&mut br));
                assert_eq!(n, N);
                assert_eq!(sent, got);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn ipv6_loopback_transfer() {
    let Ok(sa) = UdxSocket::bind("[::1]:0".parse().unwrap()).await else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    timeout(TEST_TIMEOUT, async {
        let sb = UdxSocket::bind("[::1]:0".parse().unwrap()).await.unwrap();
        let a = sa.create_stream(1).unwrap();
        let b = sb.create_stream(2).unwrap();
        a.connect(2, sb.local_addr()).unwrap();
        b.connect(1, sa.local_addr()).unwrap();
        let (_ar, mut aw) = tokio::io::split(a);
        let (mut br, _bw) = tokio::io::split(b);
        const N: usize = 4 * 1024 * 1024;
        let (sent, (n, got)) = tokio::join!(send_random(&mut aw, N), recv_all(&mut br));
        assert_eq!((n, sent), (N, got));
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn duplicate_stream_ids_are_refused() {
    let s = bind().await;
    let _a = s.create_stream(5).unwrap();
    assert!(s.create_stream(5).is_err());
}

#[tokio::test]
async fn dropping_the_socket_fails_pending_reads() {
    timeout(TEST_TIMEOUT, async {
        let sa = bind().await;
        let mut a = sa.create_stream(1).unwrap();
        a.connect(2, "127.0.0.1:9".parse().unwrap()).unwrap();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            a.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(sa);
        let r = reader.await.unwrap();
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::NotConnected);
    })
    .await
    .expect("test timed out");
}

/// Writes blocks of every size class (under 256 B, 8-aligned, not aligned, larger than one
/// message), ends, and returns the byte count and SHA-256.
async fn write_sizes<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, seed: u64) -> (usize, [u8; 32]) {
    let sizes = [1, 100, 255, 256, 4096, 4099, 65_536, 65_541, 200_003];
    let mut h = Sha256::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut total = 0;
    for round in 0..40 {
        for &n in &sizes {
            let mut block = vec![0u8; n + round];
            rng.fill_bytes(&mut block);
            h.update(&block);
            w.write_all(&block).await.unwrap();
            total += block.len();
        }
    }
    w.shutdown().await.unwrap();
    (total, h.finalize().into())
}

/// The secret stream hands its ciphertext to UDX by splitting it off (`RawStream`), not by
/// copying: the bytes must still arrive intact, in order, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_stream_over_udx_moves_owned_ciphertext_intact() {
    use ats_p2p_swarm::secret_stream::SecretStream;
    use ats_p2p_swarm::{KeyPair, PublicKey};
    timeout(TEST_TIMEOUT, async {
        let sa = bind().await;
        let sb = bind().await;
        let a = sa.create_stream(1).unwrap();
        let b = sb.create_stream(2).unwrap();
        a.connect(2, sb.local_addr()).unwrap();
        b.connect(1, sa.local_addr()).unwrap();
        let (ka, kb) = (KeyPair::from_seed([7; 32]), KeyPair::from_seed([8; 32]));
        let (pa, pb) = (ka.public_key(), kb.public_key());
        let (a, b) = tokio::join!(
            SecretStream::connect(a, ka, Some(pb)),
            SecretStream::accept(b, kb, move |k: &PublicKey| *k == pa),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let (mut ar, mut aw) = tokio::io::split(a);
        let (mut br, mut bw) = tokio::io::split(b);
        let (sent_a, sent_b, got_b, got_a) = tokio::join!(
            write_sizes(&mut aw, 1),
            write_sizes(&mut bw, 2),
            recv_all(&mut br),
            recv_all(&mut ar),
        );
        assert_eq!(got_b, sent_a);
        assert_eq!(got_a, sent_b);
        drop((ar, aw, br, bw));
        sa.close().await;
        sb.close().await;
    })
    .await
    .expect("test timed out");
}

/// `write_owned` takes no more than the send buffer has room for, leaves the rest with the
/// caller, and says `Blocked` when there is no room at all.
#[test]
fn write_owned_takes_only_what_the_send_buffer_holds() {
    use ats_p2p_swarm::udx::{Stream, StreamConfig, WriteError};
    use bytes::BytesMut;
    let cfg = StreamConfig {
        send_buffer: 1000,
        ..StreamConfig::default()
    };
    let mut s = Stream::new(1, cfg, std::time::Instant::now());
    let mut data = BytesMut::from(&[7u8; 1500][..]);
    assert_eq!(s.write_owned(&mut data).unwrap(), 1000);
    assert_eq!(data.len(), 500, "the rest stays with the caller");
    assert_eq!(s.send_queued(), 1000);
    assert!(matches!(s.write_owned(&mut data), Err(WriteError::Blocked)));
    assert_eq!(data.len(), 500);
    s.shutdown().unwrap();
    assert!(matches!(s.write_owned(&mut data), Err(WriteError::Ended)));
}
