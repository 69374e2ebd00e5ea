//! The resume extension: a sender that offers resuming and a receiver holding a prefix meet
//! over encoded bytes; only the missing bytes move, the caller's hash covers the whole file,
//! and either side without the extension (a seed peer) still completes a whole transfer.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use ats_p2p_wire::{
    FileHash, Frame, FrameDecoder, Meta, Receiver, ReceiverConfig, ReceiverEvent, Sender,
    SenderConfig, SenderEvent, TransferError, encode,
};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};

fn file(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// What one in-memory run observed.
#[derive(Default)]
struct Run {
    /// The receiver's file: the prefix it held, then its writes.
    stored: Vec<u8>,
    /// DATA payload bytes that crossed the "network".
    data_bytes: u64,
    /// `Started` offset seen by the receiver.
    started: Option<u64>,
    /// `Resumed` offset seen by the sender.
    resumed: Option<u64>,
    sender: Option<SenderEvent>,
    receiver_failed: Option<TransferError>,
    frames_to_sender: Vec<Frame>,
}

impl std::fmt::Debug for Run {
    // Without the file's bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("stored_len", &self.stored.len())
            .field("data_bytes", &self.data_bytes)
            .field("started", &self.started)
            .field("resumed", &self.resumed)
            .field("sender", &self.sender)
            .field("receiver_failed", &self.receiver_failed)
            .field("frames_to_sender", &self.frames_to_sender)
            .finish()
    }
}

/// Runs a transfer of `data` where the receiver holds `prefix` (`None`: a seed receiver) and
/// the sender offers resuming or not; the receiver's caller hashes its file as production
/// does (re-hashing the prefix, restarting on `Started { offset: 0 }`).
fn transfer(data: &[u8], prefix: Option<&[u8]>, offer_resume: bool) -> Run {
    let now = Instant::now();
    let meta = Meta::new("f.bin", data.len() as u64, FileHash::of(data));
    let config = SenderConfig {
        offer_resume,
        ..SenderConfig::default()
    };
    let mut sender = Sender::new(meta.clone(), config, now).unwrap();
    let mut receiver = Receiver::new(meta, ReceiverConfig::new(1 << 30), now).with_external_hash();
    let mut run = Run::default();
    let mut hasher = Sha256::new();
    if let Some(p) = prefix {
        receiver = receiver.with_resume(p.len() as u64);
        run.stored = p.to_vec();
        hasher.update(p);
    }
    let (mut to_rx, mut to_tx) = (BytesMut::new(), BytesMut::new());
    let (mut rx_dec, mut tx_dec) = (FrameDecoder::new(), FrameDecoder::new());
    let mut next = 0usize; // next file byte the sender hands in
    for _ in 0..10_000 {
        if run.sender.is_some() {
            break;
        }
        while let Some(e) = sender.poll_event() {
            match e {
                SenderEvent::Resumed { offset } => {
                    run.resumed = Some(offset);
                    next = usize::try_from(offset).unwrap();
                }
                SenderEvent::Progress { .. } => {}
                other => run.sender = Some(other),
            }
        }
        if run.sender.is_some() {
            break;
        }
        if sender.wants_data() && sender.remaining() > 0 {
            let end = (next + 100_000).min(data.len());
            sender
                .send_chunk(now, Bytes::copy_from_slice(&data[next..end]))
                .unwrap();
            next = end;
        }
        while let Some(f) = sender.poll_frame() {
            if let Frame::Data(d) = &f {
                run.data_bytes += d.len() as u64;
            }
            encode(&f, &mut to_rx).unwrap();
        }
        while let Some(f) = rx_dec.decode(&mut to_rx).unwrap() {
            receiver.handle_frame(now, f);
            while let Some(e) = receiver.poll_event() {
                match e {
                    ReceiverEvent::Started { offset } => {
                        run.started = Some(offset);
                        if offset == 0 {
                            run.stored.clear();
                            hasher = Sha256::new();
                        }
                    }
                    ReceiverEvent::Write { offset, data } => {
                        assert_eq!(offset, run.stored.len() as u64);
                        hasher.update(&data);
                        run.stored.extend_from_slice(&data);
                    }
                    ReceiverEvent::HashNeeded { .. } => {
                        let h = FileHash(std::mem::take(&mut hasher).finalize().into());
                        receiver.handle_hash(h).unwrap();
                    }
                    ReceiverEvent::Verified { .. } => receiver.file_committed().unwrap(),
                    ReceiverEvent::Failed(err) => run.receiver_failed = Some(err),
                    _ => {}
                }
            }
        }
        while let Some(f) = receiver.poll_frame() {
            run.frames_to_sender.push(f.clone());
            encode(&f, &mut to_tx).unwrap();
        }
        while let Some(f) = tx_dec.decode(&mut to_tx).unwrap() {
            sender.handle_frame(now, f);
        }
    }
    run
}

