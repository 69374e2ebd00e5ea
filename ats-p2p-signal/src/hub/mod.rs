//! The hub: a self-hostable, ATS-compatible server (REST + WebSocket over SQLite).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ats_p2p_signal::hub::HubError> {
//! use ats_p2p_signal::hub::{Hub, HubConfig};
//! let hub = Hub::bind(HubConfig::new("127.0.0.1:0".parse().unwrap(), std::path::PathBuf::from("hub.sqlite"))).await?;
//! println!("ATS hub listening on {}", hub.url());
//! hub.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout: [`store`] holds the logic as plain functions over a small SQL interface
//! ([`store::sql::Sql`]), run either by a SQLite database thread (one transaction at a time,
//! which makes claims atomic; events published in commit order) or by PostgreSQL workers that
//! several hub instances may share ([`HubConfig::db`] a [`DbLocation::Postgres`]: row locks make
//! claims atomic, events go through a table every instance reads in order, see `pg.rs`);
//! thin axum handlers translate HTTP; the WebSocket forwards matching events. `config` holds
//! every exposure and resource default, `guard` the rules that keep web pages out, `fanout` the
//! bounded per-subscriber event queues.
//!
//! # Safe to expose
//!
//! - **Web pages cannot drive it.** A request or WebSocket upgrade carrying an `Origin` header
//!   that is not in [`HubConfig::allowed_origins`] (default: none) gets **403**; a `POST`,
//!   `PUT`, `PATCH` or `DELETE` without `Content-Type: application/json` gets **415**. The `ats`
//!   CLI and [`crate::Client`] send that content type on every request and no `Origin`, so they
//!   are unaffected; reads need no content type. On a hub listening on loopback, a request for a
//!   host name other than `localhost` (or one in [`HubConfig::allowed_hosts`]) gets **403**, so
//!   a page whose DNS name was rebound to `127.0.0.1` cannot read the hub either.
//! - **A slow WebSocket reader cannot grow memory.** Each event is serialized once and shared by
//!   the subscribers' queues, each bounded by [`SUBSCRIBER_QUEUE_EVENTS`] events and
//!   [`SUBSCRIBER_QUEUE_BYTES`] bytes, and every write has [`WS_WRITE_TIMEOUT`]. A subscriber
//!   past either bound is disconnected (close code 1013 when the socket can still take it); it
//!   reconnects and catches up with `GET /tasks?updated_after=…`, as [`crate::Watch`] does.
//! - **Bounded requests.** Bodies up to [`HubConfig::max_body_bytes`] (413 beyond); each request
//!   answered within [`HubConfig::request_timeout`] (408 beyond; a change that timed out while
//!   queued may still be applied, as with any network timeout); at most
//!   [`HubConfig::max_concurrent_requests`] handled at once (503 beyond, at once) and
//!   [`HubConfig::max_websockets`] WebSocket sessions (503 beyond).
//! - **Bounded data.** A task holds at most [`store::MAX_MESSAGES_PER_TASK`] messages (409
//!   beyond), each at most [`store::MAX_MESSAGE_BYTES`] (413 beyond). `GET /tasks/{id}` shows
//!   the newest [`store::TASK_MESSAGES_SHOWN`] messages, oldest first, and `message_count`, the
//!   number in all; `GET /tasks/{id}/messages` lists all of them and takes `limit` and
//!   `offset` (its answer carries `count`). Finished tasks (completed, failed, rejected,
//!   cancelled) are deleted with their messages once their last change is older than
//!   [`HubConfig::retention`] (default 7 days), checked every [`HubConfig::prune_interval`].
//! - **Durable and self-healing.** SQLite runs in WAL mode with `synchronous=FULL`: a change is
//!   acknowledged only after its commit reached the disk. A panic on the database thread fails
//!   only the requests whose jobs it hit (500); the thread rolls back and serves on.
//!
//! - **Bounded connections.** At most [`HubConfig::max_connections`] TCP connections are open
//!   at once (idle keep-alive and WebSocket ones included); one more is closed as soon as it is
//!   accepted.
//!
//! # Exposing a hub
//!
//! The hub has no accounts: whoever may use it can create, claim and read every task. On
//! loopback (the default, [`DEFAULT_LISTEN`]) the rules above keep browsers out and no token is
//! needed. With a [`HubConfig::token`] (`ats-p2p hub --token T`, env `ATS_P2P_HUB_TOKEN`), every
//! request and WebSocket upgrade but `GET /health` must carry `Authorization: Bearer T` (**401**
//! otherwise); clients send it with [`crate::ClientConfig::token`]. [`Hub::bind`] refuses a
//! non-loopback address without a token ([`HubError::NoToken`]) unless
//! [`HubConfig::insecure_no_token`] (`--insecure-no-token`) says something else guards it (a
//! reverse proxy that authenticates, a network of its own). The token travels in clear over
//! plain HTTP: beyond a trusted network, put the hub behind a proxy that terminates TLS. List
//! in [`HubConfig::allowed_origins`] (`--allow-origin URL`) only origins of pages you trust to
//! act for their users, and in [`HubConfig::allowed_hosts`] the names the hub is reached by when
//! it listens on loopback behind such a proxy. The limits above bound what one client can take,
//! not how many clients come: rate-limit at the proxy when the network is not yours.

