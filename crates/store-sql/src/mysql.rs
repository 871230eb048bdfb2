//! MySQL / MariaDB (feature `mysql`).
//!
//! Same tables and columns as the SQLite backend (`migrations/mysql/`), natively typed:
//! InnoDB, utf8mb4 with the binary collation (ids compare and sort byte-wise), JSON kept as
//! serde_json's text in LONGTEXT columns and queried with `JSON_EXTRACT`, timestamps as
//! `DATETIME(6)` in UTC.
//!
//! There is no process-wide write lock as on SQLite: several processes share the database,
//! so every read-modify-write runs in a transaction that locks the rows it depends on
//! (`SELECT ... FOR UPDATE`; REPEATABLE READ's gap locks also cover rows not there yet),
//! single-row changes are compare-and-set `UPDATE`s, and the "one running run per thread"
//! rule is a UNIQUE index on a generated column. Deadlocks, lock wait timeouts and lost
//! connections are [`StoreError::Transient`] and retried with backoff.
//!
//! MariaDB (tested: 10.11) and MySQL 8 differ in one place that matters here, JSON equality:
//! MariaDB compares with `JSON_EQUALS`, MySQL with `=` between JSON values. The flavour is
//! detected once per pool ([`Flavor`]).

use std::str::FromStr;

use antler_store::{StoreError, StoreResult, Stores};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPool, MySqlPoolOptions, MySqlRow,
};

pub use crate::pool::PoolOptions;
use crate::pool::{connect_failed, redact};
use crate::sql::{
    Db, Dialect, Filter, Sql, SqlRow, binder, common_getters, migration_failed, native_ts_getters,
    parse_json, statement_runners,
};

/// The MySQL checkpointer.
pub type MySqlCheckpointer = crate::checkpointer::SqlCheckpointer<MySql>;

impl MySqlCheckpointer {
    /// A checkpointer over an existing pool (migrations must have run: see [`connect_pool`]).
    pub fn new(db: MySqlDb) -> Self {
        Self::with_db(Db::new(db.pool, MySql { flavor: db.flavor }))
    }
}

/// Embedded migrations (`migrations/mysql/*.sql`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// Which server the pool talks to (they differ in JSON comparison functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// MariaDB: JSON is text; equality via `JSON_EQUALS` (10.7+).
    MariaDb,
    /// MySQL 8: JSON values compare with `=` after `CAST(... AS JSON)`.
    MySql,
}

/// A pool plus the server flavour it talks to.
#[derive(Debug, Clone)]
pub struct MySqlDb {
    pub pool: MySqlPool,
    pub flavor: Flavor,
}

/// Opens a pool by URL (`mysql://user:password@host:port/database`), runs the migrations and
/// returns every store.
pub async fn open_mysql(url: &str, opts: PoolOptions) -> StoreResult<Stores> {
    Ok(stores_from_pool(connect_pool(url, opts).await?))
}

/// Validates `url`, opens a pool with Antler's session settings and runs the migrations.
pub async fn connect_pool(url: &str, opts: PoolOptions) -> StoreResult<MySqlDb> {
    let connect = parse_url(url)?;
    let timeout = opts.statement_timeout;
    let pool = MySqlPoolOptions::new()
        .max_connections(opts.max_connections.max(1))
        .acquire_timeout(opts.acquire_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // DATETIME columns hold UTC; make NOW() & co. agree (never used for data).
                sqlx::query("SET time_zone = '+00:00'")
                    .execute(&mut *conn)
                    .await?;
                if let Some(t) = timeout {
                    let version: String = sqlx::query_scalar("SELECT VERSION()")
                        .fetch_one(&mut *conn)
                        .await?;
                    let sql = if version.contains("MariaDB") {
                        format!("SET SESSION max_statement_time = {:.3}", t.as_secs_f64())
                    } else {
                        format!("SET SESSION max_execution_time = {}", t.as_millis())
                    };
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(connect)
        .await
        .map_err(|e| connect_failed("MySQL", url, map_err(e)))?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&pool)
        .await
        .map_err(map_err)?;
    let flavor = if version.contains("MariaDB") {
        Flavor::MariaDb
    } else {
        Flavor::MySql
    };
    migrate(&pool).await?;
    Ok(MySqlDb { pool, flavor })
}

/// Runs the migrations under a server-wide named lock per database, so processes starting
/// together apply them once. (sqlx's own migration lock asks `GET_LOCK(name, -1)`, which
/// MariaDB answers with NULL at once instead of waiting, so it does not exclude anything.)
async fn migrate(pool: &MySqlPool) -> StoreResult<()> {
    const LOCK: &str = "LEFT(CONCAT('antler-store-sql-migrate:', DATABASE()), 64)";
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let got: Option<i64> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT GET_LOCK({LOCK}, 120)")))
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
    if got != Some(1) {
        return Err(StoreError::Transient(
            "timed out waiting for another process to finish the MySQL migrations".into(),
        ));
    }
    let result = MIGRATOR
        .run(&mut *conn)
        .await
        .map_err(migration_failed("MySQL"));
    let released = sqlx::query(sqlx::AssertSqlSafe(format!("DO RELEASE_LOCK({LOCK})")))
        .execute(&mut *conn)
        .await;
    if released.is_err() {
        // the lock goes with the connection: do not hand it back to the pool
        conn.detach();
    }
    result
}

fn parse_url(url: &str) -> StoreResult<MySqlConnectOptions> {
    let redacted = redact(url);
    if !(url.starts_with("mysql://") || url.starts_with("mariadb://")) {
        return Err(StoreError::InvalidArgument(format!(
            "invalid MySQL URL '{redacted}': expected mysql://user[:password]@host[:port]/database"
        )));
    }
    // sqlx only knows the mysql scheme; mariadb:// is accepted as an alias
    let normalized = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_string(),
    };
    let opts = MySqlConnectOptions::from_str(&normalized)
        .map_err(|e| StoreError::InvalidArgument(format!("invalid MySQL URL '{redacted}': {e}")))?;
    if opts.get_database().is_none_or(str::is_empty) {
        return Err(StoreError::InvalidArgument(format!(
            "invalid MySQL URL '{redacted}': no database name (mysql://user@host:port/database)"
        )));
    }
    Ok(opts.charset("utf8mb4"))
}

