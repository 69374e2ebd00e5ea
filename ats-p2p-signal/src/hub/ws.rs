//! The hub's WebSocket at `/ws`: `connected` on open, `subscribed` after a subscribe, `pong`
//! for every ping, then one text frame per matching event.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::api_error::ApiError;
use super::fanout::{Frame, Subscription};
use super::state::AppState;

/// Largest frame a client may send (subscribe and ping messages are tiny).
const MAX_WS_INCOMING: usize = 64 * 1024;

/// Longest time one frame may take to write; a client that does not read for this long is
/// disconnected (it reconnects and catches up over HTTP).
pub const WS_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the close frame to a subscriber dropped for falling behind.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Close code when a subscriber fell behind: "try again later"; the client reconnects and
/// catches up over HTTP.
const CLOSE_LAGGING: u16 = 1013;

/// Close code on hub shutdown: "going away".
const CLOSE_GOING_AWAY: u16 = 1001;

/// Most entries in one subscription filter list.
const MAX_FILTER_ENTRIES: usize = 64;

/// Subscription filters: AND across lists, OR inside each; an absent list matches all.
#[derive(Debug, Default)]
struct Filter {
    channels: Option<Vec<String>>,
    task_types: Option<Vec<String>>,
    event_types: Option<Vec<String>>,
}

fn list(v: &Value, key: &str) -> Option<Vec<String>> {
    let arr = v.get(key)?.as_array()?;
    Some(
        arr.iter()
            .filter_map(Value::as_str)
            .take(MAX_FILTER_ENTRIES)
            .map(str::to_owned)
            .collect(),
    )
}

impl Filter {
    fn from_subscribe(v: &Value) -> Self {
        Self {
            channels: list(v, "channels"),
            task_types: list(v, "task_types"),
            event_types: list(v, "event_types"),
        }
    }

    fn matches(&self, ev: &Frame) -> bool {
        let ok =
            |l: &Option<Vec<String>>, x: &str| l.as_ref().is_none_or(|l| l.iter().any(|e| e == x));
        ok(&self.channels, &ev.channel)
            && ok(&self.task_types, &ev.task_type)
            && ok(&self.event_types, &ev.event_type)
    }
}

/// `GET /ws`: accepts the upgrade with any query (identity comes only from the query), while
/// fewer than the configured number of sessions are open (503 beyond).
pub(crate) async fn upgrade(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = st.ws_slots.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many WebSocket sessions are open; retry later",
        )
        .into_response();
    };
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let actor_id = query.get("actor_id").cloned().unwrap_or_default();
    let tracker = st.ws_tasks.clone();
    ws.max_message_size(MAX_WS_INCOMING)
        .on_upgrade(move |socket| tracker.track_future(session(socket, st, actor_id, permit)))
}

/// Why a write did not complete.
enum WriteFailed {
    /// The socket failed or the client did not read within [`WS_WRITE_TIMEOUT`].
    Socket,
    /// This subscriber was dropped for falling behind while the write waited.
    Dropped,
}

/// Writes one message, giving up after [`WS_WRITE_TIMEOUT`] or when the subscriber is dropped.
async fn send_timed(
    socket: &mut WebSocket,
    sub: &Subscription,
    msg: Message,
) -> Result<(), WriteFailed> {
    tokio::select! {
        biased;
        _ = sub.dropped().cancelled() => Err(WriteFailed::Dropped),
        sent = tokio::time::timeout(WS_WRITE_TIMEOUT, socket.send(msg)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(WriteFailed::Socket),
        },
    }
}

async fn send_json(socket: &mut WebSocket, sub: &Subscription, v: Value) -> bool {
    send_timed(socket, sub, Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

/// Tells a subscriber dropped for falling behind to reconnect (best effort, briefly).
async fn close_lagging(socket: &mut WebSocket, actor_id: &str) {
    tracing::info!(actor = %actor_id, "watch subscriber fell behind; closing");
    let close = socket.send(Message::Close(Some(CloseFrame {
        code: CLOSE_LAGGING,
        reason: "too slow; reconnect and catch up".into(),
    })));
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, close).await;
}

async fn session(
    mut socket: WebSocket,
    st: AppState,
    actor_id: String,
    _slot: OwnedSemaphorePermit,
) {
    tracing::debug!(actor = %actor_id, "watch socket opened");
    // Subscribe before anything else, so no event slips between the client's subscribe and our
    // first delivery.
    let mut sub = st.fanout.subscribe();
    if !send_json(&mut socket, &sub, json!({ "type": "connected" })).await {
        return;
    }
    let mut filter: Option<Filter> = None;
    loop {
        tokio::select! {
            biased;
            _ = st.cancel.cancelled() => {
                let close = socket.send(Message::Close(Some(CloseFrame {
                    code: CLOSE_GOING_AWAY,
                    reason: "hub shutting down".into(),
                })));
                let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, close).await;
                break;
            }
            msg = socket.recv() => {
                let text = match msg {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(t))) => t,
                    // Protocol pings are answered by the WebSocket layer itself.
                    Some(Ok(_)) => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    if !send_json(&mut socket, &sub, json!({"type": "error", "error": "malformed JSON"})).await {
                        break;
                    }
                    continue;
                };
                let reply = match v.get("type").and_then(Value::as_str) {
                    Some("subscribe") => {
                        filter = Some(Filter::from_subscribe(&v));
                        json!({ "type": "subscribed", "id": v.get("id").cloned().unwrap_or(Value::Null) })
                    }
                    Some("unsubscribe") => {
                        filter = None;
                        json!({ "type": "unsubscribed", "id": v.get("id").cloned().unwrap_or(Value::Null) })
                    }
                    Some("ping") => json!({ "type": "pong" }),
                    _ => json!({ "type": "error", "error": "unknown message type" }),
                };
                if !send_json(&mut socket, &sub, reply).await {
                    break;
                }
            }
            frame = sub.recv() => {
                let Some(frame) = frame else {
                    if sub.dropped().is_cancelled() {
                        close_lagging(&mut socket, &actor_id).await;
                    }
                    break;
                };
                if sub.dropped().is_cancelled() {
                    // Dropped between two writes: the socket can still take a close frame.
                    close_lagging(&mut socket, &actor_id).await;
                    break;
                }
                let wanted = filter.as_ref().is_some_and(|f| f.matches(&frame));
                let written = if wanted {
                    send_timed(&mut socket, &sub, Message::Text(frame.text.clone())).await
                } else {
                    Ok(())
                };
                sub.finished(&frame);
                match written {
                    Ok(()) => {}
                    // A write cut short leaves a partial frame: no close frame can follow.
                    Err(WriteFailed::Dropped) => {
                        tracing::info!(actor = %actor_id, "watch subscriber fell behind while writing; dropping");
                        break;
                    }
                    Err(WriteFailed::Socket) => break,
                }
            }
        }
    }
    tracing::debug!(actor = %actor_id, "watch socket closed");
}
