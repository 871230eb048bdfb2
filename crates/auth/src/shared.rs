//! [`AuthStore`]s in the deployment's shared database — PostgreSQL ([`PgAuthStore`], feature
//! `postgres`) and MySQL / MariaDB ([`MysqlAuthStore`], feature `mysql`) — so that every replica
//! sees the same users, API keys, token versions and session-token secret.
//!
//! Tables `auth_users`, `auth_api_keys`, `auth_settings` (`migrations-postgres`,
//! `migrations-mysql`), applied by this crate's own migrator and recorded in
//! `_antler_auth_migrations`, so they never meet the stores' migrator in the same database.
//! Values are stored as the SQLite store stores them (timestamps as RFC 3339 UTC text), and
//! the statements are the same for every backend apart from the placeholders and the table
//! names, so one macro ([`auth_store_impl`]) writes the three implementations' shared part. The first admin is created under a row lock on a settings row
//! (two replicas initializing at once cannot both succeed); the session secret is the first
//! one any replica stored.

use crate::error::AuthError;

/// Name of this crate's migrations table in a shared database.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const MIGRATIONS_TABLE: &str = "_antler_auth_migrations";

pub(crate) fn parse_ts(s: &str) -> crate::error::AuthResult<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| AuthError::Storage(format!("bad timestamp in the auth tables: {e}")))
}

pub(crate) fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(crate) fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// PostgreSQL's numbered placeholders for a statement written with `?`.
#[cfg(feature = "postgres")]
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A statement written with `?`, for the backends that take `?` (SQLite, MySQL).
pub(crate) fn as_is(sql: &str) -> String {
    sql.to_owned()
}

pub(crate) const USER_COLS: &str =
    "id, email, password_hash, system_role, token_version, created_at";
pub(crate) const KEY_COLS: &str = "id, user_id, name, key_hash, created_at, revoked_at";

