//! SQLite implementations of every repository trait and of the graph checkpointer.
//!
//! One pool per database file (WAL, `busy_timeout` 5 s, foreign keys on). Reads run on any
//! pooled connection; every write runs in a `BEGIN IMMEDIATE` transaction (the writer lock is
//! taken up front, so a transaction never fails half-way on a lock upgrade) and is retried
//! with backoff when SQLite still reports BUSY/LOCKED.

mod assistants;
mod checkpointer;
mod events;
mod feedback;
mod items;
mod runs;
mod threads;
mod write_lock;

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use antler_store::{StoreError, StoreResult, Stores};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

pub use assistants::SqliteAssistantStore;
pub use checkpointer::{MAX_DELTA_DEPTH, SqliteCheckpointer};
pub use events::SqliteRunEventStore;
pub use feedback::SqliteFeedbackStore;
pub use items::SqliteItemStore;
pub use runs::SqliteRunStore;
pub use threads::SqliteThreadStore;
pub(crate) use write_lock::{Priority, WriteGuard, WriteLock};

/// Embedded migrations (`migrations/sqlite/*.sql`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "antler.db";

/// Opens (creating it if needed) `dir/antler.db`, runs the migrations and returns every store.
pub async fn open_sqlite(dir: &Path) -> StoreResult<Stores> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Backend(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let opts = SqliteConnectOptions::new()
        .filename(dir.join(DB_FILE))
        .create_if_missing(true);
    let pool = connect(opts, false).await?;
    Ok(stores_from_pool(pool))
}

/// Opens a database by URL (`sqlite://path/to/file.db`, `sqlite::memory:`), runs the
/// migrations and returns every store.
pub async fn open_sqlite_url(url: &str) -> StoreResult<Stores> {
    Ok(stores_from_pool(connect_pool(url).await?))
}

/// Opens a pool by URL with Antler's pragmas and runs the migrations.
pub async fn connect_pool(url: &str) -> StoreResult<SqlitePool> {
    if !url.starts_with("sqlite:") {
        return Err(StoreError::InvalidArgument(format!(
            "invalid SQLite URL '{url}': expected sqlite://<path> or sqlite::memory:"
        )));
    }
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidArgument(format!("invalid SQLite URL '{url}': {e}")))?
        .create_if_missing(true);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    connect(opts, in_memory).await
}

async fn connect(opts: SqliteConnectOptions, in_memory: bool) -> StoreResult<SqlitePool> {
    let opts = opts
        .journal_mode(if in_memory {
            SqliteJournalMode::Memory
        } else {
            SqliteJournalMode::Wal
        })
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    // An in-memory database exists once per connection: keep exactly one, forever.
    let pool_opts = if in_memory {
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
    };
    let pool = pool_opts
        .acquire_timeout(Duration::from_secs(30))
        // in-process database: no dead sockets to detect, skip the ping on every acquire
        .test_before_acquire(false)
        .connect_with(opts)
        .await
        .map_err(map_err)?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| StoreError::Backend(format!("SQLite migration failed: {e}")))?;
    Ok(pool)
}

/// Every store over one pool.
pub fn stores_from_pool(pool: SqlitePool) -> Stores {
    let db = Db::new(pool);
    Stores {
        assistants: Arc::new(SqliteAssistantStore { db: db.clone() }),
        threads: Arc::new(SqliteThreadStore { db: db.clone() }),
        runs: Arc::new(SqliteRunStore { db: db.clone() }),
        events: Arc::new(SqliteRunEventStore { db: db.clone() }),
        feedback: Arc::new(SqliteFeedbackStore { db: db.clone() }),
        items: Arc::new(SqliteItemStore { db: db.clone() }),
        checkpoints: Arc::new(SqliteCheckpointer::with_db(db)),
    }
}

/// The shared pool plus the write/retry discipline.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(crate) pool: SqlitePool,
    /// Serializes this process's write transactions. SQLite admits one writer at a time
    /// anyway; queueing here (async, acknowledgement writes first: see [`WriteLock`]) instead
    /// of in SQLite's busy handler (which sleeps and polls) keeps write latency flat under
    /// concurrency. Other processes are still handled by `busy_timeout` + retry.
    write_lock: Arc<WriteLock>,
}

impl Db {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Db {
            pool,
            write_lock: Arc::new(WriteLock::default()),
        }
    }
}

/// A `BEGIN IMMEDIATE` transaction holding the process-wide write lock until commit/drop.
/// Derefs to the connection, so `&mut *tx` is an executor.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _guard: WriteGuard,
}

impl WriteTx {
    /// Commits (dropping without commit rolls back).
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

const MAX_ATTEMPTS: u32 = 8;

/// A statement rebuilt on every retry (binds are owned).
pub(crate) type Stmt = sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>;

impl Db {
    /// Takes this process's write lock without a transaction, for
    /// sequences of autocommit statements whose partial completion is harmless.
    pub(crate) async fn lock_write(&self) -> WriteGuard {
        self.write_lock.acquire(Priority::Background).await
    }

