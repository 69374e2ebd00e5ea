//! Sender and receiver state machines, alone with scripted peers and together in memory.

// Test helpers outside #[test] functions unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ats_p2p_wire::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_IDLE_TIMEOUT, FileHash, Frame, FrameDecoder, FrameError,
    FrameType, MAX_DATA_LEN, Meta, Receiver, ReceiverConfig, ReceiverEvent, Sender, SenderConfig,
    SenderEvent, TransferError, encode_parts,
};
use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn file(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i.wrapping_mul(31) >> 3) as u8).collect()
}

fn meta_for(name: &str, data: &[u8]) -> Meta {
    Meta {
        name: name.into(),
        size: data.len() as u64,
        hash: FileHash::of(data),
        resume: false,
    }
}

// ---------------------------------------------------------------- the in-memory pair

/// Both state machines and the byte streams between them, driven step by step like quinn's
/// `Pair`. The sender application hands in `chunk`-sized pieces of `file`.
struct Pair {
    now: Instant,
    sender: Sender,
    receiver: Receiver,
    to_receiver: BytesMut,
    to_sender: BytesMut,
    receiver_decoder: FrameDecoder,
    sender_decoder: FrameDecoder,
    file: Bytes,
    given: usize,
    chunk: usize,
    stored: Vec<u8>,
    commit_result: Result<(), String>,
    sender_events: Vec<SenderEvent>,
    receiver_events: Vec<ReceiverEvent>,
    data_frames: usize,
}

impl Pair {
    fn new(sender_meta: Meta, receiver_offer: Meta, file: Vec<u8>, chunk: usize) -> Self {
        let now = Instant::now();
        Self {
            now,
            sender: Sender::new(sender_meta, SenderConfig::default(), now).unwrap(),
            receiver: Receiver::new(receiver_offer, ReceiverConfig::new(64 * MIB), now),
            to_receiver: BytesMut::new(),
            to_sender: BytesMut::new(),
            receiver_decoder: FrameDecoder::new(),
            sender_decoder: FrameDecoder::new(),
            file: Bytes::from(file),
            given: 0,
            chunk,
            stored: Vec::new(),
            commit_result: Ok(()),
            sender_events: Vec::new(),
            receiver_events: Vec::new(),
            data_frames: 0,
        }
    }

    fn honest(data: Vec<u8>, chunk: usize) -> Self {
        let meta = meta_for("file.bin", &data);
        Self::new(meta.clone(), meta, data, chunk)
    }

    /// One round: sender app and outputs, receiver inputs and outputs, sender inputs.
    /// Returns whether anything moved.
    fn step(&mut self) -> bool {
        let mut moved = false;
        if self.sender.wants_data() && self.given < self.file.len() {
            let end = (self.given + self.chunk).min(self.file.len());
            self.sender
                .send_chunk(self.now, self.file.slice(self.given..end))
                .unwrap();
            self.given = end;
            moved = true;
        }
        while let Some(frame) = self.sender.poll_frame() {
            if let Frame::Data(d) = &frame {
                assert!(d.len() <= MAX_DATA_LEN);
                self.data_frames += 1;
            }
            let mut parts = encode_parts(&frame).unwrap();
            while parts.has_remaining() {
                let n = parts.chunk().len();
                self.to_receiver.extend_from_slice(parts.chunk());
                parts.advance(n);
            }
            moved = true;
        }
        while let Some(event) = self.sender.poll_event() {
            self.sender_events.push(event);
        }
        while let Some(frame) = self.receiver_decoder.decode(&mut self.to_receiver).unwrap() {
            self.receiver.handle_frame(self.now, frame);
            self.drain_receiver();
            moved = true;
        }
        self.drain_receiver();
        while let Some(frame) = self.receiver.poll_frame() {
            ats_p2p_wire::encode(&frame, &mut self.to_sender).unwrap();
            moved = true;
        }
        while let Some(frame) = self.sender_decoder.decode(&mut self.to_sender).unwrap() {
            self.sender.handle_frame(self.now, frame);
            moved = true;
        }
        while let Some(event) = self.sender.poll_event() {
            self.sender_events.push(event);
        }
        moved
    }

