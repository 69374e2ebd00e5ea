//! What a node reports while it sends and receives: plain data, serialised for the CLI's `--json`
//! output as one object per line (NDJSON).
//!
//! The JSON shape is a contract for scripts: an `"event"` field with the seed's snake_case name
//! (`offer_sent`, `file`, `transfer_start`, `progress`, `transfer_complete`, `transfer_failed`,
//! `error`, `queued`, `retrying`), then the variant's fields. Every event carries `transfer_id` (32 lower-case hex);
//! only `error` may have `null` there, when the error is not about one transfer. Sizes, byte
//! counts and durations are raw integers. New fields and variants may be added; existing names
//! do not change.
//!
//! ```
//! use ats_p2p::events::{Direction, Event};
//! let e = Event::Progress {
//!     transfer_id: "00112233445566778899aabbccddeeff".into(),
//!     direction: Direction::Receive,
//!     bytes: 65536,
//!     total: 1048576,
//! };
//! assert_eq!(
//!     e.to_json_line().unwrap(),
//!     r#"{"event":"progress","transfer_id":"00112233445566778899aabbccddeeff","direction":"receive","bytes":65536,"total":1048576}"#,
//! );
//! ```

use serde::{Deserialize, Serialize};

/// Which side of a transfer this node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This node sends the file.
    Send,
    /// This node receives the file.
    Receive,
}

/// The class of a failure, stable for scripts and mapped by the CLI to its exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The other side declined (reject, NACK) or our policy refused the peer or the offer.
    Rejected,
    /// Nobody claimed the offer, or the transfer stalled, within the timeout.
    TimedOut,
    /// The bytes did not match the offer (size or SHA-256).
    Verification,
    /// The peer broke the protocol (unexpected or malformed frames, wrong key).
    Protocol,
    /// The swarm or ATS could not be reached.
    Network,
    /// A local file-system problem (disk full, permissions).
    Io,
    /// The transfer was cancelled locally (node closed, Ctrl-C) or its task was cancelled.
    Cancelled,
    /// The caller's input was unusable (not a file, invalid actor id).
    Usage,
}

/// An event a node emits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Sender: the offer task was created on ATS.
    OfferSent {
        /// The transfer id.
        transfer_id: String,
        /// The ATS task carrying the offer.
        task_id: String,
        /// The name offered.
        file_name: String,
        /// Size in bytes.
        file_size: u64,
        /// SHA-256, 64 hex.
        file_hash: String,
        /// Who the offer is for.
        recipient_id: String,
        /// A directory offer: how many files it holds (`file_size` is their total).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_count: Option<u64>,
    },
    /// Receiver: an offer arrived (the seed's `file` event), before any policy decision.
    File {
        /// The transfer id.
        transfer_id: String,
        /// The ATS task carrying the offer.
        task_id: String,
        /// The name as offered (not yet sanitised).
        file_name: String,
        /// Size in bytes.
        file_size: u64,
        /// SHA-256, 64 hex.
        file_hash: String,
        /// The offering actor id.
        sender_id: String,
        /// The sender's swarm public key, 64 hex.
        sender_key: String,
        /// A directory offer: how many files it holds (`file_size` is their total).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file_count: Option<u64>,
    },
    /// Either side: the peer connected and bytes are about to flow.
    TransferStart {
        /// The transfer id.
        transfer_id: String,
        /// Which side we are.
        direction: Direction,
        /// The other side's actor id.
        peer_id: String,
        /// The file name (the sanitised one on the receiver).
        file_name: String,
        /// Size in bytes.
        file_size: u64,
        /// How the peers reached each other and where the bytes go.
        #[serde(flatten)]
        path: ConnectionPath,
    },
    /// Either side: bytes moved (or, before the offer, were hashed). Only the latest value
    /// matters; a consumer may skip some.
    Progress {
        /// The transfer id.
        transfer_id: String,
        /// Which side we are.
        direction: Direction,
        /// Bytes done.
        bytes: u64,
        /// Bytes in all.
        total: u64,
    },
    /// Either side: the transfer finished and was verified.
    TransferComplete {
        /// The transfer id.
        transfer_id: String,
        /// Which side we are.
        direction: Direction,
        /// Receiver: where the file was saved; sender: the path sent.
        file_path: String,
        /// SHA-256, 64 hex.
        file_hash: String,
        /// Bytes of the file (all of it, verified).
        bytes: u64,
        /// Bytes that were already there from a broken transfer and did not move this time
        /// (0: the whole file moved).
        #[serde(default)]
        resumed_from: u64,
        /// Wall time from start to verified end, in milliseconds.
        duration_ms: u64,
        /// How the peers reached each other and where the bytes went.
        #[serde(flatten)]
        path: ConnectionPath,
    },
    /// Either side: the transfer ended without success.
    TransferFailed {
        /// The transfer id.
        transfer_id: String,
        /// Which side we are.
        direction: Direction,
        /// The class of failure.
        kind: FailureKind,
        /// A short code naming the cause (for example `key_changed`, `too_large`, `hash_mismatch`).
        code: String,
        /// Human-readable reason, as written to the ATS task.
        reason: String,
    },
    /// Sender: an entry of an offered directory that is not sent (a symbolic link, a special
    /// file, a name a manifest cannot carry), before the offer.
    Skipped {
        /// The entry on disk.
        path: String,
        /// Why it is not sent.
        reason: String,
    },
    /// A problem that is not the end of one transfer (for example the ATS watch reconnecting).
    Error {
        /// The transfer concerned, if any.
        transfer_id: Option<String>,
        /// What happened.
        message: String,
    },
    /// Sender: the transfer broke after the connection (the receiver or the network gone, the
    /// stream closed or timed out); its task was failed with `reason`, and the same file is
    /// offered again under a new transfer id (the next `offer_sent`), so a receiver that comes
    /// back resumes from what it kept.
    Retrying {
        /// The transfer that broke.
        transfer_id: String,
        /// The attempt that starts now (2 for the first re-offer).
        attempt: u32,
        /// Attempts in all, the first included.
        max_attempts: u32,
        /// The class of the failure.
        kind: FailureKind,
        /// A short code naming the cause (`stream_failed`, `stream_closed`, `stalled`, ...).
        code: String,
        /// Human-readable reason: what the sender saw (the task carries the receiver's own
        /// reason when it reported one).
        reason: String,
    },
    /// Receiver: an accepted offer waits, unclaimed, for one of the `limit` receive slots
    /// ([`NodeConfig::max_concurrent_receives`](crate::NodeConfig::max_concurrent_receives)).
    Queued {
        /// The transfer id.
        transfer_id: String,
        /// Transfers received at once.
        limit: usize,
    },
}

