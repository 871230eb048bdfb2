//! The backend-neutral SQL layer every repository and the checkpointer are written against:
//! statements with `?` placeholders and owned arguments ([`Sql`], [`Arg`]), typed column
//! getters ([`SqlRow`]), the small [`Dialect`] each backend implements (placeholders,
//! execution, error classification, the few clauses whose spelling differs), and [`Db`], the
//! pool plus the retry and write discipline.
//!
//! A statement is data: the same [`Sql`] value is executed again on every retry, and the
//! repositories never see a backend type.

mod db;
mod row;
pub mod write_lock;

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use antler_store::{SortOrder, StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub(crate) use db::transaction;
pub use db::{Conn, Db, NO_RETRY, Tx, WriteClass};
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use row::native_ts_getters;
pub use row::{SqlRow, listing, parse_json};
pub(crate) use row::{binder, column, common_getters, from_row, statement_runners};

/// One bound value. JSON values bind as the backend's JSON column type (JSONB on PostgreSQL,
/// text elsewhere); timestamps as its timestamp type (fixed-width RFC 3339 text on SQLite).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Str(String),
    OptStr(Option<String>),
    I64(i64),
    OptI64(Option<i64>),
    F64(f64),
    Bool(bool),
    Ts(DateTime<Utc>),
    OptTs(Option<DateTime<Utc>>),
    Json(Value),
    OptJson(Option<Value>),
    /// JSON already serialized (bound as the JSON column type without parsing it again).
    JsonText(String),
}

impl Arg {
    /// A JSON object argument.
    pub fn map(m: &Map<String, Value>) -> Arg {
        Arg::Json(Value::Object(m.clone()))
    }

    /// A JSON argument.
    pub fn json(v: &Value) -> Arg {
        Arg::Json(v.clone())
    }

    /// An optional JSON argument (`None` binds SQL NULL).
    pub fn opt_json(v: &Option<Value>) -> Arg {
        Arg::OptJson(v.clone())
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Str(s.to_owned())
    }
}
/// The keys of the storage boundary bind as their text.
macro_rules! id_args {
    ($($id:ident),*) => {$(
        impl From<antler_store::$id<'_>> for Arg {
            fn from(id: antler_store::$id<'_>) -> Arg {
                Arg::Str(id.as_str().to_owned())
            }
        }
    )*};
}
id_args!(Owner, ThreadId, RunId);
impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Str(s)
    }
}
impl From<&String> for Arg {
    fn from(s: &String) -> Arg {
        Arg::Str(s.clone())
    }
}
impl From<Option<String>> for Arg {
    fn from(s: Option<String>) -> Arg {
        Arg::OptStr(s)
    }
}
impl From<&Option<String>> for Arg {
    fn from(s: &Option<String>) -> Arg {
        Arg::OptStr(s.clone())
    }
}
impl From<Option<&str>> for Arg {
    fn from(s: Option<&str>) -> Arg {
        Arg::OptStr(s.map(str::to_owned))
    }
}
impl From<i64> for Arg {
    fn from(n: i64) -> Arg {
        Arg::I64(n)
    }
}
impl From<Option<i64>> for Arg {
    fn from(n: Option<i64>) -> Arg {
        Arg::OptI64(n)
    }
}
impl From<f64> for Arg {
    fn from(n: f64) -> Arg {
        Arg::F64(n)
    }
}
impl From<bool> for Arg {
    fn from(b: bool) -> Arg {
        Arg::Bool(b)
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(t: DateTime<Utc>) -> Arg {
        Arg::Ts(antler_store::time::truncate(t))
    }
}
impl From<&DateTime<Utc>> for Arg {
    fn from(t: &DateTime<Utc>) -> Arg {
        Arg::from(*t)
    }
}
impl From<Option<DateTime<Utc>>> for Arg {
    fn from(t: Option<DateTime<Utc>>) -> Arg {
        Arg::OptTs(t.map(antler_store::time::truncate))
    }
}
impl From<&Option<DateTime<Utc>>> for Arg {
    fn from(t: &Option<DateTime<Utc>>) -> Arg {
        Arg::from(*t)
    }
}

/// A statement written with `?` placeholders, and its arguments in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    text: Cow<'static, str>,
    args: Vec<Arg>,
}

impl Sql {
    /// A fixed statement.
    pub fn new(text: &'static str) -> Sql {
        Sql {
            text: Cow::Borrowed(text),
            args: Vec::new(),
        }
    }

    /// A statement assembled at run time from trusted pieces (never from input).
    pub fn owned(text: String) -> Sql {
        Sql {
            text: Cow::Owned(text),
            args: Vec::new(),
        }
    }

    /// Adds the next argument (builder style, for fixed statements).
    pub fn arg(mut self, a: impl Into<Arg>) -> Sql {
        self.args.push(a.into());
        self
    }

