//! Errors of the policy: actor ids, `--allow` entries, the remembered-keys file. Refusals of
//! offers and claims are not errors but decisions
//! ([`ReceiveRejection`](super::ReceiveRejection), [`ClaimRejection`](super::ClaimRejection)).

use std::io;
use std::path::PathBuf;

/// An actor id is not usable (empty, too long, or with whitespace or control characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActorIdError {
    /// The id is empty.
    #[error("an actor id must not be empty")]
    Empty,
    /// The id is longer than [`MAX_ACTOR_ID_BYTES`](crate::policy::MAX_ACTOR_ID_BYTES).
    #[error("an actor id is at most {max} bytes, got {len}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The id contains whitespace or a control character.
    #[error("an actor id must not contain whitespace or control characters (found {found:?})")]
    BadChar {
        /// The first offending character.
        found: char,
    },
}

/// An `--allow` entry could not be parsed ([`AllowEntry`](crate::policy::AllowEntry)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseAllowError {
    /// The part before `=` (or the whole entry) is not a valid actor id.
    #[error("invalid actor id in allow entry {entry:?}")]
    ActorId {
        /// The entry as given.
        entry: String,
        /// Why.
        source: ActorIdError,
    },
    /// The part after `=` is not a 64-character hex public key.
    #[error("the key in allow entry {entry:?} is not 64 hex characters")]
    Key {
        /// The entry as given.
        entry: String,
    },
}

/// Reading or writing the remembered-keys file failed ([`KnownKeys`](crate::policy::KnownKeys)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnownKeysError {
    /// The file exists but could not be read.
    #[error("cannot read remembered keys from {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is larger than the limit.
    #[error("remembered-keys file {path} is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file could not be written.
    #[error("cannot write remembered keys to {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}