    fn drain_receiver(&mut self) {
        while let Some(event) = self.receiver.poll_event() {
            match &event {
                ReceiverEvent::Write { offset, data } => {
                    assert_eq!(*offset, self.stored.len() as u64);
                    self.stored.extend_from_slice(data);
                }
                ReceiverEvent::Verified { .. } => match &self.commit_result {
                    Ok(()) => self.receiver.file_committed().unwrap(),
                    Err(reason) => self.receiver.fail_local(reason.clone()),
                },
                _ => {}
            }
            self.receiver_events.push(event);
        }
    }

    /// Steps until nothing moves; panics on a livelock.
    fn drive(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("livelock");
    }

    fn sender_outcome(&self) -> Option<&SenderEvent> {
        self.sender_events
            .iter()
            .find(|e| matches!(e, SenderEvent::Completed { .. } | SenderEvent::Failed(_)))
    }

    fn receiver_failure(&self) -> Option<&TransferError> {
        self.receiver_events.iter().find_map(|e| match e {
            ReceiverEvent::Failed(err) => Some(err),
            _ => None,
        })
    }
}

// ---------------------------------------------------------------- round trips

fn round_trip(size: usize, chunk: usize) {
    let data = file(size);
    let mut pair = Pair::honest(data.clone(), chunk);
    pair.drive();
    assert!(
        matches!(pair.sender_outcome(), Some(SenderEvent::Completed { .. })),
        "size {size} chunk {chunk}: {:?}",
        pair.sender_events
    );
    assert_eq!(pair.stored, data, "size {size}");
    assert!(pair.receiver_events.contains(&ReceiverEvent::Completed {
        size: size as u64,
        hash: FileHash::of(&data)
    }));
    // Each handed-in chunk becomes ceil(len / 64 KiB) DATA frames.
    let expected_frames: usize = (0..size)
        .step_by(chunk)
        .map(|start| (size - start).min(chunk).div_ceil(MAX_DATA_LEN))
        .sum();
    assert_eq!(
        pair.data_frames, expected_frames,
        "size {size} chunk {chunk}"
    );
    assert!(pair.sender.is_finished() && pair.receiver.is_finished());
    assert_eq!(pair.sender.poll_timeout(), None);
    assert_eq!(pair.receiver.poll_timeout(), None);
    // The last progress events say "all of it".
    assert!(
        pair.sender_events.contains(&SenderEvent::Progress {
            bytes: size as u64,
            total: size as u64
        }) || size == 0
    );
}

#[test]
fn round_trip_empty_file() {
    round_trip(0, MAX_DATA_LEN);
}

#[test]
fn round_trip_exact_multiples_of_64k() {
    round_trip(MAX_DATA_LEN, MAX_DATA_LEN);
    round_trip(2 * MAX_DATA_LEN, MAX_DATA_LEN);
    round_trip(16 * MAX_DATA_LEN, 4 * MAX_DATA_LEN);
}

#[test]
fn round_trip_odd_sizes_and_chunkings() {
    round_trip(1, 1);
    round_trip(7, 3);
    round_trip(MAX_DATA_LEN - 1, MAX_DATA_LEN);
    round_trip(MAX_DATA_LEN + 1, MAX_DATA_LEN);
    round_trip(1_000_003, 100_000);
    round_trip(300_001, 1_000_000);
    round_trip(10_000, 1000);
}

proptest! {
    #![proptest_config(crate::proptest_config(24, 0x5eed_0003))]

    #[test]
    fn round_trip_any_size_and_chunking(size in 0usize..300_000, chunk in 1usize..200_000) {
        round_trip(size, chunk.max(size / 64).max(1));
    }
}

#[test]
fn ack_carries_size_and_hash() {
    let data = file(5);
    let mut pair = Pair::honest(data.clone(), 5);
    pair.drive();
    let Some(SenderEvent::Completed { ack }) = pair.sender_outcome() else {
        panic!("not completed")
    };
    let json: serde_json::Value = serde_json::from_slice(ack).unwrap();
    assert_eq!(json["size"], 5);
    assert_eq!(json["hash"], FileHash::of(&data).to_hex());
}

