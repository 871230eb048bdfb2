//! [`Db`]: a backend's pool with the retry and write discipline every repository uses.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_store::{StoreError, StoreResult};

use super::write_lock::{Priority, WriteGuard, WriteLock};
use super::{Dialect, Sql, backoff};

/// A backend's connection type (what a pooled connection and a transaction deref to).
pub type Conn<D> = <<D as Dialect>::DB as sqlx::Database>::Connection;

/// Prefix of transient errors that are not retried: the caller already waited (pool acquire
/// timeout, statement timeout), and repeating it would multiply the wait.
pub const NO_RETRY: &str = "timed out: ";

/// How long a request waits for a connection before asking whether the database server is
/// reachable at all (one probe connection, shared by every waiter for [`PROBE_FRESH`]): when
/// it is not, the request answers at once instead of after the whole `pool_timeout`.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(2);
/// How long a probe's answer stands for later waiters.
const PROBE_FRESH: Duration = Duration::from_secs(1);

/// Who waits for a write: a client's acknowledgement (a new run or thread) goes before
/// queued background writes on a database one process owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteClass {
    Ack,
    Background,
}

/// The pool, the dialect and, where one process owns the database, its write lock.
pub struct Db<D: Dialect> {
    pub pool: sqlx::Pool<D::DB>,
    pub dialect: D,
    write_lock: Arc<WriteLock>,
    /// No other pool or process writes this database (the server took its data directory's
    /// lock): what this process cached of its own writes needs no validation.
    pub owned: bool,
    /// The last reachability probe: when, and whether the server answered.
    probe: Arc<tokio::sync::Mutex<Option<(Instant, bool)>>>,
}

impl<D: Dialect> Clone for Db<D> {
    fn clone(&self) -> Self {
        Db {
            pool: self.pool.clone(),
            dialect: self.dialect.clone(),
            write_lock: self.write_lock.clone(),
            owned: self.owned,
            probe: self.probe.clone(),
        }
    }
}

impl<D: Dialect> std::fmt::Debug for Db<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &D::NAME)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

/// A write transaction (holding the process write lock on an exclusive database until
/// commit or drop; dropping without commit rolls back). Derefs to the connection.
pub struct Tx<D: Dialect> {
    tx: sqlx::Transaction<'static, D::DB>,
    _guard: Option<WriteGuard>,
}

impl<D: Dialect> Tx<D> {
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await.map_err(D::map_err)
    }
}

impl<D: Dialect> Deref for Tx<D> {
    type Target = Conn<D>;
    fn deref(&self) -> &Conn<D> {
        &self.tx
    }
}

impl<D: Dialect> DerefMut for Tx<D> {
    fn deref_mut(&mut self) -> &mut Conn<D> {
        &mut self.tx
    }
}

impl<D: Dialect> Db<D> {
    pub fn new(pool: sqlx::Pool<D::DB>, dialect: D) -> Self {
        Db {
            pool,
            dialect,
            write_lock: Arc::new(WriteLock::default()),
            owned: false,
            probe: Arc::default(),
        }
    }

    /// Marks the database as written by this pool only (see [`Db::owned`]).
    pub fn owned(mut self) -> Self {
        self.owned = true;
        self
    }

