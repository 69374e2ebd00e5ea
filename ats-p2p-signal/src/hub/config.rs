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
    /// Where the hub stores: a SQLite file (created, with its parent directories, if missing)
    /// or a PostgreSQL database shared by several hub instances.
    pub db: DbLocation,
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
    pub fn new(listen: SocketAddr, db: impl Into<DbLocation>) -> Self {
        Self {
            listen,
            db: db.into(),
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

/// Where a hub stores its tasks.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbLocation {
    /// A SQLite file: the zero-setup choice for one machine.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://user@host/db`), which several hub instances may share.
    Postgres(PostgresUrl),
}

impl From<PathBuf> for DbLocation {
    fn from(p: PathBuf) -> Self {
        Self::Sqlite(p)
    }
}

impl std::fmt::Display for DbLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(u) => write!(f, "{u}"),
        }
    }
}

impl std::fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Self::Postgres(u) => f.debug_tuple("Postgres").field(u).finish(),
        }
    }
}

/// A PostgreSQL connection URL. Shown (`Display`, `Debug`) without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL as given, password included (for connecting only).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection settings it names.
    pub fn config(&self) -> Result<postgres::Config, postgres::Error> {
        self.0.parse()
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(mut u) => {
                if u.password().is_some() {
                    let _ = u.set_password(Some("***"));
                }
                write!(f, "{u}")
            }
            Err(_) => f.write_str("postgres://(unparsable URL)"),
        }
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// Why a database location was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DbLocationError {
    /// A URL of another kind: a database location is a file path or a PostgreSQL URL.
    #[error(
        "the database location looks like a {scheme}:// URL; give a SQLite file path or a \
         postgres:// URL"
    )]
    NotAPath {
        /// The URL's scheme.
        scheme: String,
    },
    /// A PostgreSQL URL that does not parse (its text is not quoted: it may hold a password).
    #[error("the PostgreSQL URL is not valid: {reason}")]
    BadPostgresUrl {
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks a database location (`ats-p2p hub --db`, env `ATS_P2P_HUB_DB`): a SQLite file path,
/// or a `postgres://` / `postgresql://` URL. Anything else of the form `scheme://...` is refused
/// instead of being taken for a relative path (which would create directories named after the
/// URL). The URL itself is never quoted back, since it may hold a password.
pub fn parse_db_location(value: &str) -> Result<DbLocation, DbLocationError> {
    if let Some((scheme, rest)) = value.split_once("://") {
        let is_scheme = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            let scheme = scheme.to_ascii_lowercase();
            return match scheme.as_str() {
                "postgres" | "postgresql" => {
                    let url = PostgresUrl(format!("{scheme}://{rest}"));
                    url.config().map_err(|e| DbLocationError::BadPostgresUrl {
                        reason: e.to_string(),
                    })?;
                    Ok(DbLocation::Postgres(url))
                }
                _ => Err(DbLocationError::NotAPath { scheme }),
            };
        }
    }
    Ok(DbLocation::Sqlite(PathBuf::from(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_locations() {
        let sqlite = |p: &str| Ok(DbLocation::Sqlite(PathBuf::from(p)));
        assert_eq!(parse_db_location("hub.sqlite"), sqlite("hub.sqlite"));
        assert_eq!(
            parse_db_location("/var/lib/ats-p2p/hub.sqlite"),
            sqlite("/var/lib/ats-p2p/hub.sqlite")
        );
        assert_eq!(parse_db_location("./odd://name"), sqlite("./odd://name"));
        for url in [
            "postgres://user@host:5432/db",
            "postgresql://user:hunter2@host/db",
        ] {
            let loc = parse_db_location(url).unwrap();
            assert!(matches!(loc, DbLocation::Postgres(_)), "{url}");
            assert!(!loc.to_string().contains("hunter2"), "{loc}");
            assert!(!format!("{loc:?}").contains("hunter2"), "{loc:?}");
        }
        assert!(matches!(
            parse_db_location("postgres://user@host:notaport/db"),
            Err(DbLocationError::BadPostgresUrl { .. })
        ));
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
