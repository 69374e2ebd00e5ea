//! The hub's WebSocket at `/ws`: `connected` on open, `subscribed` after a subscribe, `pong`
//! for every ping, then one text frame per matching event.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::http::AppState;
use super::store::HubEvent;

/// Largest frame a client may send (subscribe and ping messages are tiny).
const MAX_WS_INCOMING: usize = 64 * 1024;

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

    fn matches(&self, ev: &HubEvent) -> bool {
        let ok =
            |l: &Option<Vec<String>>, x: &str| l.as_ref().is_none_or(|l| l.iter().any(|e| e == x));
        ok(&self.channels, &ev.channel)
            && ok(&self.task_types, &ev.task_type)
            && ok(&self.event_types, &ev.event_type)
    }
}

/// `GET /ws`: accepts the upgrade with any query (identity comes only from the query).
pub(crate) async fn upgrade(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let actor_id = query.get("actor_id").cloned().unwrap_or_default();
    let tracker = st.ws_tasks.clone();
    ws.max_message_size(MAX_WS_INCOMING)
        .on_upgrade(move |socket| tracker.track_future(session(socket, st, actor_id)))
}

async fn send_json(socket: &mut WebSocket, v: Value) -> bool {
    socket.send(Message::Text(v.to_string())).await.is_ok()
}

async fn session(mut socket: WebSocket, st: AppState, actor_id: String) {
    tracing::debug!(actor = %actor_id, "watch socket opened");
    // Subscribe to the broadcast before anything else, so no event slips between the client's
    // subscribe and our first delivery.
    let mut rx = st.events.subscribe();
    if !send_json(&mut socket, json!({ "type": "connected" })).await {
        return;
    }
    let mut filter: Option<Filter> = None;
    loop {
        tokio::select! {
            biased;
            _ = st.cancel.cancelled() => {
                let _ = socket.send(Message::Close(Some(CloseFrame {
                    code: CLOSE_GOING_AWAY,
                    reason: "hub shutting down".into(),
                }))).await;
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
                    if !send_json(&mut socket, json!({"type": "error", "error": "malformed JSON"})).await {
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
                if !send_json(&mut socket, reply).await {
                    break;
                }
            }
            ev = rx.recv() => {
                let ev: Arc<HubEvent> = match ev {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(n)) => {
                        tracing::info!(actor = %actor_id, missed = n, "watch subscriber lagging; closing");
                        let _ = socket.send(Message::Close(Some(CloseFrame {
                            code: CLOSE_LAGGING,
                            reason: "too slow; reconnect and catch up".into(),
                        }))).await;
                        break;
                    }
                    Err(RecvError::Closed) => break,
                };
                if filter.as_ref().is_some_and(|f| f.matches(&ev))
                    && socket.send(Message::Text(ev.frame().to_owned())).await.is_err()
                {
                    break;
                }
            }
        }
    }
    tracing::debug!(actor = %actor_id, "watch socket closed");
}
