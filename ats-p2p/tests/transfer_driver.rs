//! The transfer driver over real in-memory and TCP loopback streams: files arrive intact, every
//! failure leaves no temporary file behind and reports a typed reason.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a panic is a failed test

use std::path::Path;
use std::time::Duration;

use ats_p2p::error::{StreamReceiveError, StreamSendError};
use ats_p2p::events::FailureKind;
use ats_p2p::transfer::{
    ProgressRule, Received, Sent, receive_stream, receive_stream_with, send_stream,
    send_stream_with,
};
use ats_p2p::wire::{
    FileHash, Frame, Meta, ReceiverConfig, SenderConfig, TransferError, encode_parts,
};
use rand::{RngCore, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST_TIMEOUT: Duration = Duration::from_secs(20);
const ID: &str = "00112233445566778899aabbccddeeff";

/// Sends `src` announced as `meta` to a receiver saving into `save`, over an in-memory pipe of
/// `pipe` bytes, without progress callbacks; both sides' results, within the test timeout.
async fn over_duplex(
    src: &Path,
    save: &Path,
    meta: &Meta,
    max_size: u64,
    pipe: usize,
) -> (
    Result<Sent, StreamSendError>,
    Result<Received, StreamReceiveError>,
) {
    let (a, b) = tokio::io::duplex(pipe);
    tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            send_stream(a, src, meta.clone(), SenderConfig::default(), |_, _| {}),
            receive_stream(
                b,
                save,
                ID,
                meta.clone(),
                ReceiverConfig::new(max_size),
                |_, _| {}
            ),
        )
    })
    .await
    .unwrap()
}

fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn file_arrives_intact_over_duplex_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "data.bin", 3 * 1024 * 1024 + 17, 1);
    let meta = Meta {
        name: "data.bin".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let save = dir.path().join("in");
    // A small pipe: backpressure in both directions.
    let (a, b) = tokio::io::duplex(16 * 1024);
    let mut send_progress = Vec::new();
    let mut recv_progress = Vec::new();
    let (sent, received) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            send_stream(a, &src, meta.clone(), SenderConfig::default(), |b, t| {
                send_progress.push((b, t))
            }),
            receive_stream(
                b,
                &save,
                ID,
                meta.clone(),
                ReceiverConfig::new(1 << 30),
                |b, t| { recv_progress.push((b, t)) }
            ),
        )
    })
    .await
    .unwrap();
    let sent = sent.unwrap();
    let received = received.unwrap();
    assert_eq!(sent.bytes, meta.size);
    assert!(String::from_utf8_lossy(&sent.ack).contains(&meta.hash.to_hex()));
    assert_eq!(received.size, meta.size);
    assert_eq!(received.hash, meta.hash);
    assert_eq!(received.path, save.join("data.bin"));
    assert_eq!(std::fs::read(&received.path).unwrap(), data);
    assert_eq!(entries(&save), vec!["data.bin".to_string()]);
    for progress in [&send_progress, &recv_progress] {
        assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(progress.last(), Some(&(meta.size, meta.size)));
    }
}

#[tokio::test]
async fn file_arrives_over_tcp_loopback_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "x.bin", 1024 * 1024, 2);
    let save = dir.path().join("in");
    std::fs::create_dir(&save).unwrap();
    std::fs::write(save.join("x.bin"), b"already here").unwrap();
    let meta = Meta {
        name: "x.bin".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sent, received) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            async {
                let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                send_stream(s, &src, meta.clone(), SenderConfig::default(), |_, _| {}).await
            },
            async {
                let (s, _) = listener.accept().await.unwrap();
                receive_stream(
                    s,
                    &save,
                    ID,
                    meta.clone(),
                    ReceiverConfig::new(1 << 30),
                    |_, _| {},
                )
                .await
            },
        )
    })
    .await
    .unwrap();
    sent.unwrap();
    let received = received.unwrap();
    assert_eq!(std::fs::read(save.join("x.bin")).unwrap(), b"already here");
    assert_ne!(received.path, save.join("x.bin"));
    assert_eq!(std::fs::read(&received.path).unwrap(), data);
    assert_eq!(entries(&save).len(), 2);
}

