//! The primitives of `Noise_*_Ed25519_ChaChaPoly_BLAKE2b` as the JavaScript stack
//! (`noise-handshake` 4.2.0 with `noise-curve-ed` 2.1.0) computes them.

use blake2::digest::{Digest, Mac};
use blake2::{Blake2b512, Blake2bMac};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use sha2::Sha512;
use zeroize::Zeroize;

use super::NoiseError;

/// Output length of BLAKE2b-512, the Noise `HASHLEN`.
pub const HASH_LEN: usize = 64;
/// BLAKE2b block length, the HMAC block size.
const HMAC_BLOCK_LEN: usize = 128;
/// Length of a DH public key and of a DH output (a compressed Edwards point).
pub const DH_LEN: usize = 32;
/// Length of a ChaCha20-Poly1305 authentication tag.
pub const TAG_LEN: usize = 16;

/// `BLAKE2b-512(a ‖ b)`.
pub(crate) fn hash2(a: &[u8], b: &[u8]) -> [u8; HASH_LEN] {
    let mut h = Blake2b512::new();
    h.update(a);
    h.update(b);
    h.finalize().into()
}

/// HMAC-BLAKE2b (RFC 2104, block 128, output 64) over the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; HASH_LEN] {
    let mut block = [0u8; HMAC_BLOCK_LEN];
    if key.len() > HMAC_BLOCK_LEN {
        let digest: [u8; HASH_LEN] = Blake2b512::digest(key).into();
        block[..HASH_LEN].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0u8; HMAC_BLOCK_LEN];
    let mut opad = [0u8; HMAC_BLOCK_LEN];
    for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(block.iter()) {
        *i = k ^ 0x36;
        *o = k ^ 0x5c;
    }
    block.zeroize();
    let mut inner = Blake2b512::new();
    inner.update(ipad);
    for p in parts {
        inner.update(p);
    }
    let inner: [u8; HASH_LEN] = inner.finalize().into();
    let mut outer = Blake2b512::new();
    outer.update(opad);
    outer.update(inner);
    ipad.zeroize();
    opad.zeroize();
    outer.finalize().into()
}

/// HKDF (RFC 5869) with HMAC-BLAKE2b, empty info, two 64-byte outputs (the Noise `HKDF`).
pub(crate) fn hkdf2(chaining_key: &[u8], input: &[u8]) -> ([u8; HASH_LEN], [u8; HASH_LEN]) {
    let mut prk = hmac(chaining_key, &[input]);
    let out1 = hmac(&prk, &[&[1u8]]);
    let out2 = hmac(&prk, &[&out1, &[2u8]]);
    prk.zeroize();
    (out1, out2)
}

/// The Ed25519 scalar of a seed as libsodium derives it: `SHA-512(seed)[0..32]`, clamped.
pub(crate) fn ed25519_scalar(seed: &[u8; 32]) -> [u8; 32] {
    let digest = Sha512::digest(seed);
    let mut scalar = [0u8; 32];
    scalar.copy_from_slice(&digest[..32]);
    scalar[0] &= 248;
    scalar[31] &= 127;
    scalar[31] |= 64;
    scalar
}

/// Decodes a public key as libsodium's `crypto_scalarmult_ed25519` accepts it: canonical
/// encoding, a curve point, not of small order, in the prime-order subgroup.
fn checked_point(public: &[u8; DH_LEN]) -> Result<EdwardsPoint, NoiseError> {
    let point = CompressedEdwardsY(*public)
        .decompress()
        .ok_or(NoiseError::InvalidPublicKey)?;
    if point.compress().as_bytes() != public || point.is_small_order() || !point.is_torsion_free() {
        return Err(NoiseError::InvalidPublicKey);
    }
    Ok(point)
}

/// Noise "Ed25519" DH: `crypto_scalarmult_ed25519_noclamp(scalar(seed), public)`, the
/// compressed Edwards point. Fails like libsodium on invalid or small-order points.
pub fn dh(local_seed: &[u8; 32], remote_public: &[u8; DH_LEN]) -> Result<[u8; DH_LEN], NoiseError> {
    let point = checked_point(remote_public)?;
    let mut scalar_bytes = ed25519_scalar(local_seed);
    // The point is in the prime-order subgroup, so reducing the scalar mod l gives the same
    // product as libsodium's multiplication by the unreduced clamped integer.
    let scalar = Scalar::from_bytes_mod_order(scalar_bytes);
    scalar_bytes.zeroize();
    let shared = scalar * point;
    if shared.is_identity() {
        return Err(NoiseError::InvalidPublicKey);
    }
    Ok(shared.compress().to_bytes())
}

