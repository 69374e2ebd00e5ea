//! Creating, reading, listing and counting tasks: `POST /tasks`, `GET /tasks/{id}`,
//! `GET /tasks` and `GET /tasks/stats`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::messages::{message_count, messages_of};
use super::sql::{Dialect, Sql, Val, query_int, query_opt, vals};
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
