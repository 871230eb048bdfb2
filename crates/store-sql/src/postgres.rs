//! PostgreSQL (feature `postgres`).
//!
//! Same tables and columns as the SQLite backend (`migrations/postgres`), in native types:
//! JSONB, TIMESTAMPTZ, BIGINT, byte-ordered (`COLLATE "C"`) text ids. There is no process
//! write lock: every multi-statement write is a transaction relying on row locks
//! (`SELECT ... FOR UPDATE`, upserts) and unique indexes, so several processes (pools) can
//! share one database. Transient failures (serialization failures, deadlocks, lock timeouts,
//! lost connections, administrator shutdowns) are retried with backoff and surface as
//! [`StoreError::Transient`] if they persist.
//!
//! Filters (`metadata`, `values`, store `filter`) compile to `(column -> key) = value::jsonb`,
//! which has exactly the semantics of `antler_store::util::json_eq`: numbers by value
//! (`1 = 1.0`), objects regardless of key order, arrays element-wise. Values and non-plain
//! keys are bound; plain keys (`[A-Za-z0-9_]+`) are inlined so the expression indexes on
//! `threads (owner, (metadata -> 'graph_id'))` etc. apply.

use std::str::FromStr;

use antler_store::{StoreError, StoreResult, Stores};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};

use crate::sql::{
    Arg, Db, Dialect, Filter, NO_RETRY, Sql, SqlRow, binder, col_err, common_getters,
    migration_failed, native_ts_getters, numbered, statement_runners,
};

pub use crate::checkpointer::MAX_DELTA_DEPTH;
pub use crate::pool::PoolOptions;
use crate::pool::{connect_failed, redact};

/// The PostgreSQL checkpointer.
pub type PostgresCheckpointer = crate::checkpointer::SqlCheckpointer<Postgres>;

impl PostgresCheckpointer {
    /// A checkpointer over an existing pool (migrations must have run: see [`connect_pool`]).
    pub fn new(pool: PgPool) -> Self {
        Self::with_db(Db::new(pool, Postgres))
    }
}

/// Embedded migrations (`migrations/postgres/*.sql`). sqlx serializes concurrent migrators
/// with an advisory lock, so several processes may open the same database at once.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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
        .map_err(|e| connect_failed("PostgreSQL", url, map_err(e)))?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(migration_failed("PostgreSQL"))?;
    Ok(pool)
}

/// Every store over one pool (migrations must have run: see [`connect_pool`]).
pub fn stores_from_pool(pool: PgPool) -> Stores {
    crate::stores(Db::new(pool, Postgres))
}

/// The PostgreSQL [`Dialect`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Postgres;

/// JSON text as a JSONB argument (checked once, not re-serialized).
fn raw(s: &str) -> sqlx::types::Json<Box<RawValue>> {
    let v = RawValue::from_string(s.to_owned())
        .unwrap_or_else(|_| RawValue::from_string("null".to_owned()).expect("null is JSON"));
    sqlx::types::Json(v)
}

binder!(sqlx::Postgres, PgArguments, {
    text: |sql: &Sql| sqlx::AssertSqlSafe(numbered(sql.text())),
    bool: |b: bool| b,
    ts: |t: &DateTime<Utc>| *t,
    opt_ts: |t: &Option<DateTime<Utc>>| *t,
    json: |v: &Value| v.clone(),
    opt_json: |v: &Option<Value>| v.clone(),
    json_text: |s: &String| raw(s),
});

impl Dialect for Postgres {
    type DB = sqlx::Postgres;
    type Row = PgRow;

    const NAME: &'static str = "PostgreSQL";
    const MAX_ATTEMPTS: u32 = 6;
    const BACKOFF_MS: u64 = 10;
    /// A read snapshot: the heads and the blobs they name come from the same moment.
    const BEGIN_READ: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const FOR_SHARE: &'static str = " FOR SHARE";
    const STRPOS: &'static str = "strpos";

