//! The frame codec: an incremental decoder and a copy-free encoder.

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::FrameError;
use crate::frame::{Frame, FrameType, HEADER_LEN, Meta, ResumePayload};

/// Where the decoder is inside the current frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecodeState {
    /// Waiting for a 5-byte header.
    Head,
    /// The header was consumed; waiting for `len` payload bytes.
    Body { ty: FrameType, len: usize },
}

/// Incremental frame decoder with the `tokio_util::codec::Decoder` contract.
///
/// Feed it the bytes that have arrived, in any split, and call [`decode`](Self::decode) until
/// it returns `Ok(None)`:
///
/// - `Ok(Some(frame))` consumed exactly one frame from the front of `src`;
/// - `Ok(None)` needs more bytes (a header already read is kept in the decoder);
/// - `Err(_)` means the stream is corrupt and must be closed (calling again returns the same
///   error for header errors; nothing more is consumed).
///
/// An unknown type byte is rejected as soon as it is seen, and an over-limit length as soon as
/// the 5-byte header is complete, before any payload is buffered or memory reserved. DATA
/// payloads are split off `src` without copying.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    state: DecodeState,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder waiting for the first header.
    pub const fn new() -> Self {
        Self {
            state: DecodeState::Head,
        }
    }

    /// Takes one frame off the front of `src`, if a whole one is there.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let (ty, len) = match self.state {
            DecodeState::Body { ty, len } => (ty, len),
            DecodeState::Head => {
                let Some(header) = parse_header(src)? else {
                    return Ok(None);
                };
                src.advance(HEADER_LEN);
                self.state = DecodeState::Body {
                    ty: header.0,
                    len: header.1,
                };
                header
            }
        };
        if src.len() < len {
            // `len` is at most MAX_DATA_LEN, checked in parse_header.
            src.reserve(len.saturating_sub(src.len()));
            return Ok(None);
        }
        self.state = DecodeState::Head;
        let payload = src.split_to(len);
        frame_from_payload(ty, payload).map(Some)
    }

    /// Like [`decode`](Self::decode), for when the stream has ended: leftover bytes that do
    /// not form a whole frame are [`FrameError::Truncated`].
    pub fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() && self.state == DecodeState::Head => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }

    /// `true` when no partial frame is held (a clean place for the stream to end).
    pub fn is_idle(&self) -> bool {
        self.state == DecodeState::Head
    }
}

/// Reads and checks a header at the front of `src` without consuming it.
fn parse_header(src: &[u8]) -> Result<Option<(FrameType, usize)>, FrameError> {
    let Some(&type_byte) = src.first() else {
        return Ok(None);
    };
    let ty = FrameType::try_from(type_byte)?;
    let Some(len_bytes) = src.get(1..HEADER_LEN) else {
        return Ok(None);
    };
    let mut raw = [0u8; 4];
    raw.copy_from_slice(len_bytes);
    let len = u32::from_be_bytes(raw);
    let max = ty.max_len();
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(Some((ty, len))),
        _ => Err(FrameError::TooLong {
            ty,
            len: u64::from(len),
            max,
        }),
    }
}

/// Builds the typed frame from a complete payload.
fn frame_from_payload(ty: FrameType, payload: BytesMut) -> Result<Frame, FrameError> {
    Ok(match ty {
        FrameType::Meta => Frame::Meta(
            serde_json::from_slice::<Meta>(&payload)
                .map_err(|e| FrameError::BadMeta(e.to_string()))?,
        ),
        FrameType::Data => Frame::Data(payload.freeze()),
        FrameType::Done => Frame::Done,
        FrameType::Ack => Frame::Ack(payload.freeze()),
        FrameType::Nack => Frame::Nack(String::from_utf8_lossy(&payload).into_owned()),
        FrameType::Error => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
        FrameType::Resume => Frame::Resume(
            serde_json::from_slice::<ResumePayload>(&payload)
                .map_err(|e| FrameError::BadResume(e.to_string()))?
                .offset,
        ),
    })
}

