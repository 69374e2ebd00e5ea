//! Typed calls that create, read and update tasks and their messages (and the server's
//! health and stats), each with the retry rule that is safe for it.

use reqwest::Method;
use serde_json::{Value, json};

use super::Client;
use super::decode::{decode, decode_task, decode_task_list, unwrap_envelope};
use super::http::{Retry, join};
use crate::error::SignalError;
use crate::types::{
    Health, ListQuery, Message, NewTask, Part, Stats, Task, TaskId, TaskList, TaskUpdate,
};

impl Client {
    /// `GET /health`.
    pub async fn health(&self) -> Result<Health, SignalError> {
        let url = join(&self.inner.base, &["health"]);
        let v = self.send(Method::GET, url, &[], None, Retry::Safe).await?;
        decode("health", v)
    }

    /// `GET /tasks/stats` (never project-scoped).
    pub async fn stats(&self) -> Result<Stats, SignalError> {
        let url = join(&self.inner.base, &["tasks", "stats"]);
        let v = self.send(Method::GET, url, &[], None, Retry::Safe).await?;
        decode("stats", unwrap_envelope(v, "stats"))
    }

    /// `POST /tasks`: creates a task (retried only if the server was never reached).
    pub async fn create_task(&self, task: &NewTask) -> Result<Task, SignalError> {
        let body = serde_json::to_value(task).map_err(|e| SignalError::Decode {
            what: "new task",
            reason: e.to_string(),
        })?;
        let url = self.task_url(&[]);
        let v = self
            .send(Method::POST, url, &[], Some(&body), Retry::ConnectOnly)
            .await?;
        decode_task(v)
    }

    /// `GET /tasks/{id}`.
    pub async fn get_task(&self, id: TaskId) -> Result<Task, SignalError> {
        let url = self.task_url(&[&id.to_string()]);
        let v = self.send(Method::GET, url, &[], None, Retry::Safe).await?;
        decode_task(v)
    }

    /// `GET /tasks` with filters. Unlike the `ats` CLI, no status filter is added.
    pub async fn list_tasks(&self, query: &ListQuery) -> Result<TaskList, SignalError> {
        let url = self.task_url(&[]);
        let pairs = query.to_pairs();
        let v = self
            .send(Method::GET, url, &pairs, None, Retry::Safe)
            .await?;
        decode_task_list(v)
    }

    /// `PATCH /tasks/{id}`.
    pub async fn update_task(&self, id: TaskId, update: &TaskUpdate) -> Result<Task, SignalError> {
        let body = serde_json::to_value(update).map_err(|e| SignalError::Decode {
            what: "task update",
            reason: e.to_string(),
        })?;
        let url = self.task_url(&[&id.to_string()]);
        let v = self
            .send(Method::PATCH, url, &[], Some(&body), Retry::Safe)
            .await?;
        self.task_or_get(id, v).await
    }

    /// The task in an answer, or a fresh `GET` when the server answered something else.
    pub(super) async fn task_or_get(&self, id: TaskId, v: Value) -> Result<Task, SignalError> {
        match decode_task(v) {
            Ok(t) => Ok(t),
            Err(_) => self.get_task(id).await,
        }
    }

    /// `POST /tasks/{id}/messages` with the given parts.
    pub async fn post_message(&self, id: TaskId, parts: Vec<Part>) -> Result<Message, SignalError> {
        let body = json!({ "parts": parts });
        let url = self.task_url(&[&id.to_string(), "messages"]);
        let v = self
            .send(Method::POST, url, &[], Some(&body), Retry::ConnectOnly)
            .await?;
        decode("message", unwrap_envelope(v, "message"))
    }

    /// Posts one `text` part, as `ats message add` does.
    pub async fn post_text(&self, id: TaskId, text: &str) -> Result<Message, SignalError> {
        self.post_message(id, vec![Part::text(text)]).await
    }

    /// `GET /tasks/{id}/messages`, oldest first.
    pub async fn list_messages(&self, id: TaskId) -> Result<Vec<Message>, SignalError> {
        let url = self.task_url(&[&id.to_string(), "messages"]);
        let v = self.send(Method::GET, url, &[], None, Retry::Safe).await?;
        match v {
            Value::Null => Ok(Vec::new()),
            v => decode("message list", unwrap_envelope(v, "messages")),
        }
    }
}
