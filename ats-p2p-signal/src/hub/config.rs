//! What a hub is told at start: where it listens and stores, whom it serves, and its limits.
//! Every default of the hub's exposure and resource limits lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Longest time one HTTP request may take, from its first byte to its answer (408 beyond).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP requests handled at once; a request beyond them is refused at once with 503 (a flood
/// cannot queue up work).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 256;

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
    /// Longest time one HTTP request may take (408 beyond).
    pub request_timeout: Duration,
    /// HTTP requests handled at once (503 beyond).
    pub max_concurrent_requests: usize,
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
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_websockets: DEFAULT_MAX_WEBSOCKETS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retention: DEFAULT_RETENTION,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
        }
    }
}
