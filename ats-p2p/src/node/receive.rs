//! The receiver's side: watch a channel for offers addressed to us, judge them, claim, post the
//! accept with our key, connect to the sender's key only, receive and verify, complete the task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ats_p2p_signal::offer::OFFER_TASK_TYPE;
use ats_p2p_signal::{
    FileOffer, Part, SignalError, Task, TaskEvent, TaskId, TaskStatus, TransferId, WatchConfig,
};
use ats_p2p_swarm::PublicKey;
use ats_p2p_swarm::hyperdht::Connection;
use ats_p2p_wire::{FileHash, Meta, ReceiverConfig};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant as Deadline;
use tracing::debug;

use super::ReceiveError;
use super::send::remember_key;
use super::{MAX_QUEUED_RECEIVES, ProgressThrottle, Shared, locked};
use crate::error::reason_chain;
use crate::events::{ConnectionPath, Direction, Event, FailureKind};
use crate::lifecycle::{ReceiveAction, ReceiveLifecycle, Turn};
use crate::partial::PartialKey;
use crate::policy::{OfferFacts, PeerApproval, ReceiveRejection};
use crate::save::{STALE_TEMP_AGE, available_space, remove_stale_files};
use crate::transfer::StreamReceiveError;
use crate::transfer::{ReceiveOptions, Received, receive_directory, receive_stream_opts};
use ats_p2p_swarm::swarm::NoConnection;
use ats_p2p_swarm::wait;

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
        if self.order.len() > SEEN_OFFERS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
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
        clean_save_dir(dir.clone(), shared.config.partial_expiry, &tx).await;
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
    let routes = TaskRoutes::default();
    let mut jobs = JoinSet::new();
    let limit = shared.config.max_concurrent_receives.max(1);
    let slots = Arc::new(Semaphore::new(limit));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            ev = watch.next() => {
                let Some(ev) = ev else { break };
                if ev.task.status != TaskStatus::Pending {
                    routes.deliver(&ev);
                    continue;
                }
                if !seen.first(ev.task.id) {
                    continue;
                }
                let Some(job) = judge(&shared, ev.task, &tx, &routes).await else { continue };
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
                            routes: job.routes,
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
/// [`remove_stale_files`]) before any transfer starts there, except partial files kept for
/// resuming that have not expired after `partial_expiry`.
async fn clean_save_dir(
    dir: PathBuf,
    partial_expiry: Duration,
    tx: &mpsc::UnboundedSender<Incoming>,
) {
    let shown = dir.display().to_string();
    let cleaned = tokio::task::spawn_blocking(move || {
        remove_stale_files(&dir, STALE_TEMP_AGE, partial_expiry)
    })
    .await;
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
    routes: &TaskRoutes,
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
        file_count: offer.manifest.as_ref().map(|m| m.files.len() as u64),
    }));
    let job = |approval| Job {
        shared: shared.clone(),
        offer: offer.clone(),
        task: task.clone(),
        approval,
        events: tx.clone(),
        routes: routes.clone(),
    };
    if let Some(creator) = task.source_id.as_deref()
        && creator != offer.sender_id
    {
        let reason = format!(
            "offer names sender {} but the task was created by {creator}",
            offer.sender_id
        );
        refuse_task(shared, &task, &transfer_id, "sender_mismatch", &reason, tx).await;
        return None;
    }
    if let Some(manifest) = &offer.manifest
        && let Some(reason) = unsafe_tree_path(manifest)
    {
        refuse_task(shared, &task, &transfer_id, "unsafe_path", &reason, tx).await;
        return None;
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

/// Why a directory offer's paths are unsafe on this platform (the offer itself checked that
/// they stay inside the directory), or `None`.
fn unsafe_tree_path(manifest: &ats_p2p_signal::Manifest) -> Option<String> {
    let paths = manifest
        .dirs
        .iter()
        .chain(manifest.files.iter().map(|f| &f.path));
    paths.into_iter().find_map(|path| {
        crate::names::check_tree_path(path)
            .err()
            .map(|reason| format!("unsafe path {path:?} in the offered directory: {reason}"))
    })
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

/// One accepted offer on its way to disk.
#[derive(Debug)]
struct Job {
    shared: Arc<Shared>,
    offer: FileOffer,
    task: Task,
    approval: PeerApproval,
    events: mpsc::UnboundedSender<Incoming>,
    routes: TaskRoutes,
}

/// Hands the watch's events about claimed offers to the receives running them (a receive
/// learns from them that the sender closed the task).
#[derive(Debug, Clone, Default)]
struct TaskRoutes(Arc<Mutex<HashMap<TaskId, mpsc::UnboundedSender<TaskEvent>>>>);

impl TaskRoutes {
    /// Events about task `id` from now on, until the returned subscription is dropped.
    fn subscribe(&self, id: TaskId) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        locked(&self.0).insert(id, tx);
        Subscription {
            routes: self.clone(),
            id,
            rx,
        }
    }

    /// Gives `event` to the receive of its task, if one runs.
    fn deliver(&self, event: &TaskEvent) {
        if let Some(tx) = locked(&self.0).get(&event.task.id) {
            let _ = tx.send(event.clone());
        }
    }
}

/// A receive's share of the watch's events.
#[derive(Debug)]
struct Subscription {
    routes: TaskRoutes,
    id: TaskId,
    rx: mpsc::UnboundedReceiver<TaskEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        locked(&self.routes.0).remove(&self.id);
    }
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

    /// Drives the [`ReceiveLifecycle`]: waits for its turn, claims, accepts, receives,
    /// completes; on failure after the claim the task is failed with the reason. Reports
    /// through events as well as the result.
    async fn run(
        self,
        save_dir: &Path,
        space: SpaceReservation,
    ) -> Result<ReceiveReport, ReceiveError> {
        let shared = &self.shared;
        let mut machine = ReceiveLifecycle::new(
            self.offer.clone(),
            self.task.id,
            self.approval,
            shared.config.actor_id.clone(),
            shared.swarm.public_key(),
            shared.config.timeout,
        )
        .with_resume(shared.config.resume);
        let mut events = self.routes.subscribe(self.task.id);
        let mut space = Some(space);
        // What this receive holds while it runs: its mark as the node's receive of this
        // transfer and its turn with the sender.
        let mut _turn: Option<(ReceivingGuard, OwnedMutexGuard<()>)> = None;
        let mut connection: Option<Connection> = None;
        let mut op: Option<Pin<Box<dyn Future<Output = Step> + Send + '_>>> = None;
        let mut cancelled = false;
        let shutdown = shared.shutdown.clone();
        loop {
            while let Some(action) = machine.poll_action() {
                match action {
                    ReceiveAction::WaitTurn => op = Some(Box::pin(self.wait_turn())),
                    ReceiveAction::Connect {
                        topic,
                        key,
                        deadline,
                    } => {
                        op = Some(Box::pin(async move {
                            let conn = shared
                                .swarm
                                .connect_on_topic(topic, key, Deadline::from_std(deadline))
                                .await;
                            Step::Connected(conn.map(Box::new))
                        }));
                    }
                    ReceiveAction::Receive => {
                        if let (Some(conn), Some(space)) = (connection.take(), space.take()) {
                            op = Some(Box::pin(self.receive(conn, save_dir, space)));
                        }
                    }
                    other => self.perform(&mut machine, other).await,
                }
            }
            if let Some(outcome) = machine.poll_outcome() {
                return outcome;
            }
            let timeout = machine.poll_timeout();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !cancelled => {
                    cancelled = true;
                    op = None;
                    machine.handle_cancel();
                }
                step = wait::optional(&mut op), if op.is_some() => {
                    op = None;
                    let now = Instant::now();
                    match step {
                        Step::Turn(Some(turn)) => {
                            _turn = Some(turn);
                            machine.handle_turn(Turn::Granted);
                        }
                        Step::Turn(None) => machine.handle_turn(Turn::AlreadyReceiving),
                        Step::Connected(Ok(conn)) => {
                            let path = ConnectionPath::of(&conn);
                            connection = Some(*conn);
                            machine.handle_connection(Ok(path), now);
                        }
                        Step::Connected(Err(e)) => machine.handle_connection(Err(e), now),
                        Step::Received(r) => machine.handle_outcome(r, now),
                    }
                }
                Some(event) = events.rx.recv() => machine.handle_task_event(&event),
                () = wait::sleep_until(timeout), if timeout.is_some() => {
                    machine.handle_timeout(Instant::now());
                }
            }
        }
    }

    /// Carries out one of the machine's ATS calls or reports.
    async fn perform(&self, machine: &mut ReceiveLifecycle, action: ReceiveAction) {
        let shared = &self.shared;
        let client = &shared.client;
        match action {
            ReceiveAction::Claim { task, lease } => {
                let claimed = client.claim(task, Some(lease)).await.map(|_| ());
                machine.handle_claimed(claimed, Instant::now());
            }
            ReceiveAction::PostAccept(text) => {
                let posted = client
                    .post_message(machine.task(), vec![Part::text(text)])
                    .await
                    .map(|_| ());
                machine.handle_accept_posted(posted);
            }
            ReceiveAction::ListMessages(task) => {
                let messages = client.list_messages(task).await;
                machine.handle_messages(messages, Instant::now());
            }
            ReceiveAction::RenewLease { task, lease } => {
                // In the background: the stream must not wait for ATS.
                let client = client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.renew_claim(task, lease).await {
                        debug!(task, error = %e, "lease renewal failed");
                    }
                });
            }
            ReceiveAction::Complete { task, outputs } => {
                if let Err(e) = self.complete_task(task, outputs).await {
                    // The file is stored and verified; only the bookkeeping failed.
                    self.emit(Event::Error {
                        transfer_id: Some(self.offer.transfer_id.to_string()),
                        message: format!("file saved, but completing task {task} failed: {e}"),
                    });
                }
            }
            ReceiveAction::Fail { task, reason } => {
                if let Err(e) = client.fail(task, Some(&reason)).await {
                    debug!(task, error = %e, "cannot fail the task");
                }
            }
            ReceiveAction::RememberKey(approval) => {
                if let Err(e) =
                    remember_key(shared.clone(), self.offer.sender_id.clone(), approval).await
                {
                    self.emit(Event::Error {
                        transfer_id: Some(self.offer.transfer_id.to_string()),
                        message: format!(
                            "file saved, but remembering the key of {} failed: {}",
                            self.offer.sender_id,
                            reason_chain(&e)
                        ),
                    });
                }
            }
            ReceiveAction::Emit(event) => self.emit(event),
            ReceiveAction::WaitTurn | ReceiveAction::Connect { .. } | ReceiveAction::Receive => {}
        }
    }

    /// Records the verified file on ATS: the task completed with `outputs`. The file is
    /// stored already, so a hub that is restarting or briefly unreachable is waited for (up to
    /// the node's timeout, the claim's lease still renewed) rather than leaving the task open.
    async fn complete_task(&self, task: TaskId, outputs: Vec<Value>) -> Result<(), SignalError> {
        let lease = self.shared.config.timeout;
        let give_up = Deadline::now() + lease;
        let mut renewed = Deadline::now();
        let mut pauses = ats_p2p_signal::backoff(COMPLETE_RETRY_FIRST, COMPLETE_RETRY_MAX);
        loop {
            let Err(e) = self.shared.client.complete(task, outputs.clone()).await else {
                return Ok(());
            };
            let pause = pauses.next().unwrap_or(COMPLETE_RETRY_MAX);
            if !e.is_transient() || Deadline::now() + pause >= give_up {
                return Err(e);
            }
            debug!(task, error = %e, "completing the task failed; retrying");
            if renewed.elapsed() >= lease / 3 {
                renewed = Deadline::now();
                if let Err(e) = self.shared.client.renew_claim(task, lease).await {
                    debug!(task, error = %e, "lease renewal failed");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.shared.shutdown.cancelled() => return Err(e),
            }
        }
    }

    /// This node receives a transfer once, however many watches saw the offer, and one
    /// transfer per sender at a time (the sender matches connections by key).
    async fn wait_turn(&self) -> Step {
        let Some(receiving) = ReceivingGuard::begin(&self.shared, self.offer.transfer_id) else {
            return Step::Turn(None);
        };
        let lock = self
            .shared
            .peer_lock(PublicKey::from_bytes(self.offer.sender_key));
        Step::Turn(Some((receiving, lock.lock_owned().await)))
    }

    /// Receives the file over `conn` into `save_dir`.
    async fn receive(
        &self,
        conn: Connection,
        save_dir: &Path,
        mut space: SpaceReservation,
    ) -> Step {
        let transfer_id = self.offer.transfer_id.to_string();
        let meta = Meta {
            name: self.offer.filename.clone(),
            size: self.offer.size,
            hash: FileHash(self.offer.sha256),
            resume: false,
        };
        let config = ReceiverConfig::new(self.shared.config.max_size.unwrap_or(u64::MAX));
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
        let options = ReceiveOptions {
            rule: self.shared.config.progress,
            resume: self.shared.config.resume.then(|| PartialKey {
                sender_key: self.offer.sender_key,
                name: self.offer.filename.clone(),
                size: self.offer.size,
                sha256: FileHash(self.offer.sha256),
            }),
            limit: self.shared.config.limit,
        };
        let received = match &self.offer.manifest {
            Some(_) => {
                receive_directory(conn, save_dir, &self.offer, config, options, progress).await
            }
            None => {
                receive_stream_opts(
                    conn,
                    save_dir,
                    &transfer_id,
                    meta,
                    config,
                    options,
                    progress,
                )
                .await
            }
        };
        Step::Received(received)
    }
}

/// Pauses between attempts to complete the task of a stored file while ATS is unreachable:
/// the shared backoff, from the first pause to the longest.
const COMPLETE_RETRY_FIRST: Duration = Duration::from_millis(250);
const COMPLETE_RETRY_MAX: Duration = Duration::from_secs(2);

/// What one of a receive's long waits came to.
enum Step {
    /// Our turn (with what holds it), or `None`: this node already receives the transfer.
    Turn(Option<(ReceivingGuard, OwnedMutexGuard<()>)>),
    /// The sender's connection, or why not.
    Connected(Result<Box<Connection>, NoConnection>),
    /// The file, or why not.
    Received(Result<Received, StreamReceiveError>),
}
