//! The PostgreSQL backend: several hub instances on one database.
//!
//! - **Jobs.** [`PG_WORKERS`] threads, each with its own connection, run the store's functions
//!   (the same as on SQLite, through [`Sql`]) one transaction per request. A change to a task
//!   locks its row (`SELECT … FOR UPDATE`), so two hubs claiming one task take turns and the
//!   second sees the first's claim: exactly one wins.
//! - **Events.** A transaction that records events first takes a transaction-level advisory
//!   lock ([`EVENT_ORDER_LOCK`]) and only then draws its event ids, so events commit in the order
//!   of their ids across every instance. A reader of `id > last` therefore never skips an event
//!   that commits later with a lower id.
//! - **Fan-out.** Each instance's tailer thread reads the events table in id order and feeds its
//!   own WebSockets, whichever instance made the change. `NOTIFY` only wakes it; it also polls
//!   every [`TAIL_POLL`], so a lost notification delays an event, never loses it.
//!
//! The connection has no TLS: reach the database over a Unix socket, loopback, or a network
//! you trust.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::fanout::{Fanout, Frame};
use super::store::sql::{Dialect, Sql, SqlRow, Val};
use super::store::{self, HubEvent, StoreError, migrations};

/// Connections (and threads) of one hub instance.
pub(crate) const PG_WORKERS: usize = 8;

/// Jobs waiting for a connection; a full queue makes handlers wait (backpressure).
const PG_QUEUE_DEPTH: usize = 1024;

/// The `NOTIFY` channel that wakes every instance's tailer after a commit with events.
const EVENTS_CHANNEL: &str = "ats_hub_events";

/// Advisory lock key that orders event-writing transactions (`ATSHUB` and 1).
pub(crate) const EVENT_ORDER_LOCK: i64 = 0x4154_5348_5542_0001;

/// The longest a committed event waits for the tailer when its notification is lost.
pub(crate) const TAIL_POLL: Duration = Duration::from_millis(500);

/// Most events the tailer reads at once.
const TAIL_BATCH: i64 = 1000;

/// Most prepared statements one connection keeps (list queries vary in their limits).
const STATEMENT_CACHE: usize = 256;

/// Pause before connecting again after the database went away.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

type PgJob = Box<dyn FnOnce(&mut PgConn) + Send>;

/// A handle to this instance's PostgreSQL workers.
#[derive(Debug, Clone)]
pub(crate) struct PgDb {
    tx: mpsc::Sender<PgJob>,
}

/// What [`PgDb::start`] leaves running.
pub(crate) struct PgThreads {
    /// The workers and the tailer.
    pub(crate) threads: Vec<std::thread::JoinHandle<()>>,
    /// Set to stop the tailer.
    pub(crate) stop: Arc<AtomicBool>,
}

fn connect(config: &postgres::Config) -> Result<Client, StoreError> {
    Ok(config.connect(NoTls)?)
}

impl PgDb {
    /// Connects, runs the migrations, creates the default project, and starts the workers and
    /// the tailer (which forwards events committed from now on to `fanout`).
    pub(crate) fn start(
        config: postgres::Config,
        fanout: Fanout,
    ) -> Result<(Self, PgThreads), StoreError> {
        let mut client = connect(&config)?;
        migrations::migrate_postgres(&mut client)?;
        let mut conn = PgConn {
            config: config.clone(),
            client: Some(client),
            cache: HashMap::new(),
        };
        conn.transaction(|c| store::create_default_project(c, chrono::Utc::now()))?;
        let last = conn.transaction(|c| {
            store::sql::query_int(c, "SELECT COALESCE(MAX(id), 0) FROM events", &[])
        })?;
        let (tx, rx) = mpsc::channel::<PgJob>(PG_QUEUE_DEPTH);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(PG_WORKERS + 1);
        let mut first = Some(conn);
        for i in 0..PG_WORKERS {
            let rx = rx.clone();
            let conn = first.take().unwrap_or_else(|| PgConn {
                config: config.clone(),
                client: None,
                cache: HashMap::new(),
            });
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ats-hub-pg-{i}"))
                    .spawn(move || work(conn, &rx))?,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let tail_stop = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ats-hub-pg-tail".to_owned())
                .spawn(move || tail(&config, &fanout, &tail_stop, last))?,
        );
        Ok((Self { tx }, PgThreads { threads, stop }))
    }