/// An encoded frame as two pieces, header and payload, so DATA is never copied.
///
/// It implements [`Buf`] (with vectored [`chunks_vectored`](Buf::chunks_vectored)), so it can
/// go straight to `write_all_buf` or be chained; or write [`header`](Self::header) and
/// [`payload`](Self::payload) yourself.
#[derive(Clone, Debug)]
pub struct EncodedFrame {
    header: [u8; HEADER_LEN],
    /// How much of `header` has been consumed through `Buf::advance`.
    header_pos: usize,
    payload: Bytes,
}

impl EncodedFrame {
    /// The 5-byte header.
    pub const fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// The payload (for DATA, the same allocation the frame held).
    pub const fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Header and payload, consuming the value.
    pub fn into_parts(self) -> ([u8; HEADER_LEN], Bytes) {
        (self.header, self.payload)
    }
}

impl Buf for EncodedFrame {
    fn remaining(&self) -> usize {
        HEADER_LEN
            .saturating_sub(self.header_pos)
            .saturating_add(self.payload.len())
    }

    fn chunk(&self) -> &[u8] {
        match self.header.get(self.header_pos..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => &self.payload,
        }
    }

    fn advance(&mut self, mut cnt: usize) {
        let in_header = HEADER_LEN.saturating_sub(self.header_pos).min(cnt);
        self.header_pos = self.header_pos.saturating_add(in_header);
        cnt = cnt.saturating_sub(in_header);
        // Buf::advance panics past the end by contract; Bytes enforces that.
        self.payload.advance(cnt);
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut slots = dst.iter_mut();
        if let Some(rest) = self.header.get(self.header_pos..)
            && !rest.is_empty()
        {
            let Some(slot) = slots.next() else { return 0 };
            *slot = IoSlice::new(rest);
            n += 1;
        }
        if !self.payload.is_empty()
            && let Some(slot) = slots.next()
        {
            *slot = IoSlice::new(&self.payload);
            n += 1;
        }
        n
    }
}

/// Encodes `frame` as header plus payload without copying DATA (META is serialized, text
/// payloads are copied: both are small).
///
/// Fails with [`FrameError::TooLong`] when the payload exceeds its type's limit, which is a
/// caller error for frames built locally (the state machines never produce one).
pub fn encode_parts(frame: &Frame) -> Result<EncodedFrame, FrameError> {
    let ty = frame.frame_type();
    let payload = match frame {
        Frame::Meta(meta) => {
            Bytes::from(serde_json::to_vec(meta).map_err(|e| FrameError::BadMeta(e.to_string()))?)
        }
        Frame::Data(data) | Frame::Ack(data) => data.clone(),
        Frame::Done => Bytes::new(),
        Frame::Nack(text) | Frame::Error(text) => Bytes::copy_from_slice(text.as_bytes()),
        Frame::Resume(offset) => Bytes::from(
            serde_json::to_vec(&ResumePayload { offset: *offset })
                .map_err(|e| FrameError::BadResume(e.to_string()))?,
        ),
    };
    let max = ty.max_len();
    let len = match u32::try_from(payload.len()) {
        Ok(len) if payload.len() <= max => len,
        _ => {
            return Err(FrameError::TooLong {
                ty,
                len: u64::try_from(payload.len()).unwrap_or(u64::MAX),
                max,
            });
        }
    };
    let mut header = [0u8; HEADER_LEN];
    header[0] = ty.to_u8();
    header[1..].copy_from_slice(&len.to_be_bytes());
    Ok(EncodedFrame {
        header,
        header_pos: 0,
        payload,
    })
}

