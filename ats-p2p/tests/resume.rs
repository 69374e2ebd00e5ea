//! Resuming and bandwidth limits in the transfer driver, over in-memory streams: a broken
//! receive keeps its partial file (private, with its record), the same offer from the same
//! sender continues it with only the missing bytes, and whatever else comes (a seed sender,
//! a changed file, a damaged partial) still ends with the right file or nothing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ats_p2p::error::StreamReceiveError;
use ats_p2p::partial::{PartialKey, list_partials};
use ats_p2p::transfer::{
    ReceiveOptions, Received, SendOptions, Sent, receive_stream_opts, send_stream_opts,
};
use ats_p2p::wire::{FileHash, Frame, Meta, ReceiverConfig, SenderConfig, TransferError, encode};
use bytes::BytesMut;
use rand::{RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);
const ID1: &str = "00112233445566778899aabbccddeeff";
const ID2: &str = "ffeeddccbbaa99887766554433221100";
const SENDER: [u8; 32] = [0x5a; 32];

fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn key_of(meta: &Meta) -> PartialKey {
    PartialKey {
        sender_key: SENDER,
        name: meta.name.clone(),
        size: meta.size,
        sha256: meta.hash,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A sender that stops part way: META (offering resume when asked), `cut` bytes of DATA, then
/// the stream closes (a peer killed or a network lost mid-transfer).
async fn broken_send(
    data: &[u8],
    meta: &Meta,
    cut: usize,
    save: &Path,
    id: &str,
) -> Result<Received, StreamReceiveError> {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let receive = receive_stream_opts(
        b,
        save,
        id,
        meta.clone(),
        ReceiverConfig::new(1 << 30),
        ReceiveOptions {
            resume: Some(key_of(meta)),
            ..ReceiveOptions::default()
        },
        |_, _| {},
    );
    let send = async move {
        let mut wire = BytesMut::new();
        encode(&Frame::Meta(meta.clone()), &mut wire).unwrap();
        for chunk in data[..cut].chunks(64 * 1024) {
            encode(
                &Frame::Data(bytes::Bytes::copy_from_slice(chunk)),
                &mut wire,
            )
            .unwrap();
        }
        a.write_all(&wire).await.unwrap();
        a.flush().await.unwrap();
        // Give the receiver the bytes, then vanish.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(a);
    };
    let (received, ()) = tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(receive, send) })
        .await
        .unwrap();
    received
}

/// A whole transfer with resuming on both sides (or only on the receiver when `offer` is off)
/// and optional limits.
async fn transfer(
    src: &Path,
    meta: &Meta,
    save: &Path,
    offer: bool,
    send_limit: Option<u64>,
    receive_limit: Option<u64>,
) -> (
    Result<Sent, ats_p2p::error::StreamSendError>,
    Result<Received, StreamReceiveError>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let config = SenderConfig {
        offer_resume: offer,
        ..SenderConfig::default()
    };
    let send = send_stream_opts(
        a,
        src,
        meta.clone(),
        config,
        SendOptions {
            limit: send_limit.and_then(std::num::NonZeroU64::new),
            ..SendOptions::default()
        },
        |_, _| {},
    );
    let receive = receive_stream_opts(
        b,
        save,
        ID2,
        meta.clone(),
        ReceiverConfig::new(1 << 30),
        ReceiveOptions {
            resume: Some(key_of(meta)),
            limit: receive_limit.and_then(std::num::NonZeroU64::new),
            ..ReceiveOptions::default()
        },
        |_, _| {},
    );
    tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(send, receive) })
        .await
        .unwrap()
}

/// The file at `path` holds exactly `data` (reported by the first difference, not by bytes).
fn assert_same(path: &Path, data: &[u8]) {
    let got = std::fs::read(path).unwrap();
    let first = got.iter().zip(data).position(|(a, b)| a != b);
    assert!(
        got.len() == data.len() && first.is_none(),
        "{}: {} bytes, expected {}; first difference at {first:?}, last at {:?}, {} differ; got {:?} want {:?}",
        path.display(),
        got.len(),
        data.len(),
        got.iter().zip(data).rposition(|(a, b)| a != b),
        got.iter().zip(data).filter(|(a, b)| a != b).count(),
        &got[..8.min(got.len())],
        &data[..8.min(data.len())]
    );
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_broken_receive_keeps_its_partial_and_the_same_offer_moves_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "data.bin", 4 * 1024 * 1024 + 123, 1);
    let meta = Meta::new("data.bin", data.len() as u64, FileHash::of(&data));
    let save = dir.path().join("in");

    let cut = 1_600_000;
    let err = broken_send(&data, &meta, cut, &save, ID1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StreamReceiveError::Transfer(TransferError::Closed { .. })
        ),
        "{err:?}"
    );
    // Kept: a hidden partial file and its record, both private, nothing under a real name.
    let left = names(&save);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|n| n.starts_with(".ats-p2p-")), "{left:?}");
    let partials = list_partials(&save).unwrap();
    assert_eq!(partials.len(), 1);
    let p = &partials[0];
    assert_eq!(p.len, cut as u64, "every byte that arrived is kept");
    assert_eq!(p.record.name, "data.bin");
    assert_eq!(p.record.size, meta.size);
    assert_eq!(p.record.sha256, meta.hash.to_hex());
    assert_eq!(p.record.sender_key, hex::encode(SENDER));
    assert_eq!(p.record.transfer_id, ID1);
    #[cfg(unix)]
    for n in &left {
        assert_eq!(mode(&save.join(n)), 0o600, "{n}");
    }

    let (sent, received) = transfer(&src, &meta, &save, true, None, None).await;
    let (sent, received) = (sent.unwrap(), received.unwrap());
    // Resumed at the last whole 64 KiB before the cut: only the rest crossed.
    let prefix = (cut as u64 / 65_536) * 65_536;
    assert_eq!(received.resumed_from, prefix);
    assert_eq!(sent.resumed_from, prefix);
    assert_eq!(sent.bytes, meta.size);
    assert_same(&received.path, &data);
    assert_eq!(
        names(&save),
        vec!["data.bin".to_string()],
        "record and partial gone"
    );
}