/// Every store over one pool.
pub fn stores_from_pool(db: MySqlDb) -> Stores {
    crate::stores(Db::new(db.pool, MySql { flavor: db.flavor }))
}

/// The MySQL / MariaDB [`Dialect`].
#[derive(Clone, Copy, Debug)]
pub struct MySql {
    flavor: Flavor,
}

binder!(sqlx::MySql, MySqlArguments, {
    text: Sql::sqlx_text,
    bool: i64::from,
    ts: |t: &DateTime<Utc>| *t,
    opt_ts: |t: &Option<DateTime<Utc>>| *t,
    json: Value::to_string,
    opt_json: |v: &Option<Value>| v.as_ref().map(Value::to_string),
    json_text: String::clone,
});

impl Dialect for MySql {
    type DB = sqlx::MySql;
    type Row = MySqlRow;

    const NAME: &'static str = "MySQL";
    const MAX_ATTEMPTS: u32 = 8;
    const BACKOFF_MS: u64 = 5;
    /// The server's default isolation, REPEATABLE READ; writers lock what they read.
    const BEGIN_READ: &'static str = "BEGIN";
    const FOR_SHARE: &'static str = " LOCK IN SHARE MODE";
    const STRPOS: &'static str = "INSTR";
    /// `key` is a reserved word.
    const KEY_COL: &'static str = "`key`";

    statement_runners!(MySqlConnection, MySqlRow);

    fn push_json_filter(&self, sql: &mut Sql, col: &'static str, f: &Filter) -> StoreResult<()> {
        push_json_filter(sql, self.flavor, col, f)
    }

    fn on_conflict_update(_key: &str) -> String {
        " ON DUPLICATE KEY UPDATE ".to_string()
    }

    fn excluded(col: &str) -> String {
        format!("VALUES({col})")
    }

    /// A no-op assignment (`INSERT IGNORE` would also swallow other errors).
    fn insert_ignore(key: &str) -> String {
        let first = key.split(',').next().unwrap_or(key).trim();
        format!(" ON DUPLICATE KEY UPDATE {first} = {first}")
    }

    /// REPEATABLE READ's gap locks (`SELECT ... FOR UPDATE` on the key) already exclude a
    /// concurrent insert of the same key.
    fn key_lock(_key: String) -> Option<Sql> {
        None
    }

    fn and_in_json(sql: &mut Sql, column: &str, items: &[String]) {
        sql.push(" AND JSON_CONTAINS(")
            .bind(crate::sql::json_list(items))
            .push(&format!(", JSON_QUOTE({column}))"));
    }
}

impl SqlRow for MySqlRow {
    common_getters!();

    fn bool(&self, col: &str) -> StoreResult<bool> {
        Ok(self.i64(col)? != 0)
    }

    native_ts_getters!();

    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        parse_json(col, self.opt_str(col)?)
    }
}

/// Server error numbers worth retrying: deadlock, lock wait timeout, and the connection-level
/// ones (server gone away, lost connection, server shutting down, too many connections,
/// query interrupted by a killed connection).
const TRANSIENT_CODES: &[u16] = &[1213, 1205, 2006, 2013, 1053, 1040, 1927, 1317];

