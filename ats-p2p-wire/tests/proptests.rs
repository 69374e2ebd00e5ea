//! Property tests (fixed seeds, bounded case counts): codec round trips under any split,
//! arbitrary bytes never panic, and a receiver fed any sequence never succeeds wrongly, in both
//! hashing modes (production's `with_external_hash` included). These are the twins of the
//! cargo-fuzz targets in `fuzz/`; failures are persisted in
//! `proptest-regressions/integration.txt` (committed) and replayed first on every run.

// Test helpers outside #[test] functions unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use ats_p2p_wire::fuzzing::{self, RunOutcome};
use ats_p2p_wire::{FileHash, Frame, FrameDecoder, MAX_DATA_LEN, Meta, encode};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::proptest_config as config;

fn any_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (".{0,40}", any::<u64>(), any::<[u8; 32]>()).prop_map(|(name, size, hash)| {
            Frame::Meta(Meta {
                name,
                size,
                hash: FileHash(hash),
                resume: size % 2 == 0,
            })
        }),
        any::<u64>().prop_map(Frame::Resume),
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|v| Frame::Data(Bytes::from(v))),
        // Occasionally a full-size DATA frame.
        (0usize..3).prop_map(|k| Frame::Data(Bytes::from(vec![k as u8; MAX_DATA_LEN - k]))),
        Just(Frame::Done),
        prop::collection::vec(any::<u8>(), 0..100).prop_map(|v| Frame::Ack(Bytes::from(v))),
        ".{0,60}".prop_map(Frame::Nack),
        ".{0,60}".prop_map(Frame::Error),
    ]
}

