//! The ATS data model: tasks, messages, stats, events, and the request bodies.
//!
//! Decoding is tolerant (unknown fields ignored, `null` read as "absent", ids as numbers or
//! numeric strings); encoding always writes every task field, as a compatible hub must.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A task id: ATS ids are integers.
pub type TaskId = i64;

/// Default task priority (ATS: 1–10, higher is more urgent).
pub const DEFAULT_PRIORITY: i64 = 5;

/// Lowest allowed task priority.
pub const MIN_PRIORITY: i64 = 1;

/// Highest allowed task priority.
pub const MAX_PRIORITY: i64 = 10;

/// Formats a timestamp the way ATS does: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp (any offset) into UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Serde helpers for ATS timestamps.
pub(crate) mod ts {
    use super::*;
    use serde::Serializer;

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse_timestamp(&s).ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {s:?}")))
    }

    /// The optional form.
    pub(crate) mod opt {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format_timestamp(t)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            let v = Option::<String>::deserialize(d)?;
            match v {
                None => Ok(None),
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => parse_timestamp(&s)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom(format!("bad timestamp {s:?}"))),
            }
        }
    }
}

/// Reads `null` as the type's default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reads an id given as a JSON number or a string of digits.
fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(i64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("id is not an integer: {s:?}"))),
    }
}

fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(i64),
        S(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::N(n)) => Ok(Some(n)),
        Some(Raw::S(s)) => Ok(s.trim().parse().ok()),
    }
}

fn default_priority() -> i64 {
    DEFAULT_PRIORITY
}

fn default_task_type() -> String {
    "task".to_owned()
}

fn default_part_type() -> String {
    "text".to_owned()
}

/// The six task statuses of ATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskStatus {
    /// Waiting for someone to claim it.
    Pending,
    /// Claimed; the assignee holds a lease.
    InProgress,
    /// Finished successfully.
    Completed,
    /// Withdrawn.
    Cancelled,
    /// Finished unsuccessfully.
    Failed,
    /// Declined.
    Rejected,
    /// A status this client does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl TaskStatus {
    /// The six known statuses, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::InProgress,
        Self::Completed,
        Self::Cancelled,
        Self::Failed,
        Self::Rejected,
    ];

    /// The wire name (`in_progress`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
            Self::Unknown => "unknown",
        }
    }

    /// Parses a known wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed, cancelled, failed or rejected.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Cancelled | Self::Failed | Self::Rejected
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is acting: sent as `X-Actor-*` headers (HTTP) and query parameters (WebSocket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `human`, `agent` or `system` (not validated).
    pub actor_type: String,
    /// Stable id, e.g. `agent-b`.
    pub id: String,
    /// Display name.
    pub name: String,
}

impl Actor {
    /// An actor of type `agent` whose name is its id.
    pub fn agent(id: impl Into<String>) -> Self {
        let id = id.into();
        Self {
            actor_type: "agent".to_owned(),
            name: id.clone(),
            id,
        }
    }
}

/// One ATS task, as the server returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Integer id.
    #[serde(deserialize_with = "de_id")]
    pub id: TaskId,
    /// Human title.
    #[serde(default, deserialize_with = "null_default")]
    pub title: String,
    /// Human description.
    #[serde(default)]
    pub description: Option<String>,
    /// Lifecycle status.
    pub status: TaskStatus,
    /// 1–10, higher is more urgent.
    #[serde(default = "default_priority")]
    pub priority: i64,
    /// Free-form type (`file_offer` for ats-p2p offers).
    #[serde(rename = "type", default = "default_task_type")]
    pub task_type: String,
    /// Free-form channel.
    #[serde(default, deserialize_with = "null_default")]
    pub channel: String,
    /// Arbitrary JSON, normally an object.
    #[serde(default)]
    pub payload: Value,
    /// Results given at completion.
    #[serde(default, deserialize_with = "null_default")]
    pub outputs: Vec<Value>,
    /// Creating actor's type.
    #[serde(default)]
    pub source_type: Option<String>,
    /// Creating actor's id.
    #[serde(default)]
    pub source_id: Option<String>,
    /// Creating actor's name.
    #[serde(default)]
    pub source_name: Option<String>,
    /// Claiming actor's type.
    #[serde(default)]
    pub assignee_type: Option<String>,
    /// Claiming actor's id.
    #[serde(default)]
    pub assignee_id: Option<String>,
    /// Claiming actor's name.
    #[serde(default)]
    pub assignee_name: Option<String>,
    /// When the current claim lapses.
    #[serde(default, with = "ts::opt")]
    pub lease_expires: Option<DateTime<Utc>>,
    /// Creation time.
    #[serde(with = "ts")]
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    #[serde(with = "ts")]
    pub updated_at: DateTime<Utc>,
    /// The project the task belongs to.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub project_id: Option<i64>,
    /// Reason given with the last fail / reject / reopen (hub extension; absent on ATS).
    #[serde(default)]
    pub reason: Option<String>,
    /// Messages, when the server includes them (`GET /tasks/{id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
}

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// `text` by default.
    #[serde(rename = "type", default = "default_part_type")]
    pub part_type: String,
    /// The text (always a string with the ATS client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A URL, for non-text parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Structured data, for non-text parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl Part {
    /// A `text` part.
    pub fn text(content: impl Into<String>) -> Self {
        Self {
            part_type: default_part_type(),
            content: Some(content.into()),
            url: None,
            data: None,
        }
    }
}

