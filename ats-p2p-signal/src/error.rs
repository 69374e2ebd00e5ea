//! The one error type of the ATS client and the watch.

use crate::types::TaskId;

/// Everything that can go wrong talking to an ATS server.
///
/// Variants are sorted by who is at fault: the network (`Connect`, `Timeout`, `Transport`,
/// `WebSocket`), the server's answer (`Http`, `Decode`, `ResponseTooLarge`), another actor
/// (`ClaimConflict`, `ClaimLost`) and the caller (`InvalidUrl`, `InvalidHeader`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The base URL could not be parsed or used.
    #[error("invalid ATS URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// An actor identity value cannot be sent as an HTTP header (ATS needs Latin-1 values).
    #[error("invalid value for header {name}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The server could not be reached (connection refused, DNS failure, TLS failure).
    #[error("cannot connect to ATS at {url}: {source}")]
    Connect {
        /// The URL of the request.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The request did not complete in time.
    #[error("request to {url} timed out")]
    Timeout {
        /// The URL of the request.
        url: String,
    },
    /// Another transport failure while sending the request or reading the answer.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL of the request.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a non-2xx status; `message` is its own `error` / `message`.
    #[error("ATS answered HTTP {status}: {message}")]
    Http {
        /// The HTTP status code.
        status: u16,
        /// The server's `error` (or `message`) field, else a short excerpt of the body.
        message: String,
    },
    /// The answer was not the JSON we expected.
    #[error("cannot decode {what} from ATS: {reason}")]
    Decode {
        /// What we tried to decode.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
    /// The answer exceeded [`crate::client::MAX_RESPONSE_BYTES`].
    #[error("ATS answer larger than {limit} bytes")]
    ResponseTooLarge {
        /// The limit that was hit.
        limit: usize,
    },
    /// A claim was refused because the task is held by someone else or not pending.
    #[error("claim of task {task_id} refused: {message}")]
    ClaimConflict {
        /// The task.
        task_id: TaskId,
        /// The server's reason.
        message: String,
    },
    /// Renewing our own claim failed: the lease expired and someone else may hold the task.
    #[error("claim of task {task_id} lost: {message}")]
    ClaimLost {
        /// The task.
        task_id: TaskId,
        /// The server's reason.
        message: String,
    },
    /// The WebSocket could not be opened or broke.
    #[error("WebSocket {url}: {reason}")]
    WebSocket {
        /// The WebSocket URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl SignalError {
    /// The HTTP status, when the server answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for failures that may go away by themselves (network, timeouts, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::WebSocket { .. } => true,
            Self::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
