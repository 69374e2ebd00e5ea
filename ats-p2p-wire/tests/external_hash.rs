//! The receiver with the caller hashing (`with_external_hash`): it asks for the hash after
//! DONE, verifies it before `Verified`, and a wrong hash fails with NACK before any commit.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use ats_p2p_wire::{FileHash, Frame, Meta, Receiver, ReceiverConfig, ReceiverEvent, TransferError};
use bytes::Bytes;
use sha2::{Digest, Sha256};

fn offer(data: &[u8]) -> Meta {
    Meta {
        name: "f.bin".into(),
        size: data.len() as u64,
        hash: FileHash::of(data),
        resume: false,
    }
}

/// Feeds META, the data in two DATA frames and DONE; returns the events and the hash of the
/// bytes the receiver asked to write (as a caller hashing on its writer would).
fn run(data: &[u8], meta: &Meta) -> (Receiver, Vec<ReceiverEvent>, FileHash) {
    let now = Instant::now();
    let mut r = Receiver::new(meta.clone(), ReceiverConfig::new(1 << 20), now).with_external_hash();
    let mut events = Vec::new();
    let mut hasher = Sha256::new();
    let half = data.len() / 2;
    let frames = [
        Frame::Meta(meta.clone()),
        Frame::Data(Bytes::copy_from_slice(&data[..half])),
        Frame::Data(Bytes::copy_from_slice(&data[half..])),
        Frame::Done,
    ];
    for f in frames {
        r.handle_frame(now, f);
        while let Some(e) = r.poll_event() {
            if let ReceiverEvent::Write { data, .. } = &e {
                hasher.update(data);
            }
            events.push(e);
        }
    }
    (r, events, FileHash(hasher.finalize().into()))
}

#[test]
fn asks_for_the_hash_and_verifies_it_before_commit() {
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let meta = offer(&data);
    let (mut r, events, hash) = run(&data, &meta);
    assert_eq!(
        events.last(),
        Some(&ReceiverEvent::HashNeeded {
            size: data.len() as u64
        })
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ReceiverEvent::Verified { .. }))
    );
    // Committing before the hash is checked is refused.
    assert!(r.file_committed().is_err());
    r.handle_hash(hash).unwrap();
    assert_eq!(
        r.poll_event(),
        Some(ReceiverEvent::Verified {
            size: meta.size,
            hash: meta.hash
        })
    );
    r.file_committed().unwrap();
    assert!(matches!(r.poll_frame(), Some(Frame::Ack(_))));
    assert!(matches!(
        r.poll_event(),
        Some(ReceiverEvent::Completed { .. })
    ));
}

#[test]
fn a_wrong_hash_fails_with_nack_and_never_verifies() {
    let data = vec![7u8; 5000];
    let meta = offer(&data);
    let (mut r, _, _) = run(&data, &meta);
    r.handle_hash(FileHash([0; 32])).unwrap();
    match r.poll_event() {
        Some(ReceiverEvent::Failed(TransferError::HashMismatch { expected, .. })) => {
            assert_eq!(expected, meta.hash);
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert!(matches!(r.poll_frame(), Some(Frame::Nack(_))));
    assert!(r.is_finished());
    assert!(r.file_committed().is_err());
}

#[test]
fn handle_hash_outside_its_state_is_refused() {
    let data = vec![1u8; 100];
    let meta = offer(&data);
    let mut r = Receiver::new(meta.clone(), ReceiverConfig::new(1 << 20), Instant::now())
        .with_external_hash();
    assert!(r.handle_hash(meta.hash).is_err());
    assert!(!r.is_finished());
    // Without with_external_hash the receiver hashes and never asks.
    let mut plain = Receiver::new(meta.clone(), ReceiverConfig::new(1 << 20), Instant::now());
    let now = Instant::now();
    plain.handle_frame(now, Frame::Meta(meta.clone()));
    plain.handle_frame(now, Frame::Data(Bytes::from(data)));
    plain.handle_frame(now, Frame::Done);
    let mut events = Vec::new();
    while let Some(e) = plain.poll_event() {
        events.push(e);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ReceiverEvent::Verified { .. }))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ReceiverEvent::HashNeeded { .. }))
    );
    assert!(plain.handle_hash(meta.hash).is_err());
}
