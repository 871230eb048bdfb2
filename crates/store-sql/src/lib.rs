//! `antler-store-sql`: SQL implementations of the `antler-store` repository traits and of the
//! `antler-graph` checkpointer.
//!
//! One implementation of each repository ([`repo`]) and of the checkpointer
//! ([`checkpointer`]), written against a small [`sql::Dialect`] that each backend implements:
//! SQLite ([`sqlite`], always built), PostgreSQL (`postgres`, feature `postgres`) and
//! MySQL/MariaDB (`mysql`, feature `mysql`). A backend module holds only what is truly its
//! own — connecting, migrations (`migrations/<backend>/`), error classification, column
//! types, JSON filters and the few clauses it spells differently. The schemas have the same
//! tables and columns in each backend's native types, and every backend passes the same
//! conformance suites. Statements are runtime `sqlx` queries with every value bound.

pub mod checkpointer;
mod commit;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod pool;
#[doc(hidden)]
pub mod repo;
#[doc(hidden)]
pub mod sql;
pub mod sqlite;

#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "mysql")]
pub mod mysql;

use std::sync::Arc;

use antler_store::Stores;

pub use checkpointer::{MAX_DELTA_DEPTH, SqlCheckpointer};
pub use sqlite::{
    SqliteCheckpointer, connect_pool, open_sqlite, open_sqlite_url, stores_from_pool,
};

/// Writers of a database's commit queue: one where the database has a single writer
/// (SQLite); a few on PostgreSQL / MySQL, where one writer would put every statement of every
/// run on one connection, one round trip after the other.
fn commit_lanes<D: sql::Dialect>() -> usize {
    if D::EXCLUSIVE { 1 } else { COMMIT_LANES }
}

/// Writers of a PostgreSQL / MySQL commit queue (see [`commit_lanes`]).
pub const COMMIT_LANES: usize = 4;

/// Every store over one database.
pub(crate) fn stores<D: sql::Dialect>(db: sql::Db<D>) -> Stores {
    let checkpointer = SqlCheckpointer::with_db(db.clone());
    let applier = commit::SqlApplier {
        db: db.clone(),
        checkpointer: checkpointer.clone(),
    };
    Stores {
        assistants: Arc::new(repo::SqlAssistantStore { db: db.clone() }),
        threads: Arc::new(repo::SqlThreadStore { db: db.clone() }),
        runs: Arc::new(repo::SqlRunStore { db: db.clone() }),
        events: Arc::new(repo::SqlRunEventStore { db: db.clone() }),
        feedback: Arc::new(repo::SqlFeedbackStore { db: db.clone() }),
        items: Arc::new(repo::SqlItemStore { db: db.clone() }),
        checkpoints: Arc::new(checkpointer),
        commits: antler_store::CommitQueue::with_lanes(Arc::new(applier), commit_lanes::<D>()),
    }
}
