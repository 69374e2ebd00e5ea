//! Who may drive the hub: the rules that keep web pages out.
//!
//! A browser lets any page send requests to `127.0.0.1`; what it cannot do is hide where the
//! request comes from or send a JSON content type without the target's consent (a CORS
//! preflight, which the hub never grants). So:
//!
//! - a request (or WebSocket upgrade) carrying an `Origin` that is not in
//!   [`HubConfig::allowed_origins`](super::HubConfig::allowed_origins) gets **403**;
//! - on a hub listening on loopback (or with
//!   [`HubConfig::allowed_hosts`](super::HubConfig::allowed_hosts) set), a request whose `Host`
//!   is a name other than `localhost` or a listed one gets **403**: a page whose DNS name was
//!   rebound to the hub's address sends its own name, and same-origin reads carry no `Origin`;
//! - a state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`) without
//!   `Content-Type: application/json` gets **415**, whatever its body;
//! - on a hub with a [token](super::HubConfig::token), a request (or WebSocket upgrade) without
//!   `Authorization: Bearer <token>` gets **401** with `WWW-Authenticate: Bearer`, except
//!   `GET /health`, which tells nothing but that the hub is up (for load balancers' probes).
//!
//! The `ats` CLI and [`crate::Client`] send `Content-Type: application/json` on every request
//! and no `Origin`, so they pass both rules.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api_error::ApiError;
use crate::auth::AccessToken;

/// The allowed browser origins, normalised for comparison.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    allowed: Arc<Vec<String>>,
}

/// Lower-case, without a trailing slash: how two spellings of one origin compare equal.
fn normalise_origin(s: &str) -> String {
    s.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl OriginPolicy {
    /// Allows exactly these origins (e.g. `https://dashboard.example`).
    pub(crate) fn new(allowed: &[String]) -> Self {
        Self {
            allowed: Arc::new(allowed.iter().map(|o| normalise_origin(o)).collect()),
        }
    }

    /// Whether a request with these headers may be served: no `Origin`, or an allowed one.
    fn admits(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if self.allowed.contains(&normalise_origin(&origin)) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from origin {origin:?} are not allowed (a hub serves browser \
                     origins only when they are configured)"
                ),
            ))
        }
    }
}

/// The host names served, when checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostPolicy {
    /// `None`: any host is served.
    allowed: Option<Arc<Vec<String>>>,
}

/// The host part of a `Host` header: without the port, brackets or a trailing dot, lower-case.
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.split(':').next().unwrap_or(host),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl HostPolicy {
    /// Checks hosts when the hub listens on loopback or names are configured.
    pub(crate) fn new(listen_is_loopback: bool, allowed: &[String]) -> Self {
        let check = listen_is_loopback || !allowed.is_empty();
        Self {
            allowed: check.then(|| Arc::new(allowed.iter().map(|h| host_name(h)).collect())),
        }
    }

    /// No `Host` (HTTP/1.0), an IP literal, `localhost`, or a listed name.
    fn admits(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let (Some(allowed), Some(host)) = (&self.allowed, headers.get(header::HOST)) else {
            return Ok(());
        };
        let host = String::from_utf8_lossy(host.as_bytes());
        let name = host_name(&host);
        if name == "localhost" || name.parse::<IpAddr>().is_ok() || allowed.contains(&name) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this hub does not serve the host name {name:?} (add it to the hub's allowed \
                 hosts to reach it by that name)"
            ),
        ))
    }
}

/// The bearer token asked for, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenPolicy {
    token: Option<Arc<AccessToken>>,
}

impl TokenPolicy {
    /// Asks every request but `GET /health` for `token`; `None` asks for nothing.
    pub(crate) fn new(token: Option<AccessToken>) -> Self {
        Self {
            token: token.map(Arc::new),
        }
    }

    /// `Err` with the reason when the request lacks the token.
    fn admits(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if method == Method::GET && path == "/health" {
            return Ok(());
        }
        match headers.get(header::AUTHORIZATION) {
            Some(v) if token.admits(v.as_bytes()) => Ok(()),
            Some(_) => Err("the bearer token is wrong"),
            None => Err(
                "this hub needs `Authorization: Bearer <token>` (ats-p2p --ats-token, ATS_TOKEN)",
            ),
        }
    }
}

/// 401 with the challenge of the `Bearer` scheme.
fn unauthorized(reason: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, reason).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ats-p2p hub\""),
    );
    resp
}

/// What the guard checks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    pub(crate) origins: OriginPolicy,
    pub(crate) hosts: HostPolicy,
    pub(crate) token: TokenPolicy,
}

/// Whether the method changes state (and so must carry a JSON body type).
fn changes_state(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// Whether `Content-Type` is `application/json` (any parameters, any case).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The middleware: 403 for a foreign host name or origin, 401 without the token, 415 for a
/// state change without a JSON body type.
pub(crate) async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let admitted = guard
        .hosts
        .admits(req.headers())
        .and_then(|()| guard.origins.admits(req.headers()));
    if let Err(e) = admitted {
        return e.into_response();
    }
    if let Err(reason) = guard
        .token
        .admits(req.method(), req.uri().path(), req.headers())
    {
        return unauthorized(reason);
    }
    if changes_state(req.method()) && !is_json(req.headers()) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{} requests need `Content-Type: application/json`",
                req.method()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(&headers(&[(
            header::CONTENT_TYPE,
            "application/json"
        )])));
        assert!(is_json(&headers(&[(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[(header::CONTENT_TYPE, "text/plain")])));
        assert!(!is_json(&headers(&[(
            header::CONTENT_TYPE,
            "application/jsonx"
        )])));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn host_names_on_loopback() {
        let p = HostPolicy::new(true, &["hub.example".to_owned()]);
        for ok in [
            "127.0.0.1:8787",
            "localhost:8787",
            "[::1]:8787",
            "Hub.Example.:80",
            "10.0.0.2",
        ] {
            assert!(p.admits(&headers(&[(header::HOST, ok)])).is_ok(), "{ok}");
        }
        assert!(p.admits(&HeaderMap::new()).is_ok());
        assert!(
            p.admits(&headers(&[(header::HOST, "evil.example:8787")]))
                .is_err()
        );
        let open = HostPolicy::new(false, &[]);
        assert!(
            open.admits(&headers(&[(header::HOST, "evil.example")]))
                .is_ok()
        );
    }

    #[test]
    fn origins_compare_normalised() {
        let p = OriginPolicy::new(&["https://Dash.example/".to_owned()]);
        assert!(p.admits(&HeaderMap::new()).is_ok());
        assert!(
            p.admits(&headers(&[(header::ORIGIN, "https://dash.example")]))
                .is_ok()
        );
        assert!(
            p.admits(&headers(&[(header::ORIGIN, "https://dash.example:444")]))
                .is_err()
        );
        assert!(p.admits(&headers(&[(header::ORIGIN, "null")])).is_err());
    }
}
