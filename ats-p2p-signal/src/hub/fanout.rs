//! Fan-out of committed events to WebSocket sessions, bounded per subscriber.
//!
//! The database thread [`publish`](Fanout::publish)es each event once: it is serialized to its
//! text frame (the task data is dropped) and shared by reference among the subscribers' queues.
//! Each queue is bounded by [`SUBSCRIBER_QUEUE_EVENTS`] and [`SUBSCRIBER_QUEUE_BYTES`]; a
//! subscriber that would exceed either is dropped on the spot (its session closes the socket,
//! the client reconnects and catches up over HTTP). Since every queue holds a recent run of the
//! same stream, all queues together keep at most one budget of frames alive, however many
//! subscribers there are and however slowly they read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::store::HubEvent;

/// Most events queued for one subscriber.
pub const SUBSCRIBER_QUEUE_EVENTS: usize = 1024;

/// Most frame bytes queued for one subscriber (a single event larger than this is still
/// accepted into an empty queue, so no event is undeliverable).
pub const SUBSCRIBER_QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// One event as sent: the text frame and what subscriptions filter on.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Event name.
    pub(crate) event_type: String,
    /// The task's channel.
    pub(crate) channel: String,
    /// The task's type.
    pub(crate) task_type: String,
    /// The JSON text frame (reference-counted: every subscriber's write shares it).
    pub(crate) text: Utf8Bytes,
}

#[derive(Debug)]
struct Subscriber {
    tx: mpsc::Sender<Arc<Frame>>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: CancellationToken,
}

/// The publishing side, shared by the database thread and the WebSocket upgrades.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fanout {
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

/// One session's queue.
#[derive(Debug)]
pub(crate) struct Subscription {
    rx: mpsc::Receiver<Arc<Frame>>,
    queued_bytes: Arc<AtomicUsize>,
    dropped: CancellationToken,
}

impl Fanout {
    /// A new subscriber; it receives every event published from now on.
    pub(crate) fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE_EVENTS);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let dropped = CancellationToken::new();
        self.lock().push(Subscriber {
            tx,
            queued_bytes: queued_bytes.clone(),
            dropped: dropped.clone(),
        });
        Subscription {
            rx,
            queued_bytes,
            dropped,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues committed events for every subscriber, in order. Events are serialized only when
    /// someone is subscribed.
    pub(crate) fn publish(&self, events: impl IntoIterator<Item = HubEvent>) {
        if !self.has_subscribers() {
            return;
        }
        self.publish_frames(events.into_iter().map(|ev| {
            let (event_type, channel, task_type, text) = ev.into_frame();
            Frame {
                event_type,
                channel,
                task_type,
                text: text.into(),
            }
        }));
    }

    fn has_subscribers(&self) -> bool {
        let mut subs = self.lock();
        subs.retain(|s| !s.tx.is_closed());
        !subs.is_empty()
    }

    /// Queues frames already serialized (by this or another hub instance), in order.
    pub(crate) fn publish_frames(&self, frames: impl IntoIterator<Item = Frame>) {
        let mut subs = self.lock();
        subs.retain(|s| !s.tx.is_closed());
        if subs.is_empty() {
            return;
        }
        let frames: VecDeque<Arc<Frame>> = frames.into_iter().map(Arc::new).collect();
        for frame in frames {
            let size = frame.text.len();
            subs.retain(|s| {
                let queued = s.queued_bytes.load(Ordering::Acquire);
                if queued > 0 && queued.saturating_add(size) > SUBSCRIBER_QUEUE_BYTES {
                    s.dropped.cancel();
                    return false;
                }
                // Count before sending so the session's decrement never underflows.
                s.queued_bytes.fetch_add(size, Ordering::AcqRel);
                match s.tx.try_send(frame.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        s.dropped.cancel();
                        false
                    }
                    Err(TrySendError::Closed(_)) => false,
                }
            });
        }
    }

    /// Subscribers currently registered (for tests and logs).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Subscription {
    /// The next event, or `None` once this subscriber was dropped for falling behind (or the
    /// hub stops). Call [`Subscription::finished`] when done with it.
    pub(crate) async fn recv(&mut self) -> Option<Arc<Frame>> {
        if self.dropped.is_cancelled() {
            return None;
        }
        self.rx.recv().await
    }

    /// Releases the queue budget an event held (after it was written or skipped).
    pub(crate) fn finished(&self, frame: &Frame) {
        self.queued_bytes
            .fetch_sub(frame.text.len(), Ordering::AcqRel);
    }

    /// Cancelled when this subscriber was dropped for falling behind.
    pub(crate) fn dropped(&self) -> &CancellationToken {
        &self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::store;

    fn event(payload_bytes: usize) -> HubEvent {
        store::test_event("task.created", "c", "t", payload_bytes)
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped_within_its_byte_budget() {
        let fan = Fanout::default();
        let mut slow = fan.subscribe();
        let mut fast = fan.subscribe();
        let size = 256 * 1024;
        let mut delivered_fast = 0;
        for _ in 0..200 {
            fan.publish([event(size)]);
            let f = fast.recv().await.unwrap();
            fast.finished(&f);
            delivered_fast += 1;
        }
        assert_eq!(delivered_fast, 200);
        assert!(slow.dropped().is_cancelled());
        assert_eq!(fan.len(), 1, "only the reader is left");
        let mut queued = 0;
        while let Some(f) = slow.rx.recv().await {
            queued += f.text.len();
        }
        assert!(queued <= SUBSCRIBER_QUEUE_BYTES, "{queued}");
        assert!(slow.recv().await.is_none());
    }

    #[tokio::test]
    async fn one_event_larger_than_the_budget_is_still_delivered() {
        let fan = Fanout::default();
        let mut sub = fan.subscribe();
        fan.publish([event(SUBSCRIBER_QUEUE_BYTES + 10)]);
        let f = sub.recv().await.unwrap();
        sub.finished(&f);
        fan.publish([event(10)]);
        assert!(sub.recv().await.is_some());
        assert!(!sub.dropped().is_cancelled());
    }
}
