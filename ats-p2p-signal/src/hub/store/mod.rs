//! The hub's logic: plain functions over a SQLite connection, testable without HTTP.
//!
//! Every mutating function returns the changed task and the [`HubEvent`]s to broadcast once the
//! caller's transaction commits. Time comes in as an argument.
//!
//! Task logic is split by job: `tasks` (create, read, list, stats), `lifecycle` (claims, leases,
//! status actions, PATCH), `messages` (a task's messages) and `retention` (pruning); organizations
//! and projects are in `orgs`. All are re-exported here.

mod lifecycle;
mod messages;
pub mod migrations;
mod orgs;
mod retention;
pub mod sql;
mod tasks;
#[cfg(test)]
mod tests;

pub use lifecycle::*;
pub use messages::*;
pub use orgs::*;
pub use retention::*;
pub use tasks::*;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::{Map, Value, json};

use self::sql::{Dialect, Sql, SqlRow, query_opt, vals};

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

/// Most messages one task may hold (409 beyond).
pub const MAX_MESSAGES_PER_TASK: i64 = 1000;

/// Largest message: its parts serialized as JSON, in bytes (413 beyond).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Messages shown in `GET /tasks/{id}` (the newest; `message_count` says how many there are,
/// `GET /tasks/{id}/messages` lists them all).
pub const TASK_MESSAGES_SHOWN: i64 = 100;

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
    /// 500: the PostgreSQL database failed.
    #[error("database error: {}", postgres_message(.0))]
    Postgres(#[from] postgres::Error),
    /// 500: a column held a value of an unexpected type.
    #[error("database error: {0}")]
    Column(String),
    /// A database thread could not be started.
    #[error("cannot start a database thread: {0}")]
    Thread(#[from] std::io::Error),
    /// 500: the transaction could not be committed.
    #[error("database commit failed: {0}")]
    Commit(String),
    /// 413: one item exceeds a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// 500: the job failed unexpectedly (a contained panic on the database thread).
    #[error("internal error: the database job failed unexpectedly; retry")]
    JobLost,
    /// 503: the hub is shutting down.
    #[error("hub is shutting down")]
    Closed,
    /// The database was written by a newer hub: its schema is past this hub's migrations.
    #[error(
        "the database schema is at version {found}, newer than this hub knows ({known}); \
         run a newer ats-p2p hub"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The newest version this hub knows.
        known: i64,
    },
}

/// A PostgreSQL error with the server's message (its `Display` alone says only "db error").
fn postgres_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
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
        self.text.get_or_init(|| serialize_frame(&self.data))
    }

    /// The event name, channel, task type and text frame, without the task data (what the
    /// fan-out keeps while subscribers catch up).
    pub fn into_frame(self) -> (String, String, String, String) {
        let text = match self.text.into_inner() {
            Some(t) => t,
            None => serialize_frame(&self.data),
        };
        (self.event_type, self.channel, self.task_type, text)
    }
}

fn serialize_frame(frame: &EventFrame) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize an event frame");
        json!({ "type": "error", "error": "event not serializable" }).to_string()
    })
}