/// Server errors that mean the caller's input does not fit the schema.
const INVALID_CODES: &[u16] = &[
    1406, // data too long for column
    1292, // incorrect datetime / truncated value
    1264, // out of range value
    1366, // incorrect string value
    3143, // invalid JSON path (MySQL)
    4042, // syntax error in JSON path (MariaDB)
    4043, // JSON path: unexpected end (MariaDB)
    4044, // JSON path: too deep (MariaDB)
];

/// Maps a sqlx error into the store's error set.
fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => StoreError::Transient(e.to_string()),
        sqlx::Error::Database(db) => {
            let number = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .map(|m| m.number())
                .unwrap_or(0);
            if TRANSIENT_CODES.contains(&number) {
                StoreError::Transient(db.message().to_string())
            } else if db.is_unique_violation() || number == 1062 {
                StoreError::Conflict(db.message().to_string())
            } else if INVALID_CODES.contains(&number) {
                StoreError::InvalidArgument(db.message().to_string())
            } else if number == 1969 || number == 3024 {
                StoreError::Backend(format!("statement timed out: {}", db.message()))
            } else {
                StoreError::Backend(format!("MySQL error {number}: {}", db.message()))
            }
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

// ------------------------------------------------------------------------ JSON filters

/// Most top-level keys one filter may hold (each becomes one condition).
const MAX_FILTER_KEYS: usize = 200;

/// The JSON path of one top-level object key: `$."<key>"`, the key written as a JSON string
/// (quotes, backslashes and control characters escaped), so any key can be addressed and the
/// path is always bound, never spliced into the SQL.
pub(crate) fn key_path(key: &str) -> String {
    format!("$.{}", crate::sql::quoted_key(key))
}

/// Generated, indexed columns holding a prefix of a metadata key's unquoted value.
const INDEXED_METADATA: &[(&str, &str)] = &[
    ("graph_id", "md_graph_id"),
    ("assistant_id", "md_assistant_id"),
    ("user_id", "md_user_id"),
];

/// Length of the indexed prefix (`VARCHAR(128)` in the migration).
const INDEXED_PREFIX_CHARS: usize = 128;

/// Appends ` AND <column>.<key> == value` for every top-level key of `filter` (containment
/// with top-level equality, the rule of `antler_store::util::contains_top_level`, with the
/// equality of `antler_store::util::json_eq`: numbers by value, objects regardless of key
/// order, arrays element-wise). A missing key, or a column that is NULL or not an object,
/// never matches. `column` must be a trusted, static column name.
///
/// `indexed` names the table whose generated metadata columns may narrow the search
/// (`threads`): for string values of the indexed keys an extra, index-friendly condition
/// on the value's prefix is added; the JSON comparison still decides.
fn push_json_filter(
    qb: &mut Sql,
    flavor: Flavor,
    column: &'static str,
    filter: &Map<String, Value>,
) -> StoreResult<()> {
    // the threads table has generated, indexed columns for a few metadata keys
    let indexed = (column == "threads.metadata").then_some("threads");
    if filter.len() > MAX_FILTER_KEYS {
        return Err(StoreError::InvalidArgument(format!(
            "filter too large (at most {MAX_FILTER_KEYS} keys)"
        )));
    }
    for (key, value) in filter {
        if let (Some(table), Value::String(s)) = (indexed, value)
            && let Some((_, gen_col)) = INDEXED_METADATA.iter().find(|(k, _)| k == key)
        {
            qb.push(&format!(" AND {table}.{gen_col} = "))
                .bind(s.chars().take(INDEXED_PREFIX_CHARS).collect::<String>());
        }
        // JSON_EQUALS(JSON_EXTRACT(col, path), value) = 1 on MariaDB,
        // JSON_EXTRACT(col, path) = CAST(value AS JSON) on MySQL
        let (open, middle, close) = match flavor {
            Flavor::MariaDb => ("JSON_EQUALS(", "), ", ") = 1"),
            Flavor::MySql => ("", ") = CAST(", " AS JSON)"),
        };
        qb.push(&format!(" AND {open}JSON_EXTRACT({column}, "))
            .bind(key_path(key))
            .push(middle)
            .bind(value.to_string())
            .push(close);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_quote_everything() {
        assert_eq!(key_path("a"), "$.\"a\"");
        assert_eq!(key_path("a\"b"), "$.\"a\\\"b\"");
        assert_eq!(key_path("a.b c"), "$.\"a.b c\"");
        assert_eq!(key_path(""), "$.\"\"");
    }

    #[test]
    fn urls_are_validated_and_redacted() {
        assert!(matches!(
            parse_url("postgres://x@h/db"),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            parse_url("mysql://root@127.0.0.1:3306"),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            parse_url("mysql://root@127.0.0.1:notaport/test"),
            Err(StoreError::InvalidArgument(_))
        ));
        assert!(parse_url("mysql://root@127.0.0.1:3306/test").is_ok());
        assert!(parse_url("mariadb://root@127.0.0.1/test").is_ok());
    }
}
