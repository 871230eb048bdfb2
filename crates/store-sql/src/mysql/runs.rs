//! `runs` table: the seeds' RunStore contract plus queue helpers.

use antler_store::{
    Claim, ReplicaInfo, Run, RunCompletion, RunListQuery, RunProgress, RunStatus, RunStore,
    StoreError, StoreResult, TokenAggregate, time, util,
};
use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, QueryBuilder};

use super::*;

/// MySQL [`RunStore`].
#[derive(Debug, Clone)]
pub struct MySqlRunStore {
    pub(crate) db: Db,
}

fn row_to_run(row: &MySqlRow) -> StoreResult<Run> {
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

fn row_to_replica(row: &MySqlRow) -> StoreResult<ReplicaInfo> {
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

impl MySqlRunStore {
    /// Runs one write statement in autocommit mode (rebuilt on each retry); returns the
    /// number of rows it changed.
    async fn execute<F>(&self, build: F) -> StoreResult<u64>
    where
        F: Fn() -> Stmt + Send + Sync,
    {
        let build = &build;
        self.db
            .retry(|| async move {
                let done = build().execute(&self.db.pool).await.map_err(map_err)?;
                Ok(done.rows_affected())
            })
            .await
    }

    /// Runs one single-row UPDATE; returns whether the row changed.
    async fn update_one<F>(&self, build: F) -> StoreResult<bool>
    where
        F: Fn() -> Stmt + Send + Sync,
    {
        Ok(self.execute(build).await? > 0)
    }

    async fn scan(
        &self,
        statuses: &[RunStatus],
        before: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<Run>> {
        let rows = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<MySql>::new("SELECT * FROM runs WHERE TRUE");
                let statuses: Vec<String> =
                    statuses.iter().map(|s| s.as_str().to_string()).collect();
                push_in_list(&mut qb, "status", &statuses);
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
impl RunStore for MySqlRunStore {
    async fn put_if_idle(&self, run: &Run) -> StoreResult<bool> {
        let run = run.as_stored();
        let r = &run;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                // The thread's row lock serializes the check-and-insert of its runs; the check
                // is the transaction's first plain read, so its snapshot is taken after the lock
                // and sees every run committed before it.
                sqlx::query("SELECT thread_id FROM threads WHERE owner = ? AND thread_id = ? FOR UPDATE")
                    .bind(&r.owner)
                    .bind(&r.thread_id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
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
                let mut qb = QueryBuilder::<MySql>::new("SELECT * FROM runs WHERE owner = ");
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
        let s = status.as_str();
        self.update_one(|| {
            // MySQL evaluates SET assignments left to right, so started_at/finished_at come
            // first (they test the *new* status, bound again, never the column).
            sqlx::query(
                "UPDATE runs SET \
                 started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, \
                 finished_at = CASE WHEN ? IN ('pending', 'running') THEN finished_at ELSE ? END, \
                 status = ?, error = COALESCE(?, error), updated_at = ? \
                 WHERE run_id = ?",
            )
            .bind(s)
            .bind(now)
            .bind(s)
            .bind(now)
            .bind(s)
            .bind(error.map(str::to_string))
            .bind(now)
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
        if from.is_empty() {
            return Ok(false);
        }
        let now = ts(&time::now());
        let to = to.as_str();
        let from: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        let from = &from;
        self.update_one(|| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE runs SET \
                 started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, \
                 finished_at = CASE WHEN ? IN ('pending', 'running') THEN finished_at ELSE ? END, \
                 status = ?, error = COALESCE(?, error), updated_at = ? \
                 WHERE run_id = ? AND status IN ({})",
                vec!["?"; from.len()].join(", ")
            )))
            .bind(to)
            .bind(now)
            .bind(to)
            .bind(now)
            .bind(to)
            .bind(error.map(str::to_string))
            .bind(now)
            .bind(run_id.to_string());
            for f in from.iter() {
                q = q.bind(*f);
            }
            q
        })
        .await
    }

    async fn delete(&self, owner: &str, run_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
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
                .bind(now)
                .bind(run_id.to_string())
        })
        .await
    }

    async fn update_completion(&self, run_id: &str, c: &RunCompletion) -> StoreResult<bool> {
        let now = ts(&time::now());
        self.update_one(|| {
            let status = c.status.map(|s| s.as_str());
            sqlx::query(
                "UPDATE runs SET \
                 started_at = CASE WHEN ? = 'running' AND started_at IS NULL THEN ? ELSE started_at END, \
                 finished_at = CASE WHEN ? IS NULL OR ? IN ('pending', 'running') THEN finished_at ELSE ? END, \
                 status = COALESCE(?, status), total_input_tokens = ?, total_output_tokens = ?, \
                 total_tokens = ?, llm_call_count = ?, lead_agent_tokens = ?, subagent_tokens = ?, \
                 middleware_tokens = ?, message_count = ?, last_ai_message = ?, first_human_message = ?, \
                 error = COALESCE(?, error), updated_at = ? \
                 WHERE run_id = ?",
            )
            .bind(status)
            .bind(now)
            .bind(status)
            .bind(status)
            .bind(now)
            .bind(status)
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
            .bind(now)
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
            .bind(now)
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
        // MySQL cannot read the updated table in an UPDATE's subquery: lock the run, check
        // that no older run of its thread is pending, then claim it, in one transaction.
        let res = self
            .db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let row = sqlx::query(
                    "SELECT owner, thread_id, created_at FROM runs WHERE run_id = ? AND status = 'pending' FOR UPDATE",
                )
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                let Some(row) = row else {
                    return Ok(Claim::Gone);
                };
                let owner = get_str(&row, "owner")?;
                let thread_id = get_str(&row, "thread_id")?;
                let created = get_ts(&row, "created_at")?;
                let older: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM runs WHERE owner = ? AND thread_id = ? AND status = 'pending' \
                     AND (created_at < ? OR (created_at = ? AND run_id < ?)) LIMIT 1",
                )
                .bind(&owner)
                .bind(&thread_id)
                .bind(created)
                .bind(created)
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
                if older.is_some() {
                    return Ok(Claim::Busy);
                }
                sqlx::query(
                    "UPDATE runs SET started_at = COALESCE(started_at, ?), status = 'running', \
                     worker_id = ?, lease_expires_at = ?, updated_at = ? \
                     WHERE run_id = ? AND status = 'pending'",
                )
                .bind(now)
                .bind(worker_id)
                .bind(until)
                .bind(now)
                .bind(run_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(Claim::Claimed)
            })
            .await;
        match res {
            // the unique index on `running_thread`: another run of the thread is running
            Err(StoreError::Conflict(_)) => Ok(Claim::Busy),
            other => other,
        }
    }

    async fn renew_leases(&self, worker_id: &str, lease_until: DateTime<Utc>) -> StoreResult<u64> {
        let until = ts(&lease_until);
        self.execute(|| {
                sqlx::query(
                    "UPDATE runs SET lease_expires_at = ? WHERE worker_id = ? AND status IN ('pending', 'running')",
                )
                .bind(until)
                .bind(worker_id.to_string())
            })
            .await
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
                .bind(now)
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
            .bind(until)
            .bind(run_id.to_string())
            .bind(now)
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
        // Lock the oldest eligible queued runs (SKIP LOCKED: concurrent replicas pick
        // disjoint runs), claim them, read them back, in one transaction.
        let res = self
            .db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT r.run_id FROM runs r WHERE r.status = 'pending' AND r.worker_id IS NULL \
                     AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= ?) \
                     AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.owner = r.owner AND o.thread_id = r.thread_id AND (o.status = 'running' \
                     OR (o.status = 'pending' AND (o.created_at < r.created_at \
                     OR (o.created_at = r.created_at AND o.run_id < r.run_id))))) \
                     ORDER BY r.created_at ASC, r.run_id ASC LIMIT ? FOR UPDATE SKIP LOCKED",
                )
                .bind(now)
                .bind(lim(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut qb = QueryBuilder::<MySql>::new("UPDATE runs SET status = 'running', worker_id = ");
                qb.push_bind(worker_id);
                qb.push(", lease_expires_at = ");
                qb.push_bind(until);
                qb.push(", updated_at = ");
                qb.push_bind(now);
                qb.push(", started_at = COALESCE(started_at, ");
                qb.push_bind(now);
                qb.push(") WHERE status = 'pending' AND worker_id IS NULL AND run_id IN (");
                let mut sep = qb.separated(", ");
                for id in &ids {
                    sep.push_bind(id.clone());
                }
                qb.push(")");
                qb.build().execute(&mut *tx).await.map_err(map_err)?;
                let mut qb = QueryBuilder::<MySql>::new("SELECT * FROM runs WHERE worker_id = ");
                qb.push_bind(worker_id);
                qb.push(" AND status = 'running' AND run_id IN (");
                let mut sep = qb.separated(", ");
                for id in &ids {
                    sep.push_bind(id.clone());
                }
                qb.push(") ORDER BY created_at ASC, run_id ASC");
                let rows = qb.build().fetch_all(&mut *tx).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                rows.iter().map(row_to_run).collect::<StoreResult<Vec<_>>>()
            })
            .await;
        match res {
            // A thread started a run concurrently (unique `running_thread`): nothing now.
            Err(StoreError::Conflict(_)) => Ok(Vec::new()),
            other => other,
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
        // MySQL reports rows *changed*: a repeated request changes nothing, so read back.
        self.execute(|| {
            sqlx::query(
                "UPDATE runs SET cancel_requested = COALESCE(cancel_requested, ?) \
                 WHERE run_id = ? AND status IN ('pending', 'running')",
            )
            .bind(action.to_string())
            .bind(run_id.to_string())
        })
        .await?;
        let active: Option<i64> = self
            .db
            .retry(|| async {
                sqlx::query_scalar(
                    "SELECT 1 FROM runs WHERE run_id = ? AND status IN ('pending', 'running')",
                )
                .bind(run_id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await?;
        Ok(active.is_some())
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
        self.execute(|| {
            sqlx::query(
                "INSERT INTO replicas (replica_id, started_at, heartbeat_at, host, pid, database_kind, bridge_kind) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
                 heartbeat_at = VALUES(heartbeat_at), host = VALUES(host), pid = VALUES(pid), \
                 database_kind = VALUES(database_kind), bridge_kind = VALUES(bridge_kind)",
            )
            .bind(r.replica_id.clone())
            .bind(started)
            .bind(beat)
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
                .bind(since)
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
        self.execute(|| {
            sqlx::query("DELETE FROM replicas WHERE replica_id = ? OR heartbeat_at < ?")
                .bind(replica_id.to_string())
                .bind(stale)
        })
        .await
    }
}
