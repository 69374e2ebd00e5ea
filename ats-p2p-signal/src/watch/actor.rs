//! The watch's actor: one WebSocket session after another, each subscribed and caught up over
//! HTTP, with polling while no socket can be opened.

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::dedupe::Dedupe;
use super::{
    CATCH_UP_MAX_TASKS, CATCH_UP_OVERLAP, CATCH_UP_PAGE, EventOrigin, IDLE_TIMEOUT, MAX_WS_MESSAGE,
    PING_INTERVAL, PRE_ACK_BUFFER, RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, STABLE_SESSION,
    SUBSCRIBE_ACK_TIMEOUT, TaskEvent, WS_CONNECT_TIMEOUT, WatchConfig,
};
use crate::client::{Client, backoff};
use crate::error::SignalError;
use crate::types::{Actor, EventFrame, EventKind, ListQuery, SortBy, SortDir, Task};

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
pub(super) struct WatchActor {
    client: Client,
    config: WatchConfig,
    tx: mpsc::Sender<TaskEvent>,
    cancel: CancellationToken,
    dedupe: Dedupe,
    /// Catch-up lower bound: newest `updated_at` seen (server clock).
    floor: Option<DateTime<Utc>>,
    /// Catch-up page size: [`CATCH_UP_PAGE`], halved whenever a page is too large to read.
    page_limit: u32,
}

impl WatchActor {
    pub(super) fn new(
        client: Client,
        config: WatchConfig,
        tx: mpsc::Sender<TaskEvent>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            client,
            config,
            tx,
            cancel,
            dedupe: Dedupe::default(),
            floor: None,
            page_limit: CATCH_UP_PAGE,
        }
    }

    pub(super) async fn run(mut self) {
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
        let mut delays = backoff(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY);
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
                        delays = backoff(RECONNECT_MIN_DELAY, RECONNECT_MAX_DELAY);
                    }
                    let delay = delays.next().unwrap_or(RECONNECT_MAX_DELAY);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::info!(error = %e, "watch socket unavailable; polling");
                    let delay = delays.next().unwrap_or(RECONNECT_MAX_DELAY);
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
        let failed = |reason: String| SignalError::WebSocket {
            url: url.to_string(),
            reason,
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(auth) = self.client.authorization() {
            request.headers_mut().insert(AUTHORIZATION, auth);
        }
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_WS_MESSAGE))
            .max_frame_size(Some(MAX_WS_MESSAGE));
        // TCP_NODELAY (`disable_nagle`): our frames (subscribe, pongs) are small and must not
        // wait for the hub's delayed ACK; the HTTP client (reqwest) sets it already.
        let fut = tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true);
        match tokio::time::timeout(WS_CONNECT_TIMEOUT, fut).await {
            Ok(Ok((ws, _resp))) => Ok(ws),
            Ok(Err(e)) => Err(failed(e.to_string())),
            Err(_) => Err(failed("connect timed out".to_owned())),
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
        if let Err(e) = sink
            .send(WsMessage::Text(self.subscribe_message().into()))
            .await
        {
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
                    if let Err(e) = sink.send(WsMessage::Text(ping.into())).await {
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
        if let Some(id) = frame.id
            && !self.dedupe.fresh_event(id)
        {
            return Ok(());
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
                while offset < CATCH_UP_MAX_TASKS {
                    let limit = self.page_limit;
                    let query = ListQuery {
                        channel: channel.clone(),
                        task_type: task_type.clone(),
                        updated_after: Some(since),
                        sort_by: Some(SortBy::UpdatedAt),
                        sort_dir: Some(SortDir::Asc),
                        limit: Some(limit),
                        offset: Some(offset),
                        ..ListQuery::default()
                    };
                    let page = match self.client.list_tasks(&query).await {
                        Ok(page) => page,
                        Err(SignalError::ResponseTooLarge { .. }) if limit > 1 => {
                            self.page_limit = limit / 2;
                            tracing::debug!(
                                page = self.page_limit,
                                "catch-up page too large to read; asking for smaller pages"
                            );
                            continue;
                        }
                        Err(SignalError::ResponseTooLarge { limit: bytes }) => {
                            // One task alone is larger than any answer we read: skip it rather
                            // than ask for it forever.
                            tracing::warn!(
                                offset,
                                bytes,
                                "a changed task is too large to read; catch-up skips it"
                            );
                            offset = offset.saturating_add(1);
                            continue;
                        }
                        Err(e) => return Err(SessionEnd::Broken(e)),
                    };
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
                    if n < limit as usize {
                        break;
                    }
                    offset = offset.saturating_add(limit);
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
            page_limit: CATCH_UP_PAGE,
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
