//! The receiver's side: watch a channel for offers addressed to us, judge them, claim, post the
//! accept with our key, connect to the sender's key only, receive and verify, complete the task.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ats_p2p_signal::offer::OFFER_TASK_TYPE;
use ats_p2p_signal::{
    AcceptMessage, FileOffer, Part, SignalError, Task, TaskId, TaskStatus, TransferId, WatchConfig,
};
use ats_p2p_swarm::PublicKey;
use ats_p2p_wire::{FileHash, Meta, ReceiverConfig};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant as Deadline;
use tracing::debug;

use super::send::{first_accept, remember_key};
use super::transport::NoConnection;
use super::{MAX_QUEUED_RECEIVES, ProgressThrottle, Shared, locked, millis};
use crate::error::{ReceiveError, reason_chain};
use crate::events::{ConnectionPath, Direction, Event, FailureKind};
use crate::names::sanitize_file_name;
use crate::policy::{OfferFacts, PeerApproval, ReceiveRejection};
use crate::save::{STALE_TEMP_AGE, available_space, remove_stale_temp_files};
use crate::topic::transfer_topic;
use crate::transfer::receive_stream_with;

/// Offers remembered as already handled, so a repeated event does not start a second transfer.
const SEEN_OFFERS: usize = 16_384;

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
    /// The transfer id (32 hex).
    pub transfer_id: String,
    /// The ATS task of the offer.
    pub task_id: String,
    /// Where the file is (a free name in the save directory).
    pub file_path: PathBuf,
    /// Its SHA-256, 64 hex (equal to the offer's).
    pub file_hash: String,
    /// Its size.
    pub bytes: u64,
    /// From the connection to the verified file, in milliseconds.
    pub duration_ms: u64,
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
        };
        let space = match job.reserve_space(&save_dir) {
            Ok(space) => space,
            Err(rejection) => {
                job.refuse(&rejection).await;
                return Err(ReceiveError::Refused(rejection));
            }
        };
        job.run(&save_dir, space).await
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
    let task = tokio::spawn(run_watch(shared, channel.to_owned(), save_dir, tx));
    Inbox { rx, task }
}

/// Bounded memory of offers already handled.
#[derive(Debug, Default)]
struct Seen {
    set: HashSet<TaskId>,
    order: VecDeque<TaskId>,
}

impl Seen {
    /// True the first time `id` is seen.
    fn first(&mut self, id: TaskId) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_OFFERS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

async fn run_watch(
    shared: Arc<Shared>,
    channel: String,
    save_dir: Option<PathBuf>,
    tx: mpsc::UnboundedSender<Incoming>,
) {
    if let Some(dir) = &save_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            let _ = tx.send(Incoming::Event(Event::Error {
                transfer_id: None,
                message: format!("cannot create the save directory {}: {e}", dir.display()),
            }));
        }
        clean_save_dir(dir.clone(), &tx).await;
    }
    // Offers older than the timeout are dead (their sender gave up); newer ones still count.
    let since = chrono::Duration::from_std(shared.config.timeout)
        .ok()
        .map(|d| chrono::Utc::now() - d);
    let mut watch = shared.client.watch(WatchConfig {
        channels: vec![channel],
        task_types: vec![OFFER_TASK_TYPE.to_owned()],
        since,
        ..WatchConfig::default()
    });
    let mut seen = Seen::default();
    let mut jobs = JoinSet::new();
    let limit = shared.config.max_concurrent_receives.max(1);
    let slots = Arc::new(Semaphore::new(limit));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            ev = watch.next() => {
                let Some(ev) = ev else { break };
                if ev.task.status != TaskStatus::Pending || !seen.first(ev.task.id) {
                    continue;
                }
                let Some(job) = judge(&shared, ev.task, &tx).await else { continue };
                match &save_dir {
                    Some(dir) => {
                        // Running and waiting jobs; beyond the queue's bound, refuse.
                        if jobs.len() >= limit.saturating_add(MAX_QUEUED_RECEIVES) {
                            let busy = ReceiveRejection::Busy {
                                running: limit,
                                queued: MAX_QUEUED_RECEIVES,
                            };
                            job.refuse(&busy).await;
                            continue;
                        }
                        let dir = dir.clone();
                        let slots = slots.clone();
                        jobs.spawn(async move {
                            let Some(_slot) = job.wait_for_slot(slots, limit).await else {
                                return;
                            };
                            let space = match job.reserve_space(&dir) {
                                Ok(space) => space,
                                Err(rejection) => {
                                    job.refuse(&rejection).await;
                                    return;
                                }
                            };
                            let _ = job.run(&dir, space).await;
                        });
                    }
                    None => {
                        let _ = tx.send(Incoming::Offer(Box::new(PendingOffer {
                            offer: job.offer,
                            task: job.task,
                            approval: job.approval,
                            shared: job.shared,
                            events: job.events,
                        })));
                    }
                }
            }
        }
    }
    drop(watch);
    while jobs.join_next().await.is_some() {}
}

