//! The receiver's lifecycle for one offer its policy let through: wait for its turn with the
//! sender, claim, post the accept with our key, step aside unless our accept is the first of
//! our actor id, connect to the sender's key, receive, and complete or fail the task; the claim's
//! lease is renewed every third of its length meanwhile.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ats_p2p_signal::{
    AcceptMessage, FileOffer, Message, SignalError, TaskEvent, TaskId, TaskStatus,
};
use ats_p2p_swarm::PublicKey;
use serde_json::{Value, json};

use super::{earliest, first_accept};
use crate::error::reason_chain;
use crate::events::{ConnectionPath, Direction, Event};
use crate::names::sanitize_file_name;
use crate::node::ReceiveError;
use crate::transfer::StreamReceiveError;
use ats_p2p_swarm::swarm::NoConnection;

use crate::node::ReceiveReport;
use crate::policy::PeerApproval;
use crate::topic::transfer_topic;
use crate::transfer::Received;

/// What the receiver's shell must do next, in order.
#[derive(Debug)]
pub(crate) enum ReceiveAction {
    /// Wait until this node receives no other transfer of this id and no other transfer from
    /// this sender; answer with [`ReceiveLifecycle::handle_turn`].
    WaitTurn,
    /// Claim the task for `lease`; answer with [`ReceiveLifecycle::handle_claimed`].
    Claim {
        /// The task.
        task: TaskId,
        /// The claim's lease.
        lease: Duration,
    },
    /// Post this accept (its text) on the task; answer with
    /// [`ReceiveLifecycle::handle_accept_posted`].
    PostAccept(String),
    /// List the task's messages; answer with [`ReceiveLifecycle::handle_messages`].
    ListMessages(TaskId),
    /// Look the sender up on `topic` and connect to `key` only, until `deadline`; answer with
    /// [`ReceiveLifecycle::handle_connection`].
    Connect {
        /// The transfer's topic.
        topic: [u8; 32],
        /// The sender's key.
        key: PublicKey,
        /// When to give up.
        deadline: Instant,
    },
    /// Receive the file over the connection; answer with [`ReceiveLifecycle::handle_outcome`].
    Receive,
    /// Renew the claim for `lease`.
    RenewLease {
        /// The task.
        task: TaskId,
        /// The lease.
        lease: Duration,
    },
    /// Complete the task with these outputs.
    Complete {
        /// The task.
        task: TaskId,
        /// The outputs (hash, size, duration, path).
        outputs: Vec<Value>,
    },
    /// Fail the task with this reason.
    Fail {
        /// The task.
        task: TaskId,
        /// The reason.
        reason: String,
    },
    /// Remember the sender's key (trust on first use: it proved the key and the file matched).
    RememberKey(PeerApproval),
    /// Report an event.
    Emit(Event),
}

/// The answer to [`ReceiveAction::WaitTurn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Ours.
    Granted,
    /// This node already receives this transfer (another watch saw the offer).
    AlreadyReceiving,
}

#[derive(Debug)]
enum State {
    WaitingTurn,
    Claiming,
    Accepting,
    CheckingAccept,
    Connecting {
        deadline: Instant,
    },
    Receiving {
        path: ConnectionPath,
        started: Instant,
    },
    Done,
}

/// The receiver's ATS lifecycle for one offer (see the [module](super) docs).
#[derive(Debug)]
pub(crate) struct ReceiveLifecycle {
    offer: FileOffer,
    task: TaskId,
    approval: PeerApproval,
    actor_id: String,
    own_key: PublicKey,
    timeout: Duration,
    state: State,
    claimed: bool,
    /// The task ended on ATS since our claim (seen before we got to wait for the sender).
    closed: Option<TaskStatus>,
    next_renewal: Option<Instant>,
    actions: VecDeque<ReceiveAction>,
    outcome: Option<Result<ReceiveReport, ReceiveError>>,
    /// The accept says this receiver can resume.
    resume: bool,
}

impl ReceiveLifecycle {
    /// A lifecycle for `offer` (on `task`, approved as `approval`) received by `actor_id`
    /// holding `own_key`; `timeout` bounds the wait for the sender and is the claim's lease.
    pub(crate) fn new(
        offer: FileOffer,
        task: TaskId,
        approval: PeerApproval,
        actor_id: String,
        own_key: PublicKey,
        timeout: Duration,
    ) -> Self {
        Self {
            offer,
            task,
            approval,
            actor_id,
            own_key,
            timeout,
            state: State::WaitingTurn,
            claimed: false,
            closed: None,
            next_renewal: None,
            actions: VecDeque::from([ReceiveAction::WaitTurn]),
            outcome: None,
            resume: false,
        }
    }