    /// Runs `f` (a read, a statement, or a whole transaction that begins and commits
    /// itself), retrying it with exponential backoff while it fails transiently.
    pub async fn retry<T, F, Fut>(&self, mut f: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f().await {
                Err(StoreError::Transient(msg))
                    if attempt < D::MAX_ATTEMPTS && !msg.starts_with(NO_RETRY) =>
                {
                    tracing::debug!(attempt, %msg, backend = D::NAME, "transient failure, retrying");
                    tokio::time::sleep(backoff(D::BACKOFF_MS, attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// The process write lock, on a database one process owns (`None` elsewhere: row locks
    /// and unique indexes order concurrent writers).
    pub async fn lock(&self, class: WriteClass) -> Option<WriteGuard> {
        if !D::EXCLUSIVE {
            return None;
        }
        let priority = match class {
            WriteClass::Ack => Priority::Ack,
            WriteClass::Background => Priority::Background,
        };
        Some(self.write_lock.acquire(priority).await)
    }

    /// Starts a write transaction (no retry: wrap the whole transaction in [`Db::retry`]).
    pub async fn begin(&self, class: WriteClass) -> StoreResult<Tx<D>> {
        let guard = self.lock(class).await;
        self.open(D::BEGIN_WRITE, guard).await
    }

    /// Starts a read transaction: every statement in it sees the same snapshot.
    pub async fn begin_read(&self) -> StoreResult<Tx<D>> {
        self.open(D::BEGIN_READ, None).await
    }

    async fn open(&self, begin: &'static str, guard: Option<WriteGuard>) -> StoreResult<Tx<D>> {
        let tx = self.connecting(self.pool.begin_with(begin)).await?;
        Ok(Tx { tx, _guard: guard })
    }

    /// A pooled connection (see [`Db::connecting`]).
    pub async fn acquire(&self) -> StoreResult<sqlx::pool::PoolConnection<D::DB>> {
        self.connecting(self.pool.acquire()).await
    }

    /// Awaits `get` (a pool acquire, or a transaction's begin). On a database server (not one
    /// this process owns), when no connection came within [`UNREACHABLE_AFTER`] and a probe
    /// connection cannot be opened either, the server is taken as down: a transient error (a
    /// 503 at the edge) now rather than after `pool_timeout`. A pool that is only busy keeps
    /// waiting.
    async fn connecting<T>(
        &self,
        get: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> StoreResult<T> {
        let mut get = std::pin::pin!(get);
        if D::EXCLUSIVE {
            return get.await.map_err(D::map_err);
        }
        match tokio::time::timeout(UNREACHABLE_AFTER, &mut get).await {
            Ok(got) => got.map_err(D::map_err),
            Err(_) if !self.reachable().await => Err(StoreError::Transient(format!(
                "{NO_RETRY}{} unreachable: no connection could be opened",
                D::NAME
            ))),
            Err(_) => get.await.map_err(D::map_err),
        }
    }

    /// Whether the server accepts a new connection (one probe at a time, its answer shared
    /// for [`PROBE_FRESH`]).
    async fn reachable(&self) -> bool {
        use sqlx::{ConnectOptions, Connection};
        let mut last = self.probe.lock().await;
        if let Some((at, ok)) = *last
            && at.elapsed() < PROBE_FRESH
        {
            return ok;
        }
        let options = self.pool.connect_options();
        let ok = match tokio::time::timeout(UNREACHABLE_AFTER, options.connect()).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(backend = D::NAME, error = %e, "database unreachable");
                false
            }
            Err(_) => false,
        };
        *last = Some((Instant::now(), ok));
        ok
    }

    /// Every row of a query, on a pooled connection, with retries.
    pub async fn fetch_all(&self, sql: &Sql) -> StoreResult<Vec<D::Row>> {
        self.retry(|| async {
            let mut c = self.acquire().await?;
            D::fetch_all(&mut c, sql).await
        })
        .await
    }

    /// The first row of a query, on a pooled connection, with retries.
    pub async fn fetch_optional(&self, sql: &Sql) -> StoreResult<Option<D::Row>> {
        self.retry(|| async {
            let mut c = self.acquire().await?;
            D::fetch_optional(&mut c, sql).await
        })
        .await
    }

    /// The integer in column `n` of a query's first row (`SELECT COUNT(*) AS n ...`).
    pub async fn count(&self, sql: &Sql) -> StoreResult<u64> {
        use super::SqlRow;
        let row = self.fetch_optional(sql).await?;
        Ok(match row {
            Some(r) => r.i64("n")?.max(0) as u64,
            None => 0,
        })
    }

    /// Runs one write statement in autocommit mode (one statement is atomic on its own; no
    /// BEGIN/COMMIT round trips), under the process write lock where there is one, with
    /// retries. Returns the number of rows it changed.
    pub async fn execute(&self, class: WriteClass, sql: &Sql) -> StoreResult<u64> {
        self.retry(|| async {
            let _guard = self.lock(class).await;
            let mut c = self.acquire().await?;
            D::execute(&mut c, sql).await
        })
        .await
    }
}

/// Runs `$body` in a write transaction of `$db` (class `$class`) and commits it, retrying the
/// whole transaction while it fails transiently: `$body` runs again from the start on every
/// attempt, with `$tx` bound to `&mut Tx`. (A macro, not a method taking an async closure:
/// such a closure's future cannot be proven `Send` for every lifetime of its argument.)
macro_rules! transaction {
    ($db:expr, $class:expr, |$tx:ident| $body:expr) => {
        $db.retry(|| async {
            let mut tx = $db.begin($class).await?;
            let out = {
                let $tx = &mut tx;
                $body
            }?;
            tx.commit().await?;
            Ok(out)
        })
    };
}
pub(crate) use transaction;
