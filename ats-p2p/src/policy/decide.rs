//! The decisions: a peer (allowlist, then remembered keys), an incoming offer (receiver), and a
//! claim of our offer (sender).

use ats_p2p_swarm::PublicKey;

use super::ActorIdError;
use super::{
    AllowedBy, Allowlist, DEFAULT_FREE_SPACE_MARGIN, KeyCheck, KnownKeys, parse_key_hex,
    validate_actor_id,
};

/// What to do with the remembered key of an approved peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUpdate {
    /// Already remembered; nothing to do.
    Keep,
    /// First key seen for this actor id: remember it.
    Remember,
    /// A different key was remembered and is now replaced (changed keys allowed, or pinned).
    Replace {
        /// The key remembered before.
        old: PublicKey,
    },
}

/// A peer that passed [`PeerPolicy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerApproval {
    /// The key the peer will be held to on the swarm.
    pub key: PublicKey,
    /// Why the allowlist let it through.
    pub allowed_by: AllowedBy,
    /// How [`KnownKeys`] should change ([`KnownKeys::apply`]).
    pub key_update: KeyUpdate,
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerRejection {
    /// The actor id is malformed.
    #[error("invalid actor id: {0}")]
    InvalidActorId(ActorIdError),
    /// The allowlist does not name this actor id.
    #[error("{actor} is not on the allowlist")]
    NotAllowed {
        /// The actor id.
        actor: String,
    },
    /// The allowlist pins other keys for this actor id.
    #[error("key {offered} is not the key pinned for {actor}")]
    KeyMismatch {
        /// The actor id.
        actor: String,
        /// The key it announced.
        offered: PublicKey,
    },
    /// A different key was remembered for this actor id, and changed keys are not allowed.
    #[error(
        "key for {actor} changed from {remembered} to {offered}; refusing (allow changed keys to accept)"
    )]
    KeyChanged {
        /// The actor id.
        actor: String,
        /// The key remembered.
        remembered: PublicKey,
        /// The key it announced now.
        offered: PublicKey,
    },
}

impl PeerRejection {
    /// A stable snake_case code for scripts and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidActorId(_) => "invalid_actor_id",
            Self::NotAllowed { .. } => "not_allowed",
            Self::KeyMismatch { .. } => "key_mismatch",
            Self::KeyChanged { .. } => "key_changed",
        }
    }
}

/// The checks both sides apply to a peer: allowlist, then remembered keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Actor ids and pinned keys.
    pub allowlist: Allowlist,
    /// Accept a key that differs from the remembered one (and remember the new one).
    pub accept_changed_keys: bool,
}

impl PeerPolicy {
    /// Judges `actor` announcing `key`. A key pinned in the allowlist wins over a remembered one.
    pub fn check(
        &self,
        known: &KnownKeys,
        actor: &str,
        key: &PublicKey,
    ) -> Result<PeerApproval, PeerRejection> {
        validate_actor_id(actor).map_err(PeerRejection::InvalidActorId)?;
        let allowed_by = self.allowlist.check(actor, key)?;
        let key_update = match known.check(actor, key) {
            KeyCheck::Known => KeyUpdate::Keep,
            KeyCheck::New => KeyUpdate::Remember,
            KeyCheck::Changed { remembered }
                if self.accept_changed_keys || allowed_by == AllowedBy::PinnedKey =>
            {
                KeyUpdate::Replace { old: remembered }
            }
            KeyCheck::Changed { remembered } => {
                return Err(PeerRejection::KeyChanged {
                    actor: actor.to_owned(),
                    remembered,
                    offered: *key,
                });
            }
        };
        Ok(PeerApproval {
            key: *key,
            allowed_by,
            key_update,
        })
    }
}

/// The receiver's rules for incoming offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivePolicy {
    /// Who may send.
    pub peer: PeerPolicy,
    /// Largest accepted file in bytes; `None` for no limit.
    pub max_size: Option<u64>,
    /// Bytes that must stay free after the file is written.
    pub free_space_margin: u64,
}

