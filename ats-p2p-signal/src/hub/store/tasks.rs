//! Tasks, messages, leases and stats.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::sql::{Dialect, Sql, SqlRow, Val, query_int, query_opt, vals};
use super::*;

/// `POST /tasks`.
pub fn create_task(
    conn: &dyn Sql,
    scope: &Scope,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    let pid = project_id(conn, scope)?;
    let title = opt_string(body, "title")?.ok_or_else(|| bad("`title` is required"))?;
    let title = non_empty("title", title)?;
    let task_type = non_empty(
        "type",
        opt_string(body, "type")?.unwrap_or_else(|| "task".into()),
    )?;
    let channel = non_empty(
        "channel",
        opt_string(body, "channel")?.unwrap_or_else(|| "default".into()),
    )?;
    let priority = opt_priority(body)?.unwrap_or(DEFAULT_PRIORITY);
    let description = opt_string(body, "description")?;
    let payload = match body.get("payload") {
        None | Some(Value::Null) => json!({}),
        Some(v) => v.clone(),
    };
    let ts = format_timestamp(&now);
    let id = conn.insert(
        "INSERT INTO tasks (project_id, title, description, status, priority, type, channel,
            payload, outputs, source_type, source_id, source_name, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, '[]', ?8, ?9, ?10, ?11, ?11)",
        vals![
            pid,
            title,
            description,
            priority,
            task_type,
            channel,
            payload.to_string(),
            &actor.actor_type,
            &actor.id,
            &actor.name,
            ts
        ],
    )?;
    let task = load_task(conn, id)?.ok_or_else(|| not_found(id))?;
    let ev = event(conn, "task.created", &task, actor, None, now)?;
    Ok(Change {
        task,
        events: vec![ev],
    })
}

/// `GET /tasks/{id}`: the task with its newest [`TASK_MESSAGES_SHOWN`] messages (oldest first),
/// and how many messages it has in all.
pub fn get_task(conn: &dyn Sql, scope: &Scope, id: TaskId) -> Result<(Task, u64), StoreError> {
    let mut task = task_in(conn, scope, id)?;
    let count = message_count(conn, id)?;
    let skip = count.saturating_sub(TASK_MESSAGES_SHOWN).max(0);
    task.messages = Some(messages_of(conn, id, TASK_MESSAGES_SHOWN, skip)?);
    Ok((task, u64::try_from(count).unwrap_or(0)))
}

fn parse_int(params: &HashMap<String, String>, key: &str) -> Result<Option<i64>, StoreError> {
    match params.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("`{key}` must be an integer"))),
    }
}

fn parse_time(params: &HashMap<String, String>, key: &str) -> Result<Option<String>, StoreError> {
    match params.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(s) => {
            let t = parse_timestamp(s)
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|d| d.and_utc())
                })
                .ok_or_else(|| bad(format!("`{key}` must be an ISO 8601 timestamp")))?;
            Ok(Some(format_timestamp(&t)))
        }
    }
}