// ---------------------------------------------------------------- pair failures

#[test]
fn sender_lying_about_the_hash_is_refused() {
    let data = file(200_000);
    let mut meta = meta_for("file.bin", &data);
    meta.hash = FileHash::of(b"something else");
    let mut pair = Pair::new(meta.clone(), meta, data, 65_536);
    pair.drive();
    assert!(matches!(
        pair.receiver_failure(),
        Some(TransferError::HashMismatch { .. })
    ));
    let Some(SenderEvent::Failed(TransferError::Nack(reason))) = pair.sender_outcome() else {
        panic!("{:?}", pair.sender_events)
    };
    assert!(reason.starts_with("SHA-256 mismatch"), "{reason}");
    assert!(
        !pair
            .receiver_events
            .iter()
            .any(|e| matches!(e, ReceiverEvent::Verified { .. }))
    );
}

#[test]
fn meta_that_does_not_match_the_offer_is_refused() {
    let data = file(1000);
    let meta = meta_for("file.bin", &data);
    for (field, offer) in [
        (
            "name",
            Meta {
                name: "other.bin".into(),
                ..meta.clone()
            },
        ),
        (
            "size",
            Meta {
                size: 999,
                ..meta.clone()
            },
        ),
        (
            "hash",
            Meta {
                hash: FileHash::of(b""),
                ..meta.clone()
            },
        ),
    ] {
        let mut pair = Pair::new(meta.clone(), offer, data.clone(), 1000);
        pair.drive();
        assert_eq!(
            pair.receiver_failure(),
            Some(&TransferError::MetaMismatch { field })
        );
        assert!(pair.stored.is_empty());
        let Some(SenderEvent::Failed(TransferError::Nack(reason))) = pair.sender_outcome() else {
            panic!("{:?}", pair.sender_events)
        };
        assert_eq!(
            reason,
            &format!("META {field} does not match the accepted offer")
        );
        // The sender stopped sending data after the NACK.
        assert!(!pair.sender.wants_data());
    }
}

#[test]
fn receiver_disk_failure_reaches_the_sender_as_error() {
    let data = file(70_000);
    let mut pair = Pair::honest(data, 70_000);
    pair.commit_result = Err("disk full".into());
    pair.drive();
    assert_eq!(
        pair.sender_outcome(),
        Some(&SenderEvent::Failed(TransferError::PeerError(
            "local failure: disk full".into()
        )))
    );
}

// ---------------------------------------------------------------- receiver, scripted peer

struct Rx {
    now: Instant,
    rx: Receiver,
    data: Vec<u8>,
    meta: Meta,
}

impl Rx {
    fn new(size: usize) -> Self {
        let data = file(size);
        let meta = meta_for("f", &data);
        let now = Instant::now();
        Self {
            rx: Receiver::new(meta.clone(), ReceiverConfig::new(MIB), now),
            now,
            data,
            meta,
        }
    }

    fn feed(&mut self, frame: Frame) -> Vec<ReceiverEvent> {
        self.rx.handle_frame(self.now, frame);
        std::iter::from_fn(|| self.rx.poll_event()).collect()
    }

    fn data(&self, range: std::ops::Range<usize>) -> Frame {
        Frame::Data(Bytes::copy_from_slice(&self.data[range]))
    }

    fn failure(events: &[ReceiverEvent]) -> Option<&TransferError> {
        events.iter().find_map(|e| match e {
            ReceiverEvent::Failed(err) => Some(err),
            _ => None,
        })
    }
}

#[test]
fn receiver_lying_size_done_too_early() {
    let mut t = Rx::new(10);
    t.feed(Frame::Meta(t.meta.clone()));
    t.feed(t.data(0..5));
    assert_eq!(t.rx.bytes_received(), 5);
    let ev = t.feed(Frame::Done);
    assert_eq!(t.rx.bytes_received(), 5, "kept after the failure");
    assert_eq!(
        Rx::failure(&ev),
        Some(&TransferError::SizeMismatch {
            size: 10,
            received: 5
        })
    );
    assert_eq!(
        t.rx.poll_frame(),
        Some(Frame::Nack("DONE after 5 of 10 announced bytes".into()))
    );
    assert_eq!(t.rx.poll_frame(), None);
}

