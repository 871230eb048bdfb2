//! Test support shared by the multi-process tests: `antler serve` child processes, blocking HTTP
//! helpers, and a private database per test on the shared PostgreSQL / MySQL servers, so servers
//! under test never see (and never claim or adopt) the rows of other tests running at the same
//! time. (Each test binary uses a different subset.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

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

pub struct Proc {
    child: Child,
    pub url: String,
}

impl Proc {
    /// Starts `antler serve` on port 0 with `config` and waits for its listening line.
    pub fn start(dir: &Path, name: &str, config: &str) -> Proc {
        let cfg_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&cfg_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_antler"))
            .args(["serve", "--port", "0", "--config"])
            .arg(&cfg_path)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("ANTLER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn antler");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(u) = line.strip_prefix("antler listening on ") {
                        break u.trim().to_string();
                    }
                }
                _ => panic!("antler ({name}) exited before listening"),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Proc { child, url }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

pub fn post(url: &str, body: Value) -> Value {
    let r = http().post(url).json(&body).send().unwrap();
    let status = r.status();
    let v: Value = r.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "POST {url}: {status} {v}");
    v
}

pub fn get(url: &str) -> Value {
    let r = http().get(url).send().unwrap();
    let status = r.status();
    let v: Value = r.json().unwrap();
    assert!(status.is_success(), "GET {url}: {status} {v}");
    v
}

pub fn contents(values: &Value) -> Vec<String> {
    values["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["content"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}