/// A message posted on a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Integer id.
    #[serde(deserialize_with = "de_id")]
    pub id: i64,
    /// The task it belongs to.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub task_id: Option<TaskId>,
    /// Author type.
    #[serde(default)]
    pub actor_type: Option<String>,
    /// Author id.
    #[serde(default)]
    pub actor_id: Option<String>,
    /// Author name.
    #[serde(default)]
    pub actor_name: Option<String>,
    /// The parts.
    #[serde(default, deserialize_with = "null_default")]
    pub parts: Vec<Part>,
    /// Creation time.
    #[serde(with = "ts")]
    pub created_at: DateTime<Utc>,
}

/// Body of `POST /tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// Required title.
    pub title: String,
    /// Type; the server defaults to `task`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// Channel; the server defaults to `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Priority 1–10; the server defaults to 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// Description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

impl NewTask {
    /// A task with only a title; everything else takes the server's default.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            task_type: None,
            channel: None,
            priority: None,
            description: None,
            payload: None,
        }
    }
}

/// Body of `PATCH /tasks/{id}`: only the fields set are changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// New title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// New status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// New type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
    /// New channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// New payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// Sort keys of `GET /tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// By creation time.
    CreatedAt,
    /// By last change.
    UpdatedAt,
    /// By priority.
    Priority,
    /// By title.
    Title,
}

impl SortBy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::Priority => "priority",
            Self::Title => "title",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::CreatedAt,
            Self::UpdatedAt,
            Self::Priority,
            Self::Title,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Sort direction of `GET /tasks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDir {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

impl SortDir {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Asc => "asc",
            Self::Desc => "desc",
        }
    }
}

/// Filters of `GET /tasks`, combined with AND. `Default` means "no filter" (note: unlike the
/// `ats` CLI, this client does not add `status=pending` by itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// One status.
    pub status: Option<TaskStatus>,
    /// Exact type.
    pub task_type: Option<String>,
    /// Exact channel.
    pub channel: Option<String>,
    /// The claiming actor's id.
    pub assignee_id: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// Page offset.
    pub offset: Option<u32>,
    /// Created strictly after.
    pub created_after: Option<DateTime<Utc>>,
    /// Changed strictly after.
    pub updated_after: Option<DateTime<Utc>>,
    /// Exact priority.
    pub priority: Option<i64>,
    /// Lowest priority.
    pub min_priority: Option<i64>,
    /// Highest priority.
    pub max_priority: Option<i64>,
    /// Free text over title and description.
    pub search: Option<String>,
    /// Sort key.
    pub sort_by: Option<SortBy>,
    /// Sort direction.
    pub sort_dir: Option<SortDir>,
    /// Project id.
    pub project_id: Option<i64>,
}

impl ListQuery {
    /// The query string pairs, in a stable order.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = self.status {
            q.push(("status", s.as_str().to_owned()));
        }
        let strings = [
            ("type", &self.task_type),
            ("channel", &self.channel),
            ("assignee_id", &self.assignee_id),
            ("search", &self.search),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        let numbers = [
            ("limit", self.limit.map(i64::from)),
            ("offset", self.offset.map(i64::from)),
            ("priority", self.priority),
            ("min_priority", self.min_priority),
            ("max_priority", self.max_priority),
            ("project_id", self.project_id),
        ];
        for (k, v) in numbers {
            if let Some(v) = v {
                q.push((k, v.to_string()));
            }
        }
        if let Some(t) = &self.created_after {
            q.push(("created_after", format_timestamp(t)));
        }
        if let Some(t) = &self.updated_after {
            q.push(("updated_after", format_timestamp(t)));
        }
        if let Some(s) = self.sort_by {
            q.push(("sort_by", s.as_str().to_owned()));
        }
        if let Some(d) = self.sort_dir {
            q.push(("sort_dir", d.as_str().to_owned()));
        }
        q
    }
}

/// A page of `GET /tasks`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskList {
    /// The tasks of this page.
    pub tasks: Vec<Task>,
    /// Total matches before paging (the page length when the server does not say).
    pub count: u64,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when healthy.
    #[serde(default, deserialize_with = "null_default")]
    pub status: String,
    /// The server's clock.
    #[serde(default, with = "ts::opt")]
    pub timestamp: Option<DateTime<Utc>>,
}

/// Recent activity counters of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentStats {
    /// Created in the last 24 hours.
    #[serde(default)]
    pub created_24h: u64,
    /// Completed in the last 24 hours.
    #[serde(default)]
    pub completed_24h: u64,
    /// Created in the last 7 days.
    #[serde(default)]
    pub created_7d: u64,
    /// Completed in the last 7 days.
    #[serde(default)]
    pub completed_7d: u64,
}

/// `GET /tasks/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// All tasks.
    #[serde(default)]
    pub total: u64,
    /// Count per status (all six present on the hub).
    #[serde(default)]
    pub by_status: BTreeMap<String, u64>,
    /// Count per channel.
    #[serde(default)]
    pub by_channel: BTreeMap<String, u64>,
    /// Mean seconds from creation to completion, over completed tasks.
    #[serde(default)]
    pub avg_completion_seconds: Option<f64>,
    /// Completed tasks.
    #[serde(default)]
    pub completed_count: u64,
    /// Recent activity.
    #[serde(default)]
    pub recent: RecentStats,
}

