//! The hub's logic: plain functions over a SQLite connection, testable without HTTP.
//!
//! Every mutating function returns the changed task and the [`HubEvent`]s to broadcast once the
//! caller's transaction commits. Time comes in as an argument.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Map, Value, json};

use crate::types::{DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY};
use crate::types::{
    EventData, EventFrame, Message, Part, RecentStats, SortBy, Stats, Task, TaskId, TaskStatus,
    format_timestamp, parse_timestamp,
};

/// Organization of unscoped routes.
pub const DEFAULT_ORG: &str = "default";

/// Project of unscoped routes.
pub const DEFAULT_PROJECT: &str = "main";

/// Default claim lease (ATS: 60 s).
pub const DEFAULT_LEASE_MS: i64 = 60_000;

/// Longest lease accepted (a week; longer is surely a unit mistake).
pub const MAX_LEASE_MS: i64 = 7 * 24 * 3600 * 1000;

/// Page size of `GET /tasks` without `limit`.
pub const DEFAULT_LIST_LIMIT: i64 = 100;

/// Largest page of `GET /tasks`.
pub const MAX_LIST_LIMIT: i64 = 1000;

/// Most parts in one message.
pub const MAX_PARTS: usize = 32;

/// Longest slug of an organization or project.
pub const MAX_SLUG_LEN: usize = 64;

/// Stored events kept for their ids (older ones are pruned).
pub const EVENTS_KEPT: i64 = 10_000;

/// A store failure, mapped to an HTTP status by the handlers.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// 400: bad input.
    #[error("{0}")]
    BadRequest(String),
    /// 404: unknown task, org or project.
    #[error("{0}")]
    NotFound(String),
    /// 409: transition not allowed, task held by someone else, slug taken.
    #[error("{0}")]
    Conflict(String),
    /// 500: the database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// 500: the transaction could not be committed.
    #[error("database commit failed: {0}")]
    Commit(String),
    /// 503: the hub is shutting down.
    #[error("hub is shutting down")]
    Closed,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::BadRequest(msg.into())
}

/// The actor of a request (absent headers are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubActor {
    /// `X-Actor-Type`.
    pub actor_type: Option<String>,
    /// `X-Actor-ID`.
    pub id: Option<String>,
    /// `X-Actor-Name`.
    pub name: Option<String>,
}

impl HubActor {
    /// The hub itself (lease expiry).
    pub fn system() -> Self {
        Self {
            actor_type: Some("system".to_owned()),
            id: Some("ats-hub".to_owned()),
            name: Some("ATS hub".to_owned()),
        }
    }
}

/// Which project a route addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Unscoped routes: `default/main`.
    Default,
    /// `/orgs/{org}/projects/{project}/...`.
    Named {
        /// Organization slug.
        org: String,
        /// Project slug.
        project: String,
    },
}

/// An event ready to broadcast: the frame and what subscriptions filter on.
#[derive(Debug)]
pub struct HubEvent {
    /// Event name.
    pub event_type: String,
    /// The task's channel.
    pub channel: String,
    /// The task's type.
    pub task_type: String,
    /// The frame (serialized on first use: with no subscriber it never is).
    data: EventFrame,
    text: std::sync::OnceLock<String>,
}

impl HubEvent {
    /// The JSON text frame (ats-api.md section 9).
    pub fn frame(&self) -> &str {
        self.text.get_or_init(|| {
            serde_json::to_string(&self.data).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot serialize an event frame");
                json!({ "type": "error", "error": "event not serializable" }).to_string()
            })
        })
    }
}

/// A task state change: the task after it, and its events.
#[derive(Debug)]
pub struct Change {
    /// The task after the change.
    pub task: Task,
    /// Events to broadcast after commit.
    pub events: Vec<HubEvent>,
}

/// A state transition requested by `POST /tasks/{id}/<action>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// in_progress → completed
    Complete,
    /// in_progress → failed
    Fail,
    /// pending → rejected
    Reject,
    /// pending | in_progress → cancelled
    Cancel,
    /// terminal → pending
    Reopen,
}

