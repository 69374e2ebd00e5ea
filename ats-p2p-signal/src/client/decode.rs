//! Reading ATS answers: wrapped (`{"task": ...}`) or bare objects, unknown fields ignored, and
//! the server's own words for an error.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::SignalError;
use crate::types::{Task, TaskList};

/// Longest excerpt of a non-JSON error body quoted in [`SignalError::Http`].
const ERROR_EXCERPT_CHARS: usize = 200;

/// The message of an error answer: `error`, else `message`, else an excerpt, else `HTTP <status>`.
pub(super) fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for key in ["error", "message"] {
            match v.get(key) {
                Some(Value::String(s)) if !s.is_empty() => return s.clone(),
                Some(Value::Object(o)) => {
                    if let Some(Value::String(s)) = o.get("message") {
                        return s.clone();
                    }
                    return Value::Object(o.clone()).to_string();
                }
                _ => {}
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        text.chars().take(ERROR_EXCERPT_CHARS).collect()
    }
}

pub(super) fn decode<T: DeserializeOwned>(what: &'static str, v: Value) -> Result<T, SignalError> {
    serde_json::from_value(v).map_err(|e| SignalError::Decode {
        what,
        reason: e.to_string(),
    })
}

/// Takes `key` out of an envelope object, or returns the value itself (bare form).
pub(super) fn unwrap_envelope(mut v: Value, key: &str) -> Value {
    if let Some(obj) = v.as_object_mut()
        && let Some(inner) = obj.remove(key)
    {
        if inner.is_object() || inner.is_array() {
            return inner;
        }
        obj.insert(key.to_owned(), inner);
    }
    v
}

/// Decodes one task, wrapped as `{"task": ...}` or bare.
pub(super) fn decode_task(v: Value) -> Result<Task, SignalError> {
    decode("task", unwrap_envelope(v, "task"))
}

/// Decodes a task list, wrapped as `{"tasks": [...], "count": N}` or a bare array.
pub(super) fn decode_task_list(v: Value) -> Result<TaskList, SignalError> {
    let (tasks, count) = match v {
        Value::Array(a) => (a, None),
        Value::Object(mut o) => {
            let count = o.get("count").and_then(Value::as_u64);
            match o.remove("tasks") {
                Some(Value::Array(a)) => (a, count),
                Some(Value::Null) | None => (Vec::new(), count),
                Some(_) => {
                    return Err(SignalError::Decode {
                        what: "task list",
                        reason: "`tasks` is not an array".to_owned(),
                    });
                }
            }
        }
        _ => {
            return Err(SignalError::Decode {
                what: "task list",
                reason: "neither an array nor an object".to_owned(),
            });
        }
    };
    let tasks: Vec<Task> = decode("task list", Value::Array(tasks))?;
    let len = u64::try_from(tasks.len()).unwrap_or(u64::MAX);
    let count = match count {
        Some(c) if c > 0 => c,
        _ => len,
    };
    Ok(TaskList { tasks, count })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_message_prefers_server_text() {
        let s = StatusCode::CONFLICT;
        assert_eq!(
            error_message(s, br#"{"error":"task is completed"}"#),
            "task is completed"
        );
        assert_eq!(error_message(s, br#"{"message":"nope"}"#), "nope");
        assert_eq!(error_message(s, b""), "HTTP 409");
        assert_eq!(error_message(s, b"plain text"), "plain text");
    }

    #[test]
    fn envelopes_wrapped_or_bare() {
        let task = json!({"id": "7", "title": "t", "status": "pending", "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00.5+01:00", "extra": 1, "outputs": null});
        let a = decode_task(json!({ "task": task.clone() })).unwrap();
        let b = decode_task(task.clone()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.id, 7);
        assert_eq!(a.task_type, "task");
        assert!(a.outputs.is_empty());
        let l = decode_task_list(json!([task.clone()])).unwrap();
        assert_eq!(l.count, 1);
        let l = decode_task_list(json!({"tasks": [task.clone(), task], "count": 9})).unwrap();
        assert_eq!((l.tasks.len(), l.count), (2, 9));
        assert!(decode_task(json!({"id": 1})).is_err());
    }
}
