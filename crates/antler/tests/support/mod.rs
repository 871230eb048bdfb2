//! Test support shared by the multi-process tests: a private database per test on the shared
//! PostgreSQL / MySQL servers, so servers under test never see (and never claim or adopt) the
//! rows of other tests running at the same time.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// A database created for one test and dropped when this value is dropped.
pub struct PrivateDb {
    /// URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
    mysql: bool,
}

/// Runs `f` on a fresh runtime in its own thread (callers may be inside a runtime already).
fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f)
    })
    .join()
    .expect("database setup thread")
}

async fn execute(admin_url: String, mysql: bool, sql: String) -> Result<(), sqlx::Error> {
    let admin_url = admin_url.as_str();
    if mysql {
        let mut c = sqlx::MySqlConnection::connect(admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await?;
        c.close().await
    } else {
        let mut c = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await?;
        c.close().await
    }
}

impl PrivateDb {
    /// Creates `antler_t_<pid>_<nanos>` next to the database of `admin_url`
    /// (`postgres://...` or `mysql://...`).
    pub fn create(admin_url: &str) -> Self {
        let mysql = admin_url.starts_with("mysql:") || admin_url.starts_with("mariadb:");
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!("antler_t_{}_{stamp}", std::process::id());
        let base = admin_url.split('?').next().unwrap_or(admin_url);
        let prefix = base.rsplit_once('/').map(|(p, _)| p).unwrap_or(base);
        let url = format!("{prefix}/{name}");
        block_on(execute(
            admin_url.to_string(),
            mysql,
            format!("CREATE DATABASE {name}"),
        ))
        .unwrap_or_else(|e| panic!("cannot create test database {name} via {admin_url}: {e}"));
        PrivateDb {
            url,
            admin_url: admin_url.to_string(),
            name,
            mysql,
        }
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        let sql = if self.mysql {
            format!("DROP DATABASE IF EXISTS {}", self.name)
        } else {
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)
        };
        if let Err(e) = block_on(execute(self.admin_url.clone(), self.mysql, sql)) {
            eprintln!("note: could not drop test database {}: {e}", self.name);
        }
    }
}
