//! The state of libsodium's `crypto_secretstream_xchacha20poly1305` and its two ways to seal
//! and open a message.
//!
//! A secretstream message under the state's key `k` and 12-byte nonce `n = counter ‖ inonce` is
//! the IETF ChaCha20-Poly1305 seal (RFC 8439) of the plaintext `[tag, 0 × 63] ‖ m` of which only
//! the first byte of the 64-byte first block is sent — except for the Poly1305 padding after the
//! ciphertext: libsodium pads by `len(m) mod 16` zero bytes, RFC 8439 by `−(64 + len(m)) mod 16`.
//! The two agree exactly when `len(m) mod 16` is 0 or 8 (`len(m) % 8 == 0`), and then
//! [`StreamState::seal_fast`] / [`StreamState::open_fast`] use `ring`'s assembly AEAD (about
//! twice as fast as RustCrypto on x86-64 and aarch64, see `benches/benches/aead.rs`). Every other
//! length takes the portable path ([`StreamState::seal_portable`], RustCrypto's `chacha20` and
//! `poly1305`), which follows libsodium step by step. Both paths advance the same state, so a
//! stream may mix them freely; the bytes are the same as libsodium's either way (checked against
//! sodium-native for every length class in `tests/noise_vectors.rs` and against the
//! `crypto_secretstream` crate below).

use chacha20::ChaCha20;
use chacha20::cipher::consts::U10;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use poly1305::Poly1305;
use poly1305::universal_hash::{KeyInit, UniversalHash};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::SecretStreamError;

/// Tag of an ordinary message.
pub(crate) const TAG_MESSAGE: u8 = 0x00;
/// Tag bit that makes both sides rekey after the message.
pub(crate) const TAG_REKEY: u8 = 0x02;
/// Length of the Poly1305 tag that ends every message.
pub(crate) const MAC_LEN: usize = 16;
/// Length of the first ChaCha20 block, which carries the tag byte.
pub(crate) const BLOCK_LEN: usize = 64;
/// Length of the secretstream header (`HChaCha20 input ‖ inonce`).
pub(crate) const HEADER_LEN: usize = 24;

const INONCE_LEN: usize = 8;
const ZEROS: [u8; MAC_LEN] = [0; MAC_LEN];

/// Whether a message of `len` plaintext bytes can be sealed and opened with the IETF AEAD
/// (`len mod 16` is 0 or 8, where libsodium's padding equals RFC 8439's).
pub(crate) const fn is_fast_len(len: usize) -> bool {
    len.is_multiple_of(8)
}

/// Poly1305 over a byte stream fed in pieces of any length (libsodium's incremental
/// `crypto_onetimeauth_poly1305_update`), which the odd secretstream padding needs.
struct PolyStream {
    mac: Poly1305,
    pending: [u8; MAC_LEN],
    pending_len: usize,
}

impl PolyStream {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            mac: Poly1305::new(key.into()),
            pending: [0; MAC_LEN],
            pending_len: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        if self.pending_len > 0 {
            let take = (MAC_LEN - self.pending_len).min(data.len());
            let (head, rest) = data.split_at(take);
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(head);
            self.pending_len += take;
            data = rest;
            if self.pending_len < MAC_LEN {
                return;
            }
            self.mac.update(&[self.pending.into()]);
            self.pending_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<MAC_LEN>();
        for block in blocks {
            self.mac.update(&[(*block).into()]);
        }
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    fn finalize(self) -> [u8; MAC_LEN] {
        let tag = self.mac.compute_unpadded(&self.pending[..self.pending_len]);
        tag.into()
    }
}

/// One direction's secretstream state: the subkey, the 32-bit counter and the 8-byte inonce,
/// plus the subkey in `ring`'s form for the fast path.
pub(crate) struct StreamState {
    key: [u8; 32],
    counter: u32,
    inonce: [u8; INONCE_LEN],
    /// The subkey for `ring` (`None` only if `ring` refused it, which it does not for 32
    /// bytes: then every message takes the portable path).
    aead: Option<LessSafeKey>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.key.zeroize();
        self.inonce.zeroize();
    }
}

