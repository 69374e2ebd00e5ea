//! Golden byte vectors: the exact bytes of every frame type, both directions.

// Test helpers outside #[test] functions unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use ats_p2p_wire::{
    FileHash, Frame, FrameDecoder, FrameError, FrameType, Meta, encode, encode_parts,
};
use bytes::{Buf, Bytes, BytesMut};

const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

fn cat(header: &[u8], payload: &[u8]) -> Vec<u8> {
    [header, payload].concat()
}

fn vectors() -> Vec<(Frame, Vec<u8>)> {
    let meta_json = format!(r#"{{"name":"a.txt","size":5,"hash":"{HELLO_SHA256}"}}"#);
    assert_eq!(meta_json.len(), 0x63);
    vec![
        (
            Frame::Meta(Meta {
                name: "a.txt".into(),
                size: 5,
                hash: HELLO_SHA256.parse().unwrap(),
                resume: false,
            }),
            cat(&[0x01, 0x00, 0x00, 0x00, 0x63], meta_json.as_bytes()),
        ),
        (
            Frame::Data(Bytes::from_static(b"hello")),
            cat(&[0x02, 0x00, 0x00, 0x00, 0x05], b"hello"),
        ),
        (Frame::Data(Bytes::new()), vec![0x02, 0, 0, 0, 0]),
        (Frame::Done, vec![0x03, 0, 0, 0, 0]),
        (Frame::Ack(Bytes::new()), vec![0x04, 0, 0, 0, 0]),
        (
            Frame::Ack(Bytes::from_static(br#"{"ok":true}"#)),
            cat(&[0x04, 0, 0, 0, 0x0b], br#"{"ok":true}"#),
        ),
        (
            Frame::Nack("hash mismatch".into()),
            cat(&[0x05, 0, 0, 0, 0x0d], b"hash mismatch"),
        ),
        (
            Frame::Error("disk full".into()),
            cat(&[0x06, 0, 0, 0, 0x09], b"disk full"),
        ),
    ]
}

#[test]
fn every_frame_type_encodes_to_golden_bytes() {
    for (frame, bytes) in vectors() {
        let mut out = BytesMut::new();
        encode(&frame, &mut out).unwrap();
        assert_eq!(&out[..], &bytes[..], "{frame:?}");
        let mut parts = encode_parts(&frame).unwrap();
        assert_eq!(parts.copy_to_bytes(parts.remaining()), bytes, "{frame:?}");
    }
}

#[test]
fn golden_bytes_decode_to_every_frame_type() {
    let mut stream = BytesMut::new();
    let mut frames = Vec::new();
    for (frame, bytes) in vectors() {
        stream.extend_from_slice(&bytes);
        frames.push(frame);
    }
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    while let Some(frame) = decoder.decode(&mut stream).unwrap() {
        got.push(frame);
    }
    assert_eq!(got, frames);
    assert!(stream.is_empty());
    assert_eq!(decoder.decode_eof(&mut stream), Ok(None));
}

fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
    FrameDecoder::new().decode(&mut BytesMut::from(bytes))
}

fn meta_frame(json: &str) -> Vec<u8> {
    let mut v = vec![0x01];
    v.extend_from_slice(&(json.len() as u32).to_be_bytes());
    v.extend_from_slice(json.as_bytes());
    v
}

#[test]
fn meta_from_another_peer_is_read_leniently_but_typed() {
    // Different field order, whitespace, unknown fields, upper-case hash: still the same META.
    let json = format!(
        r#"{{ "hash": "{}", "extra": {{"resume": 0}}, "size": 5, "name": "a.txt" }}"#,
        HELLO_SHA256.to_uppercase()
    );
    let Some(Frame::Meta(meta)) = decode_one(&meta_frame(&json)).unwrap() else {
        panic!("expected META")
    };
    assert_eq!(meta.name, "a.txt");
    assert_eq!(meta.size, 5);
    assert_eq!(meta.hash, FileHash::of(b"hello"));
}

#[test]
fn bad_meta_payloads_are_errors() {
    for json in [
        "",
        "null",
        "[]",
        r#"{"name":"a","size":5}"#,
        r#"{"name":"a","size":-1,"hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}"#,
        r#"{"name":"a","size":1.5,"hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}"#,
        r#"{"name":"a","size":18446744073709551616,"hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}"#,
        r#"{"name":"a","size":5,"hash":"2cf24dba"}"#,
        r#"{"name":"a","size":5,"hash":"zzf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}"#,
        r#"{"name":5,"size":5,"hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}"#,
    ] {
        assert!(
            matches!(decode_one(&meta_frame(json)), Err(FrameError::BadMeta(_))),
            "{json}"
        );
    }
}

#[test]
fn header_limits() {
    assert_eq!(decode_one(&[0x00]), Err(FrameError::UnknownType(0)));
    assert_eq!(decode_one(&[0x08, 0, 0]), Err(FrameError::UnknownType(8)));
    // RESUME (0x07, the resume extension) is known: its payload is limited to 256 bytes.
    assert_eq!(decode_one(&[0x07, 0, 0]), Ok(None));
    assert_eq!(
        decode_one(&[0x07, 0, 0, 1, 1]),
        Err(FrameError::TooLong {
            ty: FrameType::Resume,
            len: 257,
            max: 256
        })
    );
    assert_eq!(
        decode_one(b"\x07\x00\x00\x00\x0d{\"offset\":42}"),
        Ok(Some(Frame::Resume(42)))
    );
    assert!(matches!(
        decode_one(b"\x07\x00\x00\x00\x0e{\"offset\":-42}"),
        Err(FrameError::BadResume(_))
    ));
    assert_eq!(decode_one(&[0xff]), Err(FrameError::UnknownType(0xff)));
    // 64 KiB DATA is fine (needs its payload), one byte more is refused from the header.
    assert_eq!(decode_one(&[0x02, 0, 1, 0, 0]), Ok(None));
    assert_eq!(
        decode_one(&[0x02, 0, 1, 0, 1]),
        Err(FrameError::TooLong {
            ty: FrameType::Data,
            len: 65537,
            max: 65536
        })
    );
    assert!(decode_one(&[0x01, 0, 0, 0x10, 0x01]).is_err());
    assert!(decode_one(&[0x04, 0, 0, 0x10, 0x01]).is_err());
    assert!(decode_one(&[0x05, 0, 0, 0x10, 0x01]).is_err());
    assert!(decode_one(&[0x06, 0xff, 0xff, 0xff, 0xff]).is_err());
    assert!(decode_one(&[0x03, 0, 0, 0, 1]).is_err());
}

#[test]
fn invalid_utf8_reasons_do_not_fail() {
    assert_eq!(
        decode_one(&[0x05, 0, 0, 0, 2, 0xff, b'x']),
        Ok(Some(Frame::Nack("\u{fffd}x".into())))
    );
}
