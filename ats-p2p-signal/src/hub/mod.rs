//! The hub: a self-hostable, ATS-compatible server (REST + WebSocket over SQLite).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ats_p2p_signal::hub::HubError> {
//! use ats_p2p_signal::hub::{Hub, HubConfig};
//! let hub = Hub::bind(HubConfig::new("127.0.0.1:0".parse().unwrap(), "hub.sqlite".into())).await?;
//! println!("ATS hub listening on {}", hub.url());
//! hub.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout: [`store`] holds the logic as plain functions over SQLite; a database thread runs them
//! one transaction at a time (which makes claims atomic) and broadcasts events in commit order;
//! thin axum handlers translate HTTP; the WebSocket forwards matching events.

mod db;
mod http;
pub mod store;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::db::Db;
use self::http::AppState;
use self::store::StoreError;

/// Default listen address of `ats-p2p hub`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// How often expired leases are looked for (a lease ends at most this late).
pub const LEASE_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// How often old stored events are pruned.
const EVENT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Events buffered per WebSocket subscriber; one that falls further behind is disconnected and
/// catches up over HTTP.
pub const EVENT_BROADCAST_DEPTH: usize = 4096;

/// Longest wait for open WebSockets and the database thread at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Where the hub listens and stores.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// SQLite database file (created, with its parent directories, if missing).
    pub db_path: PathBuf,
}

impl HubConfig {
    /// A config.
    pub fn new(listen: SocketAddr, db_path: PathBuf) -> Self {
        Self { listen, db_path }
    }
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The database could not be opened or initialized.
    #[error("cannot open hub database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
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
    db_thread: Option<std::thread::JoinHandle<()>>,
}

impl Hub {
    /// Opens the database, binds the address and starts serving.
    pub async fn bind(config: HubConfig) -> Result<Self, HubError> {
        if let Some(dir) = config.db_path.parent() {
            if !dir.as_os_str().is_empty() {
                tokio::fs::create_dir_all(dir).await?;
            }
        }
        let path = config.db_path.clone();
        let conn = tokio::task::spawn_blocking(move || store::open(&path))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .map_err(|source| HubError::Database {
                path: config.db_path.clone(),
                source,
            })?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| HubError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let (events, _) = broadcast::channel(EVENT_BROADCAST_DEPTH);
        let (db, db_thread) = Db::start(conn, events.clone())?;
        let cancel = CancellationToken::new();
        let ws_tasks = TaskTracker::new();
        let state = AppState {
            db: db.clone(),
            events,
            cancel: cancel.clone(),
            ws_tasks: ws_tasks.clone(),
        };
        let app = http::app(state);
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "hub server stopped with an error");
            }
        });
        let sweeper = tokio::spawn(sweep_leases(db, cancel.clone()));
        tracing::info!(%addr, db = %config.db_path.display(), "ATS hub listening");
        Ok(Self {
            addr,
            cancel,
            server,
            sweeper,
            ws_tasks,
            db_thread: Some(db_thread),
        })
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
        if let Some(t) = self.db_thread.take() {
            let joined = tokio::task::spawn_blocking(move || t.join());
            if tokio::time::timeout(SHUTDOWN_GRACE, joined).await.is_err() {
                tracing::warn!("hub: database thread did not stop in time");
            }
        }
        tracing::info!(addr = %self.addr, "ATS hub stopped");
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Returns expired leases to pending, every [`LEASE_SWEEP_INTERVAL`].
async fn sweep_leases(db: Db, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(LEASE_SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let prune = last_prune.elapsed() >= EVENT_PRUNE_INTERVAL;
        if prune {
            last_prune = tokio::time::Instant::now();
        }
        let res = db
            .call(move |c| {
                let changes = store::expire_leases(c, now)?;
                if prune {
                    store::prune_events(c)?;
                }
                let n = changes.len();
                let events = changes.into_iter().flat_map(|ch| ch.events).collect();
                Ok((n, events))
            })
            .await;
        match res {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "leases expired"),
            Err(StoreError::Closed) => break,
            Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
        }
    }
}