/// `GET /tasks` with the query parameters of ats-api.md 5.2. Returns the page and the total.
pub fn list_tasks(
    conn: &dyn Sql,
    scope: &Scope,
    params: &HashMap<String, String>,
) -> Result<(Vec<Task>, u64), StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Val> = Vec::new();
    let mut push = |clause: &str, v: Val| {
        args.push(v);
        clauses.push(clause.replace('?', &format!("?{}", args.len())));
    };
    let pid = match (scope, parse_int(params, "project_id")?) {
        (Scope::Default, Some(p)) => p,
        _ => project_id(conn, scope)?,
    };
    push("project_id = ?", pid.into());
    if let Some(s) = params.get("status").filter(|s| !s.is_empty()) {
        let st = TaskStatus::parse(s).ok_or_else(|| bad(format!("unknown status {s:?}")))?;
        push("status = ?", st.as_str().to_owned().into());
    }
    for (key, col) in [
        ("type", "type"),
        ("channel", "channel"),
        ("assignee_id", "assignee_id"),
    ] {
        if let Some(v) = params.get(key).filter(|s| !s.is_empty()) {
            push(&format!("{col} = ?"), v.clone().into());
        }
    }
    if let Some(t) = parse_time(params, "created_after")? {
        push("created_at > ?", t.into());
    }
    if let Some(t) = parse_time(params, "updated_after")? {
        push("updated_at > ?", t.into());
    }
    for (key, op) in [
        ("priority", "="),
        ("min_priority", ">="),
        ("max_priority", "<="),
    ] {
        if let Some(p) = parse_int(params, key)? {
            push(&format!("priority {op} ?"), p.into());
        }
    }
    if let Some(q) = params.get("search").filter(|s| !s.is_empty()) {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        push(
            &format!(
                // SQLite's LIKE ignores ASCII case; PostgreSQL's ILIKE is its match.
                "(title {like} ? ESCAPE '\\' OR COALESCE(description, '') {like} ? ESCAPE '\\')",
                like = match conn.dialect() {
                    Dialect::Sqlite => "LIKE",
                    Dialect::Postgres => "ILIKE",
                }
            ),
            format!("%{escaped}%").into(),
        );
    }
    let where_sql = clauses.join(" AND ");
    let sort = match params.get("sort_by").filter(|s| !s.is_empty()) {
        None => SortBy::CreatedAt,
        Some(s) => SortBy::parse(s).ok_or_else(|| bad(format!("cannot sort by {s:?}")))?,
    };
    let dir = match params.get("sort_dir").map(String::as_str) {
        None | Some("") => {
            if sort == SortBy::Title {
                "ASC"
            } else {
                "DESC"
            }
        }
        Some("asc") => "ASC",
        Some("desc") => "DESC",
        Some(d) => return Err(bad(format!("`sort_dir` must be asc or desc, not {d:?}"))),
    };
    let limit = parse_int(params, "limit")?
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(0, MAX_LIST_LIMIT);
    let offset = parse_int(params, "offset")?.unwrap_or(0).max(0);
    let total = query_int(
        conn,
        &format!("SELECT COUNT(*) FROM tasks WHERE {where_sql}"),
        &args,
    )?;
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks WHERE {where_sql} ORDER BY {} {dir}, id {dir} \
         LIMIT {limit} OFFSET {offset}",
        sort.as_str()
    );
    let tasks = conn
        .query(&sql, &args)?
        .iter()
        .map(row_to_task)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tasks, u64::try_from(total).unwrap_or(0)))
}

fn write_task(conn: &dyn Sql, t: &Task, completed_at: Option<&str>) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tasks SET title = ?2, description = ?3, status = ?4, priority = ?5, type = ?6,
            channel = ?7, payload = ?8, outputs = ?9, assignee_type = ?10, assignee_id = ?11,
            assignee_name = ?12, lease_expires = ?13, updated_at = ?14, reason = ?15,
            completed_at = COALESCE(?16, CASE WHEN ?4 = 'completed' THEN completed_at END)
         WHERE id = ?1",
        vals![
            t.id,
            &t.title,
            &t.description,
            t.status.as_str(),
            t.priority,
            &t.task_type,
            &t.channel,
            t.payload.to_string(),
            Value::Array(t.outputs.clone()).to_string(),
            &t.assignee_type,
            &t.assignee_id,
            &t.assignee_name,
            t.lease_expires.as_ref().map(format_timestamp),
            format_timestamp(&t.updated_at),
            &t.reason,
            completed_at,
        ],
    )?;
    Ok(())
}

fn status_conflict(verb: &str, t: &Task) -> StoreError {
    StoreError::Conflict(format!(
        "cannot {verb} task {}: its status is {}",
        t.id, t.status
    ))
}

/// `POST /tasks/{id}/claim`: pending → in_progress with a lease; the current assignee renews.
pub fn claim(
    conn: &dyn Sql,
    scope: &Scope,
    id: TaskId,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    let lease_ms = match body.get("lease_duration") {
        None | Some(Value::Null) => DEFAULT_LEASE_MS,
        Some(v) => match v.as_i64() {
            Some(ms) if ms > 0 && ms <= MAX_LEASE_MS => ms,
            _ => {
                return Err(bad(format!(
                    "`lease_duration` must be an integer number of milliseconds, 1 to {MAX_LEASE_MS}"
                )));
            }
        },
    };
    let Some(actor_id) = actor.id.clone().filter(|s| !s.is_empty()) else {
        return Err(bad("claiming needs an actor: send the X-Actor-ID header"));
    };
    let mut t = task_in_for_update(conn, scope, id)?;
    let lease_live = t.lease_expires.is_some_and(|l| l > now);
    match t.status {
        TaskStatus::Pending => {}
        TaskStatus::InProgress if t.assignee_id.as_deref() == Some(actor_id.as_str()) => {}
        TaskStatus::InProgress if !lease_live => {}
        TaskStatus::InProgress => {
            return Err(StoreError::Conflict(format!(
                "cannot claim task {id}: its status is in_progress, held by {}",
                t.assignee_id.as_deref().unwrap_or("another actor")
            )));
        }
        _ => return Err(status_conflict("claim", &t)),
    }
    t.status = TaskStatus::InProgress;
    t.assignee_type = actor.actor_type.clone();
    t.assignee_id = Some(actor_id);
    t.assignee_name = actor.name.clone();
    t.lease_expires = Some(now + chrono::Duration::milliseconds(lease_ms));
    t.updated_at = now;
    write_task(conn, &t, None)?;
    let ev = event(conn, "task.claimed", &t, actor, None, now)?;
    Ok(Change {
        task: t,
        events: vec![ev],
    })
}