/// The kind of a task event (the `type` of a WebSocket frame).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// `task.created`
    Created,
    /// `task.claimed` (also sent when the assignee renews its lease)
    Claimed,
    /// `task.updated`
    Updated,
    /// `task.completed`
    Completed,
    /// `task.cancelled`
    Cancelled,
    /// `task.failed`
    Failed,
    /// `task.rejected`
    Rejected,
    /// `task.reopened`
    Reopened,
    /// `task.message`
    Message,
    /// `task.lease_expired`
    LeaseExpired,
    /// Any other event name.
    Other(String),
}

impl EventKind {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "task.created",
            Self::Claimed => "task.claimed",
            Self::Updated => "task.updated",
            Self::Completed => "task.completed",
            Self::Cancelled => "task.cancelled",
            Self::Failed => "task.failed",
            Self::Rejected => "task.rejected",
            Self::Reopened => "task.reopened",
            Self::Message => "task.message",
            Self::LeaseExpired => "task.lease_expired",
            Self::Other(s) => s,
        }
    }

    /// Parses a wire name (never fails: unknown names become [`EventKind::Other`]).
    pub fn parse(s: &str) -> Self {
        match s {
            "task.created" => Self::Created,
            "task.claimed" => Self::Claimed,
            "task.updated" => Self::Updated,
            "task.completed" => Self::Completed,
            "task.cancelled" => Self::Cancelled,
            "task.failed" => Self::Failed,
            "task.rejected" => Self::Rejected,
            "task.reopened" => Self::Reopened,
            "task.message" => Self::Message,
            "task.lease_expired" => Self::LeaseExpired,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The event that best describes a task found in this status by a catch-up list.
    pub fn for_status(status: TaskStatus, task: &Task) -> Self {
        match status {
            TaskStatus::Pending if task.created_at == task.updated_at => Self::Created,
            TaskStatus::Pending => Self::Updated,
            TaskStatus::InProgress => Self::Claimed,
            TaskStatus::Completed => Self::Completed,
            TaskStatus::Cancelled => Self::Cancelled,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Rejected => Self::Rejected,
            TaskStatus::Unknown => Self::Updated,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `data` object of an event frame.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// The full task after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The message, for `task.message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
}

/// One WebSocket event frame, as the hub sends it (ats-api.md section 9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFrame {
    /// Event name (`task.created`, ...).
    #[serde(rename = "type")]
    pub event_type: String,
    /// Event id (increasing on the hub).
    #[serde(default, deserialize_with = "de_opt_id")]
    pub id: Option<i64>,
    /// The task concerned.
    #[serde(default, deserialize_with = "de_opt_id")]
    pub task_id: Option<TaskId>,
    /// The task's channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// Acting actor's type.
    #[serde(default)]
    pub actor_type: Option<String>,
    /// Acting actor's id.
    #[serde(default)]
    pub actor_id: Option<String>,
    /// Acting actor's name.
    #[serde(default)]
    pub actor_name: Option<String>,
    /// When it happened.
    #[serde(default, with = "ts::opt")]
    pub created_at: Option<DateTime<Utc>>,
    /// The task (and message) after the change.
    #[serde(default)]
    pub data: Option<EventData>,
    /// Some servers put the task at the top level instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
}
