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
    TransferId,
};
use ats_p2p_swarm::PublicKey;
use ats_p2p_wire::FileHash;

use super::{accept_from, first_accept};
use crate::error::reason_chain;
use crate::events::{ConnectionPath, Direction, Event, FailureKind};
use crate::node::SendError;
use crate::node::SendReport;
use crate::policy::{ClaimRejection, PeerApproval};
use crate::topic::transfer_topic;

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

    /// Ends the transfer with `error`: ATS must show how every transfer ended. Once bytes
    /// flowed, the receiver holds the claim and fails the task with its own reason, so the
    /// sender waits [`RECEIVER_REPORT_GRACE`] for that before failing it with what it saw;
    /// before any byte flowed, the offer is withdrawn (cancelled).
    fn fail(&mut self, error: SendError, now: Instant) {
        if let State::Listening { .. } = self.state {
            self.actions.push_back(SendAction::StopListening {
                topic: self.topic(),
            });
        }
        let receiver_reports =
            matches!(error, SendError::Stream(_) | SendError::FileChanged { .. });
        self.state = State::Grace {
            error,
            until: now + RECEIVER_REPORT_GRACE,
        };
        if self.task_ended {
            self.finish_failure(now);
        } else if !receiver_reports {
            if let Some(task) = self.task {
                self.actions.push_back(SendAction::Cancel(task));
            }
            self.finish_failure(now);
        }
    }

    /// The receiver did not report how the transfer ended (it was killed, or lost ATS): the
    /// sender fails the task with what it saw.
    fn end_silent_receive(&mut self, now: Instant) {
        if let (Some(task), State::Grace { error, .. }) = (self.task, &self.state) {
            let reason = format!(
                "the receiver did not report how the transfer ended; the sender saw: {}",
                reason_chain(error)
            );
            self.actions.push_back(SendAction::Fail { task, reason });
        }
        self.finish_failure(now);
    }

    /// The task of the failure held in [`State::Grace`] ended on ATS: offers the file again
    /// if a new attempt can help, or reports the failure and ends.
    fn finish_failure(&mut self, now: Instant) {
        let State::Grace { error, .. } = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        if self.may_offer_again(&error, now) {
            return self.offer_again(&error);
        }
        self.actions
            .push_back(SendAction::Emit(Event::TransferFailed {
                transfer_id: self.offer.transfer_id.to_string(),
                direction: Direction::Send,
                kind: error.kind(),
                code: error.code().to_owned(),
                reason: reason_chain(&error),
            }));
        self.outcome = Some(Err(error));
    }

    /// Whether the transfer that failed with `error` is offered again: it broke after the
    /// connection in a way a new attempt can mend (the peer or the network gone, a timeout),
    /// nobody cancelled, attempts are left, and the receiver was heard from within the timeout.
    fn may_offer_again(&self, error: &SendError, now: Instant) -> bool {
        let broken = matches!(
            error,
            SendError::Stream(e) if matches!(e.kind(), FailureKind::Network | FailureKind::TimedOut)
        );
        broken
            && !self.cancelled
            && self.attempt <= self.retries
            && self.retry_deadline().is_some_and(|d| now < d)
    }

    /// The end of the time a broken transfer may be offered again in.
    fn retry_deadline(&self) -> Option<Instant> {
        self.heard_from_receiver.map(|t| t + self.timeout)
    }

    /// Offers the file again under a new transfer id after a broken transfer (whose task has
    /// ended, or is being failed), and waits for a claim until the retry deadline.
    fn offer_again(&mut self, error: &SendError) {
        self.attempt = self.attempt.saturating_add(1);
        self.actions.push_back(SendAction::Emit(Event::Retrying {
            transfer_id: self.offer.transfer_id.to_string(),
            attempt: self.attempt,
            max_attempts: self.retries.saturating_add(1),
            kind: error.kind(),
            code: error.code().to_owned(),
            reason: reason_chain(error),
        }));
        self.offer.transfer_id = TransferId::random();
        self.reoffer_deadline = self.retry_deadline();
        self.heard_from_receiver = None;
        self.task = None;
        self.task_ended = false;
        self.peer_resumes = false;
        self.resumed_from = 0;
        self.state = State::Creating;
        self.actions.push_back(SendAction::CreateTask);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::test_support::{accept, approval, path, signal_error, task};
    use crate::policy::ClaimRejection;
    use ats_p2p_signal::{EventOrigin, TransferId};

    const TASK: TaskId = 7;
    const TIMEOUT: Duration = Duration::from_secs(120);

    fn offer() -> FileOffer {
        FileOffer {
            manifest: None,
            transfer_id: TransferId::random(),
            filename: "data.csv".into(),
            size: 10,
            sha256: [0xab; 32],
            sender_id: "agent-a".into(),
            recipient_id: "agent-b".into(),
            sender_key: [9; 32],
        }
    }

    fn event(kind: EventKind, task: Task, message: Option<Message>) -> TaskEvent {
        TaskEvent {
            kind,
            task,
            message,
            actor: None,
            event_id: None,
            origin: EventOrigin::Live,
        }
    }

    fn claimed_by(who: &str) -> TaskEvent {
        event(
            EventKind::Claimed,
            task(TASK, TaskStatus::InProgress, Some(who), None),
            None,
        )
    }

    fn closed(status: TaskStatus, reason: Option<&str>) -> TaskEvent {
        event(
            EventKind::Other(status.as_str().into()),
            task(TASK, status, Some("agent-b"), reason),
            None,
        )
    }

    fn drain(m: &mut SendLifecycle) -> Vec<SendAction> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn names(actions: &[SendAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                SendAction::Emit(e) => format!("emit:{}", e.name()),
                SendAction::CreateTask => "create".into(),
                SendAction::ListMessages(_) => "list".into(),
                SendAction::JudgeClaim(_) => "judge".into(),
                SendAction::Listen { .. } => "listen".into(),
                SendAction::StopListening { .. } => "stop_listening".into(),
                SendAction::Stream => "stream".into(),
                SendAction::RememberKey(_) => "remember".into(),
                SendAction::Cancel(_) => "cancel".into(),
                SendAction::Fail { .. } => "fail".into(),
            })
            .collect()
    }

    /// The `retrying` event among `actions`.
    fn retrying(actions: &[SendAction]) -> &Event {
        actions
            .iter()
            .find_map(|a| match a {
                SendAction::Emit(e @ Event::Retrying { .. }) => Some(e),
                _ => None,
            })
            .expect("a retrying event")
    }

    /// A stream that broke: the receiver or the network gone.
    fn broken() -> SendError {
        SendError::Stream(crate::transfer::StreamSendError::Io(std::io::Error::other(
            "reset",
        )))
    }

    /// Drives `m`, waiting for an answer on task `id`, through the claim, the accept and the
    /// approval to the stream.
    fn claim_to_stream(m: &mut SendLifecycle, id: TaskId, now: Instant) {
        let claimed = event(
            EventKind::Claimed,
            task(id, TaskStatus::InProgress, Some("agent-b"), None),
            None,
        );
        m.handle_task_event(&claimed, now);
        assert_eq!(names(&drain(m)), ["list"]);
        let t = m.offer().transfer_id;
        m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), now);
        assert_eq!(names(&drain(m)), ["judge"]);
        m.handle_judgement(Ok(approval(5)), now);
        assert_eq!(names(&drain(m)), ["listen"]);
        m.handle_connection(path(), now);
        assert_eq!(
            names(&drain(m)),
            ["stop_listening", "emit:transfer_start", "stream"]
        );
    }

    /// A machine that offers a broken transfer again up to `retries` times, streaming.
    fn streaming_with_retries(retries: u32, now: Instant) -> SendLifecycle {
        let mut m =
            SendLifecycle::new(offer(), "/tmp/data.csv".into(), TIMEOUT).with_retries(retries);
        assert_eq!(names(&drain(&mut m)), ["create"]);
        m.handle_task_created(Ok(task(TASK, TaskStatus::Pending, None, None)), now);
        assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
        claim_to_stream(&mut m, TASK, now);
        m
    }

    /// Breaks `m`'s stream at `now` and lets the grace pass without the receiver's report:
    /// the actions that follow.
    fn break_silently(m: &mut SendLifecycle, now: Instant) -> Vec<SendAction> {
        m.handle_outcome(Err(broken()), now);
        assert!(drain(m).is_empty(), "the receiver may report first");
        m.handle_timeout(now + RECEIVER_REPORT_GRACE);
        drain(m)
    }

    fn failure(m: &mut SendLifecycle) -> SendError {
        match m.poll_outcome() {
            Some(Err(e)) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// A machine whose offer task exists and that waits for an answer.
    fn offered(now: Instant) -> SendLifecycle {
        let mut m = SendLifecycle::new(offer(), "/tmp/data.csv".into(), TIMEOUT);
        assert_eq!(names(&drain(&mut m)), ["create"]);
        m.handle_task_created(Ok(task(TASK, TaskStatus::Pending, None, None)), now);
        assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
        assert_eq!(m.poll_timeout(), Some(now + TIMEOUT));
        m
    }

    /// A machine listening for the approved receiver.
    fn listening(now: Instant) -> SendLifecycle {
        let mut m = offered(now);
        m.handle_task_event(&claimed_by("agent-b"), now);
        assert_eq!(names(&drain(&mut m)), ["list"]);
        let t = m.offer().transfer_id;
        m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), now);
        let judge = drain(&mut m);
        assert_eq!(names(&judge), ["judge"]);
        m.handle_judgement(Ok(approval(5)), now);
        let listen = drain(&mut m);
        assert!(matches!(listen[..], [SendAction::Listen { key, .. }] if key == approval(5).key));
        m
    }

    /// A machine streaming the file.
    fn streaming(now: Instant) -> SendLifecycle {
        let mut m = listening(now);
        m.handle_connection(path(), now);
        assert_eq!(
            names(&drain(&mut m)),
            ["stop_listening", "emit:transfer_start", "stream"]
        );
        assert!(m.is_streaming());
        assert_eq!(m.poll_timeout(), None);
        m
    }

    /// A machine offering a directory, claimed by the recipient, that just read its accept
    /// (with or without `"dirs":true`).
    fn directory_offer_accepted(now: Instant, directories: bool) -> SendLifecycle {
        use ats_p2p_signal::{Manifest, ManifestFile};
        let manifest = Manifest {
            dirs: vec!["sub".into()],
            files: vec![ManifestFile {
                path: "sub/a".into(),
                size: 10,
                sha256: [0xab; 32],
            }],
        };
        let dir_offer = FileOffer {
            sha256: manifest.digest(),
            manifest: Some(manifest),
            ..offer()
        };
        let mut m = SendLifecycle::new(dir_offer, "/tmp/dir".into(), TIMEOUT);
        drain(&mut m);
        m.handle_task_created(Ok(task(TASK, TaskStatus::Pending, None, None)), now);
        drain(&mut m);
        m.handle_task_event(&claimed_by("agent-b"), now);
        assert_eq!(names(&drain(&mut m)), ["list"]);
        let mut message = accept(1, "agent-b", 5, m.offer().transfer_id);
        let content = AcceptMessage {
            transfer_id: m.offer().transfer_id,
            receiver_key: [5; 32],
            resume: false,
            directories,
        }
        .to_content();
        message.parts = vec![ats_p2p_signal::Part::text(content)];
        m.handle_messages(Ok(vec![message]), now);
        m
    }

    #[test]
    fn a_directory_goes_only_to_a_receiver_that_says_it_takes_directories() {
        let now = Instant::now();
        let mut m = directory_offer_accepted(now, false);
        let actions = names(&drain(&mut m));
        assert!(
            !actions.iter().any(|a| a == "judge" || a == "listen"),
            "nothing more after an accept without directories: {actions:?}"
        );
        assert!(
            actions.iter().any(|a| a == "cancel" || a == "fail"),
            "the task ends visibly: {actions:?}"
        );
        assert!(matches!(failure(&mut m), SendError::NoDirectorySupport));

        let mut m = directory_offer_accepted(now, true);
        assert_eq!(names(&drain(&mut m)), ["judge"]);
        assert!(m.poll_outcome().is_none());
    }

    #[test]
    fn accepted_and_verified() {
        let now = Instant::now();
        let mut m = streaming(now);
        m.handle_outcome(Ok(10), now + Duration::from_millis(1500));
        assert_eq!(
            names(&drain(&mut m)),
            ["remember", "emit:transfer_complete"]
        );
        let report = m.poll_outcome().unwrap().unwrap();
        assert_eq!(report.bytes, 10);
        assert_eq!(report.duration, Duration::from_millis(1500));
        assert_eq!(report.task_id, TASK);
        assert!(m.poll_timeout().is_none());
    }

    #[test]
    fn the_claim_is_judged_with_the_first_accept_of_the_recipient() {
        let now = Instant::now();
        let mut m = offered(now);
        m.handle_task_event(&claimed_by("agent-b"), now);
        drain(&mut m);
        let t = m.offer().transfer_id;
        m.handle_messages(
            Ok(vec![
                accept(12, "agent-b", 2, t),
                accept(11, "agent-b", 1, t),
            ]),
            now,
        );
        let [SendAction::JudgeClaim(claim)] = &drain(&mut m)[..] else {
            panic!("no judgement asked");
        };
        assert_eq!(claim.receiver_key, hex::encode([1u8; 32]));
        assert_eq!(claim.claimer_id, "agent-b");
    }

    #[test]
    fn a_claim_without_an_accept_yet_waits_for_the_accept_message() {
        let now = Instant::now();
        let mut m = offered(now);
        m.handle_task_event(&claimed_by("agent-b"), now);
        drain(&mut m);
        m.handle_messages(Ok(vec![]), now);
        assert!(drain(&mut m).is_empty());
        // A message that is no accept from the claimer does not cost a listing.
        let chat = Message {
            parts: vec![ats_p2p_signal::Part::text("hello")],
            ..accept(2, "agent-b", 1, m.offer().transfer_id)
        };
        let ev = event(
            EventKind::Message,
            task(TASK, TaskStatus::InProgress, Some("agent-b"), None),
            Some(chat),
        );
        m.handle_task_event(&ev, now);
        assert!(drain(&mut m).is_empty());
        let acc = accept(3, "agent-b", 1, m.offer().transfer_id);
        let ev = event(
            EventKind::Message,
            task(TASK, TaskStatus::InProgress, Some("agent-b"), None),
            Some(acc),
        );
        m.handle_task_event(&ev, now);
        assert_eq!(names(&drain(&mut m)), ["list"]);
    }

    #[test]
    fn someone_else_claiming_is_judged_without_reading_messages_and_cancelled() {
        let now = Instant::now();
        let mut m = offered(now);
        m.handle_task_event(&claimed_by("mallory"), now);
        let [SendAction::JudgeClaim(claim)] = &drain(&mut m)[..] else {
            panic!("no judgement asked");
        };
        assert_eq!(claim.claimer_id, "mallory");
        assert_eq!(claim.receiver_key, "");
        m.handle_judgement(
            Err(ClaimRejection::WrongClaimer {
                claimer: "mallory".into(),
                recipient: "agent-b".into(),
            }),
            now,
        );
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Claim(_)));
    }

    #[test]
    fn rejected_by_the_receiver() {
        let now = Instant::now();
        let mut m = offered(now);
        m.handle_task_event(&closed(TaskStatus::Rejected, Some("too large")), now);
        // The task already ended: nothing to cancel.
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
        match failure(&mut m) {
            SendError::Declined { reason } => assert_eq!(reason, "too large"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn a_task_already_closed_at_creation_fails_at_once() {
        let now = Instant::now();
        let mut m = SendLifecycle::new(offer(), "f".into(), TIMEOUT);
        drain(&mut m);
        m.handle_task_created(Ok(task(TASK, TaskStatus::Cancelled, None, None)), now);
        assert_eq!(
            names(&drain(&mut m)),
            ["emit:offer_sent", "emit:transfer_failed"]
        );
        assert!(matches!(failure(&mut m), SendError::TaskCancelled));
    }

    #[test]
    fn creating_the_task_fails_without_events() {
        let mut m = SendLifecycle::new(offer(), "f".into(), TIMEOUT);
        drain(&mut m);
        m.handle_task_created(Err(signal_error()), Instant::now());
        assert!(drain(&mut m).is_empty());
        assert!(matches!(failure(&mut m), SendError::Signal { .. }));
    }

    #[test]
    fn nobody_answers_within_the_timeout() {
        let now = Instant::now();
        let mut m = offered(now);
        m.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
        assert!(drain(&mut m).is_empty(), "not due yet");
        m.handle_timeout(now + TIMEOUT);
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::NoAnswer(t) if t == TIMEOUT));
    }

    #[test]
    fn accepted_but_never_connected() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let mut m = offered(now);
        m.handle_task_event(&claimed_by("agent-b"), later);
        drain(&mut m);
        let t = m.offer().transfer_id;
        m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), later);
        drain(&mut m);
        m.handle_judgement(Ok(approval(5)), later);
        drain(&mut m);
        // The connection gets its own full timeout from the approval.
        assert_eq!(m.poll_timeout(), Some(later + TIMEOUT));
        m.handle_timeout(later + TIMEOUT);
        assert_eq!(
            names(&drain(&mut m)),
            ["stop_listening", "cancel", "emit:transfer_failed"]
        );
        assert!(matches!(failure(&mut m), SendError::NoConnection(_)));
    }

    #[test]
    fn the_receiver_giving_up_while_we_listen_ends_the_send() {
        let now = Instant::now();
        let mut m = listening(now);
        m.handle_task_event(&closed(TaskStatus::Failed, Some("no path")), now);
        assert_eq!(
            names(&drain(&mut m)),
            ["stop_listening", "emit:transfer_failed"]
        );
        assert!(
            matches!(failure(&mut m), SendError::FailedByReceiver { reason } if reason == "no path")
        );
    }

    #[test]
    fn a_stream_failure_leaves_the_receiver_a_grace_to_report() {
        let now = Instant::now();
        let mut m = streaming(now);
        let broken = SendError::Stream(crate::transfer::StreamSendError::Io(
            std::io::Error::other("reset"),
        ));
        m.handle_outcome(Err(broken), now);
        assert!(drain(&mut m).is_empty());
        assert_eq!(m.poll_timeout(), Some(now + RECEIVER_REPORT_GRACE));
        assert!(m.poll_outcome().is_none());
        // The receiver fails the task with its reason within the grace: no cancel.
        m.handle_task_event(&closed(TaskStatus::Failed, Some("hash mismatch")), now);
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Stream(_)));
    }

    #[test]
    fn without_the_receivers_report_the_sender_fails_the_task_after_the_grace() {
        let now = Instant::now();
        let mut m = streaming(now);
        let refused = SendError::FileChanged {
            path: "f".into(),
            source: crate::transfer::StreamSendError::Io(std::io::Error::other("nack")),
        };
        m.handle_outcome(Err(refused), now);
        assert!(drain(&mut m).is_empty());
        m.handle_timeout(now + RECEIVER_REPORT_GRACE);
        let actions = drain(&mut m);
        assert_eq!(names(&actions), ["fail", "emit:transfer_failed"]);
        let SendAction::Fail { reason, .. } = &actions[0] else {
            unreachable!()
        };
        assert!(
            reason.starts_with("the receiver did not report"),
            "{reason}"
        );
        assert!(matches!(failure(&mut m), SendError::FileChanged { .. }));
        // Late events change nothing.
        m.handle_task_event(&closed(TaskStatus::Failed, None), now);
        m.handle_timeout(now + TIMEOUT);
        assert!(drain(&mut m).is_empty());
        assert!(m.poll_outcome().is_none());
    }

    #[test]
    fn a_report_seen_during_the_stream_spares_the_grace() {
        let now = Instant::now();
        let mut m = streaming(now);
        m.handle_task_event(&closed(TaskStatus::Failed, Some("disk full")), now);
        assert!(drain(&mut m).is_empty(), "the stream decides");
        let broken = SendError::Stream(crate::transfer::StreamSendError::Io(
            std::io::Error::other("reset"),
        ));
        m.handle_outcome(Err(broken), now);
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
    }

    #[test]
    fn cancel_at_each_stage() {
        let now = Instant::now();
        // Before the task exists.
        let mut m = SendLifecycle::new(offer(), "f".into(), TIMEOUT);
        drain(&mut m);
        m.handle_cancel(now);
        assert!(drain(&mut m).is_empty());
        assert!(matches!(failure(&mut m), SendError::Cancelled));
        // Waiting for an answer.
        let mut m = offered(now);
        m.handle_cancel(now);
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Cancelled));
        // Listening.
        let mut m = listening(now);
        m.handle_cancel(now);
        assert_eq!(
            names(&drain(&mut m)),
            ["stop_listening", "cancel", "emit:transfer_failed"]
        );
        // Streaming.
        let mut m = streaming(now);
        m.handle_cancel(now);
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Cancelled));
        // In the grace: end the task now rather than wait.
        let mut m = streaming(now);
        let broken = SendError::Stream(crate::transfer::StreamSendError::Io(
            std::io::Error::other("reset"),
        ));
        m.handle_outcome(Err(broken), now);
        m.handle_cancel(now);
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Stream(_)));
        // Done: nothing more.
        m.handle_cancel(now);
        assert!(drain(&mut m).is_empty());
    }

    #[test]
    fn duplicate_and_late_inputs_are_ignored() {
        let now = Instant::now();
        let mut m = offered(now);
        // Events of other tasks.
        let other = event(
            EventKind::Claimed,
            task(TASK + 1, TaskStatus::Cancelled, Some("agent-b"), None),
            None,
        );
        m.handle_task_event(&other, now);
        assert!(drain(&mut m).is_empty());
        // A second claim event while the first is being read.
        m.handle_task_event(&claimed_by("agent-b"), now);
        m.handle_task_event(&claimed_by("agent-b"), now);
        assert_eq!(names(&drain(&mut m)), ["list"]);
        // A connection or outcome before the approval means nothing.
        m.handle_connection(path(), now);
        m.handle_outcome(Ok(10), now);
        assert!(drain(&mut m).is_empty());
        let t = m.offer().transfer_id;
        m.handle_messages(Ok(vec![accept(1, "agent-b", 5, t)]), now);
        drain(&mut m);
        m.handle_judgement(Ok(approval(5)), now);
        drain(&mut m);
        // A late judgement or claim event after the approval.
        m.handle_judgement(Ok(approval(6)), now);
        m.handle_task_event(&claimed_by("agent-b"), now);
        assert!(drain(&mut m).is_empty());
        m.handle_connection(path(), now);
        drain(&mut m);
        m.handle_connection(path(), now);
        assert!(
            drain(&mut m).is_empty(),
            "a second connection is no second stream"
        );
    }

    #[test]
    fn a_broken_transfer_is_offered_again_and_resumed() {
        let now = Instant::now();
        let mut m = streaming_with_retries(5, now);
        let first = m.offer().clone();
        let later = now + Duration::from_secs(5);
        m.handle_progress(later);
        let actions = break_silently(&mut m, later);
        // The broken task is failed first (ATS shows how it ended), then a fresh offer.
        assert_eq!(names(&actions), ["fail", "emit:retrying", "create"]);
        let SendAction::Fail { task: failed, .. } = &actions[0] else {
            unreachable!()
        };
        assert_eq!(*failed, TASK);
        let Event::Retrying {
            transfer_id,
            attempt,
            max_attempts,
            kind,
            code,
            ..
        } = retrying(&actions)
        else {
            unreachable!()
        };
        assert_eq!(*transfer_id, first.transfer_id.to_string());
        assert_eq!((*attempt, *max_attempts), (2, 6));
        assert_eq!(
            (*kind, code.as_str()),
            (FailureKind::Network, "stream_failed")
        );
        // The same file from the same key, under a new transfer id (a new topic).
        let again = m.offer().clone();
        assert_ne!(again.transfer_id, first.transfer_id);
        assert_eq!(
            (again.sha256, again.size, again.sender_key, &again.filename),
            (first.sha256, first.size, first.sender_key, &first.filename)
        );
        assert!(m.poll_outcome().is_none(), "the send goes on");
        assert_eq!(m.task(), None);

        // The re-offer waits for a claim until the timeout from the receiver's last sign.
        let reoffered = later + RECEIVER_REPORT_GRACE;
        m.handle_task_created(
            Ok(task(TASK + 1, TaskStatus::Pending, None, None)),
            reoffered,
        );
        assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
        assert_eq!(m.poll_timeout(), Some(later + TIMEOUT));
        claim_to_stream(&mut m, TASK + 1, reoffered);
        m.handle_resumed(4);
        m.handle_outcome(Ok(10), reoffered + Duration::from_secs(1));
        assert_eq!(
            names(&drain(&mut m)),
            ["remember", "emit:transfer_complete"]
        );
        let report = m.poll_outcome().unwrap().unwrap();
        assert_eq!(report.transfer_id, again.transfer_id);
        assert_eq!(report.task_id, TASK + 1);
        assert_eq!(report.resumed_from, 4);
    }

    #[test]
    fn a_report_of_the_receiver_in_the_grace_ends_the_task_and_the_file_is_offered_again() {
        let now = Instant::now();
        let mut m = streaming_with_retries(1, now);
        m.handle_outcome(Err(broken()), now);
        assert!(drain(&mut m).is_empty());
        m.handle_task_event(&closed(TaskStatus::Failed, Some("stream failed")), now);
        // The receiver ended the task itself: nothing to fail, the offer goes out again.
        assert_eq!(names(&drain(&mut m)), ["emit:retrying", "create"]);
    }

    #[test]
    fn refusals_and_local_failures_are_not_offered_again() {
        use crate::transfer::StreamSendError;
        use ats_p2p_wire::TransferError;
        let refusals: Vec<fn() -> SendError> = vec![
            // NACK: wrong hash, policy, size.
            || {
                SendError::Stream(StreamSendError::Transfer(TransferError::Nack(
                    "hash".into(),
                )))
            },
            // The receiver gave up on its side (disk full, stopped).
            || {
                SendError::Stream(StreamSendError::Transfer(TransferError::PeerError(
                    "disk".into(),
                )))
            },
            // The file changed since it was offered.
            || SendError::FileChanged {
                path: "f".into(),
                source: StreamSendError::Transfer(TransferError::Nack("hash".into())),
            },
            // Our own file cannot be read.
            || {
                SendError::Stream(StreamSendError::Read {
                    path: "f".into(),
                    source: std::io::Error::other("eio"),
                })
            },
        ];
        for refusal in refusals {
            let now = Instant::now();
            let mut m = streaming_with_retries(5, now);
            let expected = refusal();
            m.handle_outcome(Err(refusal()), now);
            m.handle_timeout(now + RECEIVER_REPORT_GRACE);
            assert_eq!(
                names(&drain(&mut m)),
                ["fail", "emit:transfer_failed"],
                "{expected:?}"
            );
            assert_eq!(failure(&mut m).code(), expected.code());
        }
    }

    #[test]
    fn a_rejection_or_a_cancel_is_not_offered_again() {
        let now = Instant::now();
        // The receiver declines the re-offer: that ends the send.
        let mut m = streaming_with_retries(5, now);
        assert_eq!(
            names(&break_silently(&mut m, now)),
            ["fail", "emit:retrying", "create"]
        );
        m.handle_task_created(Ok(task(TASK + 1, TaskStatus::Pending, None, None)), now);
        drain(&mut m);
        let declined = event(
            EventKind::Other("rejected".into()),
            task(TASK + 1, TaskStatus::Rejected, Some("agent-b"), Some("no")),
            None,
        );
        m.handle_task_event(&declined, now);
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Declined { .. }));

        // Cancelled while the stream runs.
        let mut m = streaming_with_retries(5, now);
        m.handle_cancel(now);
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Cancelled));

        // Cancelled in the grace after a break: the broken task is failed, nothing offered.
        let mut m = streaming_with_retries(5, now);
        m.handle_outcome(Err(broken()), now);
        m.handle_cancel(now);
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Stream(_)));

        // Cancelled while the re-offer waits for a claim.
        let mut m = streaming_with_retries(5, now);
        break_silently(&mut m, now);
        m.handle_task_created(Ok(task(TASK + 1, TaskStatus::Pending, None, None)), now);
        drain(&mut m);
        m.handle_cancel(now);
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Cancelled));
    }

    #[test]
    fn a_receiver_silent_for_the_timeout_is_not_offered_again() {
        let now = Instant::now();
        let heard = now + Duration::from_secs(10);
        // Heard from at `heard`; the stream broke when the timeout from then was spent.
        let mut m = streaming_with_retries(5, now);
        m.handle_progress(heard);
        let actions = break_silently(&mut m, heard + TIMEOUT - RECEIVER_REPORT_GRACE);
        assert_eq!(names(&actions), ["fail", "emit:transfer_failed"]);
        assert_eq!(failure(&mut m).code(), "stream_failed");
        // Just inside it, the file is offered again, and the claim wait ends with it.
        let mut m = streaming_with_retries(5, now);
        m.handle_progress(heard);
        let broke = heard + TIMEOUT - RECEIVER_REPORT_GRACE - Duration::from_millis(1);
        assert_eq!(
            names(&break_silently(&mut m, broke)),
            ["fail", "emit:retrying", "create"]
        );
        m.handle_task_created(
            Ok(task(TASK + 1, TaskStatus::Pending, None, None)),
            broke + RECEIVER_REPORT_GRACE,
        );
        drain(&mut m);
        assert_eq!(m.poll_timeout(), Some(heard + TIMEOUT));
        // Nobody claims it in time: the re-offer is withdrawn and the send ends.
        m.handle_timeout(heard + TIMEOUT);
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::NoAnswer(_)));
    }

    #[test]
    fn offers_again_at_most_the_retries_allowed() {
        let now = Instant::now();
        let mut m = streaming_with_retries(2, now);
        let mut attempts = Vec::new();
        for id in 1..=2 {
            let actions = break_silently(&mut m, now);
            assert_eq!(names(&actions), ["fail", "emit:retrying", "create"]);
            if let Event::Retrying { attempt, .. } = retrying(&actions) {
                attempts.push(*attempt);
            }
            m.handle_task_created(Ok(task(TASK + id, TaskStatus::Pending, None, None)), now);
            assert_eq!(names(&drain(&mut m)), ["emit:offer_sent"]);
            claim_to_stream(&mut m, TASK + id, now);
        }
        assert_eq!(attempts, [2, 3]);
        // The third break is the last.
        assert_eq!(
            names(&break_silently(&mut m, now)),
            ["fail", "emit:transfer_failed"]
        );
        assert_eq!(failure(&mut m).code(), "stream_failed");
        // Without retries (the machine's own default), a break ends the send at once.
        let mut m = streaming(now);
        assert_eq!(
            names(&break_silently(&mut m, now)),
            ["fail", "emit:transfer_failed"]
        );
    }

    #[test]
    fn reading_the_accept_failing_ends_the_send() {
        let now = Instant::now();
        let mut m = offered(now);
        m.handle_task_event(&claimed_by("agent-b"), now);
        drain(&mut m);
        m.handle_messages(Err(signal_error()), now);
        assert_eq!(names(&drain(&mut m)), ["cancel", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), SendError::Signal { .. }));
    }
}
