//! Watching ATS: a WebSocket subscription that survives reconnects, exposed as a
//! [`futures::Stream`] of [`TaskEvent`]s.
//!
//! The watch is an actor task owned by the [`Watch`] handle (dropping the handle stops it). On
//! every (re)connect it subscribes, waits for the server's `subscribed` (briefly), then catches up
//! with `GET /tasks?updated_after=…` over all statuses, so a change made while no socket was open
//! is still seen. Each task state and each event id is delivered at most once. When the WebSocket
//! cannot be opened, the actor polls the list instead and keeps retrying the socket with backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, backoff_delay};
use crate::error::SignalError;
use crate::types::{
    Actor, EventFrame, EventKind, ListQuery, Message, SortBy, SortDir, Task, TaskId, TaskStatus,
};

/// Ping period; the `ats` CLI pings every 30 s, and servers keep sockets open for 60 s idle.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// A socket silent this long (no pong, no event) is considered dead and reopened.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Time to open the WebSocket before falling back to polling.
pub const WS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for `subscribed` before catching up anyway (servers may not send it).
pub const SUBSCRIBE_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// First reconnect delay; doubled after each failure.
pub const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(200);

/// Longest reconnect delay (the public ATS tools back off up to 60 s; we stay more eager).
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(30);

/// A session that lived this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);

/// Default polling period while the WebSocket is unavailable.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Catch-up lists start this long before the newest change seen (clock granularity and skew).
pub const CATCH_UP_OVERLAP: Duration = Duration::from_secs(2);

/// Page size of catch-up lists.
const CATCH_UP_PAGE: u32 = 200;

/// Most pages one catch-up reads (so at most 10,000 tasks per filter combination).
const CATCH_UP_MAX_PAGES: u32 = 50;

/// Depth of the channel between the actor and the stream: a slow consumer backpressures the
/// socket instead of growing memory.
pub const EVENT_QUEUE_DEPTH: usize = 256;

/// Task states remembered for deduplication.
const DEDUPE_TASKS: usize = 16_384;

/// Event ids remembered for deduplication.
const DEDUPE_EVENTS: usize = 16_384;

/// Frames buffered while waiting for `subscribed`.
const PRE_ACK_BUFFER: usize = 1024;

/// Largest WebSocket message accepted (an event carries one task).
const MAX_WS_MESSAGE: usize = 4 * 1024 * 1024;

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
        let actor = WatchActor {
            client,
            config,
            tx,
            cancel: cancel.clone(),
            dedupe: Dedupe::default(),
            floor: None,
        };
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

/// Bounded memory of what was delivered.
#[derive(Debug, Default)]
struct Dedupe {
    states: HashMap<TaskId, (DateTime<Utc>, TaskStatus)>,
    state_order: VecDeque<TaskId>,
    events: HashSet<i64>,
    event_order: VecDeque<i64>,
}

impl Dedupe {
    /// True if this task state is new (and remembers it).
    fn fresh_state(&mut self, task: &Task) -> bool {
        let key = (task.updated_at, task.status);
        match self.states.get_mut(&task.id) {
            Some(last) => {
                if *last == key || task.updated_at < last.0 {
                    return false;
                }
                *last = key;
                true
            }
            None => {
                if self.state_order.len() >= DEDUPE_TASKS {
                    if let Some(old) = self.state_order.pop_front() {
                        self.states.remove(&old);
                    }
                }
                self.states.insert(task.id, key);
                self.state_order.push_back(task.id);
                true
            }
        }
    }

    /// True if this event id is new (and remembers it).
    fn fresh_event(&mut self, id: i64) -> bool {
        if !self.events.insert(id) {
            return false;
        }
        if self.event_order.len() >= DEDUPE_EVENTS {
            if let Some(old) = self.event_order.pop_front() {
                self.events.remove(&old);
            }
        }
        self.event_order.push_back(id);
        true
    }
}

/// The actor stopped because its consumer went away or it was cancelled.
#[derive(Debug)]
struct Stopped;

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    Stopped,
    Broken(SignalError),
}

impl From<Stopped> for SessionEnd {
    fn from(_: Stopped) -> Self {
        Self::Stopped
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Debug)]
struct WatchActor {
    client: Client,
    config: WatchConfig,
    tx: mpsc::Sender<TaskEvent>,
    cancel: CancellationToken,
    dedupe: Dedupe,
    /// Catch-up lower bound: newest `updated_at` seen (server clock).
    floor: Option<DateTime<Utc>>,
}

