//! `tokio_util::codec` adapters over the sans-io codec (feature `codec`).

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{FrameDecoder, encode};
use crate::error::FrameError;
use crate::frame::Frame;

/// [`Decoder`] and [`Encoder`] for frames, for use with `Framed`, `FramedRead` and
/// `FramedWrite`.
///
/// Decoding is [`FrameDecoder`] (DATA payloads are not copied). Encoding through `Framed`
/// copies payloads into its write buffer; for copy-free DATA write
/// [`encode_parts`](crate::encode_parts) output straight to the stream instead.
#[derive(Clone, Debug, Default)]
pub struct FrameCodec {
    decoder: FrameDecoder,
}

impl FrameCodec {
    /// A codec waiting for the first frame.
    pub const fn new() -> Self {
        Self {
            decoder: FrameDecoder::new(),
        }
    }
}

/// Errors from [`FrameCodec`]: the peer's bytes or the underlying stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Malformed bytes from the peer (or an over-limit frame given to the encoder).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The underlying I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.decoder.decode(src)?)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(self.decoder.decode_eof(src)?)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(encode(&item, dst)?)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(encode(item, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn codec_round_trip_and_eof() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        codec
            .encode(Frame::Data(Bytes::from_static(b"xyz")), &mut buf)
            .unwrap();
        codec.encode(&Frame::Done, &mut buf).unwrap();
        buf.extend_from_slice(&[0x02, 0, 0]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Frame::Data(Bytes::from_static(b"xyz")))
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Done));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::Frame(FrameError::Truncated { buffered: 3 }))
        ));
    }
}
