//! PostgreSQL implementations of every repository trait and of the graph checkpointer.
//!
//! Same tables and columns as the SQLite backend (`migrations/postgres`), in native types:
//! JSONB, TIMESTAMPTZ, BIGINT, byte-ordered (`COLLATE "C"`) text ids. There is no process
//! write lock: every multi-statement write is a transaction relying on row locks
//! (`SELECT ... FOR UPDATE`, upserts) and unique indexes, so several processes (pools) can
//! share one database. Transient failures (serialization failures, deadlocks, lock timeouts,
//! lost connections, administrator shutdowns) are retried with backoff by [`Db::retry`] and
//! surface as [`StoreError::Transient`] if they persist.
//!
//! Filters (`metadata`, `values`, store `filter`) compile to `(column -> key) = value::jsonb`,
//! which has exactly the semantics of `antler_store::util::json_eq`: numbers by value
//! (`1 = 1.0`), objects regardless of key order, arrays element-wise. Values and non-plain
//! keys are bound; plain keys (`[A-Za-z0-9_]+`) are inlined so the expression indexes on
//! `threads (owner, (metadata -> 'graph_id'))` etc. apply.

mod assistants;
mod checkpointer;
mod events;
mod feedback;
mod items;
mod runs;
mod threads;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use antler_store::{StoreError, StoreResult, Stores};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};

pub use crate::sqlite::MAX_DELTA_DEPTH;
pub use assistants::PostgresAssistantStore;
pub use checkpointer::PostgresCheckpointer;
pub use events::PostgresRunEventStore;
pub use feedback::PostgresFeedbackStore;
pub use items::PostgresItemStore;
pub use runs::PostgresRunStore;
pub use threads::PostgresThreadStore;

/// Embedded migrations (`migrations/postgres/*.sql`). sqlx serializes concurrent migrators
/// with an advisory lock, so several processes may open the same database at once.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Pool settings of [`open_postgres`] / [`connect_pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most connections the pool opens (default 10).
    pub max_connections: u32,
    /// How long a caller waits for a free connection before failing (default 30 s).
    pub acquire_timeout: Duration,
    /// Server-side `statement_timeout` of every connection (default: the server's).
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: None,
        }
    }
}

/// Opens a pool on `url` (`postgres://user@host:port/db`), runs the migrations and returns
/// every store.
pub async fn open_postgres(url: &str, opts: PoolOptions) -> StoreResult<Stores> {
    Ok(stores_from_pool(connect_pool(url, opts).await?))
}

/// Parses and checks a PostgreSQL URL.
fn parse_url(url: &str) -> StoreResult<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::InvalidArgument(format!(
            "invalid PostgreSQL URL '{}': expected postgres://[user[:password]@]host[:port]/database",
            redact(url)
        )));
    }
    PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::InvalidArgument(format!("invalid PostgreSQL URL '{}': {e}", redact(url)))
    })
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// Opens a pool on `url` and runs the migrations.
pub async fn connect_pool(url: &str, opts: PoolOptions) -> StoreResult<PgPool> {
    let mut connect = parse_url(url)?.application_name("antler");
    if let Some(t) = opts.statement_timeout {
        let ms = t.as_millis().max(1).to_string();
        connect = connect.options([("statement_timeout", ms.as_str())]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(opts.max_connections.max(1))
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Backend(msg) => StoreError::Backend(format!(
                "cannot connect to PostgreSQL at '{}': {msg}",
                redact(url)
            )),
            other => other,
        })?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| StoreError::Backend(format!("PostgreSQL migration failed: {e}")))?;
    Ok(pool)
}

/// Every store over one pool (migrations must have run: see [`connect_pool`]).
pub fn stores_from_pool(pool: PgPool) -> Stores {
    let db = Db { pool };
    Stores {
        assistants: Arc::new(PostgresAssistantStore { db: db.clone() }),
        threads: Arc::new(PostgresThreadStore { db: db.clone() }),
        runs: Arc::new(PostgresRunStore { db: db.clone() }),
        events: Arc::new(PostgresRunEventStore { db: db.clone() }),
        feedback: Arc::new(PostgresFeedbackStore { db: db.clone() }),
        items: Arc::new(PostgresItemStore { db: db.clone() }),
        checkpoints: Arc::new(PostgresCheckpointer::with_db(db)),
    }
}

