//! SQLite: the embedded default backend.
//!
//! One pool per database file (WAL, `synchronous=NORMAL`, `busy_timeout` 5 s, foreign keys
//! on). Reads run on any pooled connection; every write runs under this process's write lock
//! (SQLite admits one writer at a time: queueing here, async and FIFO with client
//! acknowledgements first, keeps write latency flat instead of polling in SQLite's busy
//! handler) in a `BEGIN IMMEDIATE` transaction or as one autocommit statement, and is retried
//! with backoff when another process still holds SQLite's lock (BUSY/LOCKED).
//!
//! Types: timestamps are fixed-width RFC 3339 text (sortable), JSON is text, booleans are
//! integers. Filters (`metadata`, `values`, store `filter`) compile to `json_type` /
//! `json_extract` / `json_each` conditions with the exact semantics of
//! `antler_store::util::json_eq`; paths of plain keys are inlined so the expression indexes on
//! `threads(owner, json_extract(metadata, '$.graph_id' | ...))` apply.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use antler_store::{StoreError, StoreResult, Stores};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};

use crate::sql::{
    Db, Dialect, Filter, NO_RETRY, Sql, SqlRow, binder, col_err, common_getters, lim,
    migration_failed, parse_json, statement_runners,
};

/// Embedded migrations (`migrations/sqlite/*.sql`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "antler.db";

pub use crate::checkpointer::MAX_DELTA_DEPTH;

/// The SQLite checkpointer.
pub type SqliteCheckpointer = crate::checkpointer::SqlCheckpointer<Sqlite>;

impl SqliteCheckpointer {
    /// A checkpointer over an existing pool (migrations must have run: see [`connect_pool`]).
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_db(sqlite_db(pool))
    }
}

/// How often the WAL is checkpointed.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// WAL frames (pages) past which a checkpoint also lets the next write restart the WAL from
/// its beginning.
const RESTART_FRAMES: i64 = 1_000;
/// Bytes the WAL file is truncated to after a restart.
const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// The [`Db`] of a pool, with its WAL checkpointed in the background (see [`checkpoint_wal`]).
fn sqlite_db(pool: SqlitePool) -> Db<Sqlite> {
    let db = Db::new(pool, Sqlite);
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::spawn(checkpoint_wal(db.clone()));
    }
    db
}

/// Copies the WAL's pages into the database file every [`CHECKPOINT_EVERY`] until the pool
/// closes, beside the writers (a PASSIVE checkpoint takes no write lock). Under a steady
/// stream of commits that alone never lets the WAL start over (a writer restarts it only when
/// every frame is copied when it begins), so once the WAL holds [`RESTART_FRAMES`] the
/// checkpoint copies the last frames again under the process write lock: the next commit
/// writes from the WAL's beginning. A failed checkpoint is retried at the next tick.
async fn checkpoint_wal(db: Db<Sqlite>) {
    let passive = Sql::new("PRAGMA wal_checkpoint(PASSIVE)");
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if db.pool.is_closed() {
            return;
        }
        match wal_frames(&db, &passive).await {
            // not a WAL database (in memory)
            Ok(None) => return,
            Ok(Some(frames)) if frames >= RESTART_FRAMES => {
                let _guard = db.lock(crate::sql::WriteClass::Background).await;
                let _ = wal_frames(&db, &passive).await;
            }
            Ok(Some(_)) | Err(_) => {}
        }
    }
}

/// Runs a checkpoint; the WAL's size in frames (`None`: not in WAL mode).
async fn wal_frames(db: &Db<Sqlite>, checkpoint: &Sql) -> StoreResult<Option<i64>> {
    let mut conn = db.acquire().await?;
    let row = Sqlite::fetch_optional(&mut conn, checkpoint).await?;
    // (busy, log, checkpointed); log is -1 outside WAL mode
    let log = row.map(|r| r.i64("log")).transpose()?;
    Ok(log.filter(|l| *l >= 0))
}

/// Opens (creating it if needed) `dir/antler.db`, runs the migrations and returns every store.
pub async fn open_sqlite(dir: &Path) -> StoreResult<Stores> {
    Ok(stores_from_pool(open_dir(dir).await?))
}