    /// [`lock_write`](Self::lock_write) for a write a client waits on to be acknowledged (a
    /// new run or thread): it goes before queued background writes.
    pub(crate) async fn lock_write_ack(&self) -> WriteGuard {
        self.write_lock.acquire(Priority::Ack).await
    }

    /// Runs one write statement in autocommit mode (a single statement is atomic on its own;
    /// skipping BEGIN/COMMIT saves two round trips to the connection's worker thread), under
    /// the process write lock, with retries.
    pub(crate) async fn execute_one<F>(
        &self,
        build: F,
    ) -> StoreResult<sqlx::sqlite::SqliteQueryResult>
    where
        F: Fn() -> Stmt + Send + Sync,
    {
        let build = &build;
        self.retry(|| async move {
            let _guard = self.lock_write().await;
            build().execute(&self.pool).await.map_err(map_err)
        })
        .await
    }

    /// Starts a write transaction with `BEGIN IMMEDIATE` (takes the writer lock up front).
    pub(crate) async fn begin(&self) -> StoreResult<WriteTx> {
        self.begin_as(Priority::Background).await
    }

    /// [`begin`](Self::begin) for a transaction a client waits on for its acknowledgement.
    pub(crate) async fn begin_ack(&self) -> StoreResult<WriteTx> {
        self.begin_as(Priority::Ack).await
    }

    async fn begin_as(&self, priority: Priority) -> StoreResult<WriteTx> {
        let guard = self.write_lock.acquire(priority).await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        Ok(WriteTx { tx, _guard: guard })
    }

    /// Runs `f` (a read, or a whole write transaction that begins and commits itself),
    /// retrying it with exponential backoff while SQLite reports BUSY/LOCKED.
    pub(crate) async fn retry<T, F, Fut>(&self, mut f: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Err(StoreError::Transient(msg)) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, %msg, "SQLite busy, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(7);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

/// Maps a sqlx error into the store's error set (BUSY/LOCKED/pool timeouts are transient,
/// uniqueness violations are conflicts).
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut => StoreError::Transient(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            match code & 0xff {
                // SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)
                5 | 6 => StoreError::Transient(db.message().to_string()),
                _ if db.is_unique_violation() => StoreError::Conflict(db.message().to_string()),
                _ => StoreError::Backend(db.message().to_string()),
            }
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

// ------------------------------------------------------------------------ column helpers

pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    antler_store::time::format(t)
}

pub(crate) fn ts_opt(t: &Option<DateTime<Utc>>) -> Option<String> {
    t.as_ref().map(ts)
}

pub(crate) fn json(v: &Value) -> String {
    v.to_string()
}

pub(crate) fn json_map(m: &Map<String, Value>) -> String {
    // Map -> JSON text never fails.
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_string())
}

fn col_err(name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("bad stored value in column {name}: {e}"))
}

pub(crate) fn get_str(row: &SqliteRow, name: &str) -> StoreResult<String> {
    row.try_get::<String, _>(name).map_err(|e| col_err(name, e))
}

pub(crate) fn get_opt_str(row: &SqliteRow, name: &str) -> StoreResult<Option<String>> {
    row.try_get::<Option<String>, _>(name)
        .map_err(|e| col_err(name, e))
}

pub(crate) fn get_i64(row: &SqliteRow, name: &str) -> StoreResult<i64> {
    row.try_get::<i64, _>(name).map_err(|e| col_err(name, e))
}

pub(crate) fn get_ts(row: &SqliteRow, name: &str) -> StoreResult<DateTime<Utc>> {
    let s = get_str(row, name)?;
    antler_store::time::parse(&s).map_err(|e| col_err(name, e))
}

pub(crate) fn get_opt_ts(row: &SqliteRow, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
    get_opt_str(row, name)?
        .map(|s| antler_store::time::parse(&s).map_err(|e| col_err(name, e)))
        .transpose()
}

pub(crate) fn get_json(row: &SqliteRow, name: &str) -> StoreResult<Value> {
    let s = get_str(row, name)?;
    serde_json::from_str(&s).map_err(|e| col_err(name, e))
}

pub(crate) fn get_opt_json(row: &SqliteRow, name: &str) -> StoreResult<Option<Value>> {
    get_opt_str(row, name)?
        .map(|s| serde_json::from_str(&s).map_err(|e| col_err(name, e)))
        .transpose()
}

pub(crate) fn get_map(row: &SqliteRow, name: &str) -> StoreResult<Map<String, Value>> {
    match get_json(row, name)? {
        Value::Object(m) => Ok(m),
        other => Err(col_err(
            name,
            format!("expected a JSON object, got {other}"),
        )),
    }
}

pub(crate) fn parse_enum<T: FromStr<Err = StoreError>>(
    row: &SqliteRow,
    name: &str,
) -> StoreResult<T> {
    get_str(row, name)?.parse::<T>()
}

// ------------------------------------------------------------------------ JSON filters

fn simple_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Nested filter values deeper than this compare as JSON text (key order then matters).
const MAX_FILTER_DEPTH: usize = 8;

/// Most values (keys, array items, nested) one filter may hold.
const MAX_FILTER_NODES: usize = 200;

/// Appends one segment (object key) to a JSON path.
pub(crate) fn path_key(path: &str, key: &str) -> StoreResult<String> {
    if simple_key(key) {
        Ok(format!("{path}.{key}"))
    } else if key.contains('"') {
        Err(StoreError::InvalidArgument(format!(
            "filter key {key:?} must not contain '\"'"
        )))
    } else {
        Ok(format!("{path}.\"{key}\""))
    }
}

/// Pushes a JSON path: inlined when it is made of plain keys and indexes (so expression
/// indexes on `json_extract(col, '$.key')` apply), bound otherwise.
fn push_path(qb: &mut QueryBuilder<Sqlite>, path: &str) {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b'[' | b']'));
    if plain {
        qb.push(format!("'{path}'"));
    } else {
        qb.push_bind(path.to_string());
    }
}