/// The handshake's ChaCha20-Poly1305 key and 32-bit nonce counter (`noise-handshake/cipher.js`).
#[derive(Default)]
pub(crate) struct CipherState {
    key: Option<[u8; 32]>,
    nonce: u32,
}

impl CipherState {
    pub(crate) fn has_key(&self) -> bool {
        self.key.is_some()
    }

    pub(crate) fn initialise_key(&mut self, key: &[u8]) {
        let mut k = [0u8; 32];
        k.copy_from_slice(&key[..32]);
        if let Some(old) = self.key.as_mut() {
            old.zeroize();
        }
        self.key = Some(k);
        self.nonce = 0;
    }

    fn nonce_bytes(&self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..8].copy_from_slice(&self.nonce.to_le_bytes());
        n.into()
    }

    /// Encrypts in place and appends the tag; without a key the plaintext passes unchanged.
    pub(crate) fn encrypt(&mut self, ad: &[u8], buf: &mut Vec<u8>) -> Result<(), NoiseError> {
        let Some(key) = self.key.as_ref() else {
            return Ok(());
        };
        let cipher = ChaCha20Poly1305::new(key.into());
        let tag = cipher
            .encrypt_in_place_detached(&self.nonce_bytes(), ad, buf)
            .map_err(|_| NoiseError::Internal("encryption failed"))?;
        buf.extend_from_slice(&tag);
        self.nonce = self
            .nonce
            .checked_add(1)
            .ok_or(NoiseError::NonceExhausted)?;
        Ok(())
    }

    /// Checks and strips the tag, decrypting in place.
    pub(crate) fn decrypt(&mut self, ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        let Some(key) = self.key.as_ref() else {
            return Ok(ciphertext.to_vec());
        };
        let body_len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(NoiseError::Truncated)?;
        let (body, tag) = ciphertext.split_at(body_len);
        let mut plain = body.to_vec();
        let cipher = ChaCha20Poly1305::new(key.into());
        cipher
            .decrypt_in_place_detached(&self.nonce_bytes(), ad, &mut plain, tag.into())
            .map_err(|_| NoiseError::Decrypt)?;
        self.nonce = self
            .nonce
            .checked_add(1)
            .ok_or(NoiseError::NonceExhausted)?;
        Ok(plain)
    }
}

impl Drop for CipherState {
    fn drop(&mut self) {
        if let Some(k) = self.key.as_mut() {
            k.zeroize();
        }
    }
}

/// Keyed BLAKE2b-256 over the concatenation of `parts` (libsodium `crypto_generichash(out32,
/// input, key)`; key ≤ 64 bytes), e.g. stream ids and HyperDHT's holepunch secret.
pub fn keyed_blake2b_256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], NoiseError> {
    let mut mac =
        Blake2bMac::<blake2::digest::consts::U32>::new_with_salt_and_personal(key, &[], &[])
            .map_err(|_| NoiseError::Internal("BLAKE2b key longer than 64 bytes"))?;
    for p in parts {
        mac.update(p);
    }
    Ok(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;

    #[test]
    fn dh_is_symmetric_and_rejects_bad_points() {
        let a = KeyPair::from_seed([1; 32]);
        let b = KeyPair::from_seed([2; 32]);
        let ab = dh(&a.seed(), b.public_key().as_bytes()).unwrap();
        let ba = dh(&b.seed(), a.public_key().as_bytes()).unwrap();
        assert_eq!(ab, ba);
        // identity, order-2 point, a non-canonical encoding of the identity and a non-point
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        for bad in [identity, minus_one, non_canonical, [0u8; 32]] {
            assert_eq!(
                dh(&a.seed(), &bad),
                Err(NoiseError::InvalidPublicKey),
                "{bad:02x?}"
            );
        }
        // a point with a torsion component
        let torsioned = (CompressedEdwardsY(*b.public_key().as_bytes())
            .decompress()
            .unwrap()
            + curve25519_dalek::constants::EIGHT_TORSION[1])
            .compress()
            .to_bytes();
        assert_eq!(dh(&a.seed(), &torsioned), Err(NoiseError::InvalidPublicKey));
    }

    #[test]
    fn hkdf_matches_rfc_construction() {
        // HKDF with output 1 = HMAC(prk, 0x01), output 2 = HMAC(prk, out1 ‖ 0x02)
        let (a, b) = hkdf2(&[7u8; 64], b"ikm");
        let prk = hmac(&[7u8; 64], &[b"ikm"]);
        assert_eq!(a, hmac(&prk, &[&[1]]));
        assert_eq!(b, hmac(&prk, &[&a, &[2]]));
        assert_ne!(a, b);
    }
}
