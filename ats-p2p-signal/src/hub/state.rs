//! What every handler of the hub shares: the database, the event fan-out, shutdown and the
//! WebSocket session bookkeeping.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backend::Backend;
use super::fanout::Fanout;

/// Shared state of all handlers.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Backend,
    pub(crate) fanout: Fanout,
    pub(crate) cancel: CancellationToken,
    pub(crate) ws_tasks: TaskTracker,
    /// One permit per WebSocket session that may be open.
    pub(crate) ws_slots: Arc<Semaphore>,
}