#[test]
fn only_the_missing_bytes_move_and_the_hash_covers_the_whole_file() {
    let data = file(1_000_000);
    let run = transfer(&data, Some(&data[..400_000]), true);
    assert!(
        matches!(run.sender, Some(SenderEvent::Completed { .. })),
        "{run:?}"
    );
    assert_eq!(run.stored, data);
    assert_eq!(run.data_bytes, 600_000);
    assert_eq!((run.started, run.resumed), (Some(400_000), Some(400_000)));
    assert_eq!(run.frames_to_sender.first(), Some(&Frame::Resume(400_000)));
}

#[test]
fn a_receiver_with_nothing_answers_zero_and_gets_everything() {
    let data = file(70_000);
    let run = transfer(&data, Some(&[]), true);
    assert!(matches!(run.sender, Some(SenderEvent::Completed { .. })));
    assert_eq!(run.stored, data);
    assert_eq!(run.data_bytes, 70_000);
    assert_eq!(run.resumed, Some(0));
}

#[test]
fn a_whole_prefix_needs_only_done() {
    let data = file(5_000);
    let run = transfer(&data, Some(&data), true);
    assert!(matches!(run.sender, Some(SenderEvent::Completed { .. })));
    assert_eq!(run.stored, data);
    assert_eq!(run.data_bytes, 0);
}

#[test]
fn a_corrupt_prefix_fails_the_hash_and_is_never_acknowledged() {
    let data = file(300_000);
    let mut prefix = data[..100_000].to_vec();
    prefix[99_999] ^= 1;
    let run = transfer(&data, Some(&prefix), true);
    assert!(
        matches!(
            run.receiver_failed,
            Some(TransferError::HashMismatch { .. })
        ),
        "{run:?}"
    );
    assert!(matches!(
        run.sender,
        Some(SenderEvent::Failed(TransferError::Nack(_)))
    ));
}

#[test]
fn a_seed_receiver_ignores_the_offer_field() {
    // A sender that was not told the receiver resumes never offers; the seed receiver gets
    // the seed protocol and sends no RESUME.
    let data = file(10_000);
    let run = transfer(&data, None, false);
    assert!(matches!(run.sender, Some(SenderEvent::Completed { .. })));
    assert_eq!(run.stored, data);
    assert_eq!(run.started, Some(0));
    assert!(
        run.frames_to_sender
            .iter()
            .all(|f| !matches!(f, Frame::Resume(_)))
    );
}

#[test]
fn a_seed_sender_gets_a_fresh_transfer_from_a_resuming_receiver() {
    let data = file(200_000);
    let run = transfer(&data, Some(&data[..150_000]), false);
    assert!(matches!(run.sender, Some(SenderEvent::Completed { .. })));
    assert_eq!(run.stored, data);
    assert_eq!(run.data_bytes, 200_000);
    assert_eq!(run.started, Some(0), "the prefix is discarded");
    assert!(
        run.frames_to_sender
            .iter()
            .all(|f| !matches!(f, Frame::Resume(_)))
    );
}

#[test]
fn meta_carries_resume_only_when_offered_and_seed_json_is_unchanged() {
    let meta = Meta::new("a", 3, FileHash::of(b"abc"));
    let mut wire = BytesMut::new();
    encode(&Frame::Meta(meta.clone()), &mut wire).unwrap();
    assert!(!String::from_utf8_lossy(&wire[5..]).contains("resume"));
    let offered = Meta {
        resume: true,
        ..meta
    };
    let mut wire = BytesMut::new();
    encode(&Frame::Meta(offered), &mut wire).unwrap();
    assert!(String::from_utf8_lossy(&wire[5..]).ends_with(r#","resume":true}"#));
    let mut wire = BytesMut::new();
    encode(&Frame::Resume(42), &mut wire).unwrap();
    assert_eq!(&wire[..], b"\x07\x00\x00\x00\x0d{\"offset\":42}");
}

#[test]
fn the_sender_refuses_a_resume_past_the_end_and_waits_bounded() {
    let now = Instant::now();
    let meta = Meta::new("f", 10, FileHash::of(&[0; 10]));
    let config = SenderConfig {
        offer_resume: true,
        ack_timeout: Duration::from_secs(5),
        ..SenderConfig::default()
    };
    let mut s = Sender::new(meta.clone(), config.clone(), now).unwrap();
    assert!(matches!(s.poll_frame(), Some(Frame::Meta(m)) if m.resume));
    assert!(!s.wants_data(), "no DATA before RESUME");
    s.handle_frame(now, Frame::Resume(11));
    assert!(matches!(s.poll_frame(), Some(Frame::Error(_))));
    let mut failed = false;
    while let Some(e) = s.poll_event() {
        failed |= matches!(
            e,
            SenderEvent::Failed(TransferError::ResumeBeyondSize {
                offset: 11,
                size: 10
            })
        );
    }
    assert!(failed);

    // No answer at all: the RESUME wait is bounded by the ACK timeout.
    let mut s = Sender::new(meta.clone(), config.clone(), now).unwrap();
    let _ = s.poll_frame();
    let at = s.poll_timeout().unwrap();
    s.handle_timeout(at);
    assert!(s.is_finished());

    // RESUME when not offered is a protocol violation.
    let mut s = Sender::new(meta, SenderConfig::default(), now).unwrap();
    let _ = s.poll_frame();
    s.handle_frame(now, Frame::Resume(0));
    assert!(s.is_finished());
}
