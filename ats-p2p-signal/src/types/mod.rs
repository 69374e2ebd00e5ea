//! The ATS data model: tasks, messages, stats, events, and the request bodies.
//!
//! Decoding is tolerant (unknown fields ignored, `null` read as "absent", ids as numbers or
//! numeric strings); encoding always writes every task field, as a compatible hub must.
//!
//! This module holds the task itself (tasks, statuses, actors, messages); `request` the bodies
//! and queries sent to ATS, `service` health and stats, `event` the WebSocket event frames.

mod event;
mod request;
mod service;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

pub use self::event::{EventData, EventFrame, EventKind};
pub use self::request::{ListQuery, NewTask, SortBy, SortDir, TaskUpdate};
pub use self::service::{Health, RecentStats, Stats, TaskList};

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