impl Action {
    fn event(self) -> &'static str {
        match self {
            Self::Complete => "task.completed",
            Self::Fail => "task.failed",
            Self::Reject => "task.rejected",
            Self::Cancel => "task.cancelled",
            Self::Reopen => "task.reopened",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Fail => "fail",
            Self::Reject => "reject",
            Self::Cancel => "cancel",
            Self::Reopen => "reopen",
        }
    }

    fn target(self) -> TaskStatus {
        match self {
            Self::Complete => TaskStatus::Completed,
            Self::Fail => TaskStatus::Failed,
            Self::Reject => TaskStatus::Rejected,
            Self::Cancel => TaskStatus::Cancelled,
            Self::Reopen => TaskStatus::Pending,
        }
    }

    fn allowed_from(self, s: TaskStatus) -> bool {
        match self {
            Self::Complete | Self::Fail => s == TaskStatus::InProgress,
            Self::Reject => s == TaskStatus::Pending,
            Self::Cancel => matches!(s, TaskStatus::Pending | TaskStatus::InProgress),
            Self::Reopen => s.is_terminal(),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orgs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id INTEGER NOT NULL REFERENCES orgs(id),
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (org_id, slug)
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    title TEXT NOT NULL,
    description TEXT,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    type TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    outputs TEXT NOT NULL,
    source_type TEXT, source_id TEXT, source_name TEXT,
    assignee_type TEXT, assignee_id TEXT, assignee_name TEXT,
    lease_expires TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS tasks_project_status ON tasks (project_id, status);
CREATE INDEX IF NOT EXISTS tasks_updated ON tasks (updated_at);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks (status, lease_expires);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    actor_type TEXT, actor_id TEXT, actor_name TEXT,
    parts TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_task ON messages (task_id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    task_id INTEGER,
    created_at TEXT NOT NULL
);
";

/// Opens (creating if needed) the database: WAL, schema, the `default/main` project.
pub fn open(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    init(&conn, Utc::now())?;
    Ok(conn)
}

/// Sets pragmas, creates the schema and the default project (idempotent).
pub fn init(conn: &Connection, now: DateTime<Utc>) -> Result<(), StoreError> {
    // WAL: readers never block the writer and a commit needs no fsync with NORMAL sync (the
    // WAL is synced at checkpoints), which keeps claims fast while surviving process crashes.
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        // temp_store=MEMORY keeps the per-job savepoint journals off the disk.
        "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;
         PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16384;",
    )?;
    conn.execute_batch(SCHEMA)?;
    let ts = format_timestamp(&now);
    conn.execute(
        "INSERT OR IGNORE INTO orgs (slug, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![DEFAULT_ORG, "Default", ts],
    )?;
    let org_id: i64 =
        conn.query_row("SELECT id FROM orgs WHERE slug = ?1", [DEFAULT_ORG], |r| {
            r.get(0)
        })?;
    conn.execute(
        "INSERT OR IGNORE INTO projects (org_id, slug, name, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![org_id, DEFAULT_PROJECT, "Main", ts],
    )?;
    Ok(())
}

/// The project id a scope addresses (404 when the org or project is unknown).
pub fn project_id(conn: &Connection, scope: &Scope) -> Result<i64, StoreError> {
    let (org, project) = match scope {
        Scope::Default => (DEFAULT_ORG, DEFAULT_PROJECT),
        Scope::Named { org, project } => (org.as_str(), project.as_str()),
    };
    let mut st = conn.prepare_cached(
        "SELECT p.id FROM projects p JOIN orgs o ON o.id = p.org_id
         WHERE o.slug = ?1 AND p.slug = ?2",
    )?;
    st.query_row(params![org, project], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("project {org}/{project} not found")))
}

const TASK_COLS: &str = "id, project_id, title, description, status, priority, type, channel, \
     payload, outputs, source_type, source_id, source_name, assignee_type, assignee_id, \
     assignee_name, lease_expires, created_at, updated_at, reason";

fn ts_col(row: &Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let s: String = row.get(idx)?;
    Ok(parse_timestamp(&s).unwrap_or_default())
}

fn row_to_task(row: &Row<'_>) -> rusqlite::Result<Task> {
    let status: String = row.get(4)?;
    let payload: String = row.get(8)?;
    let outputs: String = row.get(9)?;
    let lease: Option<String> = row.get(16)?;
    Ok(Task {
        id: row.get(0)?,
        project_id: Some(row.get(1)?),
        title: row.get(2)?,
        description: row.get(3)?,
        status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Unknown),
        priority: row.get(5)?,
        task_type: row.get(6)?,
        channel: row.get(7)?,
        payload: serde_json::from_str(&payload).unwrap_or_else(|_| json!({})),
        outputs: serde_json::from_str(&outputs).unwrap_or_default(),
        source_type: row.get(10)?,
        source_id: row.get(11)?,
        source_name: row.get(12)?,
        assignee_type: row.get(13)?,
        assignee_id: row.get(14)?,
        assignee_name: row.get(15)?,
        lease_expires: lease.as_deref().and_then(parse_timestamp),
        created_at: ts_col(row, 17)?,
        updated_at: ts_col(row, 18)?,
        reason: row.get(19)?,
        messages: None,
    })
}

