//! The swarm topic of a transfer: BLAKE2b-256 over [`TOPIC_DOMAIN`] followed by the 16 bytes of
//! the transfer id.
//!
//! Anyone who can read the task can compute the topic; that is fine, because each side only
//! talks to the key the other announced through the task (see `design.md`).

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

/// Domain-separation prefix of the topic hash, version 1.
pub const TOPIC_DOMAIN: &[u8] = b"ats-p2p/v1/topic";

/// Length of a transfer id in bytes.
pub const TRANSFER_ID_LEN: usize = 16;

/// The 32-byte Hyperswarm topic both peers join for the transfer `transfer_id`.
///
/// ```
/// use ats_p2p::topic::transfer_topic;
/// let id: [u8; 16] = core::array::from_fn(|i| i as u8);
/// assert_eq!(
///     hex::encode(transfer_topic(&id)),
///     "ac8e33e2727f4057f4b2f0d7fe3fee22135302f077d46671d5c06b7ed702a86b",
/// );
/// ```
pub fn transfer_topic(transfer_id: &[u8; TRANSFER_ID_LEN]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(TOPIC_DOMAIN);
    h.update(transfer_id);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed independently of this crate:
    ///
    /// ```text
    /// $ { printf 'ats-p2p/v1/topic'; python3 -c "import sys;sys.stdout.buffer.write(bytes(range(16)))"; } | b2sum -l 256
    /// ac8e33e2727f4057f4b2f0d7fe3fee22135302f077d46671d5c06b7ed702a86b  -
    /// $ python3 -c "import hashlib;print(hashlib.blake2b(b'ats-p2p/v1/topic'+bytes.fromhex('5f0c'*8),digest_size=32).hexdigest())"
    /// 2bfd2fd0a18f8f33c51f004cc1e814c8fcbe4f3f98aa24e7fbc5b57f885ce4fc
    /// ```
    #[test]
    fn fixed_vectors() {
        let id: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(
            hex::encode(transfer_topic(&id)),
            "ac8e33e2727f4057f4b2f0d7fe3fee22135302f077d46671d5c06b7ed702a86b"
        );
        let mut id = [0u8; 16];
        hex::decode_to_slice("5f0c".repeat(8), &mut id).unwrap();
        assert_eq!(
            hex::encode(transfer_topic(&id)),
            "2bfd2fd0a18f8f33c51f004cc1e814c8fcbe4f3f98aa24e7fbc5b57f885ce4fc"
        );
    }

    #[test]
    fn distinct_ids_give_distinct_topics() {
        let a = transfer_topic(&[0u8; 16]);
        let b = transfer_topic(&[1u8; 16]);
        assert_ne!(a, b);
        assert_eq!(a, transfer_topic(&[0u8; 16]));
    }
}