mod api_error;
mod backend;
mod config;
mod db;
mod fanout;
mod guard;
mod http;
mod listener;
mod pg;
mod state;
pub mod store;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::backend::Backend;
pub use self::config::*;
use self::db::Db;
#[cfg(feature = "test-hooks")]
pub use self::db::faults::DbFault;
use self::fanout::Fanout;
pub use self::fanout::{SUBSCRIBER_QUEUE_BYTES, SUBSCRIBER_QUEUE_EVENTS};
use self::listener::CappedListener;
use self::pg::PgDb;
use self::state::AppState;
use self::store::StoreError;
pub use self::ws::WS_WRITE_TIMEOUT;

/// Default listen address of `ats-p2p hub`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// How often expired leases are looked for (a lease ends at most this late).
pub const LEASE_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// How often old stored events are pruned.
const EVENT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Longest wait for open WebSockets and the database thread at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The database could not be opened or initialized.
    #[error("cannot open hub database {location}: {source}")]
    Database {
        /// The database (a PostgreSQL URL is shown without its password).
        location: DbLocation,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A non-loopback address without a token (see [`HubConfig::insecure_no_token`]).
    #[error(
        "refusing to serve {addr} without a token: anyone who reaches it could read and change \
         every task (give the hub a token, or state that something else guards it with \
         --insecure-no-token)"
    )]
    NoToken {
        /// The listen address.
        addr: SocketAddr,
    },
    /// A database location that is neither a file path nor a PostgreSQL URL.
    #[error(transparent)]
    DbLocation(#[from] DbLocationError),
    /// The token is shorter than [`MIN_TOKEN_LEN`].
    #[error("the hub token must be at least {MIN_TOKEN_LEN} bytes long (a random string)")]
    WeakToken,
    /// Another I/O failure (creating the data directory, starting the database thread).
    #[error("hub I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A running hub. Stop it with [`Hub::shutdown`]; dropping it also stops it, without waiting.
#[derive(Debug)]
pub struct Hub {
    addr: SocketAddr,
    cancel: CancellationToken,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    ws_tasks: TaskTracker,
    /// The SQLite database thread, or the PostgreSQL workers and event tailer.
    db_threads: Vec<std::thread::JoinHandle<()>>,
    /// Stops the PostgreSQL event tailer.
    tail_stop: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// The database handle of [`Hub::inject_db_fault`] (dropped at shutdown).
    #[cfg(feature = "test-hooks")]
    db: Option<Backend>,
}

impl Hub {
    /// Opens the database, binds the address and starts serving.
    pub async fn bind(config: HubConfig) -> Result<Self, HubError> {
        match &config.token {
            Some(t) if t.len() < MIN_TOKEN_LEN => return Err(HubError::WeakToken),
            None if !config.listen.ip().is_loopback() && !config.insecure_no_token => {
                return Err(HubError::NoToken {
                    addr: config.listen,
                });
            }
            _ => {}
        }
        let fanout = Fanout::default();
        let (db, db_threads, tail_stop) = open_backend(&config.db, fanout.clone()).await?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| {
                if let Some(stop) = &tail_stop {
                    stop.store(true, std::sync::atomic::Ordering::Release);
                }
                HubError::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
        let addr = listener.local_addr()?;
        let listener = CappedListener::new(listener, config.max_connections);
        let cancel = CancellationToken::new();
        let ws_tasks = TaskTracker::new();
        let state = AppState {
            db: db.clone(),
            fanout,
            cancel: cancel.clone(),
            ws_tasks: ws_tasks.clone(),
            ws_slots: Arc::new(Semaphore::new(config.max_websockets)),
        };
        let app = http::app(state, &config, addr);
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "hub server stopped with an error");
            }
        });
        let upkeep = Upkeep {
            retention: config.retention,
            prune_interval: config.prune_interval,
        };
        #[cfg(feature = "test-hooks")]
        let hook_db = db.clone();
        let sweeper = tokio::spawn(sweep(db.unfaulted(), upkeep, cancel.clone()));
        tracing::info!(%addr, db = %config.db, "ATS hub listening");
        Ok(Self {
            addr,
            cancel,
            server,
            sweeper,
            ws_tasks,
            db_threads,
            tail_stop,
            #[cfg(feature = "test-hooks")]
            db: Some(hook_db),
        })
    }

    /// Makes the database thread panic at `fault` once (feature `test-hooks`, for tests of the
    /// hub's recovery; never enable it in a build that serves anyone).
    #[cfg(feature = "test-hooks")]
    pub fn inject_db_fault(&self, fault: DbFault) {
        if let Some(db) = &self.db {
            db.inject_fault(fault);
        }
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL clients use, e.g. `http://127.0.0.1:8787`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, finishes in-flight requests, closes WebSockets ("going away"), and
    /// waits for the database thread to commit and close.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let server = &mut self.server;
        if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
            tracing::warn!("hub: in-flight requests did not finish in time");
            self.server.abort();
        }
        self.ws_tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.ws_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("hub: WebSockets did not close in time");
        }
        let sweeper = &mut self.sweeper;
        if tokio::time::timeout(SHUTDOWN_GRACE, sweeper).await.is_err() {
            self.sweeper.abort();
        }
        // Every `Db` handle is gone with the server and the sweeper: the thread drains and ends.
        #[cfg(feature = "test-hooks")]
        drop(self.db.take());
        if let Some(stop) = self.tail_stop.take() {
            stop.store(true, std::sync::atomic::Ordering::Release);
        }
        let threads = std::mem::take(&mut self.db_threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if tokio::time::timeout(SHUTDOWN_GRACE, joined).await.is_err() {
            tracing::warn!("hub: database threads did not stop in time");
        }
        tracing::info!(addr = %self.addr, "ATS hub stopped");
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(stop) = &self.tail_stop {
            stop.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// What [`open_backend`] starts: the backend, its threads, and the tailer's stop flag.
type OpenedBackend = (
    Backend,
    Vec<std::thread::JoinHandle<()>>,
    Option<Arc<std::sync::atomic::AtomicBool>>,
);

/// Opens the database (migrating it) and starts its threads.
async fn open_backend(location: &DbLocation, fanout: Fanout) -> Result<OpenedBackend, HubError> {
    let failed = |source| HubError::Database {
        location: location.clone(),
        source,
    };
    match location {
        DbLocation::Sqlite(path) => {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                tokio::fs::create_dir_all(dir).await?;
            }
            let path = path.clone();
            let conn = tokio::task::spawn_blocking(move || store::open(&path))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .map_err(failed)?;
            let (db, thread) = Db::start(conn, fanout)?;
            Ok((Backend::Sqlite(db), vec![thread], None))
        }
        DbLocation::Postgres(url) => {
            let config = url.config().map_err(|e| failed(StoreError::Postgres(e)))?;
            let (pg, threads) = tokio::task::spawn_blocking(move || PgDb::start(config, fanout))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .map_err(failed)?;
            Ok((Backend::Postgres(pg), threads.threads, Some(threads.stop)))
        }
    }
}

/// What the sweeper does besides expiring leases.
#[derive(Debug, Clone, Copy)]
struct Upkeep {
    retention: Duration,
    prune_interval: Duration,
}

/// Returns expired leases to pending, every [`LEASE_SWEEP_INTERVAL`]; prunes old events every
/// [`EVENT_PRUNE_INTERVAL`] and finished tasks past the retention every `prune_interval` (and
/// once at start).
async fn sweep(db: Backend, upkeep: Upkeep, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(LEASE_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_event_prune = tokio::time::Instant::now();
    let mut last_task_prune: Option<tokio::time::Instant> = None;
    let retention = chrono::Duration::from_std(upkeep.retention).unwrap_or(chrono::Duration::MAX);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let prune_events = last_event_prune.elapsed() >= EVENT_PRUNE_INTERVAL;
        if prune_events {
            last_event_prune = tokio::time::Instant::now();
        }
        let prune_tasks = last_task_prune.is_none_or(|t| t.elapsed() >= upkeep.prune_interval);
        if prune_tasks {
            last_task_prune = Some(tokio::time::Instant::now());
        }
        let res = db
            .call(move |c| {
                let changes = store::expire_leases(c, now)?;
                if prune_events {
                    store::prune_events(c)?;
                }
                let pruned = match now.checked_sub_signed(retention) {
                    Some(before) if prune_tasks => store::prune_finished(c, before)?,
                    _ => 0,
                };
                let n = changes.len();
                let events = changes.into_iter().flat_map(|ch| ch.events).collect();
                Ok(((n, pruned), events))
            })
            .await;
        match res {
            Ok((expired, pruned)) => {
                if expired > 0 {
                    tracing::debug!(expired, "leases expired");
                }
                if pruned > 0 {
                    tracing::info!(pruned, "finished tasks past the retention deleted");
                }
            }
            Err(StoreError::Closed) => break,
            Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
        }
    }
}