fn load_task(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    let mut st = conn.prepare_cached(&format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"))?;
    Ok(st.query_row([id], row_to_task).optional()?)
}

fn not_found(id: TaskId) -> StoreError {
    StoreError::NotFound(format!("task {id} not found"))
}

/// The task `id` in the scope's project.
fn task_in(conn: &Connection, scope: &Scope, id: TaskId) -> Result<Task, StoreError> {
    let pid = project_id(conn, scope)?;
    match load_task(conn, id)? {
        Some(t) if t.project_id == Some(pid) => Ok(t),
        _ => Err(not_found(id)),
    }
}

/// Records an event and builds its frame.
fn event(
    conn: &Connection,
    event_type: &str,
    task: &Task,
    actor: &HubActor,
    message: Option<Message>,
    now: DateTime<Utc>,
) -> Result<HubEvent, StoreError> {
    let ts = format_timestamp(&now);
    let mut st =
        conn.prepare_cached("INSERT INTO events (type, task_id, created_at) VALUES (?1, ?2, ?3)")?;
    st.execute(params![event_type, task.id, ts])?;
    let id = conn.last_insert_rowid();
    let frame = EventFrame {
        event_type: event_type.to_owned(),
        id: Some(id),
        task_id: Some(task.id),
        channel: Some(task.channel.clone()),
        actor_type: actor.actor_type.clone(),
        actor_id: actor.id.clone(),
        actor_name: actor.name.clone(),
        created_at: Some(now),
        data: Some(EventData {
            task: Some(task.clone()),
            message,
        }),
        task: None,
    };
    Ok(HubEvent {
        event_type: event_type.to_owned(),
        channel: task.channel.clone(),
        task_type: task.task_type.clone(),
        data: frame,
        text: std::sync::OnceLock::new(),
    })
}

/// Parses a JSON request body; an empty body is `{}`. Must be an object.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, StoreError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("request body must be a JSON object")),
        Err(e) => Err(bad(format!("malformed JSON body: {e}"))),
    }
}

fn opt_string(body: &Map<String, Value>, key: &'static str) -> Result<Option<String>, StoreError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("`{key}` must be a string"))),
    }
}

fn opt_priority(body: &Map<String, Value>) -> Result<Option<i64>, StoreError> {
    match body.get("priority") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(p) if (MIN_PRIORITY..=MAX_PRIORITY).contains(&p) => Ok(Some(p)),
            _ => Err(bad(format!(
                "`priority` must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"
            ))),
        },
    }
}

fn non_empty(key: &str, s: String) -> Result<String, StoreError> {
    if s.trim().is_empty() {
        Err(bad(format!("`{key}` must not be empty")))
    } else {
        Ok(s)
    }
}

/// `POST /tasks`.
pub fn create_task(
    conn: &Connection,
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
    let mut st = conn.prepare_cached(
        "INSERT INTO tasks (project_id, title, description, status, priority, type, channel,
            payload, outputs, source_type, source_id, source_name, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, '[]', ?8, ?9, ?10, ?11, ?11)",
    )?;
    st.execute(params![
        pid,
        title,
        description,
        priority,
        task_type,
        channel,
        payload.to_string(),
        actor.actor_type,
        actor.id,
        actor.name,
        ts
    ])?;
    let id = conn.last_insert_rowid();
    let task = load_task(conn, id)?.ok_or_else(|| not_found(id))?;
    let ev = event(conn, "task.created", &task, actor, None, now)?;
    Ok(Change {
        task,
        events: vec![ev],
    })
}

/// `GET /tasks/{id}`, with its messages.
pub fn get_task(conn: &Connection, scope: &Scope, id: TaskId) -> Result<Task, StoreError> {
    let mut task = task_in(conn, scope, id)?;
    task.messages = Some(messages_of(conn, id)?);
    Ok(task)
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
    conn: &Connection,
    scope: &Scope,
    params: &HashMap<String, String>,
) -> Result<(Vec<Task>, u64), StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut push = |clause: &str, v: rusqlite::types::Value| {
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
            "(title LIKE ? ESCAPE '\\' OR IFNULL(description, '') LIKE ? ESCAPE '\\')",
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
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM tasks WHERE {where_sql}"))?
        .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks WHERE {where_sql} ORDER BY {} {dir}, id {dir} \
         LIMIT {limit} OFFSET {offset}",
        sort.as_str()
    );
    let mut st = conn.prepare_cached(&sql)?;
    let tasks = st
        .query_map(rusqlite::params_from_iter(args.iter()), row_to_task)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tasks, u64::try_from(total).unwrap_or(0)))
}