#[test]
fn receiver_nacks_the_moment_bytes_exceed_the_size() {
    let mut t = Rx::new(10);
    t.feed(Frame::Meta(t.meta.clone()));
    let ev = t.feed(t.data(0..8));
    assert_eq!(ev.len(), 2); // Write + Progress
    let ev = t.feed(Frame::Data(Bytes::from_static(b"abc")));
    // No write for the frame that went past the size; immediate NACK.
    assert_eq!(
        ev,
        vec![ReceiverEvent::Failed(TransferError::Oversize { size: 10 })]
    );
    assert!(matches!(t.rx.poll_frame(), Some(Frame::Nack(_))));
    // Further frames are ignored.
    assert!(t.feed(Frame::Done).is_empty());
    assert_eq!(t.rx.poll_frame(), None);
}

#[test]
fn receiver_refuses_an_offer_above_its_limit_at_once() {
    let meta = Meta {
        name: "big".into(),
        size: 2 * MIB,
        hash: FileHash::of(b""),
        resume: false,
    };
    let mut rx = Receiver::new(meta, ReceiverConfig::new(MIB), Instant::now());
    assert_eq!(
        rx.poll_event(),
        Some(ReceiverEvent::Failed(TransferError::TooLarge {
            size: 2 * MIB,
            max: MIB
        }))
    );
    assert!(matches!(rx.poll_frame(), Some(Frame::Nack(_))));
}

#[test]
fn receiver_out_of_order_frames() {
    let cases: Vec<(Vec<Frame>, &str, FrameType)> = vec![
        (
            vec![Frame::Data(Bytes::from_static(b"x"))],
            "META",
            FrameType::Data,
        ),
        (vec![Frame::Done], "META", FrameType::Done),
        (vec![Frame::Ack(Bytes::new())], "META", FrameType::Ack),
        (
            vec![Frame::Meta(Rx::new(4).meta), Frame::Meta(Rx::new(4).meta)],
            "DATA or DONE",
            FrameType::Meta,
        ),
        (
            vec![Frame::Meta(Rx::new(4).meta), Frame::Ack(Bytes::new())],
            "DATA or DONE",
            FrameType::Ack,
        ),
    ];
    for (frames, expected, got) in cases {
        let mut t = Rx::new(4);
        let mut events = Vec::new();
        for f in frames {
            events.extend(t.feed(f));
        }
        assert_eq!(
            Rx::failure(&events),
            Some(&TransferError::UnexpectedFrame { expected, got })
        );
        let Some(Frame::Nack(reason)) = t.rx.poll_frame() else {
            panic!("expected NACK")
        };
        assert_eq!(
            reason,
            format!("unexpected {got} frame while waiting for {expected}")
        );
    }
    // A frame after DONE, before the commit.
    let mut t = Rx::new(4);
    t.feed(Frame::Meta(t.meta.clone()));
    t.feed(t.data(0..4));
    let ev = t.feed(Frame::Done);
    assert!(matches!(ev.last(), Some(ReceiverEvent::Verified { .. })));
    let ev = t.feed(Frame::Data(Bytes::from_static(b"x")));
    assert!(matches!(
        Rx::failure(&ev),
        Some(TransferError::UnexpectedFrame {
            got: FrameType::Data,
            ..
        })
    ));
    assert!(t.rx.file_committed().is_err(), "no ACK after a failure");
    assert!(matches!(t.rx.poll_frame(), Some(Frame::Nack(_))));
}

