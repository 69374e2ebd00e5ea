//! A task's messages: posting one (with its size limits) and listing them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::sql::{Sql, SqlRow, query_int, vals};
use super::*;

fn row_to_message(row: &SqlRow) -> Result<Message, StoreError> {
    let parts = row.text(5)?;
    Ok(Message {
        id: row.int(0)?,
        task_id: Some(row.int(1)?),
        actor_type: row.opt_text(2)?,
        actor_id: row.opt_text(3)?,
        actor_name: row.opt_text(4)?,
        parts: serde_json::from_str(&parts).unwrap_or_default(),
        created_at: ts_col(row, 6)?,
    })
}

/// Up to `limit` messages of a task, oldest first, after skipping the `offset` oldest.
pub(super) fn messages_of(
    conn: &dyn Sql,
    task_id: TaskId,
    limit: i64,
    offset: i64,
) -> Result<Vec<Message>, StoreError> {
    conn.query(
        "SELECT id, task_id, actor_type, actor_id, actor_name, parts, created_at
         FROM messages WHERE task_id = ?1 ORDER BY id LIMIT ?2 OFFSET ?3",
        vals![task_id, limit, offset],
    )?
    .iter()
    .map(row_to_message)
    .collect()
}

pub(super) fn message_count(conn: &dyn Sql, task_id: TaskId) -> Result<i64, StoreError> {
    query_int(
        conn,
        "SELECT COUNT(*) FROM messages WHERE task_id = ?1",
        vals![task_id],
    )
}

/// `GET /tasks/{id}/messages`, oldest first: `limit` (default and most
/// [`MAX_MESSAGES_PER_TASK`], so all of them) after skipping `offset`; and the total.
pub fn list_messages(
    conn: &dyn Sql,
    scope: &Scope,
    id: TaskId,
    params: &HashMap<String, String>,
) -> Result<(Vec<Message>, u64), StoreError> {
    task_in(conn, scope, id)?;
    let limit = parse_int(params, "limit")?
        .unwrap_or(MAX_MESSAGES_PER_TASK)
        .clamp(0, MAX_MESSAGES_PER_TASK);
    let offset = parse_int(params, "offset")?.unwrap_or(0).max(0);
    let count = message_count(conn, id)?;
    Ok((
        messages_of(conn, id, limit, offset)?,
        u64::try_from(count).unwrap_or(0),
    ))
}

/// `POST /tasks/{id}/messages`: `{"parts": [{"type", "content" | "url" | "data"}]}`.
pub fn post_message(
    conn: &dyn Sql,
    scope: &Scope,
    id: TaskId,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(Message, Vec<HubEvent>), StoreError> {
    let task = task_in_for_update(conn, scope, id)?;
    let parts = match body.get("parts") {
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_PARTS => a,
        _ => {
            return Err(bad(format!(
                "`parts` must be an array of 1 to {MAX_PARTS} parts"
            )));
        }
    };
    let parts: Vec<Part> = parts
        .iter()
        .map(|p| {
            if !p.is_object() {
                return Err(bad("each part must be an object"));
            }
            serde_json::from_value::<Part>(p.clone()).map_err(|e| bad(format!("invalid part: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let ts = format_timestamp(&now);
    let parts_json = serde_json::to_string(&parts).map_err(|e| bad(e.to_string()))?;
    if parts_json.len() > MAX_MESSAGE_BYTES {
        return Err(StoreError::TooLarge(format!(
            "a message may hold at most {MAX_MESSAGE_BYTES} bytes of parts, this one {}",
            parts_json.len()
        )));
    }
    if message_count(conn, id)? >= MAX_MESSAGES_PER_TASK {
        return Err(StoreError::Conflict(format!(
            "task {id} already has {MAX_MESSAGES_PER_TASK} messages, the most a task may hold"
        )));
    }
    let message_id = conn.insert(
        "INSERT INTO messages (task_id, actor_type, actor_id, actor_name, parts, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        vals![
            id,
            &actor.actor_type,
            &actor.id,
            &actor.name,
            parts_json,
            ts.as_str()
        ],
    )?;
    let msg = Message {
        id: message_id,
        task_id: Some(id),
        actor_type: actor.actor_type.clone(),
        actor_id: actor.id.clone(),
        actor_name: actor.name.clone(),
        parts,
        created_at: parse_timestamp(&ts).unwrap_or(now),
    };
    let ev = event(conn, "task.message", &task, actor, Some(msg.clone()), now)?;
    Ok((msg, vec![ev]))
}
