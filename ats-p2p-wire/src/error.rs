//! Errors, sorted by who is at fault, and the one mapping from an error to a reply frame.

use crate::frame::{Frame, FrameType};

/// Malformed bytes: the peer sent something that is not a valid frame.
///
/// After a decoder returns one of these the byte stream is corrupt and must be closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The type byte is not one of the defined types.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The announced payload length is above the limit for its type.
    #[error("{ty} frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// The frame's type.
        ty: FrameType,
        /// The announced (or, when encoding, actual) payload length.
        len: u64,
        /// The limit for this type.
        max: usize,
    },
    /// The META payload is not the expected JSON object.
    #[error("invalid META payload: {0}")]
    BadMeta(String),
    /// The RESUME payload is not the JSON object `{"offset":N}`.
    #[error("invalid RESUME payload: {0}")]
    BadResume(String),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes left over when the stream ended.
        buffered: usize,
    },
}

/// Which end of a transfer a state machine plays; picks the reply frame in
/// [`TransferError::reply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The side that sends META, DATA and DONE.
    Sender,
    /// The side that answers with ACK or NACK.
    Receiver,
}

/// Why a transfer failed.
///
/// Variants are grouped by blame: the peer broke the protocol or sent the wrong file; the peer
/// said no; time ran out; the local side failed; or the caller broke the API contract.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    // -- the peer broke the protocol or sent the wrong file --
    /// The peer's bytes did not decode.
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
    /// A frame that the current state does not allow.
    #[error("unexpected {got} frame while waiting for {expected}")]
    UnexpectedFrame {
        /// What the state machine was waiting for.
        expected: &'static str,
        /// What arrived.
        got: FrameType,
    },
    /// META does not describe the accepted offer.
    #[error("META {field} does not match the accepted offer")]
    MetaMismatch {
        /// The first field that differs: `"name"`, `"size"` or `"hash"`.
        field: &'static str,
    },
    /// The offered size is above the receiver's limit.
    #[error("file of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// More DATA bytes arrived than META announced.
    #[error("received more than the announced {size} bytes")]
    Oversize {
        /// The announced size.
        size: u64,
    },
    /// DONE arrived before all announced bytes did.
    #[error("DONE after {received} of {size} announced bytes")]
    SizeMismatch {
        /// The announced size.
        size: u64,
        /// Bytes received.
        received: u64,
    },
    /// The received bytes do not hash to the announced SHA-256.
    #[error("SHA-256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The announced hash.
        expected: crate::FileHash,
        /// The hash of the bytes received.
        actual: crate::FileHash,
    },
    /// The receiver asked to resume past the end of the file.
    #[error("RESUME at byte {offset} of a {size}-byte file")]
    ResumeBeyondSize {
        /// The offset the receiver asked for.
        offset: u64,
        /// The announced size.
        size: u64,
    },

    // -- the peer said no --
    /// The receiver refused (NACK) with this reason.
    #[error("peer refused: {0}")]
    Nack(String),
    /// The peer gave up (ERROR) with this message.
    #[error("peer error: {0}")]
    PeerError(String),
    /// The byte stream ended before the transfer finished.
    #[error("stream closed while waiting for {waiting_for}")]
    Closed {
        /// What the state machine was waiting for.
        waiting_for: &'static str,
    },

    // -- time --
    /// A deadline passed.
    #[error("timed out waiting for {waiting_for}")]
    TimedOut {
        /// What the state machine was waiting for.
        waiting_for: &'static str,
    },

    // -- the local side --
    /// The caller reported a failure of its own (disk full, read error, cancelled, ...).
    #[error("local failure: {0}")]
    Local(String),
    /// The caller broke the API contract; never caused by peer input.
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

impl TransferError {
    /// The frame `side` sends to tell the peer about this error, or `None` when the peer
    /// already knows (it sent NACK or ERROR, or the stream is gone).
    ///
    /// This is the only place that turns errors into wire reasons: the receiver answers a
    /// peer's fault with NACK, everything else is ERROR; the reason text is the error's
    /// `Display`, cut to [`MAX_REASON_LEN`](crate::MAX_REASON_LEN).
    pub fn reply(&self, side: Side) -> Option<Frame> {
        match self {
            Self::Nack(_) | Self::PeerError(_) | Self::Closed { .. } => None,
            Self::Malformed(_)
            | Self::UnexpectedFrame { .. }
            | Self::MetaMismatch { .. }
            | Self::TooLarge { .. }
            | Self::Oversize { .. }
            | Self::SizeMismatch { .. }
            | Self::HashMismatch { .. }
            | Self::ResumeBeyondSize { .. } => Some(match side {
                Side::Receiver => Frame::nack(self.to_string()),
                Side::Sender => Frame::error(self.to_string()),
            }),
            Self::TimedOut { .. } | Self::Local(_) | Self::ApiMisuse(_) => {
                Some(Frame::error(self.to_string()))
            }
        }
    }

    /// `true` when the peer is at fault (bad bytes, protocol violation, wrong file, refusal).
    pub const fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            Self::Malformed(_)
                | Self::UnexpectedFrame { .. }
                | Self::MetaMismatch { .. }
                | Self::Oversize { .. }
                | Self::SizeMismatch { .. }
                | Self::HashMismatch { .. }
                | Self::ResumeBeyondSize { .. }
                | Self::Nack(_)
                | Self::PeerError(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_by_side_and_blame() {
        let err = TransferError::SizeMismatch {
            size: 10,
            received: 3,
        };
        assert_eq!(
            err.reply(Side::Receiver),
            Some(Frame::Nack("DONE after 3 of 10 announced bytes".into()))
        );
        assert_eq!(
            err.reply(Side::Sender),
            Some(Frame::Error("DONE after 3 of 10 announced bytes".into()))
        );
        let err = TransferError::Local("disk full".into());
        assert_eq!(
            err.reply(Side::Receiver),
            Some(Frame::Error("local failure: disk full".into()))
        );
        assert_eq!(TransferError::Nack("no".into()).reply(Side::Sender), None);
        assert_eq!(
            TransferError::PeerError("x".into()).reply(Side::Receiver),
            None
        );
    }

    #[test]
    fn long_reasons_fit_a_frame() {
        let err = TransferError::Local("x".repeat(10 * crate::MAX_REASON_LEN));
        let Some(Frame::Error(text)) = err.reply(Side::Sender) else {
            panic!("expected ERROR")
        };
        assert_eq!(text.len(), crate::MAX_REASON_LEN);
    }
}
