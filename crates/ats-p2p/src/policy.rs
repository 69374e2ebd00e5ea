//! Who may send to us, whom we send to, and what we accept: plain data and pure functions.
//!
//! ATS actor headers are not authentication (anyone can say they are `agent-b`), so a peer is
//! judged by its actor id **and** the Hyperswarm key it announced through the task:
//!
//! - an [`Allowlist`] of actor ids (`agent-b`) and pinned keys (`agent-b=<64 hex>`); an empty
//!   list allows every actor id;
//! - [`KnownKeys`], remembered like SSH's `known_hosts`: the first key seen for an actor id is
//!   remembered, and a different key later is refused unless changed keys are explicitly allowed.
//!   An explicit pin in the allowlist overrides what was remembered.
//!
//! [`ReceivePolicy::decide`] judges an incoming offer (peer, size, free space);
//! [`SendPolicy::decide_claim`] judges whoever claimed our offer (must be the named recipient,
//! with a valid key for this transfer). Refusals are typed values with a stable
//! [`code`](ReceiveRejection::code) and a human reason (their `Display`) that becomes the ATS reject
//! or fail reason. The only I/O here is [`KnownKeys::load`] and [`KnownKeys::save`] (blocking).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ats_p2p_swarm::PublicKey;

use crate::error::{ActorIdError, KnownKeysError, ParseAllowError};
use crate::fsutil;

/// Longest accepted actor id in bytes: ids are short names, and the bound keeps remembered-key
/// files and reasons small.
pub const MAX_ACTOR_ID_BYTES: usize = 256;

/// Largest remembered-keys file that is read: about ten thousand entries; a bigger file is not
/// ours or is corrupt.
pub const MAX_KNOWN_KEYS_FILE_BYTES: u64 = 1024 * 1024;

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

/// One allowlist entry, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// `agent-b`: this actor id, with whatever key it announces (subject to [`KnownKeys`]).
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

/// Parses exactly 64 hex characters into a key.
fn parse_key_hex(s: &str) -> Option<PublicKey> {
    if s.len() != 64 {
        return None;
    }
    s.parse().ok()
}

/// The peers we deal with. Empty means every actor id (keys are still checked against
/// [`KnownKeys`]).
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

/// What [`KnownKeys`] says about an actor id and a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No key is remembered for this actor id.
    New,
    /// The remembered key is this one.
    Known,
    /// A different key is remembered.
    Changed {
        /// The key remembered before.
        remembered: PublicKey,
    },
}

/// Keys remembered per actor id (trust on first use), optionally backed by a file.
///
/// The file is text, one `<actor id> <64 hex key>` per line, `#` comments; it is replaced
/// atomically on [`save`](Self::save) (mode 0600).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownKeys {
    path: Option<PathBuf>,
    keys: BTreeMap<String, PublicKey>,
}

impl KnownKeys {
    /// An empty store that is never written to disk (for ephemeral nodes and tests).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Where a node keeps its remembered keys by default:
    /// `<config dir>/ats-p2p/known_keys`, or `None` when the platform has no config directory.
    pub fn default_path() -> Option<PathBuf> {
        dirs::config_dir().map(|d| d.join("ats-p2p").join("known_keys"))
    }

