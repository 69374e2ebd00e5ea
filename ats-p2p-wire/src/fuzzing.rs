//! Fuzz target bodies, shared by `fuzz/` and by the corpus and property tests.
//!
//! Each function takes arbitrary bytes and panics only if an invariant of this crate is broken.
//! Not part of the API.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::{
    FileHash, Frame, FrameDecoder, FrameError, FrameType, MAX_DATA_LEN, Meta, Receiver,
    ReceiverConfig, ReceiverEvent, encode, encode_parts,
};

/// Reads the fuzz input as a byte cursor; reads past the end give zeros / empty slices.
#[derive(Debug)]
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Decodes all frames in one buffer, then in chunks whose sizes come from the input, and checks
/// that both give the same frames and the same error; every decoded frame must re-encode to a
/// frame that decodes to itself, and DATA/DONE/ACK must re-encode to the very bytes consumed.
pub fn frame_decoder(data: &[u8]) {
    let mut input = Input { data };
    let splits_len = usize::from(input.byte() % 8);
    let splits: Vec<usize> = input
        .take(splits_len)
        .iter()
        .map(|&b| usize::from(b) + 1)
        .collect();
    let stream = input.data;

    // One shot.
    let mut whole = BytesMut::from(stream);
    let mut decoder = FrameDecoder::new();
    let mut expected = Vec::new();
    loop {
        let before = whole.len();
        match decoder.decode(&mut whole) {
            Ok(Some(frame)) => {
                let consumed = before - whole.len();
                let start = stream.len() - before;
                let raw = stream.get(start..start + consumed);
                check_reencode(&frame, raw);
                expected.push(Ok(frame));
            }
            Ok(None) => {
                if let Err(err) = decoder.decode_eof(&mut whole) {
                    expected.push(Err(err));
                }
                break;
            }
            Err(err) => {
                // Errors are sticky for header errors and nothing is consumed.
                let again = decoder.decode(&mut whole);
                if matches!(err, FrameError::UnknownType(_) | FrameError::TooLong { .. }) {
                    assert_eq!(again, Err(err.clone()), "header errors must repeat");
                }
                expected.push(Err(err));
                break;
            }
        }
    }

    // In chunks.
    let mut got = Vec::new();
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut rest = stream;
    let mut i = 0usize;
    'outer: loop {
        let step = if splits.is_empty() {
            rest.len().max(1)
        } else {
            splits[i % splits.len()]
        };
        i = i.wrapping_add(1);
        let (chunk, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => got.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => {
                    got.push(Err(err));
                    break 'outer;
                }
            }
        }
        if rest.is_empty() {
            if let Err(err) = decoder.decode_eof(&mut buf) {
                got.push(Err(err));
            }
            break;
        }
    }
    assert_eq!(
        expected, got,
        "chunked decoding differs from one-shot decoding"
    );
}

fn check_reencode(frame: &Frame, raw: Option<&[u8]>) {
    let mut out = BytesMut::new();
    if let Err(err) = encode(frame, &mut out) {
        panic!("a decoded frame must encode: {err}");
    }
    if matches!(frame, Frame::Data(_) | Frame::Done | Frame::Ack(_)) {
        assert_eq!(Some(&out[..]), raw, "re-encoding changed the bytes");
    }
    match FrameDecoder::new().decode(&mut out) {
        Ok(Some(again)) => assert_eq!(&again, frame, "re-encoded frame decodes differently"),
        other => panic!("re-encoded frame does not decode: {other:?}"),
    }
    assert!(out.is_empty());
}

/// Idle timeout used by [`receiver`]: the input advances time in steps of whole seconds.
const FUZZ_IDLE: Duration = Duration::from_secs(10);

/// Runs a [`Receiver`] through an operation sequence taken from `data` (frames, some of them
/// the right file bytes; application calls; time; raw bytes through a decoder) and checks:
/// writes are contiguous; `Verified`/`Completed` only when the bytes written are exactly the
/// offered file (size and SHA-256, recomputed here); one outcome, then silence; every frame it
/// sends encodes; ACK only after `file_committed`; a deadline runs while waiting for the peer.
pub fn receiver(data: &[u8]) -> RunOutcome {
    run_receiver(data, false)
}