impl WatchActor {
    async fn run(mut self) {
        let cancel = self.cancel.clone();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = self.run_inner() => {}
        }
        tracing::debug!("watch stopped");
    }

    async fn run_inner(&mut self) {
        if self.floor.is_none() {
            self.floor = Some(match self.config.since {
                Some(t) => t,
                None => match self.client.health().await {
                    Ok(h) => h.timestamp.unwrap_or_else(Utc::now),
                    Err(_) => Utc::now(),
                },
            });
        }
        let mut failures = 0u32;
        loop {
            match self.connect().await {
                Ok(ws) => {
                    let started = Instant::now();
                    match self.session(ws).await {
                        SessionEnd::Stopped => return,
                        SessionEnd::Broken(e) => {
                            tracing::info!(error = %e, "watch socket lost; reconnecting");
                        }
                    }
                    if started.elapsed() >= STABLE_SESSION {
                        failures = 0;
                    }
                    let delay = backoff_delay(failures, RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY);
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::info!(error = %e, "watch socket unavailable; polling");
                    let delay = backoff_delay(failures, RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY);
                    failures = failures.saturating_add(1);
                    if self.poll_until(Instant::now() + delay).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Polls the list until `deadline` (at least once).
    async fn poll_until(&mut self, deadline: Instant) -> Result<(), Stopped> {
        loop {
            if let Err(e) = self.catch_up().await {
                match e {
                    SessionEnd::Stopped => return Err(Stopped),
                    SessionEnd::Broken(e) => tracing::debug!(error = %e, "poll failed"),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let wait = (deadline - now).min(self.config.poll_interval);
            tokio::time::sleep(wait).await;
        }
    }

    async fn connect(&self) -> Result<WsStream, SignalError> {
        let url = self.client.ws_url();
        let ws_config = WebSocketConfig {
            max_message_size: Some(MAX_WS_MESSAGE),
            max_frame_size: Some(MAX_WS_MESSAGE),
            ..WebSocketConfig::default()
        };
        let fut =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), false);
        match tokio::time::timeout(WS_CONNECT_TIMEOUT, fut).await {
            Ok(Ok((ws, _resp))) => Ok(ws),
            Ok(Err(e)) => Err(SignalError::WebSocket {
                url: url.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => Err(SignalError::WebSocket {
                url: url.to_string(),
                reason: "connect timed out".to_owned(),
            }),
        }
    }

    fn subscribe_message(&self) -> String {
        let mut m = json!({ "type": "subscribe", "id": "ats-p2p-sub-1" });
        let lists = [
            ("channels", &self.config.channels),
            ("task_types", &self.config.task_types),
            ("event_types", &self.config.event_types),
        ];
        for (key, list) in lists {
            if !list.is_empty() {
                m[key] = json!(list);
            }
        }
        m.to_string()
    }

    async fn session(&mut self, ws: WsStream) -> SessionEnd {
        let url = self.client.ws_url().to_string();
        let broken = |reason: String| {
            SessionEnd::Broken(SignalError::WebSocket {
                url: url.clone(),
                reason,
            })
        };
        let (mut sink, mut stream) = ws.split();
        if let Err(e) = sink.send(WsMessage::Text(self.subscribe_message())).await {
            return broken(e.to_string());
        }
        // Wait for `subscribed` so that the catch-up below sees everything the socket misses.
        let mut early = Vec::new();
        let ack_deadline = Instant::now() + SUBSCRIBE_ACK_TIMEOUT;
        loop {
            match tokio::time::timeout_at(ack_deadline, stream.next()).await {
                Err(_) => break,
                Ok(None) => return broken("closed before subscribed".to_owned()),
                Ok(Some(Err(e))) => return broken(e.to_string()),
                Ok(Some(Ok(WsMessage::Text(t)))) => {
                    if frame_type(&t).as_deref() == Some("subscribed") {
                        break;
                    }
                    if early.len() < PRE_ACK_BUFFER {
                        early.push(t);
                    }
                }
                Ok(Some(Ok(WsMessage::Close(_)))) => {
                    return broken("closed before subscribed".to_owned());
                }
                Ok(Some(Ok(_))) => {}
            }
        }
        if let Err(e) = self.catch_up().await {
            return e;
        }
        for t in early {
            if let Err(e) = self.handle_text(&t).await {
                return e.into();
            }
        }
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let mut last_rx = Instant::now();
        loop {
            let idle_deadline = last_rx + IDLE_TIMEOUT;
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    let _ = sink.send(WsMessage::Close(None)).await;
                    return SessionEnd::Stopped;
                }
                _ = ping.tick() => {
                    let ping = json!({"type": "ping"}).to_string();
                    if let Err(e) = sink.send(WsMessage::Text(ping)).await {
                        return broken(e.to_string());
                    }
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    return broken("no traffic; socket presumed dead".to_owned());
                }
                msg = stream.next() => {
                    last_rx = Instant::now();
                    match msg {
                        None => return broken("closed by server".to_owned()),
                        Some(Err(e)) => return broken(e.to_string()),
                        Some(Ok(WsMessage::Text(t))) => {
                            if let Err(e) = self.handle_text(&t).await {
                                return e.into();
                            }
                        }
                        Some(Ok(WsMessage::Close(frame))) => {
                            return broken(format!("closed by server: {frame:?}"));
                        }
                        Some(Ok(_)) => {}
                    }
                }
            }
        }
    }

    fn wants(&self, kind: &EventKind, task: &Task) -> bool {
        let c = &self.config;
        (c.channels.is_empty() || c.channels.contains(&task.channel))
            && (c.task_types.is_empty() || c.task_types.contains(&task.task_type))
            && (c.event_types.is_empty() || c.event_types.iter().any(|e| e == kind.as_str()))
    }

    fn raise_floor(&mut self, t: DateTime<Utc>) {
        if self.floor.is_none_or(|f| t > f) {
            self.floor = Some(t);
        }
    }

    async fn handle_text(&mut self, text: &str) -> Result<(), Stopped> {
        match frame_type(text).as_deref() {
            Some("connected" | "subscribed" | "pong") | None => return Ok(()),
            _ => {}
        }
        let frame: EventFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring undecodable watch frame");
                return Ok(());
            }
        };
        let kind = EventKind::parse(&frame.event_type);
        let (task, message) = match frame.data {
            Some(d) => (d.task.or(frame.task), d.message),
            None => (frame.task, None),
        };
        let Some(task) = task else {
            tracing::debug!(event = %kind, "ignoring watch frame without a task");
            return Ok(());
        };
        self.raise_floor(task.updated_at);
        if !self.wants(&kind, &task) {
            return Ok(());
        }
        if let Some(id) = frame.id {
            if !self.dedupe.fresh_event(id) {
                return Ok(());
            }
        }
        // Messages do not change the task state; everything else is deduplicated against what
        // a catch-up may already have delivered.
        if kind != EventKind::Message && !self.dedupe.fresh_state(&task) {
            return Ok(());
        }
        let actor = match (frame.actor_type, frame.actor_id, frame.actor_name) {
            (None, None, None) => None,
            (t, i, n) => Some(Actor {
                actor_type: t.unwrap_or_default(),
                id: i.unwrap_or_default(),
                name: n.unwrap_or_default(),
            }),
        };
        self.deliver(TaskEvent {
            kind,
            task,
            message,
            actor,
            event_id: frame.id,
            origin: EventOrigin::Live,
        })
        .await
    }

    async fn deliver(&self, ev: TaskEvent) -> Result<(), Stopped> {
        self.tx.send(ev).await.map_err(|_| Stopped)
    }

    /// Lists everything changed since the floor (all statuses) and delivers what is new.
    async fn catch_up(&mut self) -> Result<(), SessionEnd> {
        let floor = self.floor.unwrap_or_else(Utc::now);
        let overlap = chrono::Duration::from_std(CATCH_UP_OVERLAP).unwrap_or_default();
        let since = floor - overlap;
        let channels: Vec<Option<String>> = if self.config.channels.is_empty() {
            vec![None]
        } else {
            self.config.channels.iter().cloned().map(Some).collect()
        };
        let types: Vec<Option<String>> = if self.config.task_types.is_empty() {
            vec![None]
        } else {
            self.config.task_types.iter().cloned().map(Some).collect()
        };
        for channel in &channels {
            for task_type in &types {
                let mut offset = 0u32;
                for _ in 0..CATCH_UP_MAX_PAGES {
                    let query = ListQuery {
                        channel: channel.clone(),
                        task_type: task_type.clone(),
                        updated_after: Some(since),
                        sort_by: Some(SortBy::UpdatedAt),
                        sort_dir: Some(SortDir::Asc),
                        limit: Some(CATCH_UP_PAGE),
                        offset: Some(offset),
                        ..ListQuery::default()
                    };
                    let page = self
                        .client
                        .list_tasks(&query)
                        .await
                        .map_err(SessionEnd::Broken)?;
                    let n = page.tasks.len();
                    for task in page.tasks {
                        self.raise_floor(task.updated_at);
                        let kind = EventKind::for_status(task.status, &task);
                        if !self.wants(&kind, &task) || !self.dedupe.fresh_state(&task) {
                            continue;
                        }
                        self.deliver(TaskEvent {
                            kind,
                            task,
                            message: None,
                            actor: None,
                            event_id: None,
                            origin: EventOrigin::CatchUp,
                        })
                        .await?;
                    }
                    if n < CATCH_UP_PAGE as usize {
                        break;
                    }
                    offset = offset.saturating_add(CATCH_UP_PAGE);
                }
            }
        }
        Ok(())
    }
}

/// The `type` of a JSON frame, if it is an object with a string `type`.
fn frame_type(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text).ok()?;
    v.get("type")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: TaskId, secs: i64, status: TaskStatus) -> Task {
        let t = DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap();
        serde_json::from_value(json!({
            "id": id, "status": status.as_str(),
            "created_at": crate::types::format_timestamp(&t),
            "updated_at": crate::types::format_timestamp(&t),
        }))
        .unwrap()
    }

    #[test]
    fn dedupe_states_and_events() {
        let mut d = Dedupe::default();
        assert!(d.fresh_state(&task(1, 0, TaskStatus::Pending)));
        assert!(
            !d.fresh_state(&task(1, 0, TaskStatus::Pending)),
            "same state twice"
        );
        assert!(
            d.fresh_state(&task(1, 0, TaskStatus::InProgress)),
            "same instant, new status"
        );
        assert!(d.fresh_state(&task(1, 5, TaskStatus::Completed)));
        assert!(
            !d.fresh_state(&task(1, 3, TaskStatus::InProgress)),
            "older than delivered"
        );
        assert!(d.fresh_state(&task(2, 0, TaskStatus::Pending)));
        assert!(d.fresh_event(10));
        assert!(!d.fresh_event(10));
        for id in 0..i64::try_from(DEDUPE_EVENTS).unwrap() + 10 {
            d.fresh_event(1000 + id);
        }
        assert!(d.events.len() <= DEDUPE_EVENTS);
        assert!(d.fresh_event(10), "forgotten after eviction");
        for id in 0..i64::try_from(DEDUPE_TASKS).unwrap() + 5 {
            d.fresh_state(&task(100 + id, 0, TaskStatus::Pending));
        }
        assert!(d.states.len() <= DEDUPE_TASKS && d.state_order.len() <= DEDUPE_TASKS);
    }

    #[test]
    fn subscribe_message_has_only_given_filters() {
        let client = Client::new(crate::ClientConfig::new(
            "http://127.0.0.1:1",
            Actor::agent("a"),
        ))
        .unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let mut actor = WatchActor {
            client,
            config: WatchConfig::default(),
            tx,
            cancel: CancellationToken::new(),
            dedupe: Dedupe::default(),
            floor: None,
        };
        let v: Value = serde_json::from_str(&actor.subscribe_message()).unwrap();
        assert_eq!(v, json!({"type": "subscribe", "id": "ats-p2p-sub-1"}));
        actor.config.channels = vec!["p2p-transfer".into()];
        actor.config.event_types = vec!["task.created".into(), "task.claimed".into()];
        let v: Value = serde_json::from_str(&actor.subscribe_message()).unwrap();
        assert_eq!(v["channels"], json!(["p2p-transfer"]));
        assert!(v.get("task_types").is_none());
        assert_eq!(v["event_types"].as_array().unwrap().len(), 2);
    }
}