/// [`open_sqlite`] for the one server that owns `dir` (it holds the directory's lock, so no
/// other pool writes the database): caches of its own writes are trusted without re-reading.
pub async fn open_sqlite_owned(dir: &Path) -> StoreResult<Stores> {
    Ok(crate::stores(sqlite_db(open_dir(dir).await?).owned()))
}

async fn open_dir(dir: &Path) -> StoreResult<SqlitePool> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StoreError::Backend(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let opts = SqliteConnectOptions::new()
        .filename(dir.join(DB_FILE))
        .create_if_missing(true);
    connect(opts, false).await
}

/// Opens a database by URL (`sqlite://path/to/file.db`, `sqlite::memory:`), runs the
/// migrations and returns every store.
pub async fn open_sqlite_url(url: &str) -> StoreResult<Stores> {
    Ok(stores_from_pool(connect_pool(url).await?))
}

/// Opens a pool by URL with Antler's pragmas and runs the migrations. Its connections never
/// checkpoint the WAL themselves: use it through [`stores_from_pool`] or
/// [`SqliteCheckpointer::new`], which start the background checkpoint.
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
        .foreign_keys(true)
        // no connection checkpoints the WAL when it commits: `checkpoint_wal` does, off the
        // write path (a checkpoint in the committing connection stalled every ~1,000 pages of
        // writes: the p99 of a run at c=1 was 12 ms instead of 3)
        .pragma("wal_autocheckpoint", "0")
        .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());
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
        .map_err(migration_failed("SQLite"))?;
    Ok(pool)
}

/// Every store over one pool.
pub fn stores_from_pool(pool: SqlitePool) -> Stores {
    crate::stores(sqlite_db(pool))
}

/// The SQLite [`Dialect`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Sqlite;