/// `POST /tasks/{id}/{complete,fail,reject,cancel,reopen}`.
pub fn transition(
    conn: &dyn Sql,
    scope: &Scope,
    id: TaskId,
    action: Action,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    let mut t = task_in_for_update(conn, scope, id)?;
    if !action.allowed_from(t.status) {
        return Err(status_conflict(action.verb(), &t));
    }
    let mut completed_at = None;
    let ts = format_timestamp(&now);
    match action {
        Action::Complete => {
            t.outputs = match body.get("outputs") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return Err(bad("`outputs` must be an array")),
            };
            completed_at = Some(ts.as_str());
        }
        Action::Fail | Action::Reject | Action::Reopen => {
            t.reason = opt_string(body, "reason")?;
        }
        Action::Cancel => {
            t.reason = opt_string(body, "reason")?;
        }
    }
    t.status = action.target();
    t.lease_expires = None;
    if action == Action::Reopen {
        t.assignee_type = None;
        t.assignee_id = None;
        t.assignee_name = None;
    }
    t.updated_at = now;
    write_task(conn, &t, completed_at)?;
    let ev = event(conn, action.event(), &t, actor, None, now)?;
    Ok(Change {
        task: t,
        events: vec![ev],
    })
}

/// May PATCH move a task from `from` to `to`? The edges of the lifecycle except claiming.
fn patch_allowed(from: TaskStatus, to: TaskStatus) -> bool {
    use TaskStatus::*;
    from == to
        || matches!(
            (from, to),
            (Pending, Rejected | Cancelled)
                | (InProgress, Completed | Cancelled | Failed | Pending)
        )
        || (from.is_terminal() && to == Pending)
}

