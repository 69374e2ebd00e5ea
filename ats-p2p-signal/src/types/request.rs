//! What is sent to ATS: the bodies of `POST /tasks` and `PATCH /tasks/{id}`, and the query of
//! `GET /tasks`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{TaskStatus, format_timestamp};

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