fn write_task(conn: &Connection, t: &Task, completed_at: Option<&str>) -> Result<(), StoreError> {
    let mut st = conn.prepare_cached(
        "UPDATE tasks SET title = ?2, description = ?3, status = ?4, priority = ?5, type = ?6,
            channel = ?7, payload = ?8, outputs = ?9, assignee_type = ?10, assignee_id = ?11,
            assignee_name = ?12, lease_expires = ?13, updated_at = ?14, reason = ?15,
            completed_at = COALESCE(?16, CASE WHEN ?4 = 'completed' THEN completed_at END)
         WHERE id = ?1",
    )?;
    st.execute(params![
        t.id,
        t.title,
        t.description,
        t.status.as_str(),
        t.priority,
        t.task_type,
        t.channel,
        t.payload.to_string(),
        Value::Array(t.outputs.clone()).to_string(),
        t.assignee_type,
        t.assignee_id,
        t.assignee_name,
        t.lease_expires.as_ref().map(format_timestamp),
        format_timestamp(&t.updated_at),
        t.reason,
        completed_at,
    ])?;
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
    conn: &Connection,
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
    let mut t = task_in(conn, scope, id)?;
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
    conn: &Connection,
    scope: &Scope,
    id: TaskId,
    action: Action,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    let mut t = task_in(conn, scope, id)?;
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
    conn: &Connection,
    scope: &Scope,
    id: TaskId,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Change, StoreError> {
    let mut t = task_in(conn, scope, id)?;
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

fn row_to_message(row: &Row<'_>) -> rusqlite::Result<Message> {
    let parts: String = row.get(5)?;
    Ok(Message {
        id: row.get(0)?,
        task_id: Some(row.get(1)?),
        actor_type: row.get(2)?,
        actor_id: row.get(3)?,
        actor_name: row.get(4)?,
        parts: serde_json::from_str(&parts).unwrap_or_default(),
        created_at: ts_col(row, 6)?,
    })
}

fn messages_of(conn: &Connection, task_id: TaskId) -> Result<Vec<Message>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT id, task_id, actor_type, actor_id, actor_name, parts, created_at
         FROM messages WHERE task_id = ?1 ORDER BY id",
    )?;
    let rows = st
        .query_map([task_id], row_to_message)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// `GET /tasks/{id}/messages`, oldest first.
pub fn list_messages(
    conn: &Connection,
    scope: &Scope,
    id: TaskId,
) -> Result<Vec<Message>, StoreError> {
    task_in(conn, scope, id)?;
    messages_of(conn, id)
}

/// `POST /tasks/{id}/messages`: `{"parts": [{"type", "content" | "url" | "data"}]}`.
pub fn post_message(
    conn: &Connection,
    scope: &Scope,
    id: TaskId,
    actor: &HubActor,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<(Message, Vec<HubEvent>), StoreError> {
    let task = task_in(conn, scope, id)?;
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
    let mut st = conn.prepare_cached(
        "INSERT INTO messages (task_id, actor_type, actor_id, actor_name, parts, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    st.execute(params![
        id,
        actor.actor_type,
        actor.id,
        actor.name,
        parts_json,
        ts
    ])?;
    let msg = Message {
        id: conn.last_insert_rowid(),
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
pub fn expire_leases(conn: &Connection, now: DateTime<Utc>) -> Result<Vec<Change>, StoreError> {
    let ts = format_timestamp(&now);
    let ids: Vec<TaskId> = conn
        .prepare_cached(
            "SELECT id FROM tasks WHERE status = 'in_progress' AND lease_expires IS NOT NULL
             AND lease_expires <= ?1",
        )?
        .query_map([&ts], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    let system = HubActor::system();
    for id in ids {
        let Some(mut t) = load_task(conn, id)? else {
            continue;
        };
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

/// Deletes stored events older than the newest [`EVENTS_KEPT`] (their ids stay unique).
pub fn prune_events(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1")?
        .execute([EVENTS_KEPT])?;
    Ok(())
}

/// `GET /tasks/stats` over all projects.
pub fn stats(conn: &Connection, now: DateTime<Utc>) -> Result<Stats, StoreError> {
    let mut s = Stats::default();
    for st in TaskStatus::ALL {
        s.by_status.insert(st.as_str().to_owned(), 0);
    }
    let mut q = conn.prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status")?;
    for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (k, n) = row?;
        let n = u64::try_from(n).unwrap_or(0);
        s.total = s.total.saturating_add(n);
        s.by_status.insert(k, n);
    }
    let mut q = conn.prepare_cached("SELECT channel, COUNT(*) FROM tasks GROUP BY channel")?;
    for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (k, n) = row?;
        s.by_channel.insert(k, u64::try_from(n).unwrap_or(0));
    }
    let (count, avg): (i64, Option<f64>) = conn.query_row(
        "SELECT COUNT(*), AVG((julianday(completed_at) - julianday(created_at)) * 86400.0)
         FROM tasks WHERE status = 'completed' AND completed_at IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    s.completed_count = u64::try_from(count).unwrap_or(0);
    s.avg_completion_seconds = avg;
    let day = format_timestamp(&(now - chrono::Duration::days(1)));
    let week = format_timestamp(&(now - chrono::Duration::days(7)));
    let count_since = |col: &str, since: &str| -> Result<u64, StoreError> {
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM tasks WHERE {col} > ?1"),
            [since],
            |r| r.get(0),
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

// ---- organizations and projects ----

fn check_slug(slug: &str) -> Result<(), StoreError> {
    let ok = !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && slug
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid slug {slug:?}: use 1 to {MAX_SLUG_LEN} letters, digits, '-', '_' or '.'"
        )))
    }
}

fn org_json(row: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": row.get::<_, i64>(0)?,
        "slug": row.get::<_, String>(1)?,
        "name": row.get::<_, String>(2)?,
        "created_at": row.get::<_, String>(3)?,
        "updated_at": row.get::<_, String>(4)?,
    }))
}