proptest! {
    #![proptest_config(config(256, 0x5eed_0001))]

    #[test]
    fn encode_split_decode_returns_the_same_frames(
        frames in prop::collection::vec(any_frame(), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            encode(frame, &mut wire).unwrap();
        }
        let wire = wire.freeze();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();

        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        for point in points {
            buf.extend_from_slice(&wire[at..point]);
            at = point;
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        prop_assert_eq!(decoder.decode_eof(&mut buf), Ok(None));
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::frame_decoder(&data);
    }

    #[test]
    fn mutated_valid_streams_never_panic_the_decoder(
        frames in prop::collection::vec(any_frame(), 1..6),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        split in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut wire = BytesMut::new();
        for frame in &frames {
            encode(frame, &mut wire).unwrap();
        }
        for (i, b) in flips {
            let i = i.index(wire.len());
            wire[i] = b;
        }
        let mut data = vec![split.len() as u8];
        data.extend_from_slice(&split);
        data.extend_from_slice(&wire);
        fuzzing::frame_decoder(&data);
    }

    #[test]
    fn receiver_never_succeeds_wrongly_on_arbitrary_input(
        data in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        fuzzing::receiver(&data);
    }

    #[test]
    fn external_hash_receiver_never_succeeds_wrongly_on_arbitrary_input(
        data in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        fuzzing::receiver_external_hash(&data);
    }
}

/// The byte program `fuzzing::receiver` runs for an honest transfer of a `size`-byte file.
fn honest_program(size: u16, seed: u8) -> Vec<u8> {
    let mut p = size.to_le_bytes().to_vec();
    p.extend_from_slice(&[seed, 0]); // seed, flags: no size cap, no overall deadline
    p.push(0); // META
    for _ in 0..(usize::from(size % 1024) / 256 + 1) {
        p.extend_from_slice(&[2, 255]); // 256 correct bytes
    }
    p.push(5); // DONE
    p.push(9); // file_committed
    p
}

/// [`honest_program`] for production's mode: DONE is followed by op 16, the caller's hash of
/// what was written, before the commit.
fn honest_external_program(size: u16, seed: u8) -> Vec<u8> {
    let mut p = honest_program(size, seed);
    let commit = p.pop();
    p.push(16);
    p.extend(commit);
    p
}

#[test]
fn an_honest_program_completes() {
    for size in [0u16, 1, 255, 256, 1000, 1023] {
        assert_eq!(
            fuzzing::receiver(&honest_program(size, 7)),
            RunOutcome::Completed
        );
    }
}

proptest! {
    #![proptest_config(config(512, 0x5eed_0002))]

    /// Start from an honest transfer and corrupt a few operations: whatever happens, success
    /// is only reported for the right bytes (checked inside), and a pure corruption of the
    /// data fails.
    #[test]
    fn receiver_never_succeeds_wrongly_on_mutated_transfers(
        size in 0u16..1024,
        seed in any::<u8>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        inserts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut p = honest_program(size, seed);
        for (i, b) in edits {
            // Leave the offer header alone so the program still targets the same file.
            let len = p.len() - 4;
            let i = 4 + i.index(len);
            p[i] = b;
        }
        for (i, b) in inserts {
            let i = 4 + i.index(p.len() - 3);
            p.insert(i, b);
        }
        fuzzing::receiver(&p);
    }

    /// The same in production's mode, where the caller's hash may also be wrong (op 17).
    #[test]
    fn external_hash_receiver_never_succeeds_wrongly_on_mutated_transfers(
        size in 0u16..1024,
        seed in any::<u8>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        inserts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut p = honest_external_program(size, seed);
        for (i, b) in edits {
            let len = p.len() - 4;
            let i = 4 + i.index(len);
            p[i] = b;
        }
        for (i, b) in inserts {
            let i = 4 + i.index(p.len() - 3);
            p.insert(i, b);
        }
        fuzzing::receiver_external_hash(&p);
    }
}

#[test]
fn an_honest_external_hash_program_completes() {
    for size in [0u16, 1, 255, 256, 1000, 1023] {
        assert_eq!(
            fuzzing::receiver_external_hash(&honest_external_program(size, 7)),
            RunOutcome::Completed
        );
        // Without the caller's hash nothing is verified.
        assert_eq!(
            fuzzing::receiver_external_hash(&honest_program(size, 7)),
            RunOutcome::Open
        );
    }
    // A wrong hash from the caller (op 17 with zeros) fails the transfer.
    let mut p = honest_program(5, 7);
    let commit = p.pop();
    p.push(17);
    p.extend_from_slice(&[0; 32]);
    p.extend(commit);
    assert_eq!(fuzzing::receiver_external_hash(&p), RunOutcome::Failed);
}

#[test]
fn corrupting_one_data_byte_never_succeeds() {
    // Op 4 sends arbitrary bytes in place of the right ones: a file of 8 bytes where the
    // "wrong" bytes happen to be chosen by the test.
    let seed = 3u8;
    let content: Vec<u8> = (0..8u8)
        .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let mut wrong = content.clone();
    wrong[5] ^= 0x40;
    let mut p = vec![8, 0, seed, 0, 0, 4, 8];
    p.extend_from_slice(&wrong);
    p.extend_from_slice(&[5, 9]);
    assert_eq!(fuzzing::receiver(&p), RunOutcome::Failed);
    // The same with the right bytes completes: the test can tell the two apart.
    let mut p = vec![8, 0, seed, 0, 0, 4, 8];
    p.extend_from_slice(&content);
    p.extend_from_slice(&[5, 9]);
    assert_eq!(fuzzing::receiver(&p), RunOutcome::Completed);
}

/// The external-hash program of a resuming receiver that holds `4 * prefix_quads` bytes (cut
/// to the size; flipped last byte when `corrupt`): META offering resume (op 18), the rest of
/// the file, DONE, the caller's hash, commit.
fn honest_resume_program(size: u16, seed: u8, prefix_quads: u8, corrupt: bool) -> Vec<u8> {
    let mut p = size.to_le_bytes().to_vec();
    p.extend_from_slice(&[seed, if corrupt { 4 | 8 } else { 4 }, prefix_quads]);
    p.extend_from_slice(&[18, 1]); // META with "resume":true
    for _ in 0..(usize::from(size % 1024) / 256 + 1) {
        p.extend_from_slice(&[2, 255]);
    }
    p.extend_from_slice(&[5, 16, 9]);
    p
}

#[test]
fn an_honest_resumed_program_completes_and_a_corrupt_prefix_fails() {
    for (size, quads) in [(0u16, 0u8), (100, 10), (1000, 100), (1000, 255), (3, 1)] {
        assert_eq!(
            fuzzing::receiver_external_hash(&honest_resume_program(size, 9, quads, false)),
            RunOutcome::Completed,
            "size {size}, prefix {quads}"
        );
        if size > 0 && quads > 0 {
            assert_eq!(
                fuzzing::receiver_external_hash(&honest_resume_program(size, 9, quads, true)),
                RunOutcome::Failed
            );
        }
    }
}

proptest! {
    #![proptest_config(config(512, 0x5eed_0003))]

    /// A resuming receiver fed a mutated resumed transfer: RESUME only for an offer, writes
    /// continue where `Started` said, success only for the right bytes (checked inside).
    #[test]
    fn resuming_receiver_never_succeeds_wrongly_on_mutated_transfers(
        size in 0u16..1024,
        seed in any::<u8>(),
        quads in any::<u8>(),
        corrupt in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut p = honest_resume_program(size, seed, quads, corrupt);
        for (i, b) in edits {
            let len = p.len() - 5;
            let i = 5 + i.index(len);
            p[i] = b;
        }
        fuzzing::receiver_external_hash(&p);
    }
}
