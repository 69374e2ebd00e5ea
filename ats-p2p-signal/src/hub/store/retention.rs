//! What the hub forgets: finished tasks with their messages, and stored events past the
//! newest [`EVENTS_KEPT`].

use chrono::{DateTime, Utc};

use super::sql::{Sql, vals};
use super::*;

/// Deletes the finished tasks (completed, failed, rejected, cancelled) whose last change is
/// older than `before`, with their messages. Returns how many tasks were deleted.
pub fn prune_finished(conn: &dyn Sql, before: DateTime<Utc>) -> Result<usize, StoreError> {
    let ts = format_timestamp(&before);
    let finished = "status IN ('completed', 'failed', 'rejected', 'cancelled') AND updated_at < ?1";
    conn.execute(
        &format!("DELETE FROM messages WHERE task_id IN (SELECT id FROM tasks WHERE {finished})"),
        vals![ts.as_str()],
    )?;
    let n = conn.execute(
        &format!("DELETE FROM tasks WHERE {finished}"),
        vals![ts.as_str()],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Deletes stored events older than the newest [`EVENTS_KEPT`] (their ids stay unique).
pub fn prune_events(conn: &dyn Sql) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1",
        vals![EVENTS_KEPT],
    )?;
    Ok(())
}
