//! The sender's side of a transfer: hash, offer, wait for the recipient's claim and accept,
//! admit exactly its key, stream the file, wait for ACK.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ats_p2p_signal::offer::OFFER_TASK_TYPE;
use ats_p2p_signal::{
    AcceptMessage, EventKind, FileOffer, Message, Task, TaskEvent, TaskId, TaskStatus, TransferId,
    Watch, WatchConfig,
};
use ats_p2p_wire::{FileHash, Meta, SenderConfig, TransferError};
use futures::StreamExt;
use tokio::time::Instant as Deadline;
use tracing::debug;

use super::{ProgressThrottle, Shared, locked, millis};
use crate::error::{KnownKeysError, SendError, StreamSendError};
use crate::events::{ConnectionPath, Direction, Event};
use crate::hashing::sha256_file_async;
use crate::names::sanitize_file_name;
use crate::policy::{ClaimFacts, KeyUpdate, PeerApproval, validate_actor_id};
use crate::topic::transfer_topic;
use crate::transfer::send_stream_with;

/// A file delivered: the receiver verified it and ACKed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The transfer id (32 hex).
    pub transfer_id: String,
    /// The ATS task that carried the offer.
    pub task_id: String,
    /// The name offered.
    pub file_name: String,
    /// SHA-256 of the file, 64 hex.
    pub file_hash: String,
    /// Bytes sent.
    pub bytes: u64,
    /// From the connection to the ACK, in milliseconds.
    pub duration_ms: u64,
    /// How the connection reached the receiver.
    pub path: ConnectionPath,
}

