//! Who may send to us, whom we send to, and what we accept: plain data and pure functions.
//!
//! ATS actor headers are not authentication (anyone can say they are `agent-b`), so a peer is
//! judged by its actor id **and** the Hyperswarm key it announced through the task:
//!
//! - an [`Allowlist`] of actor ids (`agent-b`) and pinned keys (`agent-b=<64 hex>`); an empty
//!   list allows every actor id;
//! - [`KnownKeys`], remembered like SSH's `known_hosts`: the key of the first **verified**
//!   transfer with an actor id is remembered (the node records it only after the file's SHA-256
//!   matched and it was stored, or the receiver ACKed it; never when an offer or claim merely
//!   names a key), and a different key later is refused unless changed keys are explicitly
//!   allowed. An explicit pin in the allowlist overrides what was remembered.
//!
//! [`ReceivePolicy::decide`] judges an incoming offer (peer, size, free space);
//! [`SendPolicy::decide_claim`] judges whoever claimed our offer (must be the named recipient,
//! with a valid key for this transfer). Refusals are typed values with a stable
//! [`code`](ReceiveRejection::code) and a human reason (their `Display`) that becomes the ATS reject
//! or fail reason. The only I/O here is [`KnownKeys::load`] and [`KnownKeys::save`] (blocking).

use ats_p2p_swarm::PublicKey;

mod allowlist;
mod decide;
mod error;
mod known_keys;

pub use allowlist::{AllowEntry, AllowedBy, Allowlist};
pub use decide::{
    ClaimFacts, ClaimRejection, KeyUpdate, OfferFacts, PeerApproval, PeerPolicy, PeerRejection,
    ReceivePolicy, ReceiveRejection, SendPolicy,
};
pub use error::{ActorIdError, KnownKeysError, ParseAllowError};
pub use known_keys::{KeyCheck, KnownKeys, MAX_KNOWN_KEYS_FILE_BYTES};

/// Longest accepted actor id in bytes: ids are short names, and the bound keeps remembered-key
/// files and reasons small.
pub const MAX_ACTOR_ID_BYTES: usize = 256;

/// Free space that must remain after a received file is written: the disk stays usable for the
/// rest of the system, and file-system overhead is covered.
pub const DEFAULT_FREE_SPACE_MARGIN: u64 = 64 * 1024 * 1024;

/// Checks that `id` can be an actor id here: 1 to [`MAX_ACTOR_ID_BYTES`] bytes, no whitespace, no
/// control characters (so it fits one field of a remembered-keys line and one log field).
pub fn validate_actor_id(id: &str) -> Result<(), ActorIdError> {
    if id.is_empty() {
        return Err(ActorIdError::Empty);
    }
    if id.len() > MAX_ACTOR_ID_BYTES {
        return Err(ActorIdError::TooLong {
            len: id.len(),
            max: MAX_ACTOR_ID_BYTES,
        });
    }
    if let Some(found) = id.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ActorIdError::BadChar { found });
    }
    Ok(())
}

/// Parses exactly 64 hex characters into a key.
pub(crate) fn parse_key_hex(s: &str) -> Option<PublicKey> {
    if s.len() != 64 {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_ids() {
        assert!(validate_actor_id("agent-b").is_ok());
        assert!(validate_actor_id("agent.b@host:1").is_ok());
        assert_eq!(validate_actor_id(""), Err(ActorIdError::Empty));
        assert_eq!(
            validate_actor_id("a b"),
            Err(ActorIdError::BadChar { found: ' ' })
        );
        assert_eq!(
            validate_actor_id("a\u{0}"),
            Err(ActorIdError::BadChar { found: '\u{0}' })
        );
        assert!(matches!(
            validate_actor_id(&"x".repeat(MAX_ACTOR_ID_BYTES + 1)),
            Err(ActorIdError::TooLong { .. })
        ));
        assert!(validate_actor_id(&"x".repeat(MAX_ACTOR_ID_BYTES)).is_ok());
    }
}
