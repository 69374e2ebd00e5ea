//! What a hub is told at start: where it listens and stores, whom it serves, and its limits.
//! Every default of the hub's exposure and resource limits lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::AccessToken;

/// Longest time one HTTP request may take, from its first byte to its answer (408 beyond).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP requests handled at once; a request beyond them is refused at once with 503 (a flood
/// cannot queue up work).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;

/// TCP connections open at once (idle keep-alive and WebSocket connections included); a further
/// connection is closed as soon as it is accepted, before a byte is read.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Shortest bearer token a hub accepts: a guessable token protects nothing.
pub const MIN_TOKEN_LEN: usize = 16;

/// WebSocket sessions open at once; a further upgrade gets 503.
pub const DEFAULT_MAX_WEBSOCKETS: usize = 256;

/// Largest request body (413 beyond): tasks and messages are small JSON documents.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a finished task (completed, failed, rejected, cancelled) is kept after its last
/// change before it and its messages are deleted.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often finished tasks past the retention are looked for.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Where the hub listens and stores, which browser origins it serves, and its limits.
///
/// [`HubConfig::new`] gives the defaults of a hub on loopback: no browser origin allowed, the
/// `DEFAULT_*` limits of this module.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// SQLite database file (created, with its parent directories, if missing).
    pub db_path: PathBuf,
    /// Origins (`scheme://host[:port]`, as browsers send them in the `Origin` header) whose
    /// requests are served. A request or WebSocket upgrade that carries any other `Origin` gets
    /// 403. Default: none, so no web page can drive the hub; clients that are not browsers (the
    /// `ats` CLI, [`crate::Client`]) send no `Origin` and are not affected.
    pub allowed_origins: Vec<String>,
    /// Host names (the `Host` header without its port) served besides IP literals and
    /// `localhost`. A hub listening on loopback, or with any name listed here, answers a request
    /// for any other name with 403: that is how a page on a DNS name rebound to the hub's address
    /// is kept from reading it. Default: none (a hub on a non-loopback address then serves any
    /// name).
    pub allowed_hosts: Vec<String>,
    /// The bearer token every request and WebSocket upgrade must carry as
    /// `Authorization: Bearer <token>` (401 without it), except `GET /health`. None: no token is
    /// asked for, which [`Hub::bind`](super::Hub::bind) allows only on a loopback address unless
    /// [`HubConfig::insecure_no_token`] is set. At least [`MIN_TOKEN_LEN`] bytes.
    pub token: Option<AccessToken>,
    /// Serve a non-loopback address without a token (anyone who reaches the port can then read
    /// and change every task): for a hub behind a proxy that authenticates, or on a network of
    /// its own. Default false.
    pub insecure_no_token: bool,
    /// Longest time one HTTP request may take (408 beyond).
    pub request_timeout: Duration,
    /// HTTP requests handled at once (503 beyond).
    pub max_concurrent_requests: usize,
    /// TCP connections open at once (closed at once beyond).
    pub max_connections: usize,
    /// WebSocket sessions open at once (503 beyond).
    pub max_websockets: usize,
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// How long finished tasks are kept after their last change.
    pub retention: Duration,
    /// How often finished tasks past the retention are deleted.
    pub prune_interval: Duration,
}

impl HubConfig {
    /// A config with the defaults of this module.
    pub fn new(listen: SocketAddr, db_path: PathBuf) -> Self {
        Self {
            listen,
            db_path,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            token: None,
            insecure_no_token: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_websockets: DEFAULT_MAX_WEBSOCKETS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retention: DEFAULT_RETENTION,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
        }
    }
}

/// Why a database location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DbLocationError {
    /// A PostgreSQL URL: this hub stores in SQLite only.
    #[error(
        "PostgreSQL storage ({scheme}://...) is not available in this hub yet; give a SQLite \
         file path"
    )]
    PostgresUnsupported {
        /// `postgres` or `postgresql`.
        scheme: String,
    },
    /// Another URL: a database location is a file path.
    #[error("the database location looks like a {scheme}:// URL; give a SQLite file path")]
    NotAPath {
        /// The URL's scheme.
        scheme: String,
    },
}

/// Checks a database location (`ats-p2p hub --db`, [`HubConfig::db_path`]): a SQLite file path.
/// Anything of the form `scheme://...` is refused instead of being taken for a relative path
/// (which would create directories named after the URL). The URL itself is never quoted back,
/// since it may hold a password.
pub fn parse_db_location(value: &str) -> Result<PathBuf, DbLocationError> {
    if let Some((scheme, _)) = value.split_once("://") {
        let is_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            let scheme = scheme.to_ascii_lowercase();
            return Err(match scheme.as_str() {
                "postgres" | "postgresql" => DbLocationError::PostgresUnsupported { scheme },
                _ => DbLocationError::NotAPath { scheme },
            });
        }
    }
    Ok(PathBuf::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_locations() {
        assert_eq!(
            parse_db_location("hub.sqlite"),
            Ok(PathBuf::from("hub.sqlite"))
        );
        assert_eq!(
            parse_db_location("/var/lib/ats-p2p/hub.sqlite"),
            Ok(PathBuf::from("/var/lib/ats-p2p/hub.sqlite"))
        );
        assert_eq!(
            parse_db_location("./odd://name"),
            Ok(PathBuf::from("./odd://name"))
        );
        for url in [
            "postgres://user@host:5432/db",
            "PostgreSQL://user:pw@host/db",
        ] {
            assert!(matches!(
                parse_db_location(url),
                Err(DbLocationError::PostgresUnsupported { .. })
            ));
        }
        let err = parse_db_location("mysql://root:hunter2@host/db").unwrap_err();
        assert_eq!(
            err,
            DbLocationError::NotAPath {
                scheme: "mysql".into()
            }
        );
        assert!(!err.to_string().contains("hunter2"));
    }
}