/// [`receiver`] in the mode production uses, [`Receiver::with_external_hash`]: the caller
/// hashes what it wrote. Two more operations answer `HashNeeded` with the SHA-256 of the bytes
/// written (what production does) or with 32 bytes from the input; the same checks hold, and
/// `HashNeeded` comes once, only in this mode, only when every byte arrived.
///
/// Flag bit 4 makes it a resuming receiver ([`Receiver::with_resume`]) that holds a prefix of
/// the file (corrupted when bit 8 is set, as a damaged partial file would be), and one more
/// operation sends META offering resume (or, sometimes, a RESUME the sender must never send):
/// RESUME goes out only for an offer, `Started` comes once before any write and says where
/// writes continue, and a corrupt prefix never verifies.
pub fn receiver_external_hash(data: &[u8]) -> RunOutcome {
    run_receiver(data, true)
}

fn run_receiver(data: &[u8], external_hash: bool) -> RunOutcome {
    let mut input = Input { data };

    // The offer: a file of 0..=1023 bytes of a pattern chosen by the input, so that the
    // right bytes can be sent by op 2 below.
    let size = usize::from(u16::from_le_bytes([input.byte(), input.byte()]) % 1024);
    let seed = input.byte();
    let content: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let offer = Meta {
        name: "file.bin".into(),
        size: size as u64,
        hash: FileHash::of(&content),
        resume: false,
    };
    let flags = input.byte();
    let max_size = if flags & 1 == 1 {
        (size / 2) as u64
    } else {
        1 << 20
    };
    let config = ReceiverConfig {
        max_size,
        idle_timeout: FUZZ_IDLE,
        overall_timeout: (flags & 2 == 2).then(|| Duration::from_secs(60)),
    };
    let start = Instant::now();
    let mut now = start;
    let mut rx = Receiver::new(offer.clone(), config, now);
    if external_hash {
        rx = rx.with_external_hash();
    }
    let resuming = external_hash && flags & 4 == 4;
    let mut prefix = Vec::new();
    if resuming {
        let len = (usize::from(input.byte()) * 4).min(size);
        prefix = content.get(..len).unwrap_or_default().to_vec();
        if flags & 8 == 8
            && let Some(b) = prefix.last_mut()
        {
            *b ^= 0x80;
        }
        rx = rx.with_resume(prefix.len() as u64);
    }

    let mut checker = ReceiverChecker {
        offer,
        written: prefix,
        resuming,
        started: false,
        resume_sent: false,
        meta_offered_resume: false,
        next_cursor: None,
        external_hash,
        hash_needed: false,
        verified: false,
        committed: false,
        finished: false,
        failed: false,
    };
    let mut cursor = 0usize; // next correct content byte op 2 sends
    let mut decoder = FrameDecoder::new();
    let mut wire = BytesMut::new();
    checker.drain(&mut rx);

    let mut ops = 0;
    while !input.is_empty() && ops < 4096 {
        ops += 1;
        let op_count = if external_hash { 19 } else { 16 };
        match input.byte() % op_count {
            0 => rx.handle_frame(now, Frame::Meta(checker.offer.clone())),
            18 => {
                if input.byte().is_multiple_of(4) {
                    let offset = u64::from(input.byte()) * 4;
                    rx.handle_frame(now, Frame::Resume(offset));
                } else {
                    let mut meta = checker.offer.clone();
                    meta.resume = true;
                    checker.meta_offered_resume |= !checker.started;
                    rx.handle_frame(now, Frame::Meta(meta));
                }
            }
            1 => {
                let mut meta = checker.offer.clone();
                match input.byte() % 3 {
                    0 => meta.name.push('x'),
                    1 => meta.size = meta.size.wrapping_add(1),
                    _ => meta.hash.0[0] ^= 1,
                }
                rx.handle_frame(now, Frame::Meta(meta));
            }
            2 | 3 => {
                let n = usize::from(input.byte()) + 1;
                let end = cursor.saturating_add(n).min(content.len());
                let chunk = content.get(cursor..end).unwrap_or_default();
                cursor = end;
                rx.handle_frame(now, Frame::Data(Bytes::copy_from_slice(chunk)));
            }
            4 => {
                let n = usize::from(input.byte() % 32);
                let bytes = Bytes::copy_from_slice(input.take(n));
                cursor = cursor.saturating_add(bytes.len());
                rx.handle_frame(now, Frame::Data(bytes));
            }
            5 => rx.handle_frame(now, Frame::Done),
            6 => rx.handle_frame(now, Frame::Ack(Bytes::new())),
            7 => rx.handle_frame(now, Frame::Nack("no".into())),
            8 => rx.handle_frame(now, Frame::Error("gone".into())),
            9 => {
                let ok = rx.file_committed().is_ok();
                assert_eq!(
                    ok,
                    checker.verified && !checker.finished,
                    "file_committed accepted iff verified and not finished"
                );
                checker.committed |= ok;
            }
            10 => rx.fail_local("disk full"),
            11 => {
                now = now
                    .checked_add(Duration::from_secs(u64::from(input.byte() % 16)))
                    .unwrap_or(now);
                rx.handle_timeout(now);
            }
            12 => rx.handle_decode_error(FrameError::UnknownType(0x07)),
            13 => rx.handle_closed(),
            14 => {
                let n = usize::from(input.byte() % 64);
                wire.extend_from_slice(input.take(n));
                loop {
                    match decoder.decode(&mut wire) {
                        Ok(Some(frame)) => {
                            rx.handle_frame(now, frame);
                            checker.drain(&mut rx);
                        }
                        Ok(None) => break,
                        Err(err) => {
                            rx.handle_decode_error(err);
                            decoder = FrameDecoder::new();
                            wire.clear();
                            break;
                        }
                    }
                }
            }
            15 => {
                let n = MAX_DATA_LEN + 1 + usize::from(input.byte());
                rx.handle_frame(now, Frame::Data(Bytes::from(vec![0u8; n])));
            }
            op => {
                // External hash only: the hash of what was written, or bytes from the input.
                let hash = if op == 16 {
                    FileHash::of(&checker.written)
                } else {
                    let mut h = [0u8; 32];
                    for b in &mut h {
                        *b = input.byte();
                    }
                    FileHash(h)
                };
                let expected_ok = checker.hash_needed && !checker.verified && !checker.finished;
                assert_eq!(
                    rx.handle_hash(hash).is_ok(),
                    expected_ok,
                    "handle_hash accepted iff the receiver asked for the hash"
                );
            }
        }
        checker.drain(&mut rx);
        if let Some(at) = checker.next_cursor.take() {
            // An honest sender continues where the receiver said.
            cursor = at;
        }
    }
    if checker.committed && checker.finished && rx.is_finished() && !checker.failed {
        RunOutcome::Completed
    } else if checker.failed {
        RunOutcome::Failed
    } else {
        RunOutcome::Open
    }
}

