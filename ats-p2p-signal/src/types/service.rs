//! Answers about the service: health, stats, and a page of the task list.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Task, null_default, ts};

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
