//! Errors, one enum per operation (style.md): each variant names what failed and keeps the lower
//! error as its [`source`](std::error::Error::source), so a caller prints the chain once.
//!
//! Policy decisions are not errors: a refused offer or claim is a value
//! ([`ReceiveRejection`](crate::policy::ReceiveRejection),
//! [`ClaimRejection`](crate::policy::ClaimRejection)) that becomes a reject or fail reason.

use std::io;
use std::path::PathBuf;

use crate::events::FailureKind;

/// Receiving a file into the save directory failed ([`IncomingFile`](crate::save::IncomingFile),
/// [`available_space`](crate::save::available_space)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The transfer id given for the temporary file name is not 32 hex characters.
    #[error("a transfer id is 32 hex characters, got {len} characters")]
    InvalidTransferId {
        /// Length of what was given, in bytes.
        len: usize,
    },
    /// The save directory could not be created or is not a directory.
    #[error("cannot use save directory {dir}")]
    SaveDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// No temporary file could be created in the save directory.
    #[error("cannot create a temporary file in {dir}")]
    CreateTemp {
        /// The save directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file system holding the file is full (or the user's quota is used up).
    #[error("no space left for {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// Writing received bytes failed for another reason.
    #[error("cannot write to {path}")]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A write would end past the largest file offset.
    #[error("a write of {len} bytes at offset {offset} ends past the largest file offset")]
    OffsetOverflow {
        /// The offset asked for.
        offset: u64,
        /// The number of bytes.
        len: usize,
    },
    /// A write would make the file longer than its size limit.
    #[error("a write ending at byte {end} exceeds the size limit of {limit} bytes")]
    SizeLimit {
        /// Where the write would end.
        end: u64,
        /// The limit.
        limit: u64,
    },
    /// Flushing the file or its directory to stable storage failed.
    #[error("cannot flush {path} to disk")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Every candidate name was taken.
    #[error("no free name for {name:?} in {dir} after {attempts} attempts")]
    NoFreeName {
        /// The save directory.
        dir: PathBuf,
        /// The sanitised name that was wanted.
        name: String,
        /// How many names were tried.
        attempts: u32,
    },
    /// Moving the finished file to its final name failed.
    #[error("cannot move the received file into place as {path}")]
    Publish {
        /// The final path that was tried.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Removing the temporary file failed.
    #[error("cannot remove temporary file {path}")]
    Remove {
        /// The temporary file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The free space of a directory's file system could not be read.
    #[error("cannot read the free space of {dir}")]
    AvailableSpace {
        /// The directory asked about.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl SaveError {
    /// Classifies a write error: `ENOSPC`/`EDQUOT` become [`SaveError::DiskFull`].
    pub(crate) fn from_write(path: PathBuf, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                Self::DiskFull { path, source }
            }
            _ => Self::Write { path, source },
        }
    }
}

/// Hashing a file failed ([`crate::hashing`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The file could not be opened or its size read.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path is not a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Reading failed part way.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The hash was cancelled before it finished.
    #[error("hashing was cancelled")]
    Cancelled,
    /// The blocking task running the hash panicked or was cancelled.
    #[error("the hashing task did not finish")]
    Task(#[source] tokio::task::JoinError),
}

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

/// Loading or creating a node's persistent key failed ([`crate::identity`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The platform has no user configuration directory (and no root was given).
    #[error("no user configuration directory; pass an explicit key directory")]
    NoConfigDir,
    /// The actor id cannot name a key.
    #[error("invalid actor id for a key file")]
    ActorId(#[source] ActorIdError),
    /// The key directory could not be created.
    #[error("cannot create key directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file exists but could not be read.
    #[error("cannot read key file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file could not be written.
    #[error("cannot write key file {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The key file does not hold a 64-character hex seed.
    #[error(
        "key file {path} is malformed (expected 64 hex characters); move it away to make a new key"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The key file can be read or written by other users.
    #[error("key file {path} has mode {mode:o}, readable by others; run `chmod 600` on it")]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Streaming a file to a peer failed ([`send_stream`](crate::transfer::send_stream)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamSendError {
    /// The file to send could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading the file failed part way, or it is shorter than announced (it changed).
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (`UnexpectedEof` when the file shrank).
        source: io::Error,
    },
    /// The transfer failed: refused by the peer, a protocol error, or a timeout.
    #[error("transfer failed")]
    Transfer(#[source] ats_p2p_wire::TransferError),
    /// Reading from or writing to the peer's stream failed.
    #[error("stream to the peer failed")]
    Io(#[source] io::Error),
    /// The transfer stopped moving: fewer than the progress rule's bytes moved within one
    /// window ([`ProgressRule`](crate::transfer::ProgressRule)).
    #[error(
        "no progress: {moved} bytes moved in the last {window:?}, fewer than the {min_bytes} required"
    )]
    Stalled {
        /// The rule's window.
        window: std::time::Duration,
        /// Bytes moved in that window.
        moved: u64,
        /// Bytes the rule asks for per window.
        min_bytes: u64,
    },
}

