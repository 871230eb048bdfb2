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
}

/// Parses JSON text read from a column.
pub fn parse_json(col: &str, text: Option<String>) -> StoreResult<Option<Value>> {
    text.map(|s| serde_json::from_str(&s).map_err(|e| col_err(col, e)))
        .transpose()
}

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

/// The three statement runners of a [`Dialect`] impl, for a backend whose `bind(&Sql)`
/// builds its sqlx query and whose `map_err` classifies its errors.
macro_rules! statement_runners {
    ($conn:ty, $row:ty) => {
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
