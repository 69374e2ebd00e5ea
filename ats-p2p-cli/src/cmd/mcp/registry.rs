//! What the server remembers between tool calls: the offers waiting for the agent's decision
//! (from the watches it runs, one per channel) and the transfers it saw, both bounded.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ats_p2p::events::{Direction, Event};
use ats_p2p::policy::{AllowedBy, KeyUpdate};
use ats_p2p::{Incoming, Node, PendingOffer};
use futures::StreamExt as _;
use tokio::task::JoinHandle;

use super::progress::ProgressHandle;
use super::schemas::{OfferInfo, TransferRecord};

/// Most offers held for a decision; beyond, new ones are rejected as busy (each holds a little
/// memory, and a flood of offers must not grow it without bound).
pub(crate) const MAX_PENDING_OFFERS: usize = 256;

/// Most transfers remembered for `list_transfers`; the oldest are forgotten first.
pub(crate) const MAX_TRANSFERS: usize = 1024;

/// Most channels watched at once (each is a WebSocket to ATS).
pub(crate) const MAX_CHANNELS: usize = 16;

/// Reason given to the sender of an offer that arrived while too many were waiting.
const BUSY_REASON: &str = "busy: too many offers are waiting for a decision";

/// An offer waiting for `accept_offer` or `reject_offer`.
#[derive(Debug)]
pub(crate) struct HeldOffer {
    /// The channel it came on.
    pub(crate) channel: String,
    /// The offer, to accept or reject.
    pub(crate) pending: Box<PendingOffer>,
    /// When it was seen.
    seen: Instant,
}

/// Why a channel cannot be watched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    /// Too many channels are watched already.
    #[error("already watching {MAX_CHANNELS} channels; use one of them")]
    TooManyChannels,
}

/// The offers, the transfers and the watches.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Offers older than this are dropped: their senders gave up.
    offer_lifetime: Duration,
    offers: Mutex<VecDeque<HeldOffer>>,
    transfers: Mutex<VecDeque<TransferRecord>>,
    /// Progress of accepted offers, by transfer id, for the `accept_offer` call waiting on them.
    progress: Mutex<HashMap<String, ProgressHandle>>,
    /// The watch task of each channel.
    watches: Mutex<HashMap<String, JoinHandle<()>>>,
}