#[test]
fn receiver_peer_error_and_malformed_input() {
    let mut t = Rx::new(4);
    t.feed(Frame::Meta(t.meta.clone()));
    let ev = t.feed(Frame::Error("sender crashed".into()));
    assert_eq!(
        ev,
        vec![ReceiverEvent::Failed(TransferError::PeerError(
            "sender crashed".into()
        ))]
    );
    assert_eq!(t.rx.poll_frame(), None, "no reply to an ERROR");

    let mut t = Rx::new(4);
    t.rx.handle_decode_error(FrameError::UnknownType(9));
    assert_eq!(
        t.rx.poll_frame(),
        Some(Frame::Nack(
            "malformed frame: unknown frame type 0x09".into()
        ))
    );
    let mut t = Rx::new(4);
    t.rx.handle_closed();
    assert_eq!(
        t.rx.poll_event(),
        Some(ReceiverEvent::Failed(TransferError::Closed {
            waiting_for: "META"
        }))
    );
    assert_eq!(t.rx.poll_frame(), None);
}

#[test]
fn receiver_acks_only_after_commit() {
    let mut t = Rx::new(3);
    assert!(t.rx.file_committed().is_err(), "too early");
    t.feed(Frame::Meta(t.meta.clone()));
    t.feed(t.data(0..3));
    let ev = t.feed(Frame::Done);
    assert_eq!(
        ev.last(),
        Some(&ReceiverEvent::Verified {
            size: 3,
            hash: t.meta.hash
        })
    );
    assert_eq!(
        t.rx.poll_frame(),
        None,
        "no ACK before the file is committed"
    );
    assert_eq!(
        t.rx.poll_timeout(),
        None,
        "no peer deadline while committing"
    );
    t.rx.file_committed().unwrap();
    assert!(matches!(t.rx.poll_frame(), Some(Frame::Ack(_))));
    assert!(t.rx.file_committed().is_err(), "only once");
}

#[test]
fn receiver_local_failure_sends_error() {
    let mut t = Rx::new(3);
    t.feed(Frame::Meta(t.meta.clone()));
    t.rx.fail_local("No space left on device");
    assert_eq!(
        t.rx.poll_frame(),
        Some(Frame::Error(
            "local failure: No space left on device".into()
        ))
    );
}

#[test]
fn receiver_idle_timeout_moves_with_frames() {
    let mut t = Rx::new(100);
    let start = t.now;
    assert_eq!(t.rx.poll_timeout(), Some(start + DEFAULT_IDLE_TIMEOUT));
    t.now = start + Duration::from_secs(20);
    t.feed(Frame::Meta(t.meta.clone()));
    assert_eq!(t.rx.poll_timeout(), Some(t.now + DEFAULT_IDLE_TIMEOUT));
    t.rx.handle_timeout(start + DEFAULT_IDLE_TIMEOUT); // early: nothing happens
    assert_eq!(t.rx.poll_event(), None);
    t.rx.handle_timeout(t.now + DEFAULT_IDLE_TIMEOUT);
    assert_eq!(
        t.rx.poll_event(),
        Some(ReceiverEvent::Failed(TransferError::TimedOut {
            waiting_for: "DATA or DONE"
        }))
    );
    assert_eq!(
        t.rx.poll_frame(),
        Some(Frame::Error("timed out waiting for DATA or DONE".into()))
    );
    assert_eq!(t.rx.poll_timeout(), None);
}

#[test]
fn receiver_frame_after_the_deadline_is_a_timeout() {
    let mut t = Rx::new(1);
    t.now += DEFAULT_IDLE_TIMEOUT;
    let ev = t.feed(Frame::Meta(t.meta.clone()));
    assert_eq!(
        ev,
        vec![ReceiverEvent::Failed(TransferError::TimedOut {
            waiting_for: "META"
        })]
    );
}

#[test]
fn receiver_overall_deadline() {
    let data = file(10);
    let meta = meta_for("f", &data);
    let start = Instant::now();
    let config = ReceiverConfig {
        overall_timeout: Some(Duration::from_secs(5)),
        ..ReceiverConfig::new(MIB)
    };
    let mut rx = Receiver::new(meta.clone(), config, start);
    assert_eq!(rx.poll_timeout(), Some(start + Duration::from_secs(5)));
    rx.handle_frame(start + Duration::from_secs(1), Frame::Meta(meta));
    rx.handle_frame(
        start + Duration::from_secs(2),
        Frame::Data(Bytes::from(data)),
    );
    rx.handle_frame(start + Duration::from_secs(3), Frame::Done);
    // Waiting for the commit: only the overall deadline runs.
    assert_eq!(rx.poll_timeout(), Some(start + Duration::from_secs(5)));
    rx.handle_timeout(start + Duration::from_secs(5));
    let events: Vec<_> = std::iter::from_fn(|| rx.poll_event()).collect();
    assert_eq!(
        events.last(),
        Some(&ReceiverEvent::Failed(TransferError::TimedOut {
            waiting_for: "the local file commit"
        }))
    );
}