#[tokio::test]
async fn a_seed_sender_gets_a_whole_transfer_over_a_partial() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "s.bin", 1024 * 1024, 2);
    let meta = Meta::new("s.bin", data.len() as u64, FileHash::of(&data));
    let save = dir.path().join("in");
    broken_send(&data, &meta, 300_000, &save, ID1)
        .await
        .unwrap_err();
    assert_eq!(list_partials(&save).unwrap().len(), 1);

    // A sender without the extension never offers: the receiver starts over in the same file.
    let (sent, received) = transfer(&src, &meta, &save, false, None, None).await;
    let received = received.unwrap();
    assert_eq!(sent.unwrap().resumed_from, 0);
    assert_eq!(received.resumed_from, 0);
    assert_same(&received.path, &data);
    assert_eq!(names(&save), vec!["s.bin".to_string()]);
}

#[tokio::test]
async fn a_changed_file_restarts_from_zero_and_drops_the_old_partial() {
    let dir = tempfile::tempdir().unwrap();
    let (_, old) = random_file(dir.path(), "old.bin", 1024 * 1024, 3);
    let old_meta = Meta::new("c.bin", old.len() as u64, FileHash::of(&old));
    let save = dir.path().join("in");
    broken_send(&old, &old_meta, 500_000, &save, ID1)
        .await
        .unwrap_err();

    // The same name from the same sender, now with other content.
    let (src, data) = random_file(dir.path(), "c.bin", 1024 * 1024, 4);
    let meta = Meta::new("c.bin", data.len() as u64, FileHash::of(&data));
    let (sent, received) = transfer(&src, &meta, &save, true, None, None).await;
    let received = received.unwrap();
    assert_eq!(sent.unwrap().resumed_from, 0);
    assert_eq!(received.resumed_from, 0);
    assert_same(&received.path, &data);
    assert_eq!(
        names(&save),
        vec!["c.bin".to_string()],
        "old partial removed"
    );
}

#[tokio::test]
async fn a_damaged_partial_fails_the_hash_is_removed_and_the_next_try_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = random_file(dir.path(), "d.bin", 1024 * 1024, 5);
    let meta = Meta::new("d.bin", data.len() as u64, FileHash::of(&data));
    let save = dir.path().join("in");
    broken_send(&data, &meta, 700_000, &save, ID1)
        .await
        .unwrap_err();
    let part = list_partials(&save).unwrap().remove(0).path;
    // Flip a byte inside the prefix that will be kept (a disk error, a tampering user).
    let mut bytes = std::fs::read(&part).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&part, &bytes).unwrap();

    let (sent, received) = transfer(&src, &meta, &save, true, None, None).await;
    assert!(
        matches!(
            received,
            Err(StreamReceiveError::Transfer(
                TransferError::HashMismatch { .. }
            ))
        ),
        "{received:?}"
    );
    assert!(sent.is_err());
    assert!(
        names(&save).is_empty(),
        "the damaged partial is gone: {:?}",
        names(&save)
    );

    let (sent, received) = transfer(&src, &meta, &save, true, None, None).await;
    assert_eq!(sent.unwrap().resumed_from, 0);
    assert_same(&received.unwrap().path, &data);
}

#[tokio::test]
async fn limits_pace_the_sender_and_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let len = 3 * 1024 * 1024;
    let (src, data) = random_file(dir.path(), "l.bin", len, 6);
    let meta = Meta::new("l.bin", data.len() as u64, FileHash::of(&data));
    let rate = 8_000_000u64;
    // At most one burst (a frame, or 50 ms at the rate) goes before pacing starts.
    let burst = (rate / 20).max(64 * 1024);
    let floor = Duration::from_secs_f64((len as u64 - burst) as f64 / rate as f64);
    for (send_limit, receive_limit, save) in [
        (Some(rate), None, dir.path().join("a")),
        (None, Some(rate), dir.path().join("b")),
    ] {
        let started = Instant::now();
        let (sent, received) = transfer(&src, &meta, &save, true, send_limit, receive_limit).await;
        let took = started.elapsed();
        sent.unwrap();
        assert_same(&received.unwrap().path, &data);
        assert!(
            took >= floor,
            "{len} bytes at {rate} B/s took {took:?}, less than {floor:?} (send {send_limit:?}, receive {receive_limit:?})"
        );
    }
}
