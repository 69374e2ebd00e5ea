//! The sender's lifecycle: create the offer task, wait for the named recipient's claim and first
//! accept, have the claim judged, listen for exactly the approved key, stream, and end the task
//! on ATS however the transfer ended.
//!
//! A transfer that breaks after the connection (the receiver or the network gone, the stream
//! closed, stalled or timed out) is offered again: its task is failed with the reason, a fresh
//! offer of the same file (new transfer id, same sender key) goes out and the wait for a claim
//! starts over, so a receiver that comes back resumes from its partial file. That happens at
//! most `retries` times, and only while the receiver was heard from (connection, bytes taken)
//! within the timeout; a refusal (NACK, reject, a policy), a local failure or a cancel ends the
//! send at once, since offering again cannot change it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ats_p2p_signal::{
    AcceptMessage, EventKind, FileOffer, Message, SignalError, Task, TaskEvent, TaskId, TaskStatus,
};
use ats_p2p_swarm::PublicKey;
use ats_p2p_wire::FileHash;

use crate::events::{ConnectionPath, Direction, Event};
use crate::lifecycle::{accept_from, first_accept};
use crate::node::SendError;
use crate::node::SendReport;
use crate::policy::{ClaimRejection, PeerApproval};
use crate::topic::transfer_topic;

mod ending;
#[cfg(test)]
mod tests;

use ending::ended;

/// How long a sender whose transfer broke after the connection waits for the receiver to end
/// the task with its own (more precise) reason before cancelling it.
pub(crate) const RECEIVER_REPORT_GRACE: Duration = Duration::from_secs(3);

/// What the sender's shell must do next, in order.
#[derive(Debug)]
pub(crate) enum SendAction {
    /// Create the offer task; answer with [`SendLifecycle::handle_task_created`].
    CreateTask,
    /// List the task's messages; answer with [`SendLifecycle::handle_messages`].
    ListMessages(TaskId),
    /// Judge the claim by the send policy; answer with [`SendLifecycle::handle_judgement`].
    JudgeClaim(ClaimToJudge),
    /// Admit exactly `key` and announce on `topic`; answer with
    /// [`SendLifecycle::handle_connection`] when it connects, or
    /// [`SendLifecycle::handle_listen_failed`].
    Listen {
        /// The approved receiver key.
        key: PublicKey,
        /// The transfer's topic.
        topic: [u8; 32],
    },
    /// Withdraw the announcement and close the firewall again.
    StopListening {
        /// The transfer's topic.
        topic: [u8; 32],
    },
    /// Stream the file over the connection; answer with [`SendLifecycle::handle_outcome`].
    Stream,
    /// Remember the receiver's key (trust on first use: it proved the key and stored the file).
    RememberKey(PeerApproval),
    /// Cancel the task on ATS (the offer is withdrawn before any byte flowed).
    Cancel(TaskId),
    /// Fail the task on ATS with `reason` (the receiver stayed silent after bytes flowed);
    /// cancel it if that is refused. A re-offer may follow ([`SendAction::CreateTask`]).
    Fail {
        /// The task.
        task: TaskId,
        /// What the sender saw.
        reason: String,
    },
    /// Report an event.
    Emit(Event),
}

/// The facts of a claim the send policy judges, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimToJudge {
    /// Our offer's transfer id (32 hex).
    pub(crate) transfer_id: String,
    /// The offer's recipient.
    pub(crate) recipient_id: String,
    /// Who claimed.
    pub(crate) claimer_id: String,
    /// The accept's transfer id (ours when there is no accept yet).
    pub(crate) accept_transfer_id: String,
    /// The accept's key, 64 hex (empty without an accept).
    pub(crate) receiver_key: String,
}

#[derive(Debug)]
enum State {
    /// Waiting for the task to exist.
    Creating,
    /// Waiting for the recipient's claim and accept (or for messages / a judgement asked for).
    Awaiting { deadline: Instant, asked: bool },
    /// Waiting for the approved receiver to connect.
    Listening {
        deadline: Instant,
        approval: PeerApproval,
    },
    /// Bytes flow.
    Streaming {
        approval: PeerApproval,
        path: ConnectionPath,
        started: Instant,
    },
    /// Failed after the connection: the receiver may still end the task with its reason.
    Grace { error: SendError, until: Instant },
    /// Finished; the outcome is ready.
    Done,
}