#[test]
fn receiver_that_is_never_drained_fails_instead_of_buffering() {
    let size = 1_000;
    let mut t = Rx::new(size);
    t.rx.handle_frame(t.now, Frame::Meta(t.meta.clone()));
    for i in 0..size {
        t.rx.handle_frame(t.now, t.data(i..i + 1));
        if t.rx.is_finished() {
            break;
        }
    }
    assert!(t.rx.is_finished());
    let events: Vec<_> = std::iter::from_fn(|| t.rx.poll_event()).collect();
    assert!(events.len() <= ats_p2p_wire::MAX_PENDING_EVENTS + 1);
    assert!(matches!(
        events.last(),
        Some(ReceiverEvent::Failed(TransferError::ApiMisuse(_)))
    ));
}

// ---------------------------------------------------------------- sender, scripted peer

fn sender(size: usize) -> (Sender, Vec<u8>, Instant) {
    let data = file(size);
    let now = Instant::now();
    let s = Sender::new(meta_for("f", &data), SenderConfig::default(), now).unwrap();
    (s, data, now)
}

fn frames(s: &mut Sender) -> Vec<Frame> {
    std::iter::from_fn(|| s.poll_frame()).collect()
}

#[test]
fn sender_frames_in_order_without_copying() {
    let (mut s, data, now) = sender(3 * MAX_DATA_LEN + 10);
    let chunk = Bytes::from(data.clone());
    assert!(matches!(frames(&mut s).as_slice(), [Frame::Meta(_)]));
    s.send_chunk(now, chunk.clone()).unwrap();
    let out = frames(&mut s);
    assert_eq!(out.len(), 5);
    let mut at = 0;
    for f in &out[..4] {
        let Frame::Data(d) = f else {
            panic!("expected DATA")
        };
        assert_eq!(
            d.as_ptr(),
            chunk[at..].as_ptr(),
            "DATA must share the chunk"
        );
        at += d.len();
    }
    assert_eq!(at, data.len());
    assert_eq!(out[4], Frame::Done);
    assert_eq!(s.poll_timeout(), Some(now + DEFAULT_ACK_TIMEOUT));
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events,
        vec![SenderEvent::Progress {
            bytes: data.len() as u64,
            total: data.len() as u64
        }]
    );
}

#[test]
fn sender_empty_file_is_meta_then_done() {
    let (mut s, _, _) = sender(0);
    assert!(matches!(
        frames(&mut s).as_slice(),
        [Frame::Meta(_), Frame::Done]
    ));
    assert!(!s.wants_data());
}

#[test]
fn sender_refuses_more_bytes_than_announced() {
    let (mut s, data, now) = sender(10);
    frames(&mut s);
    assert!(matches!(
        s.send_chunk(now, Bytes::from(vec![0u8; 11])),
        Err(TransferError::ApiMisuse(_))
    ));
    assert_eq!(s.remaining(), 10, "nothing changed");
    s.send_chunk(now, Bytes::copy_from_slice(&data[..6]))
        .unwrap();
    assert!(
        s.send_chunk(now, Bytes::copy_from_slice(&data[6..]))
            .is_err(),
        "not drained"
    );
    assert_eq!(frames(&mut s).len(), 1);
    assert!(s.send_chunk(now, Bytes::from(vec![0u8; 5])).is_err());
    s.send_chunk(now, Bytes::copy_from_slice(&data[6..]))
        .unwrap();
    assert!(matches!(
        frames(&mut s).as_slice(),
        [Frame::Data(_), Frame::Done]
    ));
    assert!(s.send_chunk(now, Bytes::new()).is_err(), "finished sending");
}