#[tokio::test]
async fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _) = random_file(dir.path(), "empty", 0, 3);
    let meta = Meta {
        name: "empty".into(),
        size: 0,
        hash: FileHash::of(b""),
        resume: false,
    };
    let save = dir.path().join("in");
    let (sent, received) = over_duplex(&src, &save, &meta, 10, 1024).await;
    assert_eq!(sent.unwrap().bytes, 0);
    assert_eq!(std::fs::read(received.unwrap().path).unwrap(), b"");
}

#[tokio::test]
async fn too_large_is_refused_before_any_file_and_the_sender_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "big", 8 * 1024 * 1024, 4);
    let meta = Meta {
        name: "big".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let save = dir.path().join("in");
    // The pipe holds far less than the file: the sender only finishes because it reads the
    // NACK while it is still writing.
    let (a, b) = tokio::io::duplex(8 * 1024);
    let mut sent_max = 0u64;
    let (sent, received) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            send_stream(a, &src, meta.clone(), SenderConfig::default(), |b, _| {
                sent_max = b
            }),
            receive_stream(
                b,
                &save,
                ID,
                meta.clone(),
                ReceiverConfig::new(1024),
                |_, _| {}
            ),
        )
    })
    .await
    .unwrap();
    let rerr = received.unwrap_err();
    assert!(matches!(
        rerr,
        StreamReceiveError::Transfer(TransferError::TooLarge { max: 1024, .. })
    ));
    assert_eq!(rerr.kind(), FailureKind::Rejected);
    let serr = sent.unwrap_err();
    match &serr {
        StreamSendError::Transfer(TransferError::Nack(reason)) => {
            assert!(reason.contains("1024"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(sent_max < meta.size / 2, "sender kept going: {sent_max}");
    assert!(entries(&save).is_empty(), "{:?}", entries(&save));
}

#[tokio::test]
async fn hash_mismatch_is_nacked_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "f", 500_000, 5);
    let meta = Meta {
        name: "f".into(),
        size: data.len() as u64,
        hash: FileHash::of(b"something else"),
        resume: false,
    };
    let save = dir.path().join("in");
    let (sent, received) = over_duplex(&src, &save, &meta, 1 << 30, 64 * 1024).await;
    let rerr = received.unwrap_err();
    assert!(matches!(
        rerr,
        StreamReceiveError::Transfer(TransferError::HashMismatch { .. })
    ));
    assert_eq!(rerr.kind(), FailureKind::Verification);
    assert!(matches!(
        sent.unwrap_err(),
        StreamSendError::Transfer(TransferError::Nack(_))
    ));
    assert!(entries(&save).is_empty(), "{:?}", entries(&save));
}

#[tokio::test]
async fn sender_vanishing_mid_file_removes_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("in");
    let meta = Meta {
        name: "partial".into(),
        size: 1_000_000,
        hash: FileHash::of(b"irrelevant"),
        resume: false,
    };
    let (mut a, b) = tokio::io::duplex(64 * 1024);
    let peer = async {
        let mut m = encode_parts(&Frame::Meta(meta.clone())).unwrap();
        a.write_all_buf(&mut m).await.unwrap();
        let mut d = encode_parts(&Frame::Data(vec![7u8; 30_000].into())).unwrap();
        a.write_all_buf(&mut d).await.unwrap();
        drop(a);
    };
    let (_, received) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            peer,
            receive_stream(
                b,
                &save,
                ID,
                meta.clone(),
                ReceiverConfig::new(1 << 30),
                |_, _| {}
            ),
        )
    })
    .await
    .unwrap();
    let err = received.unwrap_err();
    assert!(matches!(
        err,
        StreamReceiveError::Transfer(TransferError::Closed { .. })
    ));
    assert!(entries(&save).is_empty(), "{:?}", entries(&save));
}

#[tokio::test]
async fn file_shorter_than_announced_fails_the_sender_with_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "short", 100_000, 6);
    let meta = Meta {
        name: "short".into(),
        size: data.len() as u64 + 10,
        hash: FileHash::of(&data),
        resume: false,
    };
    let save = dir.path().join("in");
    let (sent, received) = over_duplex(&src, &save, &meta, 1 << 30, 64 * 1024).await;
    let serr = sent.unwrap_err();
    assert!(matches!(serr, StreamSendError::Read { .. }), "{serr:?}");
    assert_eq!(serr.kind(), FailureKind::Io);
    assert!(matches!(
        received.unwrap_err(),
        StreamReceiveError::Transfer(TransferError::PeerError(_))
    ));
    assert!(entries(&save).is_empty());
}

