//! The watch's events about claimed offers, routed to the receives running them (a receive
//! learns from them that the sender closed the task).

use crate::node::locked;
use ats_p2p_signal::{TaskEvent, TaskId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Hands the watch's events about claimed offers to the receives running them (a receive
/// learns from them that the sender closed the task).
#[derive(Debug, Clone, Default)]
pub(super) struct TaskRoutes(
    pub(super) Arc<Mutex<HashMap<TaskId, mpsc::UnboundedSender<TaskEvent>>>>,
);

impl TaskRoutes {
    /// Events about task `id` from now on, until the returned subscription is dropped.
    pub(super) fn subscribe(&self, id: TaskId) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        locked(&self.0).insert(id, tx);
        Subscription {
            routes: self.clone(),
            id,
            rx,
        }
    }

    /// Gives `event` to the receive of its task, if one runs.
    pub(super) fn deliver(&self, event: &TaskEvent) {
        if let Some(tx) = locked(&self.0).get(&event.task.id) {
            let _ = tx.send(event.clone());
        }
    }
}

/// A receive's share of the watch's events.
#[derive(Debug)]
pub(super) struct Subscription {
    pub(super) routes: TaskRoutes,
    pub(super) id: TaskId,
    pub(super) rx: mpsc::UnboundedReceiver<TaskEvent>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        locked(&self.routes.0).remove(&self.id);
    }
}
