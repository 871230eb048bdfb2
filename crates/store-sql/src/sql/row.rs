//! Typed column getters, implemented once per backend row type, so that row mapping is
//! written once for every backend.

use std::str::FromStr;

use antler_store::{StoreError, StoreResult};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::col_err;

/// A result row read by column name. Errors name the column.
pub trait SqlRow: Send + Sync + 'static {
    fn str(&self, col: &str) -> StoreResult<String>;
    fn opt_str(&self, col: &str) -> StoreResult<Option<String>>;
    fn i64(&self, col: &str) -> StoreResult<i64>;
    fn opt_i64(&self, col: &str) -> StoreResult<Option<i64>>;
    fn bool(&self, col: &str) -> StoreResult<bool>;
    fn ts(&self, col: &str) -> StoreResult<DateTime<Utc>>;
    fn opt_ts(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>>;
    /// A JSON column (JSONB on PostgreSQL, JSON text elsewhere); SQL NULL is `None`.
    fn opt_json(&self, col: &str) -> StoreResult<Option<Value>>;

    /// A non-null JSON column.
    fn json(&self, col: &str) -> StoreResult<Value> {
        self.opt_json(col)?
            .ok_or_else(|| col_err(col, "unexpected NULL"))
    }

    /// A JSON object column.
    fn map(&self, col: &str) -> StoreResult<Map<String, Value>> {
        match self.json(col)? {
            Value::Object(m) => Ok(m),
            other => Err(col_err(col, format!("expected a JSON object, got {other}"))),
        }
    }

    /// A text column holding an enum spelling.
    fn parse<T: FromStr<Err = StoreError>>(&self, col: &str) -> StoreResult<T> {
        self.str(col)?.parse::<T>()
    }

    /// A nullable text column holding an enum spelling.
    fn opt_parse<T: FromStr<Err = StoreError>>(&self, col: &str) -> StoreResult<Option<T>> {
        self.opt_str(col)?.map(|s| s.parse::<T>()).transpose()
    }
}

/// The records of a listing's rows. A row that does not decode (a stored value its reader
/// rejects, whatever wrote it) is left out and logged with its `key` column, so that one bad
/// row cannot take every listing of its owner down; reading that row by its id still reports
/// the error.
pub fn listing<R: SqlRow, T>(
    rows: &[R],
    key: &str,
    decode: impl Fn(&R) -> StoreResult<T>,
) -> Vec<T> {
    rows.iter()
        .filter_map(|row| match decode(row) {
            Ok(record) => Some(record),
            Err(e) => {
                let id = row.str(key).unwrap_or_default();
                tracing::error!(%key, %id, error = %e, "stored row does not decode: left out of the listing");
                None
            }
        })
        .collect()
}

/// Parses JSON text read from a column.
pub fn parse_json(col: &str, text: Option<String>) -> StoreResult<Option<Value>> {
    text.map(|s| serde_json::from_str(&s).map_err(|e| col_err(col, e)))
        .transpose()
}

/// A record read from a row: `field: getter` reads the column named like the field with that
/// [`SqlRow`] getter, `field: getter("column")` a column named otherwise; the first error
/// (naming its column) is returned.
macro_rules! from_row {
    ($row:expr => $ty:ident { $($field:ident: $get:ident $(($col:literal))?),* $(,)? }) => {
        Ok($ty { $($field: $row.$get($crate::sql::column!($field $($col)?))?,)* })
    };
}
pub(crate) use from_row;

/// The column of a [`from_row!`] field.
macro_rules! column {
    ($field:ident $col:literal) => {
        $col
    };
    ($field:ident) => {
        stringify!($field)
    };
}
pub(crate) use column;

/// Implements [`SqlRow`] for a backend row type with the getters every backend shares
/// (text, integers, booleans); `ts`, `opt_ts` and `opt_json` are the backend's own.
macro_rules! common_getters {
    () => {
        fn str(&self, col: &str) -> antler_store::StoreResult<String> {
            sqlx::Row::try_get::<String, _>(self, col).map_err(|e| $crate::sql::col_err(col, e))
        }
        fn opt_str(&self, col: &str) -> antler_store::StoreResult<Option<String>> {
            sqlx::Row::try_get::<Option<String>, _>(self, col)
                .map_err(|e| $crate::sql::col_err(col, e))
        }
        fn i64(&self, col: &str) -> antler_store::StoreResult<i64> {
            sqlx::Row::try_get::<i64, _>(self, col).map_err(|e| $crate::sql::col_err(col, e))
        }
        fn opt_i64(&self, col: &str) -> antler_store::StoreResult<Option<i64>> {
            sqlx::Row::try_get::<Option<i64>, _>(self, col)
                .map_err(|e| $crate::sql::col_err(col, e))
        }
    };
}
pub(crate) use common_getters;