/// Writes one shared-database store: `$store` over `$db` (`sqlx::Postgres` / `sqlx::MySql`),
/// with `$sql` turning a `?`-placeholder statement into the backend's, `$insert_secret` the
/// insert-if-absent of a setting, and `$kind` the backend's name in messages.
/// The row mapping and the [`AuthStore`](crate::store::AuthStore) methods shared by every SQL
/// account store: `$store` (with a `pool` field and inherent `first_admin` / `stored_secret`,
/// which differ per backend) over `$db`, `$sql` turning a `?`-placeholder statement into the
/// backend's, `$users` / `$keys` the table names.
macro_rules! auth_store_impl {
    ($store:ident, $db:ty, $sql:path, $users:literal, $keys:literal) => {
        impl $store {
            fn user(
                r: &<$db as sqlx::Database>::Row,
            ) -> $crate::error::AuthResult<$crate::model::User> {
                use sqlx::Row as _;
                Ok($crate::model::User {
                    id: r.try_get("id")?,
                    email: r.try_get("email")?,
                    password_hash: r.try_get("password_hash")?,
                    role: $crate::model::Role::parse(&r.try_get::<String, _>("system_role")?),
                    token_version: r.try_get("token_version")?,
                    created_at: $crate::shared::parse_ts(&r.try_get::<String, _>("created_at")?)?,
                })
            }

            fn key(
                r: &<$db as sqlx::Database>::Row,
            ) -> $crate::error::AuthResult<$crate::model::ApiKey> {
                use sqlx::Row as _;
                let revoked: Option<String> = r.try_get("revoked_at")?;
                Ok($crate::model::ApiKey {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    name: r.try_get("name")?,
                    key_hash: r.try_get("key_hash")?,
                    created_at: $crate::shared::parse_ts(&r.try_get::<String, _>("created_at")?)?,
                    revoked_at: revoked
                        .as_deref()
                        .map($crate::shared::parse_ts)
                        .transpose()?,
                })
            }

            async fn insert_user(
                conn: &mut <$db as sqlx::Database>::Connection,
                user: &$crate::model::User,
            ) -> $crate::error::AuthResult<()> {
                let sql = $sql(concat!(
                    "INSERT INTO ",
                    $users,
                    " (id, email, password_hash, system_role, token_version, created_at) \
                     VALUES (?, ?, ?, ?, ?, ?)"
                ));
                let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&user.id)
                    .bind(&user.email)
                    .bind(&user.password_hash)
                    .bind(user.role.as_str())
                    .bind(user.token_version)
                    .bind($crate::shared::ts(user.created_at))
                    .execute(&mut *conn)
                    .await;
                match r {
                    Ok(_) => Ok(()),
                    Err(e) if $crate::shared::unique_violation(&e) => {
                        Err($crate::error::AuthError::EmailExists)
                    }
                    Err(e) => Err(e.into()),
                }
            }

            async fn count_admins(
                conn: &mut <$db as sqlx::Database>::Connection,
            ) -> $crate::error::AuthResult<i64> {
                use sqlx::Row as _;
                let row = sqlx::query(concat!(
                    "SELECT COUNT(*) AS n FROM ",
                    $users,
                    " WHERE system_role = 'admin'"
                ))
                .fetch_one(&mut *conn)
                .await?;
                Ok(row.try_get::<i64, _>("n")?)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::AuthStore for $store {
            async fn create_user(
                &self,
                user: &$crate::model::User,
            ) -> $crate::error::AuthResult<()> {
                let mut conn = self.pool.acquire().await?;
                Self::insert_user(&mut conn, user).await
            }

            async fn create_first_admin(
                &self,
                user: &$crate::model::User,
            ) -> $crate::error::AuthResult<()> {
                self.first_admin(user).await
            }

            async fn get_user(
                &self,
                id: &str,
            ) -> $crate::error::AuthResult<Option<$crate::model::User>> {
                let sql = $sql(&format!(
                    concat!("SELECT {} FROM ", $users, " WHERE id = ?"),
                    $crate::shared::USER_COLS
                ));
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::user)
                    .transpose()
            }

            async fn get_user_by_email(
                &self,
                email: &str,
            ) -> $crate::error::AuthResult<Option<$crate::model::User>> {
                let sql = $sql(&format!(
                    concat!("SELECT {} FROM ", $users, " WHERE email = ?"),
                    $crate::shared::USER_COLS
                ));
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(email)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::user)
                    .transpose()
            }

            async fn list_users(&self) -> $crate::error::AuthResult<Vec<$crate::model::User>> {
                let sql = format!(
                    concat!("SELECT {} FROM ", $users, " ORDER BY created_at, id"),
                    $crate::shared::USER_COLS
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(Self::user)
                    .collect()
            }

            async fn has_admin(&self) -> $crate::error::AuthResult<bool> {
                let mut conn = self.pool.acquire().await?;
                Ok(Self::count_admins(&mut conn).await? > 0)
            }

            async fn update_credentials(
                &self,
                id: &str,
                email: &str,
                password_hash: &str,
            ) -> $crate::error::AuthResult<$crate::model::User> {
                let sql = $sql(concat!(
                    "UPDATE ",
                    $users,
                    " SET email = ?, password_hash = ?, \
                     token_version = token_version + 1 WHERE id = ?"
                ));
                let r = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(email)
                    .bind(password_hash)
                    .bind(id)
                    .execute(&self.pool)
                    .await;
                match r {
                    Ok(done) if done.rows_affected() == 0 => {
                        return Err($crate::error::AuthError::NotFound);
                    }
                    Ok(_) => {}
                    Err(e) if $crate::shared::unique_violation(&e) => {
                        return Err($crate::error::AuthError::EmailExists);
                    }
                    Err(e) => return Err(e.into()),
                }
                self.get_user(id)
                    .await?
                    .ok_or($crate::error::AuthError::NotFound)
            }

            async fn set_role(
                &self,
                id: &str,
                role: $crate::model::Role,
            ) -> $crate::error::AuthResult<()> {
                let sql = $sql(concat!(
                    "UPDATE ",
                    $users,
                    " SET system_role = ? WHERE id = ?"
                ));
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(role.as_str())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                // MySQL counts changed rows: an unchanged role is 0 rows but not unknown
                if done.rows_affected() == 0 && self.get_user(id).await?.is_none() {
                    return Err($crate::error::AuthError::NotFound);
                }
                Ok(())
            }

            async fn create_api_key(
                &self,
                key: &$crate::model::ApiKey,
            ) -> $crate::error::AuthResult<()> {
                let sql = $sql(concat!(
                    "INSERT INTO ",
                    $keys,
                    " (id, user_id, name, key_hash, created_at, revoked_at) \
                     VALUES (?, ?, ?, ?, ?, ?)"
                ));
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&key.id)
                    .bind(&key.user_id)
                    .bind(&key.name)
                    .bind(&key.key_hash)
                    .bind($crate::shared::ts(key.created_at))
                    .bind(key.revoked_at.map($crate::shared::ts))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| {
                        if $crate::shared::unique_violation(&e) {
                            $crate::error::AuthError::InvalidInput(
                                "duplicate API key id".to_owned(),
                            )
                        } else {
                            e.into()
                        }
                    })?;
                Ok(())
            }

            async fn get_api_key(
                &self,
                id: &str,
            ) -> $crate::error::AuthResult<Option<$crate::model::ApiKey>> {
                let sql = $sql(&format!(
                    concat!("SELECT {} FROM ", $keys, " WHERE id = ?"),
                    $crate::shared::KEY_COLS
                ));
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(Self::key)
                    .transpose()
            }

            async fn list_api_keys(
                &self,
                user_id: Option<&str>,
            ) -> $crate::error::AuthResult<Vec<$crate::model::ApiKey>> {
                let rows = match user_id {
                    Some(u) => {
                        let sql = $sql(&format!(
                            concat!(
                                "SELECT {} FROM ",
                                $keys,
                                " WHERE user_id = ? ORDER BY created_at, id"
                            ),
                            $crate::shared::KEY_COLS
                        ));
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .bind(u)
                            .fetch_all(&self.pool)
                            .await?
                    }
                    None => {
                        let sql = format!(
                            concat!("SELECT {} FROM ", $keys, " ORDER BY created_at, id"),
                            $crate::shared::KEY_COLS
                        );
                        sqlx::query(sqlx::AssertSqlSafe(sql))
                            .fetch_all(&self.pool)
                            .await?
                    }
                };
                rows.iter().map(Self::key).collect()
            }

            async fn revoke_api_key(
                &self,
                id: &str,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::error::AuthResult<bool> {
                let sql = $sql(concat!(
                    "UPDATE ",
                    $keys,
                    " SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
                ));
                let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind($crate::shared::ts(at))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn shared_secret(
                &self,
                name: &str,
                candidate: &str,
            ) -> $crate::error::AuthResult<Option<String>> {
                self.stored_secret(name, candidate).await
            }
        }
    };
}