/// How a [`receiver`] run ended (lets tests check that success paths are reached).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The receiver completed: it verified the file and queued ACK.
    Completed,
    /// The receiver failed.
    Failed,
    /// The input ran out before an outcome.
    Open,
}

/// Observes a receiver's outputs and checks them against the offer.
#[derive(Debug)]
struct ReceiverChecker {
    offer: Meta,
    /// What the file holds: the resumed prefix (if any), then the writes.
    written: Vec<u8>,
    /// The receiver holds a prefix and answers resume offers.
    resuming: bool,
    /// `Started` was seen.
    started: bool,
    /// RESUME was sent.
    resume_sent: bool,
    /// A META offering resume was fed before `Started`.
    meta_offered_resume: bool,
    /// Where an honest sender continues after `Started`.
    next_cursor: Option<usize>,
    /// The receiver runs [`Receiver::with_external_hash`].
    external_hash: bool,
    /// `HashNeeded` was seen.
    hash_needed: bool,
    verified: bool,
    committed: bool,
    finished: bool,
    failed: bool,
}

impl ReceiverChecker {
    fn drain(&mut self, rx: &mut Receiver) {
        while let Some(frame) = rx.poll_frame() {
            assert!(encode_parts(&frame).is_ok(), "unencodable frame {frame:?}");
            if frame.frame_type() == FrameType::Ack {
                assert!(self.committed, "ACK before file_committed");
            }
            if let Frame::Resume(offset) = frame {
                assert!(
                    self.resuming && self.meta_offered_resume,
                    "RESUME without an offer"
                );
                assert!(!self.resume_sent, "RESUME twice");
                assert_eq!(offset, self.written.len() as u64, "RESUME offset");
                self.resume_sent = true;
            }
        }
        while let Some(event) = rx.poll_event() {
            assert!(!self.finished, "event after the outcome: {event:?}");
            match event {
                ReceiverEvent::Started { offset } => {
                    assert!(!self.started, "Started twice");
                    self.started = true;
                    if offset == 0 {
                        // The prefix is discarded: the file restarts.
                        self.written.clear();
                    } else {
                        assert!(self.resume_sent, "resumed without RESUME");
                        assert_eq!(offset, self.written.len() as u64, "Started offset");
                    }
                    self.next_cursor = usize::try_from(offset).ok();
                }
                ReceiverEvent::Write { offset, data } => {
                    assert!(self.started, "write before Started");
                    assert!(!self.verified, "write after Verified");
                    assert_eq!(offset, self.written.len() as u64, "writes not contiguous");
                    assert!(!data.is_empty(), "empty write");
                    self.written.extend_from_slice(&data);
                    assert!(
                        self.written.len() as u64 <= self.offer.size,
                        "wrote too much"
                    );
                }
                ReceiverEvent::Progress { bytes, total } => {
                    assert_eq!(bytes, self.written.len() as u64);
                    assert_eq!(total, self.offer.size);
                }
                ReceiverEvent::HashNeeded { size } => {
                    assert!(self.external_hash, "HashNeeded without with_external_hash");
                    assert!(!self.hash_needed, "HashNeeded twice");
                    assert_eq!(size, self.offer.size);
                    assert_eq!(
                        self.written.len() as u64,
                        size,
                        "HashNeeded before every byte"
                    );
                    self.hash_needed = true;
                }
                ReceiverEvent::Verified { size, hash } => {
                    assert_eq!(
                        self.hash_needed, self.external_hash,
                        "Verified without the caller's hash (or asked needlessly)"
                    );
                    assert!(!self.verified, "verified twice");
                    self.check_success(size, hash);
                    self.verified = true;
                }
                ReceiverEvent::Completed { size, hash } => {
                    assert!(self.verified && self.committed, "completed without commit");
                    self.check_success(size, hash);
                    self.finished = true;
                }
                ReceiverEvent::Failed(_) => {
                    self.finished = true;
                    self.failed = true;
                }
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        assert_eq!(rx.is_finished(), self.finished, "is_finished disagrees");
        if self.finished {
            assert_eq!(rx.poll_timeout(), None, "a deadline after the outcome");
        } else if !self.verified && !self.hash_needed {
            assert!(
                rx.poll_timeout().is_some(),
                "no deadline while waiting for the peer"
            );
        }
    }

    fn check_success(&self, size: u64, hash: FileHash) {
        assert_eq!(size, self.offer.size);
        assert_eq!(
            self.written.len() as u64,
            self.offer.size,
            "success with wrong size"
        );
        assert_eq!(
            FileHash::of(&self.written),
            self.offer.hash,
            "success with wrong hash"
        );
        assert_eq!(hash, self.offer.hash);
    }
}