/// Removes the temporary files a killed receiver left in `dir` (nobody holds their lock; see
/// [`remove_stale_temp_files`]) before any transfer starts there.
async fn clean_save_dir(dir: PathBuf, tx: &mpsc::UnboundedSender<Incoming>) {
    let shown = dir.display().to_string();
    let cleaned =
        tokio::task::spawn_blocking(move || remove_stale_temp_files(&dir, STALE_TEMP_AGE)).await;
    match cleaned {
        Ok(Ok(removed)) if !removed.is_empty() => {
            debug!(dir = %shown, removed = removed.len(), "removed abandoned temporary files");
        }
        Ok(Ok(_)) | Err(_) => {}
        Ok(Err(e)) => {
            let _ = tx.send(Incoming::Event(Event::Error {
                transfer_id: None,
                message: format!(
                    "cannot clean temporary files in {shown}: {}",
                    reason_chain(&e)
                ),
            }));
        }
    }
}

/// Parses a pending task and applies the policy: `None` when it is not for us, or was refused
/// (then it is rejected on ATS and a `transfer_failed` event says why).
async fn judge(
    shared: &Arc<Shared>,
    task: Task,
    tx: &mpsc::UnboundedSender<Incoming>,
) -> Option<Job> {
    let me = shared.config.actor_id.as_str();
    let offer = match FileOffer::from_task(&task) {
        Ok(o) => o,
        Err(e) => {
            // Only offers addressed to us are ours to reject; others are someone else's business.
            let to_me = task.payload.get("recipient_id").and_then(|v| v.as_str()) == Some(me);
            if to_me {
                let reason = format!("invalid offer: {e}");
                let _ = shared.client.reject(task.id, Some(&reason)).await;
                let _ = tx.send(Incoming::Event(Event::Error {
                    transfer_id: task
                        .payload
                        .get("transfer_id")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned),
                    message: format!("rejected task {}: {reason}", task.id),
                }));
            }
            return None;
        }
    };
    if offer.recipient_id != me {
        return None;
    }
    let transfer_id = offer.transfer_id.to_string();
    let _ = tx.send(Incoming::Event(Event::File {
        transfer_id: transfer_id.clone(),
        task_id: task.id.to_string(),
        file_name: offer.filename.clone(),
        file_size: offer.size,
        file_hash: hex::encode(offer.sha256),
        sender_id: offer.sender_id.clone(),
        sender_key: hex::encode(offer.sender_key),
    }));
    let job = |approval| Job {
        shared: shared.clone(),
        offer: offer.clone(),
        task: task.clone(),
        approval,
        events: tx.clone(),
    };
    if let Some(creator) = task.source_id.as_deref() {
        if creator != offer.sender_id {
            let reason = format!(
                "offer names sender {} but the task was created by {creator}",
                offer.sender_id
            );
            refuse_task(shared, &task, &transfer_id, "sender_mismatch", &reason, tx).await;
            return None;
        }
    }
    let sender_key = PublicKey::from_bytes(offer.sender_key);
    let decision = {
        let known = locked(&shared.known);
        shared.receive_policy().decide(
            &known,
            &OfferFacts {
                sender_id: &offer.sender_id,
                sender_key: &sender_key,
                size: offer.size,
                available_space: None,
            },
        )
    };
    match decision {
        Ok(approval) => Some(job(approval)),
        Err(rejection) => {
            let reason = rejection.to_string();
            refuse_task(shared, &task, &transfer_id, rejection.code(), &reason, tx).await;
            None
        }
    }
}

/// Rejects `task` with `reason` and reports it.
async fn refuse_task(
    shared: &Shared,
    task: &Task,
    transfer_id: &str,
    code: &str,
    reason: &str,
    tx: &mpsc::UnboundedSender<Incoming>,
) {
    if let Err(e) = shared.client.reject(task.id, Some(reason)).await {
        debug!(task = task.id, error = %e, "cannot reject the offer");
    }
    let _ = tx.send(Incoming::Event(Event::TransferFailed {
        transfer_id: transfer_id.to_owned(),
        direction: Direction::Receive,
        kind: FailureKind::Rejected,
        code: code.to_owned(),
        reason: reason.to_owned(),
    }));
}

