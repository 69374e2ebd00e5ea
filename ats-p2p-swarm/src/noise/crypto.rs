//! The primitives of `Noise_*_Ed25519_ChaChaPoly_BLAKE2b` as the JavaScript stack
//! (`noise-handshake` 4.2.0 with `noise-curve-ed` 2.1.0) computes them.

use blake2::Blake2b512;
use blake2::digest::Digest;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use hkdf::SimpleHkdf;
use sha2::Sha512;
use zeroize::{Zeroize, Zeroizing};

use super::NoiseError;

/// Output length of BLAKE2b-512, the Noise `HASHLEN`.
pub const HASH_LEN: usize = 64;
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

/// The Noise `HKDF(chaining_key, input)` with two 64-byte outputs: RFC 5869 HKDF over
/// HMAC-BLAKE2b (block 128, output 64; `SimpleHmac` since BLAKE2b has no HMAC core), salt =
/// `chaining_key`, empty info. Its 128-byte expansion is exactly Noise's `output1 = HMAC(prk,
/// 0x01)`, `output2 = HMAC(prk, output1 ‖ 0x02)`.
pub(crate) fn hkdf2(
    chaining_key: &[u8],
    input: &[u8],
) -> Result<([u8; HASH_LEN], [u8; HASH_LEN]), NoiseError> {
    let hkdf = SimpleHkdf::<Blake2b512>::new(Some(chaining_key), input);
    let mut okm = Zeroizing::new([0u8; 2 * HASH_LEN]);
    hkdf.expand(&[], okm.as_mut_slice())
        .map_err(|_| NoiseError::Internal("HKDF output length"))?;
    let (out1, out2) = okm.split_at(HASH_LEN);
    let out1 = out1
        .try_into()
        .map_err(|_| NoiseError::Internal("HKDF output split"))?;
    let out2 = out2
        .try_into()
        .map_err(|_| NoiseError::Internal("HKDF output split"))?;
    Ok((out1, out2))
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
    fn hkdf_is_the_noise_construction() {
        use hmac::{Mac, SimpleHmac};
        fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; HASH_LEN] {
            let mut mac = <SimpleHmac<Blake2b512> as Mac>::new_from_slice(key).unwrap();
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().into()
        }
        // Noise: prk = HMAC(ck, ikm), output 1 = HMAC(prk, 0x01), output 2 = HMAC(prk, out1 ‖ 0x02)
        for (ck, ikm) in [(&[7u8; 64][..], &b"ikm"[..]), (&[9u8; 64][..], &[][..])] {
            let (a, b) = hkdf2(ck, ikm).unwrap();
            let prk = hmac(ck, &[ikm]);
            assert_eq!(a, hmac(&prk, &[&[1]]));
            assert_eq!(b, hmac(&prk, &[&a, &[2]]));
            assert_ne!(a, b);
        }
    }
}