/// See [`Node::send`](super::Node::send).
pub(super) async fn send(
    shared: &Arc<Shared>,
    path: &Path,
    recipient: &str,
    channel: &str,
    mut on_event: impl FnMut(&Event) + Send,
) -> Result<SendReport, SendError> {
    validate_actor_id(recipient).map_err(|source| SendError::InvalidRecipient {
        recipient: recipient.to_owned(),
        source,
    })?;
    let not_a_file = |source| SendError::NotAFile {
        path: path.to_path_buf(),
        source,
    };
    let stat = tokio::fs::metadata(path)
        .await
        .map_err(|e| not_a_file(Some(e)))?;
    if !stat.is_file() {
        return Err(not_a_file(None));
    }
    let file_name = sanitize_file_name(
        &path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let digest = sha256_file_async(path.to_path_buf(), |_, _| {})
        .await
        .map_err(|source| SendError::Hash {
            path: path.to_path_buf(),
            source,
        })?;
    let offer = FileOffer {
        transfer_id: TransferId::random(),
        filename: file_name,
        size: digest.bytes,
        sha256: digest.sha256,
        sender_id: shared.config.actor_id.clone(),
        recipient_id: recipient.to_owned(),
        sender_key: *shared.transport.public_key().as_bytes(),
    };
    let transfer_id = offer.transfer_id.to_string();

    // Watch before creating, so no claim can slip by.
    let mut watch = shared.client.watch(WatchConfig {
        channels: vec![channel.to_owned()],
        task_types: vec![OFFER_TASK_TYPE.to_owned()],
        ..WatchConfig::default()
    });
    let task = shared
        .client
        .create_task(&offer.to_new_task(Some(channel)))
        .await
        .map_err(|source| SendError::Signal {
            doing: "creating the offer",
            source,
        })?;
    // Until it is answered, the offer is the node's to cancel at `destroy` (also when this
    // future is dropped half way, as on Ctrl-C).
    locked(&shared.open_offers).insert(task.id);
    on_event(&Event::OfferSent {
        transfer_id: transfer_id.clone(),
        task_id: task.id.to_string(),
        file_name: offer.filename.clone(),
        file_size: offer.size,
        file_hash: digest.sha256_hex(),
        recipient_id: recipient.to_owned(),
    });

    let result = deliver(shared, path, &offer, &task, &mut watch, &mut on_event).await;
    drop(watch);
    locked(&shared.open_offers).remove(&task.id);
    match result {
        Ok(report) => {
            on_event(&Event::TransferComplete {
                transfer_id,
                direction: Direction::Send,
                file_path: path.display().to_string(),
                file_hash: report.file_hash.clone(),
                bytes: report.bytes,
                duration_ms: report.duration_ms,
                path: report.path.clone(),
            });
            Ok(report)
        }
        Err(e) => {
            end_task_after_failure(shared, task.id, &e).await;
            on_event(&Event::TransferFailed {
                transfer_id,
                direction: Direction::Send,
                kind: e.kind(),
                code: e.code().to_owned(),
                reason: crate::error::reason_chain(&e),
            });
            Err(e)
        }
    }
}

/// How long a sender whose transfer broke after the connection waits for the receiver to end
/// the task with its own (more precise) reason before cancelling it.
const RECEIVER_REPORT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Pause between task reads during [`RECEIVER_REPORT_GRACE`].
const TASK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// After a failed send, ends the task unless it already ended: ATS must show how every
/// transfer ended. Once bytes flowed, the receiver holds the claim and fails the task with its
/// own reason, so the sender waits a moment for that first; a receiver that stays silent (it
/// was killed, or lost ATS) leaves the sender to fail the task with what it saw. Before any
/// byte flowed, the offer is withdrawn (cancelled).
async fn end_task_after_failure(shared: &Shared, id: TaskId, error: &SendError) {
    let receiver_reports = matches!(error, SendError::Stream(_) | SendError::FileChanged { .. });
    let grace_end = Instant::now() + RECEIVER_REPORT_GRACE;
    loop {
        match shared.client.get_task(id).await {
            Ok(t) if t.status.is_terminal() => return,
            Ok(_) => {}
            Err(e) => debug!(task = id, error = %e, "cannot read the task after a failed send"),
        }
        if !receiver_reports || Instant::now() >= grace_end {
            break;
        }
        tokio::time::sleep(TASK_POLL).await;
    }
    if receiver_reports {
        let reason = format!(
            "the receiver did not report how the transfer ended; the sender saw: {}",
            crate::error::reason_chain(error)
        );
        match shared.client.fail(id, Some(&reason)).await {
            Ok(_) => return,
            Err(e) => debug!(task = id, error = %e, "cannot fail the task after a failed send"),
        }
    }
    if let Err(e) = shared.client.cancel(id).await {
        debug!(task = id, error = %e, "cannot cancel the task after a failed send");
    }
}

/// Waits for the accept, admits the receiver, streams the file.
async fn deliver(
    shared: &Arc<Shared>,
    path: &Path,
    offer: &FileOffer,
    task: &Task,
    watch: &mut Watch,
    on_event: &mut (impl FnMut(&Event) + Send),
) -> Result<SendReport, SendError> {
    let timeout = shared.config.timeout;
    let approval = tokio::select! {
        r = await_accept(shared, watch, offer, task) => r?,
        () = tokio::time::sleep(timeout) => return Err(SendError::NoAnswer(timeout)),
        () = shared.shutdown.cancelled() => return Err(SendError::Cancelled),
    };
    locked(&shared.open_offers).remove(&task.id);

    let mut expected = shared.transport.expect(approval.key);
    let topic = transfer_topic(offer.transfer_id.as_bytes());
    shared
        .transport
        .announce(topic)
        .await
        .map_err(SendError::Swarm)?;
    let deadline = Deadline::now() + timeout;
    let conn = tokio::select! {
        c = expected.connection(deadline) => c.ok_or(SendError::NoConnection(timeout)),
        e = task_ended(watch, task.id) => Err(e),
        () = shared.shutdown.cancelled() => Err(SendError::Cancelled),
    };
    shared.transport.unannounce(topic);
    let conn = conn?;
    drop(expected);
    let connection_path = ConnectionPath::of(&conn);

    let transfer_id = offer.transfer_id.to_string();
    on_event(&Event::TransferStart {
        transfer_id: transfer_id.clone(),
        direction: Direction::Send,
        peer_id: offer.recipient_id.clone(),
        file_name: offer.filename.clone(),
        file_size: offer.size,
        path: connection_path.clone(),
    });
    let meta = Meta {
        name: offer.filename.clone(),
        size: offer.size,
        hash: FileHash(offer.sha256),
    };
    let started = Instant::now();
    let mut throttle = ProgressThrottle::new();
    let progress = |bytes, total| {
        if throttle.ready(bytes, total) {
            on_event(&Event::Progress {
                transfer_id: transfer_id.clone(),
                direction: Direction::Send,
                bytes,
                total,
            });
        }
    };
    let sent = tokio::select! {
        r = send_stream_with(conn, path, meta, SenderConfig::default(), shared.config.progress, progress) => r,
        () = shared.shutdown.cancelled() => return Err(SendError::Cancelled),
    };
    let sent = match sent {
        Ok(sent) => sent,
        Err(e @ StreamSendError::Transfer(TransferError::Nack(_))) => {
            return Err(blame_refusal(path, offer.sha256, e).await);
        }
        Err(e) => return Err(SendError::Stream(e)),
    };
    // Trust on first use only now: the peer proved it holds the key (Noise) and stored the
    // file (ACK after its SHA-256 matched). A claim alone proves nothing: anyone on the hub can
    // claim as any actor id.
    if let Err(e) = remember_key(shared.clone(), offer.recipient_id.clone(), approval).await {
        on_event(&Event::Error {
            transfer_id: Some(transfer_id.clone()),
            message: format!(
                "file delivered, but remembering the key of {} failed: {}",
                offer.recipient_id,
                crate::error::reason_chain(&e)
            ),
        });
    }
    Ok(SendReport {
        transfer_id,
        task_id: task.id.to_string(),
        file_name: offer.filename.clone(),
        file_hash: hex::encode(offer.sha256),
        bytes: sent.bytes,
        duration_ms: millis(started.elapsed()),
        path: connection_path,
    })
}

/// After a NACK: if the file no longer hashes to what was offered, it changed after the offer
/// (a verification failure on our side); otherwise the receiver refused it.
async fn blame_refusal(path: &Path, offered: [u8; 32], refusal: StreamSendError) -> SendError {
    match sha256_file_async(path.to_path_buf(), |_, _| {}).await {
        Ok(now) if now.sha256 != offered => SendError::FileChanged {
            path: path.to_path_buf(),
            source: refusal,
        },
        _ => SendError::Stream(refusal),
    }
}

/// Follows our task until the named recipient claimed it and posted an accept that our policy
/// approves; returns the approval (its key is the only one admitted).
async fn await_accept(
    shared: &Shared,
    watch: &mut Watch,
    offer: &FileOffer,
    task: &Task,
) -> Result<PeerApproval, SendError> {
    // The task may have changed before the watch was connected: start from its current state.
    let mut current = Some(TaskEvent {
        kind: EventKind::Updated,
        task: task.clone(),
        message: None,
        actor: None,
        event_id: None,
        origin: ats_p2p_signal::EventOrigin::CatchUp,
    });
    loop {
        let ev = match current.take() {
            Some(ev) => ev,
            None => match watch.next().await {
                Some(ev) => ev,
                None => return Err(SendError::Cancelled),
            },
        };
        if ev.task.id != task.id {
            continue;
        }
        if let Some(e) = ended(&ev.task) {
            return Err(e);
        }
        if ev.task.status != TaskStatus::InProgress {
            continue;
        }
        let claimer = ev.task.assignee_id.clone().unwrap_or_default();
        if claimer != offer.recipient_id {
            // Refused before any key is looked at: someone else took the offer.
            let facts = claim_facts(offer, &claimer, None);
            return shared
                .send_policy_decision(&facts)
                .map_err(SendError::Claim);
        }
        // Always the **first** accept the claimer posted, read from the task's messages (not
        // the event at hand): a second claim by the same actor id (another process, or anyone
        // using that id on the hub) cannot replace the key the first accept announced.
        if ev.kind == EventKind::Message
            && ev
                .message
                .as_ref()
                .is_some_and(|m| accept_from(m, &claimer).is_none())
        {
            continue;
        }
        let messages = shared
            .client
            .list_messages(task.id)
            .await
            .map_err(|source| SendError::Signal {
                doing: "reading the accept message",
                source,
            })?;
        let accept = first_accept(&messages, &claimer);
        let Some(accept) = accept else {
            continue;
        };
        let facts = claim_facts(offer, &claimer, Some(&accept));
        return shared
            .send_policy_decision(&facts)
            .map_err(SendError::Claim);
    }
}

/// The first accept the claimer posted among `messages` (by message id, whatever the order
/// they are listed in).
pub(super) fn first_accept(messages: &[Message], claimer: &str) -> Option<AcceptMessage> {
    messages
        .iter()
        .filter_map(|m| accept_from(m, claimer).map(|a| (m.id, a)))
        .min_by_key(|(id, _)| *id)
        .map(|(_, a)| a)
}

/// The accept in `message`, if the claimer wrote it for this transfer. An accept for another
/// transfer id is still returned, so the policy names the mismatch.
fn accept_from(message: &Message, claimer: &str) -> Option<AcceptMessage> {
    if message.actor_id.as_deref() != Some(claimer) {
        return None;
    }
    AcceptMessage::from_message(message).ok()
}

/// Owned inputs of [`ClaimFacts`].
struct OwnedClaim {
    transfer_id: String,
    recipient_id: String,
    claimer_id: String,
    accept_transfer_id: String,
    receiver_key: String,
}

fn claim_facts(offer: &FileOffer, claimer: &str, accept: Option<&AcceptMessage>) -> OwnedClaim {
    OwnedClaim {
        transfer_id: offer.transfer_id.to_string(),
        recipient_id: offer.recipient_id.clone(),
        claimer_id: claimer.to_owned(),
        accept_transfer_id: accept.map_or_else(
            || offer.transfer_id.to_string(),
            |a| a.transfer_id.to_string(),
        ),
        receiver_key: accept
            .map(|a| hex::encode(a.receiver_key))
            .unwrap_or_default(),
    }
}

impl Shared {
    fn send_policy_decision(
        &self,
        c: &OwnedClaim,
    ) -> Result<PeerApproval, crate::policy::ClaimRejection> {
        let policy = crate::policy::SendPolicy {
            peer: self.peer_policy(),
        };
        let known = locked(&self.known);
        policy.decide_claim(
            &known,
            &ClaimFacts {
                transfer_id: &c.transfer_id,
                recipient_id: &c.recipient_id,
                claimer_id: &c.claimer_id,
                accept_transfer_id: &c.accept_transfer_id,
                receiver_key: &c.receiver_key,
            },
        )
    }
}

/// The error for a task that ended on ATS, or `None` while it is open.
fn ended(task: &Task) -> Option<SendError> {
    let reason = || {
        task.reason
            .clone()
            .unwrap_or_else(|| "no reason given".to_owned())
    };
    match task.status {
        TaskStatus::Rejected => Some(SendError::Declined { reason: reason() }),
        TaskStatus::Failed => Some(SendError::FailedByReceiver { reason: reason() }),
        TaskStatus::Cancelled => Some(SendError::TaskCancelled),
        TaskStatus::Completed => Some(SendError::FailedByReceiver {
            reason: "the task was completed before the file was sent".to_owned(),
        }),
        _ => None,
    }
}

/// Resolves when our task ends on ATS (the receiver gave up while we waited for it).
async fn task_ended(watch: &mut Watch, id: TaskId) -> SendError {
    while let Some(ev) = watch.next().await {
        if ev.task.id == id {
            if let Some(e) = ended(&ev.task) {
                return e;
            }
        }
    }
    std::future::pending().await
}

/// Remembers `actor`'s approved key (trust on first use), off the async runtime. Called only
/// after a transfer with that key was verified and stored (never at claim time). If another
/// transfer remembered a different key for `actor` since this one was approved, the first
/// verified key stays.
pub(super) async fn remember_key(
    shared: Arc<Shared>,
    actor: String,
    approval: PeerApproval,
) -> Result<(), KnownKeysError> {
    let task = tokio::task::spawn_blocking(move || {
        let mut known = locked(&shared.known);
        let first_was_other = approval.key_update == KeyUpdate::Remember
            && known.get(&actor).is_some_and(|k| *k != approval.key);
        if first_was_other {
            debug!(%actor, "another verified key was remembered first; keeping it");
            return Ok(());
        }
        match known.apply(&actor, &approval) {
            Ok(true) => known.save(),
            Ok(false) => Ok(()),
            // The actor id passed the policy, so it is valid; nothing to remember otherwise.
            Err(_) => Ok(()),
        }
    });
    task.await.unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ats_p2p_signal::Part;

    fn message(id: i64, actor: &str, key: u8, transfer: TransferId) -> Message {
        let accept = AcceptMessage {
            transfer_id: transfer,
            receiver_key: [key; 32],
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

    #[test]
    fn the_first_accept_of_the_claimer_wins_in_any_listing_order() {
        let t = TransferId::random();
        let first = message(10, "agent-b", 1, t);
        let second = message(11, "agent-b", 2, t);
        let other = message(9, "agent-c", 3, t);
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
