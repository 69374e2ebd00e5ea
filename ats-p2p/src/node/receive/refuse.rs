//! Rejecting an offer on ATS with a reason, and saying so to the watcher.

use super::Incoming;
use crate::events::{Direction, Event, FailureKind};
use crate::node::Shared;
use ats_p2p_signal::Task;
use tokio::sync::mpsc;
use tracing::debug;

/// Rejects `task` with `reason` and reports it.
pub(super) async fn refuse_task(
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
