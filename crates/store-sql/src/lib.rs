//! `antler-store-sql`: SQL implementations of the `antler-store` repository traits and of the
//! `antler-graph` checkpointer.
//!
//! Today: SQLite ([`sqlite`]), with embedded migrations in `migrations/sqlite/`. PostgreSQL
//! and MySQL will live beside it (`postgres/`, `mysql/`, each with its own migrations), sharing
//! the schema's shape: same tables, same columns, JSON as the backend's native type.
//! Queries are runtime `sqlx::query` calls with every value bound; optional filters go
//! through `QueryBuilder`.

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