/// Encodes `frame` by appending header and payload to `dst` (this copies the payload).
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    let parts = encode_parts(frame)?;
    dst.reserve(parts.remaining());
    dst.put_slice(&parts.header);
    dst.put_slice(&parts.payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_DATA_LEN, MAX_META_LEN};

    #[test]
    fn rejects_unknown_type_from_first_byte() {
        let mut d = FrameDecoder::new();
        let mut src = BytesMut::from(&[0x08][..]);
        assert_eq!(d.decode(&mut src), Err(FrameError::UnknownType(8)));
        assert_eq!(src.len(), 1, "nothing consumed on error");
        assert_eq!(d.decode(&mut src), Err(FrameError::UnknownType(8)));
    }

    #[test]
    fn rejects_long_length_before_reserving() {
        let mut d = FrameDecoder::new();
        let mut src = BytesMut::new();
        src.put_u8(0x02);
        src.put_u32(MAX_DATA_LEN as u32 + 1);
        let cap = src.capacity();
        assert_eq!(
            d.decode(&mut src),
            Err(FrameError::TooLong {
                ty: FrameType::Data,
                len: MAX_DATA_LEN as u64 + 1,
                max: MAX_DATA_LEN
            })
        );
        assert_eq!(src.capacity(), cap);
        let mut src = BytesMut::from(&[0x01, 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(
            d.decode(&mut src),
            Err(FrameError::TooLong {
                max: MAX_META_LEN,
                ..
            })
        ));
        let mut src = BytesMut::from(&[0x03, 0, 0, 0, 1][..]);
        assert!(matches!(
            d.decode(&mut src),
            Err(FrameError::TooLong { max: 0, .. })
        ));
    }

    #[test]
    fn empty_buffer_and_partial_frames() {
        let mut d = FrameDecoder::new();
        let mut src = BytesMut::new();
        assert_eq!(d.decode(&mut src), Ok(None));
        assert_eq!(d.decode_eof(&mut src), Ok(None));
        src.put_slice(&[0x02, 0, 0, 0, 3, b'a']);
        assert_eq!(d.decode(&mut src), Ok(None));
        assert!(!d.is_idle());
        assert!(src.capacity() >= 2);
        assert_eq!(
            d.decode_eof(&mut src),
            Err(FrameError::Truncated { buffered: 1 })
        );
        src.put_slice(b"bc");
        assert_eq!(
            d.decode(&mut src),
            Ok(Some(Frame::Data(Bytes::from_static(b"abc"))))
        );
        assert!(d.is_idle());
    }

    #[test]
    fn data_is_not_copied() {
        let data = Bytes::from(vec![7u8; 1000]);
        let parts = encode_parts(&Frame::Data(data.clone())).unwrap();
        assert_eq!(parts.payload().as_ptr(), data.as_ptr());

        let mut src = BytesMut::new();
        encode(&Frame::Data(data), &mut src).unwrap();
        let base = src.as_ptr() as usize;
        let Some(Frame::Data(out)) = FrameDecoder::new().decode(&mut src).unwrap() else {
            panic!("expected DATA")
        };
        assert_eq!(out.as_ptr() as usize, base + HEADER_LEN);
    }

    #[test]
    fn encoded_frame_as_buf() {
        let mut parts = encode_parts(&Frame::Data(Bytes::from_static(b"hello"))).unwrap();
        assert_eq!(parts.remaining(), 10);
        {
            let mut slices = [IoSlice::new(&[]); 4];
            assert_eq!(parts.chunks_vectored(&mut slices), 2);
            assert_eq!(&*slices[0], &[2, 0, 0, 0, 5][..]);
            assert_eq!(&*slices[1], b"hello");
        }
        parts.advance(3);
        assert_eq!(parts.chunk(), &[0, 5][..]);
        parts.advance(3);
        assert_eq!(parts.chunk(), b"ello");
        {
            let mut slices = [IoSlice::new(&[]); 4];
            assert_eq!(parts.chunks_vectored(&mut slices), 1);
        }
        let rest = parts.copy_to_bytes(4);
        assert_eq!(&rest[..], b"ello");
        assert_eq!(parts.remaining(), 0);
    }

    #[test]
    fn encode_refuses_oversize_payloads() {
        let frame = Frame::Data(Bytes::from(vec![0u8; MAX_DATA_LEN + 1]));
        assert!(matches!(
            encode_parts(&frame),
            Err(FrameError::TooLong {
                ty: FrameType::Data,
                ..
            })
        ));
        assert!(encode(&Frame::Error("x".repeat(5000)), &mut BytesMut::new()).is_err());
        assert!(
            encode(
                &Frame::Data(Bytes::from(vec![0u8; MAX_DATA_LEN])),
                &mut BytesMut::new()
            )
            .is_ok()
        );
    }
}