#[tokio::test]
async fn silent_receiver_times_the_sender_out() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "s", 1000, 7);
    let meta = Meta {
        name: "s".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let config = SenderConfig {
        ack_timeout: Duration::from_millis(200),
        overall_timeout: None,
        offer_resume: false,
    };
    // The peer reads everything and never answers.
    let sink = async move {
        let mut buf = vec![0u8; 4096];
        while b.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    };
    let sent = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::select! {
            r = send_stream(a, &src, meta, config, |_, _| {}) => r,
            () = sink => panic!("sink ended first"),
        }
    })
    .await
    .unwrap();
    let err = sent.unwrap_err();
    assert!(matches!(
        err,
        StreamSendError::Transfer(TransferError::TimedOut { .. })
    ));
    assert_eq!(err.kind(), FailureKind::TimedOut);
}

#[tokio::test]
async fn many_tiny_data_frames_in_one_read_are_all_written() {
    // 20 000 one-byte DATA frames arrive in large reads; the driver must act on each frame's
    // events before feeding the next (the receiver caps its pending events).
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("in");
    let data: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
    let meta = Meta {
        name: "tiny".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let mut wire = Vec::new();
    let mut push = |frame: &Frame| {
        let mut f = encode_parts(frame).unwrap();
        while bytes::Buf::has_remaining(&f) {
            let chunk = bytes::Buf::chunk(&f).to_vec();
            bytes::Buf::advance(&mut f, chunk.len());
            wire.extend_from_slice(&chunk);
        }
    };
    push(&Frame::Meta(meta.clone()));
    for b in &data {
        push(&Frame::Data(vec![*b].into()));
    }
    push(&Frame::Done);
    let (mut a, b) = tokio::io::duplex(1024 * 1024);
    let peer = async move {
        a.write_all(&wire).await.unwrap();
        let mut answer = Vec::new();
        a.read_to_end(&mut answer).await.unwrap();
        answer
    };
    let (answer, received) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            peer,
            receive_stream(
                b,
                &save,
                ID,
                meta.clone(),
                ReceiverConfig::new(1 << 30),
                |_, _| {}
            ),
        )
    })
    .await
    .unwrap();
    let received = received.unwrap();
    assert_eq!(std::fs::read(&received.path).unwrap(), data);
    assert_eq!(answer.first(), Some(&0x04), "expected an ACK frame");
}

#[tokio::test]
async fn hostile_name_stays_inside_the_save_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "h", 1000, 8);
    let meta = Meta {
        name: "../../escape.txt".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let save = dir.path().join("a").join("b").join("in");
    let (sent, received) = over_duplex(&src, &save, &meta, 1 << 30, 64 * 1024).await;
    sent.unwrap();
    assert_eq!(received.unwrap().path, save.join("escape.txt"));
    assert!(!dir.path().join("a").join("escape.txt").exists());
    assert_eq!(entries(&save), vec!["escape.txt".to_string()]);
}

/// Sizes around the receiver's 1 MiB direct-write buffers and 4 KiB alignment: whole buffers,
/// an aligned tail, an unaligned tail, one byte short of a buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_around_the_direct_write_buffers_arrive_intact() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    for (i, len) in [4096, 4097, MIB, MIB + 4096, 2 * MIB - 1, 3 * MIB + 12_345]
        .into_iter()
        .enumerate()
    {
        let name = format!("f{i}.bin");
        let (src, data) = random_file(dir.path(), &name, len, 40 + i as u64);
        let meta = Meta {
            name: name.clone(),
            size: data.len() as u64,
            hash: FileHash::of(&data),
            resume: false,
        };
        let save = dir.path().join(format!("in{i}"));
        let (sent, received) = over_duplex(&src, &save, &meta, 1 << 30, 256 * 1024).await;
        sent.unwrap();
        let received = received.unwrap();
        assert_eq!(received.size, len as u64);
        let got = std::fs::read(&received.path).unwrap();
        assert_eq!(got.len(), len, "size {len}");
        assert!(got == data, "content differs for size {len}");
        assert_eq!(entries(&save), vec![name], "size {len}");
    }
}

