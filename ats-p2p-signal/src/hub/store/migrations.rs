//! Versioned schema migrations of the hub's SQLite database.
//!
//! Migration `n` (1-based) is `migrations/sqlite/000n_*.sql`; the database's `user_version`
//! says how many have run. At open, the missing ones run in order, each in a transaction of
//! its own together with its version bump, so a crash leaves the database at one version or
//! the next, never between. A database whose version is past [`SQLITE`] was written by a newer
//! hub and is refused rather than guessed at. New migrations are appended, never edited.

use rusqlite::Connection;

use super::StoreError;

/// The SQLite migrations, oldest first.
pub const SQLITE: &[&str] = &[include_str!("migrations/sqlite/0001_initial.sql")];

/// The schema version this hub writes: the number of migrations.
pub fn latest() -> i64 {
    i64::try_from(SQLITE.len()).unwrap_or(i64::MAX)
}

/// The database's schema version (`PRAGMA user_version`; 0 for a new or pre-versioning file).
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Runs the migrations the database has not had yet.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let found = version(conn)?;
    let known = latest();
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (done, sql) in (0i64..)
        .zip(SQLITE)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", done + 1)?;
        tx.commit()?;
        tracing::info!(version = done + 1, "hub database migrated");
    }
    Ok(())
}
