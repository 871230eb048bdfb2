//! `runs` table: the seeds' RunStore contract plus queue helpers.

use antler_store::{
    Claim, ReplicaInfo, Run, RunCompletion, RunListQuery, RunProgress, RunStatus, RunStore,
    StoreError, StoreResult, TokenAggregate, time, util,
};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};

use super::*;

/// SQLite [`RunStore`].
#[derive(Debug, Clone)]
pub struct SqliteRunStore {
    pub(crate) db: Db,
}

fn row_to_run(row: &SqliteRow) -> StoreResult<Run> {
    Ok(Run {
        run_id: get_str(row, "run_id")?,
        thread_id: get_str(row, "thread_id")?,
        assistant_id: get_str(row, "assistant_id")?,
        metadata: get_map(row, "metadata")?,
        status: parse_enum::<RunStatus>(row, "status")?,
        kwargs: get_json(row, "kwargs")?,
        multitask_strategy: get_str(row, "multitask_strategy")?.parse()?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        owner: get_str(row, "owner")?,
        model_name: get_opt_str(row, "model_name")?,
        error: get_opt_str(row, "error")?,
        total_input_tokens: get_i64(row, "total_input_tokens")?,
        total_output_tokens: get_i64(row, "total_output_tokens")?,
        total_tokens: get_i64(row, "total_tokens")?,
        llm_call_count: get_i64(row, "llm_call_count")?,
        lead_agent_tokens: get_i64(row, "lead_agent_tokens")?,
        subagent_tokens: get_i64(row, "subagent_tokens")?,
        middleware_tokens: get_i64(row, "middleware_tokens")?,
        message_count: get_i64(row, "message_count")?,
        last_ai_message: get_opt_str(row, "last_ai_message")?,
        first_human_message: get_opt_str(row, "first_human_message")?,
        started_at: get_opt_ts(row, "started_at")?,
        finished_at: get_opt_ts(row, "finished_at")?,
        temporary: get_i64(row, "temporary")? != 0,
        worker_id: get_opt_str(row, "worker_id")?,
        lease_expires_at: get_opt_ts(row, "lease_expires_at")?,
        cancel_requested: get_opt_str(row, "cancel_requested")?,
    })
}

fn row_to_replica(row: &SqliteRow) -> StoreResult<ReplicaInfo> {
    Ok(ReplicaInfo {
        replica_id: get_str(row, "replica_id")?,
        started_at: get_ts(row, "started_at")?,
        heartbeat_at: get_ts(row, "heartbeat_at")?,
        host: get_str(row, "host")?,
        pid: get_i64(row, "pid")?,
        database: get_str(row, "database_kind")?,
        bridge: get_str(row, "bridge_kind")?,
    })
}

impl SqliteRunStore {
    /// Runs one single-row UPDATE (rebuilt on each retry); returns whether a row changed.
    async fn update_one<F>(&self, build: F) -> StoreResult<bool>
    where
        F: Fn() -> Stmt + Send + Sync,
    {
        Ok(self.db.execute_one(build).await?.rows_affected() > 0)
    }

