//! The ATS side of one transfer as sans-io state machines, in the manner of quinn-proto's
//! `Connection`: [`SendLifecycle`] for the sender (offer → claim → accept → connection → outcome
//! → end of the task) and [`ReceiveLifecycle`] for the receiver (claim → accept message →
//! connection → outcome → complete or fail, with lease renewal).
//!
//! A machine holds no sockets, clients or timers. Its shell (`node/send.rs`, `node/receive/`)
//! feeds it what happened — task events from the hub's watch, results of the ATS calls and of
//! the connection and transfer it asked for, timer expiries, cancellation — through `handle_*`
//! methods taking the current [`Instant`], and carries out what it asks through
//! `poll_action()`, in order. `poll_timeout()` names the one instant at which the shell must
//! call `handle_timeout`; `poll_outcome()` gives the end result once the machine is done.
//!
//! The rules of a transfer live here and only here: which accept counts (the claimer's first),
//! when a sender gives up (no answer, no connection) and when it offers a broken transfer
//! again (retries, within the timeout), how a task that failed on our side is
//! ended on ATS (cancelled, or first left to the receiver's more precise report for a short
//! grace), when the receiver's claim lease is renewed, and what closes a receive early (the
//! task closed by the sender, another receiver with our actor id, no path).

mod receive;
mod send;

pub(crate) use receive::{ReceiveAction, ReceiveLifecycle, Turn};
pub(crate) use send::{ClaimToJudge, SendAction, SendLifecycle};

use ats_p2p_signal::{AcceptMessage, Message};

/// The first accept `claimer` posted among `messages` (by message id, whatever the order they
/// are listed in): a second claim by the same actor id (another process, or anyone using that
/// id on the hub) cannot replace the key the first accept announced.
pub(crate) fn first_accept(messages: &[Message], claimer: &str) -> Option<AcceptMessage> {
    messages
        .iter()
        .filter_map(|m| accept_from(m, claimer).map(|a| (m.id, a)))
        .min_by_key(|(id, _)| *id)
        .map(|(_, a)| a)
}

/// The accept in `message`, if the claimer wrote it. An accept for another transfer id is still
/// returned, so the policy names the mismatch.
pub(crate) fn accept_from(message: &Message, claimer: &str) -> Option<AcceptMessage> {
    if message.actor_id.as_deref() != Some(claimer) {
        return None;
    }
    AcceptMessage::from_message(message).ok()
}

/// The earlier of two optional instants.
fn earliest(
    a: Option<std::time::Instant>,
    b: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Tasks, messages and errors for the machines' unit tests.
    use ats_p2p_signal::{AcceptMessage, Message, Part, SignalError, Task, TaskStatus, TransferId};
    use ats_p2p_swarm::PublicKey;

    use crate::events::ConnectionPath;
    use crate::policy::{AllowedBy, KeyUpdate, PeerApproval};

    /// A task with `id`, `status`, assignee and reason.
    pub(crate) fn task(
        id: i64,
        status: TaskStatus,
        assignee: Option<&str>,
        reason: Option<&str>,
    ) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "title": "offer",
            "status": status.as_str(),
            "type": "file_offer",
            "channel": "p2p",
            "payload": {},
            "assignee_id": assignee,
            "reason": reason,
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    /// An accept message by `actor` with a key of `key` bytes.
    pub(crate) fn accept(id: i64, actor: &str, key: u8, transfer: TransferId) -> Message {
        let accept = AcceptMessage {
            directories: false,
            transfer_id: transfer,
            receiver_key: [key; 32],
            resume: false,
        };
        Message {
            id,
            task_id: Some(1),
            actor_type: Some("agent".into()),
            actor_id: Some(actor.into()),
            actor_name: None,
            parts: vec![Part::text(accept.to_content())],
            created_at: chrono::Utc::now(),
        }
    }

    /// An approval of the key of `key` bytes.
    pub(crate) fn approval(key: u8) -> PeerApproval {
        PeerApproval {
            key: PublicKey::from_bytes([key; 32]),
            allowed_by: AllowedBy::Open,
            key_update: KeyUpdate::Remember,
        }
    }

    /// A direct path.
    pub(crate) fn path() -> ConnectionPath {
        ConnectionPath {
            path: "loopback".into(),
            remote_addr: "127.0.0.1:1".into(),
            relay: None,
            rtt_ms: None,
        }
    }

    /// An ATS request that timed out.
    pub(crate) fn signal_error() -> SignalError {
        SignalError::Timeout {
            url: "http://hub/".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::accept;
    use super::*;
    use ats_p2p_signal::TransferId;

    #[test]
    fn the_first_accept_of_the_claimer_wins_in_any_listing_order() {
        let t = TransferId::random();
        let first = accept(10, "agent-b", 1, t);
        let second = accept(11, "agent-b", 2, t);
        let other = accept(9, "agent-c", 3, t);
        for listed in [
            vec![other.clone(), first.clone(), second.clone()],
            vec![second.clone(), other.clone(), first.clone()],
        ] {
            let a = first_accept(&listed, "agent-b").unwrap();
            assert_eq!(a.receiver_key, [1; 32]);
        }
        assert!(first_accept(&[other], "agent-b").is_none());
    }
}
