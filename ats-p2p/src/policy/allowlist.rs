//! Allowlist entries from the command line and the allowlist check.

use std::fmt;
use std::str::FromStr;

use ats_p2p_swarm::PublicKey;

use super::ParseAllowError;
use super::{PeerRejection, parse_key_hex, validate_actor_id};

/// One allowlist entry, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// `agent-b`: this actor id, with whatever key it announces (subject to [`KnownKeys`](super::KnownKeys)).
    Actor(String),
    /// `agent-b=<64 hex>`: this actor id, only with this key.
    Pinned {
        /// The actor id.
        actor: String,
        /// The only key accepted for it.
        key: PublicKey,
    },
}

impl AllowEntry {
    /// The actor id the entry is about.
    pub fn actor(&self) -> &str {
        match self {
            Self::Actor(a) | Self::Pinned { actor: a, .. } => a,
        }
    }
}

impl FromStr for AllowEntry {
    type Err = ParseAllowError;

    /// Parses `actor` or `actor=<64 hex key>` (the issue's `id=<hex key>` form: `id` stands for
    /// the actor id). Surrounding whitespace is ignored; the key may be upper or lower case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry = s.trim();
        let (actor, key) = match entry.split_once('=') {
            Some((a, k)) => (a.trim(), Some(k.trim())),
            None => (entry, None),
        };
        validate_actor_id(actor).map_err(|source| ParseAllowError::ActorId {
            entry: entry.to_owned(),
            source,
        })?;
        match key {
            None => Ok(Self::Actor(actor.to_owned())),
            Some(k) => {
                let key = parse_key_hex(k).ok_or_else(|| ParseAllowError::Key {
                    entry: entry.to_owned(),
                })?;
                Ok(Self::Pinned {
                    actor: actor.to_owned(),
                    key,
                })
            }
        }
    }
}

impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Actor(a) => f.write_str(a),
            Self::Pinned { actor, key } => write!(f, "{actor}={key}"),
        }
    }
}

/// The peers we deal with. Empty means every actor id (keys are still checked against
/// [`KnownKeys`](super::KnownKeys)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: Vec<AllowEntry>,
}

/// Why a peer passed the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedBy {
    /// The allowlist is empty: anyone may.
    Open,
    /// The actor id is listed without a key.
    Actor,
    /// The actor id is listed with this very key.
    PinnedKey,
}

impl Allowlist {
    /// An allowlist of these entries.
    pub fn new(entries: Vec<AllowEntry>) -> Self {
        Self { entries }
    }

    /// Parses CLI values; each may hold several entries separated by commas
    /// (`--allow agent-b --allow agent-c=<hex>,agent-d`). Empty pieces are skipped.
    pub fn parse<I, S>(values: I) -> Result<Self, ParseAllowError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut entries = Vec::new();
        for value in values {
            for piece in value.as_ref().split(',') {
                if !piece.trim().is_empty() {
                    entries.push(piece.parse()?);
                }
            }
        }
        Ok(Self { entries })
    }

    /// The entries.
    pub fn entries(&self) -> &[AllowEntry] {
        &self.entries
    }

    /// True when the list is empty and so allows every actor id.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `actor` with `key` is allowed. If any entry pins a key for `actor`, the key must be
    /// one of the pinned ones, even when the bare id is listed too.
    pub fn check(&self, actor: &str, key: &PublicKey) -> Result<AllowedBy, PeerRejection> {
        let mut listed = false;
        let mut pinned = false;
        for entry in self.entries.iter().filter(|e| e.actor() == actor) {
            match entry {
                AllowEntry::Actor(_) => listed = true,
                AllowEntry::Pinned { key: k, .. } => {
                    if k == key {
                        return Ok(AllowedBy::PinnedKey);
                    }
                    pinned = true;
                }
            }
        }
        if pinned {
            Err(PeerRejection::KeyMismatch {
                actor: actor.to_owned(),
                offered: *key,
            })
        } else if listed {
            Ok(AllowedBy::Actor)
        } else if self.is_open() {
            Ok(AllowedBy::Open)
        } else {
            Err(PeerRejection::NotAllowed {
                actor: actor.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ActorIdError;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    #[test]
    fn parse_allow_entries() {
        let k = key(0xab);
        assert_eq!(
            "agent-b".parse::<AllowEntry>().unwrap(),
            AllowEntry::Actor("agent-b".into())
        );
        let pinned: AllowEntry = format!(" agent-b = {} ", k.to_hex().to_uppercase())
            .parse()
            .unwrap();
        assert_eq!(
            pinned,
            AllowEntry::Pinned {
                actor: "agent-b".into(),
                key: k
            }
        );
        assert_eq!(pinned.to_string(), format!("agent-b={}", k.to_hex()));
        assert_eq!(pinned.to_string().parse::<AllowEntry>().unwrap(), pinned);
        // `id=<hex>`: the actor id is whatever stands before `=`.
        let id_pin: AllowEntry = format!("id={}", k.to_hex()).parse().unwrap();
        assert_eq!(id_pin.actor(), "id");

        assert!(matches!(
            "".parse::<AllowEntry>(),
            Err(ParseAllowError::ActorId {
                source: ActorIdError::Empty,
                ..
            })
        ));
        assert!(matches!(
            format!("={}", k.to_hex()).parse::<AllowEntry>(),
            Err(ParseAllowError::ActorId { .. })
        ));
        for bad_key in [
            "",
            "abc",
            &"zz".repeat(32),
            &"ab".repeat(33),
            &"ab".repeat(31),
        ] {
            assert!(
                matches!(
                    format!("agent-b={bad_key}").parse::<AllowEntry>(),
                    Err(ParseAllowError::Key { .. })
                ),
                "{bad_key:?}"
            );
        }
        assert!("a=b=c".parse::<AllowEntry>().is_err());
    }

    #[test]
    fn parse_allowlist_values() {
        let k = key(1);
        let list = Allowlist::parse([
            "agent-b".to_owned(),
            format!("agent-c={},agent-d, ,", k.to_hex()),
        ])
        .unwrap();
        assert_eq!(list.entries().len(), 3);
        assert!(!list.is_open());
        assert!(Allowlist::parse(Vec::<String>::new()).unwrap().is_open());
        assert!(Allowlist::parse(["ok", "bad id"]).is_err());
    }

    #[test]
    fn allowlist_decisions() {
        let (k1, k2) = (key(1), key(2));
        let open = Allowlist::default();
        assert_eq!(open.check("anyone", &k1), Ok(AllowedBy::Open));

        let list = Allowlist::parse([
            "agent-b".to_owned(),
            format!("agent-c={}", k1.to_hex()),
            format!("agent-d={}", k1.to_hex()),
            "agent-d".to_owned(),
        ])
        .unwrap();
        assert_eq!(list.check("agent-b", &k2), Ok(AllowedBy::Actor));
        assert_eq!(list.check("agent-c", &k1), Ok(AllowedBy::PinnedKey));
        let err = list.check("agent-c", &k2).unwrap_err();
        assert_eq!(err.code(), "key_mismatch");
        // A pin wins over a bare entry for the same id.
        assert!(list.check("agent-d", &k2).is_err());
        assert_eq!(list.check("agent-d", &k1), Ok(AllowedBy::PinnedKey));
        let err = list.check("agent-x", &k1).unwrap_err();
        assert_eq!(
            err,
            PeerRejection::NotAllowed {
                actor: "agent-x".into()
            }
        );
        assert_eq!(err.to_string(), "agent-x is not on the allowlist");
        // Actor ids are compared exactly.
        assert!(list.check("Agent-B", &k1).is_err());
    }
}