impl Default for ReceivePolicy {
    fn default() -> Self {
        Self {
            peer: PeerPolicy::default(),
            max_size: None,
            free_space_margin: DEFAULT_FREE_SPACE_MARGIN,
        }
    }
}

/// The facts of an incoming offer that the receive policy judges.
#[derive(Debug, Clone, Copy)]
pub struct OfferFacts<'a> {
    /// The offer's `sender_id` (the task creator).
    pub sender_id: &'a str,
    /// The offer's `sender_key`, already parsed.
    pub sender_key: &'a PublicKey,
    /// The offer's `size` in bytes.
    pub size: u64,
    /// Free bytes in the save directory ([`available_space`](crate::save::available_space)),
    /// or `None` when unknown (the check is then skipped).
    pub available_space: Option<u64>,
}

/// Why an incoming offer was refused; its `Display` is the reject reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveRejection {
    /// The sender failed the peer checks.
    #[error(transparent)]
    Peer(#[from] PeerRejection),
    /// The file is larger than allowed.
    #[error("file of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The offered size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// Not enough free disk space.
    #[error("not enough disk space: {needed} bytes needed, {available} available")]
    InsufficientSpace {
        /// Size plus margin.
        needed: u64,
        /// What is free, less what transfers already running still need.
        available: u64,
    },
    /// The receiver runs as many transfers as it allows and its queue of waiting offers is
    /// full.
    #[error(
        "receiver busy: {running} transfers running and {queued} offers waiting; try again later"
    )]
    Busy {
        /// Transfers received at once.
        running: usize,
        /// Offers waiting for a slot.
        queued: usize,
    },
}

impl ReceiveRejection {
    /// A stable snake_case code for scripts and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Peer(p) => p.code(),
            Self::TooLarge { .. } => "too_large",
            Self::InsufficientSpace { .. } => "insufficient_space",
            Self::Busy { .. } => "busy",
        }
    }
}

impl ReceivePolicy {
    /// Judges an offer: the sender (allowlist, remembered keys), then the size, then free space.
    pub fn decide(
        &self,
        known: &KnownKeys,
        offer: &OfferFacts<'_>,
    ) -> Result<PeerApproval, ReceiveRejection> {
        let approval = self.peer.check(known, offer.sender_id, offer.sender_key)?;
        self.check_size(offer.size)?;
        if let Some(available) = offer.available_space {
            self.check_space(offer.size, available)?;
        }
        Ok(approval)
    }

    /// The free-space check alone: `size` plus the margin must fit in `available` bytes (for
    /// checking again when the save directory is known).
    pub fn check_space(&self, size: u64, available: u64) -> Result<(), ReceiveRejection> {
        // An overflowing sum cannot fit on any disk.
        let needed = size.checked_add(self.free_space_margin);
        if needed.is_none_or(|n| n > available) {
            let needed = needed.unwrap_or(u64::MAX);
            return Err(ReceiveRejection::InsufficientSpace { needed, available });
        }
        Ok(())
    }

    /// The size check alone, for enforcing the limit again on the wire.
    pub fn check_size(&self, size: u64) -> Result<(), ReceiveRejection> {
        match self.max_size {
            Some(max) if size > max => Err(ReceiveRejection::TooLarge { size, max }),
            _ => Ok(()),
        }
    }
}

/// The sender's rules for whoever claimed its offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendPolicy {
    /// Allowlist and remembered keys, applied to the claimer.
    pub peer: PeerPolicy,
}

/// The facts of a claim and its accept message that the send policy judges.
#[derive(Debug, Clone, Copy)]
pub struct ClaimFacts<'a> {
    /// Our offer's transfer id (32 hex).
    pub transfer_id: &'a str,
    /// The offer's `recipient_id`.
    pub recipient_id: &'a str,
    /// The actor id that claimed the task.
    pub claimer_id: &'a str,
    /// `transfer_id` from the accept message.
    pub accept_transfer_id: &'a str,
    /// `receiver_key` from the accept message, unparsed.
    pub receiver_key: &'a str,
}