#[test]
fn sender_early_nack_stops_the_data() {
    let (mut s, data, now) = sender(200_000);
    frames(&mut s);
    s.send_chunk(now, Bytes::from(data)).unwrap();
    assert!(matches!(s.poll_frame(), Some(Frame::Data(_))));
    s.handle_frame(
        now,
        Frame::Nack("META name does not match the accepted offer".into()),
    );
    assert_eq!(s.poll_frame(), None, "no more DATA, and no reply to a NACK");
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events.last(),
        Some(&SenderEvent::Failed(TransferError::Nack(
            "META name does not match the accepted offer".into()
        )))
    );
    assert!(!s.wants_data());
}

#[test]
fn sender_ack_timeout() {
    let (mut s, data, now) = sender(5);
    frames(&mut s);
    s.send_chunk(now, Bytes::from(data)).unwrap();
    frames(&mut s);
    let deadline = s.poll_timeout().unwrap();
    s.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!s.is_finished());
    s.handle_timeout(deadline);
    assert_eq!(
        s.poll_frame(),
        Some(Frame::Error("timed out waiting for ACK".into()))
    );
    let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(
        events.last(),
        Some(&SenderEvent::Failed(TransferError::TimedOut {
            waiting_for: "ACK"
        }))
    );
    // A late ACK changes nothing.
    s.handle_frame(deadline, Frame::Ack(Bytes::new()));
    assert_eq!(s.poll_event(), None);
}

#[test]
fn sender_out_of_order_frames() {
    // ACK while still sending.
    let (mut s, _, now) = sender(5);
    frames(&mut s);
    s.handle_frame(now, Frame::Ack(Bytes::new()));
    assert!(matches!(
        s.poll_event(),
        Some(SenderEvent::Failed(TransferError::UnexpectedFrame {
            got: FrameType::Ack,
            ..
        }))
    ));
    assert!(matches!(s.poll_frame(), Some(Frame::Error(_))));
    // ACK before DONE was taken out.
    let (mut s, data, now) = sender(5);
    s.send_chunk(now, Bytes::from(data)).unwrap();
    s.handle_frame(now, Frame::Ack(Bytes::new()));
    assert!(matches!(s.poll_event(), Some(SenderEvent::Failed(_))));
    assert!(
        matches!(frames(&mut s).as_slice(), [Frame::Error(_)]),
        "no META/DATA after failing"
    );
    // DATA from the receiver.
    let (mut s, _, now) = sender(0);
    frames(&mut s);
    s.handle_frame(now, Frame::Data(Bytes::from_static(b"?")));
    assert!(matches!(
        s.poll_event(),
        Some(SenderEvent::Failed(TransferError::UnexpectedFrame {
            expected: "ACK",
            got: FrameType::Data
        }))
    ));
}

#[test]
fn sender_local_failure_and_overall_deadline() {
    let (mut s, _, now) = sender(5);
    frames(&mut s);
    s.fail_local("file changed while sending");
    assert_eq!(
        s.poll_frame(),
        Some(Frame::Error(
            "local failure: file changed while sending".into()
        ))
    );

    let data = file(5);
    let config = SenderConfig {
        overall_timeout: Some(Duration::from_secs(3)),
        ..SenderConfig::default()
    };
    let mut s = Sender::new(meta_for("f", &data), config, now).unwrap();
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(3)));
    s.handle_timeout(now + Duration::from_secs(3));
    assert!(s.is_finished());
    assert_eq!(
        frames(&mut s),
        vec![Frame::Error(
            "timed out waiting for file data from the application".into()
        )]
    );
}

#[test]
fn sender_refuses_a_name_that_cannot_be_sent() {
    let meta = Meta {
        name: "x".repeat(10_000),
        size: 0,
        hash: FileHash::of(b""),
        resume: false,
    };
    assert!(matches!(
        Sender::new(meta, SenderConfig::default(), Instant::now()),
        Err(TransferError::ApiMisuse(_))
    ));
}
