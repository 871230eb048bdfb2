//! SQLite [`AuthStore`] in its own file (`auth.db` in the data directory) with its own
//! migrations (`crates/auth/migrations`), so it never meets the main database's migrator.
//! Every value bound; timestamps are RFC 3339 UTC text with microseconds. The statements are
//! those of every SQL account store (`crate::shared::auth_store_impl`) over the tables `users`
//! and `api_keys`; only creating the first admin is SQLite's own.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{AuthError, AuthResult};
use crate::model::User;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// File name of the auth database inside the data directory.
pub const AUTH_DB_FILE: &str = "auth.db";

/// Users and keys in SQLite.
#[derive(Clone)]
pub struct SqliteAuthStore {
    pool: SqlitePool,
}

impl SqliteAuthStore {
    /// Opens (creating it if needed) `dir/auth.db` and runs the migrations.
    pub async fn open(dir: &Path) -> AuthResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            AuthError::Storage(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let opts = SqliteConnectOptions::new()
            .filename(dir.join(AUTH_DB_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        Self::connect(opts, 4).await
    }

    /// A private in-memory database (tests).
    pub async fn open_in_memory() -> AuthResult<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?
            .journal_mode(SqliteJournalMode::Memory);
        Self::connect(opts, 1).await
    }

    async fn connect(opts: SqliteConnectOptions, max: u32) -> AuthResult<Self> {
        let opts = opts
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database exists once per connection: with max 1, keep it forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| AuthError::Storage(format!("auth migration failed: {e}")))?;
        Ok(Self { pool })
    }
}

impl SqliteAuthStore {
    /// One statement: SQLite runs one writer at a time, so the check and the insert cannot
    /// interleave with another writer.
    async fn first_admin(&self, user: &User) -> AuthResult<()> {
        let r = sqlx::query(
            "INSERT INTO users (id, email, password_hash, system_role, token_version, created_at) \
             SELECT ?, ?, ?, ?, ?, ? \
             WHERE NOT EXISTS (SELECT 1 FROM users WHERE system_role = 'admin')",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.token_version)
        .bind(crate::shared::ts(user.created_at))
        .execute(&self.pool)
        .await;
        match r {
            Ok(done) if done.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(AuthError::AlreadyInitialized),
            Err(e) if crate::shared::unique_violation(&e) => Err(AuthError::EmailExists),
            Err(e) => Err(e.into()),
        }
    }

    /// `auth.db` belongs to one process: no deployment-wide secret here (the caller keeps its
    /// own in the data directory).
    async fn stored_secret(&self, _name: &str, _candidate: &str) -> AuthResult<Option<String>> {
        Ok(None)
    }
}

crate::shared::auth_store_impl!(
    SqliteAuthStore,
    sqlx::Sqlite,
    crate::shared::as_is,
    "users",
    "api_keys"
);
