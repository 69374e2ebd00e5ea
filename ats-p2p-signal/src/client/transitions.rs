//! Claims and status actions: `claim` and `renew_claim` (never repeated once the server may
//! have seen them; a 409 becomes a typed conflict) and `complete`, `fail`, `reject`, `cancel`,
//! `reopen` (repeated; a repeat that meets the target state counts as success).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::http::Retry;
use super::{Client, RETRY_BASE_DELAY, RETRY_MAX_DELAY, backoff};
use crate::error::SignalError;
use crate::types::{Task, TaskId, TaskStatus};

impl Client {
    /// `POST /tasks/{id}/claim` with a lease (`None`: the server default, 60 s).
    ///
    /// A 409 (held by someone else, or not pending) is [`SignalError::ClaimConflict`]. Never
    /// repeated once the request may have reached the server.
    pub async fn claim(&self, id: TaskId, lease: Option<Duration>) -> Result<Task, SignalError> {
        self.claim_inner(id, lease).await.map_err(|e| match e {
            SignalError::Http {
                status: 409,
                message,
            } => SignalError::ClaimConflict {
                task_id: id,
                message,
            },
            other => other,
        })
    }

    /// Renews our own claim (a claim by the current assignee extends its lease).
    ///
    /// A 409 means the lease lapsed and the task moved on: [`SignalError::ClaimLost`].
    pub async fn renew_claim(&self, id: TaskId, lease: Duration) -> Result<Task, SignalError> {
        self.claim_inner(id, Some(lease))
            .await
            .map_err(|e| match e {
                SignalError::Http {
                    status: 409,
                    message,
                } => SignalError::ClaimLost {
                    task_id: id,
                    message,
                },
                other => other,
            })
    }

    async fn claim_inner(&self, id: TaskId, lease: Option<Duration>) -> Result<Task, SignalError> {
        let body = match lease {
            Some(l) => {
                json!({ "lease_duration": u64::try_from(l.as_millis()).unwrap_or(u64::MAX) })
            }
            None => json!({}),
        };
        let url = self.task_url(&[&id.to_string(), "claim"]);
        let v = self
            .send(Method::POST, url, &[], Some(&body), Retry::ConnectOnly)
            .await?;
        self.task_or_get(id, v).await
    }

    /// `POST /tasks/{id}/complete` with outputs (stored as given).
    pub async fn complete(&self, id: TaskId, outputs: Vec<Value>) -> Result<Task, SignalError> {
        let body = json!({ "outputs": outputs });
        self.transition(id, "complete", Some(body), TaskStatus::Completed)
            .await
    }

    /// `POST /tasks/{id}/fail` with an optional reason.
    pub async fn fail(&self, id: TaskId, reason: Option<&str>) -> Result<Task, SignalError> {
        self.transition(id, "fail", Some(reason_body(reason)), TaskStatus::Failed)
            .await
    }

    /// `POST /tasks/{id}/reject` with an optional reason.
    pub async fn reject(&self, id: TaskId, reason: Option<&str>) -> Result<Task, SignalError> {
        self.transition(
            id,
            "reject",
            Some(reason_body(reason)),
            TaskStatus::Rejected,
        )
        .await
    }

    /// `POST /tasks/{id}/cancel` (sent without a body, like the `ats` CLI).
    pub async fn cancel(&self, id: TaskId) -> Result<Task, SignalError> {
        self.transition(id, "cancel", None, TaskStatus::Cancelled)
            .await
    }

    /// `POST /tasks/{id}/reopen` with an optional reason.
    pub async fn reopen(&self, id: TaskId, reason: Option<&str>) -> Result<Task, SignalError> {
        self.transition(id, "reopen", Some(reason_body(reason)), TaskStatus::Pending)
            .await
    }

    /// A state transition; a repeated attempt that meets 409 succeeds if the task is already in
    /// `target` (the first attempt went through but its answer was lost).
    async fn transition(
        &self,
        id: TaskId,
        action: &str,
        body: Option<Value>,
        target: TaskStatus,
    ) -> Result<Task, SignalError> {
        let url = self.task_url(&[&id.to_string(), action]);
        let mut attempt = 0u32;
        let mut delays = backoff(RETRY_BASE_DELAY, RETRY_MAX_DELAY);
        let mut repeated = false;
        loop {
            match self.attempt(&Method::POST, &url, &[], body.as_ref()).await {
                Ok(v) => return self.task_or_get(id, v).await,
                Err(SignalError::Http {
                    status: 409,
                    message,
                }) if repeated => {
                    let task = self.get_task(id).await?;
                    if task.status == target {
                        return Ok(task);
                    }
                    return Err(SignalError::Http {
                        status: 409,
                        message,
                    });
                }
                Err(e) if e.is_transient() && attempt < self.inner.max_retries => {
                    // A refused connection never reached the server; anything else may have.
                    if !matches!(e, SignalError::Connect { .. }) {
                        repeated = true;
                    }
                    let delay = delays.next().unwrap_or(RETRY_MAX_DELAY);
                    tracing::debug!(%url, %e, ?delay, "retrying ATS transition");
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn reason_body(reason: Option<&str>) -> Value {
    match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    }
}
