//! Hash helpers every layer shares: keyed BLAKE2b-256 as libsodium's `crypto_generichash`
//! computes it (stream ids, HyperDHT holepunch secrets, dht-rpc address tokens).

use blake2::Blake2bMac;
use blake2::digest::Mac;
use blake2::digest::consts::U32;

/// Keyed BLAKE2b-256 over the concatenation of `parts`: libsodium
/// `crypto_generichash(out32, parts…, key)`. The key has a fixed size of 1 to 64 bytes, checked
/// when the program is compiled, so there is no error and no fallback.
///
/// ```
/// use ats_p2p_swarm::crypto::keyed_blake2b_256;
/// let a = keyed_blake2b_256(&[7u8; 32], &[b"hello ", b"world"]);
/// assert_eq!(a, keyed_blake2b_256(&[7u8; 32], &[b"hello world"]));
/// assert_ne!(a, keyed_blake2b_256(&[7u8; 64], &[b"hello world"]));
/// ```
pub fn keyed_blake2b_256<const N: usize>(key: &[u8; N], parts: &[&[u8]]) -> [u8; 32] {
    const { assert!(N >= 1 && N <= 64, "a BLAKE2b key has 1 to 64 bytes") };
    // BLAKE2b refuses only keys longer than 64 bytes (and salts or personalisations longer than
    // 16), which the assertion above rules out at compile time.
    #[allow(clippy::expect_used)]
    let mut mac = Blake2bMac::<U32>::new_with_salt_and_personal(key, &[], &[])
        .expect("key length checked at compile time");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_keyed_blake2b() {
        // python3: hashlib.blake2b(b'abc', key=bytes([1]*32), digest_size=32) (RFC 7693 keyed
        // BLAKE2b, which libsodium's crypto_generichash computes), and with a 64-byte key.
        assert_eq!(
            hex::encode(keyed_blake2b_256(&[1u8; 32], &[b"a", b"bc"])),
            "8cc77af752046919e25cca7b87a17aaa67fb6aad75964f730a1c2178c986505c"
        );
        assert_eq!(
            hex::encode(keyed_blake2b_256(&[2u8; 64], &[b"abc"])),
            "9eb8ffb0c5e4e2d431d0cfc81de46f1834f11654a27f5d30aa6d16c0c309dac4"
        );
    }
}