/// Why the sender refuses a claim; its `Display` is the fail reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimRejection {
    /// Someone other than the named recipient claimed the offer.
    #[error("offer claimed by {claimer}, not by the recipient {recipient}")]
    WrongClaimer {
        /// The named recipient.
        recipient: String,
        /// Who claimed.
        claimer: String,
    },
    /// The accept message is for another transfer.
    #[error("accept message is for transfer {got}, not {expected}")]
    TransferIdMismatch {
        /// Ours.
        expected: String,
        /// The message's.
        got: String,
    },
    /// The accept message's key is not 64 hex characters.
    #[error("accept message has no valid receiver key")]
    BadReceiverKey,
    /// The recipient failed the peer checks.
    #[error(transparent)]
    Peer(#[from] PeerRejection),
}

impl ClaimRejection {
    /// A stable snake_case code for scripts and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongClaimer { .. } => "wrong_claimer",
            Self::TransferIdMismatch { .. } => "transfer_id_mismatch",
            Self::BadReceiverKey => "bad_receiver_key",
            Self::Peer(p) => p.code(),
        }
    }
}

impl SendPolicy {
    /// Judges a claim: it must come from the named recipient, be for this transfer, carry a valid
    /// key, and that key must pass the peer checks. The approval's key is the only key the
    /// sender's swarm firewall lets in.
    pub fn decide_claim(
        &self,
        known: &KnownKeys,
        claim: &ClaimFacts<'_>,
    ) -> Result<PeerApproval, ClaimRejection> {
        if claim.claimer_id != claim.recipient_id {
            return Err(ClaimRejection::WrongClaimer {
                recipient: claim.recipient_id.to_owned(),
                claimer: claim.claimer_id.to_owned(),
            });
        }
        if !claim
            .accept_transfer_id
            .eq_ignore_ascii_case(claim.transfer_id)
        {
            return Err(ClaimRejection::TransferIdMismatch {
                expected: claim.transfer_id.to_owned(),
                got: claim.accept_transfer_id.to_owned(),
            });
        }
        let key = parse_key_hex(claim.receiver_key.trim()).ok_or(ClaimRejection::BadReceiverKey)?;
        Ok(self.peer.check(known, claim.claimer_id, &key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    #[test]
    fn trust_on_first_use() {
        let (k1, k2) = (key(1), key(2));
        let policy = PeerPolicy::default();
        let mut known = KnownKeys::in_memory();

        let first = policy.check(&known, "agent-b", &k1).unwrap();
        assert_eq!(first.key_update, KeyUpdate::Remember);
        assert!(known.apply("agent-b", &first).unwrap());
        assert_eq!(known.check("agent-b", &k1), KeyCheck::Known);

        let again = policy.check(&known, "agent-b", &k1).unwrap();
        assert_eq!(again.key_update, KeyUpdate::Keep);
        assert!(!known.apply("agent-b", &again).unwrap());

        let err = policy.check(&known, "agent-b", &k2).unwrap_err();
        assert_eq!(
            err,
            PeerRejection::KeyChanged {
                actor: "agent-b".into(),
                remembered: k1,
                offered: k2
            }
        );
        assert_eq!(err.code(), "key_changed");

        let lenient = PeerPolicy {
            accept_changed_keys: true,
            ..PeerPolicy::default()
        };
        let changed = lenient.check(&known, "agent-b", &k2).unwrap();
        assert_eq!(changed.key_update, KeyUpdate::Replace { old: k1 });
        known.apply("agent-b", &changed).unwrap();
        assert_eq!(known.get("agent-b"), Some(&k2));

        // An explicit pin overrides the remembered key.
        let pinned = PeerPolicy {
            allowlist: Allowlist::parse([format!("agent-b={}", k1.to_hex())]).unwrap(),
            accept_changed_keys: false,
        };
        let approval = pinned.check(&known, "agent-b", &k1).unwrap();
        assert_eq!(approval.key_update, KeyUpdate::Replace { old: k2 });
        assert_eq!(approval.allowed_by, AllowedBy::PinnedKey);

        // Malformed actor ids from the network are refused, not remembered.
        let err = policy.check(&known, "bad id", &k1).unwrap_err();
        assert_eq!(err.code(), "invalid_actor_id");
    }

    #[test]
    fn receive_decisions() {
        let k = key(7);
        let known = KnownKeys::in_memory();
        let policy = ReceivePolicy {
            peer: PeerPolicy {
                allowlist: Allowlist::parse(["agent-a"]).unwrap(),
                accept_changed_keys: false,
            },
            max_size: Some(1000),
            free_space_margin: 100,
        };
        let offer = |sender_id, size, available_space| OfferFacts {
            sender_id,
            sender_key: &k,
            size,
            available_space,
        };
        assert!(
            policy
                .decide(&known, &offer("agent-a", 1000, Some(1100)))
                .is_ok()
        );
        assert!(policy.decide(&known, &offer("agent-a", 1000, None)).is_ok());
        let e = policy
            .decide(&known, &offer("agent-a", 1001, None))
            .unwrap_err();
        assert_eq!(
            e,
            ReceiveRejection::TooLarge {
                size: 1001,
                max: 1000
            }
        );
        assert_eq!(e.code(), "too_large");
        assert_eq!(
            e.to_string(),
            "file of 1001 bytes exceeds the limit of 1000 bytes"
        );
        let e = policy
            .decide(&known, &offer("agent-a", 1000, Some(1099)))
            .unwrap_err();
        assert_eq!(
            e,
            ReceiveRejection::InsufficientSpace {
                needed: 1100,
                available: 1099
            }
        );
        assert_eq!(e.code(), "insufficient_space");
        // The sender is judged first.
        let e = policy
            .decide(&known, &offer("agent-z", u64::MAX, Some(0)))
            .unwrap_err();
        assert_eq!(e.code(), "not_allowed");
        assert_eq!(e.to_string(), "agent-z is not on the allowlist");
        // No overflow on huge sizes.
        let unlimited = ReceivePolicy::default();
        let e = unlimited
            .decide(&known, &offer("x", u64::MAX, Some(u64::MAX)))
            .unwrap_err();
        assert_eq!(e.code(), "insufficient_space");
        assert!(unlimited.check_size(u64::MAX).is_ok());
    }

    #[test]
    fn claim_decisions() {
        let k = key(9);
        let hex_key = k.to_hex();
        let tid = "00112233445566778899aabbccddeeff";
        let known = KnownKeys::in_memory();
        let policy = SendPolicy::default();
        let claim = ClaimFacts {
            transfer_id: tid,
            recipient_id: "agent-b",
            claimer_id: "agent-b",
            accept_transfer_id: tid,
            receiver_key: &hex_key,
        };
        let ok = policy.decide_claim(&known, &claim).unwrap();
        assert_eq!(ok.key, k);

        let e = policy
            .decide_claim(
                &known,
                &ClaimFacts {
                    claimer_id: "mallory",
                    ..claim
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), "wrong_claimer");
        assert_eq!(
            e.to_string(),
            "offer claimed by mallory, not by the recipient agent-b"
        );
        let e = policy
            .decide_claim(
                &known,
                &ClaimFacts {
                    accept_transfer_id: "ffffffffffffffffffffffffffffffff",
                    ..claim
                },
            )
            .unwrap_err();
        assert_eq!(e.code(), "transfer_id_mismatch");
        for bad in ["", "nothex", &hex_key[..62]] {
            let e = policy
                .decide_claim(
                    &known,
                    &ClaimFacts {
                        receiver_key: bad,
                        ..claim
                    },
                )
                .unwrap_err();
            assert_eq!(e, ClaimRejection::BadReceiverKey);
        }
        // The sender's allowlist pins apply to the claimer.
        let pinned = SendPolicy {
            peer: PeerPolicy {
                allowlist: Allowlist::parse([format!("agent-b={}", key(1).to_hex())]).unwrap(),
                accept_changed_keys: false,
            },
        };
        assert_eq!(
            pinned.decide_claim(&known, &claim).unwrap_err().code(),
            "key_mismatch"
        );
    }
}
