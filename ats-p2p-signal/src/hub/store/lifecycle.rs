//! Moving a task along its lifecycle: claims and their leases, the status actions
//! (complete, fail, reject, cancel, reopen), `PATCH`, and the expiry of lapsed leases.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::sql::{Sql, vals};
use super::*;

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