    /// Runs `f` in a transaction on a worker. The events it returns are not published here:
    /// the tailer forwards them from the events table, in the order of every instance's commits.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Sql) -> Result<(T, Vec<HubEvent>), StoreError> + Send + 'static,
    {
        let (otx, orx) = oneshot::channel();
        let job: PgJob = Box::new(move |conn: &mut PgConn| {
            let result = conn.transaction(|c| f(c).map(|(value, _events)| value));
            let _ = otx.send(result);
        });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        orx.await.map_err(|_| StoreError::JobLost)?
    }
}

/// One worker's connection (reconnected when the database went away) and its statements.
struct PgConn {
    config: postgres::Config,
    client: Option<Client>,
    cache: HashMap<String, Statement>,
}

impl PgConn {
    /// Runs `f` in a transaction, committing on `Ok`.
    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&dyn Sql) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.cache.clear();
            self.client = Some(connect(&self.config)?);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(StoreError::Closed);
        };
        let mut tx = client.transaction()?;
        let value = {
            let sql = PgTx {
                tx: RefCell::new(&mut tx),
                cache: RefCell::new(&mut self.cache),
                events_ordered: Cell::new(false),
            };
            f(&sql)?
        };
        tx.commit()?;
        Ok(value)
    }
}

/// A worker: takes jobs until every handle is gone; a panicking job fails alone.
fn work(mut conn: PgConn, rx: &Mutex<mpsc::Receiver<PgJob>>) {
    loop {
        let job = rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocking_recv();
        let Some(job) = job else { break };
        if catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!("hub database job panicked; its transaction is rolled back");
            // The transaction was rolled back as it unwound; start afresh to be sure.
            conn.client = None;
        }
    }
    tracing::debug!("hub PostgreSQL worker stopped");
}

/// The tailer: forwards committed events to this instance's WebSockets in id order.
fn tail(config: &postgres::Config, fanout: &Fanout, stop: &AtomicBool, mut last: i64) {
    while !stop.load(Ordering::Acquire) {
        let mut client = match connect(config) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "hub event tailer cannot connect; retrying");
                std::thread::sleep(RECONNECT_PAUSE);
                continue;
            }
        };
        if let Err(e) = tail_connected(&mut client, fanout, stop, &mut last) {
            tracing::warn!(error = %e, "hub event tailer lost its connection; reconnecting");
            std::thread::sleep(RECONNECT_PAUSE);
        }
    }
    tracing::debug!("hub event tailer stopped");
}

fn tail_connected(
    client: &mut Client,
    fanout: &Fanout,
    stop: &AtomicBool,
    last: &mut i64,
) -> Result<(), postgres::Error> {
    client.batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))?;
    let read = client.prepare(
        "SELECT id, type, channel, task_type, frame FROM events WHERE id > $1 ORDER BY id \
         LIMIT $2",
    )?;
    while !stop.load(Ordering::Acquire) {
        let rows = client.query(&read, &[&*last, &TAIL_BATCH])?;
        let full = i64::try_from(rows.len()).unwrap_or(i64::MAX) >= TAIL_BATCH;
        let mut frames = Vec::with_capacity(rows.len());
        for row in rows {
            *last = row.try_get(0)?;
            frames.push(Frame {
                event_type: row.try_get(1)?,
                channel: row.try_get(2)?,
                task_type: row.try_get(3)?,
                text: row.try_get::<_, String>(4)?.into(),
            });
        }
        fanout.publish_frames(frames);
        if full {
            continue;
        }
        // Wait for a notification or the poll interval, then drop the rest already queued.
        let mut notes = client.notifications();
        notes.timeout_iter(TAIL_POLL).next()?;
        while notes.iter().next()?.is_some() {}
    }
    Ok(())
}

