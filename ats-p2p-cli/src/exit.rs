//! Exit statuses: one per class of outcome, derived from the library's error kinds
//! ([`FailureKind`]), never from error text.

use std::fmt;

use ats_p2p::events::FailureKind;
use ats_p2p_signal::SignalError;

/// The exit statuses as `--help` and the README list them.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit status:
  0    success
  1    other error (bad file, local I/O, protocol error, ...)
  2    usage error (bad flag or argument)
  3    rejected: the peer declined, or a policy (allowlist, key, size) refused it
  4    timed out: nobody claimed the offer, or the peer never connected
  5    verification failed: the bytes did not match the offer's size or SHA-256
  6    network: ATS or the DHT could not be reached
  130  interrupted (Ctrl-C); the node closed cleanly and cancelled its open offers";

/// How the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0.
    Success,
    /// 1: anything not listed below.
    Error,
    /// 2: usage (clap exits with it by itself; used for our own late argument checks).
    Usage,
    /// 3: declined by the peer or refused by policy.
    Rejected,
    /// 4: timed out.
    TimedOut,
    /// 5: the bytes did not verify.
    Verification,
    /// 6: ATS or the DHT unreachable.
    Network,
    /// 130: Ctrl-C.
    Interrupted,
}

impl Exit {
    /// The process exit status.
    pub(crate) fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Error => 1,
            Self::Usage => 2,
            Self::Rejected => 3,
            Self::TimedOut => 4,
            Self::Verification => 5,
            Self::Network => 6,
            Self::Interrupted => 130,
        }
    }

    /// The status of a failure of this kind.
    pub(crate) fn from_kind(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Rejected => Self::Rejected,
            FailureKind::TimedOut => Self::TimedOut,
            FailureKind::Verification => Self::Verification,
            FailureKind::Network => Self::Network,
            FailureKind::Cancelled => Self::Interrupted,
            FailureKind::Usage => Self::Usage,
            // Protocol, Io and kinds added later: "other error".
            _ => Self::Error,
        }
    }

    /// The status of an ATS client error: the network when the server could not be reached or
    /// failed (5xx), "other" when it answered (404, a bad request).
    pub(crate) fn from_signal(e: &SignalError) -> Self {
        if e.is_transient() {
            Self::Network
        } else {
            Self::Error
        }
    }
}

/// A command's failure: what to print once, and the exit status.
pub(crate) struct Failure {
    /// The exit status.
    pub(crate) exit: Exit,
    /// The error, printed with its chain of causes.
    pub(crate) error: anyhow::Error,
}

impl Failure {
    /// A failure with an explicit status.
    pub(crate) fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }

    /// A failure of a library error kind.
    pub(crate) fn kind(kind: FailureKind, error: impl Into<anyhow::Error>) -> Self {
        Self::new(Exit::from_kind(kind), error)
    }

    /// A failure talking to ATS.
    pub(crate) fn signal(error: SignalError, context: impl fmt::Display) -> Self {
        let exit = Exit::from_signal(&error);
        Self::new(exit, anyhow::Error::new(error).context(context.to_string()))
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (exit {})", self.error, self.exit.code())
    }
}

/// Any other error is an "other error" (exit 1).
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::new(Exit::Error, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_documented() {
        let all = [
            Exit::Success,
            Exit::Error,
            Exit::Usage,
            Exit::Rejected,
            Exit::TimedOut,
            Exit::Verification,
            Exit::Network,
            Exit::Interrupted,
        ];
        let mut codes: Vec<u8> = all.iter().map(|e| e.code()).collect();
        for c in &codes {
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {c} ")),
                "code {c} documented"
            );
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn from_failure_kinds() {
        assert_eq!(Exit::from_kind(FailureKind::Rejected).code(), 3);
        assert_eq!(Exit::from_kind(FailureKind::TimedOut).code(), 4);
        assert_eq!(Exit::from_kind(FailureKind::Verification).code(), 5);
        assert_eq!(Exit::from_kind(FailureKind::Network).code(), 6);
        assert_eq!(Exit::from_kind(FailureKind::Protocol).code(), 1);
        assert_eq!(Exit::from_kind(FailureKind::Io).code(), 1);
        assert_eq!(Exit::from_kind(FailureKind::Cancelled).code(), 130);
        assert_eq!(Exit::from_kind(FailureKind::Usage).code(), 2);
    }

    #[test]
    fn from_signal_errors() {
        let down = SignalError::Timeout { url: "x".into() };
        assert_eq!(Exit::from_signal(&down), Exit::Network);
        let missing = SignalError::Http {
            status: 404,
            message: "not found".into(),
        };
        assert_eq!(Exit::from_signal(&missing), Exit::Error);
    }
}
