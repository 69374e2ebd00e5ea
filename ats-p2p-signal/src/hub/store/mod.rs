//! The hub's logic: plain functions over a SQLite connection, testable without HTTP.
//!
//! Every mutating function returns the changed task and the [`HubEvent`]s to broadcast once the
//! caller's transaction commits. Time comes in as an argument.
//!
//! Task logic is in `tasks`, organizations and projects in `orgs`; all re-exported here.

pub mod migrations;
mod orgs;
mod tasks;
#[cfg(test)]
mod tests;

pub use orgs::*;
pub use tasks::*;

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