fn push_fn(qb: &mut QueryBuilder<Sqlite>, func: &str, column: &str, path: &str) {
    qb.push(format!("{func}({column}, "));
    push_path(qb, path);
    qb.push(")");
}

/// Pushes a condition true when the JSON at `path` of `column` equals `value`, with the
/// semantics of `antler_store::util::json_eq`: numbers compare by value, objects regardless
/// of key order, arrays element-wise.
fn push_json_eq(
    qb: &mut QueryBuilder<Sqlite>,
    column: &str,
    path: &str,
    value: &Value,
    depth: usize,
    budget: &mut usize,
) -> StoreResult<()> {
    // SQLite caps expression depth (1000): refuse filters that would build huge queries.
    *budget = budget.checked_sub(1).ok_or_else(|| {
        StoreError::InvalidArgument(format!(
            "filter too large (at most {MAX_FILTER_NODES} values)"
        ))
    })?;
    match value {
        Value::Null => {
            push_fn(qb, "json_type", column, path);
            qb.push(" = 'null'");
        }
        Value::Bool(b) => {
            push_fn(qb, "json_type", column, path);
            qb.push(if *b { " = 'true'" } else { " = 'false'" });
        }
        Value::Number(n) => {
            qb.push("(");
            push_fn(qb, "json_type", column, path);
            qb.push(" IN ('integer', 'real') AND ");
            push_fn(qb, "json_extract", column, path);
            qb.push(" = ");
            match n.as_i64() {
                Some(i) => qb.push_bind(i),
                None => qb.push_bind(n.as_f64().unwrap_or(f64::NAN)),
            };
            qb.push(")");
        }
        Value::String(s) => {
            qb.push("(");
            push_fn(qb, "json_extract", column, path);
            qb.push(" = ");
            qb.push_bind(s.clone());
            qb.push(" AND ");
            push_fn(qb, "json_type", column, path);
            qb.push(" = 'text')");
        }
        _ if depth >= MAX_FILTER_DEPTH => {
            qb.push("(");
            push_fn(qb, "json_type", column, path);
            qb.push(" IN ('object', 'array') AND ");
            push_fn(qb, "json_extract", column, path);
            qb.push(" = json(");
            qb.push_bind(value.to_string());
            qb.push("))");
        }
        Value::Array(items) => {
            qb.push("(");
            push_fn(qb, "json_type", column, path);
            qb.push(" = 'array' AND ");
            push_fn(qb, "json_array_length", column, path);
            qb.push(" = ");
            qb.push_bind(lim(items.len()));
            for (i, item) in items.iter().enumerate() {
                qb.push(" AND ");
                push_json_eq(qb, column, &format!("{path}[{i}]"), item, depth + 1, budget)?;
            }
            qb.push(")");
        }
        Value::Object(map) => {
            qb.push("(");
            push_fn(qb, "json_type", column, path);
            qb.push(format!(
                " = 'object' AND (SELECT COUNT(*) FROM json_each({column}, "
            ));
            push_path(qb, path);
            qb.push(")) = ");
            qb.push_bind(lim(map.len()));
            for (k, v) in map {
                qb.push(" AND ");
                push_json_eq(qb, column, &path_key(path, k)?, v, depth + 1, budget)?;
            }
            qb.push(")");
        }
    }
    Ok(())
}

/// Appends ` AND <column>.<key> == value` for every top-level key of `filter` (containment
/// with top-level equality, the rule of `antler_store::util::contains_top_level`).
/// `column` must be a trusted, static, table-qualified column name (`threads.metadata`):
/// unqualified, a column named like one of `json_each`'s (`value`, `key`) would resolve to it.
pub(crate) fn push_json_filter(
    qb: &mut QueryBuilder<Sqlite>,
    column: &'static str,
    filter: &Map<String, Value>,
) -> StoreResult<()> {
    let mut budget = MAX_FILTER_NODES;
    for (key, value) in filter {
        qb.push(" AND ");
        push_json_eq(qb, column, &path_key("$", key)?, value, 0, &mut budget)?;
    }
    Ok(())
}

/// SQL for a sort direction.
pub(crate) fn dir(order: antler_store::SortOrder) -> &'static str {
    match order {
        antler_store::SortOrder::Asc => "ASC",
        antler_store::SortOrder::Desc => "DESC",
    }
}

/// Clamps a usize page value into SQLite's i64.
pub(crate) fn lim(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
