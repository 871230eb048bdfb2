//! `antler-store-sql`: SQL implementations of the `antler-store` repository traits and of the
//! `antler-graph` checkpointer.
//!
//! Three backends, each a module with its own embedded migrations (`migrations/<backend>/`):
//! SQLite ([`sqlite`], always built), PostgreSQL (`postgres`, feature `postgres`) and
//! MySQL/MariaDB (`mysql`, feature `mysql`). They share the schema's shape (same tables, same
//! columns) with each backend's native types, and pass the same conformance suites.
//! Queries are runtime `sqlx::query` calls with every value bound; optional filters go
//! through `QueryBuilder`.

mod checkpoint_common;
pub mod sqlite;

#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "mysql")]
pub mod mysql;

pub use sqlite::{
    MAX_DELTA_DEPTH, SqliteAssistantStore, SqliteCheckpointer, SqliteFeedbackStore,
    SqliteItemStore, SqliteRunEventStore, SqliteRunStore, SqliteThreadStore, connect_pool,
    open_sqlite, open_sqlite_url, stores_from_pool,
};
