//! Secret-stream throughput: raw secretstream push+pull, and Rust ↔ Rust streams over an
//! in-memory duplex and TCP on 127.0.0.1 (one direction, 32 MiB per iteration).
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use ats_p2p_swarm::KeyPair;
use ats_p2p_swarm::PublicKey;
use ats_p2p_swarm::secret_stream::cipher::{Decryptor, Encryptor};
use ats_p2p_swarm::secret_stream::{RawStream, SecretStream};
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STREAM_BYTES: usize = 32 << 20;

fn crypto(c: &mut Criterion) {
    let mut g = c.benchmark_group("secretstream");
    for size in [1024usize, 64 * 1024] {
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("push_pull_{size}"), |b| {
            let key = [7u8; 32];
            let (mut enc, header) = Encryptor::new(&key, rand::rngs::OsRng);
            let mut dec = Decryptor::new(&key, &header);
            let plain = vec![0x5au8; size];
            let mut out = BytesMut::with_capacity(size + 64);
            b.iter(|| {
                out.clear();
                enc.encrypt_frame(&plain, &mut out).unwrap();
                let mut body = out.split_off(3);
                dec.decrypt(&mut body).unwrap();
                assert_eq!(body.len(), size);
                out.unsplit(body);
            });
        });
    }
    // Reference: the IETF ChaCha20-Poly1305 AEAD (same primitives) on 64 KiB, seal + open.
    g.throughput(Throughput::Bytes(65536));
    g.bench_function("reference_chacha20poly1305_65536", |b| {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
        let nonce = [0u8; 12].into();
        let mut buf = vec![0x5au8; 65536];
        b.iter(|| {
            let tag = cipher
                .encrypt_in_place_detached(&nonce, &[], &mut buf)
                .unwrap();
            cipher
                .decrypt_in_place_detached(&nonce, &[], &mut buf, &tag)
                .unwrap();
        });
    });
    g.finish();
}

async fn transfer<S: RawStream + Send + 'static>(a: SecretStream<S>, mut b: SecretStream<S>) {
    let writer = tokio::spawn(async move {
        let mut a = a;
        let block = vec![0x33u8; 256 * 1024];
        let mut sent = 0;
        while sent < STREAM_BYTES {
            a.write_all(&block).await.unwrap();
            sent += block.len();
        }
        a.shutdown().await.unwrap();
        a
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    loop {
        let n = b.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, STREAM_BYTES);
    drop(writer.await.unwrap());
}

async fn duplex_pair() -> (
    SecretStream<tokio::io::DuplexStream>,
    SecretStream<tokio::io::DuplexStream>,
) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (a, b) = tokio::join!(
        SecretStream::connect(x, KeyPair::generate(), None),
        SecretStream::accept(y, KeyPair::generate(), |_: &PublicKey| true)
    );
    (a.unwrap(), b.unwrap())
}

async fn tcp_pair() -> (SecretStream<TcpStream>, SecretStream<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        SecretStream::accept(s, KeyPair::generate(), |_: &PublicKey| true)
            .await
            .unwrap()
    });
    let c = TcpStream::connect(addr).await.unwrap();
    let a = SecretStream::connect(c, KeyPair::generate(), None)
        .await
        .unwrap();
    (a, server.await.unwrap())
}

fn streams(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("secret_stream");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(STREAM_BYTES as u64));
    g.bench_function("duplex_32MiB", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (x, y) = duplex_pair().await;
                    let t = Instant::now();
                    transfer(x, y).await;
                    total += t.elapsed();
                }
                total
            })
        })
    });
    g.bench_function("tcp_32MiB", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (x, y) = tcp_pair().await;
                    let t = Instant::now();
                    transfer(x, y).await;
                    total += t.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, crypto, streams);
criterion_main!(benches);
