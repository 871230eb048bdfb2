//! SQLite [`AuthStore`] in its own file (`auth.db` in the data directory) with its own
//! migrations (`crates/auth/migrations`), so it never meets the main database's migrator.
//! Static SQL, every value bound; timestamps are RFC 3339 UTC text with microseconds.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::error::{AuthError, AuthResult};
use crate::model::{ApiKey, Role, User};
use crate::store::AuthStore;

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

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> AuthResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| AuthError::Storage(format!("bad timestamp in auth.db: {e}")))
}

fn user_from_row(r: &SqliteRow) -> AuthResult<User> {
    Ok(User {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        password_hash: r.try_get("password_hash")?,
        role: Role::parse(&r.try_get::<String, _>("system_role")?),
        token_version: r.try_get("token_version")?,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
    })
}

fn key_from_row(r: &SqliteRow) -> AuthResult<ApiKey> {
    let revoked: Option<String> = r.try_get("revoked_at")?;
    Ok(ApiKey {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        key_hash: r.try_get("key_hash")?,
        created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
        revoked_at: revoked.as_deref().map(parse_ts).transpose()?,
    })
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

macro_rules! user_cols {
    () => {
        "id, email, password_hash, system_role, token_version, created_at"
    };
}
macro_rules! key_cols {
    () => {
        "id, user_id, name, key_hash, created_at, revoked_at"
    };
}

#[async_trait]
impl AuthStore for SqliteAuthStore {
    async fn create_user(&self, user: &User) -> AuthResult<()> {
        let r = sqlx::query(
            "INSERT INTO users (id, email, password_hash, system_role, token_version, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.token_version)
        .bind(ts(user.created_at))
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e) => Err(AuthError::EmailExists),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_first_admin(&self, user: &User) -> AuthResult<()> {
        // One statement: the check and the insert cannot interleave with another writer.
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
        .bind(ts(user.created_at))
        .execute(&self.pool)
        .await;
        match r {
            Ok(done) if done.rows_affected() == 1 => Ok(()),
            Ok(_) => Err(AuthError::AlreadyInitialized),
            Err(e) if unique_violation(&e) => Err(AuthError::EmailExists),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_user(&self, id: &str) -> AuthResult<Option<User>> {
        let sql = concat!("SELECT ", user_cols!(), " FROM users WHERE id = ?");
        sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn get_user_by_email(&self, email: &str) -> AuthResult<Option<User>> {
        let sql = concat!("SELECT ", user_cols!(), " FROM users WHERE email = ?");
        sqlx::query(sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn list_users(&self) -> AuthResult<Vec<User>> {
        let sql = concat!(
            "SELECT ",
            user_cols!(),
            " FROM users ORDER BY created_at, id"
        );
        sqlx::query(sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn has_admin(&self) -> AuthResult<bool> {
        let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM users WHERE system_role = 'admin')")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)? != 0)
    }

    async fn update_credentials(
        &self,
        id: &str,
        email: &str,
        password_hash: &str,
    ) -> AuthResult<User> {
        let r = sqlx::query(
            "UPDATE users SET email = ?, password_hash = ?, token_version = token_version + 1 \
             WHERE id = ?",
        )
        .bind(email)
        .bind(password_hash)
        .bind(id)
        .execute(&self.pool)
        .await;
        match r {
            Ok(done) if done.rows_affected() == 0 => return Err(AuthError::NotFound),
            Ok(_) => {}
            Err(e) if unique_violation(&e) => return Err(AuthError::EmailExists),
            Err(e) => return Err(e.into()),
        }
        self.get_user(id).await?.ok_or(AuthError::NotFound)
    }

    async fn set_role(&self, id: &str, role: Role) -> AuthResult<()> {
        let done = sqlx::query("UPDATE users SET system_role = ? WHERE id = ?")
            .bind(role.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(AuthError::NotFound);
        }
        Ok(())
    }

    async fn create_api_key(&self, key: &ApiKey) -> AuthResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, key_hash, created_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.user_id)
        .bind(&key.name)
        .bind(&key.key_hash)
        .bind(ts(key.created_at))
        .bind(key.revoked_at.map(ts))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                AuthError::InvalidInput("duplicate API key id".to_owned())
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> AuthResult<Option<ApiKey>> {
        let sql = concat!("SELECT ", key_cols!(), " FROM api_keys WHERE id = ?");
        sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn list_api_keys(&self, user_id: Option<&str>) -> AuthResult<Vec<ApiKey>> {
        let rows = match user_id {
            Some(u) => {
                let sql = concat!(
                    "SELECT ",
                    key_cols!(),
                    " FROM api_keys WHERE user_id = ? ORDER BY created_at, id"
                );
                sqlx::query(sql).bind(u).fetch_all(&self.pool).await?
            }
            None => {
                let sql = concat!(
                    "SELECT ",
                    key_cols!(),
                    " FROM api_keys ORDER BY created_at, id"
                );
                sqlx::query(sql).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> AuthResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ts(at))
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
