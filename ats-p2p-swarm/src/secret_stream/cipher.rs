//! libsodium `crypto_secretstream_xchacha20poly1305` (through the `crypto_secretstream` crate,
//! checked against sodium-native in the interop tests) and the stream id of the id+header message.

use bytes::BytesMut;
use crypto_secretstream::aead;
use crypto_secretstream::{Header, Key, PullStream, PushStream, Tag};
use rand::{CryptoRng, RngCore};

use super::SecretStreamError;
use super::frame::put_len;
use crate::crypto::keyed_blake2b_256;

/// Bytes a secretstream message adds to its plaintext (encrypted tag byte + MAC).
pub const ABYTES: usize = 17;
/// Length of the secretstream header.
pub const HEADER_LEN: usize = 24;
/// Length of the stream id.
pub const ID_LEN: usize = 32;
/// Length of the id+header message (`id ‖ header`).
pub const ID_HEADER_LEN: usize = ID_LEN + HEADER_LEN;

/// `NS_INITIATOR` of the `hyperswarm/secret-stream` namespace.
pub const NS_INITIATOR: [u8; 32] =
    hex32("a931a0155b5c09e6d28628236af83c4b8a6af9af60986edeede9dc5d63192bf7");
/// `NS_RESPONDER` of the `hyperswarm/secret-stream` namespace.
pub const NS_RESPONDER: [u8; 32] =
    hex32("742c9d833d430af4c48a8705e91631eecf295442bbca18996e597097723b1061");
/// `NS_SEND` of the `hyperswarm/secret-stream` namespace (unordered datagram keys).
pub const NS_SEND: [u8; 32] =
    hex32("aab97d097471f56651b0460ffc8aaa7d3342f7377597d60b925a1dac689adcbf");

const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("bad hex constant"),
        }
    }
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

/// The stream id a side sends: `BLAKE2b-256(NS_role, key = handshake hash)`.
pub fn stream_id(handshake_hash: &[u8; 64], is_initiator: bool) -> [u8; ID_LEN] {
    let ns = if is_initiator {
        &NS_INITIATOR
    } else {
        &NS_RESPONDER
    };
    keyed_blake2b_256(handshake_hash, &[ns])
}

/// An `aead::Buffer` over the tail of a `BytesMut`, so push/pull work in place inside a frame.
struct Tail<'a> {
    buf: &'a mut BytesMut,
    start: usize,
}

impl AsRef<[u8]> for Tail<'_> {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }
}

impl AsMut<[u8]> for Tail<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        self.buf.get_mut(self.start..).unwrap_or(&mut [])
    }
}

impl aead::Buffer for Tail<'_> {
    fn extend_from_slice(&mut self, other: &[u8]) -> aead::Result<()> {
        self.buf.extend_from_slice(other);
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.buf.truncate(self.start.saturating_add(len));
    }
}

/// The sending half: encrypts messages into frames.
pub struct Encryptor {
    push: PushStream,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor").finish_non_exhaustive()
    }
}

impl Encryptor {
    /// A push state under `key` with a header drawn from `rng` (the OS rng in production; tests
    /// pass a fixed one to reproduce libsodium vectors).
    pub fn new(key: &[u8; 32], rng: impl RngCore + CryptoRng) -> (Self, [u8; HEADER_LEN]) {
        let (header, push) = PushStream::init(rng, &Key::from(*key));
        (Self { push }, *header.as_ref())
    }

    /// Appends one frame `uint24 len ‖ secretstream(plaintext)` (tag MESSAGE) to `out`.
    pub fn encrypt_frame(
        &mut self,
        plaintext: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), SecretStreamError> {
        self.encrypt_frame_parts(&[plaintext], out)
    }

    /// Like [`Self::encrypt_frame`] for a message given in parts (for example a frame header
    /// and its payload): one frame whose plaintext is the parts concatenated, copied once into
    /// `out` and encrypted there in place.
    pub fn encrypt_frame_parts(
        &mut self,
        parts: &[&[u8]],
        out: &mut BytesMut,
    ) -> Result<(), SecretStreamError> {
        let len = parts
            .iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p.len()))
            .ok_or(SecretStreamError::MessageTooLong(usize::MAX))?;
        let body_len = len
            .checked_add(ABYTES)
            .ok_or(SecretStreamError::MessageTooLong(len))?;
        if body_len > super::frame::MAX_FRAME_LEN {
            return Err(SecretStreamError::MessageTooLong(len));
        }
        out.reserve(3 + body_len);
        put_len(out, body_len)?;
        let start = out.len();
        for part in parts {
            out.extend_from_slice(part);
        }
        let mut tail = Tail { buf: out, start };
        self.push
            .push(&mut tail, &[], Tag::Message)
            .map_err(|_| SecretStreamError::Internal("secretstream push"))?;
        Ok(())
    }
}

/// The receiving half: decrypts frame bodies in place.
pub struct Decryptor {
    pull: PullStream,
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor").finish_non_exhaustive()
    }
}

impl Decryptor {
    /// A pull state under `key` for the peer's `header`.
    pub fn new(key: &[u8; 32], header: &[u8; HEADER_LEN]) -> Self {
        Self {
            pull: PullStream::init(Header::from(*header), &Key::from(*key)),
        }
    }

    /// Decrypts one message body in place, leaving the plaintext in `body`.
    pub fn decrypt(&mut self, body: &mut BytesMut) -> Result<(), SecretStreamError> {
        if body.len() < ABYTES {
            return Err(SecretStreamError::MessageTooShort(body.len()));
        }
        let mut tail = Tail {
            buf: body,
            start: 0,
        };
        self.pull
            .pull(&mut tail, &[])
            .map_err(|_| SecretStreamError::Decrypt)?;
        Ok(())
    }
}
