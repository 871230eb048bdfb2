//! `runs` table: the seeds' RunStore contract plus queue helpers and run leases.
//!
//! Every method is one statement. "One running run per thread" is the partial unique index
//! `ux_runs_one_running`: a claim racing another one for the same thread waits for it to
//! commit, then fails with a unique violation, answered as [`Claim::Busy`]. Lease methods
//! are compare-and-set UPDATEs, so of several processes exactly one wins.

use antler_store::{
    Claim, ReplicaInfo, Run, RunCompletion, RunListQuery, RunProgress, RunStatus, RunStore,
    StoreError, StoreResult, TokenAggregate, time, util,
};
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Postgres, QueryBuilder};

use super::*;

/// PostgreSQL [`RunStore`].
#[derive(Debug, Clone)]
pub struct PostgresRunStore {
    pub(crate) db: Db,
}

/// A statement rebuilt on every retry (binds are owned).
type Stmt = sqlx::query::Query<'static, Postgres, PgArguments>;

fn row_to_run(row: &PgRow) -> StoreResult<Run> {
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
        temporary: get_bool(row, "temporary")?,
        worker_id: get_opt_str(row, "worker_id")?,
        lease_expires_at: get_opt_ts(row, "lease_expires_at")?,
        cancel_requested: get_opt_str(row, "cancel_requested")?,
    })
}

