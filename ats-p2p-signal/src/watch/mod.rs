//! Watching ATS: a WebSocket subscription that survives reconnects, exposed as a
//! [`futures::Stream`] of [`TaskEvent`]s.
//!
//! The watch is an actor task owned by the [`Watch`] handle (dropping the handle stops it). On
//! every (re)connect it subscribes, waits for the server's `subscribed` (briefly), then catches up
//! with `GET /tasks?updated_after=…` over all statuses, so a change made while no socket was open
//! is still seen. Each task state and each event id is delivered at most once. When the WebSocket
//! cannot be opened, the actor polls the list instead and keeps retrying the socket with backoff.

mod actor;
mod dedupe;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::actor::WatchActor;
use crate::client::Client;
use crate::types::{Actor, EventKind, Message, Task};

/// Ping period; the `ats` CLI pings every 30 s, and servers keep sockets open for 60 s idle.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// A socket silent this long (no pong, no event) is considered dead and reopened.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Time to open the WebSocket before falling back to polling.
pub const WS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for `subscribed` before catching up anyway (servers may not send it).
pub const SUBSCRIBE_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// First reconnect delay; doubled after each failure (plus jitter: `client::backoff`).
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(200);

/// Longest reconnect delay before jitter (the public ATS tools back off up to 60 s; with jitter
/// we wait at most as long, usually less).
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);

/// A session that lived this long resets the reconnect backoff.
pub(crate) const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Default polling period while the WebSocket is unavailable.
pub use crate::defaults::POLL_INTERVAL as DEFAULT_POLL_INTERVAL;

/// Catch-up lists start this long before the newest change seen (clock granularity and skew).
pub const CATCH_UP_OVERLAP: Duration = Duration::from_secs(2);

/// Page size of catch-up lists to begin with. A page whose answer exceeds
/// [`crate::client::MAX_RESPONSE_BYTES`] (tasks with big payloads) is asked again with half the
/// size, and the smaller size is kept for the rest of the watch.
pub(crate) const CATCH_UP_PAGE: u32 = 200;

/// Most tasks one catch-up reads per filter combination.
pub(crate) const CATCH_UP_MAX_TASKS: u32 = 10_000;

/// Depth of the channel between the actor and the stream: a slow consumer backpressures the
/// socket instead of growing memory.
pub const EVENT_QUEUE_DEPTH: usize = 256;

/// Frames buffered while waiting for `subscribed`.
pub(crate) const PRE_ACK_BUFFER: usize = 1024;

/// Largest WebSocket message accepted (an event carries one task).
pub(crate) const MAX_WS_MESSAGE: usize = 4 * 1024 * 1024;

/// What to watch. Empty lists mean "no filter".
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Channels (OR).
    pub channels: Vec<String>,
    /// Task types (OR).
    pub task_types: Vec<String>,
    /// Event names, e.g. `task.created` (OR).
    pub event_types: Vec<String>,
    /// Report changes since this time (the first catch-up lists everything updated after it,
    /// minus [`CATCH_UP_OVERLAP`]). `None`: the server's clock at start (from `/health`), so
    /// only changes from about then on; set it earlier to also see older pending offers.
    pub since: Option<DateTime<Utc>>,
    /// Polling period while the WebSocket is unavailable.
    pub poll_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            channels: Vec::new(),
            task_types: Vec::new(),
            event_types: Vec::new(),
            since: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOrigin {
    /// A WebSocket event frame.
    Live,
    /// Found by a catch-up list after a (re)connect or while polling; the kind is inferred from
    /// the task's status.
    CatchUp,
}

/// One change to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// What happened.
    pub kind: EventKind,
    /// The task after the change.
    pub task: Task,
    /// The message, for [`EventKind::Message`] (live only; after a catch-up, list messages).
    pub message: Option<Message>,
    /// Who did it, when the server says.
    pub actor: Option<Actor>,
    /// The server's event id, when it sends one.
    pub event_id: Option<i64>,
    /// Live or catch-up.
    pub origin: EventOrigin,
}

/// A running watch: a [`Stream`] of [`TaskEvent`]s. Dropping it stops the actor.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<TaskEvent>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Watch {
    /// Starts watching (must be called inside a tokio runtime).
    pub fn start(client: Client, config: WatchConfig) -> Self {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE_DEPTH);
        let cancel = CancellationToken::new();
        let actor = WatchActor::new(client, config, tx, cancel.clone());
        let task = tokio::spawn(actor.run());
        Self { rx, cancel, task }
    }

    /// Stops the actor; the stream ends after the events already queued.
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Stream for Watch {
    type Item = TaskEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TaskEvent>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

impl Client {
    /// Starts a [`Watch`] with this client's identity.
    pub fn watch(&self, config: WatchConfig) -> Watch {
        Watch::start(self.clone(), config)
    }
}
