//! libsodium `crypto_secretstream_xchacha20poly1305` framed for the wire (the state and both
//! sealing paths are in `secret_stream::sodium`; checked against sodium-native in the interop tests)
//! and the stream id of the id+header message.

use bytes::{Buf, BytesMut};
use rand::{CryptoRng, RngCore};

use super::SecretStreamError;
use super::frame::{LEN_PREFIX, put_len};
use super::sodium::{BLOCK_LEN, MAC_LEN, StreamState, TAG_MESSAGE, is_fast_len};
use crate::crypto::keyed_blake2b_256;

/// Bytes a secretstream message adds to its plaintext (encrypted tag byte + MAC).
pub const ABYTES: usize = 17;
/// Length of the secretstream header.
pub const HEADER_LEN: usize = super::sodium::HEADER_LEN;
/// Messages at least this long whose length is a multiple of 8 are sealed and opened with the
/// IETF AEAD (`ring`); shorter ones, and every other length, take the portable path, where the
/// AEAD's speed would not pay for its setup (or, on receive, for the copy into room for the
/// 64-byte first block).
pub const FAST_PATH_MIN_LEN: usize = 256;
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

/// The sending half: encrypts messages into frames.
pub struct Encryptor {
    state: StreamState,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor").finish_non_exhaustive()
    }
}

/// Bytes in front of a fast-path frame's length prefix that the seal overwrites and the frame
/// then drops: the first block is 64 bytes, of which the frame keeps its prefix and one byte.
const FAST_HEADROOM: usize = BLOCK_LEN - LEN_PREFIX - 1;

impl Encryptor {
    /// A push state under `key` with a header drawn from `rng` (the OS rng in production; tests
    /// pass a fixed one to reproduce libsodium vectors).
    pub fn new(key: &[u8; 32], mut rng: impl RngCore + CryptoRng) -> (Self, [u8; HEADER_LEN]) {
        let mut header = [0u8; HEADER_LEN];
        rng.fill_bytes(&mut header);
        (
            Self {
                state: StreamState::new(key, &header),
            },
            header,
        )
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
    ///
    /// A message of at least [`FAST_PATH_MIN_LEN`] bytes whose length is a multiple of 8 is
    /// sealed with the IETF AEAD: it is copied in behind 64 bytes of room for the first block,
    /// and the 60 bytes the frame does not send are then dropped (for free when `out` was
    /// empty, by moving the frame down otherwise).
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
        let start = out.len();
        if len >= FAST_PATH_MIN_LEN && is_fast_len(len) && self.state.has_fast_path() {
            out.reserve(BLOCK_LEN + len + MAC_LEN);
            out.resize(start + BLOCK_LEN, 0);
            for part in parts {
                out.extend_from_slice(part);
            }
            let sealed = out
                .get_mut(start..)
                .ok_or(SecretStreamError::Internal("frame start"))?;
            let mac = self.state.seal_fast(TAG_MESSAGE, sealed)?;
            out.extend_from_slice(&mac);
            // `len ‖ encrypted tag byte` go right before the ciphertext, in the block's room.
            let tag_at = start + BLOCK_LEN - 1;
            let encrypted_tag = out.get(start).copied().unwrap_or_default();
            let mut prefix = BytesMut::with_capacity(LEN_PREFIX);
            put_len(&mut prefix, body_len)?;
            let frame_at = start + FAST_HEADROOM;
            if let Some(p) = out.get_mut(frame_at..tag_at) {
                p.copy_from_slice(&prefix);
            }
            if let Some(t) = out.get_mut(tag_at) {
                *t = encrypted_tag;
            }
            if start == 0 {
                out.advance(FAST_HEADROOM);
            } else {
                let end = out.len();
                out.copy_within(frame_at..end, start);
                out.truncate(end - FAST_HEADROOM);
            }
        } else {
            out.reserve(LEN_PREFIX + body_len);
            put_len(out, body_len)?;
            let body_at = out.len();
            out.extend_from_slice(&[0]);
            for part in parts {
                out.extend_from_slice(part);
            }
            let body = out
                .get_mut(body_at..)
                .ok_or(SecretStreamError::Internal("frame body"))?;
            let mac = self.state.seal_portable(TAG_MESSAGE, body)?;
            out.extend_from_slice(&mac);
        }
        Ok(())
    }
}

/// The receiving half: decrypts frame bodies in place.
pub struct Decryptor {
    state: StreamState,
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
            state: StreamState::new(key, header),
        }
    }

    /// Decrypts one message body, leaving the plaintext in `body`. Messages that
    /// [`Encryptor`] seals with the IETF AEAD are opened with it (after a copy behind room for
    /// the first block); all others in place with the portable path.
    pub fn decrypt(&mut self, body: &mut BytesMut) -> Result<(), SecretStreamError> {
        let len = body
            .len()
            .checked_sub(ABYTES)
            .ok_or(SecretStreamError::MessageTooShort(body.len()))?;
        if len >= FAST_PATH_MIN_LEN && is_fast_len(len) && self.state.has_fast_path() {
            let mut work = BytesMut::with_capacity(BLOCK_LEN + len + MAC_LEN);
            work.extend_from_slice(body.get(..1).unwrap_or_default());
            work.resize(BLOCK_LEN, 0);
            work.extend_from_slice(body.get(1..).unwrap_or_default());
            self.state.open_fast(&mut work)?;
            work.truncate(BLOCK_LEN + len);
            work.advance(BLOCK_LEN);
            *body = work;
        } else {
            self.state.open_portable(body)?;
            body.truncate(1 + len);
            body.advance(1);
        }
        Ok(())
    }
}
