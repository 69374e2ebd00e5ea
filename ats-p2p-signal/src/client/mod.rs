//! The typed ATS HTTP client.
//!
//! One [`Client`] per actor: it sends the `X-Actor-*` identity headers and
//! `Content-Type: application/json` on every request, scopes task routes to an organization and
//! project when asked, decodes tolerantly (wrapped or bare objects, unknown fields ignored), and
//! reports precisely (the server's own `error` text, the HTTP status).
//!
//! Retries: reads (`GET`) and `PATCH` are repeated on connection errors, timeouts and 5xx with
//! exponential backoff. State transitions (`complete`, `fail`, ...) are repeated too, and a
//! repeat that meets "already in the target state" counts as success. `create`, `claim` and
//! `post_message` are repeated only when the connection could not be opened at all (the request
//! never reached the server), so a claim is never retried blindly.

mod decode;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use self::decode::{decode, decode_task, decode_task_list, error_message, unwrap_envelope};
use crate::auth::AccessToken;
use crate::error::SignalError;
use crate::types::{
    Actor, Health, ListQuery, Message, NewTask, Part, Stats, Task, TaskId, TaskList, TaskStatus,
    TaskUpdate,
};

/// First retry delay; doubled on every attempt (plus jitter: `client::backoff`).
pub const RETRY_BASE_DELAY: Duration = Duration::from_millis(100);

/// Longest retry delay before jitter.
pub const RETRY_MAX_DELAY: Duration = Duration::from_secs(2);

// The defaults of `crate::defaults`, under the names this module has always exported.
pub use crate::defaults::{
    ATS_URL as DEFAULT_ATS_URL, CONNECT_TIMEOUT, LEASE as DEFAULT_LEASE,
    MAX_RETRIES as DEFAULT_MAX_RETRIES, ORG as DEFAULT_ORG, PROJECT as DEFAULT_PROJECT,
    REQUEST_TIMEOUT as DEFAULT_REQUEST_TIMEOUT,
};

/// Largest response body we read: task lists are paged, so 16 MiB is generous.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How to reach ATS and who we are.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:8787` (a trailing slash is ignored).
    pub base_url: String,
    /// Organization slug; with `project`, switches task routes to the scoped form.
    pub org: Option<String>,
    /// Project slug.
    pub project: Option<String>,
    /// Our identity.
    pub actor: Actor,
    /// Timeout of one attempt of one request.
    pub request_timeout: Duration,
    /// Repeats for requests that are safe to repeat.
    pub max_retries: u32,
    /// Sent as `Authorization: Bearer <token>` on every request and on the WebSocket upgrade,
    /// for a server that requires one (a hub started with `--token`). None by default: the
    /// `ats` CLI sends no credentials.
    pub token: Option<AccessToken>,
}

impl ClientConfig {
    /// A config with default timeouts and no org/project scoping.
    pub fn new(base_url: impl Into<String>, actor: Actor) -> Self {
        Self {
            base_url: base_url.into(),
            org: None,
            project: None,
            actor,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            token: None,
        }
    }

    /// Sends `token` as a bearer token.
    pub fn with_token(mut self, token: AccessToken) -> Self {
        self.token = Some(token);
        self
    }

    /// Scopes task routes to `/orgs/{org}/projects/{project}`.
    pub fn with_scope(mut self, org: impl Into<String>, project: impl Into<String>) -> Self {
        self.org = Some(org.into());
        self.project = Some(project.into());
        self
    }
}

/// When a failed attempt may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Connection errors, timeouts and 5xx (reads, PATCH, transitions).
    Safe,
    /// Only when the connection could not be opened: the server never saw the request.
    ConnectOnly,
}

/// A cheap-to-clone handle to an ATS server, for one actor.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    base: Url,
    /// Path segments prepended to task routes (`orgs/{org}/projects/{project}`), maybe empty.
    scope: Vec<String>,
    actor: Actor,
    max_retries: u32,
    token: Option<AccessToken>,
}

/// Encodes a header value as Latin-1, as the ATS client's runtime does.
fn latin1_header(name: &'static str, value: &str) -> Result<HeaderValue, SignalError> {
    let mut bytes = Vec::with_capacity(value.len());
    for c in value.chars() {
        let code = u32::from(c);
        let byte = u8::try_from(code).map_err(|_| SignalError::InvalidHeader {
            name,
            reason: format!("character {c:?} is outside Latin-1"),
        })?;
        bytes.push(byte);
    }
    HeaderValue::from_bytes(&bytes).map_err(|e| SignalError::InvalidHeader {
        name,
        reason: e.to_string(),
    })
}