/// The sender's ATS lifecycle for one offer (see the [module](super) docs).
#[derive(Debug)]
pub(crate) struct SendLifecycle {
    offer: FileOffer,
    /// The path sent, as shown in events.
    file_path: String,
    timeout: Duration,
    state: State,
    task: Option<TaskId>,
    /// The task ended on ATS (seen in a task event).
    task_ended: bool,
    actions: VecDeque<SendAction>,
    outcome: Option<Result<SendReport, SendError>>,
    /// The accepted receiver said it can resume.
    peer_resumes: bool,
    /// Bytes the receiver already held (from the stream, before its outcome).
    resumed_from: u64,
    /// How many times a broken transfer may be offered again.
    retries: u32,
    /// This offer's attempt: 1 for the first, 2 after the first re-offer, ...
    attempt: u32,
    /// When the receiver was last heard from on the swarm (its connection, bytes it took):
    /// a broken transfer is offered again only within the timeout from then.
    heard_from_receiver: Option<Instant>,
    /// The end of a re-offer's wait for a claim (the timeout from the receiver's last sign).
    reoffer_deadline: Option<Instant>,
    /// The node shuts down: nothing is offered again.
    cancelled: bool,
}

impl SendLifecycle {
    /// A lifecycle for `offer` of the file at `file_path`; waits `timeout` for an answer and
    /// then again for the connection. It never offers again unless told
    /// ([`with_retries`](Self::with_retries)).
    pub(crate) fn new(offer: FileOffer, file_path: String, timeout: Duration) -> Self {
        Self {
            offer,
            file_path,
            timeout,
            state: State::Creating,
            task: None,
            task_ended: false,
            actions: VecDeque::from([SendAction::CreateTask]),
            outcome: None,
            peer_resumes: false,
            resumed_from: 0,
            retries: 0,
            attempt: 1,
            heard_from_receiver: None,
            reoffer_deadline: None,
            cancelled: false,
        }
    }

    /// Offers a broken transfer again up to `retries` times (see the [module](self) docs).
    pub(crate) fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The offer.
    pub(crate) fn offer(&self) -> &FileOffer {
        &self.offer
    }