/// Maps a sqlx error into the store's error set (BUSY/LOCKED/pool timeouts are transient,
/// uniqueness violations are conflicts).
fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::PoolTimedOut => StoreError::Transient(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code().and_then(|c| c.parse::<i64>().ok()).unwrap_or(0);
            match code & 0xff {
                // plain SQLITE_BUSY: the busy handler already waited `busy_timeout` for another
                // process's lock (this process's own writers queue on its write lock), so a
                // retry would only multiply the wait of a database locked from outside
                5 if code == 5 => StoreError::Transient(format!("{NO_RETRY}{}", db.message())),
                // SQLITE_LOCKED and the extended BUSY codes (snapshot, recovery): retried
                5 | 6 => StoreError::Transient(db.message().to_string()),
                _ if db.is_unique_violation() => StoreError::Conflict(db.message().to_string()),
                _ => StoreError::Backend(db.message().to_string()),
            }
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

binder!(sqlx::Sqlite, SqliteArguments, {
    text: Sql::sqlx_text,
    bool: i64::from,
    ts: antler_store::time::format,
    opt_ts: |t: &Option<DateTime<Utc>>| t.as_ref().map(antler_store::time::format),
    json: Value::to_string,
    opt_json: |v: &Option<Value>| v.as_ref().map(Value::to_string),
    json_text: String::clone,
});

impl Dialect for Sqlite {
    type DB = sqlx::Sqlite;
    type Row = SqliteRow;

    const NAME: &'static str = "SQLite";
    const MAX_ATTEMPTS: u32 = 8;
    const BACKOFF_MS: u64 = 5;
    const EXCLUSIVE: bool = true;
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_READ: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";

    statement_runners!(SqliteConnection, SqliteRow);

    fn push_json_filter(&self, sql: &mut Sql, col: &'static str, f: &Filter) -> StoreResult<()> {
        let mut budget = MAX_FILTER_NODES;
        for (key, value) in f {
            sql.push(" AND ");
            push_json_eq(sql, col, &path_key("$", key), value, 0, &mut budget)?;
        }
        Ok(())
    }

    fn insert_ignore(_key: &str) -> String {
        " ON CONFLICT DO NOTHING".to_string()
    }

    /// The process write lock and `BEGIN IMMEDIATE` already serialize every writer.
    fn key_lock(_key: String) -> Option<Sql> {
        None
    }

    fn and_in_json(sql: &mut Sql, column: &str, items: &[String]) {
        sql.push(&format!(" AND {column} IN (SELECT j.value FROM json_each("))
            .bind(crate::sql::json_list(items))
            .push(") AS j)");
    }

    const GREATEST: &'static str = "MAX";
    const STRPOS: &'static str = "instr";
    const SEQ_COL: &'static str = "rowid";
    const FOR_SHARE: &'static str = "";
}

impl SqlRow for SqliteRow {
    common_getters!();

    fn bool(&self, col: &str) -> StoreResult<bool> {
        Ok(self.i64(col)? != 0)
    }

    fn ts(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        antler_store::time::parse(&self.str(col)?).map_err(|e| col_err(col, e))
    }

    fn opt_ts(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.opt_str(col)?
            .map(|s| antler_store::time::parse(&s).map_err(|e| col_err(col, e)))
            .transpose()
    }

    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>> {
        parse_json(col, self.opt_str(col)?)
    }
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
pub(crate) fn path_key(path: &str, key: &str) -> String {
    if simple_key(key) {
        return format!("{path}.{key}");
    }
    // Any other key is a quoted label written as a JSON string: SQLite reads the escapes of a
    // quoted label (`\\` a backslash, `\"` a quote) and compares it with the key's decoded text.
    format!("{path}.{}", crate::sql::quoted_key(key))
}

/// Pushes a JSON path: inlined when it is made of plain keys and indexes (so expression
/// indexes on `json_extract(col, '$.key')` apply), bound otherwise.
fn push_path(sql: &mut Sql, path: &str) {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$' | b'[' | b']'));
    if plain {
        sql.push(&format!("'{path}'"));
    } else {
        sql.bind(path);
    }
}

fn push_fn(sql: &mut Sql, func: &str, column: &str, path: &str) {
    sql.push(&format!("{func}({column}, "));
    push_path(sql, path);
    sql.push(")");
}

/// Pushes a condition true when the JSON at `path` of `column` equals `value`, with the
/// semantics of `antler_store::util::json_eq`: numbers compare by value, objects regardless
/// of key order, arrays element-wise.
fn push_json_eq(
    sql: &mut Sql,
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
            push_fn(sql, "json_type", column, path);
            sql.push(" = 'null'");
        }
        Value::Bool(b) => {
            push_fn(sql, "json_type", column, path);
            sql.push(if *b { " = 'true'" } else { " = 'false'" });
        }
        Value::Number(n) => {
            sql.push("(");
            push_fn(sql, "json_type", column, path);
            sql.push(" IN ('integer', 'real') AND ");
            push_fn(sql, "json_extract", column, path);
            sql.push(" = ");
            match n.as_i64() {
                Some(i) => sql.bind(i),
                None => sql.bind(n.as_f64().unwrap_or(f64::NAN)),
            };
            sql.push(")");
        }
        Value::String(s) => {
            sql.push("(");
            push_fn(sql, "json_extract", column, path);
            sql.push(" = ").bind(s.as_str()).push(" AND ");
            push_fn(sql, "json_type", column, path);
            sql.push(" = 'text')");
        }
        _ if depth >= MAX_FILTER_DEPTH => {
            sql.push("(");
            push_fn(sql, "json_type", column, path);
            sql.push(" IN ('object', 'array') AND ");
            push_fn(sql, "json_extract", column, path);
            sql.push(" = json(").bind(value.to_string()).push("))");
        }
        Value::Array(items) => {
            sql.push("(");
            push_fn(sql, "json_type", column, path);
            sql.push(" = 'array' AND ");
            push_fn(sql, "json_array_length", column, path);
            sql.push(" = ").bind(lim(items.len()));
            for (i, item) in items.iter().enumerate() {
                sql.push(" AND ");
                push_json_eq(
                    sql,
                    column,
                    &format!("{path}[{i}]"),
                    item,
                    depth + 1,
                    budget,
                )?;
            }
            sql.push(")");
        }
        Value::Object(map) => {
            sql.push("(");
            push_fn(sql, "json_type", column, path);
            sql.push(&format!(
                " = 'object' AND (SELECT COUNT(*) FROM json_each({column}, "
            ));
            push_path(sql, path);
            sql.push(")) = ").bind(lim(map.len()));
            for (k, v) in map {
                sql.push(" AND ");
                push_json_eq(sql, column, &path_key(path, k), v, depth + 1, budget)?;
            }
            sql.push(")");
        }
    }
    Ok(())
}
