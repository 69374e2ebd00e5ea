//! What a watch has delivered, remembered in bounded memory, so that each task state and each
//! event id reaches the consumer once whether it came live or by catch-up.

use std::collections::{HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};

use crate::types::{Task, TaskId, TaskStatus};

/// Task states remembered for deduplication.
const DEDUPE_TASKS: usize = 16_384;

/// Event ids remembered for deduplication.
const DEDUPE_EVENTS: usize = 16_384;

/// Bounded memory of what was delivered.
#[derive(Debug, Default)]
pub(super) struct Dedupe {
    states: HashMap<TaskId, (DateTime<Utc>, TaskStatus)>,
    state_order: VecDeque<TaskId>,
    events: HashSet<i64>,
    event_order: VecDeque<i64>,
}

impl Dedupe {
    /// True if this task state is new (and remembers it).
    pub(super) fn fresh_state(&mut self, task: &Task) -> bool {
        let key = (task.updated_at, task.status);
        match self.states.get_mut(&task.id) {
            Some(last) => {
                if *last == key || task.updated_at < last.0 {
                    return false;
                }
                *last = key;
                true
            }
            None => {
                if self.state_order.len() >= DEDUPE_TASKS
                    && let Some(old) = self.state_order.pop_front()
                {
                    self.states.remove(&old);
                }
                self.states.insert(task.id, key);
                self.state_order.push_back(task.id);
                true
            }
        }
    }

    /// True if this event id is new (and remembers it).
    pub(super) fn fresh_event(&mut self, id: i64) -> bool {
        if !self.events.insert(id) {
            return false;
        }
        if self.event_order.len() >= DEDUPE_EVENTS
            && let Some(old) = self.event_order.pop_front()
        {
            self.events.remove(&old);
        }
        self.event_order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: TaskId, secs: i64, status: TaskStatus) -> Task {
        let t = DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap();
        serde_json::from_value(json!({
            "id": id, "status": status.as_str(),
            "created_at": crate::types::format_timestamp(&t),
            "updated_at": crate::types::format_timestamp(&t),
        }))
        .unwrap()
    }

    #[test]
    fn dedupe_states_and_events() {
        let mut d = Dedupe::default();
        assert!(d.fresh_state(&task(1, 0, TaskStatus::Pending)));
        assert!(
            !d.fresh_state(&task(1, 0, TaskStatus::Pending)),
            "same state twice"
        );
        assert!(
            d.fresh_state(&task(1, 0, TaskStatus::InProgress)),
            "same instant, new status"
        );
        assert!(d.fresh_state(&task(1, 5, TaskStatus::Completed)));
        assert!(
            !d.fresh_state(&task(1, 3, TaskStatus::InProgress)),
            "older than delivered"
        );
        assert!(d.fresh_state(&task(2, 0, TaskStatus::Pending)));
        assert!(d.fresh_event(10));
        assert!(!d.fresh_event(10));
        for id in 0..i64::try_from(DEDUPE_EVENTS).unwrap() + 10 {
            d.fresh_event(1000 + id);
        }
        assert!(d.events.len() <= DEDUPE_EVENTS);
        assert!(d.fresh_event(10), "forgotten after eviction");
        for id in 0..i64::try_from(DEDUPE_TASKS).unwrap() + 5 {
            d.fresh_state(&task(100 + id, 0, TaskStatus::Pending));
        }
        assert!(d.states.len() <= DEDUPE_TASKS && d.state_order.len() <= DEDUPE_TASKS);
    }
}
