//! Watching the channel: offers seen once, the save directory cleaned before the first
//! receive, and the watch's task events routed to the receives they concern.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ats_p2p_signal::offer::OFFER_TASK_TYPE;
use ats_p2p_signal::{TaskId, TaskStatus, WatchConfig};
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::debug;

use crate::error::reason_chain;
use crate::events::Event;
use crate::node::{MAX_QUEUED_RECEIVES, Shared};
use crate::policy::ReceiveRejection;
use crate::save::{STALE_TEMP_AGE, remove_stale_files};

use super::judge::judge;
use super::routes::TaskRoutes;
use super::{Incoming, PendingOffer};

/// Offers remembered as already handled, so a repeated event does not start a second transfer.
pub(super) const SEEN_OFFERS: usize = 16_384;

/// Bounded memory of offers already handled.
#[derive(Debug, Default)]
pub(super) struct Seen {
    set: HashSet<TaskId>,
    order: VecDeque<TaskId>,
}

impl Seen {
    /// True the first time `id` is seen.
    pub(super) fn first(&mut self, id: TaskId) -> bool {
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

pub(super) async fn run_watch(
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
pub(super) async fn clean_save_dir(
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