/// Locks `m`, recovering from a panic elsewhere (the data stays usable).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// An empty registry; offers are held at most `offer_lifetime` (the node's timeout).
    pub(crate) fn new(offer_lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            offer_lifetime,
            offers: Mutex::default(),
            transfers: Mutex::default(),
            progress: Mutex::default(),
            watches: Mutex::default(),
        })
    }

    /// Watches `channel` unless it is watched already: with `save_dir`, offers are accepted
    /// there automatically; without, they wait here for the agent.
    pub(crate) fn watch(
        self: &Arc<Self>,
        node: &Node,
        channel: &str,
        save_dir: Option<PathBuf>,
    ) -> Result<(), WatchError> {
        let mut watches = locked(&self.watches);
        if watches.contains_key(channel) {
            return Ok(());
        }
        if watches.len() >= MAX_CHANNELS {
            return Err(WatchError::TooManyChannels);
        }
        let mut inbox = node.watch(channel, save_dir);
        let this = Arc::clone(self);
        let name = channel.to_owned();
        let task = tokio::spawn(async move {
            while let Some(item) = inbox.next().await {
                match item {
                    Incoming::Offer(pending) => this.hold(&name, pending).await,
                    Incoming::Event(event) => this.record(&event),
                    other => tracing::debug!(?other, "inbox item not handled"),
                }
            }
            tracing::warn!(channel = %name, "the watch on ATS ended");
        });
        watches.insert(channel.to_owned(), task);
        Ok(())
    }

    /// Stops every watch (dropping their inboxes) and forgets the offers waiting; call after
    /// the node was destroyed so running transfers end with a reason first.
    pub(crate) fn stop(&self) {
        for (_, task) in locked(&self.watches).drain() {
            task.abort();
        }
        locked(&self.offers).clear();
    }

    /// Drops pending offers before the node is destroyed (they hold the node's internals).
    pub(crate) fn forget_offers(&self) {
        locked(&self.offers).clear();
    }

    /// Keeps an offer for the agent, or rejects it as busy when too many wait.
    async fn hold(&self, channel: &str, pending: Box<PendingOffer>) {
        let refused = {
            let mut offers = locked(&self.offers);
            self.prune(&mut offers);
            if offers.len() >= MAX_PENDING_OFFERS {
                Some(pending)
            } else {
                offers.push_back(HeldOffer {
                    channel: channel.to_owned(),
                    pending,
                    seen: Instant::now(),
                });
                None
            }
        };
        if let Some(pending) = refused {
            tracing::warn!(transfer = %pending.transfer_id(), "{BUSY_REASON}; rejecting");
            if let Err(e) = pending.reject(BUSY_REASON).await {
                tracing::warn!(error = %e, "cannot reject the offer");
            }
        }
    }

    /// Drops offers whose senders gave up waiting.
    fn prune(&self, offers: &mut VecDeque<HeldOffer>) {
        offers.retain(|o| o.seen.elapsed() < self.offer_lifetime);
    }

    /// The offers waiting on `channel`, oldest first.
    pub(crate) fn offers(&self, channel: &str) -> Vec<OfferInfo> {
        let mut offers = locked(&self.offers);
        self.prune(&mut offers);
        offers
            .iter()
            .filter(|o| o.channel == channel)
            .map(offer_info)
            .collect()
    }

    /// Takes the offer with `transfer_id` out, to accept or reject it.
    pub(crate) fn take_offer(&self, transfer_id: &str) -> Option<HeldOffer> {
        let mut offers = locked(&self.offers);
        self.prune(&mut offers);
        let at = offers
            .iter()
            .position(|o| o.pending.transfer_id().eq_ignore_ascii_case(transfer_id))?;
        offers.remove(at)
    }

    /// Routes the progress of `transfer_id` (an accepted offer) to `handle` until
    /// [`stop_progress`](Self::stop_progress).
    pub(crate) fn route_progress(&self, transfer_id: &str, handle: ProgressHandle) {
        locked(&self.progress).insert(transfer_id.to_owned(), handle);
    }

    /// Stops routing the progress of `transfer_id`.
    pub(crate) fn stop_progress(&self, transfer_id: &str) {
        locked(&self.progress).remove(transfer_id);
    }

    /// Updates the transfer an event is about (and forwards its progress to a waiting
    /// `accept_offer`).
    pub(crate) fn record(&self, event: &Event) {
        if let Event::Progress {
            transfer_id,
            direction: Direction::Receive,
            bytes,
            total,
        } = event
            && let Some(h) = locked(&self.progress).get(transfer_id)
        {
            h.report("receiving", *bytes, *total);
        }
        let Some(id) = event.transfer_id() else {
            return;
        };
        let mut transfers = locked(&self.transfers);
        let at = transfers.iter().position(|t| t.transfer_id == id);
        let mut record = match at.and_then(|i| transfers.remove(i)) {
            Some(r) => r,
            None => TransferRecord::new(id, direction_of(event)),
        };
        record.apply(event);
        transfers.push_front(record);
        transfers.truncate(MAX_TRANSFERS);
    }

    /// The transfers seen, newest first, optionally only those in `state`.
    pub(crate) fn transfers(&self, state: Option<&str>) -> Vec<TransferRecord> {
        locked(&self.transfers)
            .iter()
            .filter(|t| state.is_none_or(|s| t.state == s))
            .cloned()
            .collect()
    }

    /// What was seen of `transfer_id`.
    pub(crate) fn transfer(&self, transfer_id: &str) -> Option<TransferRecord> {
        locked(&self.transfers)
            .iter()
            .find(|t| t.transfer_id.eq_ignore_ascii_case(transfer_id))
            .cloned()
    }
}

