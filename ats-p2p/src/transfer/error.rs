//! Errors of the transfer driver, with their failure classes and stable codes.

use std::io;
use std::path::PathBuf;

use crate::events::FailureKind;
use crate::save::SaveError;

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
