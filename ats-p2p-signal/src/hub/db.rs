//! The database thread: owns the SQLite connection, runs jobs one at a time in a transaction,
//! and broadcasts their events in commit order. Async code never blocks on SQLite.

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::store::{HubEvent, StoreError};

/// Jobs waiting for the database thread; a full queue makes handlers wait (backpressure).
pub(crate) const DB_QUEUE_DEPTH: usize = 1024;

/// Most queued jobs committed together in one transaction (group commit: each job still gets
/// its own savepoint, so one failing job does not undo the others).
const GROUP_COMMIT_MAX: usize = 64;

/// What a job leaves once it ran: its events, and how to answer once the commit is known.
struct Done {
    events: Vec<HubEvent>,
    reply: Box<dyn FnOnce(Result<(), StoreError>) + Send>,
}

type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

/// A handle to the database thread.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    tx: mpsc::Sender<Job>,
}

impl Db {
    /// Starts the thread; it ends when every `Db` handle is dropped.
    pub(crate) fn start(
        conn: Connection,
        events: broadcast::Sender<Arc<HubEvent>>,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(DB_QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("ats-hub-db".to_owned())
            .spawn(move || run(conn, rx, events))?;
        Ok((Self { tx }, handle))
    }

    /// Runs `f` in a transaction on the database thread. On `Ok`, the events are broadcast after
    /// the commit; on `Err`, the job's changes are rolled back.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<(T, Vec<HubEvent>), StoreError> + Send + 'static,
    {
        let (otx, orx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &Connection| {
            // Each job runs inside its own savepoint within the group's transaction.
            let result = conn
                .execute_batch("SAVEPOINT job")
                .map_err(StoreError::Db)
                .and_then(|()| match f(conn) {
                    Ok(ok) => conn
                        .execute_batch("RELEASE job")
                        .map(|()| ok)
                        .map_err(StoreError::Db),
                    Err(e) => Err(e),
                });
            match result {
                Ok((value, events)) => Done {
                    events,
                    reply: Box::new(move |committed: Result<(), StoreError>| {
                        let _ = otx.send(committed.map(|()| value));
                    }),
                },
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    Done {
                        events: Vec::new(),
                        reply: Box::new(move |_| {
                            let _ = otx.send(Err(e));
                        }),
                    }
                }
            }
        });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        orx.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, events: broadcast::Sender<Arc<HubEvent>>) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < GROUP_COMMIT_MAX {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "hub database: cannot begin a transaction");
        }
        let done: Vec<Done> = batch.drain(..).map(|job| job(&conn)).collect();
        // Answer only after the commit, so an acknowledged change is durable.
        match conn.execute_batch("COMMIT") {
            Ok(()) => {
                for d in done {
                    (d.reply)(Ok(()));
                    for ev in d.events {
                        // No subscriber is fine.
                        let _ = events.send(Arc::new(ev));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "hub database: commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                let msg = e.to_string();
                for d in done {
                    (d.reply)(Err(StoreError::Commit(msg.clone())));
                }
            }
        }
    }
    tracing::debug!("hub database thread stopped");
}