/// Pause between attempts to complete the task of a stored file while ATS is unreachable.
const COMPLETE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// How often the receiver checks, while it waits for the sender, whether the task was closed
/// (the sender refused our claim or gave up).
const TASK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Resolves with the task's status once it is terminal (checked every
/// [`TASK_CHECK_INTERVAL`]; read errors are ignored, the transfer's own deadline still holds).
async fn task_closed(client: &ats_p2p_signal::Client, id: TaskId) -> TaskStatus {
    loop {
        tokio::time::sleep(TASK_CHECK_INTERVAL).await;
        if let Ok(task) = client.get_task(id).await {
            if task.status.is_terminal() {
                return task.status;
            }
        }
    }
}

/// One accepted offer on its way to disk.
#[derive(Debug)]
struct Job {
    shared: Arc<Shared>,
    offer: FileOffer,
    task: Task,
    approval: PeerApproval,
    events: mpsc::UnboundedSender<Incoming>,
}

/// Free space held for a running receive: the bytes it has yet to write. Shrinks as bytes
/// arrive (they then count in the file system's own free space) and is released on drop.
#[derive(Debug)]
pub(crate) struct SpaceReservation {
    shared: Arc<Shared>,
    held: u64,
}

impl SpaceReservation {
    /// `left` bytes remain to be written.
    fn shrink_to(&mut self, left: u64) {
        if left < self.held {
            let mut reserved = locked(&self.shared.reserved_bytes);
            *reserved = reserved.saturating_sub(self.held - left);
            self.held = left;
        }
    }
}

impl Drop for SpaceReservation {
    fn drop(&mut self) {
        let mut reserved = locked(&self.shared.reserved_bytes);
        *reserved = reserved.saturating_sub(self.held);
    }
}

/// Marks a transfer as being received by this node until dropped.
struct ReceivingGuard {
    shared: Arc<Shared>,
    id: TransferId,
}

impl ReceivingGuard {
    /// `None` when this node already receives `id`.
    fn begin(shared: &Arc<Shared>, id: TransferId) -> Option<Self> {
        locked(&shared.receiving).insert(id).then(|| Self {
            shared: shared.clone(),
            id,
        })
    }
}

impl Drop for ReceivingGuard {
    fn drop(&mut self) {
        locked(&self.shared.receiving).remove(&self.id);
    }
}

