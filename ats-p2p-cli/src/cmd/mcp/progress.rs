//! MCP progress notifications for a running tool call: the node reports `progress` events
//! (bytes / total) synchronously; they are forwarded, in order and only when they advance, by a
//! task of their own, and the call's result is sent only after the last of them.

use rmcp::model::{ProgressNotificationParam, ProgressToken, RequestMetaObject};
use rmcp::{Peer, RoleServer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::output::human_size;

/// One progress step: bytes of total, and what is being done.
#[derive(Debug)]
struct Step {
    bytes: u64,
    total: u64,
    what: String,
}

/// Sends a call's progress notifications, if the client asked for them (a progress token in
/// the request's `_meta`).
#[derive(Debug)]
pub(crate) struct ProgressReporter {
    handle: ProgressHandle,
    task: Option<JoinHandle<()>>,
}

/// Reports steps to a [`ProgressReporter`]; cheap to clone (the watch that sees an accepted
/// offer's events holds one).
#[derive(Debug, Clone)]
pub(crate) struct ProgressHandle {
    tx: Option<mpsc::UnboundedSender<Step>>,
}

impl ProgressReporter {
    /// A reporter for the call with `meta`; one that reports nothing when the client sent no
    /// progress token.
    pub(crate) fn start(meta: &RequestMetaObject, peer: Peer<RoleServer>) -> Self {
        let Some(token) = meta.get_progress_token() else {
            return Self {
                handle: ProgressHandle { tx: None },
                task: None,
            };
        };
        // Unbounded, but the node throttles its progress events (a few per second), so this
        // holds at most the few reported while stdout is slow.
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            handle: ProgressHandle { tx: Some(tx) },
            task: Some(tokio::spawn(forward(rx, token, peer))),
        }
    }

    /// A handle to report steps with.
    pub(crate) fn handle(&self) -> ProgressHandle {
        self.handle.clone()
    }

    /// Waits until every step reported so far was written, so none arrives after the call's
    /// result (a client drops those). Clones of the handle must be dropped first.
    pub(crate) async fn finish(self) {
        drop(self.handle);
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

impl ProgressHandle {
    /// `bytes` of `total` done; `what` says what (`sending a.bin`).
    pub(crate) fn report(&self, what: &str, bytes: u64, total: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Step {
                bytes,
                total,
                what: what.to_owned(),
            });
        }
    }
}

/// Writes the steps as notifications, skipping any that does not advance (MCP progress must
/// increase).
async fn forward(
    mut rx: mpsc::UnboundedReceiver<Step>,
    token: ProgressToken,
    peer: Peer<RoleServer>,
) {
    let mut last = None;
    while let Some(step) = rx.recv().await {
        if last.is_some_and(|l| step.bytes <= l) {
            continue;
        }
        last = Some(step.bytes);
        // f64 is exact up to 2^53 bytes, more than any file.
        let param = ProgressNotificationParam::new(token.clone(), step.bytes as f64)
            .with_total(step.total as f64)
            .with_message(format!(
                "{}: {} of {}",
                step.what,
                human_size(step.bytes),
                human_size(step.total)
            ));
        if let Err(e) = peer.notify_progress(param).await {
            tracing::debug!(error = %e, "cannot send a progress notification");
            break;
        }
    }
}
