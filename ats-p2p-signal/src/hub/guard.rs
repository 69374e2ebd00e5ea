//! Who may drive the hub: the rules that keep web pages out.
//!
//! A browser lets any page send requests to `127.0.0.1`; what it cannot do is hide where the
//! request comes from or send a JSON content type without the target's consent (a CORS
//! preflight, which the hub never grants). So:
//!
//! - a request (or WebSocket upgrade) carrying an `Origin` that is not in
//!   [`HubConfig::allowed_origins`](super::HubConfig::allowed_origins) gets **403**;
//! - a state-changing request (`POST`, `PUT`, `PATCH`, `DELETE`) without
//!   `Content-Type: application/json` gets **415**, whatever its body.
//!
//! The `ats` CLI and [`crate::Client`] send `Content-Type: application/json` on every request
//! and no `Origin`, so they pass both rules.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::http::ApiError;

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

/// The middleware: 403 for a foreign origin, 415 for a state change without a JSON body type.
pub(crate) async fn guard(
    State(origins): State<OriginPolicy>,
    req: Request,
    next: Next,
) -> Response {
    if let Err(e) = origins.admits(req.headers()) {
        return e.into_response();
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
    use axum::http::HeaderValue;

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
