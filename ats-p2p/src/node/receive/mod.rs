//! The receiver's side: watch a channel for offers addressed to us, judge them, claim, post the
//! accept with our key, connect to the sender's key only, receive and verify, complete the task.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ats_p2p_signal::{FileOffer, Task, TaskId, TransferId};
use ats_p2p_wire::FileHash;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::events::{ConnectionPath, Direction, Event, FailureKind};
use crate::node::ReceiveError;
use crate::node::Shared;
use crate::policy::PeerApproval;

mod job;
mod judge;
mod refuse;
mod routes;
mod watch;

use job::Job;
use routes::TaskRoutes;
use watch::run_watch;

/// What a watch yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// An offer for us that passed the policy, waiting for [`PendingOffer::accept`] or
    /// [`PendingOffer::reject`] (only when watching without a save directory).
    Offer(Box<PendingOffer>),
    /// Something happened: `file`, `transfer_start`, `progress`, `transfer_complete`,
    /// `transfer_failed`, `error`.
    Event(Event),
}

/// A stream of [`Incoming`] offers and events; dropping it stops watching (transfers already
/// running are stopped too; use [`Node::destroy`](super::Node::destroy) to end them with a
/// reason on ATS).
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::UnboundedReceiver<Incoming>,
    task: JoinHandle<()>,
}

impl Stream for Inbox {
    type Item = Incoming;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A file received and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveReport {
    /// The transfer id.
    pub transfer_id: TransferId,
    /// The ATS task of the offer.
    pub task_id: TaskId,
    /// Where the file is (a free name in the save directory).
    pub file_path: PathBuf,
    /// Its SHA-256 (equal to the offer's).
    pub file_hash: FileHash,
    /// Its size.
    pub bytes: u64,
    /// Bytes that were already there from a broken transfer (0: none).
    pub resumed_from: u64,
    /// From the connection to the verified file.
    pub duration: Duration,
    /// How the connection reached the sender.
    pub path: ConnectionPath,
}

/// An offer for us that our policy lets through, waiting for a decision.
#[derive(Debug)]
pub struct PendingOffer {
    /// The offer.
    pub offer: FileOffer,
    /// Its task.
    pub task: Task,
    approval: PeerApproval,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Incoming>,
    routes: TaskRoutes,
}

impl PendingOffer {
    /// The transfer id (32 hex).
    pub fn transfer_id(&self) -> String {
        self.offer.transfer_id.to_string()
    }

    /// How the policy let the sender through: by a pinned key, a remembered key or a new one
    /// (for a caller that shows the offer to someone deciding on it).
    pub fn approval(&self) -> &PeerApproval {
        &self.approval
    }

    /// Claims the offer and receives the file into `save_dir` (created if missing). Events go to
    /// the [`Inbox`] this offer came from.
    pub async fn accept(self, save_dir: impl AsRef<Path>) -> Result<ReceiveReport, ReceiveError> {
        let save_dir = save_dir.as_ref().to_path_buf();
        let job = Job {
            shared: self.shared,
            offer: self.offer,
            task: self.task,
            approval: self.approval,
            events: self.events,
            routes: self.routes,
        };
        let tracker = job.shared.tracker.clone();
        tracker
            .track_future(async move {
                let space = match job.reserve_space(&save_dir) {
                    Ok(space) => space,
                    Err(rejection) => {
                        job.refuse(&rejection).await;
                        return Err(ReceiveError::Refused(rejection));
                    }
                };
                job.run(&save_dir, space).await
            })
            .await
    }

    /// Declines the offer: the task is rejected with `reason`.
    pub async fn reject(self, reason: &str) -> Result<(), ReceiveError> {
        let result = self
            .shared
            .client
            .reject(self.task.id, Some(reason))
            .await
            .map(|_| ())
            .map_err(|source| ReceiveError::Signal {
                doing: "rejecting the offer",
                source,
            });
        let _ = self.events.send(Incoming::Event(Event::TransferFailed {
            transfer_id: self.offer.transfer_id.to_string(),
            direction: Direction::Receive,
            kind: FailureKind::Rejected,
            code: "declined".to_owned(),
            reason: reason.to_owned(),
        }));
        result
    }
}

/// Starts watching; see [`Node::watch`](super::Node::watch).
pub(super) fn watch(shared: Arc<Shared>, channel: &str, save_dir: Option<PathBuf>) -> Inbox {
    let (tx, rx) = mpsc::unbounded_channel();
    let tracker = shared.tracker.clone();
    let task = tracker.spawn(run_watch(shared, channel.to_owned(), save_dir, tx));
    Inbox { rx, task }
}