/// The timestamp getters of a backend with a native timestamp type.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! native_ts_getters {
    () => {
        fn ts(&self, col: &str) -> antler_store::StoreResult<chrono::DateTime<chrono::Utc>> {
            sqlx::Row::try_get::<chrono::DateTime<chrono::Utc>, _>(self, col)
                .map_err(|e| $crate::sql::col_err(col, e))
        }

        fn opt_ts(
            &self,
            col: &str,
        ) -> antler_store::StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
            sqlx::Row::try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(self, col)
                .map_err(|e| $crate::sql::col_err(col, e))
        }
    };
}
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) use native_ts_getters;

/// A backend's `bind(&Sql)`: its sqlx query of the statement with every argument bound. Text
/// and numbers bind alike everywhere; the statement text and the other kinds of argument
/// are spelled by the backend, as closures.
macro_rules! binder {
    ($db:ty, $args:ty, {
        text: $text:expr,
        bool: $bool:expr,
        ts: $ts:expr,
        opt_ts: $opt_ts:expr,
        json: $json:expr,
        opt_json: $opt_json:expr,
        json_text: $json_text:expr $(,)?
    }) => {
        type Query<'q> = sqlx::query::Query<'q, $db, $args>;

        fn bind<'q>(sql: &$crate::sql::Sql) -> Query<'q> {
            use $crate::sql::Arg;
            let mut q: Query<'q> = sqlx::query(($text)(sql));
            for a in sql.args() {
                q = match a {
                    Arg::Str(s) => q.bind(s.clone()),
                    Arg::OptStr(s) => q.bind(s.clone()),
                    Arg::I64(n) => q.bind(*n),
                    Arg::OptI64(n) => q.bind(*n),
                    Arg::F64(n) => q.bind(*n),
                    Arg::Bool(b) => q.bind(($bool)(*b)),
                    Arg::Ts(t) => q.bind(($ts)(t)),
                    Arg::OptTs(t) => q.bind(($opt_ts)(t)),
                    Arg::Json(v) => q.bind(($json)(v)),
                    Arg::OptJson(v) => q.bind(($opt_json)(v)),
                    Arg::JsonText(s) => q.bind(($json_text)(s)),
                };
            }
            q
        }
    };
}
pub(crate) use binder;

/// The error mapping and the three statement runners of a [`Dialect`] impl, for a backend
/// whose `bind(&Sql)` builds its sqlx query ([`binder!`]) and whose `map_err` classifies its
/// errors.
macro_rules! statement_runners {
    ($conn:ty, $row:ty) => {
        fn map_err(e: sqlx::Error) -> antler_store::StoreError {
            map_err(e)
        }

        fn execute<'c>(
            c: &'c mut $conn,
            sql: &'c $crate::sql::Sql,
        ) -> impl std::future::Future<Output = antler_store::StoreResult<u64>> + Send + 'c {
            async move {
                let done = bind(sql).execute(&mut *c).await.map_err(map_err)?;
                Ok(done.rows_affected())
            }
        }

        fn fetch_all<'c>(
            c: &'c mut $conn,
            sql: &'c $crate::sql::Sql,
        ) -> impl std::future::Future<Output = antler_store::StoreResult<Vec<$row>>> + Send + 'c {
            async move { bind(sql).fetch_all(&mut *c).await.map_err(map_err) }
        }

        fn fetch_optional<'c>(
            c: &'c mut $conn,
            sql: &'c $crate::sql::Sql,
        ) -> impl std::future::Future<Output = antler_store::StoreResult<Option<$row>>> + Send + 'c
        {
            async move { bind(sql).fetch_optional(&mut *c).await.map_err(map_err) }
        }
    };
}
pub(crate) use statement_runners;
