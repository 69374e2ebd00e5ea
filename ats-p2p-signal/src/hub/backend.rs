//! Where the handlers' jobs run: the SQLite database thread or the PostgreSQL workers. Both
//! run the same store functions in a transaction per request.

use super::db::Db;
use super::pg::PgDb;
use super::store::sql::Sql;
use super::store::{HubEvent, StoreError};

/// The hub's storage.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// One SQLite file behind one database thread.
    Sqlite(Db),
    /// A PostgreSQL database, possibly shared with other hub instances.
    Postgres(PgDb),
}

impl Backend {
    /// Runs `f` in a transaction; on `Ok` its events reach the WebSockets after the commit (on
    /// PostgreSQL through the events table, so every instance's subscribers get them).
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<(T, Vec<HubEvent>), StoreError> + Send + 'static,
    {
        match self {
            Self::Sqlite(db) => db.call(f).await,
            Self::Postgres(pg) => pg.call(f).await,
        }
    }

    /// A handle whose jobs never take an injected fault (the hub's own upkeep).
    pub(crate) fn unfaulted(&self) -> Self {
        match self {
            Self::Sqlite(db) => Self::Sqlite(db.unfaulted()),
            Self::Postgres(pg) => Self::Postgres(pg.clone()),
        }
    }

    /// Arms a fault for the next job (SQLite's database thread only; tests only).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn inject_fault(&self, fault: super::db::faults::DbFault) {
        if let Self::Sqlite(db) = self {
            db.inject_fault(fault);
        }
    }
}
