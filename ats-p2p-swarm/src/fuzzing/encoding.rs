//! The compact-encoding reader and writer ([`crate::encoding`]) under arbitrary programs.

use super::Cursor;
use crate::encoding::{Reader, Writer};

/// Runs a program of [`Reader`] calls (chosen by the input) over the rest of the input and checks
/// each result: a successful read consumed exactly the bytes its value occupies, arrays respect
/// their caps and the bytes left, and every value read re-encodes with [`Writer`] to bytes that
/// read back to the same value.
pub fn compact_encoding(data: &[u8]) {
    let mut input = Cursor { data };
    let program_len = usize::from(input.byte() % 32);
    let program = input.take(program_len * 2).to_vec();
    let bytes = input.rest();
    let mut r = Reader::new(bytes);
    for op in program.chunks(2) {
        let (code, arg) = (op[0], op.get(1).copied().unwrap_or(0));
        let before = r.remaining();
        let rest = &bytes[bytes.len() - before..];
        let mut w = Writer::new();
        let consumed = |r: &Reader<'_>| before - r.remaining();
        match code % 13 {
            0 => {
                if let Ok(v) = r.u8() {
                    assert_eq!(consumed(&r), 1);
                    assert_eq!(
                        Reader::new(
                            {
                                w.u8(v);
                                w.into_vec()
                            }
                            .as_slice()
                        )
                        .u8(),
                        Ok(v)
                    );
                }
            }
            1 => {
                if let Ok(v) = r.u16() {
                    assert_eq!(consumed(&r), 2);
                    assert_eq!(
                        Reader::new(
                            {
                                w.u16(v);
                                w.into_vec()
                            }
                            .as_slice()
                        )
                        .u16(),
                        Ok(v)
                    );
                }
            }
            2 => {
                if let Ok(v) = r.u32() {
                    assert_eq!(consumed(&r), 4);
                    assert_eq!(
                        Reader::new(
                            {
                                w.u32(v);
                                w.into_vec()
                            }
                            .as_slice()
                        )
                        .u32(),
                        Ok(v)
                    );
                }
            }
            3 => {
                if let Ok(v) = r.u64() {
                    assert_eq!(consumed(&r), 8);
                    assert_eq!(
                        u64::from_le_bytes(rest[..8].try_into().unwrap_or_default()),
                        v
                    );
                }
            }
            4 | 5 => {
                let got = if code % 13 == 4 {
                    r.uint()
                } else {
                    r.uint32().map(u64::from)
                };
                if let Ok(v) = got {
                    let want = match rest[0] {
                        0xfd => 3,
                        0xfe => 5,
                        0xff => 9,
                        _ => 1,
                    };
                    assert_eq!(consumed(&r), want, "varint length");
                    let enc = {
                        w.uint(v);
                        w.into_vec()
                    };
                    // The writer picks the shortest form; the reader accepts every form.
                    assert!(enc.len() <= want, "writer's varint is not the shortest");
                    assert_eq!(Reader::new(&enc).uint(), Ok(v));
                }
            }
            6 => {
                if let Ok(v) = r.fixed32() {
                    assert_eq!(consumed(&r), 32);
                    assert_eq!(&v[..], &rest[..32]);
                }
            }
            7 | 8 => {
                let got = if code % 13 == 7 {
                    r.buffer()
                } else {
                    r.string().map(str::as_bytes)
                };
                if let Ok(v) = got {
                    let enc = {
                        w.buffer(v);
                        w.into_vec()
                    };
                    assert!(consumed(&r) >= enc.len(), "buffer consumed too little");
                    assert_eq!(Reader::new(&enc).buffer(), Ok(v));
                }
            }
            9 => {
                let cap = usize::from(arg);
                let min = usize::from(arg % 20);
                if let Ok(n) = r.array_len(cap, min) {
                    assert!(n <= cap);
                    assert!(
                        n.saturating_mul(min) <= r.remaining(),
                        "array_len trusts the peer"
                    );
                }
            }
            10 => {
                let cap = usize::from(arg % 80);
                if let Ok(v) = r.ipv4_array(cap) {
                    assert!(v.len() <= cap);
                    let enc = {
                        w.ipv4_array(&v);
                        w.into_vec()
                    };
                    assert_eq!(Reader::new(&enc).ipv4_array(cap), Ok(v));
                }
            }
            11 => {
                let cap = usize::from(arg % 80);
                if let Ok(v) = r.ipv6_array(cap) {
                    assert!(v.len() <= cap);
                    let enc = {
                        w.ipv6_array(&v);
                        w.into_vec()
                    };
                    assert_eq!(Reader::new(&enc).ipv6_array(cap), Ok(v));
                }
            }
            _ => {
                let n = usize::from(arg);
                if let Ok(v) = r.take(n) {
                    assert_eq!(v.len(), n);
                    assert_eq!(consumed(&r), n);
                } else {
                    assert!(n > before, "take failed with enough bytes");
                }
            }
        }
        assert!(r.remaining() <= before, "a read moved backwards");
    }
}