    async fn scan(
        &self,
        statuses: &[RunStatus],
        before: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<Run>> {
        let rows = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM runs WHERE status IN (");
                let mut sep = qb.separated(", ");
                for s in statuses {
                    sep.push_bind(s.as_str());
                }
                qb.push(")");
                if let Some(b) = before {
                    qb.push(" AND created_at < ");
                    qb.push_bind(ts(&b));
                }
                qb.push(" ORDER BY created_at ASC, run_id ASC");
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_run).collect()
    }
}

/// The INSERT of a whole run row (`put`, `put_if_idle`).
fn insert_stmt(r: &Run) -> Stmt {
    sqlx::query(
        "INSERT INTO runs (run_id, thread_id, assistant_id, owner, status, multitask_strategy, metadata, kwargs, \
         model_name, error, total_input_tokens, total_output_tokens, total_tokens, llm_call_count, \
         lead_agent_tokens, subagent_tokens, middleware_tokens, message_count, last_ai_message, \
         first_human_message, temporary, created_at, updated_at, started_at, finished_at, worker_id, lease_expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.run_id)
    .bind(&r.thread_id)
    .bind(&r.assistant_id)
    .bind(&r.owner)
    .bind(r.status.as_str())
    .bind(r.multitask_strategy.as_str())
    .bind(json_map(&r.metadata))
    .bind(json(&r.kwargs))
    .bind(&r.model_name)
    .bind(&r.error)
    .bind(r.total_input_tokens)
    .bind(r.total_output_tokens)
    .bind(r.total_tokens)
    .bind(r.llm_call_count)
    .bind(r.lead_agent_tokens)
    .bind(r.subagent_tokens)
    .bind(r.middleware_tokens)
    .bind(r.message_count)
    .bind(&r.last_ai_message)
    .bind(&r.first_human_message)
    .bind(i64::from(r.temporary))
    .bind(ts(&r.created_at))
    .bind(ts(&r.updated_at))
    .bind(ts_opt(&r.started_at))
    .bind(ts_opt(&r.finished_at))
    .bind(&r.worker_id)
    .bind(ts_opt(&r.lease_expires_at))
}

#[async_trait::async_trait]
impl RunStore for SqliteRunStore {
    async fn put_if_idle(&self, run: &Run) -> StoreResult<bool> {
        let run = run.as_stored();
        let r = &run;
        self.db
            .retry(|| async move {
                // BEGIN IMMEDIATE: the check and the insert hold SQLite's writer lock
                let mut tx = self.db.begin_ack().await?;
                let busy = sqlx::query("SELECT 1 FROM runs WHERE owner = ? AND thread_id = ? AND run_id <> ? AND status IN ('pending', 'running') AND cancel_requested IS NULL LIMIT 1")
                    .bind(&r.owner)
                    .bind(&r.thread_id)
                    .bind(&r.run_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?
                    .is_some();
                if busy {
                    return Ok(false);
                }
                insert_stmt(r).execute(&mut *tx).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            })
            .await
    }

    async fn put(&self, run: &Run) -> StoreResult<()> {
        let run = run.as_stored();
        let r = &run;
        self.db
            .retry(|| async move {
                // one statement: autocommit under the process write lock, ahead of queued
                // background writes (a client waits for this acknowledgement)
                let _write = self.db.lock_write_ack().await;
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let res = insert_stmt(r).execute(&mut *conn).await.map_err(map_err);
                match res {
                    Err(StoreError::Conflict(_)) => {
                        return Err(StoreError::Conflict(format!(
                            "run {} already exists",
                            r.run_id
                        )));
                    }
                    other => other?,
                };
                Ok(())
            })
            .await
    }

    async fn get(&self, owner: &str, run_id: &str) -> StoreResult<Option<Run>> {
        self.db
            .retry(|| async {
                sqlx::query("SELECT * FROM runs WHERE run_id = ? AND owner = ?")
                    .bind(run_id)
                    .bind(owner)
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(map_err)?
                    .map(|r| row_to_run(&r))
                    .transpose()
            })
            .await
    }

    async fn list_by_thread(
        &self,
        owner: &str,
        thread_id: &str,
        q: &RunListQuery,
    ) -> StoreResult<Vec<Run>> {
        let rows = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM runs WHERE owner = ");
                qb.push_bind(owner.to_string());
                qb.push(" AND thread_id = ");
                qb.push_bind(thread_id.to_string());
                if let Some(s) = q.status {
                    qb.push(" AND status = ");
                    qb.push_bind(s.as_str());
                }
                qb.push(" ORDER BY created_at DESC, run_id DESC LIMIT ");
                qb.push_bind(lim(q.limit));
                qb.push(" OFFSET ");
                qb.push_bind(lim(q.offset));
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_run).collect()
    }

    async fn update_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let now = ts(&time::now());
        self.update_one(|| {
            sqlx::query(
                "UPDATE runs SET status = ?1, error = COALESCE(?2, error), updated_at = ?3, \
             started_at = CASE WHEN ?1 = 'running' AND started_at IS NULL THEN ?3 ELSE started_at END, \
             finished_at = CASE WHEN ?1 IN ('pending', 'running') THEN finished_at ELSE ?3 END \
             WHERE run_id = ?4",
            )
            .bind(status.as_str())
            .bind(error.map(str::to_string))
            .bind(now.clone())
            .bind(run_id.to_string())
        })
        .await
    }

    async fn transition(
        &self,
        run_id: &str,
        from: &[RunStatus],
        to: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let now = ts(&time::now());
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let from = serde_json::to_string(&from).unwrap_or_else(|_| "[]".into());
        self.update_one(|| {
            sqlx::query(
                "UPDATE runs SET status = ?1, error = COALESCE(?2, error), updated_at = ?3, \
             started_at = CASE WHEN ?1 = 'running' AND started_at IS NULL THEN ?3 ELSE started_at END, \
             finished_at = CASE WHEN ?1 IN ('pending', 'running') THEN finished_at ELSE ?3 END \
             WHERE run_id = ?4 \
                 AND status IN (SELECT j.value FROM json_each(?5) AS j)",
            )
            .bind(to.as_str())
            .bind(error.map(str::to_string))
            .bind(now.clone())
            .bind(run_id.to_string())
            .bind(from.clone())
        })
        .await
    }

    async fn delete(&self, owner: &str, run_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
                // one statement: autocommit under the process write lock
                let _write = self.db.lock_write().await;
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query("DELETE FROM runs WHERE run_id = ? AND owner = ?")
                    .bind(run_id)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn delete_by_thread(&self, owner: &str, thread_id: &str) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                // one statement: autocommit under the process write lock
                let _write = self.db.lock_write().await;
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query("DELETE FROM runs WHERE thread_id = ? AND owner = ?")
                    .bind(thread_id)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            })
            .await
    }

    async fn update_model_name(&self, run_id: &str, model_name: Option<&str>) -> StoreResult<bool> {
        let now = ts(&time::now());
        self.update_one(|| {
            sqlx::query("UPDATE runs SET model_name = ?, updated_at = ? WHERE run_id = ?")
                .bind(model_name.map(str::to_string))
                .bind(now.clone())
                .bind(run_id.to_string())
        })
        .await
    }

    async fn update_completion(&self, run_id: &str, c: &RunCompletion) -> StoreResult<bool> {
        let now = ts(&time::now());
        self.update_one(|| {
            sqlx::query(
                "UPDATE runs SET status = COALESCE(?1, status), total_input_tokens = ?2, total_output_tokens = ?3, \
                 total_tokens = ?4, llm_call_count = ?5, lead_agent_tokens = ?6, subagent_tokens = ?7, \
                 middleware_tokens = ?8, message_count = ?9, last_ai_message = ?10, first_human_message = ?11, \
                 error = COALESCE(?12, error), updated_at = ?13, \
                 started_at = CASE WHEN ?1 = 'running' AND started_at IS NULL THEN ?13 ELSE started_at END, \
                 finished_at = CASE WHEN ?1 IS NULL OR ?1 IN ('pending', 'running') THEN finished_at ELSE ?13 END \
                 WHERE run_id = ?14",
            )
            .bind(c.status.map(|s| s.as_str()))
            .bind(c.total_input_tokens)
            .bind(c.total_output_tokens)
            .bind(c.total_tokens)
            .bind(c.llm_call_count)
            .bind(c.lead_agent_tokens)
            .bind(c.subagent_tokens)
            .bind(c.middleware_tokens)
            .bind(c.message_count)
            .bind(c.last_ai_message.clone())
            .bind(c.first_human_message.clone())
            .bind(c.error.clone())
            .bind(now.clone())
            .bind(run_id.to_string())
        })
        .await
    }

    async fn update_progress(&self, run_id: &str, p: &RunProgress) -> StoreResult<()> {
        let now = ts(&time::now());
        self.update_one(|| {
            sqlx::query(
                "UPDATE runs SET total_input_tokens = COALESCE(?, total_input_tokens), \
                 total_output_tokens = COALESCE(?, total_output_tokens), total_tokens = COALESCE(?, total_tokens), \
                 llm_call_count = COALESCE(?, llm_call_count), lead_agent_tokens = COALESCE(?, lead_agent_tokens), \
                 subagent_tokens = COALESCE(?, subagent_tokens), middleware_tokens = COALESCE(?, middleware_tokens), \
                 message_count = COALESCE(?, message_count), last_ai_message = COALESCE(?, last_ai_message), \
                 first_human_message = COALESCE(?, first_human_message), updated_at = ? WHERE run_id = ?",
            )
            .bind(p.total_input_tokens)
            .bind(p.total_output_tokens)
            .bind(p.total_tokens)
            .bind(p.llm_call_count)
            .bind(p.lead_agent_tokens)
            .bind(p.subagent_tokens)
            .bind(p.middleware_tokens)
            .bind(p.message_count)
            .bind(p.last_ai_message.clone())
            .bind(p.first_human_message.clone())
            .bind(now.clone())
            .bind(run_id.to_string())
        })
        .await
        .map(|_| ())
    }

    async fn list_pending(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>> {
        self.scan(&[RunStatus::Pending], before).await
    }

    async fn list_inflight(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>> {
        self.scan(&[RunStatus::Pending, RunStatus::Running], before)
            .await
    }

    async fn aggregate_tokens_by_thread(
        &self,
        owner: &str,
        thread_id: &str,
        include_active: bool,
    ) -> StoreResult<TokenAggregate> {
        let rows = self
            .db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM runs WHERE owner = ? AND thread_id = ? ORDER BY created_at ASC",
                )
                .bind(owner)
                .bind(thread_id)
                .fetch_all(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await?;
        let runs = rows
            .iter()
            .map(row_to_run)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(util::aggregate(runs.iter().filter(|r| {
            util::counts_for_tokens(r.status, include_active)
        })))
    }

    async fn claim(
        &self,
        run_id: &str,
        worker_id: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        let now = ts(&time::now());
        let until = ts(&lease_until);
        let res = self
            .update_one(|| {
                sqlx::query(
                    "UPDATE runs SET status = 'running', worker_id = ?1, lease_expires_at = ?2, updated_at = ?3, \
                     started_at = COALESCE(started_at, ?3) WHERE run_id = ?4 AND status = 'pending' \
                     AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.owner = runs.owner AND o.thread_id = runs.thread_id \
                     AND o.status = 'pending' AND (o.created_at, o.run_id) < (runs.created_at, runs.run_id))",
                )
                .bind(worker_id.to_string())
                .bind(until.clone())
                .bind(now.clone())
                .bind(run_id.to_string())
            })
            .await;
        match res {
            Ok(true) => Ok(Claim::Claimed),
            Ok(false) => {
                // Not claimed: still pending (an older run of the thread goes first) or gone.
                let still: Option<i64> = self
                    .db
                    .retry(|| async {
                        sqlx::query_scalar(
                            "SELECT 1 FROM runs WHERE run_id = ? AND status = 'pending'",
                        )
                        .bind(run_id)
                        .fetch_optional(&self.db.pool)
                        .await
                        .map_err(map_err)
                    })
                    .await?;
                Ok(if still.is_some() {
                    Claim::Busy
                } else {
                    Claim::Gone
                })
            }
            // the unique index on running runs: another run of the thread is running
            Err(StoreError::Conflict(_)) => Ok(Claim::Busy),
            Err(e) => Err(e),
        }
    }

    async fn renew_leases(&self, worker_id: &str, lease_until: DateTime<Utc>) -> StoreResult<u64> {
        let until = ts(&lease_until);
        Ok(self
            .db
            .execute_one(|| {
                sqlx::query(
                    "UPDATE runs SET lease_expires_at = ? WHERE worker_id = ? AND status IN ('pending', 'running')",
                )
                .bind(until.clone())
                .bind(worker_id.to_string())
            })
            .await?
            .rows_affected())
    }

    async fn list_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Run>> {
        let now = ts(&now);
        let rows = self
            .db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM runs WHERE status IN ('pending', 'running') \
                     AND NOT (status = 'pending' AND worker_id IS NULL) \
                     AND (lease_expires_at IS NULL OR lease_expires_at < ?) \
                     ORDER BY created_at ASC, run_id ASC LIMIT ?",
                )
                .bind(now.clone())
                .bind(lim(limit))
                .fetch_all(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_run).collect()
    }

    async fn adopt(
        &self,
        run_id: &str,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (until, now) = (ts(&lease_until), ts(&now));
        self.update_one(|| {
            sqlx::query(
                "UPDATE runs SET worker_id = ?, lease_expires_at = ? WHERE run_id = ? \
                 AND status IN ('pending', 'running') AND NOT (status = 'pending' AND worker_id IS NULL) \
                 AND (lease_expires_at IS NULL OR lease_expires_at < ?)",
            )
            .bind(worker_id.to_string())
            .bind(until.clone())
            .bind(run_id.to_string())
            .bind(now.clone())
        })
        .await
    }

    async fn active_for_thread(&self, owner: &str, thread_id: &str) -> StoreResult<Option<Run>> {
        self.db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM runs WHERE owner = ? AND thread_id = ? AND status IN ('pending', 'running') \
                     ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, created_at ASC, run_id ASC LIMIT 1",
                )
                .bind(owner)
                .bind(thread_id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(map_err)?
                .map(|r| row_to_run(&r))
                .transpose()
            })
            .await
    }

    async fn next_pending_for_thread(
        &self,
        owner: &str,
        thread_id: &str,
    ) -> StoreResult<Option<Run>> {
        self.db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM runs WHERE owner = ? AND thread_id = ? AND status = 'pending' ORDER BY created_at ASC, run_id ASC LIMIT 1",
                )
                .bind(owner)
                .bind(thread_id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(map_err)?
                .map(|r| row_to_run(&r))
                .transpose()
            })
            .await
    }
    async fn claim_next(
        &self,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = ts(&time::now());
        let until = ts(&lease_until);
        // One statement under the process write lock (SQLite has a single writer, and a
        // database file is served by one replica).
        let res = self
            .db
            .retry(|| async {
                let _guard = self.db.lock_write().await;
                sqlx::query(
                    "UPDATE runs SET status = 'running', worker_id = ?1, lease_expires_at = ?2, updated_at = ?3, \
                     started_at = COALESCE(started_at, ?3) WHERE run_id IN (SELECT r.run_id FROM runs r \
                     WHERE r.status = 'pending' AND r.worker_id IS NULL \
                     AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= ?3) \
                     AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.owner = r.owner AND o.thread_id = r.thread_id AND (o.status = 'running' \
                     OR (o.status = 'pending' AND (o.created_at, o.run_id) < (r.created_at, r.run_id)))) \
                     ORDER BY r.created_at ASC, r.run_id ASC LIMIT ?4) RETURNING *",
                )
                .bind(worker_id.to_string())
                .bind(until.clone())
                .bind(now.clone())
                .bind(lim(limit))
                .fetch_all(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await;
        match res {
            Ok(rows) => {
                let mut runs = rows
                    .iter()
                    .map(row_to_run)
                    .collect::<StoreResult<Vec<_>>>()?;
                runs.sort_by(|a, b| (a.created_at, &a.run_id).cmp(&(b.created_at, &b.run_id)));
                Ok(runs)
            }
            Err(StoreError::Conflict(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn count_pending(&self) -> StoreResult<u64> {
        let n: i64 = self
            .db
            .retry(|| async {
                sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status = 'pending'")
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(map_err)
            })
            .await?;
        Ok(n.max(0) as u64)
    }

    async fn request_cancel(&self, run_id: &str, action: &str) -> StoreResult<bool> {
        self.update_one(|| {
            sqlx::query(
                "UPDATE runs SET cancel_requested = COALESCE(cancel_requested, ?) \
                 WHERE run_id = ? AND status IN ('pending', 'running')",
            )
            .bind(action.to_string())
            .bind(run_id.to_string())
        })
        .await
    }

    async fn cancel_requests(&self, worker_id: &str) -> StoreResult<Vec<(String, String)>> {
        self.db
            .retry(|| async {
                sqlx::query_as::<_, (String, String)>(
                    "SELECT run_id, cancel_requested FROM runs WHERE worker_id = ? \
                     AND status IN ('pending', 'running') AND cancel_requested IS NOT NULL",
                )
                .bind(worker_id)
                .fetch_all(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await
    }

    async fn heartbeat_replica(&self, r: &ReplicaInfo) -> StoreResult<()> {
        let (started, beat) = (ts(&r.started_at), ts(&r.heartbeat_at));
        self.db
            .execute_one(|| {
                sqlx::query(
                    "INSERT INTO replicas (replica_id, started_at, heartbeat_at, host, pid, database_kind, bridge_kind) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (replica_id) DO UPDATE SET \
                     heartbeat_at = excluded.heartbeat_at, host = excluded.host, pid = excluded.pid, \
                     database_kind = excluded.database_kind, bridge_kind = excluded.bridge_kind",
                )
                .bind(r.replica_id.clone())
                .bind(started.clone())
                .bind(beat.clone())
                .bind(r.host.clone())
                .bind(r.pid)
                .bind(r.database.clone())
                .bind(r.bridge.clone())
            })
            .await
            .map(|_| ())
    }

    async fn list_replicas(&self, since: DateTime<Utc>) -> StoreResult<Vec<ReplicaInfo>> {
        let since = ts(&since);
        let rows = self
            .db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM replicas WHERE heartbeat_at >= ? ORDER BY started_at ASC, replica_id ASC",
                )
                .bind(since.clone())
                .fetch_all(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_replica).collect()
    }

    async fn remove_replica(
        &self,
        replica_id: &str,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let stale = ts(&stale_before);
        Ok(self
            .db
            .execute_one(|| {
                sqlx::query("DELETE FROM replicas WHERE replica_id = ? OR heartbeat_at < ?")
                    .bind(replica_id.to_string())
                    .bind(stale.clone())
            })
            .await?
            .rows_affected())
    }
}
