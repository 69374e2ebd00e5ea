//! Frame types, payload limits and the META payload.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a frame header: one type byte and a big-endian `u32` payload length.
pub const HEADER_LEN: usize = 5;

/// Largest DATA payload: 64 KiB, the seed protocol's chunk size.
pub const MAX_DATA_LEN: usize = 64 * 1024;

/// Largest META payload: a JSON object with a file name (at most a few hundred bytes even when
/// every character is `\u` escaped), a size and a 64-character hash fits many times over.
pub const MAX_META_LEN: usize = 4 * 1024;

/// Largest ACK payload: empty or a small JSON object; 4 KiB leaves room for extensions.
pub const MAX_ACK_LEN: usize = 4 * 1024;

/// Largest NACK or ERROR payload: a human-readable reason, never a dump of data.
pub const MAX_REASON_LEN: usize = 4 * 1024;

/// Largest RESUME payload: `{"offset":N}` is at most 31 bytes; the rest is room for white
/// space and later fields.
pub const MAX_RESUME_LEN: usize = 256;

/// The frame types, with the type byte they carry on the wire: the seed protocol's six and
/// RESUME, an extension sent only to a sender that offered it in META.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// `0x01`: JSON `{"name","size","hash"}` describing the file.
    Meta = 0x01,
    /// `0x02`: a chunk of file bytes, at most [`MAX_DATA_LEN`].
    Data = 0x02,
    /// `0x03`: all bytes were sent; empty payload.
    Done = 0x03,
    /// `0x04`: the receiver verified and stored the file; JSON or empty payload.
    Ack = 0x04,
    /// `0x05`: the receiver refuses the transfer; UTF-8 reason.
    Nack = 0x05,
    /// `0x06`: either side gives up; UTF-8 message.
    Error = 0x06,
    /// `0x07`: the receiver's answer to a META with `"resume":true`: JSON `{"offset":N}`, the
    /// verified prefix it holds; the sender streams from there.
    Resume = 0x07,
}

impl FrameType {
    /// The type for a wire byte, or `None` for a byte this protocol does not define.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            0x01 => Some(Self::Meta),
            0x02 => Some(Self::Data),
            0x03 => Some(Self::Done),
            0x04 => Some(Self::Ack),
            0x05 => Some(Self::Nack),
            0x06 => Some(Self::Error),
            0x07 => Some(Self::Resume),
            _ => None,
        }
    }

    /// The byte written on the wire for this type.
    pub const fn to_u8(self) -> u8 {
        self as u8
    }

    /// The largest payload length a frame of this type may announce.
    pub const fn max_len(self) -> usize {
        match self {
            Self::Meta => MAX_META_LEN,
            Self::Data => MAX_DATA_LEN,
            Self::Done => 0,
            Self::Ack => MAX_ACK_LEN,
            Self::Nack | Self::Error => MAX_REASON_LEN,
            Self::Resume => MAX_RESUME_LEN,
        }
    }

    /// The upper-case protocol name (`"META"`, `"DATA"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Meta => "META",
            Self::Data => "DATA",
            Self::Done => "DONE",
            Self::Ack => "ACK",
            Self::Nack => "NACK",
            Self::Error => "ERROR",
            Self::Resume => "RESUME",
        }
    }
}

impl TryFrom<u8> for FrameType {
    type Error = crate::FrameError;

    /// The type for a wire byte; [`FrameError::UnknownType`](crate::FrameError::UnknownType)
    /// otherwise.
    fn try_from(byte: u8) -> Result<Self, crate::FrameError> {
        Self::from_u8(byte).ok_or(crate::FrameError::UnknownType(byte))
    }
}

impl From<FrameType> for u8 {
    fn from(ty: FrameType) -> Self {
        ty.to_u8()
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One protocol frame with a typed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Describes the file that follows.
    Meta(Meta),
    /// File bytes (at most [`MAX_DATA_LEN`] to be encodable).
    Data(Bytes),
    /// The sender has sent every byte.
    Done,
    /// The receiver stored the file; the payload is JSON or empty and is not interpreted.
    Ack(Bytes),
    /// The receiver refuses the transfer, with a reason.
    Nack(String),
    /// A side gives up, with a message.
    Error(String),
    /// The receiver holds the first `offset` bytes (verified) and wants the rest; sent only
    /// in answer to a META that offered resuming.
    Resume(u64),
}

impl Frame {
    /// The type byte this frame is sent with.
    pub const fn frame_type(&self) -> FrameType {
        match self {
            Self::Meta(_) => FrameType::Meta,
            Self::Data(_) => FrameType::Data,
            Self::Done => FrameType::Done,
            Self::Ack(_) => FrameType::Ack,
            Self::Nack(_) => FrameType::Nack,
            Self::Error(_) => FrameType::Error,
            Self::Resume(_) => FrameType::Resume,
        }
    }

