//! Versioned schema migrations of the hub's databases.
//!
//! PostgreSQL: migration `n` is `migrations/postgres/000n_*.sql`; the `schema_migrations` table
//! lists those that ran. Each runs in a transaction of its own that first takes an advisory
//! lock ([`MIGRATION_LOCK`]), so hub instances starting together migrate one after another and
//! the later ones find the work done.
//!
//! SQLite:
//! Migration `n` (1-based) is `migrations/sqlite/000n_*.sql`; the database's `user_version`
//! says how many have run. At open, the missing ones run in order, each in a transaction of
//! its own together with its version bump, so a crash leaves the database at one version or
//! the next, never between. A database whose version is past [`SQLITE`] was written by a newer
//! hub and is refused rather than guessed at. New migrations are appended, never edited.

use rusqlite::Connection;

use super::StoreError;

/// The PostgreSQL migrations, oldest first.
pub const POSTGRES: &[&str] = &[include_str!("migrations/postgres/0001_initial.sql")];

/// Advisory lock key held by a PostgreSQL migration (`ATSHUB` and 2).
pub const MIGRATION_LOCK: i64 = 0x4154_5348_5542_0002;

/// Runs the PostgreSQL migrations the database has not had yet.
pub fn migrate_postgres(client: &mut postgres::Client) -> Result<(), StoreError> {
    let known = i64::try_from(POSTGRES.len()).unwrap_or(i64::MAX);
    for (version, sql) in (1i64..).zip(POSTGRES) {
        let mut tx = client.transaction()?;
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
             CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             );"
        ))?;
        let found: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )?
            .try_get(0)?;
        if found > known {
            return Err(StoreError::SchemaTooNew { found, known });
        }
        if found >= version {
            continue;
        }
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )?;
        tx.commit()?;
        tracing::info!(version, "hub PostgreSQL database migrated");
    }
    Ok(())
}

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