    /// Loads the store from `path`; a missing file is an empty store that [`save`](Self::save)
    /// will create. Blocks.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, KnownKeysError> {
        let path = path.into();
        let read_err = |source| KnownKeysError::Read {
            path: path.clone(),
            source,
        };
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Self {
                    path: Some(path),
                    keys: BTreeMap::new(),
                });
            }
            Err(e) => return Err(read_err(e)),
        };
        let len = file.metadata().map_err(read_err)?.len();
        if len > MAX_KNOWN_KEYS_FILE_BYTES {
            return Err(KnownKeysError::TooLarge {
                path,
                len,
                max: MAX_KNOWN_KEYS_FILE_BYTES,
            });
        }
        let mut text = String::new();
        file.take(MAX_KNOWN_KEYS_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        let keys = parse_known_keys(&text).map_err(|(line, reason)| KnownKeysError::Parse {
            path: path.clone(),
            line,
            reason,
        })?;
        Ok(Self {
            path: Some(path),
            keys,
        })
    }

    /// The backing file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The key remembered for `actor`.
    pub fn get(&self, actor: &str) -> Option<&PublicKey> {
        self.keys.get(actor)
    }

    /// Compares `key` with what is remembered for `actor`.
    pub fn check(&self, actor: &str, key: &PublicKey) -> KeyCheck {
        match self.keys.get(actor) {
            None => KeyCheck::New,
            Some(k) if k == key => KeyCheck::Known,
            Some(k) => KeyCheck::Changed { remembered: *k },
        }
    }

    /// Remembers `key` for `actor` (replacing an older one); returns the key it replaced.
    /// Call [`save`](Self::save) to persist.
    pub fn remember(
        &mut self,
        actor: &str,
        key: PublicKey,
    ) -> Result<Option<PublicKey>, ActorIdError> {
        validate_actor_id(actor)?;
        Ok(self.keys.insert(actor.to_owned(), key))
    }

    /// Applies the key update of an approved peer; returns true when something changed (and so
    /// the store should be saved).
    pub fn apply(&mut self, actor: &str, approval: &PeerApproval) -> Result<bool, ActorIdError> {
        match approval.key_update {
            KeyUpdate::Keep => Ok(false),
            KeyUpdate::Remember | KeyUpdate::Replace { .. } => {
                self.remember(actor, approval.key)?;
                Ok(true)
            }
        }
    }

    /// Forgets `actor`; returns the key that was remembered.
    pub fn forget(&mut self, actor: &str) -> Option<PublicKey> {
        self.keys.remove(actor)
    }

    /// Number of remembered actor ids.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Remembered `(actor id, key)` pairs in actor-id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(a, k)| (a.as_str(), k))
    }

    /// Writes the store to its file atomically (creating the directory, mode 0700, if needed).
    /// Does nothing for an in-memory store. Blocks.
    pub fn save(&self) -> Result<(), KnownKeysError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let write_err = |source| KnownKeysError::Write {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::identity::create_private_dir(dir).map_err(write_err)?;
        }
        let mut text = String::from("# ats-p2p remembered keys: <actor id> <public key hex>\n");
        for (actor, key) in &self.keys {
            text.push_str(actor);
            text.push(' ');
            text.push_str(&key.to_hex());
            text.push('\n');
        }
        fsutil::write_atomically(path, text.as_bytes(), 0o600).map_err(write_err)
    }
}

/// Parses the remembered-keys text; errors carry a one-based line number.
fn parse_known_keys(text: &str) -> Result<BTreeMap<String, PublicKey>, (usize, &'static str)> {
    let mut keys = BTreeMap::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx.saturating_add(1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(actor), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err((lineno, "expected `<actor id> <64 hex key>`"));
        };
        validate_actor_id(actor).map_err(|_| (lineno, "invalid actor id"))?;
        let key = parse_key_hex(key).ok_or((lineno, "key is not 64 hex characters"))?;
        if keys.insert(actor.to_owned(), key).is_some() {
            return Err((lineno, "actor id listed twice"));
        }
    }
    Ok(keys)
}

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
        /// What is free.
        available: u64,
    },
}

impl ReceiveRejection {
    /// A stable snake_case code for scripts and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Peer(p) => p.code(),
            Self::TooLarge { .. } => "too_large",
            Self::InsufficientSpace { .. } => "insufficient_space",
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
            // An overflowing sum cannot fit on any disk.
            let needed = offer.size.checked_add(self.free_space_margin);
            if needed.is_none_or(|n| n > available) {
                let needed = needed.unwrap_or(u64::MAX);
                return Err(ReceiveRejection::InsufficientSpace { needed, available });
            }
        }
        Ok(approval)
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

    #[test]
    fn known_keys_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("known_keys");
        let mut store = KnownKeys::load(&path).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.path(), Some(path.as_path()));
        store.remember("agent-b", key(1)).unwrap();
        store.remember("agent-a", key(2)).unwrap();
        assert!(store.remember("bad id", key(3)).is_err());
        store.save().unwrap();

        let loaded = KnownKeys::load(&path).unwrap();
        assert_eq!(loaded, store);
        assert_eq!(
            loaded.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            ["agent-a", "agent-b"]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the file itself is left: the temporary file was renamed.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["known_keys"]);

        let mut changed = loaded.clone();
        assert_eq!(changed.forget("agent-a"), Some(key(2)));
        changed.save().unwrap();
        assert_eq!(KnownKeys::load(&path).unwrap().len(), 1);

        // In-memory stores never touch the disk.
        KnownKeys::in_memory().save().unwrap();
    }

    #[test]
    fn known_keys_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_keys");
        let k = key(4).to_hex();
        let cases = [
            (format!("agent-b {k} extra\n"), 1),
            ("# c\n\nagent-b\n".to_owned(), 3),
            ("agent-b nothex\n".to_owned(), 1),
            (format!("agent-b {k}\nagent-b {k}\n"), 2),
        ];
        for (text, line) in cases {
            fs::write(&path, &text).unwrap();
            match KnownKeys::load(&path) {
                Err(KnownKeysError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        fs::write(&path, format!("  # comment\n\n agent-b   {k}  \n")).unwrap();
        assert_eq!(KnownKeys::load(&path).unwrap().len(), 1);

        let big = vec![b'#'; (MAX_KNOWN_KEYS_FILE_BYTES + 1) as usize];
        fs::write(&path, big).unwrap();
        assert!(matches!(
            KnownKeys::load(&path),
            Err(KnownKeysError::TooLarge { .. })
        ));
    }
}
