//! The little SQL the store functions need, over either database: [`Sql`] is implemented by a
//! SQLite connection and by a PostgreSQL transaction (`hub/pg.rs`), so every rule of the hub
//! has one home whichever database holds the data.
//!
//! Statements are written once, in the common subset of both dialects, with `?N` placeholders
//! (PostgreSQL's `$N` is substituted by its implementation). Where the dialects differ the store
//! asks [`Sql::dialect`].

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::StoreError;

/// Which database a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite (one writer: the hub's database thread).
    Sqlite,
    /// PostgreSQL (several hub instances may write at once).
    Postgres,
}

/// A value bound to a placeholder or read from a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}

impl<T: Into<Self>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

impl From<&Option<String>> for Val {
    fn from(v: &Option<String>) -> Self {
        v.as_deref().into()
    }
}

/// Builds a `&[Val]` of placeholder values.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::hub::store::sql::Val::from($v)),*][..] };
}
pub(crate) use vals;

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlRow(pub Vec<Val>);

fn column_error(idx: usize, want: &str, got: &Val) -> StoreError {
    StoreError::Column(format!("column {idx}: expected {want}, found {got:?}"))
}

impl SqlRow {
    fn at(&self, idx: usize) -> &Val {
        self.0.get(idx).unwrap_or(&Val::Null)
    }

    /// An integer column.
    pub fn int(&self, idx: usize) -> Result<i64, StoreError> {
        match self.at(idx) {
            Val::Int(v) => Ok(*v),
            v => Err(column_error(idx, "an integer", v)),
        }
    }

    /// A text column.
    pub fn text(&self, idx: usize) -> Result<String, StoreError> {
        match self.at(idx) {
            Val::Text(v) => Ok(v.clone()),
            v => Err(column_error(idx, "text", v)),
        }
    }

    /// A text column that may be NULL.
    pub fn opt_text(&self, idx: usize) -> Result<Option<String>, StoreError> {
        match self.at(idx) {
            Val::Null => Ok(None),
            Val::Text(v) => Ok(Some(v.clone())),
            v => Err(column_error(idx, "text or NULL", v)),
        }
    }

    /// A number column that may be NULL.
    pub fn opt_real(&self, idx: usize) -> Result<Option<f64>, StoreError> {
        match self.at(idx) {
            Val::Null => Ok(None),
            Val::Real(v) => Ok(Some(*v)),
            #[allow(clippy::cast_precision_loss)]
            Val::Int(v) => Ok(Some(*v as f64)),
            v => Err(column_error(idx, "a number or NULL", v)),
        }
    }
}

/// What the store needs from a database connection inside a transaction.
pub trait Sql {
    /// The database's dialect.
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns the number of rows changed.
    fn execute(&self, sql: &str, params: &[Val]) -> Result<u64, StoreError>;
    /// Runs a query; returns all its rows.
    fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<SqlRow>, StoreError>;
    /// Runs an `INSERT` into a table with an `id` key; returns the new row's id.
    fn insert(&self, sql: &str, params: &[Val]) -> Result<i64, StoreError>;
    /// Orders this transaction's events among every writer's (PostgreSQL: a transaction-level
    /// advisory lock held until commit, so events commit in the order of their ids and a reader
    /// of `id > last` never skips one that commits later). A no-op where one writer commits
    /// everything in order (SQLite).
    fn order_events(&self) -> Result<(), StoreError>;
}

/// The first row of a query, if any.
pub fn query_opt(c: &dyn Sql, sql: &str, params: &[Val]) -> Result<Option<SqlRow>, StoreError> {
    Ok(c.query(sql, params)?.into_iter().next())
}

/// The single integer of a query such as `SELECT COUNT(*) ...`.
pub fn query_int(c: &dyn Sql, sql: &str, params: &[Val]) -> Result<i64, StoreError> {
    match query_opt(c, sql, params)? {
        Some(row) => row.int(0),
        None => Err(StoreError::Column(format!("no row from {sql}"))),
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Self::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Self::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Self::Real(v) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Self::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
        })
    }
}

fn sqlite_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SqlRow> {
    let n = row.as_ref().column_count();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match row.get_ref(i)? {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(v) => Val::Int(v),
            ValueRef::Real(v) => Val::Real(v),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Val::Text(String::from_utf8_lossy(t).into_owned())
            }
        });
    }
    Ok(SqlRow(out))
}

impl Sql for Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        let n = self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<SqlRow>, StoreError> {
        let mut st = self.prepare_cached(sql)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(params), sqlite_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    fn insert(&self, sql: &str, params: &[Val]) -> Result<i64, StoreError> {
        self.prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(self.last_insert_rowid())
    }

    fn order_events(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