const ORG_COLS: &str = "id, slug, name, created_at, updated_at";

/// `GET /orgs`.
pub fn list_orgs(conn: &Connection) -> Result<Vec<Value>, StoreError> {
    let mut st = conn.prepare_cached(&format!("SELECT {ORG_COLS} FROM orgs ORDER BY id"))?;
    let rows = st.query_map([], org_json)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// `GET /orgs/{org}`.
pub fn get_org(conn: &Connection, slug: &str) -> Result<Value, StoreError> {
    let mut st = conn.prepare_cached(&format!("SELECT {ORG_COLS} FROM orgs WHERE slug = ?1"))?;
    st.query_row([slug], org_json)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("organization {slug} not found")))
}

/// `POST /orgs` `{"slug", "name"}` (409 when the slug exists).
pub fn create_org(
    conn: &Connection,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let slug = opt_string(body, "slug")?.ok_or_else(|| bad("`slug` is required"))?;
    check_slug(&slug)?;
    let name = opt_string(body, "name")?.unwrap_or_else(|| slug.clone());
    if get_org(conn, &slug).is_ok() {
        return Err(StoreError::Conflict(format!(
            "organization {slug} already exists"
        )));
    }
    let ts = format_timestamp(&now);
    conn.execute(
        "INSERT INTO orgs (slug, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![slug, name, ts],
    )?;
    get_org(conn, &slug)
}

/// `PATCH /orgs/{org}` `{"slug"?, "name"?}`.
pub fn update_org(
    conn: &Connection,
    slug: &str,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    get_org(conn, slug)?;
    let new_slug = opt_string(body, "slug")?;
    let name = opt_string(body, "name")?;
    if new_slug.is_none() && name.is_none() {
        return Err(bad("nothing to update: give slug or name"));
    }
    let ts = format_timestamp(&now);
    if let Some(n) = &name {
        conn.execute(
            "UPDATE orgs SET name = ?2, updated_at = ?3 WHERE slug = ?1",
            params![slug, n, ts],
        )?;
    }
    let mut current = slug.to_owned();
    if let Some(ns) = new_slug {
        check_slug(&ns)?;
        if ns != slug && get_org(conn, &ns).is_ok() {
            return Err(StoreError::Conflict(format!(
                "organization {ns} already exists"
            )));
        }
        conn.execute(
            "UPDATE orgs SET slug = ?2, updated_at = ?3 WHERE slug = ?1",
            params![slug, ns, ts],
        )?;
        current = ns;
    }
    get_org(conn, &current)
}

fn org_id(conn: &Connection, slug: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT id FROM orgs WHERE slug = ?1")?
        .query_row([slug], |r| r.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("organization {slug} not found")))
}

const PROJECT_COLS: &str = "p.id, p.slug, p.name, p.description, p.created_at, p.updated_at, \
     o.slug, (SELECT COUNT(*) FROM tasks t WHERE t.project_id = p.id AND t.status = 'pending'), \
     (SELECT COUNT(*) FROM tasks t WHERE t.project_id = p.id AND t.status = 'in_progress'), \
     (SELECT COUNT(*) FROM tasks t WHERE t.project_id = p.id)";