/// An event whose task carries a payload of `payload_bytes` (for fan-out tests).
#[cfg(test)]
pub(crate) fn test_event(
    event_type: &str,
    channel: &str,
    task_type: &str,
    payload_bytes: usize,
) -> HubEvent {
    let frame = EventFrame {
        event_type: event_type.to_owned(),
        id: Some(1),
        task_id: Some(1),
        channel: Some(channel.to_owned()),
        actor_type: None,
        actor_id: None,
        actor_name: None,
        created_at: None,
        data: Some(EventData {
            task: None,
            message: None,
        }),
        task: None,
    };
    HubEvent {
        event_type: event_type.to_owned(),
        channel: channel.to_owned(),
        task_type: task_type.to_owned(),
        data: frame,
        text: std::sync::OnceLock::from("x".repeat(payload_bytes)),
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

/// Opens (creating if needed) the database: WAL, schema, the `default/main` project.
pub fn open(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    init(&conn, Utc::now())?;
    Ok(conn)
}

/// Sets pragmas, brings the schema up to date ([`migrations`]) and creates the default project
/// (idempotent).
pub fn init(conn: &Connection, now: DateTime<Utc>) -> Result<(), StoreError> {
    // WAL: readers never block the writer. synchronous=FULL syncs the WAL at every commit, so
    // an acknowledged change survives a power loss, not only a process crash (the database
    // thread commits jobs in groups, which keeps that one fsync per group, not per request).
    let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    conn.execute_batch(
        // temp_store=MEMORY keeps the per-job savepoint journals off the disk.
        "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;
         PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16384;",
    )?;
    migrations::migrate(conn)?;
    create_default_project(conn, now)
}

/// Creates the `default/main` project unless it exists (both databases; idempotent, and safe
/// when several hubs start at once).
pub fn create_default_project(conn: &dyn Sql, now: DateTime<Utc>) -> Result<(), StoreError> {
    let ts = format_timestamp(&now);
    conn.execute(
        "INSERT INTO orgs (slug, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT DO NOTHING",
        vals![DEFAULT_ORG, "Default", ts.as_str()],
    )?;
    let org_id = sql::query_int(
        conn,
        "SELECT id FROM orgs WHERE slug = ?1",
        vals![DEFAULT_ORG],
    )?;
    conn.execute(
        "INSERT INTO projects (org_id, slug, name, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT DO NOTHING",
        vals![org_id, DEFAULT_PROJECT, "Main", ts],
    )?;
    Ok(())
}

/// The project id a scope addresses (404 when the org or project is unknown).
pub fn project_id(conn: &dyn Sql, scope: &Scope) -> Result<i64, StoreError> {
    let (org, project) = match scope {
        Scope::Default => (DEFAULT_ORG, DEFAULT_PROJECT),
        Scope::Named { org, project } => (org.as_str(), project.as_str()),
    };
    let row = query_opt(
        conn,
        "SELECT p.id FROM projects p JOIN orgs o ON o.id = p.org_id
         WHERE o.slug = ?1 AND p.slug = ?2",
        vals![org, project],
    )?;
    match row {
        Some(r) => r.int(0),
        None => Err(StoreError::NotFound(format!(
            "project {org}/{project} not found"
        ))),
    }
}

const TASK_COLS: &str = "id, project_id, title, description, status, priority, type, channel, \
     payload, outputs, source_type, source_id, source_name, assignee_type, assignee_id, \
     assignee_name, lease_expires, created_at, updated_at, reason";

fn ts_col(row: &SqlRow, idx: usize) -> Result<DateTime<Utc>, StoreError> {
    Ok(parse_timestamp(&row.text(idx)?).unwrap_or_default())
}

fn row_to_task(row: &SqlRow) -> Result<Task, StoreError> {
    let status = row.text(4)?;
    let payload = row.text(8)?;
    let outputs = row.text(9)?;
    let lease = row.opt_text(16)?;
    Ok(Task {
        id: row.int(0)?,
        project_id: Some(row.int(1)?),
        title: row.text(2)?,
        description: row.opt_text(3)?,
        status: TaskStatus::parse(&status).unwrap_or(TaskStatus::Unknown),
        priority: row.int(5)?,
        task_type: row.text(6)?,
        channel: row.text(7)?,
        payload: serde_json::from_str(&payload).unwrap_or_else(|_| json!({})),
        outputs: serde_json::from_str(&outputs).unwrap_or_default(),
        source_type: row.opt_text(10)?,
        source_id: row.opt_text(11)?,
        source_name: row.opt_text(12)?,
        assignee_type: row.opt_text(13)?,
        assignee_id: row.opt_text(14)?,
        assignee_name: row.opt_text(15)?,
        lease_expires: lease.as_deref().and_then(parse_timestamp),
        created_at: ts_col(row, 17)?,
        updated_at: ts_col(row, 18)?,
        reason: row.opt_text(19)?,
        messages: None,
    })
}

fn load_task(conn: &dyn Sql, id: TaskId) -> Result<Option<Task>, StoreError> {
    query_opt(
        conn,
        &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1"),
        vals![id],
    )?
    .map(|r| row_to_task(&r))
    .transpose()
}

/// Loads a task to change it: on PostgreSQL the row stays locked until the transaction ends,
/// so two hubs changing one task at once take turns (the second sees the first's change).
fn load_task_for_update(conn: &dyn Sql, id: TaskId) -> Result<Option<Task>, StoreError> {
    match conn.dialect() {
        Dialect::Sqlite => load_task(conn, id),
        Dialect::Postgres => query_opt(
            conn,
            &format!("SELECT {TASK_COLS} FROM tasks WHERE id = ?1 FOR UPDATE"),
            vals![id],
        )?
        .map(|r| row_to_task(&r))
        .transpose(),
    }
}

fn not_found(id: TaskId) -> StoreError {
    StoreError::NotFound(format!("task {id} not found"))
}

/// The task `id` in the scope's project.
fn task_in(conn: &dyn Sql, scope: &Scope, id: TaskId) -> Result<Task, StoreError> {
    let pid = project_id(conn, scope)?;
    match load_task(conn, id)? {
        Some(t) if t.project_id == Some(pid) => Ok(t),
        _ => Err(not_found(id)),
    }
}

/// The task `id` in the scope's project, locked for a change (see [`load_task_for_update`]).
fn task_in_for_update(conn: &dyn Sql, scope: &Scope, id: TaskId) -> Result<Task, StoreError> {
    let pid = project_id(conn, scope)?;
    match load_task_for_update(conn, id)? {
        Some(t) if t.project_id == Some(pid) => Ok(t),
        _ => Err(not_found(id)),
    }
}

/// Records an event and builds its frame. On PostgreSQL the frame is stored with it: every
/// hub instance reads the events table in id order and forwards them to its WebSockets.
fn event(
    conn: &dyn Sql,
    event_type: &str,
    task: &Task,
    actor: &HubActor,
    message: Option<Message>,
    now: DateTime<Utc>,
) -> Result<HubEvent, StoreError> {
    let ts = format_timestamp(&now);
    conn.order_events()?;
    let id = match conn.dialect() {
        Dialect::Sqlite => conn.insert(
            "INSERT INTO events (type, task_id, created_at) VALUES (?1, ?2, ?3)",
            vals![event_type, task.id, ts.as_str()],
        )?,
        Dialect::Postgres => sql::query_int(conn, "SELECT nextval('events_id_seq')", &[])?,
    };
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
    let ev = HubEvent {
        event_type: event_type.to_owned(),
        channel: task.channel.clone(),
        task_type: task.task_type.clone(),
        data: frame,
        text: std::sync::OnceLock::new(),
    };
    if conn.dialect() == Dialect::Postgres {
        conn.execute(
            "INSERT INTO events (id, type, task_id, channel, task_type, frame, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            vals![
                id,
                event_type,
                task.id,
                task.channel.as_str(),
                task.task_type.as_str(),
                ev.frame(),
                ts
            ],
        )?;
    }
    Ok(ev)
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

/// An optional integer query parameter (`limit`, `offset`, `project_id`, ...): absent or empty
/// is `None`, anything else must parse.
fn parse_int(
    params: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<i64>, StoreError> {
    match params.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| bad(format!("`{key}` must be an integer"))),
    }
}