/// The shared pool plus the retry discipline.
#[derive(Clone, Debug)]
pub(crate) struct Db {
    pub(crate) pool: PgPool,
}

const MAX_ATTEMPTS: u32 = 6;

/// Prefix of transient errors that are not retried here: the caller already waited (pool
/// acquire timeout, statement timeout), repeating it would multiply the wait.
const NO_RETRY: &str = "timed out: ";

impl Db {
    /// Starts a transaction (READ COMMITTED).
    pub(crate) async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }

    /// Runs `f` (a read, a single statement, or a whole transaction that begins and commits
    /// itself), retrying it with exponential backoff while it fails transiently.
    pub(crate) async fn retry<T, F, Fut>(&self, mut f: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Err(StoreError::Transient(msg))
                    if attempt < MAX_ATTEMPTS && !msg.starts_with(NO_RETRY) =>
                {
                    tracing::debug!(attempt, %msg, "PostgreSQL transient failure, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(6);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

/// SQLSTATEs worth retrying: serialization_failure, deadlock_detected, lock_not_available,
/// admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections, and the
/// connection exceptions (class 08).
fn transient_state(code: &str) -> bool {
    matches!(
        code,
        "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300"
    ) || code.starts_with("08")
}

/// Maps a sqlx error into the store's error set.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut => {
            StoreError::Transient(format!("{NO_RETRY}no free PostgreSQL connection: {e}"))
        }
        sqlx::Error::PoolClosed => StoreError::Backend(e.to_string()),
        sqlx::Error::Io(_) => StoreError::Transient(format!("PostgreSQL connection lost: {e}")),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.to_string()).unwrap_or_default();
            let msg = db.message().to_string();
            if db.is_unique_violation() {
                StoreError::Conflict(msg)
            } else if code == "57014" {
                StoreError::Transient(format!("{NO_RETRY}statement canceled: {msg}"))
            } else if transient_state(&code) {
                StoreError::Transient(msg)
            } else if code.starts_with("22") || code.starts_with("54") {
                // data exceptions (e.g. "\u0000" in a JSONB string, numbers out of range)
                // and program limits (value too large for an index) come from the input
                StoreError::InvalidArgument(format!("PostgreSQL refused the value: {msg}"))
            } else {
                StoreError::Backend(format!("{msg} (SQLSTATE {code})"))
            }
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

// ------------------------------------------------------------------------ column helpers

fn col_err(name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("bad stored value in column {name}: {e}"))
}

pub(crate) fn get_str(row: &PgRow, name: &str) -> StoreResult<String> {
    row.try_get::<String, _>(name).map_err(|e| col_err(name, e))
}

pub(crate) fn get_opt_str(row: &PgRow, name: &str) -> StoreResult<Option<String>> {
    row.try_get::<Option<String>, _>(name)
        .map_err(|e| col_err(name, e))
}

pub(crate) fn get_i64(row: &PgRow, name: &str) -> StoreResult<i64> {
    row.try_get::<i64, _>(name).map_err(|e| col_err(name, e))
}

pub(crate) fn get_bool(row: &PgRow, name: &str) -> StoreResult<bool> {
    row.try_get::<bool, _>(name).map_err(|e| col_err(name, e))
}

pub(crate) fn get_ts(row: &PgRow, name: &str) -> StoreResult<DateTime<Utc>> {
    row.try_get::<DateTime<Utc>, _>(name)
        .map_err(|e| col_err(name, e))
}

pub(crate) fn get_opt_ts(row: &PgRow, name: &str) -> StoreResult<Option<DateTime<Utc>>> {
    row.try_get::<Option<DateTime<Utc>>, _>(name)
        .map_err(|e| col_err(name, e))
}

pub(crate) fn get_json(row: &PgRow, name: &str) -> StoreResult<Value> {
    row.try_get::<Value, _>(name).map_err(|e| col_err(name, e))
}

pub(crate) fn get_opt_json(row: &PgRow, name: &str) -> StoreResult<Option<Value>> {
    row.try_get::<Option<Value>, _>(name)
        .map_err(|e| col_err(name, e))
}

pub(crate) fn get_map(row: &PgRow, name: &str) -> StoreResult<Map<String, Value>> {
    match get_json(row, name)? {
        Value::Object(m) => Ok(m),
        other => Err(col_err(
            name,
            format!("expected a JSON object, got {other}"),
        )),
    }
}

