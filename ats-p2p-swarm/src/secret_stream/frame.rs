//! uint24-LE length-prefixed framing (every unit on a secret stream's raw stream).

use bytes::{BufMut, BytesMut};

use super::SecretStreamError;

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 3;
/// The largest body a uint24 length can describe (`MAX_ATOMIC_WRITE` in secret-stream).
pub const MAX_FRAME_LEN: usize = (1 << 24) - 1;

/// Appends `uint24 LE len` to `out`; `len` must be at most [`MAX_FRAME_LEN`].
pub(crate) fn put_len(out: &mut BytesMut, len: usize) -> Result<(), SecretStreamError> {
    if len > MAX_FRAME_LEN {
        return Err(SecretStreamError::FrameTooLong {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let b = u32::try_from(len)
        .map_err(|_| SecretStreamError::Internal("frame length"))?
        .to_le_bytes();
    out.put_slice(&b[..LEN_PREFIX]);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecodeState {
    Head,
    Body(usize),
}

/// Splits a byte stream into frames, across arbitrary chunk boundaries (the tokio-util
/// `Decoder` contract: `Ok(None)` = need more bytes; the length is checked before reserving).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_len: usize,
    state: DecodeState,
}

impl FrameDecoder {
    /// A decoder refusing bodies longer than `max_len` (capped at [`MAX_FRAME_LEN`]).
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len: max_len.min(MAX_FRAME_LEN),
            state: DecodeState::Head,
        }
    }

    /// Changes the limit; applies from the next length prefix on.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.min(MAX_FRAME_LEN);
    }

    /// True between frames (no partial header or body consumed).
    pub fn at_boundary(&self, src: &BytesMut) -> bool {
        self.state == DecodeState::Head && src.is_empty()
    }

    /// The next complete frame body, if `src` holds one.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, SecretStreamError> {
        if self.state == DecodeState::Head {
            let Some(head) = src.get(..LEN_PREFIX) else {
                return Ok(None);
            };
            let len = head
                .iter()
                .rev()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len > self.max_len {
                return Err(SecretStreamError::FrameTooLong {
                    len,
                    max: self.max_len,
                });
            }
            let _ = src.split_to(LEN_PREFIX);
            self.state = DecodeState::Body(len);
        }
        let DecodeState::Body(len) = self.state else {
            return Err(SecretStreamError::Internal("decoder state"));
        };
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        self.state = DecodeState::Head;
        Ok(Some(src.split_to(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_across_any_split() {
        let mut wire = BytesMut::new();
        for body in [&b""[..], b"a", b"hello world", &[9u8; 300][..]] {
            put_len(&mut wire, body.len()).unwrap();
            wire.extend_from_slice(body);
        }
        for chunk in [1usize, 2, 3, 5, 7, 1000] {
            let mut dec = FrameDecoder::new(1000);
            let mut src = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                src.extend_from_slice(piece);
                while let Some(f) = dec.decode(&mut src).unwrap() {
                    got.push(f.to_vec());
                }
            }
            assert_eq!(got.len(), 4, "chunk {chunk}");
            assert_eq!(got[2], b"hello world");
            assert!(dec.at_boundary(&src));
        }
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut dec = FrameDecoder::new(64);
        let mut src = BytesMut::from(&[0xff, 0xff, 0xff, 1][..]);
        assert!(matches!(
            dec.decode(&mut src),
            Err(SecretStreamError::FrameTooLong {
                len: 0xff_ffff,
                max: 64
            })
        ));
        assert!(src.capacity() < 1024);
        assert!(put_len(&mut BytesMut::new(), MAX_FRAME_LEN + 1).is_err());
    }
}