/// Renews the claim's lease while a transfer runs; stops when dropped.
struct LeaseKeeper(JoinHandle<()>);

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Job {
    fn emit(&self, event: Event) {
        let _ = self.events.send(Incoming::Event(event));
    }

    /// Checks the free space in `save_dir` (creating it) against the offer's size, counting the
    /// bytes that receives already running still have to write, and reserves the offer's size
    /// until the returned reservation is dropped. Reservations are per node, whatever the file
    /// system (conservative when save directories are on different disks).
    fn reserve_space(&self, save_dir: &Path) -> Result<SpaceReservation, ReceiveRejection> {
        let _ = std::fs::create_dir_all(save_dir);
        let available = available_space(save_dir);
        let mut reserved = locked(&self.shared.reserved_bytes);
        // Unknown free space: the write itself reports a full disk.
        if let Ok(available) = available {
            self.shared
                .receive_policy()
                .check_space(self.offer.size, available.saturating_sub(*reserved))?;
        }
        *reserved = reserved.saturating_add(self.offer.size);
        Ok(SpaceReservation {
            shared: self.shared.clone(),
            held: self.offer.size,
        })
    }

    /// Waits, unclaimed, for one of the watch's receive slots (announcing a `queued` event when
    /// none is free); `None` when the node shuts down first. The offer's sender still waits for
    /// a claim only as long as its own timeout.
    async fn wait_for_slot(
        &self,
        slots: Arc<Semaphore>,
        limit: usize,
    ) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        self.emit(Event::Queued {
            transfer_id: self.offer.transfer_id.to_string(),
            limit,
        });
        tokio::select! {
            p = slots.acquire_owned() => p.ok(),
            () = self.shared.shutdown.cancelled() => None,
        }
    }

    /// Rejects the task for `rejection`.
    async fn refuse(&self, rejection: &ReceiveRejection) {
        refuse_task(
            &self.shared,
            &self.task,
            &self.offer.transfer_id.to_string(),
            rejection.code(),
            &rejection.to_string(),
            &self.events,
        )
        .await;
    }

    /// Claims, accepts, receives, completes; on failure after the claim the task is failed
    /// with the reason. Reports through events as well as the result.
    async fn run(
        self,
        save_dir: &Path,
        space: SpaceReservation,
    ) -> Result<ReceiveReport, ReceiveError> {
        let transfer_id = self.offer.transfer_id.to_string();
        let result = self.receive(save_dir, space).await;
        match &result {
            Ok(report) => self.emit(Event::TransferComplete {
                transfer_id,
                direction: Direction::Receive,
                file_path: report.file_path.display().to_string(),
                file_hash: report.file_hash.clone(),
                bytes: report.bytes,
                duration_ms: report.duration_ms,
                path: report.path.clone(),
            }),
            Err(e) => self.emit(Event::TransferFailed {
                transfer_id,
                direction: Direction::Receive,
                kind: e.kind(),
                code: e.code().to_owned(),
                reason: reason_chain(e),
            }),
        }
        result
    }

    async fn receive(
        &self,
        save_dir: &Path,
        space: SpaceReservation,
    ) -> Result<ReceiveReport, ReceiveError> {
        let shared = &self.shared;
        // This node receives a transfer once, however many watches saw the offer.
        let Some(_receiving) = ReceivingGuard::begin(shared, self.offer.transfer_id) else {
            return Err(ReceiveError::AcceptedElsewhere {
                actor: shared.config.actor_id.clone(),
            });
        };
        let sender_key = PublicKey::from_bytes(self.offer.sender_key);
        // One transfer per sender at a time (the sender matches connections by key).
        let lock = shared.peer_lock(sender_key);
        let _turn = tokio::select! {
            g = lock.lock() => g,
            () = shared.shutdown.cancelled() => return Err(ReceiveError::Cancelled),
        };
        let timeout = shared.config.timeout;
        shared
            .client
            .claim(self.task.id, Some(timeout))
            .await
            .map_err(|e| match e {
                SignalError::ClaimConflict { .. } => ReceiveError::Claim(e),
                source => ReceiveError::Signal {
                    doing: "claiming the offer",
                    source,
                },
            })?;
        match self.after_claim(save_dir, space).await {
            Ok(report) => Ok(report),
            // The task belongs to the receiver whose accept came first: leave it alone.
            Err(e @ ReceiveError::AcceptedElsewhere { .. }) => Err(e),
            Err(e) => {
                let reason = reason_chain(&e);
                if let Err(fe) = shared.client.fail(self.task.id, Some(&reason)).await {
                    debug!(task = self.task.id, error = %fe, "cannot fail the task");
                }
                Err(e)
            }
        }
    }

    async fn after_claim(
        &self,
        save_dir: &Path,
        mut space: SpaceReservation,
    ) -> Result<ReceiveReport, ReceiveError> {
        let shared = &self.shared;
        let timeout = shared.config.timeout;
        let _lease = self.keep_lease();
        let accept = AcceptMessage {
            transfer_id: self.offer.transfer_id,
            receiver_key: *shared.transport.public_key().as_bytes(),
        };
        shared
            .client
            .post_message(self.task.id, vec![Part::text(accept.to_content())])
            .await
            .map_err(|source| ReceiveError::Signal {
                doing: "posting the accept message",
                source,
            })?;
        self.check_first_accept().await?;

        let topic = transfer_topic(self.offer.transfer_id.as_bytes());
        let sender_key = PublicKey::from_bytes(self.offer.sender_key);
        let deadline = Deadline::now() + timeout;
        let conn = tokio::select! {
            c = shared.transport.connect_on_topic(topic, sender_key, deadline) => match c {
                Ok(c) => c,
                Err(NoConnection::TimedOut) => return Err(ReceiveError::NoConnection(timeout)),
                Err(NoConnection::NoPath(why)) => return Err(ReceiveError::NoPath(why)),
            },
            status = task_closed(&shared.client, self.task.id) => {
                return Err(ReceiveError::SenderGaveUp(status.as_str().to_owned()));
            }
            () = shared.shutdown.cancelled() => return Err(ReceiveError::Cancelled),
        };

        let transfer_id = self.offer.transfer_id.to_string();
        let connection_path = ConnectionPath::of(&conn);
        self.emit(Event::TransferStart {
            transfer_id: transfer_id.clone(),
            direction: Direction::Receive,
            peer_id: self.offer.sender_id.clone(),
            file_name: sanitize_file_name(&self.offer.filename),
            file_size: self.offer.size,
            path: connection_path.clone(),
        });
        let meta = Meta {
            name: self.offer.filename.clone(),
            size: self.offer.size,
            hash: FileHash(self.offer.sha256),
        };
        let config = ReceiverConfig::new(shared.config.max_size.unwrap_or(u64::MAX));
        let started = Instant::now();
        let mut throttle = ProgressThrottle::new();
        let events = self.events.clone();
        let progress_id = transfer_id.clone();
        let progress = move |bytes: u64, total: u64| {
            space.shrink_to(total.saturating_sub(bytes));
            if throttle.ready(bytes, total) {
                let _ = events.send(Incoming::Event(Event::Progress {
                    transfer_id: progress_id.clone(),
                    direction: Direction::Receive,
                    bytes,
                    total,
                }));
            }
        };
        let received = tokio::select! {
            r = receive_stream_with(conn, save_dir, &transfer_id, meta, config, shared.config.progress, progress) => {
                r.map_err(ReceiveError::Stream)?
            }
            () = shared.shutdown.cancelled() => return Err(ReceiveError::Cancelled),
        };
        let duration_ms = millis(started.elapsed());
        let file_hash = received.hash.to_hex();
        let outputs = vec![json!({
            "sha256": file_hash,
            "bytes": received.size,
            "duration_ms": duration_ms,
            "path": connection_path.path,
            "relay": connection_path.relay,
        })];
        if let Err(e) = self.complete_task(outputs).await {
            // The file is stored and verified; only the bookkeeping failed.
            self.emit(Event::Error {
                transfer_id: Some(transfer_id.clone()),
                message: format!(
                    "file saved, but completing task {} failed: {e}",
                    self.task.id
                ),
            });
        }
        // Trust on first use only now: the sender proved it holds the key (Noise) and sent the
        // bytes whose SHA-256 matched, and the file is stored. An offer alone proves nothing.
        if let Err(e) =
            remember_key(shared.clone(), self.offer.sender_id.clone(), self.approval).await
        {
            self.emit(Event::Error {
                transfer_id: Some(transfer_id.clone()),
                message: format!(
                    "file saved, but remembering the key of {} failed: {}",
                    self.offer.sender_id,
                    reason_chain(&e)
                ),
            });
        }
        Ok(ReceiveReport {
            transfer_id,
            task_id: self.task.id.to_string(),
            file_path: received.path,
            file_hash,
            bytes: received.size,
            duration_ms,
            path: connection_path,
        })
    }

    /// Fails with [`ReceiveError::AcceptedElsewhere`] unless the first accept our actor id
    /// posted on the task is ours: the same actor id claimed twice (a second `listen`), and the
    /// sender takes only the first accept, so the later receiver must not start a transfer.
    async fn check_first_accept(&self) -> Result<(), ReceiveError> {
        let shared = &self.shared;
        let messages = shared
            .client
            .list_messages(self.task.id)
            .await
            .map_err(|source| ReceiveError::Signal {
                doing: "reading the accept messages",
                source,
            })?;
        let first = first_accept(&messages, &shared.config.actor_id);
        match first {
            Some(a) if a.receiver_key != *shared.transport.public_key().as_bytes() => {
                Err(ReceiveError::AcceptedElsewhere {
                    actor: shared.config.actor_id.clone(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Records the verified file on ATS: the task completed with `outputs`. The file is
    /// stored already, so a hub that is restarting or briefly unreachable is waited for (up to
    /// the node's timeout, the claim's lease still renewed) rather than leaving the task open.
    async fn complete_task(&self, outputs: Vec<serde_json::Value>) -> Result<(), SignalError> {
        let give_up = Deadline::now() + self.shared.config.timeout;
        loop {
            let attempt = self.shared.client.complete(self.task.id, outputs.clone());
            let Err(e) = attempt.await else {
                return Ok(());
            };
            if !e.is_transient() || Deadline::now() + COMPLETE_RETRY_PAUSE >= give_up {
                return Err(e);
            }
            debug!(task = self.task.id, error = %e, "completing the task failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(COMPLETE_RETRY_PAUSE) => {}
                () = self.shared.shutdown.cancelled() => return Err(e),
            }
        }
    }

    /// Renews the claim every third of the lease while the transfer runs.
    fn keep_lease(&self) -> LeaseKeeper {
        let client = self.shared.client.clone();
        let id = self.task.id;
        let lease = self.shared.config.timeout;
        LeaseKeeper(tokio::spawn(async move {
            let period = lease / 3;
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = client.renew_claim(id, lease).await {
                    debug!(task = id, error = %e, "lease renewal failed");
                }
            }
        }))
    }
}
