//! Frame codec throughput and the receiver state machine beside raw SHA-256.
//!
//! `cargo bench -p benches --bench wire -- --warm-up-time 1 --measurement-time 3`

// Benchmark set-up unwraps: a panic here is a broken benchmark, never peer input.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use ats_p2p_wire::{
    FileHash, Frame, FrameDecoder, MAX_DATA_LEN, Meta, Receiver, ReceiverConfig, ReceiverEvent,
    encode, encode_parts,
};
use bytes::{Buf, Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

/// Bytes moved per benchmark iteration: big enough to amortise setup, small enough to keep
/// the run short.
const STREAM_LEN: usize = 16 << 20;

fn payload() -> Bytes {
    Bytes::from(
        (0..STREAM_LEN)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The payload as 64 KiB DATA frames sharing one allocation.
fn data_frames(data: &Bytes) -> Vec<Frame> {
    (0..data.len())
        .step_by(MAX_DATA_LEN)
        .map(|start| Frame::Data(data.slice(start..(start + MAX_DATA_LEN).min(data.len()))))
        .collect()
}

fn codec(c: &mut Criterion) {
    let data = payload();
    let frames = data_frames(&data);
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes(STREAM_LEN as u64));

    // Encode each frame into a stream buffer (one copy, as into a socket buffer) and decode it
    // back out of that buffer (zero-copy split).
    group.bench_function("encode_decode_64k_stream", |b| {
        let mut buf = BytesMut::with_capacity(2 * (MAX_DATA_LEN + 5));
        let mut decoder = FrameDecoder::new();
        b.iter(|| {
            let mut total = 0usize;
            for frame in &frames {
                encode(frame, &mut buf).unwrap();
                match decoder.decode(&mut buf).unwrap() {
                    Some(Frame::Data(d)) => total += d.len(),
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(total, STREAM_LEN);
        });
    });

    // The copy-free encoder alone: header plus the shared payload.
    group.bench_function("encode_parts_64k", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for frame in &frames {
                total += black_box(encode_parts(frame).unwrap()).remaining();
            }
            total
        });
    });

    // Decoding alone, from a buffer holding the whole encoded stream.
    let mut wire = BytesMut::new();
    for frame in &frames {
        encode(frame, &mut wire).unwrap();
    }
    group.bench_function("decode_64k", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut src| {
                let mut decoder = FrameDecoder::new();
                let mut n = 0;
                while let Some(frame) = decoder.decode(&mut src).unwrap() {
                    black_box(&frame);
                    n += 1;
                }
                n
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn receiver(c: &mut Criterion) {
    let data = payload();
    let frames = data_frames(&data);
    let meta = Meta {
        name: "bench.bin".into(),
        size: STREAM_LEN as u64,
        hash: FileHash::of(&data),
        resume: false,
    };
    let mut group = c.benchmark_group("receiver");
    group.throughput(Throughput::Bytes(STREAM_LEN as u64));

    group.bench_function("raw_sha256", |b| {
        b.iter(|| {
            let mut hasher = Sha256::new();
            for frame in &frames {
                if let Frame::Data(d) = frame {
                    hasher.update(d);
                }
            }
            black_box(hasher.finalize())
        });
    });

    // The whole receiving state machine: META, DATA × 256 (hashing, counting, Write and
    // Progress events), DONE, commit, ACK.
    group.bench_function("state_machine_with_sha256", |b| {
        let now = Instant::now();
        b.iter(|| {
            let mut rx = Receiver::new(meta.clone(), ReceiverConfig::new(u64::MAX), now);
            rx.handle_frame(now, Frame::Meta(meta.clone()));
            let mut written = 0usize;
            for frame in &frames {
                rx.handle_frame(now, frame.clone());
                while let Some(event) = rx.poll_event() {
                    if let ReceiverEvent::Write { data, .. } = event {
                        written += data.len();
                    }
                }
            }
            rx.handle_frame(now, Frame::Done);
            while let Some(event) = rx.poll_event() {
                if let ReceiverEvent::Verified { .. } = event {
                    rx.file_committed().unwrap();
                }
            }
            assert!(matches!(rx.poll_frame(), Some(Frame::Ack(_))));
            assert_eq!(written, STREAM_LEN);
        });
    });
    group.finish();
}

criterion_group!(benches, codec, receiver);
criterion_main!(benches);