    /// Adds the next arguments, in order (builder style).
    pub fn args_from<A: Into<Arg>>(mut self, items: impl IntoIterator<Item = A>) -> Sql {
        self.args.extend(items.into_iter().map(Into::into));
        self
    }

    /// Appends trusted SQL text.
    pub fn push(&mut self, s: &str) -> &mut Sql {
        self.text.to_mut().push_str(s);
        self
    }

    /// Appends a placeholder bound to `a`.
    pub fn bind(&mut self, a: impl Into<Arg>) -> &mut Sql {
        self.text.to_mut().push('?');
        self.args.push(a.into());
        self
    }

    /// Appends ` AND <column> IN (?, ...)`; an empty list matches nothing.
    pub fn and_in<A: Into<Arg>>(
        &mut self,
        column: &str,
        items: impl IntoIterator<Item = A>,
    ) -> &mut Sql {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return self.push(" AND 1 = 0");
        }
        self.push(" AND ").push(column).push(" IN (");
        let mut first = true;
        for item in items {
            if !first {
                self.push(", ");
            }
            first = false;
            self.bind(item);
        }
        self.push(")")
    }

    /// Appends ` LIMIT ? OFFSET ?`.
    pub fn page(&mut self, limit: usize, offset: usize) -> &mut Sql {
        self.push(" LIMIT ").bind(lim(limit));
        self.push(" OFFSET ").bind(lim(offset))
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn args(&self) -> &[Arg] {
        &self.args
    }

    /// The statement text for sqlx: no copy for fixed statements.
    pub fn sqlx_text(&self) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        sqlx::AssertSqlSafe(self.text.clone())
    }
}

/// Which statements a backend spells its own way, how it executes a [`Sql`] and how its
/// errors map to [`StoreError`]. Everything else is shared.
pub trait Dialect: Send + Sync + Sized + Clone + std::fmt::Debug + 'static {
    type DB: sqlx::Database;
    type Row: SqlRow;

    /// The backend's name in messages.
    const NAME: &'static str;
    /// Attempts of an operation that keeps failing transiently.
    const MAX_ATTEMPTS: u32;
    /// Base of the exponential retry backoff.
    const BACKOFF_MS: u64;
    /// One process owns the database (SQLite): its writes queue on an in-process lock and
    /// caches of what it wrote need no validation against other writers.
    const EXCLUSIVE: bool = false;
    /// The statement opening a write transaction (`BEGIN IMMEDIATE` on SQLite, which takes
    /// the writer lock up front so a transaction never fails half-way on a lock upgrade).
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// The statement opening a read transaction whose statements share one snapshot.
    const BEGIN_READ: &'static str;
    /// Suffix of a `SELECT` that locks the rows it reads until commit (empty where the
    /// database has a single writer).
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    /// Suffix of a `SELECT` that locks the rows it reads and skips rows locked by others.
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    /// Classifies an error (transient ones are retried).
    fn map_err(e: sqlx::Error) -> StoreError;

    /// Runs a statement; the number of rows it changed.
    fn execute<'c>(
        c: &'c mut Conn<Self>,
        sql: &'c Sql,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'c;

    /// Runs a query; every row.
    fn fetch_all<'c>(
        c: &'c mut Conn<Self>,
        sql: &'c Sql,
    ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send + 'c;

    /// Runs a query; the first row, if any.
    fn fetch_optional<'c>(
        c: &'c mut Conn<Self>,
        sql: &'c Sql,
    ) -> impl Future<Output = StoreResult<Option<Self::Row>>> + Send + 'c;

    /// Appends ` AND <column>.<key> == value` for every top-level key of `filter`
    /// (containment with the equality of `antler_store::util::json_eq`). `col` is a
    /// trusted, static, table-qualified column; `table` names the table when it has indexed
    /// helper columns (threads).
    fn push_json_filter(&self, sql: &mut Sql, col: &'static str, f: &Filter) -> StoreResult<()>;

    /// The start of an `INSERT`'s tail that updates the existing row when one with the same
    /// `key` exists: `ON CONFLICT (key) DO UPDATE SET ` or MySQL's `ON DUPLICATE KEY UPDATE `.
    fn on_conflict_update(key: &str) -> String {
        format!(" ON CONFLICT ({key}) DO UPDATE SET ")
    }

    /// The inserted row's value of `col` in an [`on_conflict_update`](Self::on_conflict_update)
    /// assignment: `EXCLUDED.col` or MySQL's `VALUES(col)`.
    fn excluded(col: &str) -> String {
        format!("EXCLUDED.{col}")
    }

    /// The tail of an `INSERT` that skips a row whose `key` exists.
    fn insert_ignore(key: &str) -> String;

    /// A statement that takes a transaction-scoped lock on `key`, for check-then-insert
    /// sequences with no row to lock yet (`None` where the transaction's own locks already
    /// exclude concurrent writers).
    fn key_lock(key: String) -> Option<Sql>;

    /// ` AND <column> IN (...)` for a list longer than placeholders allow: the list bound as
    /// one JSON array.
    fn and_in_json(sql: &mut Sql, column: &str, items: &[String]);

    /// ` AND <column> IN (...)` for a client-supplied list of any length (an empty list
    /// matches nothing).
    fn and_in_list(sql: &mut Sql, column: &str, items: &[String]) {
        if items.len() <= MAX_IN_PLACEHOLDERS {
            sql.and_in(column, items.iter());
        } else {
            Self::and_in_json(sql, column, items);
        }
    }

    /// The larger of two values (`MAX(a, b)` on SQLite, `GREATEST(a, b)` elsewhere).
    const GREATEST: &'static str = "GREATEST";
    /// Position of a substring, 0 when absent: `instr(haystack, needle)` and its spellings.
    const STRPOS: &'static str;
    /// The `key` column of `store_items` (a reserved word on MySQL).
    const KEY_COL: &'static str = "key";
    /// The column that orders checkpoint blobs and writes by insertion (SQLite's `rowid`,
    /// an identity column elsewhere).
    const SEQ_COL: &'static str = "seq";
    /// Suffix of a `SELECT` that share-locks the rows it reads until commit.
    const FOR_SHARE: &'static str;
}