    /// A NACK frame whose reason is cut (at a character boundary) to fit [`MAX_REASON_LEN`].
    pub fn nack(reason: impl Into<String>) -> Self {
        Self::Nack(truncate_reason(reason.into()))
    }

    /// An ERROR frame whose message is cut (at a character boundary) to fit [`MAX_REASON_LEN`].
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error(truncate_reason(message.into()))
    }
}

/// Cuts `text` to at most [`MAX_REASON_LEN`] bytes without splitting a character.
pub(crate) fn truncate_reason(mut text: String) -> String {
    if text.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !text.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        text.truncate(end);
    }
    text
}

/// The META payload: what the sender says it is about to send.
///
/// On the wire this is the JSON object `{"name":…,"size":…,"hash":…}` (fields in that order),
/// with `"resume":true` after them when the sender offers to resume; unknown fields are ignored
/// when decoding (so a seed receiver ignores `resume`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta {
    /// File name as offered (validating it as a path component is the caller's job).
    pub name: String,
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub hash: FileHash,
    /// The sender can resume: it waits for a RESUME frame after META and then streams from
    /// its offset. Only in META frames (an offer never carries it); absent means `false`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub resume: bool,
}

impl Meta {
    /// The description of a file: `name`, `size` and `hash`, without a resume offer.
    pub fn new(name: impl Into<String>, size: u64, hash: FileHash) -> Self {
        Self {
            name: name.into(),
            size,
            hash,
            resume: false,
        }
    }
}

/// `skip_serializing_if` for flags that are left out when unset.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
const fn is_false(flag: &bool) -> bool {
    !*flag
}

/// The RESUME payload: `{"offset":N}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResumePayload {
    /// Bytes the receiver already holds.
    pub(crate) offset: u64,
}

/// A SHA-256 digest, written as 64 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHash(pub [u8; 32]);

impl FileHash {
    /// Length of the hex form.
    pub const HEX_LEN: usize = 64;

    /// The SHA-256 of `data` (convenience for small inputs and tests).
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(data).into())
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-character lower-case hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileHash({self})")
    }
}

/// Why a string is not a [`FileHash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 hash must be 64 hex characters")]
pub struct ParseHashError;

impl FromStr for FileHash {
    type Err = ParseHashError;

    /// Parses 64 hex characters (lower case is canonical; upper case is accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != Self::HEX_LEN {
            return Err(ParseHashError);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseHashError)?;
        Ok(Self(out))
    }
}

impl Serialize for FileHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for FileHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_bytes_round_trip() {
        for byte in 0..=u8::MAX {
            match FrameType::try_from(byte) {
                Ok(ty) => assert_eq!(u8::from(ty), byte),
                Err(err) => {
                    assert!(byte == 0 || byte > 7);
                    assert_eq!(err, crate::FrameError::UnknownType(byte));
                }
            }
        }
    }

    #[test]
    fn hash_parsing() {
        let h = FileHash::of(b"");
        let hex = h.to_hex();
        assert_eq!(
            hex,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(hex.parse::<FileHash>(), Ok(h));
        assert_eq!(hex.to_uppercase().parse::<FileHash>(), Ok(h));
        assert_eq!(hex[..63].parse::<FileHash>(), Err(ParseHashError));
        assert_eq!(
            format!("{}z", &hex[..63]).parse::<FileHash>(),
            Err(ParseHashError)
        );
        // Multi-byte characters with a 64-byte length must not panic.
        assert_eq!("é".repeat(32).parse::<FileHash>(), Err(ParseHashError));
    }

    #[test]
    fn reasons_are_cut_at_char_boundaries() {
        let long = "é".repeat(MAX_REASON_LEN);
        let Frame::Nack(cut) = Frame::nack(long) else {
            panic!("not a nack")
        };
        assert!(cut.len() <= MAX_REASON_LEN);
        assert!(cut.len() >= MAX_REASON_LEN - 1);
    }
}