/// How a transfer's connection reached the peer (in `transfer_start` and `transfer_complete`,
/// in reports and in the task's completion outputs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionPath {
    /// `loopback`, `lan`, `direct`, `holepunched` or `relayed`.
    pub path: String,
    /// The address our stream sends to (the relay's when relayed).
    pub remote_addr: String,
    /// The relay's public key (64 hex), when relayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// The connection's smoothed round-trip time when the transfer started or ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<u64>,
}

impl ConnectionPath {
    /// The path of `conn`, as it is now.
    pub fn of(conn: &ats_p2p_swarm::hyperdht::Connection) -> Self {
        let p = conn.path();
        Self {
            path: p.kind.as_str().to_owned(),
            remote_addr: p.remote_addr.to_string(),
            relay: p.relay.map(|k| k.to_hex()),
            rtt_ms: conn
                .rtt()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl std::fmt::Display for ConnectionPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.relay {
            Some(r) => write!(
                f,
                "{} through relay {}… at {}",
                self.path,
                r.get(..8).unwrap_or(r),
                self.remote_addr
            ),
            None => write!(f, "{} to {}", self.path, self.remote_addr),
        }
    }
}

impl Event {
    /// The event's name as it appears in the `"event"` field.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OfferSent { .. } => "offer_sent",
            Self::File { .. } => "file",
            Self::TransferStart { .. } => "transfer_start",
            Self::Progress { .. } => "progress",
            Self::TransferComplete { .. } => "transfer_complete",
            Self::TransferFailed { .. } => "transfer_failed",
            Self::Error { .. } => "error",
            Self::Skipped { .. } => "skipped",
            Self::Queued { .. } => "queued",
            Self::Retrying { .. } => "retrying",
        }
    }

    /// The transfer the event is about.
    pub fn transfer_id(&self) -> Option<&str> {
        match self {
            Self::OfferSent { transfer_id, .. }
            | Self::File { transfer_id, .. }
            | Self::TransferStart { transfer_id, .. }
            | Self::Progress { transfer_id, .. }
            | Self::TransferComplete { transfer_id, .. }
            | Self::TransferFailed { transfer_id, .. }
            | Self::Queued { transfer_id, .. }
            | Self::Retrying { transfer_id, .. } => Some(transfer_id),
            Self::Error { transfer_id, .. } => transfer_id.as_deref(),
            Self::Skipped { .. } => None,
        }
    }

    /// One line of NDJSON (without the newline).
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const TID: &str = "00112233445566778899aabbccddeeff";

    fn sample_path() -> ConnectionPath {
        ConnectionPath {
            path: "relayed".into(),
            remote_addr: "198.18.0.1:49737".into(),
            relay: Some("ef".repeat(32)),
            rtt_ms: Some(3),
        }
    }

    #[test]
    fn path_fields_are_flat_in_the_json() {
        let v = serde_json::to_value(&samples()[4]).unwrap();
        assert_eq!(v["path"], "relayed");
        assert_eq!(v["remote_addr"], "198.18.0.1:49737");
        assert_eq!(v["relay"], "ef".repeat(32));
        assert_eq!(v["rtt_ms"], 3);
    }

    fn samples() -> Vec<Event> {
        vec![
            Event::OfferSent {
                transfer_id: TID.into(),
                task_id: "task-1".into(),
                file_name: "data.csv".into(),
                file_size: 10,
                file_hash: "ab".repeat(32),
                recipient_id: "agent-b".into(),
                file_count: None,
            },
            Event::File {
                transfer_id: TID.into(),
                task_id: "task-1".into(),
                file_name: "../data.csv".into(),
                file_size: 10,
                file_hash: "ab".repeat(32),
                sender_id: "agent-a".into(),
                sender_key: "cd".repeat(32),
                file_count: Some(3),
            },
            Event::TransferStart {
                transfer_id: TID.into(),
                direction: Direction::Send,
                peer_id: "agent-b".into(),
                file_name: "data.csv".into(),
                file_size: 10,
                path: sample_path(),
            },
            Event::Progress {
                transfer_id: TID.into(),
                direction: Direction::Receive,
                bytes: 5,
                total: 10,
            },
            Event::TransferComplete {
                transfer_id: TID.into(),
                direction: Direction::Receive,
                file_path: "/srv/incoming/data.csv".into(),
                file_hash: "ab".repeat(32),
                bytes: 10,
                resumed_from: 4,
                duration_ms: 1234,
                path: sample_path(),
            },
            Event::TransferFailed {
                transfer_id: TID.into(),
                direction: Direction::Send,
                kind: FailureKind::Rejected,
                code: "too_large".into(),
                reason: "file of 10 bytes exceeds the limit of 5 bytes".into(),
            },
            Event::Error {
                transfer_id: None,
                message: "watch reconnecting".into(),
            },
            Event::Queued {
                transfer_id: TID.into(),
                limit: 4,
            },
            Event::Retrying {
                transfer_id: TID.into(),
                attempt: 2,
                max_attempts: 6,
                kind: FailureKind::Network,
                code: "stream_failed".into(),
                reason: "transfer failed: stream to the peer failed: reset".into(),
            },
        ]
    }

    #[test]
    fn stable_names_and_fields() {
        let names: Vec<_> = samples().iter().map(Event::name).collect();
        assert_eq!(
            names,
            [
                "offer_sent",
                "file",
                "transfer_start",
                "progress",
                "transfer_complete",
                "transfer_failed",
                "error",
                "queued",
                "retrying"
            ]
        );
        for e in samples() {
            let line = e.to_json_line().unwrap();
            assert!(!line.contains('\n'));
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["event"], e.name(), "{line}");
            assert!(v.get("transfer_id").is_some(), "{line}");
            assert_eq!(v["transfer_id"].as_str(), e.transfer_id());
            let back: Event = serde_json::from_value(v).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn exact_json_of_failure_and_error() {
        let v = serde_json::to_value(&samples()[5]).unwrap();
        assert_eq!(
            v,
            json!({
                "event": "transfer_failed",
                "transfer_id": TID,
                "direction": "send",
                "kind": "rejected",
                "code": "too_large",
                "reason": "file of 10 bytes exceeds the limit of 5 bytes",
            })
        );
        let v = serde_json::to_value(&samples()[6]).unwrap();
        assert_eq!(
            v,
            json!({"event": "error", "transfer_id": null, "message": "watch reconnecting"})
        );
        let v = serde_json::to_value(&samples()[8]).unwrap();
        assert_eq!(
            v,
            json!({
                "event": "retrying",
                "transfer_id": TID,
                "attempt": 2,
                "max_attempts": 6,
                "kind": "network",
                "code": "stream_failed",
                "reason": "transfer failed: stream to the peer failed: reset",
            })
        );
        let kinds = [
            (FailureKind::TimedOut, "timed_out"),
            (FailureKind::Verification, "verification"),
            (FailureKind::Protocol, "protocol"),
            (FailureKind::Network, "network"),
            (FailureKind::Io, "io"),
            (FailureKind::Cancelled, "cancelled"),
            (FailureKind::Usage, "usage"),
        ];
        for (k, s) in kinds {
            assert_eq!(serde_json::to_value(k).unwrap(), json!(s));
        }
    }
}