/// `PATCH /tasks/{id}`.
pub fn update_task(
    conn: &dyn Sql,
    scope: &Scope,
    id: TaskId,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    let mut t = task_in_for_update(conn, scope, id)?;
    let mut changed = false;
    if let Some(title) = opt_string(body, "title")? {
        t.title = non_empty("title", title)?;
        changed = true;
    }
    if body.contains_key("description") {
        t.description = opt_string(body, "description")?;
        changed = true;
    }
    if let Some(p) = opt_priority(body)? {
        t.priority = p;
        changed = true;
    }
    if let Some(ty) = opt_string(body, "type")? {
        t.task_type = non_empty("type", ty)?;
        changed = true;
    }
    if let Some(ch) = opt_string(body, "channel")? {
        t.channel = non_empty("channel", ch)?;
        changed = true;
    }
    if let Some(p) = body.get("payload") {
        t.payload = p.clone();
        changed = true;
    }
    let mut completed_at = None;
    let ts = format_timestamp(&now);
    if let Some(s) = opt_string(body, "status")? {
        let to = TaskStatus::parse(&s).ok_or_else(|| bad(format!("unknown status {s:?}")))?;
        if !patch_allowed(t.status, to) {
            return Err(StoreError::Conflict(format!(
                "cannot change task {id} from {} to {to}: its status is {}{}",
                t.status,
                t.status,
                if to == TaskStatus::InProgress {
                    " (claim it instead)"
                } else {
                    ""
                }
            )));
        }
        if to != t.status {
            if to == TaskStatus::Pending {
                t.assignee_type = None;
                t.assignee_id = None;
                t.assignee_name = None;
            }
            if to != TaskStatus::InProgress {
                t.lease_expires = None;
            }
            if to == TaskStatus::Completed {
                completed_at = Some(ts.as_str());
            }
            t.status = to;
        }
        changed = true;
    }
    if !changed {
        return Err(bad(
            "nothing to update: give title, description, priority, status, type, channel or payload",
        ));
    }
    t.updated_at = now;
    write_task(conn, &t, completed_at)?;
    let ev = event(conn, "task.updated", &t, actor, None, now)?;
    Ok(Change {
        task: t,
        events: vec![ev],
    })
}

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
fn messages_of(
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

fn message_count(conn: &dyn Sql, task_id: TaskId) -> Result<i64, StoreError> {
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

/// Returns every in-progress task whose lease ended to pending (`task.lease_expired`).
pub fn expire_leases(conn: &dyn Sql, now: DateTime<Utc>) -> Result<Vec<Change>, StoreError> {
    let ts = format_timestamp(&now);
    let ids: Vec<TaskId> = conn
        .query(
            "SELECT id FROM tasks WHERE status = 'in_progress' AND lease_expires IS NOT NULL
             AND lease_expires <= ?1",
            vals![ts.as_str()],
        )?
        .iter()
        .map(|r| r.int(0))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    // Several tasks in one transaction: take the event order first, before any task's row, so
    // that two hubs expiring at once never wait on each other in a cycle.
    conn.order_events()?;
    let system = HubActor::system();
    for id in ids {
        // Locked and checked again: another hub may have expired (or renewed) it meanwhile.
        let Some(mut t) = load_task_for_update(conn, id)? else {
            continue;
        };
        let expired =
            t.status == TaskStatus::InProgress && t.lease_expires.is_some_and(|l| l <= now);
        if !expired {
            continue;
        }
        t.status = TaskStatus::Pending;
        t.assignee_type = None;
        t.assignee_id = None;
        t.assignee_name = None;
        t.lease_expires = None;
        t.updated_at = now;
        write_task(conn, &t, None)?;
        let ev = event(conn, "task.lease_expired", &t, &system, None, now)?;
        out.push(Change {
            task: t,
            events: vec![ev],
        });
    }
    Ok(out)
}

/// Deletes the finished tasks (completed, failed, rejected, cancelled) whose last change is
/// older than `before`, with their messages. Returns how many tasks were deleted.
pub fn prune_finished(conn: &dyn Sql, before: DateTime<Utc>) -> Result<usize, StoreError> {
    let ts = format_timestamp(&before);
    let finished = "status IN ('completed', 'failed', 'rejected', 'cancelled') AND updated_at < ?1";
    conn.execute(
        &format!("DELETE FROM messages WHERE task_id IN (SELECT id FROM tasks WHERE {finished})"),
        vals![ts.as_str()],
    )?;
    let n = conn.execute(
        &format!("DELETE FROM tasks WHERE {finished}"),
        vals![ts.as_str()],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Deletes stored events older than the newest [`EVENTS_KEPT`] (their ids stay unique).
pub fn prune_events(conn: &dyn Sql) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
        vals![EVENTS_KEPT],
    )?;
    Ok(())
}

/// `GET /tasks/stats` over all projects.
pub fn stats(conn: &dyn Sql, now: DateTime<Utc>) -> Result<Stats, StoreError> {
    let mut s = Stats::default();
    for st in TaskStatus::ALL {
        s.by_status.insert(st.as_str().to_owned(), 0);
    }
    for row in conn.query("SELECT status, COUNT(*) FROM tasks GROUP BY status", &[])? {
        let (k, n) = (row.text(0)?, row.int(1)?);
        let n = u64::try_from(n).unwrap_or(0);
        s.total = s.total.saturating_add(n);
        s.by_status.insert(k, n);
    }
    for row in conn.query("SELECT channel, COUNT(*) FROM tasks GROUP BY channel", &[])? {
        let (k, n) = (row.text(0)?, row.int(1)?);
        s.by_channel.insert(k, u64::try_from(n).unwrap_or(0));
    }
    let seconds = match conn.dialect() {
        Dialect::Sqlite => "(julianday(completed_at) - julianday(created_at)) * 86400.0",
        Dialect::Postgres => {
            "EXTRACT(EPOCH FROM (completed_at::timestamptz - created_at::timestamptz))::float8"
        }
    };
    let row = query_opt(
        conn,
        &format!(
            "SELECT COUNT(*), AVG({seconds})
             FROM tasks WHERE status = 'completed' AND completed_at IS NOT NULL"
        ),
        &[],
    )?;
    let (count, avg) = match row {
        Some(r) => (r.int(0)?, r.opt_real(1)?),
        None => (0, None),
    };
    s.completed_count = u64::try_from(count).unwrap_or(0);
    s.avg_completion_seconds = avg;
    let day = format_timestamp(&(now - chrono::Duration::days(1)));
    let week = format_timestamp(&(now - chrono::Duration::days(7)));
    let count_since = |col: &str, since: &str| -> Result<u64, StoreError> {
        let n = query_int(
            conn,
            &format!("SELECT COUNT(*) FROM tasks WHERE {col} > ?1"),
            vals![since],
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    s.recent = RecentStats {
        created_24h: count_since("created_at", &day)?,
        completed_24h: count_since("completed_at", &day)?,
        created_7d: count_since("created_at", &week)?,
        completed_7d: count_since("completed_at", &week)?,
    };
    Ok(s)
}
