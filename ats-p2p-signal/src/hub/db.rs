//! The database thread: owns the SQLite connection, runs jobs one at a time in a transaction,
//! and publishes their events in commit order. Async code never blocks on SQLite.
//!
//! A panic is contained: a job that panics fails alone (its savepoint is rolled back, its caller
//! gets a 500), and a panic anywhere else in the loop rolls back the open transaction (the jobs
//! of that group fail) and the loop goes on. No panic turns later requests into errors.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::fanout::Fanout;
use super::store::sql::Sql;
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
    #[cfg(feature = "test-hooks")]
    faults: faults::Faults,
}

impl Db {
    /// Starts the thread; it ends when every `Db` handle is dropped.
    pub(crate) fn start(
        conn: Connection,
        fanout: Fanout,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(DB_QUEUE_DEPTH);
        #[cfg(feature = "test-hooks")]
        let faults = faults::Faults::default();
        let worker = Worker {
            conn,
            fanout,
            #[cfg(feature = "test-hooks")]
            faults: faults.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("ats-hub-db".to_owned())
            .spawn(move || worker.run(rx))?;
        Ok((
            Self {
                tx,
                #[cfg(feature = "test-hooks")]
                faults,
            },
            handle,
        ))
    }

    /// Runs `f` in a transaction on the database thread. On `Ok`, the events are published after
    /// the commit; on `Err`, the job's changes are rolled back.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<(T, Vec<HubEvent>), StoreError> + Send + 'static,
    {
        let (otx, orx) = oneshot::channel();
        #[cfg(feature = "test-hooks")]
        let (fault, faults) = (self.faults.take(), self.faults.clone());
        let job: Job = Box::new(move |conn: &Connection| {
            #[cfg(feature = "test-hooks")]
            faults.strike(fault);
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
        // The reply is dropped unanswered only when the job (or its group) panicked.
        orx.await.map_err(|_| StoreError::JobLost)?
    }

    /// Arms a fault for the next job sent through a handle that may be faulted (tests only).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn inject_fault(&self, fault: faults::DbFault) {
        self.faults.arm(fault);
    }

    /// A handle whose jobs never take an injected fault (the hub's own upkeep, so that a test's
    /// fault hits the request it aims at).
    pub(crate) fn unfaulted(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            #[cfg(feature = "test-hooks")]
            faults: self.faults.unfaulted(),
        }
    }
}

/// The thread's state.
struct Worker {
    conn: Connection,
    fanout: Fanout,
    #[cfg(feature = "test-hooks")]
    faults: faults::Faults,
}

/// A panic's message, for the log.
fn panic_message(p: &(dyn Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

impl Worker {
    /// Serves jobs until every handle is gone, recovering from panics.
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.serve(&mut rx))) {
                Ok(()) => break,
                Err(p) => {
                    tracing::error!(
                        panic = panic_message(p.as_ref()),
                        "hub database thread panicked; the open transaction is rolled back and \
                         the thread goes on"
                    );
                    if !self.conn.is_autocommit()
                        && let Err(e) = self.conn.execute_batch("ROLLBACK")
                    {
                        tracing::error!(error = %e, "hub database: rollback after a panic failed");
                    }
                }
            }
        }
        tracing::debug!("hub database thread stopped");
    }

    /// Runs one job, containing a panic to it: its savepoint is rolled back and its caller,
    /// whose reply is dropped, gets [`StoreError::JobLost`].
    fn run_job(&self, job: Job) -> Option<Done> {
        let conn = &self.conn;
        let ran = catch_unwind(AssertUnwindSafe(|| job(conn)));
        match ran {
            Ok(done) => Some(done),
            Err(p) => {
                tracing::error!(
                    panic = panic_message(p.as_ref()),
                    "hub database job panicked"
                );
                // The savepoint may or may not be open, depending on where the panic hit.
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                None
            }
        }
    }

    fn serve(&self, rx: &mut mpsc::Receiver<Job>) {
        let conn = &self.conn;
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
            let done: Vec<Done> = batch
                .drain(..)
                .filter_map(|job| self.run_job(job))
                .collect();
            #[cfg(feature = "test-hooks")]
            self.faults.before_commit();
            // Answer only after the commit, so an acknowledged change is durable.
            match conn.execute_batch("COMMIT") {
                Ok(()) => {
                    let mut events = Vec::new();
                    for d in done {
                        (d.reply)(Ok(()));
                        events.extend(d.events);
                    }
                    self.fanout.publish(events);
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
    }
}

/// Faults tests can inject into the database thread (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
pub(crate) mod faults {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

    /// Where an injected panic happens.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u8)]
    pub enum DbFault {
        /// Inside the next request's job (that request fails alone).
        InJob = 1,
        /// After the group holding the next request's job ran, before its commit (the whole
        /// group fails).
        AtCommit = 2,
    }

    /// The armed fault, shared by the handles and the thread.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Faults {
        armed: Arc<AtomicU8>,
        panic_before_commit: Arc<AtomicBool>,
        /// Whether jobs of this handle take armed faults.
        immune: bool,
    }

    impl Faults {
        pub(crate) fn arm(&self, f: DbFault) {
            self.armed.store(f as u8, Ordering::SeqCst);
        }

        /// The same faults, never taken by this handle's jobs.
        pub(crate) fn unfaulted(&self) -> Self {
            Self {
                immune: true,
                ..self.clone()
            }
        }

        /// Disarms and returns the armed fault, for a job about to be sent.
        pub(crate) fn take(&self) -> Option<DbFault> {
            if self.immune {
                return None;
            }
            match self.armed.swap(0, Ordering::SeqCst) {
                1 => Some(DbFault::InJob),
                2 => Some(DbFault::AtCommit),
                _ => None,
            }
        }

        /// Runs in the job, on the database thread.
        pub(crate) fn strike(&self, fault: Option<DbFault>) {
            match fault {
                Some(DbFault::InJob) => panic!("injected database fault in a job"),
                Some(DbFault::AtCommit) => self.panic_before_commit.store(true, Ordering::SeqCst),
                None => {}
            }
        }

        /// Runs before each commit, on the database thread.
        pub(crate) fn before_commit(&self) {
            if self.panic_before_commit.swap(false, Ordering::SeqCst) {
                panic!("injected database fault before a commit");
            }
        }
    }
}
