//! Errors of the node's operations: starting, sending, receiving.

use std::io;
use std::path::PathBuf;

use crate::events::FailureKind;
use crate::hashing::HashError;
use crate::identity::IdentityError;
use crate::policy::{ActorIdError, KnownKeysError};
use crate::transfer::{StreamReceiveError, StreamSendError};

/// Starting a [`Node`](crate::node::Node) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The actor id cannot be used.
    #[error("invalid actor id {actor:?}")]
    ActorId {
        /// The id given.
        actor: String,
        /// Why.
        source: ActorIdError,
    },
    /// The node's key pair could not be loaded or created.
    #[error("cannot load the node's key pair")]
    Identity(#[source] IdentityError),
    /// The remembered-keys file could not be read.
    #[error("cannot load remembered keys")]
    KnownKeys(#[source] KnownKeysError),
    /// The ATS client could not be set up (bad URL, bad header value).
    #[error("cannot set up the ATS client")]
    Signal(#[source] ats_p2p_signal::SignalError),
    /// No bootstrap address could be resolved to an IPv4 address.
    #[error("no usable DHT bootstrap node among {given:?}")]
    NoBootstrap {
        /// The addresses given.
        given: Vec<String>,
    },
    /// Binding the DHT node or listening failed.
    #[error("cannot start the swarm")]
    Swarm(#[source] ats_p2p_swarm::swarm::SwarmError),
    /// The DHT did not answer in time (bootstrap nodes unreachable).
    #[error("the DHT bootstrap nodes {bootstrap:?} did not answer within {waited:?}")]
    StartTimeout {
        /// The bootstrap nodes used.
        bootstrap: Vec<String>,
        /// How long we waited.
        waited: std::time::Duration,
    },
}

impl NodeError {
    /// The failure class.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::ActorId { .. } => FailureKind::Usage,
            Self::Identity(_) | Self::KnownKeys(_) => FailureKind::Io,
            Self::Signal(_) => FailureKind::Usage,
            Self::NoBootstrap { .. } | Self::Swarm(_) | Self::StartTimeout { .. } => {
                FailureKind::Network
            }
        }
    }

    /// A stable snake_case code naming the cause.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ActorId { .. } => "invalid_actor_id",
            Self::Identity(_) => "identity_failed",
            Self::KnownKeys(_) => "known_keys_failed",
            Self::Signal(_) => "ats_config",
            Self::NoBootstrap { .. } => "no_bootstrap",
            Self::Swarm(_) => "swarm_failed",
            Self::StartTimeout { .. } => "bootstrap_unreachable",
        }
    }
}