fn project_json(row: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": row.get::<_, i64>(0)?,
        "slug": row.get::<_, String>(1)?,
        "name": row.get::<_, String>(2)?,
        "description": row.get::<_, Option<String>>(3)?,
        "created_at": row.get::<_, String>(4)?,
        "updated_at": row.get::<_, String>(5)?,
        "org_slug": row.get::<_, String>(6)?,
        "pending_count": row.get::<_, i64>(7)?,
        "in_progress_count": row.get::<_, i64>(8)?,
        "total_count": row.get::<_, i64>(9)?,
    }))
}

/// `GET /orgs/{org}/projects` (counts always included).
pub fn list_projects(conn: &Connection, org: &str) -> Result<Vec<Value>, StoreError> {
    let oid = org_id(conn, org)?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT {PROJECT_COLS} FROM projects p JOIN orgs o ON o.id = p.org_id
         WHERE p.org_id = ?1 ORDER BY p.id"
    ))?;
    let rows = st
        .query_map([oid], project_json)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// `GET /orgs/{org}/projects/{project}`.
pub fn get_project(conn: &Connection, org: &str, project: &str) -> Result<Value, StoreError> {
    let oid = org_id(conn, org)?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT {PROJECT_COLS} FROM projects p JOIN orgs o ON o.id = p.org_id
         WHERE p.org_id = ?1 AND p.slug = ?2"
    ))?;
    st.query_row(params![oid, project], project_json)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("project {org}/{project} not found")))
}

/// `POST /orgs/{org}/projects` `{"slug", "name", "description"?}` (409 when the slug exists).
pub fn create_project(
    conn: &Connection,
    org: &str,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let oid = org_id(conn, org)?;
    let slug = opt_string(body, "slug")?.ok_or_else(|| bad("`slug` is required"))?;
    check_slug(&slug)?;
    let name = opt_string(body, "name")?.unwrap_or_else(|| slug.clone());
    let description = opt_string(body, "description")?;
    if get_project(conn, org, &slug).is_ok() {
        return Err(StoreError::Conflict(format!(
            "project {org}/{slug} already exists"
        )));
    }
    let ts = format_timestamp(&now);
    conn.execute(
        "INSERT INTO projects (org_id, slug, name, description, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        params![oid, slug, name, description, ts],
    )?;
    get_project(conn, org, &slug)
}