    /// Tells the sender (in the accept message) that this receiver can resume.
    pub(crate) fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// The task.
    pub(crate) fn task(&self) -> TaskId {
        self.task
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<ReceiveAction> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let connect = match self.state {
            State::Connecting { deadline } => Some(deadline),
            _ => None,
        };
        earliest(connect, self.next_renewal)
    }

    /// The result, once every action is taken and the machine is done.
    pub(crate) fn poll_outcome(&mut self) -> Option<Result<ReceiveReport, ReceiveError>> {
        if self.actions.is_empty() {
            self.outcome.take()
        } else {
            None
        }
    }

    /// True once the lifecycle ended (its remaining actions still have to be taken).
    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The answer to [`ReceiveAction::WaitTurn`].
    pub(crate) fn handle_turn(&mut self, turn: Turn) {
        if !matches!(self.state, State::WaitingTurn) {
            return;
        }
        match turn {
            Turn::Granted => {
                self.state = State::Claiming;
                self.actions.push_back(ReceiveAction::Claim {
                    task: self.task,
                    lease: self.timeout,
                });
            }
            Turn::AlreadyReceiving => self.end(Err(self.accepted_elsewhere())),
        }
    }

    /// The answer to [`ReceiveAction::Claim`].
    pub(crate) fn handle_claimed(&mut self, claimed: Result<(), SignalError>, now: Instant) {
        if !matches!(self.state, State::Claiming) {
            return;
        }
        match claimed {
            Ok(()) => {
                self.claimed = true;
                self.next_renewal = Some(now + self.renewal_period());
                self.state = State::Accepting;
                let accept = AcceptMessage {
                    // This receiver takes directory offers (`transfer::receive_directory`).
                    directories: true,
                    transfer_id: self.offer.transfer_id,
                    receiver_key: *self.own_key.as_bytes(),
                    resume: self.resume,
                };
                self.actions
                    .push_back(ReceiveAction::PostAccept(accept.to_content()));
            }
            Err(e @ SignalError::ClaimConflict { .. }) => self.end(Err(ReceiveError::Claim(e))),
            Err(source) => self.end(Err(ReceiveError::Signal {
                doing: "claiming the offer",
                source,
            })),
        }
    }

    /// The answer to [`ReceiveAction::PostAccept`].
    pub(crate) fn handle_accept_posted(&mut self, posted: Result<(), SignalError>) {
        if !matches!(self.state, State::Accepting) {
            return;
        }
        match posted {
            Ok(()) => {
                self.state = State::CheckingAccept;
                self.actions
                    .push_back(ReceiveAction::ListMessages(self.task));
            }
            Err(source) => self.end(Err(ReceiveError::Signal {
                doing: "posting the accept message",
                source,
            })),
        }
    }

    /// The answer to [`ReceiveAction::ListMessages`]: unless the first accept our actor id
    /// posted is ours, another receiver with our id (a second `listen`) claimed too, and the
    /// sender takes only the first accept, so this one steps aside.
    pub(crate) fn handle_messages(
        &mut self,
        messages: Result<Vec<Message>, SignalError>,
        now: Instant,
    ) {
        if !matches!(self.state, State::CheckingAccept) {
            return;
        }
        let messages = match messages {
            Ok(m) => m,
            Err(source) => {
                return self.end(Err(ReceiveError::Signal {
                    doing: "reading the accept messages",
                    source,
                }));
            }
        };
        match first_accept(&messages, &self.actor_id) {
            Some(a) if a.receiver_key != *self.own_key.as_bytes() => {
                self.end(Err(self.accepted_elsewhere()));
            }
            _ => {
                if let Some(status) = self.closed {
                    return self.end(Err(ReceiveError::SenderGaveUp(status.as_str().to_owned())));
                }
                let deadline = now + self.timeout;
                self.state = State::Connecting { deadline };
                self.actions.push_back(ReceiveAction::Connect {
                    topic: transfer_topic(self.offer.transfer_id.as_bytes()),
                    key: PublicKey::from_bytes(self.offer.sender_key),
                    deadline,
                });
            }
        }
    }

