//! ChaCha20-Poly1305 (RFC 8439) seal and open of one 64 KiB message with each implementation
//! the secret stream could use: RustCrypto (`chacha20poly1305`, the portable path), `ring` 0.17
//! and `aws-lc-rs`. The secret stream picks the fastest (see
//! `ats_p2p_swarm::secret_stream::cipher`); `secretstream/*` measures the whole push+pull, ours
//! and the `crypto_secretstream` crate's (what the secret stream used before).
#![allow(clippy::unwrap_used, missing_docs)]

use ats_p2p_swarm::secret_stream::cipher::{Decryptor, Encryptor};
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LEN: usize = 64 * 1024;
const KEY: [u8; 32] = [7; 32];

fn aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("chacha20poly1305_64k");
    g.throughput(Throughput::Bytes(LEN as u64));

    {
        use chacha20poly1305::aead::{AeadInPlace, KeyInit};
        let cipher = chacha20poly1305::ChaCha20Poly1305::new(&KEY.into());
        let nonce = [1u8; 12].into();
        let mut buf = vec![0x5au8; LEN];
        g.bench_function("rustcrypto_seal", |b| {
            b.iter(|| {
                cipher
                    .encrypt_in_place_detached(&nonce, &[], &mut buf)
                    .unwrap()
            });
        });
        let mut sealed = vec![0x5au8; LEN];
        let tag = cipher
            .encrypt_in_place_detached(&nonce, &[], &mut sealed)
            .unwrap();
        g.bench_function("rustcrypto_open", |b| {
            b.iter(|| {
                // A copy each time, as for the others: a failed check would skip decryption.
                let mut work = sealed.clone();
                cipher
                    .decrypt_in_place_detached(&nonce, &[], &mut work, &tag)
                    .unwrap();
                work.len()
            });
        });
    }
    {
        use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).unwrap());
        let mut buf = vec![0x5au8; LEN];
        g.bench_function("ring_seal", |b| {
            b.iter(|| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut buf,
                )
                .unwrap()
            });
        });
        let mut sealed = vec![0x5au8; LEN];
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        g.bench_function("ring_open", |b| {
            b.iter(|| {
                let mut work = sealed.clone();
                key.open_in_place(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut work,
                )
                .unwrap()
                .len()
            });
        });
    }
    {
        use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &KEY).unwrap());
        let mut buf = vec![0x5au8; LEN];
        g.bench_function("aws_lc_seal", |b| {
            b.iter(|| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut buf,
                )
                .unwrap()
            });
        });
        let mut sealed = vec![0x5au8; LEN];
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::empty(),
                &mut sealed,
            )
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        g.bench_function("aws_lc_open", |b| {
            b.iter(|| {
                let mut work = sealed.clone();
                key.open_in_place(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::empty(),
                    &mut work,
                )
                .unwrap()
                .len()
            });
        });
    }
    // The clone the two `open` benches make, to subtract.
    let sealed = vec![0x5au8; LEN + 16];
    g.bench_function("clone_64k", |b| {
        b.iter(|| criterion::black_box(sealed.clone()).len())
    });
    g.finish();

    let mut g = c.benchmark_group("secretstream");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("push_pull_65536", |b| {
        let (mut enc, header) = Encryptor::new(&KEY, rand::rngs::OsRng);
        let mut dec = Decryptor::new(&KEY, &header);
        let plain = vec![0x5au8; LEN];
        let mut out = BytesMut::with_capacity(LEN + 256);
        b.iter(|| {
            out.clear();
            enc.encrypt_frame(&plain, &mut out).unwrap();
            let mut body = out.split_off(3);
            dec.decrypt(&mut body).unwrap();
            assert_eq!(body.len(), LEN);
            out.unsplit(body);
        });
    });
    g.bench_function("push_pull_65536_crypto_secretstream_crate", |b| {
        use crypto_secretstream::{Header, Key, PullStream, PushStream, Tag};
        let (header, mut push) = PushStream::init(rand::rngs::OsRng, &Key::from(KEY));
        let mut pull = PullStream::init(Header::from(*header.as_ref()), &Key::from(KEY));
        let plain = vec![0x5au8; LEN];
        let mut buf = Vec::with_capacity(LEN + 64);
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(&plain);
            push.push(&mut buf, &[], Tag::Message).unwrap();
            pull.pull(&mut buf, &[]).unwrap();
            assert_eq!(buf.len(), LEN);
        });
    });
    g.finish();
}

criterion_group!(benches, aead);
criterion_main!(benches);