/// `PATCH /orgs/{org}/projects/{project}` `{"slug"?, "name"?, "description"?}`.
pub fn update_project(
    conn: &Connection,
    org: &str,
    project: &str,
    body: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Value, StoreError> {
    let pid = project_id(
        conn,
        &Scope::Named {
            org: org.to_owned(),
            project: project.to_owned(),
        },
    )?;
    let new_slug = opt_string(body, "slug")?;
    let name = opt_string(body, "name")?;
    let description = opt_string(body, "description")?;
    if new_slug.is_none() && name.is_none() && description.is_none() {
        return Err(bad("nothing to update: give slug, name or description"));
    }
    let ts = format_timestamp(&now);
    if let Some(n) = &name {
        conn.execute(
            "UPDATE projects SET name = ?2, updated_at = ?3 WHERE id = ?1",
            params![pid, n, ts],
        )?;
    }
    if let Some(d) = &description {
        conn.execute(
            "UPDATE projects SET description = ?2, updated_at = ?3 WHERE id = ?1",
            params![pid, d, ts],
        )?;
    }
    let mut current = project.to_owned();
    if let Some(ns) = new_slug {
        check_slug(&ns)?;
        if ns != project && get_project(conn, org, &ns).is_ok() {
            return Err(StoreError::Conflict(format!(
                "project {org}/{ns} already exists"
            )));
        }
        conn.execute(
            "UPDATE projects SET slug = ?2, updated_at = ?3 WHERE id = ?1",
            params![pid, ns, ts],
        )?;
        current = ns;
    }
    get_project(conn, org, &current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        init(&c, Utc::now()).unwrap();
        c
    }

    fn actor(id: &str) -> HubActor {
        HubActor {
            actor_type: Some("agent".into()),
            id: Some(id.into()),
            name: Some(id.to_uppercase()),
        }
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn create_defaults_and_validation() {
        let c = db();
        let now = Utc::now();
        let ch = create_task(
            &c,
            &Scope::Default,
            &actor("a"),
            &body(json!({"title": "t"})),
            now,
        )
        .unwrap();
        let t = ch.task;
        assert_eq!(
            (
                t.status,
                t.priority,
                t.task_type.as_str(),
                t.channel.as_str()
            ),
            (TaskStatus::Pending, 5, "task", "default")
        );
        assert_eq!(t.payload, json!({}));
        assert_eq!(t.source_id.as_deref(), Some("a"));
        assert_eq!(ch.events.len(), 1);
        assert!(ch.events[0].frame().contains("\"task.created\""));
        for b in [
            json!({}),
            json!({"title": ""}),
            json!({"title": "x", "priority": 11}),
            json!({"title": "x", "priority": 0}),
            json!({"title": 5}),
        ] {
            assert!(matches!(
                create_task(&c, &Scope::Default, &actor("a"), &body(b), now),
                Err(StoreError::BadRequest(_))
            ));
        }
        let scope = Scope::Named {
            org: "nope".into(),
            project: "x".into(),
        };
        assert!(matches!(
            create_task(&c, &scope, &actor("a"), &body(json!({"title": "t"})), now),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn claim_rules_and_lease_expiry() {
        let c = db();
        let now = Utc::now();
        let s = Scope::Default;
        let id = create_task(&c, &s, &actor("a"), &body(json!({"title": "t"})), now)
            .unwrap()
            .task
            .id;
        let t = claim(
            &c,
            &s,
            id,
            &actor("b"),
            &body(json!({"lease_duration": 1000})),
            now,
        )
        .unwrap()
        .task;
        assert_eq!(t.status, TaskStatus::InProgress);
        assert_eq!(t.assignee_id.as_deref(), Some("b"));
        // someone else: conflict; the holder renews
        let e = claim(&c, &s, id, &actor("c"), &Map::new(), now).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(m) if m.contains("in_progress")));
        let later = now + chrono::Duration::milliseconds(500);
        let t = claim(
            &c,
            &s,
            id,
            &actor("b"),
            &body(json!({"lease_duration": 1000})),
            later,
        )
        .unwrap()
        .task;
        assert_eq!(
            t.lease_expires,
            Some(later + chrono::Duration::milliseconds(1000))
        );
        assert!(expire_leases(&c, later).unwrap().is_empty());
        let gone = later + chrono::Duration::milliseconds(1001);
        let ch = expire_leases(&c, gone).unwrap();
        assert_eq!(ch.len(), 1);
        assert_eq!(ch[0].task.status, TaskStatus::Pending);
        assert!(ch[0].task.assignee_id.is_none() && ch[0].task.lease_expires.is_none());
        assert!(ch[0].events[0].frame().contains("task.lease_expired"));
        assert!(matches!(
            claim(&c, &s, id, &HubActor::default(), &Map::new(), now),
            Err(StoreError::BadRequest(_))
        ));
        assert!(matches!(
            claim(
                &c,
                &s,
                id,
                &actor("b"),
                &body(json!({"lease_duration": "x"})),
                now
            ),
            Err(StoreError::BadRequest(_))
        ));
        assert!(matches!(
            claim(&c, &s, 999, &actor("b"), &Map::new(), now),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn transitions_enforced() {
        let c = db();
        let now = Utc::now();
        let s = Scope::Default;
        let a = actor("a");
        let id = create_task(&c, &s, &a, &body(json!({"title": "t"})), now)
            .unwrap()
            .task
            .id;
        let e = transition(&c, &s, id, Action::Complete, &a, &Map::new(), now).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(m) if m.contains("pending")));
        assert!(transition(&c, &s, id, Action::Reopen, &a, &Map::new(), now).is_err());
        claim(&c, &s, id, &a, &Map::new(), now).unwrap();
        assert!(transition(&c, &s, id, Action::Reject, &a, &Map::new(), now).is_err());
        let out = json!([{"sha256": "00"}, 3]);
        let t = transition(
            &c,
            &s,
            id,
            Action::Complete,
            &a,
            &body(json!({"outputs": out})),
            now,
        )
        .unwrap()
        .task;
        assert_eq!(Value::Array(t.outputs.clone()), out);
        assert_eq!(stats(&c, now).unwrap().completed_count, 1);
        let t = transition(
            &c,
            &s,
            id,
            Action::Reopen,
            &a,
            &body(json!({"reason": "again"})),
            now,
        )
        .unwrap()
        .task;
        assert_eq!(
            (t.status, t.reason.as_deref()),
            (TaskStatus::Pending, Some("again"))
        );
        let t = transition(&c, &s, id, Action::Cancel, &a, &Map::new(), now)
            .unwrap()
            .task;
        assert_eq!(t.status, TaskStatus::Cancelled);
        let e =
            update_task(&c, &s, id, &a, &body(json!({"status": "in_progress"})), now).unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)));
    }

    #[test]
    fn list_filters_and_search() {
        let c = db();
        let now = Utc::now();
        let s = Scope::Default;
        for i in 0..5 {
            let b = json!({"title": format!("offer {i}"), "channel": if i % 2 == 0 {"even"} else {"odd"},
                "priority": i + 1, "description": if i == 3 {"has 50%_off"} else {"plain"}});
            create_task(
                &c,
                &s,
                &actor("a"),
                &body(b),
                now + chrono::Duration::seconds(i),
            )
            .unwrap();
        }
        let q = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            list_tasks(&c, &s, &m)
        };
        let (all, n) = q(&[]).unwrap();
        assert_eq!(n, 5);
        assert_eq!(all[0].title, "offer 4", "newest first");
        assert_eq!(q(&[("channel", "even")]).unwrap().1, 3);
        assert_eq!(
            q(&[("min_priority", "2"), ("max_priority", "3")])
                .unwrap()
                .1,
            2
        );
        assert_eq!(q(&[("search", "50%_")]).unwrap().1, 1);
        assert_eq!(q(&[("search", "OFFER 2")]).unwrap().1, 1);
        let (page, n) = q(&[
            ("limit", "2"),
            ("offset", "1"),
            ("sort_by", "priority"),
            ("sort_dir", "asc"),
        ])
        .unwrap();
        assert_eq!((n, page.len(), page[0].priority), (5, 2, 2));
        let after = format_timestamp(&(now + chrono::Duration::seconds(2)));
        assert_eq!(q(&[("created_after", &after)]).unwrap().1, 2);
        assert_eq!(
            q(&[("updated_after", &after), ("unknown", "x")]).unwrap().1,
            2
        );
        assert!(q(&[("status", "bogus")]).is_err());
        assert!(q(&[("limit", "x")]).is_err());
        assert!(q(&[("updated_after", "yesterday")]).is_err());
        assert!(q(&[("sort_by", "id; DROP TABLE tasks")]).is_err());
    }

    #[test]
    fn orgs_and_projects() {
        let c = db();
        let now = Utc::now();
        assert_eq!(list_orgs(&c).unwrap().len(), 1);
        create_org(&c, &body(json!({"slug": "acme", "name": "Acme"})), now).unwrap();
        assert!(matches!(
            create_org(&c, &body(json!({"slug": "acme"})), now),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            create_org(&c, &body(json!({"slug": "a/b"})), now),
            Err(StoreError::BadRequest(_))
        ));
        create_project(
            &c,
            "acme",
            &body(json!({"slug": "web", "name": "Web"})),
            now,
        )
        .unwrap();
        let scope = Scope::Named {
            org: "acme".into(),
            project: "web".into(),
        };
        let t = create_task(&c, &scope, &actor("a"), &body(json!({"title": "t"})), now)
            .unwrap()
            .task;
        // not visible unscoped
        assert!(matches!(
            get_task(&c, &Scope::Default, t.id),
            Err(StoreError::NotFound(_))
        ));
        let p = list_projects(&c, "acme").unwrap();
        assert_eq!(p[0]["pending_count"], 1);
        let p = update_project(&c, "acme", "web", &body(json!({"slug": "site"})), now).unwrap();
        assert_eq!(p["slug"], "site");
        let o = update_org(&c, "acme", &body(json!({"slug": "acme2"})), now).unwrap();
        assert_eq!(o["slug"], "acme2");
        assert!(get_project(&c, "acme2", "site").is_ok());
    }

    #[test]
    fn messages_roundtrip() {
        let c = db();
        let now = Utc::now();
        let s = Scope::Default;
        let id = create_task(&c, &s, &actor("a"), &body(json!({"title": "t"})), now)
            .unwrap()
            .task
            .id;
        let (m, ev) = post_message(
            &c,
            &s,
            id,
            &actor("b"),
            &body(json!({"parts": [{"content": "hi"}]})),
            now,
        )
        .unwrap();
        assert_eq!(m.parts[0].part_type, "text");
        assert!(ev[0].frame().contains("task.message"));
        assert_eq!(list_messages(&c, &s, id).unwrap(), vec![m]);
        for b in [
            json!({}),
            json!({"parts": []}),
            json!({"parts": ["x"]}),
            json!({"parts": [{"content": 5}]}),
        ] {
            assert!(matches!(
                post_message(&c, &s, id, &actor("b"), &body(b), now),
                Err(StoreError::BadRequest(_))
            ));
        }
        assert!(get_task(&c, &s, id).unwrap().messages.unwrap().len() == 1);
    }
}
