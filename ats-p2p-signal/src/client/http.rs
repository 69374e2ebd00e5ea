//! HTTP plumbing of the [`Client`]: the URLs of routes, one attempt (capped body, errors
//! mapped, the server's own error text), and the retry loop with its two rules.

use reqwest::Method;
use serde_json::Value;
use url::Url;

use super::decode::error_message;
use super::{Client, MAX_RESPONSE_BYTES, RETRY_BASE_DELAY, RETRY_MAX_DELAY, backoff};
use crate::error::SignalError;

/// When a failed attempt may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Connection errors, timeouts and 5xx (reads, PATCH, transitions).
    Safe,
    /// Only when the connection could not be opened: the server never saw the request.
    ConnectOnly,
}

/// `base` with `segments` appended to its path.
pub(super) fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty();
        path.extend(segments);
    }
    url
}

impl Client {
    pub(super) fn task_url(&self, rest: &[&str]) -> Url {
        let mut segs: Vec<&str> = self.inner.scope.iter().map(String::as_str).collect();
        segs.push("tasks");
        segs.extend_from_slice(rest);
        join(&self.inner.base, &segs)
    }

    /// One attempt: send, read the capped body, map errors.
    pub(super) async fn attempt(
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
    pub(super) async fn send(
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
}
