//! How a send ends: the task ended visibly on ATS, the grace for the receiver's own report,
//! and the decision to offer the file again after a broken transfer.

use std::time::Instant;

use ats_p2p_signal::{Task, TaskStatus, TransferId};

use crate::error::reason_chain;
use crate::events::{Direction, Event, FailureKind};
use crate::node::SendError;

use super::*;

impl SendLifecycle {
    /// Ends the transfer with `error`: ATS must show how every transfer ended. Once bytes
    /// flowed, the receiver holds the claim and fails the task with its own reason, so the
    /// sender waits [`RECEIVER_REPORT_GRACE`] for that before failing it with what it saw;
    /// before any byte flowed, the offer is withdrawn (cancelled).
    pub(super) fn fail(&mut self, error: SendError, now: Instant) {
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
    pub(super) fn end_silent_receive(&mut self, now: Instant) {
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
    pub(super) fn finish_failure(&mut self, now: Instant) {
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
    pub(super) fn may_offer_again(&self, error: &SendError, now: Instant) -> bool {
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
    pub(super) fn retry_deadline(&self) -> Option<Instant> {
        self.heard_from_receiver.map(|t| t + self.timeout)
    }

    /// Offers the file again under a new transfer id after a broken transfer (whose task has
    /// ended, or is being failed), and waits for a claim until the retry deadline.
    pub(super) fn offer_again(&mut self, error: &SendError) {
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
}

/// The error for a task that ended on ATS, or `None` while it is open.
pub(super) fn ended(task: &Task) -> Option<SendError> {
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