/// Sending a file with [`Node::send`](crate::node::Node::send) failed. The offer's task on ATS
/// shows the end too (cancelled by us, or rejected / failed by the receiver).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The recipient is not a valid actor id.
    #[error("invalid recipient {recipient:?}")]
    InvalidRecipient {
        /// The id given.
        recipient: String,
        /// Why.
        source: ActorIdError,
    },
    /// The path is not a regular file or a directory (or cannot be inspected).
    #[error("cannot send {path}: not a readable regular file or directory")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// Why, when the file system said.
        source: Option<io::Error>,
    },
    /// Hashing the file failed.
    #[error("cannot hash {path}")]
    Hash {
        /// The file.
        path: PathBuf,
        /// Why.
        source: HashError,
    },
    /// A directory could not be offered (unreadable, too many entries, a file unreadable).
    #[error("cannot offer the directory")]
    Tree(#[source] crate::tree::TreeError),
    /// An ATS request failed (server unreachable or refusing).
    #[error("ATS request failed while {doing}")]
    Signal {
        /// What we were doing.
        doing: &'static str,
        /// Why.
        source: ats_p2p_signal::SignalError,
    },
    /// The receiver accepted a directory offer, but its accept does not say it can take
    /// directories (an older ats-p2p): the offer is failed before any byte moves.
    #[error("the receiver cannot take directories (its ats-p2p is older); send an archive instead")]
    NoDirectorySupport,
    /// The recipient (or someone) rejected the offer.
    #[error("the offer was rejected: {reason}")]
    Declined {
        /// The reason on the task.
        reason: String,
    },
    /// The receiver failed the task before the transfer could finish.
    #[error("the receiver failed the transfer: {reason}")]
    FailedByReceiver {
        /// The reason on the task.
        reason: String,
    },
    /// The task was cancelled by someone else.
    #[error("the offer's task was cancelled")]
    TaskCancelled,
    /// The claim or its accept message was refused by our policy.
    #[error("refusing the claim")]
    Claim(#[source] crate::policy::ClaimRejection),
    /// Nobody claimed and accepted the offer in time; the task was cancelled.
    #[error("nobody accepted the offer within {0:?}")]
    NoAnswer(std::time::Duration),
    /// The recipient accepted but never connected in time.
    #[error("the recipient accepted but did not connect within {0:?}")]
    NoConnection(std::time::Duration),
    /// Remembering the recipient's key failed.
    #[error("cannot save remembered keys")]
    KnownKeys(#[source] KnownKeysError),
    /// Announcing on the transfer's topic failed.
    #[error("cannot announce on the swarm")]
    Swarm(#[source] ats_p2p_swarm::swarm::SwarmError),
    /// The transfer over the swarm failed.
    #[error("transfer failed")]
    Stream(#[source] StreamSendError),
    /// The receiver refused the bytes, and indeed the file no longer matches the offered
    /// SHA-256: it changed after it was hashed.
    #[error("{path} changed after it was offered; the receiver refused it")]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// The receiver's refusal.
        source: StreamSendError,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Cancelled,
}

impl SendError {
    /// The failure class (for events and exit codes).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::InvalidRecipient { .. } | Self::NotAFile { .. } => FailureKind::Usage,
            Self::Hash { .. } | Self::KnownKeys(_) | Self::Tree(_) => FailureKind::Io,
            Self::Signal { .. } | Self::Swarm(_) => FailureKind::Network,
            Self::Declined { .. } | Self::Claim(_) | Self::NoDirectorySupport => {
                FailureKind::Rejected
            }
            Self::FailedByReceiver { .. } => FailureKind::Network,
            Self::TaskCancelled | Self::Cancelled => FailureKind::Cancelled,
            Self::NoAnswer(_) | Self::NoConnection(_) => FailureKind::TimedOut,
            Self::Stream(e) => e.kind(),
            Self::FileChanged { .. } => FailureKind::Verification,
        }
    }

    /// A stable snake_case code naming the cause.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRecipient { .. } => "invalid_recipient",
            Self::NotAFile { .. } => "not_a_file",
            Self::Hash { .. } => "hash_failed",
            Self::Tree(crate::tree::TreeError::TooManyEntries { .. }) => "too_many_files",
            Self::Tree(_) => "directory_unreadable",
            Self::NoDirectorySupport => "no_directory_support",
            Self::Signal { .. } => "ats_unreachable",
            Self::Declined { .. } => "declined",
            Self::FailedByReceiver { .. } => "failed_by_receiver",
            Self::TaskCancelled => "task_cancelled",
            Self::Claim(e) => e.code(),
            Self::NoAnswer(_) => "no_answer",
            Self::NoConnection(_) => "no_connection",
            Self::KnownKeys(_) => "known_keys_failed",
            Self::Swarm(_) => "swarm_failed",
            Self::Stream(e) => e.code(),
            Self::FileChanged { .. } => "file_changed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Receiving an offered file failed ([`PendingOffer`](crate::node::PendingOffer) or an
/// automatic accept). The task on ATS was failed, rejected or released with the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// Our policy refused the offer (it was rejected on ATS with this reason).
    #[error("offer refused: {0}")]
    Refused(#[source] crate::policy::ReceiveRejection),
    /// Someone else holds the task, or it is no longer pending.
    #[error("cannot claim the offer")]
    Claim(#[source] ats_p2p_signal::SignalError),
    /// An ATS request failed.
    #[error("ATS request failed while {doing}")]
    Signal {
        /// What we were doing.
        doing: &'static str,
        /// Why.
        source: ats_p2p_signal::SignalError,
    },
    /// The sender did not appear on the transfer's topic or could not be reached in time.
    #[error("cannot reach the sender within {0:?}")]
    NoConnection(std::time::Duration),
    /// No path to the sender exists: no direct address answered, the holepunch could not
    /// work, and no relay carried the connection (the text says what was detected).
    #[error("cannot reach the sender: {0}")]
    NoPath(String),
    /// The task was closed (for example cancelled by the sender, who refused our claim) while
    /// we waited for the sender.
    #[error("the offer's task was closed ({0}) before the sender connected")]
    SenderGaveUp(String),
    /// Remembering the sender's key failed.
    #[error("cannot save remembered keys")]
    KnownKeys(#[source] KnownKeysError),
    /// Another receiver with our actor id (another process, or this node watching twice)
    /// accepted this transfer first; the sender takes only the first accept, so this one steps
    /// aside and leaves the task to it.
    #[error("another receiver with actor id {actor} accepted this transfer first")]
    AcceptedElsewhere {
        /// Our actor id.
        actor: String,
    },
    /// The transfer over the swarm failed.
    #[error("transfer failed")]
    Stream(#[source] StreamReceiveError),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Cancelled,
}

impl ReceiveError {
    /// The failure class (for events and exit codes).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Refused(_) | Self::Claim(_) => FailureKind::Rejected,
            Self::Signal { .. } | Self::NoConnection(_) | Self::NoPath(_) => FailureKind::Network,
            Self::SenderGaveUp(_) | Self::AcceptedElsewhere { .. } => FailureKind::Rejected,
            Self::KnownKeys(_) => FailureKind::Io,
            Self::Stream(e) => e.kind(),
            Self::Cancelled => FailureKind::Cancelled,
        }
    }

    /// A stable snake_case code naming the cause.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(r) => r.code(),
            Self::Claim(_) => "claim_conflict",
            Self::Signal { .. } => "ats_unreachable",
            Self::NoConnection(_) => "no_connection",
            Self::NoPath(_) => "no_path",
            Self::SenderGaveUp(_) => "sender_gave_up",
            Self::AcceptedElsewhere { .. } => "accepted_elsewhere",
            Self::KnownKeys(_) => "known_keys_failed",
            Self::Stream(e) => e.code(),
            Self::Cancelled => "cancelled",
        }
    }
}