    statement_runners!(PgConnection, PgRow);

    fn push_json_filter(&self, sql: &mut Sql, col: &'static str, f: &Filter) -> StoreResult<()> {
        push_json_filter(sql, col, f)
    }

    fn insert_ignore(_key: &str) -> String {
        " ON CONFLICT DO NOTHING".to_string()
    }

    /// READ COMMITTED has no gap locks: a check-then-insert with no row to lock yet takes a
    /// transaction-scoped advisory lock on the key instead.
    fn key_lock(key: String) -> Option<Sql> {
        Some(Sql::new("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))").arg(key))
    }

    fn and_in_json(sql: &mut Sql, column: &str, items: &[String]) {
        sql.push(&format!(
            " AND {column} IN (SELECT jsonb_array_elements_text("
        ))
        .bind(crate::sql::json_list(items))
        .push("))");
    }
}

impl SqlRow for PgRow {
    common_getters!();

    fn bool(&self, col: &str) -> StoreResult<bool> {
        sqlx::Row::try_get::<bool, _>(self, col).map_err(|e| col_err(col, e))
    }

    native_ts_getters!();

    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        sqlx::Row::try_get::<Option<Value>, _>(self, col).map_err(|e| col_err(col, e))
    }
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
fn map_err(e: sqlx::Error) -> StoreError {
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
fn push_json_filter(
    qb: &mut Sql,
    column: &'static str,
    filter: &Map<String, Value>,
) -> StoreResult<()> {
    if filter.len() > MAX_FILTER_KEYS {
        return Err(StoreError::InvalidArgument(format!(
            "filter too large (at most {MAX_FILTER_KEYS} keys)"
        )));
    }
    for (key, value) in filter {
        qb.push(&format!(" AND ({column} -> "));
        if plain_key(key) {
            qb.push(&format!("'{key}'"));
        } else {
            qb.bind(key.as_str()).push("::text");
        }
        qb.push(") = ").bind(Arg::json(value)).push("::jsonb");
    }
    Ok(())
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
        let db = Db::new(pool, Postgres);
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

    /// A server that cannot be reached answers in about [`UNREACHABLE_AFTER`], not after the
    /// pool's whole acquire timeout (here an hour): reads, statements and transactions alike.
    #[tokio::test]
    async fn an_unreachable_server_fails_fast_and_transiently() {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(std::time::Duration::from_secs(3600))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let db = Db::new(pool, Postgres);
        let sql = Sql::new("SELECT 1 AS n");
        let unreachable = |r: StoreResult<()>| match r {
            Err(StoreError::Transient(m)) => m.contains("PostgreSQL unreachable"),
            _ => false,
        };
        let read = tokio::time::timeout(std::time::Duration::from_secs(60), db.fetch_all(&sql));
        assert!(unreachable(read.await.expect("answered").map(|_| ())));
        let write = db.execute(crate::sql::WriteClass::Ack, &sql);
        assert!(unreachable(write.await.map(|_| ())));
        let tx = db.begin(crate::sql::WriteClass::Ack);
        assert!(unreachable(tx.await.map(|_| ())));
    }

    #[test]
    fn plain_keys_are_inlined_only_when_safe() {
        assert!(plain_key("graph_id"));
        assert!(!plain_key("a'b"));
        assert!(!plain_key(""));
        assert!(!plain_key("ключ"));
        let mut qb = Sql::new("SELECT 1 WHERE TRUE");
        let mut f = Map::new();
        f.insert("graph_id".into(), Value::from("g"));
        f.insert("x'); DROP TABLE threads; --".into(), Value::from(1));
        Postgres
            .push_json_filter(&mut qb, "threads.metadata", &f)
            .unwrap();
        let sql = numbered(qb.text());
        assert!(
            sql.contains("(threads.metadata -> 'graph_id') = $1::jsonb"),
            "{sql}"
        );
        assert!(!sql.contains("DROP"), "{sql}");
    }
}