impl StreamSendError {
    /// The failure class (for events and exit codes).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Open { .. } | Self::Read { .. } => FailureKind::Io,
            Self::Transfer(e) => transfer_kind(e),
            Self::Io(_) => FailureKind::Network,
            Self::Stalled { .. } => FailureKind::TimedOut,
        }
    }
}

/// Receiving a file from a peer failed ([`receive_stream`](crate::transfer::receive_stream)).
/// The temporary file is gone by the time this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamReceiveError {
    /// Creating, writing or committing the file failed.
    #[error("cannot store the received file")]
    Save(#[source] SaveError),
    /// The transfer failed: a protocol error, a hash or size mismatch, or a timeout.
    #[error("transfer failed")]
    Transfer(#[source] ats_p2p_wire::TransferError),
    /// Reading from or writing to the peer's stream failed.
    #[error("stream from the peer failed")]
    Io(#[source] io::Error),
    /// The transfer stopped moving: fewer than the progress rule's bytes moved within one
    /// window ([`ProgressRule`](crate::transfer::ProgressRule)).
    #[error(
        "no progress: {moved} bytes moved in the last {window:?}, fewer than the {min_bytes} required"
    )]
    Stalled {
        /// The rule's window.
        window: std::time::Duration,
        /// Bytes moved in that window.
        moved: u64,
        /// Bytes the rule asks for per window.
        min_bytes: u64,
    },
    /// The blocking writer task ended without an answer (it panicked).
    #[error("the file writer task stopped unexpectedly")]
    WriterStopped,
}

impl StreamReceiveError {
    /// The failure class (for events and exit codes).
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Save(_) | Self::WriterStopped => FailureKind::Io,
            Self::Transfer(e) => transfer_kind(e),
            Self::Io(_) => FailureKind::Network,
            Self::Stalled { .. } => FailureKind::TimedOut,
        }
    }
}

/// The failure class of a wire-level transfer error.
fn transfer_kind(e: &ats_p2p_wire::TransferError) -> FailureKind {
    use ats_p2p_wire::TransferError as T;
    match e {
        T::TooLarge { .. } | T::Nack(_) => FailureKind::Rejected,
        T::Oversize { .. } | T::SizeMismatch { .. } | T::HashMismatch { .. } => {
            FailureKind::Verification
        }
        T::Closed { .. } => FailureKind::Network,
        T::TimedOut { .. } => FailureKind::TimedOut,
        T::Local(_) => FailureKind::Io,
        _ => FailureKind::Protocol,
    }
}

/// `err` and its sources joined with `": "`: the one-line reason a task is failed with.
pub fn reason_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

/// A stable snake_case code for a wire-level transfer error (for events and scripts).
pub fn transfer_error_code(e: &ats_p2p_wire::TransferError) -> &'static str {
    use ats_p2p_wire::TransferError as T;
    match e {
        T::Malformed(_) => "malformed_frame",
        T::UnexpectedFrame { .. } => "unexpected_frame",
        T::MetaMismatch { .. } => "meta_mismatch",
        T::TooLarge { .. } => "too_large",
        T::Oversize { .. } => "oversize",
        T::SizeMismatch { .. } => "size_mismatch",
        T::HashMismatch { .. } => "hash_mismatch",
        T::Nack(_) => "nack",
        T::PeerError(_) => "peer_error",
        T::Closed { .. } => "stream_closed",
        T::TimedOut { .. } => "timed_out",
        T::Local(_) => "local_failure",
        _ => "protocol_error",
    }
}

impl StreamSendError {
    /// A stable snake_case code naming the cause.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Open { .. } => "open_failed",
            Self::Read { .. } => "read_failed",
            Self::Transfer(e) => transfer_error_code(e),
            Self::Io(_) => "stream_failed",
            Self::Stalled { .. } => "stalled",
        }
    }
}

impl StreamReceiveError {
    /// A stable snake_case code naming the cause.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Save(SaveError::DiskFull { .. }) => "disk_full",
            Self::Save(_) => "save_failed",
            Self::Transfer(e) => transfer_error_code(e),
            Self::Io(_) => "stream_failed",
            Self::Stalled { .. } => "stalled",
            Self::WriterStopped => "writer_stopped",
        }
    }
}

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
    Swarm(#[source] ats_p2p_swarm::hyperdht::ConnectError),
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
    /// The path is not a regular file (or cannot be inspected).
    #[error("cannot send {path}: not a readable regular file")]
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
    /// An ATS request failed (server unreachable or refusing).
    #[error("ATS request failed while {doing}")]
    Signal {
        /// What we were doing.
        doing: &'static str,
        /// Why.
        source: ats_p2p_signal::SignalError,
    },
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
    Swarm(#[source] NodeError),
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
            Self::Hash { .. } | Self::KnownKeys(_) => FailureKind::Io,
            Self::Signal { .. } | Self::Swarm(_) => FailureKind::Network,
            Self::Declined { .. } | Self::Claim(_) => FailureKind::Rejected,
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