    /// The offer's task, once created.
    pub(crate) fn task(&self) -> Option<TaskId> {
        self.task
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<SendAction> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Awaiting { deadline, .. } | State::Listening { deadline, .. } => Some(*deadline),
            State::Grace { until, .. } => Some(*until),
            _ => None,
        }
    }

    /// The result, once every action is taken and the machine is done.
    pub(crate) fn poll_outcome(&mut self) -> Option<Result<SendReport, SendError>> {
        if self.actions.is_empty() {
            self.outcome.take()
        } else {
            None
        }
    }

    /// True while the shell should wait for the receiver's connection.
    pub(crate) fn is_listening(&self) -> bool {
        matches!(self.state, State::Listening { .. })
    }

    /// True while the shell should drive the file stream.
    pub(crate) fn is_streaming(&self) -> bool {
        matches!(self.state, State::Streaming { .. })
    }

    /// The task was created (or creating it failed: then the send ends without events).
    pub(crate) fn handle_task_created(&mut self, task: Result<Task, SignalError>, now: Instant) {
        if !matches!(self.state, State::Creating) {
            return;
        }
        let task = match task {
            Ok(task) => task,
            Err(source) => {
                self.state = State::Done;
                self.outcome = Some(Err(SendError::Signal {
                    doing: "creating the offer",
                    source,
                }));
                return;
            }
        };
        self.task = Some(task.id);
        self.actions.push_back(SendAction::Emit(Event::OfferSent {
            transfer_id: self.offer.transfer_id.to_string(),
            task_id: task.id.to_string(),
            file_name: self.offer.filename.clone(),
            file_size: self.offer.size,
            file_hash: hex::encode(self.offer.sha256),
            recipient_id: self.offer.recipient_id.clone(),
            file_count: self.offer.manifest.as_ref().map(|m| m.files.len() as u64),
        }));
        self.state = State::Awaiting {
            deadline: self.reoffer_deadline.take().unwrap_or(now + self.timeout),
            asked: false,
        };
        // The task may have changed before the watch caught up: start from its current state.
        self.on_task(EventKind::Updated, &task, None, now);
    }

    /// A task event from the hub's watch (events of other tasks are ignored).
    pub(crate) fn handle_task_event(&mut self, event: &TaskEvent, now: Instant) {
        self.on_task(event.kind.clone(), &event.task, event.message.as_ref(), now);
    }

    fn on_task(&mut self, kind: EventKind, task: &Task, message: Option<&Message>, now: Instant) {
        if Some(task.id) != self.task {
            return;
        }
        if task.status.is_terminal() {
            self.task_ended = true;
        }
        match &mut self.state {
            State::Awaiting { asked, .. } => {
                if let Some(e) = ended(task) {
                    return self.fail(e, now);
                }
                if task.status != TaskStatus::InProgress || *asked {
                    return;
                }
                let claimer = task.assignee_id.clone().unwrap_or_default();
                if claimer != self.offer.recipient_id {
                    // Refused before any key is looked at: someone else took the offer.
                    *asked = true;
                    let claim = self.claim(&claimer, None);
                    self.actions.push_back(SendAction::JudgeClaim(claim));
                    return;
                }
                // Always the first accept the claimer posted, read from the task's messages
                // (not the event at hand).
                if kind == EventKind::Message
                    && message.is_some_and(|m| accept_from(m, &claimer).is_none())
                {
                    return;
                }
                *asked = true;
                self.actions.push_back(SendAction::ListMessages(task.id));
            }
            State::Listening { .. } => {
                if let Some(e) = ended(task) {
                    self.fail(e, now);
                }
            }
            State::Grace { .. } => {
                if self.task_ended {
                    self.finish_failure(now);
                }
            }
            State::Creating | State::Streaming { .. } | State::Done => {}
        }
    }

    /// The task's messages, asked for by [`SendAction::ListMessages`].
    pub(crate) fn handle_messages(
        &mut self,
        messages: Result<Vec<Message>, SignalError>,
        now: Instant,
    ) {
        let State::Awaiting { asked, .. } = &mut self.state else {
            return;
        };
        *asked = false;
        let messages = match messages {
            Ok(m) => m,
            Err(source) => {
                return self.fail(
                    SendError::Signal {
                        doing: "reading the accept message",
                        source,
                    },
                    now,
                );
            }
        };
        let claimer = self.offer.recipient_id.clone();
        if let Some(accept) = first_accept(&messages, &claimer) {
            *asked = true;
            if self.offer.is_directory() && !accept.directories {
                return self.fail(SendError::NoDirectorySupport, now);
            }
            self.peer_resumes = accept.resume;
            let claim = self.claim(&claimer, Some(&accept));
            self.actions.push_back(SendAction::JudgeClaim(claim));
        }
    }

    /// The send policy's judgement of [`SendAction::JudgeClaim`].
    pub(crate) fn handle_judgement(
        &mut self,
        judgement: Result<PeerApproval, ClaimRejection>,
        now: Instant,
    ) {
        if !matches!(self.state, State::Awaiting { .. }) {
            return;
        }
        match judgement {
            Ok(approval) => {
                self.actions.push_back(SendAction::Listen {
                    key: approval.key,
                    topic: self.topic(),
                });
                self.state = State::Listening {
                    deadline: now + self.timeout,
                    approval,
                };
            }
            Err(rejection) => self.fail(SendError::Claim(rejection), now),
        }
    }

    /// Announcing on the topic failed.
    pub(crate) fn handle_listen_failed(&mut self, error: SendError, now: Instant) {
        if self.is_listening() {
            self.fail(error, now);
        }
    }

    /// The approved receiver connected over `path`.
    pub(crate) fn handle_connection(&mut self, path: ConnectionPath, now: Instant) {
        let State::Listening { approval, .. } = &self.state else {
            return;
        };
        let approval = *approval;
        self.actions.push_back(SendAction::StopListening {
            topic: self.topic(),
        });
        self.actions
            .push_back(SendAction::Emit(Event::TransferStart {
                transfer_id: self.offer.transfer_id.to_string(),
                direction: Direction::Send,
                peer_id: self.offer.recipient_id.clone(),
                file_name: self.offer.filename.clone(),
                file_size: self.offer.size,
                path: path.clone(),
            }));
        self.actions.push_back(SendAction::Stream);
        self.heard_from_receiver = Some(now);
        self.state = State::Streaming {
            approval,
            path,
            started: now,
        };
    }

    /// The receiver took bytes of the stream (it is alive).
    pub(crate) fn handle_progress(&mut self, now: Instant) {
        if self.is_streaming() {
            self.heard_from_receiver = Some(now);
        }
    }

    /// Whether the accepted receiver can resume (its accept said so): the stream may offer it.
    pub(crate) fn peer_can_resume(&self) -> bool {
        self.peer_resumes
    }

    /// The stream resumed: the receiver already held `offset` bytes (before the outcome).
    pub(crate) fn handle_resumed(&mut self, offset: u64) {
        self.resumed_from = offset;
    }

    /// The stream ended: `Ok(bytes)` after the receiver's ACK.
    pub(crate) fn handle_outcome(&mut self, outcome: Result<u64, SendError>, now: Instant) {
        let State::Streaming {
            approval,
            path,
            started,
        } = &self.state
        else {
            return;
        };
        let bytes = match outcome {
            Ok(bytes) => bytes,
            Err(e) => return self.fail(e, now),
        };
        let report = SendReport {
            transfer_id: self.offer.transfer_id,
            task_id: self.task.unwrap_or_default(),
            file_name: self.offer.filename.clone(),
            file_hash: FileHash(self.offer.sha256),
            bytes,
            resumed_from: self.resumed_from,
            duration: now.saturating_duration_since(*started),
            path: path.clone(),
        };
        // Trust on first use only now: the peer proved it holds the key (Noise) and stored the
        // file (ACK after its SHA-256 matched). A claim alone proves nothing.
        self.actions.push_back(SendAction::RememberKey(*approval));
        self.actions
            .push_back(SendAction::Emit(Event::TransferComplete {
                transfer_id: report.transfer_id.to_string(),
                direction: Direction::Send,
                file_path: self.file_path.clone(),
                file_hash: report.file_hash.to_hex(),
                bytes: report.bytes,
                resumed_from: report.resumed_from,
                duration_ms: crate::node::millis(report.duration),
                path: report.path.clone(),
            }));
        self.state = State::Done;
        self.outcome = Some(Ok(report));
    }

    /// The node shuts down (or the watch ended).
    pub(crate) fn handle_cancel(&mut self, now: Instant) {
        self.cancelled = true;
        match &self.state {
            State::Done => {}
            State::Grace { .. } => self.end_silent_receive(now),
            State::Creating => {
                self.state = State::Done;
                self.outcome = Some(Err(SendError::Cancelled));
            }
            _ => self.fail(SendError::Cancelled, now),
        }
    }

    /// The instant from [`poll_timeout`](Self::poll_timeout) came.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Awaiting { deadline, .. } if now >= *deadline => {
                self.fail(SendError::NoAnswer(self.timeout), now);
            }
            State::Listening { deadline, .. } if now >= *deadline => {
                self.fail(SendError::NoConnection(self.timeout), now);
            }
            State::Grace { until, .. } if now >= *until => self.end_silent_receive(now),
            _ => {}
        }
    }

    fn topic(&self) -> [u8; 32] {
        transfer_topic(self.offer.transfer_id.as_bytes())
    }

    fn claim(&self, claimer: &str, accept: Option<&AcceptMessage>) -> ClaimToJudge {
        let ours = self.offer.transfer_id.to_string();
        ClaimToJudge {
            transfer_id: ours.clone(),
            recipient_id: self.offer.recipient_id.clone(),
            claimer_id: claimer.to_owned(),
            accept_transfer_id: accept.map_or(ours, |a| a.transfer_id.to_string()),
            receiver_key: accept
                .map(|a| hex::encode(a.receiver_key))
                .unwrap_or_default(),
        }
    }
}