fn row_to_replica(row: &PgRow) -> StoreResult<ReplicaInfo> {
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

/// `SET` clauses of a status change: `$1` = new status (text, may be NULL = unchanged),
/// `$2` = error (NULL keeps it), `$3` = now.
const STATUS_SET: &str = "status = COALESCE($1, status), error = COALESCE($2, error), updated_at = $3, \
     started_at = CASE WHEN $1 = 'running' AND started_at IS NULL THEN $3 ELSE started_at END, \
     finished_at = CASE WHEN $1 IS NULL OR $1 IN ('pending', 'running') THEN finished_at ELSE $3 END";

impl PostgresRunStore {
    /// Runs one statement (rebuilt on each retry); returns the number of rows it changed.
    async fn execute<F>(&self, build: F) -> StoreResult<u64>
    where
        F: Fn() -> Stmt + Send + Sync,
    {
        let build = &build;
        self.db
            .retry(|| async move {
                Ok(build()
                    .execute(&self.db.pool)
                    .await
                    .map_err(map_err)?
                    .rows_affected())
            })
            .await
    }

    async fn fetch_runs(
        &self,
        build: impl Fn() -> QueryBuilder<Postgres>,
    ) -> StoreResult<Vec<Run>> {
        let build = &build;
        let rows = self
            .db
            .retry(|| async move {
                build()
                    .build()
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_run).collect()
    }

    async fn fetch_one_run(&self, build: impl Fn() -> Stmt) -> StoreResult<Option<Run>> {
        let build = &build;
        self.db
            .retry(|| async move {
                build()
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(map_err)?
                    .map(|r| row_to_run(&r))
                    .transpose()
            })
            .await
    }

    async fn scan(
        &self,
        statuses: &[RunStatus],
        before: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<Run>> {
        let statuses: Vec<String> = statuses.iter().map(|s| s.as_str().to_string()).collect();
        self.fetch_runs(|| {
            let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM runs WHERE status = ANY(");
            qb.push_bind(statuses.clone());
            qb.push(")");
            if let Some(b) = before {
                qb.push(" AND created_at < ");
                qb.push_bind(b);
            }
            qb.push(" ORDER BY created_at ASC, run_id ASC");
            qb
        })
        .await
    }
}

/// The INSERT of a whole run row (`put`, `put_if_idle`).
fn insert_stmt(r: &Run) -> Stmt {
    sqlx::query(
        "INSERT INTO runs (run_id, thread_id, assistant_id, owner, status, multitask_strategy, metadata, kwargs, \
         model_name, error, total_input_tokens, total_output_tokens, total_tokens, llm_call_count, \
         lead_agent_tokens, subagent_tokens, middleware_tokens, message_count, last_ai_message, \
         first_human_message, temporary, created_at, updated_at, started_at, finished_at, worker_id, lease_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, \
         $21, $22, $23, $24, $25, $26, $27)",
    )
    .bind(r.run_id.clone())
    .bind(r.thread_id.clone())
    .bind(r.assistant_id.clone())
    .bind(r.owner.clone())
    .bind(r.status.as_str())
    .bind(r.multitask_strategy.as_str())
    .bind(obj(&r.metadata))
    .bind(r.kwargs.clone())
    .bind(r.model_name.clone())
    .bind(r.error.clone())
    .bind(r.total_input_tokens)
    .bind(r.total_output_tokens)
    .bind(r.total_tokens)
    .bind(r.llm_call_count)
    .bind(r.lead_agent_tokens)
    .bind(r.subagent_tokens)
    .bind(r.middleware_tokens)
    .bind(r.message_count)
    .bind(r.last_ai_message.clone())
    .bind(r.first_human_message.clone())
    .bind(r.temporary)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(r.started_at)
    .bind(r.finished_at)
    .bind(r.worker_id.clone())
    .bind(r.lease_expires_at)
}

#[async_trait::async_trait]
impl RunStore for PostgresRunStore {
    async fn put_if_idle(&self, run: &Run) -> StoreResult<bool> {
        let run = run.as_stored();
        let r = &run;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                // the thread's row lock serializes the check-and-insert of its runs (READ
                // COMMITTED: the check then sees every run committed before the lock)
                sqlx::query("SELECT thread_id FROM threads WHERE owner = $1 AND thread_id = $2 FOR UPDATE")
                    .bind(r.owner.clone())
                    .bind(r.thread_id.clone())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let busy = sqlx::query("SELECT 1 FROM runs WHERE owner = $1 AND thread_id = $2 AND run_id <> $3 AND status IN ('pending', 'running') AND cancel_requested IS NULL LIMIT 1")
                    .bind(r.owner.clone())
                    .bind(r.thread_id.clone())
                    .bind(r.run_id.clone())
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
        let res = self.execute(|| insert_stmt(r)).await;
        match res {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
                "run {} already exists (or another run of thread {} is running)",
                r.run_id, r.thread_id
            ))),
            other => other.map(|_| ()),
        }
    }

    async fn get(&self, owner: &str, run_id: &str) -> StoreResult<Option<Run>> {
        self.fetch_one_run(|| {
            sqlx::query("SELECT * FROM runs WHERE run_id = $1 AND owner = $2")
                .bind(run_id.to_string())
                .bind(owner.to_string())
        })
        .await
    }

    async fn list_by_thread(
        &self,
        owner: &str,
        thread_id: &str,
        q: &RunListQuery,
    ) -> StoreResult<Vec<Run>> {
        self.fetch_runs(|| {
            let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM runs WHERE owner = ");
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
            qb
        })
        .await
    }

    async fn update_status(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let now = time::now();
        let sql = format!("UPDATE runs SET {STATUS_SET} WHERE run_id = $4");
        let n = self
            .execute(|| {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(status.as_str())
                    .bind(error.map(str::to_string))
                    .bind(now)
                    .bind(run_id.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    async fn transition(
        &self,
        run_id: &str,
        from: &[RunStatus],
        to: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let now = time::now();
        let from: Vec<String> = from.iter().map(|s| s.as_str().to_string()).collect();
        let sql = format!("UPDATE runs SET {STATUS_SET} WHERE run_id = $4 AND status = ANY($5)");
        let n = self
            .execute(|| {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(to.as_str())
                    .bind(error.map(str::to_string))
                    .bind(now)
                    .bind(run_id.to_string())
                    .bind(from.clone())
            })
            .await?;
        Ok(n > 0)
    }

    async fn delete(&self, owner: &str, run_id: &str) -> StoreResult<()> {
        let n = self
            .execute(|| {
                sqlx::query("DELETE FROM runs WHERE run_id = $1 AND owner = $2")
                    .bind(run_id.to_string())
                    .bind(owner.to_string())
            })
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn delete_by_thread(&self, owner: &str, thread_id: &str) -> StoreResult<u64> {
        self.execute(|| {
            sqlx::query("DELETE FROM runs WHERE thread_id = $1 AND owner = $2")
                .bind(thread_id.to_string())
                .bind(owner.to_string())
        })
        .await
    }

    async fn update_model_name(&self, run_id: &str, model_name: Option<&str>) -> StoreResult<bool> {
        let now = time::now();
        let n = self
            .execute(|| {
                sqlx::query("UPDATE runs SET model_name = $1, updated_at = $2 WHERE run_id = $3")
                    .bind(model_name.map(str::to_string))
                    .bind(now)
                    .bind(run_id.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    async fn update_completion(&self, run_id: &str, c: &RunCompletion) -> StoreResult<bool> {
        let now = time::now();
        let sql = format!(
            "UPDATE runs SET {STATUS_SET}, total_input_tokens = $5, total_output_tokens = $6, \
             total_tokens = $7, llm_call_count = $8, lead_agent_tokens = $9, subagent_tokens = $10, \
             middleware_tokens = $11, message_count = $12, last_ai_message = $13, first_human_message = $14 \
             WHERE run_id = $4"
        );
        let n = self
            .execute(|| {
                sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(c.status.map(|s| s.as_str()))
                    .bind(c.error.clone())
                    .bind(now)
                    .bind(run_id.to_string())
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
            })
            .await?;
        Ok(n > 0)
    }

    async fn update_progress(&self, run_id: &str, p: &RunProgress) -> StoreResult<()> {
        let now = time::now();
        self.execute(|| {
            sqlx::query(
                "UPDATE runs SET total_input_tokens = COALESCE($1, total_input_tokens), \
                 total_output_tokens = COALESCE($2, total_output_tokens), total_tokens = COALESCE($3, total_tokens), \
                 llm_call_count = COALESCE($4, llm_call_count), lead_agent_tokens = COALESCE($5, lead_agent_tokens), \
                 subagent_tokens = COALESCE($6, subagent_tokens), middleware_tokens = COALESCE($7, middleware_tokens), \
                 message_count = COALESCE($8, message_count), last_ai_message = COALESCE($9, last_ai_message), \
                 first_human_message = COALESCE($10, first_human_message), updated_at = $11 WHERE run_id = $12",
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
        let runs = self
            .fetch_runs(|| {
                let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM runs WHERE owner = ");
                qb.push_bind(owner.to_string());
                qb.push(" AND thread_id = ");
                qb.push_bind(thread_id.to_string());
                qb.push(" ORDER BY created_at ASC");
                qb
            })
            .await?;
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
        let now = time::now();
        let until = time::truncate(lease_until);
        let res = self
            .execute(|| {
                sqlx::query(
                    "UPDATE runs SET status = 'running', worker_id = $1, lease_expires_at = $2, updated_at = $3, \
                     started_at = COALESCE(started_at, $3) WHERE run_id = $4 AND status = 'pending' \
                     AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.owner = runs.owner AND o.thread_id = runs.thread_id \
                     AND o.status = 'pending' AND (o.created_at, o.run_id) < (runs.created_at, runs.run_id))",
                )
                .bind(worker_id.to_string())
                .bind(until)
                .bind(now)
                .bind(run_id.to_string())
            })
            .await;
        match res {
            Ok(n) if n > 0 => Ok(Claim::Claimed),
            Ok(_) => {
                // Not claimed: still pending (an older run of the thread goes first) or gone.
                let still = self
                    .fetch_one_run(|| {
                        sqlx::query("SELECT * FROM runs WHERE run_id = $1 AND status = 'pending'")
                            .bind(run_id.to_string())
                    })
                    .await?;
                Ok(if still.is_some() {
                    Claim::Busy
                } else {
                    Claim::Gone
                })
            }
            // ux_runs_one_running: another run of the thread is running
            Err(StoreError::Conflict(_)) => Ok(Claim::Busy),
            Err(e) => Err(e),
        }
    }

    async fn renew_leases(&self, worker_id: &str, lease_until: DateTime<Utc>) -> StoreResult<u64> {
        let until = time::truncate(lease_until);
        self.execute(|| {
            sqlx::query(
                "UPDATE runs SET lease_expires_at = $1 WHERE worker_id = $2 AND status IN ('pending', 'running')",
            )
            .bind(until)
            .bind(worker_id.to_string())
        })
        .await
    }

    async fn list_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Run>> {
        self.fetch_runs(|| {
            let mut qb = QueryBuilder::<Postgres>::new(
                "SELECT * FROM runs WHERE status IN ('pending', 'running') \
                 AND NOT (status = 'pending' AND worker_id IS NULL) \
                 AND (lease_expires_at IS NULL OR lease_expires_at < ",
            );
            qb.push_bind(now);
            qb.push(") ORDER BY created_at ASC, run_id ASC LIMIT ");
            qb.push_bind(lim(limit));
            qb
        })
        .await
    }

    async fn adopt(
        &self,
        run_id: &str,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let until = time::truncate(lease_until);
        let n = self
            .execute(|| {
                sqlx::query(
                    "UPDATE runs SET worker_id = $1, lease_expires_at = $2 WHERE run_id = $3 \
                     AND status IN ('pending', 'running') AND NOT (status = 'pending' AND worker_id IS NULL) \
                     AND (lease_expires_at IS NULL OR lease_expires_at < $4)",
                )
                .bind(worker_id.to_string())
                .bind(until)
                .bind(run_id.to_string())
                .bind(now)
            })
            .await?;
        Ok(n > 0)
    }

    async fn active_for_thread(&self, owner: &str, thread_id: &str) -> StoreResult<Option<Run>> {
        self.fetch_one_run(|| {
            sqlx::query(
                "SELECT * FROM runs WHERE owner = $1 AND thread_id = $2 AND status IN ('pending', 'running') \
                 ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, created_at ASC, run_id ASC LIMIT 1",
            )
            .bind(owner.to_string())
            .bind(thread_id.to_string())
        })
        .await
    }

    async fn next_pending_for_thread(
        &self,
        owner: &str,
        thread_id: &str,
    ) -> StoreResult<Option<Run>> {
        self.fetch_one_run(|| {
            sqlx::query(
                "SELECT * FROM runs WHERE owner = $1 AND thread_id = $2 AND status = 'pending' \
                 ORDER BY created_at ASC, run_id ASC LIMIT 1",
            )
            .bind(owner.to_string())
            .bind(thread_id.to_string())
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
        let now = time::now();
        let until = time::truncate(lease_until);
        // The oldest queued runs whose thread is idle and has no older pending run, locked
        // with SKIP LOCKED so concurrent replicas pick disjoint runs, claimed in one statement.
        let res = self
            .db
            .retry(|| async {
                sqlx::query(
                    "WITH picked AS (SELECT r.run_id FROM runs r \
                     WHERE r.status = 'pending' AND r.worker_id IS NULL \
                     AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= $4) \
                     AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.owner = r.owner AND o.thread_id = r.thread_id AND (o.status = 'running' \
                     OR (o.status = 'pending' AND (o.created_at, o.run_id) < (r.created_at, r.run_id)))) \
                     ORDER BY r.created_at ASC, r.run_id ASC LIMIT $1 FOR UPDATE OF r SKIP LOCKED) \
                     UPDATE runs SET status = 'running', worker_id = $2, lease_expires_at = $3, updated_at = $4, \
                     started_at = COALESCE(started_at, $4) FROM picked \
                     WHERE runs.run_id = picked.run_id AND runs.status = 'pending' AND runs.worker_id IS NULL \
                     RETURNING runs.*",
                )
                .bind(lim(limit))
                .bind(worker_id.to_string())
                .bind(until)
                .bind(now)
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
            // A thread started a run concurrently (ux_runs_one_running): nothing claimed now.
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
        let n = self
            .execute(|| {
                sqlx::query(
                    "UPDATE runs SET cancel_requested = COALESCE(cancel_requested, $1) \
                     WHERE run_id = $2 AND status IN ('pending', 'running')",
                )
                .bind(action.to_string())
                .bind(run_id.to_string())
            })
            .await?;
        Ok(n > 0)
    }

    async fn cancel_requests(&self, worker_id: &str) -> StoreResult<Vec<(String, String)>> {
        self.db
            .retry(|| async {
                sqlx::query_as::<_, (String, String)>(
                    "SELECT run_id, cancel_requested FROM runs WHERE worker_id = $1 \
                     AND status IN ('pending', 'running') AND cancel_requested IS NOT NULL",
                )
                .bind(worker_id.to_string())
                .fetch_all(&self.db.pool)
                .await
                .map_err(map_err)
            })
            .await
    }

    async fn heartbeat_replica(&self, r: &ReplicaInfo) -> StoreResult<()> {
        let (started, beat) = (time::truncate(r.started_at), time::truncate(r.heartbeat_at));
        self.execute(|| {
            sqlx::query(
                "INSERT INTO replicas (replica_id, started_at, heartbeat_at, host, pid, database_kind, bridge_kind) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (replica_id) DO UPDATE SET \
                 heartbeat_at = EXCLUDED.heartbeat_at, host = EXCLUDED.host, pid = EXCLUDED.pid, \
                 database_kind = EXCLUDED.database_kind, bridge_kind = EXCLUDED.bridge_kind",
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
        let rows = self
            .db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM replicas WHERE heartbeat_at >= $1 ORDER BY started_at ASC, replica_id ASC",
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
        self.execute(|| {
            sqlx::query("DELETE FROM replicas WHERE replica_id = $1 OR heartbeat_at < $2")
                .bind(replica_id.to_string())
                .bind(stale_before)
        })
        .await
    }
}