pub(crate) use auth_store_impl;

#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! shared_store {
    ($store:ident, $db:ty, $pool_opts:ty, $sql:path, $insert_secret:literal, $kind:literal) => {
        /// Users, API keys and the session secret in the shared database (see the module docs).
        #[derive(Clone, Debug)]
        pub struct $store {
            pool: sqlx::Pool<$db>,
        }

        impl $store {
            /// Connects to `url` (a small pool of its own) and applies the auth migrations.
            pub async fn connect(url: &str) -> crate::error::AuthResult<Self> {
                let pool = <$pool_opts>::new()
                    .max_connections(4)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(|e| {
                        AuthError::Storage(format!(
                            "cannot connect to the {} auth database: {e}",
                            $kind
                        ))
                    })?;
                let mut migrator = Self::migrator();
                migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
                migrator.run(&pool).await.map_err(|e| {
                    AuthError::Storage(format!("{} auth migration failed: {e}", $kind))
                })?;
                Ok(Self { pool })
            }

            async fn first_admin(&self, user: &crate::model::User) -> crate::error::AuthResult<()> {
                // The settings row's lock serializes initializations across replicas.
                let mut tx = self.pool.begin().await?;
                let sql = $sql("SELECT value FROM auth_settings WHERE name = ? FOR UPDATE");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind("initialized_lock")
                    .fetch_optional(&mut *tx)
                    .await?;
                if Self::count_admins(&mut tx).await? > 0 {
                    return Err(AuthError::AlreadyInitialized);
                }
                Self::insert_user(&mut tx, user).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn stored_secret(
                &self,
                name: &str,
                candidate: &str,
            ) -> crate::error::AuthResult<Option<String>> {
                use sqlx::Row as _;
                sqlx::query(sqlx::AssertSqlSafe($sql($insert_secret)))
                    .bind(name)
                    .bind(candidate)
                    .execute(&self.pool)
                    .await?;
                let row = sqlx::query(sqlx::AssertSqlSafe($sql(
                    "SELECT value FROM auth_settings WHERE name = ?",
                )))
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
                Ok(Some(row.try_get::<String, _>("value")?))
            }
        }

        $crate::shared::auth_store_impl!($store, $db, $sql, "auth_users", "auth_api_keys");
    };
}

#[cfg(feature = "postgres")]
shared_store!(
    PgAuthStore,
    sqlx::Postgres,
    sqlx::postgres::PgPoolOptions,
    numbered,
    "INSERT INTO auth_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
    "PostgreSQL"
);

#[cfg(feature = "postgres")]
impl PgAuthStore {
    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations-postgres")
    }
}

#[cfg(feature = "mysql")]
shared_store!(
    MysqlAuthStore,
    sqlx::MySql,
    sqlx::mysql::MySqlPoolOptions,
    as_is,
    "INSERT IGNORE INTO auth_settings (name, value) VALUES (?, ?)",
    "MySQL"
);

#[cfg(feature = "mysql")]
impl MysqlAuthStore {
    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations-mysql")
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            super::numbered("UPDATE t SET a = ? WHERE b = ? AND c IS NULL"),
            "UPDATE t SET a = $1 WHERE b = $2 AND c IS NULL"
        );
    }
}
