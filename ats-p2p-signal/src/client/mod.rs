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
//!
//! The parts: this module builds a [`Client`] from a [`ClientConfig`] (headers, base URL,
//! scope); `http` sends one request and repeats it by its retry rule; `tasks` holds the typed
//! calls that create, read and update tasks and messages; `transitions` the claims and status
//! actions with their rules for repeats.

mod decode;
mod http;
mod tasks;
mod transitions;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use self::http::join;
use crate::auth::AccessToken;
use crate::error::SignalError;
use crate::types::Actor;

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