pub(crate) fn parse_enum<T: FromStr<Err = StoreError>>(row: &PgRow, name: &str) -> StoreResult<T> {
    get_str(row, name)?.parse::<T>()
}

/// A JSON object as a bindable JSONB value.
pub(crate) fn obj(m: &Map<String, Value>) -> Value {
    Value::Object(m.clone())
}

// ------------------------------------------------------------------------ JSON filters

/// Keys made of these bytes are inlined as SQL literals (so expression indexes apply); any
/// other key is bound.
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Most keys one filter may hold (keeps statements and plans small).
const MAX_FILTER_KEYS: usize = 200;

/// Appends ` AND (<column> -> key) = value::jsonb` for every top-level key of `filter`
/// (containment with top-level equality, the rule of `antler_store::util::contains_top_level`;
/// JSONB equality is `antler_store::util::json_eq`). A missing key yields SQL NULL, never
/// true; a column that is not an object (or NULL) matches no non-empty filter.
/// `column` must be a trusted, static column name.
pub(crate) fn push_json_filter(
    qb: &mut QueryBuilder<Postgres>,
    column: &'static str,
    filter: &Map<String, Value>,
) -> StoreResult<()> {
    if filter.len() > MAX_FILTER_KEYS {
        return Err(StoreError::InvalidArgument(format!(
            "filter too large (at most {MAX_FILTER_KEYS} keys)"
        )));
    }
    for (key, value) in filter {
        qb.push(format!(" AND ({column} -> "));
        if plain_key(key) {
            qb.push(format!("'{key}'"));
        } else {
            qb.push_bind(key.clone());
            qb.push("::text");
        }
        qb.push(") = ");
        qb.push_bind(value.clone());
        qb.push("::jsonb");
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

/// Clamps a usize page value into a BIGINT.
pub(crate) fn lim(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_hidden() {
        assert!(matches!(
            parse_url("mysql://root@localhost/test"),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(parse_url("postgres://postgres@127.0.0.1:5432/test").is_ok());
        assert!(parse_url("postgresql://u:p@h/db").is_ok());
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        match parse_url("postgres://u:secret@h:notaport/db") {
            Err(StoreError::InvalidArgument(msg)) => assert!(!msg.contains("secret"), "{msg}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn errors_are_classified() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(
            matches!(map_err(sqlx::Error::Io(io)), StoreError::Transient(m) if !m.starts_with(NO_RETRY))
        );
        assert!(
            matches!(map_err(sqlx::Error::PoolTimedOut), StoreError::Transient(m) if m.starts_with(NO_RETRY))
        );
        assert!(matches!(
            map_err(sqlx::Error::PoolClosed),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            map_err(sqlx::Error::RowNotFound),
            StoreError::NotFound
        ));
        assert!(transient_state("40001") && transient_state("40P01") && transient_state("08006"));
        assert!(!transient_state("23505") && !transient_state("42P01"));
    }

    #[tokio::test]
    async fn retry_repeats_transient_failures_only() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let db = Db { pool };
        let calls = std::sync::atomic::AtomicU32::new(0);
        let out = db
            .retry(|| async {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < 2 {
                    Err(StoreError::Transient("deadlock detected".into()))
                } else {
                    Ok(n)
                }
            })
            .await;
        assert_eq!(out, Ok(2));
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let out: StoreResult<()> = db
            .retry(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(StoreError::Transient(format!("{NO_RETRY}pool")))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let out: StoreResult<()> = db
            .retry(|| async {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Err(StoreError::Conflict("dup".into()))
            })
            .await;
        assert!(matches!(out, Err(StoreError::Conflict(_))));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn plain_keys_are_inlined_only_when_safe() {
        assert!(plain_key("graph_id"));
        assert!(!plain_key("a'b"));
        assert!(!plain_key(""));
        assert!(!plain_key("ключ"));
        let mut qb = QueryBuilder::<Postgres>::new("SELECT 1 WHERE TRUE");
        let mut f = Map::new();
        f.insert("graph_id".into(), Value::from("g"));
        f.insert("x'); DROP TABLE threads; --".into(), Value::from(1));
        push_json_filter(&mut qb, "threads.metadata", &f).unwrap();
        let sql = qb.sql().as_str().to_string();
        assert!(
            sql.contains("(threads.metadata -> 'graph_id') = $1::jsonb"),
            "{sql}"
        );
        assert!(!sql.contains("DROP"), "{sql}");
    }
}