/// A wrong hash on a file spanning several direct-write buffers: NACK, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_mismatch_on_a_multi_buffer_file_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "big", 3 * (1 << 20) + 100, 77);
    let meta = Meta {
        name: "big".into(),
        size: data.len() as u64,
        hash: FileHash::of(b"not it"),
        resume: false,
    };
    let save = dir.path().join("in");
    let (sent, received) = over_duplex(&src, &save, &meta, 1 << 30, 256 * 1024).await;
    assert!(matches!(
        received.unwrap_err(),
        StreamReceiveError::Transfer(TransferError::HashMismatch { .. })
    ));
    assert!(sent.is_err());
    assert!(entries(&save).is_empty(), "{:?}", entries(&save));
}

/// A rule that a stall breaks quickly: 64 KiB per 300 ms.
const QUICK_RULE: ProgressRule = ProgressRule {
    window: Duration::from_millis(300),
    min_bytes: 64 * 1024,
};

#[tokio::test]
async fn a_receiver_that_stops_reading_cannot_stall_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "big", 4 * 1024 * 1024, 12);
    let meta = Meta {
        name: "big".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    // The peer holds its end open and never reads: the pipe fills, the window is zero.
    let (a, _b) = tokio::io::duplex(64 * 1024);
    let sent = tokio::time::timeout(
        TEST_TIMEOUT,
        send_stream_with(
            a,
            &src,
            meta,
            SenderConfig::default(),
            QUICK_RULE,
            |_, _| {},
        ),
    )
    .await
    .expect("the send must end by itself");
    let err = sent.unwrap_err();
    assert!(
        matches!(err, StreamSendError::Stalled { moved, .. } if moved < QUICK_RULE.min_bytes),
        "{err:?}"
    );
    assert_eq!((err.kind(), err.code()), (FailureKind::TimedOut, "stalled"));
}

#[tokio::test]
async fn a_trickling_sender_cannot_hold_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("in");
    let meta = Meta {
        name: "slow".into(),
        size: 1_000_000,
        hash: FileHash::of(b"irrelevant"),
        resume: false,
    };
    let (mut a, b) = tokio::io::duplex(64 * 1024);
    // One byte every 50 ms: each frame resets the receiver's idle timer, so only the progress
    // rule can end this.
    let peer = async move {
        let mut m = encode_parts(&Frame::Meta(meta_of("slow", 1_000_000))).unwrap();
        a.write_all_buf(&mut m).await.unwrap();
        loop {
            let mut d = encode_parts(&Frame::Data(vec![7u8; 1].into())).unwrap();
            if a.write_all_buf(&mut d).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let received = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::select! {
            r = receive_stream_with(
                b,
                &save,
                ID,
                meta.clone(),
                ReceiverConfig::new(1 << 30),
                QUICK_RULE,
                |_, _| {},
            ) => r,
            () = peer => panic!("the peer stopped first"),
        }
    })
    .await
    .expect("the receive must end by itself");
    let err = received.unwrap_err();
    assert!(matches!(err, StreamReceiveError::Stalled { .. }), "{err:?}");
    assert_eq!((err.kind(), err.code()), (FailureKind::TimedOut, "stalled"));
    assert!(entries(&save).is_empty(), "{:?}", entries(&save));
}

#[tokio::test]
async fn a_moving_transfer_is_not_stalled() {
    // 64 KiB per 5 s: any transfer that moves at all keeps within it, even on a loaded machine.
    let rule = ProgressRule {
        window: Duration::from_secs(5),
        ..QUICK_RULE
    };
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "steady", 2 * 1024 * 1024, 13);
    let meta = Meta {
        name: "steady".into(),
        size: data.len() as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let save = dir.path().join("in");
    let (a, b) = tokio::io::duplex(16 * 1024);
    let (sent, received) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            send_stream_with(
                a,
                &src,
                meta.clone(),
                SenderConfig::default(),
                rule,
                |_, _| {}
            ),
            receive_stream_with(
                b,
                &save,
                ID,
                meta.clone(),
                ReceiverConfig::new(1 << 30),
                rule,
                |_, _| {},
            ),
        )
    })
    .await
    .unwrap();
    sent.unwrap();
    assert_eq!(std::fs::read(received.unwrap().path).unwrap(), data);
}

fn meta_of(name: &str, size: u64) -> Meta {
    Meta {
        name: name.into(),
        size,
        hash: FileHash::of(b"irrelevant"),
        resume: false,
    }
}
