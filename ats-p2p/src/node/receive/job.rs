//! One accepted offer on its way to disk: its turn, the claim and accept (the lifecycle
//! machine's actions), the connection, the receive, the completion on ATS.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ats_p2p_signal::{FileOffer, Part, SignalError, Task, TaskId, TransferId};
use ats_p2p_swarm::PublicKey;
use ats_p2p_swarm::hyperdht::Connection;
use ats_p2p_wire::{FileHash, Meta, ReceiverConfig};
use serde_json::Value;
use tokio::sync::{OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant as Deadline;
use tracing::debug;

use crate::error::reason_chain;
use crate::events::{ConnectionPath, Direction, Event};
use crate::lifecycle::{ReceiveAction, ReceiveLifecycle, Turn};
use crate::node::ReceiveError;
use crate::node::send::remember_key;
use crate::node::{ProgressThrottle, Shared, locked};
use crate::partial::PartialKey;
use crate::policy::{PeerApproval, ReceiveRejection};
use crate::save::available_space;
use crate::transfer::StreamReceiveError;
use crate::transfer::{ReceiveOptions, Received, receive_directory, receive_stream_opts};
use ats_p2p_swarm::swarm::NoConnection;
use ats_p2p_swarm::wait;

use super::refuse::refuse_task;
use super::routes::TaskRoutes;
use super::{Incoming, ReceiveReport};

/// One accepted offer on its way to disk.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) shared: Arc<Shared>,
    pub(super) offer: FileOffer,
    pub(super) task: Task,
    pub(super) approval: PeerApproval,
    pub(super) events: mpsc::UnboundedSender<Incoming>,
    pub(super) routes: TaskRoutes,
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
    pub(super) fn shrink_to(&mut self, left: u64) {
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
pub(super) struct ReceivingGuard {
    shared: Arc<Shared>,
    id: TransferId,
}

impl ReceivingGuard {
    /// `None` when this node already receives `id`.
    pub(super) fn begin(shared: &Arc<Shared>, id: TransferId) -> Option<Self> {
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
    pub(super) fn emit(&self, event: Event) {
        let _ = self.events.send(Incoming::Event(event));
    }

    /// Checks the free space in `save_dir` (creating it) against the offer's size, counting the
    /// bytes that receives already running still have to write, and reserves the offer's size
    /// until the returned reservation is dropped. Reservations are per node, whatever the file
    /// system (conservative when save directories are on different disks).
    pub(super) fn reserve_space(
        &self,
        save_dir: &Path,
    ) -> Result<SpaceReservation, ReceiveRejection> {
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
    pub(super) async fn wait_for_slot(
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
    pub(super) async fn refuse(&self, rejection: &ReceiveRejection) {
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
    pub(super) async fn run(
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
    pub(super) async fn perform(&self, machine: &mut ReceiveLifecycle, action: ReceiveAction) {
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
    pub(super) async fn complete_task(
        &self,
        task: TaskId,
        outputs: Vec<Value>,
    ) -> Result<(), SignalError> {
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
    pub(super) async fn wait_turn(&self) -> Step {
        let Some(receiving) = ReceivingGuard::begin(&self.shared, self.offer.transfer_id) else {
            return Step::Turn(None);
        };
        let lock = self
            .shared
            .peer_lock(PublicKey::from_bytes(self.offer.sender_key));
        Step::Turn(Some((receiving, lock.lock_owned().await)))
    }

    /// Receives the file over `conn` into `save_dir`.
    pub(super) async fn receive(
        &self,
        conn: Connection,
        save_dir: &Path,
        mut space: SpaceReservation,
    ) -> Step {
        let transfer_id = self.offer.transfer_id.to_string();
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
                let meta = Meta::new(
                    self.offer.filename.clone(),
                    self.offer.size,
                    FileHash(self.offer.sha256),
                );
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
pub(super) const COMPLETE_RETRY_FIRST: Duration = Duration::from_millis(250);
pub(super) const COMPLETE_RETRY_MAX: Duration = Duration::from_secs(2);

/// What one of a receive's long waits came to.
pub(super) enum Step {
    /// Our turn (with what holds it), or `None`: this node already receives the transfer.
    Turn(Option<(ReceivingGuard, OwnedMutexGuard<()>)>),
    /// The sender's connection, or why not.
    Connected(Result<Box<Connection>, NoConnection>),
    /// The file, or why not.
    Received(Result<Received, StreamReceiveError>),
}