    /// A task event from the hub's watch (events of other tasks are ignored): the task closed
    /// while we wait for the sender means the sender refused our claim or gave up.
    pub(crate) fn handle_task_event(&mut self, event: &TaskEvent) {
        if event.task.id != self.task || !event.task.status.is_terminal() || !self.claimed {
            return;
        }
        match self.state {
            State::Accepting | State::CheckingAccept => self.closed = Some(event.task.status),
            State::Connecting { .. } => self.end(Err(ReceiveError::SenderGaveUp(
                event.task.status.as_str().to_owned(),
            ))),
            _ => {}
        }
    }

    /// The answer to [`ReceiveAction::Connect`].
    pub(crate) fn handle_connection(
        &mut self,
        connection: Result<ConnectionPath, NoConnection>,
        now: Instant,
    ) {
        if !matches!(self.state, State::Connecting { .. }) {
            return;
        }
        let path = match connection {
            Ok(path) => path,
            Err(NoConnection::TimedOut) => {
                return self.end(Err(ReceiveError::NoConnection(self.timeout)));
            }
            Err(NoConnection::NoPath(why)) => return self.end(Err(ReceiveError::NoPath(why))),
        };
        self.actions
            .push_back(ReceiveAction::Emit(Event::TransferStart {
                transfer_id: self.offer.transfer_id.to_string(),
                direction: Direction::Receive,
                peer_id: self.offer.sender_id.clone(),
                file_name: sanitize_file_name(&self.offer.filename),
                file_size: self.offer.size,
                path: path.clone(),
            }));
        self.actions.push_back(ReceiveAction::Receive);
        self.state = State::Receiving { path, started: now };
    }

    /// The answer to [`ReceiveAction::Receive`]: the file stored and verified, or why not.
    pub(crate) fn handle_outcome(
        &mut self,
        outcome: Result<Received, StreamReceiveError>,
        now: Instant,
    ) {
        let State::Receiving { path, started } = &self.state else {
            return;
        };
        let received = match outcome {
            Ok(r) => r,
            Err(e) => return self.end(Err(ReceiveError::Stream(e))),
        };
        let duration = now.saturating_duration_since(*started);
        let duration_ms = crate::node::millis(duration);
        let outputs = vec![json!({
            "sha256": received.hash.to_hex(),
            "bytes": received.size,
            "duration_ms": duration_ms,
            "path": path.path,
            "relay": path.relay,
        })];
        let report = ReceiveReport {
            transfer_id: self.offer.transfer_id,
            task_id: self.task,
            file_path: received.path,
            file_hash: received.hash,
            bytes: received.size,
            resumed_from: received.resumed_from,
            duration,
            path: path.clone(),
        };
        self.actions.push_back(ReceiveAction::Complete {
            task: self.task,
            outputs,
        });
        // Trust on first use only now: the sender proved it holds the key (Noise) and sent the
        // bytes whose SHA-256 matched, and the file is stored. An offer alone proves nothing.
        self.actions
            .push_back(ReceiveAction::RememberKey(self.approval));
        self.end(Ok(report));
    }

    /// The node shuts down.
    pub(crate) fn handle_cancel(&mut self) {
        if !self.is_done() {
            self.end(Err(ReceiveError::Cancelled));
        }
    }