/// One transaction, as the store sees it.
struct PgTx<'a, 'c> {
    tx: RefCell<&'a mut Transaction<'c>>,
    cache: RefCell<&'a mut HashMap<String, Statement>>,
    events_ordered: Cell<bool>,
}

/// `?N` placeholders to PostgreSQL's `$N`.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

impl PgTx<'_, '_> {
    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        let sql = dollar_placeholders(sql);
        let mut cache = self.cache.borrow_mut();
        if let Some(st) = cache.get(&sql) {
            return Ok(st.clone());
        }
        let st = self.tx.borrow_mut().prepare(&sql)?;
        if cache.len() >= STATEMENT_CACHE {
            cache.clear();
        }
        cache.insert(sql, st.clone());
        Ok(st)
    }

    fn rows(&self, sql: &str, params: &[Val]) -> Result<Vec<postgres::Row>, StoreError> {
        let st = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        Ok(self.tx.borrow_mut().query(&st, &params)?)
    }
}

fn column(row: &postgres::Row, idx: usize) -> Result<Val, StoreError> {
    let ty = row.columns().get(idx).map(|c| c.type_().clone());
    let v = match ty {
        Some(Type::INT8) => row.try_get::<_, Option<i64>>(idx)?.map(Val::Int),
        Some(Type::INT4) => row
            .try_get::<_, Option<i32>>(idx)?
            .map(|v| Val::Int(v.into())),
        Some(Type::INT2) => row
            .try_get::<_, Option<i16>>(idx)?
            .map(|v| Val::Int(v.into())),
        Some(Type::FLOAT8) => row.try_get::<_, Option<f64>>(idx)?.map(Val::Real),
        Some(Type::FLOAT4) => row
            .try_get::<_, Option<f32>>(idx)?
            .map(|v| Val::Real(v.into())),
        Some(Type::BOOL) => row
            .try_get::<_, Option<bool>>(idx)?
            .map(|v| Val::Int(v.into())),
        Some(Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR) => {
            row.try_get::<_, Option<String>>(idx)?.map(Val::Text)
        }
        other => {
            return Err(StoreError::Column(format!(
                "column {idx} has a type the hub does not read: {other:?}"
            )));
        }
    };
    Ok(v.unwrap_or(Val::Null))
}

impl Sql for PgTx<'_, '_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        let st = self.statement(sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        Ok(self.tx.borrow_mut().execute(&st, &params)?)
    }

    fn query(&self, sql: &str, params: &[Val]) -> Result<Vec<SqlRow>, StoreError> {
        self.rows(sql, params)?
            .iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| column(row, i))
                    .collect::<Result<Vec<_>, _>>()
                    .map(SqlRow)
            })
            .collect()
    }

    fn insert(&self, sql: &str, params: &[Val]) -> Result<i64, StoreError> {
        let rows = self.rows(&format!("{sql} RETURNING id"), params)?;
        match rows.first() {
            Some(row) => Ok(row.try_get(0)?),
            None => Err(StoreError::Column("INSERT returned no id".to_owned())),
        }
    }

    fn order_events(&self) -> Result<(), StoreError> {
        if !self.events_ordered.replace(true) {
            // Held until this transaction ends; the notification is delivered at its commit.
            self.tx.borrow_mut().batch_execute(&format!(
                "SELECT pg_advisory_xact_lock({EVENT_ORDER_LOCK}); NOTIFY {EVENTS_CHANNEL}"
            ))?;
        }
        Ok(())
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Val {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Self::Null => Ok(IsNull::Yes),
            Self::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                #[allow(clippy::cast_precision_loss)]
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => v.to_string().to_sql(ty, out),
            },
            Self::Real(v) => v.to_sql(ty, out),
            Self::Text(v) => v.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12 OR d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 OR d = '?'"
        );
    }
}
