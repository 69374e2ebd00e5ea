//! Task events: their kinds and the WebSocket frames that carry them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Message, Task, TaskId, TaskStatus, de_opt_id, ts};

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