/// The side an event shows us on (`file` and `queued` are the receiver's, `offer_sent` the
/// sender's).
fn direction_of(event: &Event) -> Direction {
    match event {
        Event::OfferSent { .. } => Direction::Send,
        Event::TransferStart { direction, .. }
        | Event::Progress { direction, .. }
        | Event::TransferComplete { direction, .. }
        | Event::TransferFailed { direction, .. } => *direction,
        _ => Direction::Receive,
    }
}

/// The offer as `list_offers` shows it.
fn offer_info(o: &HeldOffer) -> OfferInfo {
    let offer = &o.pending.offer;
    let approval = o.pending.approval();
    let sender_key_status = match (approval.allowed_by, approval.key_update) {
        (AllowedBy::PinnedKey, _) => "pinned",
        (_, KeyUpdate::Keep) => "known",
        (_, KeyUpdate::Remember) => "new",
        (_, KeyUpdate::Replace { .. }) => "changed",
    };
    OfferInfo {
        transfer_id: o.pending.transfer_id(),
        task_id: o.pending.task.id.to_string(),
        channel: o.channel.clone(),
        sender_id: offer.sender_id.clone(),
        sender_key: hex::encode(offer.sender_key),
        sender_key_status: sender_key_status.to_owned(),
        file_name: offer.filename.clone(),
        size: offer.size,
        sha256: hex::encode(offer.sha256),
        age_ms: u64::try_from(o.seen.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

impl TransferRecord {
    /// A transfer first seen now.
    fn new(transfer_id: &str, direction: Direction) -> Self {
        Self {
            transfer_id: transfer_id.to_owned(),
            direction: match direction {
                Direction::Send => "send",
                Direction::Receive => "receive",
            }
            .to_owned(),
            state: "offered".to_owned(),
            peer_id: None,
            task_id: None,
            file_name: None,
            file_size: None,
            sha256: None,
            bytes: 0,
            file_path: None,
            path: None,
            code: None,
            reason: None,
        }
    }

    /// Takes what `event` says.
    fn apply(&mut self, event: &Event) {
        match event {
            Event::OfferSent {
                task_id,
                file_name,
                file_size,
                file_hash,
                recipient_id,
                ..
            } => {
                self.task_id = Some(task_id.clone());
                self.file_name = Some(file_name.clone());
                self.file_size = Some(*file_size);
                self.sha256 = Some(file_hash.clone());
                self.peer_id = Some(recipient_id.clone());
            }
            Event::File {
                task_id,
                file_name,
                file_size,
                file_hash,
                sender_id,
                ..
            } => {
                self.task_id = Some(task_id.clone());
                self.file_name = Some(file_name.clone());
                self.file_size = Some(*file_size);
                self.sha256 = Some(file_hash.clone());
                self.peer_id = Some(sender_id.clone());
            }
            Event::Queued { .. } => self.state = "queued".to_owned(),
            Event::TransferStart {
                peer_id,
                file_name,
                path,
                ..
            } => {
                self.state = "running".to_owned();
                self.peer_id = Some(peer_id.clone());
                self.file_name = Some(file_name.clone());
                self.path = Some(path.path.clone());
            }
            // Progress before the start is the sender hashing, not bytes moved.
            Event::Progress { bytes, .. } if self.state == "running" => self.bytes = *bytes,
            Event::TransferComplete {
                file_path,
                file_hash,
                bytes,
                path,
                ..
            } => {
                self.state = "complete".to_owned();
                self.file_path = Some(file_path.clone());
                self.sha256 = Some(file_hash.clone());
                self.bytes = *bytes;
                self.path = Some(path.path.clone());
            }
            // The broken transfer's task was failed; the file goes out under a new id.
            Event::TransferFailed { code, reason, .. } | Event::Retrying { code, reason, .. } => {
                self.state = "failed".to_owned();
                self.code = Some(code.clone());
                self.reason = Some(reason.clone());
            }
            Event::Error { message, .. } => self.reason = Some(message.clone()),
            _ => {}
        }
    }
}