fn aead_key(key: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&CHACHA20_POLY1305, key)
        .map(LessSafeKey::new)
        .ok()
}

impl StreamState {
    /// `crypto_secretstream_xchacha20poly1305_init_push/pull`: the subkey is
    /// `HChaCha20(key, header[..16])`, the inonce `header[16..]`, the counter 1.
    pub(crate) fn new(key: &[u8; 32], header: &[u8; HEADER_LEN]) -> Self {
        let mut hchacha_input = [0u8; 16];
        hchacha_input.copy_from_slice(&header[..16]);
        let mut inonce = [0u8; INONCE_LEN];
        inonce.copy_from_slice(&header[16..]);
        let subkey: [u8; 32] = chacha20::hchacha::<U10>(key.into(), &hchacha_input.into()).into();
        Self {
            aead: aead_key(&subkey),
            key: subkey,
            counter: 1,
            inonce,
        }
    }

    /// Whether messages of a [fast length](is_fast_len) can take the IETF AEAD.
    pub(crate) fn has_fast_path(&self) -> bool {
        self.aead.is_some()
    }

    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.counter.to_le_bytes());
        n[4..].copy_from_slice(&self.inonce);
        n
    }

    fn cipher(&self) -> ChaCha20 {
        ChaCha20::new(&self.key.into(), &self.nonce().into())
    }

    /// After each message: the inonce absorbs the MAC, the counter moves on, and the state
    /// rekeys on a REKEY tag or when the counter wraps.
    fn advance(&mut self, mac: &[u8; MAC_LEN], tag: u8) {
        for (n, m) in self.inonce.iter_mut().zip(mac) {
            *n ^= m;
        }
        self.counter = self.counter.wrapping_add(1);
        if tag & TAG_REKEY != 0 || self.counter == 0 {
            self.rekey();
        }
    }

    /// `crypto_secretstream_xchacha20poly1305_rekey`: `key ‖ inonce` XORed with the keystream
    /// at the current nonce; the counter starts over at 1.
    pub(crate) fn rekey(&mut self) {
        let mut buf = [0u8; 32 + INONCE_LEN];
        buf[..32].copy_from_slice(&self.key);
        buf[32..].copy_from_slice(&self.inonce);
        self.cipher().apply_keystream(&mut buf);
        self.key.copy_from_slice(&buf[..32]);
        self.inonce.copy_from_slice(&buf[32..]);
        buf.zeroize();
        self.counter = 1;
        self.aead = aead_key(&self.key);
    }

    /// The Poly1305 of a message after its first block (`block`, all 64 ciphertext bytes) with
    /// libsodium's padding.
    fn portable_mac(poly_key: &[u8; 32], block: &[u8; BLOCK_LEN], ciphertext: &[u8]) -> [u8; 16] {
        let mut mac = PolyStream::new(poly_key);
        mac.update(block);
        mac.update(ciphertext);
        mac.update(&ZEROS[..ciphertext.len() % MAC_LEN]);
        mac.update(&0u64.to_le_bytes()); // no additional data
        mac.update(&((BLOCK_LEN + ciphertext.len()) as u64).to_le_bytes());
        mac.finalize()
    }

    /// `crypto_secretstream_xchacha20poly1305_push` on any length, in place: `body` is one tag
    /// slot followed by the plaintext; on return it holds the encrypted tag byte and the
    /// ciphertext, and the returned MAC follows them on the wire.
    pub(crate) fn seal_portable(
        &mut self,
        tag: u8,
        body: &mut [u8],
    ) -> Result<[u8; MAC_LEN], SecretStreamError> {
        let (tag_slot, message) = body
            .split_first_mut()
            .ok_or(SecretStreamError::Internal("no tag slot"))?;
        let mut cipher = self.cipher();
        let mut poly_key = [0u8; 32];
        cipher.apply_keystream(&mut poly_key);
        cipher.seek(BLOCK_LEN as u64);
        let mut block = [0u8; BLOCK_LEN];
        block[0] = tag;
        cipher.apply_keystream(&mut block);
        *tag_slot = block[0];
        cipher.apply_keystream(message);
        let mac = Self::portable_mac(&poly_key, &block, message);
        poly_key.zeroize();
        self.advance(&mac, tag);
        Ok(mac)
    }

    /// `crypto_secretstream_xchacha20poly1305_pull` on any length, in place: `body` is the
    /// encrypted tag byte, the ciphertext and the MAC; on success the ciphertext (`body[1..len −
    /// 16]`) is plaintext and the tag is returned. On failure the state is unchanged.
    pub(crate) fn open_portable(&mut self, body: &mut [u8]) -> Result<u8, SecretStreamError> {
        let too_short = SecretStreamError::MessageTooShort(body.len());
        let (tag_byte, rest) = body.split_first_mut().ok_or(too_short)?;
        let mac_at = rest
            .len()
            .checked_sub(MAC_LEN)
            .ok_or(SecretStreamError::MessageTooShort(rest.len() + 1))?;
        let (ciphertext, mac) = rest.split_at_mut(mac_at);
        let mut cipher = self.cipher();
        let mut poly_key = [0u8; 32];
        cipher.apply_keystream(&mut poly_key);
        cipher.seek(BLOCK_LEN as u64);
        let mut block = [0u8; BLOCK_LEN];
        block[0] = *tag_byte;
        cipher.apply_keystream(&mut block);
        let tag = block[0];
        block[0] = *tag_byte;
        let expected = Self::portable_mac(&poly_key, &block, ciphertext);
        poly_key.zeroize();
        if !bool::from(expected.ct_eq(&*mac)) {
            return Err(SecretStreamError::Decrypt);
        }
        cipher.apply_keystream(ciphertext);
        self.advance(&expected, tag);
        Ok(tag)
    }

    /// The push of a message whose length [`is_fast_len`], in place with the IETF AEAD:
    /// `buf` is a 64-byte block to overwrite followed by the plaintext. On return `buf[0]` is
    /// the encrypted tag byte (what goes on the wire), `buf[1..64]` is keystream (never sent),
    /// `buf[64..]` the ciphertext; the returned MAC follows on the wire.
    pub(crate) fn seal_fast(
        &mut self,
        tag: u8,
        buf: &mut [u8],
    ) -> Result<[u8; MAC_LEN], SecretStreamError> {
        let (block, message) = buf
            .split_at_mut_checked(BLOCK_LEN)
            .ok_or(SecretStreamError::Internal("no room for the first block"))?;
        if !is_fast_len(message.len()) {
            return Err(SecretStreamError::Internal(
                "fast seal of an unaligned length",
            ));
        }
        block.fill(0);
        block[0] = tag;
        let aead = self
            .aead
            .as_ref()
            .ok_or(SecretStreamError::Internal("no fast path"))?;
        let sealed = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(self.nonce()),
                Aad::empty(),
                buf,
            )
            .map_err(|_| SecretStreamError::Internal("chacha20-poly1305 seal"))?;
        let mac: [u8; MAC_LEN] = sealed
            .as_ref()
            .try_into()
            .map_err(|_| SecretStreamError::Internal("tag length"))?;
        self.advance(&mac, tag);
        Ok(mac)
    }

    /// The pull of a message whose plaintext length [`is_fast_len`], in place with the IETF
    /// AEAD: `buf` is 64 bytes of room whose first byte is the encrypted tag byte, followed by
    /// the ciphertext and the MAC. On success `buf[64..len − 16]` is the plaintext and the tag
    /// is returned. On failure the state is unchanged (and `buf` is garbage).
    pub(crate) fn open_fast(&mut self, buf: &mut [u8]) -> Result<u8, SecretStreamError> {
        let message_len = buf
            .len()
            .checked_sub(BLOCK_LEN + MAC_LEN)
            .ok_or(SecretStreamError::Internal("no room for the first block"))?;
        if !is_fast_len(message_len) {
            return Err(SecretStreamError::Internal(
                "fast open of an unaligned length",
            ));
        }
        // The sender sealed `[tag, 0 × 63]`: the 63 unsent ciphertext bytes are the keystream.
        let mut keystream = [0u8; BLOCK_LEN];
        let mut cipher = self.cipher();
        cipher.seek(BLOCK_LEN as u64);
        cipher.apply_keystream(&mut keystream);
        let encrypted_tag = buf.first().copied().unwrap_or_default();
        let mac: [u8; MAC_LEN] = buf
            .get(buf.len() - MAC_LEN..)
            .and_then(|m| m.try_into().ok())
            .ok_or(SecretStreamError::Internal("mac length"))?;
        if let Some(rest) = buf.get_mut(1..BLOCK_LEN) {
            rest.copy_from_slice(&keystream[1..]);
        }
        let aead = self
            .aead
            .as_ref()
            .ok_or(SecretStreamError::Internal("no fast path"))?;
        aead.open_in_place(
            Nonce::assume_unique_for_key(self.nonce()),
            Aad::empty(),
            buf,
        )
        .map_err(|_| SecretStreamError::Decrypt)?;
        let tag = encrypted_tag ^ keystream[0];
        self.advance(&mac, tag);
        Ok(tag)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crypto_secretstream::{Header, Key, PullStream, PushStream, Tag};

    /// A fixed "rng" that yields the header bytes.
    struct Fixed([u8; HEADER_LEN], usize);
    impl rand::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest {
                *d = self.0[self.1 % HEADER_LEN];
                self.1 += 1;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand::CryptoRng for Fixed {}

    fn message(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|j| (j * 31 + seed) as u8).collect()
    }

    /// Lengths 0..=80, then around 64 KiB every residue mod 16.
    fn lengths() -> impl Iterator<Item = usize> {
        (0..=80)
            .chain((0..16).map(|r| 65_536 + r))
            .chain([1000, 4096])
    }

    #[test]
    fn both_paths_match_the_reference_push_and_pull() {
        let key = [0x42u8; 32];
        let header: [u8; HEADER_LEN] = std::array::from_fn(|i| i as u8 * 3);
        let (h, mut reference) = PushStream::init(Fixed(header, 0), &Key::from(key));
        assert_eq!(h.as_ref(), &header);
        let mut reference_pull = PullStream::init(Header::from(header), &Key::from(key));
        let mut ours = StreamState::new(&key, &header);
        let mut our_pull = StreamState::new(&key, &header);
        let mut fast = 0;
        for (k, len) in lengths().enumerate() {
            let plain = message(len, k);
            let mut expected = plain.clone();
            reference.push(&mut expected, &[], Tag::Message).unwrap();

            let mut wire = if is_fast_len(len) {
                fast += 1;
                let mut buf = vec![0u8; BLOCK_LEN];
                buf.extend_from_slice(&plain);
                let mac = ours.seal_fast(TAG_MESSAGE, &mut buf).unwrap();
                let mut wire = vec![buf[0]];
                wire.extend_from_slice(&buf[BLOCK_LEN..]);
                wire.extend_from_slice(&mac);
                wire
            } else {
                let mut body = vec![0u8];
                body.extend_from_slice(&plain);
                let mac = ours.seal_portable(TAG_MESSAGE, &mut body).unwrap();
                body.extend_from_slice(&mac);
                body
            };
            assert_eq!(hex::encode(&wire), hex::encode(&expected), "length {len}");

            // Open alternately with the path the length allows and the portable one.
            let mut copy = wire.clone();
            assert_eq!(reference_pull.pull(&mut copy, &[]).unwrap(), Tag::Message);
            assert_eq!(copy, plain);
            if is_fast_len(len) && k % 2 == 0 {
                let mut buf = vec![0u8; BLOCK_LEN - 1];
                buf.insert(0, wire[0]);
                buf.extend_from_slice(&wire[1..]);
                assert_eq!(our_pull.open_fast(&mut buf).unwrap(), TAG_MESSAGE);
                assert_eq!(&buf[BLOCK_LEN..BLOCK_LEN + len], &plain[..]);
            } else {
                assert_eq!(our_pull.open_portable(&mut wire).unwrap(), TAG_MESSAGE);
                assert_eq!(&wire[1..=len], &plain[..]);
            }
        }
        assert_eq!(
            fast,
            11 + 2 + 2,
            "0, 8, .., 80; 64 KiB + 0 and + 8; 1000 and 4096"
        );
    }

    #[test]
    fn rekey_tag_and_counter_wrap_follow_libsodium() {
        let key = [9u8; 32];
        let header = [5u8; HEADER_LEN];
        let (_, mut reference) = PushStream::init(Fixed(header, 0), &Key::from(key));
        let mut ours = StreamState::new(&key, &header);
        let mut pull = StreamState::new(&key, &header);
        for (k, tag) in [(0, Tag::Message), (1, Tag::Rekey), (2, Tag::Message)] {
            let plain = message(32, k);
            let mut expected = plain.clone();
            reference.push(&mut expected, &[], tag).unwrap();
            let mut buf = vec![0u8; BLOCK_LEN];
            buf.extend_from_slice(&plain);
            let mac = ours.seal_fast(tag as u8, &mut buf).unwrap();
            assert_eq!(buf[0], expected[0]);
            assert_eq!(&buf[BLOCK_LEN..], &expected[1..=32]);
            assert_eq!(&mac[..], &expected[33..]);
            let mut got = expected.clone();
            assert_eq!(pull.open_portable(&mut got).unwrap(), tag as u8);
        }
        // The counter wraps after 2^32 − 1 messages: both sides rekey and stay in step.
        ours.counter = u32::MAX;
        pull.counter = u32::MAX;
        for len in [8usize, 3, 16] {
            let mut body = vec![0u8];
            body.extend_from_slice(&message(len, 1));
            let mac = ours.seal_portable(TAG_MESSAGE, &mut body).unwrap();
            body.extend_from_slice(&mac);
            assert_eq!(pull.open_portable(&mut body).unwrap(), TAG_MESSAGE);
            assert_eq!(&body[1..=len], &message(len, 1)[..]);
            assert_eq!(ours.counter, pull.counter);
        }
        assert_eq!(
            ours.counter, 3,
            "rekeyed at the wrap (counter 1), then two more"
        );
    }

    #[test]
    fn tampering_fails_either_path_and_leaves_the_state() {
        let key = [1u8; 32];
        let header = [2u8; HEADER_LEN];
        let mut tx = StreamState::new(&key, &header);
        let mut rx = StreamState::new(&key, &header);
        let mut body = vec![0u8];
        body.extend_from_slice(&message(64, 0));
        let mac = tx.seal_portable(TAG_MESSAGE, &mut body).unwrap();
        body.extend_from_slice(&mac);
        for at in [0, 1, 40, body.len() - 1] {
            let mut bad = body.clone();
            bad[at] ^= 1;
            assert!(matches!(
                rx.open_portable(&mut bad.clone()),
                Err(SecretStreamError::Decrypt)
            ));
            let mut fast = vec![0u8; BLOCK_LEN - 1];
            fast.insert(0, bad[0]);
            fast.extend_from_slice(&bad[1..]);
            assert!(matches!(
                rx.open_fast(&mut fast),
                Err(SecretStreamError::Decrypt)
            ));
        }
        assert_eq!(rx.open_portable(&mut body).unwrap(), TAG_MESSAGE);
    }
}
