//! `runs` table: the seeds' RunStore contract plus queue helpers.

use antler_store::{
    Run, RunCompletion, RunListQuery, RunProgress, RunStatus, RunStore, StoreError, StoreResult,
    TokenAggregate, time, util,
};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

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
        multitask_strategy: get_str(row, "multitask_strategy")?,
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
    })
}

/// Writes every mutable column of `r` (used after applying a change in Rust, inside the
/// transaction that read the row, so the read-modify-write is atomic).
async fn write_back(conn: &mut SqliteConnection, r: &Run) -> StoreResult<()> {
    sqlx::query(
        "UPDATE runs SET status = ?, error = ?, model_name = ?, total_input_tokens = ?, total_output_tokens = ?, \
         total_tokens = ?, llm_call_count = ?, lead_agent_tokens = ?, subagent_tokens = ?, middleware_tokens = ?, \
         message_count = ?, last_ai_message = ?, first_human_message = ?, updated_at = ?, started_at = ?, \
         finished_at = ? WHERE run_id = ?",
    )
    .bind(r.status.as_str())
    .bind(&r.error)
    .bind(&r.model_name)
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
    .bind(ts(&r.updated_at))
    .bind(ts_opt(&r.started_at))
    .bind(ts_opt(&r.finished_at))
    .bind(&r.run_id)
    .execute(conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn fetch(conn: &mut SqliteConnection, run_id: &str) -> StoreResult<Option<Run>> {
    sqlx::query("SELECT * FROM runs WHERE run_id = ?")
        .bind(run_id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?
        .map(|r| row_to_run(&r))
        .transpose()
}

impl SqliteRunStore {
    /// Read-modify-write of one run in a write transaction; `f` returns whether to save.
    async fn modify<F>(&self, run_id: &str, f: F) -> StoreResult<bool>
    where
        F: Fn(&mut Run) -> bool + Send + Sync,
    {
        let f = &f;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                let Some(mut run) = fetch(&mut tx, run_id).await? else {
                    return Ok(false);
                };
                if !f(&mut run) {
                    return Ok(false);
                }
                write_back(&mut tx, &run).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            })
            .await
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

#[async_trait::async_trait]
impl RunStore for SqliteRunStore {
    async fn put(&self, run: &Run) -> StoreResult<()> {
        let mut run = run.clone();
        run.created_at = time::truncate(run.created_at);
        run.updated_at = time::truncate(run.updated_at);
        run.started_at = run.started_at.map(time::truncate);
        run.finished_at = run.finished_at.map(time::truncate);
        let r = &run;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                let res = sqlx::query(
                    "INSERT INTO runs (run_id, thread_id, assistant_id, owner, status, multitask_strategy, metadata, kwargs, \
                     model_name, error, total_input_tokens, total_output_tokens, total_tokens, llm_call_count, \
                     lead_agent_tokens, subagent_tokens, middleware_tokens, message_count, last_ai_message, \
                     first_human_message, temporary, created_at, updated_at, started_at, finished_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&r.run_id)
                .bind(&r.thread_id)
                .bind(&r.assistant_id)
                .bind(&r.owner)
                .bind(r.status.as_str())
                .bind(&r.multitask_strategy)
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
                .execute(&mut *tx)
                .await
                .map_err(map_err);
                match res {
                    Err(StoreError::Conflict(_)) => {
                        return Err(StoreError::Conflict(format!("run {} already exists", r.run_id)));
                    }
                    other => other?,
                };
                tx.commit().await.map_err(map_err)
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
        self.modify(run_id, |r| {
            util::apply_status(r, status, error, time::now());
            true
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
        self.modify(run_id, |r| {
            if from.contains(&r.status) {
                util::apply_status(r, to, error, time::now());
                true
            } else {
                false
            }
        })
        .await
    }

    async fn delete(&self, owner: &str, run_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let done = sqlx::query("DELETE FROM runs WHERE run_id = ? AND owner = ?")
                    .bind(run_id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                tx.commit().await.map_err(map_err)
            })
            .await
    }

    async fn delete_by_thread(&self, owner: &str, thread_id: &str) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let done = sqlx::query("DELETE FROM runs WHERE thread_id = ? AND owner = ?")
                    .bind(thread_id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(done.rows_affected())
            })
            .await
    }

    async fn update_model_name(&self, run_id: &str, model_name: Option<&str>) -> StoreResult<bool> {
        self.modify(run_id, |r| {
            r.model_name = model_name.map(str::to_string);
            r.updated_at = time::now();
            true
        })
        .await
    }

    async fn update_completion(
        &self,
        run_id: &str,
        completion: &RunCompletion,
    ) -> StoreResult<bool> {
        self.modify(run_id, |r| {
            util::apply_completion(r, completion, time::now());
            true
        })
        .await
    }

    async fn update_progress(&self, run_id: &str, progress: &RunProgress) -> StoreResult<()> {
        self.modify(run_id, |r| {
            util::apply_progress(r, progress, time::now());
            true
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

    async fn active_for_thread(&self, thread_id: &str) -> StoreResult<Option<Run>> {
        self.db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM runs WHERE thread_id = ? AND status IN ('pending', 'running') \
                     ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, created_at ASC, run_id ASC LIMIT 1",
                )
                .bind(thread_id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(map_err)?
                .map(|r| row_to_run(&r))
                .transpose()
            })
            .await
    }

    async fn next_pending_for_thread(&self, thread_id: &str) -> StoreResult<Option<Run>> {
        self.db
            .retry(|| async {
                sqlx::query(
                    "SELECT * FROM runs WHERE thread_id = ? AND status = 'pending' ORDER BY created_at ASC, run_id ASC LIMIT 1",
                )
                .bind(thread_id)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(map_err)?
                .map(|r| row_to_run(&r))
                .transpose()
            })
            .await
    }
}