    /// The instant from [`poll_timeout`](Self::poll_timeout) came.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let State::Connecting { deadline } = self.state
            && now >= deadline
        {
            return self.end(Err(ReceiveError::NoConnection(self.timeout)));
        }
        if self.next_renewal.is_some_and(|at| now >= at) {
            self.actions.push_back(ReceiveAction::RenewLease {
                task: self.task,
                lease: self.timeout,
            });
            self.next_renewal = Some(now + self.renewal_period());
        }
    }

    /// The lease is renewed every third of its length, so two renewals may fail in a row.
    fn renewal_period(&self) -> Duration {
        self.timeout / 3
    }

    fn accepted_elsewhere(&self) -> ReceiveError {
        ReceiveError::AcceptedElsewhere {
            actor: self.actor_id.clone(),
        }
    }

    /// Ends with `result`: a failure after our claim fails the task with the reason, except
    /// when the task belongs to the receiver whose accept came first; every end is reported.
    fn end(&mut self, result: Result<ReceiveReport, ReceiveError>) {
        self.state = State::Done;
        self.next_renewal = None;
        let transfer_id = self.offer.transfer_id.to_string();
        match &result {
            Ok(report) => self
                .actions
                .push_back(ReceiveAction::Emit(Event::TransferComplete {
                    transfer_id,
                    direction: Direction::Receive,
                    file_path: report.file_path.display().to_string(),
                    file_hash: report.file_hash.to_hex(),
                    bytes: report.bytes,
                    resumed_from: report.resumed_from,
                    duration_ms: crate::node::millis(report.duration),
                    path: report.path.clone(),
                })),
            Err(e) => {
                let reason = reason_chain(e);
                if self.claimed && !matches!(e, ReceiveError::AcceptedElsewhere { .. }) {
                    self.actions.push_back(ReceiveAction::Fail {
                        task: self.task,
                        reason: reason.clone(),
                    });
                }
                self.actions
                    .push_back(ReceiveAction::Emit(Event::TransferFailed {
                        transfer_id,
                        direction: Direction::Receive,
                        kind: e.kind(),
                        code: e.code().to_owned(),
                        reason,
                    }));
            }
        }
        self.outcome = Some(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::test_support::{accept, approval, path, signal_error, task};
    use ats_p2p_signal::{EventKind, EventOrigin, TransferId};
    use ats_p2p_wire::FileHash;

    const TASK: TaskId = 3;
    const TIMEOUT: Duration = Duration::from_secs(30);
    const ME: u8 = 4;

    fn machine() -> ReceiveLifecycle {
        let offer = FileOffer {
            manifest: None,
            transfer_id: TransferId::random(),
            filename: "../data.csv".into(),
            size: 10,
            sha256: [0xab; 32],
            sender_id: "agent-a".into(),
            recipient_id: "agent-b".into(),
            sender_key: [9; 32],
        };
        ReceiveLifecycle::new(
            offer,
            TASK,
            approval(9),
            "agent-b".into(),
            PublicKey::from_bytes([ME; 32]),
            TIMEOUT,
        )
    }

    fn closed(status: TaskStatus) -> TaskEvent {
        TaskEvent {
            kind: EventKind::Cancelled,
            task: task(TASK, status, Some("agent-b"), None),
            message: None,
            actor: None,
            event_id: None,
            origin: EventOrigin::Live,
        }
    }

    fn drain(m: &mut ReceiveLifecycle) -> Vec<ReceiveAction> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn names(actions: &[ReceiveAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                ReceiveAction::Emit(e) => format!("emit:{}", e.name()),
                ReceiveAction::WaitTurn => "turn".into(),
                ReceiveAction::Claim { .. } => "claim".into(),
                ReceiveAction::PostAccept(_) => "post_accept".into(),
                ReceiveAction::ListMessages(_) => "list".into(),
                ReceiveAction::Connect { .. } => "connect".into(),
                ReceiveAction::Receive => "receive".into(),
                ReceiveAction::RenewLease { .. } => "renew".into(),
                ReceiveAction::Complete { .. } => "complete".into(),
                ReceiveAction::Fail { .. } => "fail".into(),
                ReceiveAction::RememberKey(_) => "remember".into(),
            })
            .collect()
    }

    fn failure(m: &mut ReceiveLifecycle) -> ReceiveError {
        match m.poll_outcome() {
            Some(Err(e)) => e,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    fn our_accept(m: &ReceiveLifecycle) -> Message {
        accept(1, "agent-b", ME, m.offer.transfer_id)
    }

    /// Claimed, accept posted and checked: waiting for the sender.
    fn connecting(now: Instant) -> ReceiveLifecycle {
        let mut m = machine();
        assert_eq!(names(&drain(&mut m)), ["turn"]);
        m.handle_turn(Turn::Granted);
        assert_eq!(names(&drain(&mut m)), ["claim"]);
        m.handle_claimed(Ok(()), now);
        let post = drain(&mut m);
        let [ReceiveAction::PostAccept(text)] = &post[..] else {
            panic!("{:?}", names(&post));
        };
        assert!(text.contains(&hex::encode([ME; 32])), "{text}");
        m.handle_accept_posted(Ok(()));
        assert_eq!(names(&drain(&mut m)), ["list"]);
        let mine = our_accept(&m);
        m.handle_messages(Ok(vec![mine]), now);
        let connect = drain(&mut m);
        assert!(
            matches!(connect[..], [ReceiveAction::Connect { key, deadline, .. }]
                if key == PublicKey::from_bytes([9; 32]) && deadline == now + TIMEOUT)
        );
        m
    }

    fn receiving(now: Instant) -> ReceiveLifecycle {
        let mut m = connecting(now);
        m.handle_connection(Ok(path()), now);
        let actions = drain(&mut m);
        assert_eq!(names(&actions), ["emit:transfer_start", "receive"]);
        let ReceiveAction::Emit(Event::TransferStart { file_name, .. }) = &actions[0] else {
            unreachable!()
        };
        assert_eq!(file_name, "data.csv", "the name is sanitised");
        m
    }

    #[test]
    fn received_and_verified() {
        let now = Instant::now();
        let mut m = receiving(now);
        let received = Received {
            path: "/srv/in/data.csv".into(),
            size: 10,
            hash: FileHash([0xab; 32]),
            resumed_from: 0,
        };
        m.handle_outcome(Ok(received), now + Duration::from_millis(250));
        let actions = drain(&mut m);
        assert_eq!(
            names(&actions),
            ["complete", "remember", "emit:transfer_complete"]
        );
        let ReceiveAction::Complete { outputs, .. } = &actions[0] else {
            unreachable!()
        };
        assert_eq!(outputs[0]["sha256"], hex::encode([0xab; 32]));
        assert_eq!(outputs[0]["duration_ms"], 250);
        assert_eq!(outputs[0]["path"], "loopback");
        let report = m.poll_outcome().unwrap().unwrap();
        assert_eq!(report.task_id, TASK);
        assert_eq!(m.poll_timeout(), None, "no lease renewal after the end");
    }

    #[test]
    fn hash_mismatch_fails_the_task() {
        let now = Instant::now();
        let mut m = receiving(now);
        let mismatch = StreamReceiveError::Transfer(ats_p2p_wire::TransferError::HashMismatch {
            expected: FileHash([0xab; 32]),
            actual: FileHash([0xcd; 32]),
        });
        m.handle_outcome(Err(mismatch), now);
        let actions = drain(&mut m);
        assert_eq!(names(&actions), ["fail", "emit:transfer_failed"]);
        let ReceiveAction::Emit(Event::TransferFailed { code, .. }) = &actions[1] else {
            unreachable!()
        };
        assert_eq!(code, "hash_mismatch");
        assert!(matches!(failure(&mut m), ReceiveError::Stream(_)));
    }

    #[test]
    fn no_path_fails_the_task_at_once() {
        let now = Instant::now();
        let mut m = connecting(now);
        m.handle_connection(Err(NoConnection::NoPath("both NATs randomize".into())), now);
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), ReceiveError::NoPath(why) if why.contains("randomize")));
    }

    #[test]
    fn the_sender_never_connects() {
        let now = Instant::now();
        let mut m = connecting(now);
        // The lease renewal comes first; the deadline is still due.
        assert_eq!(m.poll_timeout(), Some(now + TIMEOUT / 3));
        m.handle_timeout(now + TIMEOUT);
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), ReceiveError::NoConnection(t) if t == TIMEOUT));
        // The shell's own connect deadline answering late changes nothing.
        m.handle_connection(Err(NoConnection::TimedOut), now + TIMEOUT);
        assert!(drain(&mut m).is_empty());
    }

    #[test]
    fn the_lease_is_renewed_every_third_while_the_transfer_runs() {
        let now = Instant::now();
        let mut m = receiving(now);
        let period = TIMEOUT / 3;
        let mut at = now;
        for _ in 0..5 {
            at = m.poll_timeout().unwrap();
            m.handle_timeout(at);
            assert_eq!(names(&drain(&mut m)), ["renew"]);
        }
        assert_eq!(at, now + period * 5);
        // An early wake-up renews nothing.
        m.handle_timeout(at + period / 2);
        assert!(drain(&mut m).is_empty());
    }

    #[test]
    fn the_task_closed_by_the_sender_while_we_wait() {
        let now = Instant::now();
        let mut m = connecting(now);
        m.handle_task_event(&closed(TaskStatus::Cancelled));
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), ReceiveError::SenderGaveUp(s) if s == "cancelled"));
    }

    #[test]
    fn the_task_closed_before_we_wait_for_the_sender_counts_too() {
        let now = Instant::now();
        let mut m = machine();
        m.handle_turn(Turn::Granted);
        m.handle_claimed(Ok(()), now);
        m.handle_task_event(&closed(TaskStatus::Cancelled));
        m.handle_accept_posted(Ok(()));
        drain(&mut m);
        let mine = our_accept(&m);
        m.handle_messages(Ok(vec![mine]), now);
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), ReceiveError::SenderGaveUp(_)));
    }

    #[test]
    fn task_events_before_our_claim_or_of_other_tasks_are_ignored() {
        let now = Instant::now();
        let mut m = machine();
        m.handle_task_event(&closed(TaskStatus::Cancelled));
        m.handle_turn(Turn::Granted);
        m.handle_claimed(Ok(()), now);
        let mut other = closed(TaskStatus::Cancelled);
        other.task.id = TASK + 1;
        m.handle_task_event(&other);
        m.handle_accept_posted(Ok(()));
        drain(&mut m);
        let mine = our_accept(&m);
        m.handle_messages(Ok(vec![mine]), now);
        assert_eq!(names(&drain(&mut m)), ["connect"]);
        // While receiving, the stream decides.
        m.handle_connection(Ok(path()), now);
        drain(&mut m);
        m.handle_task_event(&closed(TaskStatus::Cancelled));
        assert!(drain(&mut m).is_empty());
    }

    #[test]
    fn a_second_receiver_with_our_actor_id_steps_aside_and_leaves_the_task() {
        let now = Instant::now();
        let mut m = machine();
        m.handle_turn(Turn::Granted);
        m.handle_claimed(Ok(()), now);
        m.handle_accept_posted(Ok(()));
        drain(&mut m);
        let t = m.offer.transfer_id;
        let theirs = accept(1, "agent-b", 1, t);
        let ours = accept(2, "agent-b", ME, t);
        m.handle_messages(Ok(vec![ours, theirs]), now);
        // No fail: the task is the first receiver's.
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
        assert!(matches!(
            failure(&mut m),
            ReceiveError::AcceptedElsewhere { .. }
        ));
    }

    #[test]
    fn a_transfer_this_node_already_receives_is_not_claimed() {
        let mut m = machine();
        drain(&mut m);
        m.handle_turn(Turn::AlreadyReceiving);
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
        assert!(matches!(
            failure(&mut m),
            ReceiveError::AcceptedElsewhere { .. }
        ));
    }

    #[test]
    fn a_failed_claim_leaves_the_task_alone() {
        let now = Instant::now();
        let mut m = machine();
        m.handle_turn(Turn::Granted);
        drain(&mut m);
        m.handle_claimed(Err(signal_error()), now);
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), ReceiveError::Signal { .. }));
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn failing_to_post_the_accept_fails_the_task() {
        let now = Instant::now();
        let mut m = machine();
        m.handle_turn(Turn::Granted);
        m.handle_claimed(Ok(()), now);
        drain(&mut m);
        m.handle_accept_posted(Err(signal_error()));
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
    }

    #[test]
    fn cancel_at_each_stage() {
        let now = Instant::now();
        // Waiting for the turn: nothing claimed, nothing to fail.
        let mut m = machine();
        drain(&mut m);
        m.handle_cancel();
        assert_eq!(names(&drain(&mut m)), ["emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), ReceiveError::Cancelled));
        // Waiting for the sender.
        let mut m = connecting(now);
        m.handle_cancel();
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        assert!(matches!(failure(&mut m), ReceiveError::Cancelled));
        // Receiving.
        let mut m = receiving(now);
        m.handle_cancel();
        assert_eq!(names(&drain(&mut m)), ["fail", "emit:transfer_failed"]);
        // Done: nothing more.
        m.handle_cancel();
        m.handle_timeout(now + TIMEOUT);
        assert!(drain(&mut m).is_empty());
    }

    #[test]
    fn duplicate_and_late_answers_are_ignored() {
        let now = Instant::now();
        let mut m = machine();
        m.handle_claimed(Ok(()), now);
        m.handle_accept_posted(Ok(()));
        m.handle_connection(Ok(path()), now);
        assert_eq!(names(&drain(&mut m)), ["turn"]);
        let mut m = receiving(now);
        m.handle_turn(Turn::Granted);
        m.handle_claimed(Ok(()), now);
        m.handle_connection(Ok(path()), now);
        let mine = our_accept(&m);
        m.handle_messages(Ok(vec![mine]), now);
        assert!(drain(&mut m).is_empty());
    }
}