/// Parses and normalizes a base URL (trailing slashes removed).
pub(crate) fn parse_base_url(base_url: &str) -> Result<Url, SignalError> {
    let trimmed = base_url.trim().trim_end_matches('/');
    let url = Url::parse(trimmed).map_err(|e| SignalError::InvalidUrl {
        url: base_url.to_owned(),
        reason: e.to_string(),
    })?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(SignalError::InvalidUrl {
            url: base_url.to_owned(),
            reason: format!("scheme {other:?} is not http or https"),
        }),
    }
}

/// `base` with `segments` appended to its path.
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

/// The retry schedule of every request and reconnect in this crate (`backon`'s exponential
/// backoff, the one the swarm's retries use too): `base`, doubling per attempt up to `max`, each
/// delay plus a random jitter of up to itself so that many clients retrying together spread
/// out. It never runs out; callers bound the attempts. The facade retries with it too.
pub fn backoff(base: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    backon::BackoffBuilder::build(
        backon::ExponentialBuilder::new()
            .with_min_delay(base)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times(),
    )
}

impl Client {
    /// Builds a client (no request is made).
    pub fn new(config: ClientConfig) -> Result<Self, SignalError> {
        let base = parse_base_url(&config.base_url)?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let identity = [
            ("X-Actor-Type", &config.actor.actor_type),
            ("X-Actor-ID", &config.actor.id),
            ("X-Actor-Name", &config.actor.name),
        ];
        for (name, value) in identity {
            headers.insert(
                HeaderName::from_static(match name {
                    "X-Actor-Type" => "x-actor-type",
                    "X-Actor-ID" => "x-actor-id",
                    _ => "x-actor-name",
                }),
                latin1_header(name, value)?,
            );
        }
        if let Some(token) = &config.token {
            headers.insert(AUTHORIZATION, token.authorization_value());
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(config.request_timeout))
            .build()
            .map_err(|e| SignalError::InvalidUrl {
                url: config.base_url.clone(),
                reason: format!("cannot build HTTP client: {e}"),
            })?;
        let scope = if config.org.is_some() || config.project.is_some() {
            vec![
                "orgs".to_owned(),
                config.org.clone().unwrap_or_else(|| DEFAULT_ORG.to_owned()),
                "projects".to_owned(),
                config
                    .project
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PROJECT.to_owned()),
            ]
        } else {
            Vec::new()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                scope,
                actor: config.actor,
                max_retries: config.max_retries,
                token: config.token,
            }),
        })
    }

    /// Our identity.
    pub fn actor(&self) -> &Actor {
        &self.inner.actor
    }

    /// The `Authorization` header value of the WebSocket upgrade, when a token is configured.
    pub(crate) fn authorization(&self) -> Option<HeaderValue> {
        self.inner
            .token
            .as_ref()
            .map(AccessToken::authorization_value)
    }

    /// The normalized base URL (no trailing slash).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The WebSocket URL for `watch`: `ws(s)://.../ws?actor_type=..&actor_id=..&actor_name=..`.
    pub fn ws_url(&self) -> Url {
        let mut url = join(&self.inner.base, &["ws"]);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // Both schemes are "special" in the URL standard, so this cannot fail.
        let _ = url.set_scheme(scheme);
        url.query_pairs_mut()
            .append_pair("actor_type", &self.inner.actor.actor_type)
            .append_pair("actor_id", &self.inner.actor.id)
            .append_pair("actor_name", &self.inner.actor.name);
        url
    }

    fn task_url(&self, rest: &[&str]) -> Url {
        let mut segs: Vec<&str> = self.inner.scope.iter().map(String::as_str).collect();
        segs.push("tasks");
        segs.extend_from_slice(rest);
        join(&self.inner.base, &segs)
    }

    /// One attempt: send, read the capped body, map errors.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, SignalError> {
        let mut req = self.inner.http.request(method.clone(), url.clone());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                SignalError::Timeout {
                    url: url.to_string(),
                }
            } else if e.is_connect() {
                SignalError::Connect {
                    url: url.to_string(),
                    source: e,
                }
            } else {
                SignalError::Transport {
                    url: url.to_string(),
                    source: e,
                }
            }
        };
        let mut resp = req.send().await.map_err(map_err)?;
        let status = resp.status();
        if let Some(len) = resp.content_length()
            && usize::try_from(len).map_or(true, |l| l > MAX_RESPONSE_BYTES)
        {
            return Err(SignalError::ResponseTooLarge {
                limit: MAX_RESPONSE_BYTES,
            });
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
            if buf.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                return Err(SignalError::ResponseTooLarge {
                    limit: MAX_RESPONSE_BYTES,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(SignalError::Http {
                status: status.as_u16(),
                message: error_message(status, &buf),
            });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&buf).map_err(|e| SignalError::Decode {
            what: "response body",
            reason: e.to_string(),
        })
    }

    /// Sends with the given retry policy. Returns the JSON body (`Null` when empty).
    async fn send(
        &self,
        method: Method,
        url: Url,
        query: &[(&str, String)],
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, SignalError> {
        let mut attempt = 0u32;
        let mut delays = backoff(RETRY_BASE_DELAY, RETRY_MAX_DELAY);
        loop {
            let result = self.attempt(&method, &url, query, body).await;
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let may_retry = match retry {
                Retry::Safe => err.is_transient(),
                Retry::ConnectOnly => matches!(err, SignalError::Connect { .. }),
            };
            if !may_retry || attempt >= self.inner.max_retries {
                return Err(err);
            }
            let delay = delays.next().unwrap_or(RETRY_MAX_DELAY);
            tracing::debug!(%url, %err, ?delay, attempt, "retrying ATS request");
            tokio::time::sleep(delay).await;
            attempt = attempt.saturating_add(1);
        }
    }

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

    /// The task in an answer, or a fresh `GET` when the server answered something else.
    async fn task_or_get(&self, id: TaskId, v: Value) -> Result<Task, SignalError> {
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

fn reason_body(reason: Option<&str>) -> Value {
    match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_trailing_slash_and_scope() {
        let c =
            Client::new(ClientConfig::new("http://h:1/", Actor::agent("a")).with_scope("o", "p"))
                .unwrap();
        assert_eq!(
            c.task_url(&["7", "claim"]).as_str(),
            "http://h:1/orgs/o/projects/p/tasks/7/claim"
        );
        let c = Client::new(ClientConfig::new("http://h:1/api//", Actor::agent("a"))).unwrap();
        assert_eq!(c.task_url(&[]).as_str(), "http://h:1/api/tasks");
        assert_eq!(
            c.ws_url().as_str(),
            "ws://h:1/api/ws?actor_type=agent&actor_id=a&actor_name=a"
        );
        let mut cfg = ClientConfig::new("https://h", Actor::agent("x y"));
        cfg.project = Some("p".into());
        let c = Client::new(cfg).unwrap();
        assert_eq!(
            c.task_url(&[]).as_str(),
            "https://h/orgs/default/projects/p/tasks"
        );
        assert!(c.ws_url().as_str().starts_with("wss://h/ws?"));
        assert!(c.ws_url().as_str().contains("actor_name=x+y"));
    }

    #[test]
    fn bad_urls_and_headers_are_refused() {
        assert!(matches!(
            Client::new(ClientConfig::new("ftp://x", Actor::agent("a"))),
            Err(SignalError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new(ClientConfig::new("not a url", Actor::agent("a"))),
            Err(SignalError::InvalidUrl { .. })
        ));
        let mut actor = Actor::agent("a");
        actor.name = "check ✓".into();
        assert!(matches!(
            Client::new(ClientConfig::new("http://x", actor)),
            Err(SignalError::InvalidHeader { .. })
        ));
        let mut actor = Actor::agent("a");
        actor.name = "Zoë".into();
        assert!(Client::new(ClientConfig::new("http://x", actor)).is_ok());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(2);
        let delays: Vec<Duration> = backoff(b, m).take(40).collect();
        assert_eq!(delays.len(), 40, "the schedule never runs out");
        // Attempt n waits base·2ⁿ (capped) plus a jitter of up to as much again.
        assert!((b..=2 * b).contains(&delays[0]), "{:?}", delays[0]);
        assert!(delays[3] >= Duration::from_millis(800), "{:?}", delays[3]);
        assert!(
            delays[4..]
                .iter()
                .all(|d| (m.min(16 * b)..=2 * m).contains(d))
        );
        assert!(delays[39] >= m && delays[39] <= 2 * m);
    }
}