/// A JSON containment filter as clients send it (`metadata`, `values`, store `filter`).
pub type Filter = Map<String, Value>;

/// The error of a backend's failed migrations.
pub fn migration_failed(
    backend: &'static str,
) -> impl FnOnce(sqlx::migrate::MigrateError) -> StoreError {
    move |e| StoreError::Backend(format!("{backend} migration failed: {e}"))
}

/// An upsert tail that overwrites `cols` with the inserted row's values.
pub fn upsert<D: Dialect>(key: &str, cols: &[&str]) -> String {
    let sets: Vec<String> = cols
        .iter()
        .map(|c| format!("{c} = {}", D::excluded(c)))
        .collect();
    format!("{}{}", D::on_conflict_update(key), sets.join(", "))
}

/// Longest `IN (...)` list written with one placeholder per item.
pub const MAX_IN_PLACEHOLDERS: usize = 1000;

/// A list as one bound JSON array (for [`Dialect::and_in_json`]).
pub fn json_list(items: &[String]) -> Arg {
    // a list of strings always serializes
    Arg::JsonText(serde_json::to_string(items).unwrap_or_else(|_| "[]".to_string()))
}

/// A quoted JSON-path label for an object key: the key as a JSON string (quotes, backslashes
/// and control characters escaped), which SQLite and MySQL both decode, so any key can be
/// addressed.
pub(crate) fn quoted_key(key: &str) -> String {
    // a &str always serializes
    serde_json::to_string(key).unwrap_or_else(|_| "\"\"".to_string())
}

/// SQL for a sort direction.
pub fn dir(order: SortOrder) -> &'static str {
    match order {
        SortOrder::Asc => "ASC",
        SortOrder::Desc => "DESC",
    }
}

/// Clamps a usize page value into a bindable i64.
pub fn lim(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Exponential backoff with jitter for attempt `attempt` (1-based).
pub fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let base = base_ms << attempt.min(7);
    let jitter = rand::random::<u64>() % (base / 2 + 1);
    Duration::from_millis(base + jitter)
}

/// The error of a column whose stored value does not decode.
pub fn col_err(name: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("bad stored value in column {name}: {e}"))
}

/// Numbers PostgreSQL's `$n` placeholders in a statement written with `?` (a `?` inside a
/// quoted literal is left alone).
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0u32;
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_outside_literals() {
        assert_eq!(
            numbered("SELECT ? WHERE a = '?' AND b IN (?, ?)"),
            "SELECT $1 WHERE a = '?' AND b IN ($2, $3)"
        );
    }

    #[test]
    fn statements_carry_their_arguments() {
        let mut q = Sql::new("SELECT * FROM t WHERE a = ?").arg("x");
        q.and_in("b", [1i64, 2]).page(10, 20);
        assert_eq!(
            q.text(),
            "SELECT * FROM t WHERE a = ? AND b IN (?, ?) LIMIT ? OFFSET ?"
        );
        assert_eq!(q.args().len(), 5);
        let mut empty = Sql::new("SELECT 1 WHERE 1 = 1");
        empty.and_in::<i64>("b", []);
        assert_eq!(empty.text(), "SELECT 1 WHERE 1 = 1 AND 1 = 0");
    }
}
