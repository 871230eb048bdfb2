//! `runs` and `replicas` tables: the seeds' RunStore contract plus the queue, leases and the
//! replica registry.
//!
//! "One running run per thread" is a unique index in every backend (partial on PostgreSQL
//! and SQLite, a generated column on MySQL): a claim racing another one for the same thread
//! fails with a unique violation, answered as [`Claim::Busy`]. Lease methods are
//! compare-and-set UPDATEs, so of several processes exactly one wins. Claims lock the run
//! and read the thread's older runs in one transaction (MySQL cannot read the table an
//! UPDATE writes in a subquery); queue claims lock with `FOR UPDATE SKIP LOCKED` so
//! concurrent replicas pick disjoint runs.

use antler_store::{
    CancelAction, Claim, Owner, ReplicaInfo, ReplicaRegistry, Run, RunCompletion, RunId,
    RunListQuery, RunProgress, RunQueue, RunStatus, RunStore, StoreError, StoreResult, ThreadId,
    TokenAggregate, time, util,
};
use chrono::{DateTime, Utc};

use crate::sql::{
    Arg, Conn, Db, Dialect, Sql, SqlRow, WriteClass, from_row, lim, listing, transaction, upsert,
};

/// [`RunStore`] on any SQL backend.
#[derive(Debug, Clone)]
pub struct SqlRunStore<D: Dialect> {
    pub(crate) db: Db<D>,
}

pub(crate) fn row_to_run(row: &impl SqlRow) -> StoreResult<Run> {
    from_row!(row => Run {
        run_id: str, thread_id: str, assistant_id: str, metadata: map, status: parse,
        kwargs: json, multitask_strategy: parse, created_at: ts, updated_at: ts, owner: str,
        model_name: opt_str, error: opt_str, total_input_tokens: i64, total_output_tokens: i64,
        total_tokens: i64, llm_call_count: i64, lead_agent_tokens: i64, subagent_tokens: i64,
        middleware_tokens: i64, message_count: i64, last_ai_message: opt_str,
        first_human_message: opt_str, started_at: opt_ts, finished_at: opt_ts, temporary: bool,
        worker_id: opt_str, lease_expires_at: opt_ts, cancel_requested: opt_parse,
    })
}

fn row_to_replica(row: &impl SqlRow) -> StoreResult<ReplicaInfo> {
    from_row!(row => ReplicaInfo {
        replica_id: str, started_at: ts, heartbeat_at: ts, host: str, pid: i64,
        database: str("database_kind"), bridge: str("bridge_kind"),
    })
}

fn ids_of(rows: &[impl SqlRow]) -> StoreResult<Vec<String>> {
    rows.iter().map(|r| r.str("run_id")).collect()
}

fn runs(rows: &[impl SqlRow]) -> StoreResult<Vec<Run>> {
    Ok(listing(rows, "run_id", row_to_run))
}

/// The INSERT of a whole run row (`put`, `put_if_idle`).
/// The inserted columns of a run row, and one row's placeholders.
const RUN_COLUMNS: &str = "run_id, thread_id, assistant_id, owner, status, multitask_strategy, metadata, kwargs, \
     model_name, error, total_input_tokens, total_output_tokens, total_tokens, llm_call_count, \
     lead_agent_tokens, subagent_tokens, middleware_tokens, message_count, last_ai_message, \
     first_human_message, temporary, created_at, updated_at, started_at, finished_at, worker_id, lease_expires_at";
const RUN_ROW: &str =
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

pub(crate) fn insert_sql(r: &Run) -> Sql {
    insert_many_sql(std::slice::from_ref(r))
}

/// One insert of many new run rows (a batch's creates; at most a few hundred: the
/// placeholders stay far below every backend's limit).
pub(crate) fn insert_many_sql(rows: &[Run]) -> Sql {
    let mut sql = Sql::owned(format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES "));
    for (i, _) in rows.iter().enumerate() {
        sql.push(if i == 0 { "" } else { ", " }).push(RUN_ROW);
    }
    rows.iter().fold(sql, run_args)
}

/// Appends the arguments of one run row, in [`RUN_COLUMNS`] order.
fn run_args(sql: Sql, r: &Run) -> Sql {
    sql.arg(&r.run_id)
        .arg(&r.thread_id)
        .arg(&r.assistant_id)
        .arg(&r.owner)
        .arg(r.status.as_str())
        .arg(r.multitask_strategy.as_str())
        .arg(Arg::map(&r.metadata))
        .arg(Arg::json(&r.kwargs))
        .arg(&r.model_name)
        .arg(&r.error)
        .args_from([
            r.total_input_tokens,
            r.total_output_tokens,
            r.total_tokens,
            r.llm_call_count,
            r.lead_agent_tokens,
            r.subagent_tokens,
            r.middleware_tokens,
            r.message_count,
        ])
        .arg(&r.last_ai_message)
        .arg(&r.first_human_message)
        .arg(r.temporary)
        .arg(r.created_at)
        .arg(r.updated_at)
        .arg(r.started_at)
        .arg(r.finished_at)
        .arg(&r.worker_id)
        .arg(r.lease_expires_at)
}

/// `SET` clauses of a status change (`status` None = unchanged). `started_at` and
/// `finished_at` come first and test the bound status, never the column: MySQL evaluates
/// assignments left to right.
fn status_set(sql: &mut Sql, status: Option<RunStatus>, error: Option<&str>, now: DateTime<Utc>) {
    let s = status.map(|s| s.as_str());
    sql.push("started_at = CASE WHEN ").bind(s);
    sql.push(" = 'running' AND started_at IS NULL THEN ")
        .bind(now);
    sql.push(" ELSE started_at END, ");
    end_set(sql, s, "status", error, now);
}

/// `finished_at = ..., status = COALESCE(?, <unchanged>), error = ..., updated_at = ?`: the
/// clauses after `started_at` of a status change; `unchanged` is the status kept when none is
/// given (the column, or a literal).
fn end_set(
    sql: &mut Sql,
    s: Option<&str>,
    unchanged: &str,
    error: Option<&str>,
    now: DateTime<Utc>,
) {
    sql.push("finished_at = CASE WHEN ").bind(s);
    sql.push(" IS NULL OR ").bind(s);
    sql.push(" IN ('pending', 'running') THEN finished_at ELSE ")
        .bind(now);
    sql.push(" END, status = COALESCE(").bind(s);
    sql.push(", ")
        .push(unchanged)
        .push("), error = COALESCE(")
        .bind(error);
    sql.push(", error), updated_at = ").bind(now);
}

/// Final figures (+ status, + error) of a run, inside a transaction or alone.
pub(crate) fn completion_sql(run_id: &str, c: &RunCompletion) -> Sql {
    let mut sql = Sql::new("UPDATE runs SET ");
    status_set(&mut sql, c.status, c.error.as_deref(), time::now());
    figures_set(&mut sql, c);
    sql.push(" WHERE run_id = ").bind(run_id);
    sql
}

/// `, total_input_tokens = ?, ...`: a completion's figures.
fn figures_set(sql: &mut Sql, c: &RunCompletion) {
    sql.push(", total_input_tokens = ")
        .bind(c.total_input_tokens);
    sql.push(", total_output_tokens = ")
        .bind(c.total_output_tokens);
    sql.push(", total_tokens = ").bind(c.total_tokens);
    sql.push(", llm_call_count = ").bind(c.llm_call_count);
    sql.push(", lead_agent_tokens = ").bind(c.lead_agent_tokens);
    sql.push(", subagent_tokens = ").bind(c.subagent_tokens);
    sql.push(", middleware_tokens = ").bind(c.middleware_tokens);
    sql.push(", message_count = ").bind(c.message_count);
    sql.push(", last_ai_message = ").bind(&c.last_ai_message);
    sql.push(", first_human_message = ")
        .bind(&c.first_human_message);
}

/// A claim and the completion of the same run in one statement (a run that starts and ends
/// in one batch, on a database this process owns): the row goes from pending to its final
/// status, started and finished, under this worker's lease, unless another run of its thread
/// is running. 0 rows: it was not claimable (the caller falls back to the claim's full check).
pub(crate) fn claimed_completion_sql(
    run_id: &str,
    c: &RunCompletion,
    worker_id: &str,
    lease_until: DateTime<Utc>,
) -> Sql {
    let now = time::now();
    let s = c.status.map(|s| s.as_str());
    let mut sql = Sql::new("UPDATE runs SET started_at = COALESCE(started_at, ");
    sql.bind(now);
    sql.push("), ");
    end_set(&mut sql, s, "'running'", c.error.as_deref(), now);
    sql.push(", worker_id = ").bind(worker_id);
    sql.push(", lease_expires_at = ").bind(lease_until);
    figures_set(&mut sql, c);
    sql.push(" WHERE run_id = ").bind(run_id);
    sql.push(
        " AND status = 'pending' AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.owner = runs.owner \
         AND o.thread_id = runs.thread_id AND o.status = 'running')",
    );
    sql
}

/// A best-effort progress snapshot (only the given figures change).
pub(crate) fn progress_sql(run_id: &str, p: &RunProgress) -> Sql {
    let mut sql = Sql::new("UPDATE runs SET updated_at = ");
    sql.bind(time::now());
    for (col, v) in [
        ("total_input_tokens", p.total_input_tokens),
        ("total_output_tokens", p.total_output_tokens),
        ("total_tokens", p.total_tokens),
        ("llm_call_count", p.llm_call_count),
        ("lead_agent_tokens", p.lead_agent_tokens),
        ("subagent_tokens", p.subagent_tokens),
        ("middleware_tokens", p.middleware_tokens),
        ("message_count", p.message_count),
    ] {
        sql.push(&format!(", {col} = COALESCE(")).bind(v);
        sql.push(&format!(", {col})"));
    }
    for (col, v) in [
        ("last_ai_message", &p.last_ai_message),
        ("first_human_message", &p.first_human_message),
    ] {
        sql.push(&format!(", {col} = COALESCE(")).bind(v);
        sql.push(&format!(", {col})"));
    }
    sql.push(" WHERE run_id = ").bind(run_id);
    sql
}

/// The run's model name.
pub(crate) fn model_name_sql(run_id: &str, model_name: Option<&str>) -> Sql {
    Sql::new("UPDATE runs SET model_name = ?, updated_at = ? WHERE run_id = ?")
        .arg(model_name)
        .arg(time::now())
        .arg(run_id)
}

/// Claims a pending run inside `conn`'s transaction (see [`RunStore::claim`]).
pub(crate) async fn claim_in<D: Dialect>(
    conn: &mut Conn<D>,
    run_id: &str,
    worker_id: &str,
    lease_until: DateTime<Utc>,
) -> StoreResult<Claim> {
    let mut lock = Sql::new(
        "SELECT owner, thread_id, created_at FROM runs WHERE run_id = ? AND status = 'pending'",
    )
    .arg(run_id);
    lock.push(D::FOR_UPDATE);
    let Some(row) = D::fetch_optional(conn, &lock).await? else {
        return Ok(Claim::Gone);
    };
    let created = row.ts("created_at")?;
    let older = Sql::new(
        "SELECT 1 AS n FROM runs WHERE owner = ? AND thread_id = ? AND status = 'pending' \
         AND (created_at < ? OR (created_at = ? AND run_id < ?)) LIMIT 1",
    )
    .arg(row.str("owner")?)
    .arg(row.str("thread_id")?)
    .arg(created)
    .arg(created)
    .arg(run_id);
    if D::fetch_optional(conn, &older).await?.is_some() {
        return Ok(Claim::Busy);
    }
    // checked first: on PostgreSQL the index's refusal would abort the whole transaction
    let running = Sql::new(
        "SELECT 1 AS n FROM runs WHERE owner = ? AND thread_id = ? AND status = 'running' LIMIT 1",
    )
    .arg(row.str("owner")?)
    .arg(row.str("thread_id")?);
    if D::fetch_optional(conn, &running).await?.is_some() {
        return Ok(Claim::Busy);
    }
    match D::execute(conn, &claim_sql(run_id, worker_id, lease_until)).await {
        Ok(_) => Ok(Claim::Claimed),
        // the unique index on running runs: another run of the thread is running
        Err(StoreError::Conflict(_)) => Ok(Claim::Busy),
        Err(e) => Err(e),
    }
}

/// Moves a pending run to running under `worker_id`'s lease (no other check).
pub(crate) fn claim_sql(run_id: &str, worker_id: &str, lease_until: DateTime<Utc>) -> Sql {
    let now = time::now();
    Sql::new(
        "UPDATE runs SET started_at = COALESCE(started_at, ?), status = 'running', \
         worker_id = ?, lease_expires_at = ?, updated_at = ? WHERE run_id = ? AND status = 'pending'",
    )
    .arg(now)
    .arg(worker_id)
    .arg(lease_until)
    .arg(now)
    .arg(run_id)
}

/// The oldest eligible queued runs, locked (skipping rows other claimers hold).
fn queued_sql<D: Dialect>(now: DateTime<Utc>, limit: usize) -> Sql {
    let mut sql = Sql::new(
        "SELECT r.run_id FROM runs r WHERE r.status = 'pending' AND r.worker_id IS NULL \
         AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= ?) \
         AND NOT EXISTS (SELECT 1 FROM runs o WHERE o.owner = r.owner AND o.thread_id = r.thread_id AND (o.status = 'running' \
         OR (o.status = 'pending' AND (o.created_at < r.created_at \
         OR (o.created_at = r.created_at AND o.run_id < r.run_id))))) \
         ORDER BY r.created_at ASC, r.run_id ASC LIMIT ?",
    )
    .arg(now)
    .arg(lim(limit));
    sql.push(D::SKIP_LOCKED);
    sql
}

impl<D: Dialect> SqlRunStore<D> {
    async fn fetch_runs(&self, sql: &Sql) -> StoreResult<Vec<Run>> {
        runs(&self.db.fetch_all(sql).await?)
    }

    async fn fetch_run(&self, sql: &Sql) -> StoreResult<Option<Run>> {
        self.db
            .fetch_optional(sql)
            .await?
            .as_ref()
            .map(row_to_run)
            .transpose()
    }

    async fn changed(&self, sql: &Sql) -> StoreResult<bool> {
        Ok(self.db.execute(WriteClass::Background, sql).await? > 0)
    }

    async fn scan(
        &self,
        statuses: &[RunStatus],
        before: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<Run>> {
        let mut sql = Sql::new("SELECT * FROM runs WHERE 1 = 1");
        sql.and_in("status", statuses.iter().map(|s| s.as_str()));
        if let Some(b) = before {
            sql.push(" AND created_at < ").bind(b);
        }
        sql.push(" ORDER BY created_at ASC, run_id ASC");
        self.fetch_runs(&sql).await
    }

    async fn claim_next_in(
        &self,
        conn: &mut Conn<D>,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        let now = time::now();
        let picked = D::fetch_all(conn, &queued_sql::<D>(now, limit)).await?;
        let ids = picked
            .iter()
            .map(|r| r.str("run_id"))
            .collect::<StoreResult<Vec<_>>>()?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut claim = Sql::new(
            "UPDATE runs SET started_at = COALESCE(started_at, ?), status = 'running', worker_id = ?, \
             lease_expires_at = ?, updated_at = ? WHERE status = 'pending' AND worker_id IS NULL",
        )
        .arg(now)
        .arg(worker_id)
        .arg(lease_until)
        .arg(now);
        claim.and_in("run_id", ids.iter());
        D::execute(conn, &claim).await?;
        let mut read = Sql::new("SELECT * FROM runs WHERE worker_id = ? AND status = 'running'")
            .arg(worker_id);
        read.and_in("run_id", ids.iter())
            .push(" ORDER BY created_at ASC, run_id ASC");
        runs(&D::fetch_all(conn, &read).await?)
    }
}

#[async_trait::async_trait]
impl<D: Dialect> RunStore for SqlRunStore<D> {
    async fn put_if_idle(&self, run: &Run) -> StoreResult<bool> {
        let r = run.as_stored();
        self.db
            .retry(|| async {
                let mut tx = self.db.begin(WriteClass::Ack).await?;
                // The thread's row lock serializes the check-and-insert of its runs; the check
                // then sees every run committed before the lock.
                let mut lock =
                    Sql::new("SELECT thread_id FROM threads WHERE owner = ? AND thread_id = ?")
                        .arg(&r.owner)
                        .arg(&r.thread_id);
                lock.push(D::FOR_UPDATE);
                D::fetch_optional(&mut tx, &lock).await?;
                let busy = Sql::new(
                    "SELECT 1 AS n FROM runs WHERE owner = ? AND thread_id = ? AND run_id <> ? \
                     AND status IN ('pending', 'running') AND cancel_requested IS NULL LIMIT 1",
                )
                .arg(&r.owner)
                .arg(&r.thread_id)
                .arg(&r.run_id);
                if D::fetch_optional(&mut tx, &busy).await?.is_some() {
                    return Ok(false);
                }
                D::execute(&mut tx, &insert_sql(&r)).await?;
                tx.commit().await?;
                Ok(true)
            })
            .await
    }
    async fn put(&self, run: &Run) -> StoreResult<()> {
        let r = run.as_stored();
        match self.db.execute(WriteClass::Ack, &insert_sql(&r)).await {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
                "run {} already exists (or another run of thread {} is running)",
                r.run_id, r.thread_id
            ))),
            other => other.map(|_| ()),
        }
    }
    async fn get(&self, owner: Owner<'_>, run_id: RunId<'_>) -> StoreResult<Option<Run>> {
        let sql = Sql::new("SELECT * FROM runs WHERE run_id = ? AND owner = ?")
            .arg(run_id)
            .arg(owner);
        self.fetch_run(&sql).await
    }
    async fn list_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        q: &RunListQuery,
    ) -> StoreResult<Vec<Run>> {
        let mut sql = Sql::new("SELECT * FROM runs WHERE owner = ? AND thread_id = ?")
            .arg(owner)
            .arg(thread_id);
        if let Some(s) = q.status {
            sql.push(" AND status = ").bind(s.as_str());
        }
        sql.push(" ORDER BY created_at DESC, run_id DESC")
            .page(q.limit, q.offset);
        self.fetch_runs(&sql).await
    }
    async fn update_status(
        &self,
        run_id: RunId<'_>,
        status: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let mut sql = Sql::new("UPDATE runs SET ");
        status_set(&mut sql, Some(status), error, time::now());
        sql.push(" WHERE run_id = ").bind(run_id);
        self.changed(&sql).await
    }
    async fn transition(
        &self,
        run_id: RunId<'_>,
        from: &[RunStatus],
        to: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let mut sql = Sql::new("UPDATE runs SET ");
        status_set(&mut sql, Some(to), error, time::now());
        sql.push(" WHERE run_id = ").bind(run_id);
        sql.and_in("status", from.iter().map(|s| s.as_str()));
        self.changed(&sql).await
    }
    async fn delete(&self, owner: Owner<'_>, run_id: RunId<'_>) -> StoreResult<()> {
        let sql = Sql::new("DELETE FROM runs WHERE run_id = ? AND owner = ?")
            .arg(run_id)
            .arg(owner);
        match self.db.execute(WriteClass::Background, &sql).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }
    async fn delete_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<u64> {
        let sql = Sql::new("DELETE FROM runs WHERE thread_id = ? AND owner = ?")
            .arg(thread_id)
            .arg(owner);
        self.db.execute(WriteClass::Background, &sql).await
    }
    async fn update_model_name(
        &self,
        run_id: RunId<'_>,
        model_name: Option<&str>,
    ) -> StoreResult<bool> {
        self.changed(&model_name_sql(run_id.as_str(), model_name))
            .await
    }
    async fn update_completion(&self, run_id: RunId<'_>, c: &RunCompletion) -> StoreResult<bool> {
        self.changed(&completion_sql(run_id.as_str(), c)).await
    }
    async fn update_progress(&self, run_id: RunId<'_>, p: &RunProgress) -> StoreResult<()> {
        let sql = progress_sql(run_id.as_str(), p);
        self.db
            .execute(WriteClass::Background, &sql)
            .await
            .map(|_| ())
    }
    async fn aggregate_tokens_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        include_active: bool,
    ) -> StoreResult<TokenAggregate> {
        let sql = Sql::new(
            "SELECT * FROM runs WHERE owner = ? AND thread_id = ? ORDER BY created_at ASC",
        )
        .arg(owner)
        .arg(thread_id);
        let runs = self.fetch_runs(&sql).await?;
        Ok(util::aggregate(runs.iter().filter(|r| {
            util::counts_for_tokens(r.status, include_active)
        })))
    }
    async fn active_for_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<Option<Run>> {
        let sql = Sql::new(
            "SELECT * FROM runs WHERE owner = ? AND thread_id = ? AND status IN ('pending', 'running') \
             ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, created_at ASC, run_id ASC LIMIT 1",
        )
        .arg(owner)
        .arg(thread_id);
        self.fetch_run(&sql).await
    }
}

#[async_trait::async_trait]
impl<D: Dialect> RunQueue for SqlRunStore<D> {
    async fn list_pending(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>> {
        self.scan(&[RunStatus::Pending], before).await
    }
    async fn list_inflight(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>> {
        self.scan(&[RunStatus::Pending, RunStatus::Running], before)
            .await
    }
    async fn claim(
        &self,
        run_id: RunId<'_>,
        worker_id: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        transaction!(self.db, WriteClass::Background, |tx| {
            claim_in::<D>(tx, run_id.as_str(), worker_id, lease_until).await
        })
        .await
    }
    /// Must not deadlock with the group commit, which updates several of this worker's run
    /// rows in one transaction: the rows not locked right now are renewed together, the
    /// others one at a time (a single-row statement holds no other lock to wait in a cycle).
    async fn renew_leases(&self, worker_id: &str, lease_until: DateTime<Utc>) -> StoreResult<u64> {
        let renewed = self
            .db
            .retry(|| async {
                let mut tx = self.db.begin(WriteClass::Background).await?;
                let mut pick = Sql::new(
                    "SELECT run_id FROM runs WHERE worker_id = ? AND status IN ('pending', 'running')",
                )
                .arg(worker_id);
                pick.push(D::SKIP_LOCKED);
                let ids = ids_of(&D::fetch_all(&mut tx, &pick).await?)?;
                if !ids.is_empty() {
                    let mut sql = Sql::new("UPDATE runs SET lease_expires_at = ? WHERE worker_id = ?")
                        .arg(lease_until)
                        .arg(worker_id);
                    sql.and_in("run_id", ids.iter());
                    D::execute(&mut tx, &sql).await?;
                }
                tx.commit().await?;
                Ok(ids)
            })
            .await?;
        let all = Sql::new(
            "SELECT run_id FROM runs WHERE worker_id = ? AND status IN ('pending', 'running')",
        )
        .arg(worker_id);
        let mut held = renewed.len() as u64;
        for id in ids_of(&self.db.fetch_all(&all).await?)? {
            if renewed.contains(&id) {
                continue;
            }
            let one = Sql::new(
                "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND worker_id = ? \
                 AND status IN ('pending', 'running')",
            )
            .arg(lease_until)
            .arg(&id)
            .arg(worker_id);
            held += self.db.execute(WriteClass::Background, &one).await?;
        }
        Ok(held)
    }
    async fn list_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Run>> {
        let sql = Sql::new(
            "SELECT * FROM runs WHERE status IN ('pending', 'running') \
             AND NOT (status = 'pending' AND worker_id IS NULL) \
             AND (lease_expires_at IS NULL OR lease_expires_at < ?) \
             ORDER BY created_at ASC, run_id ASC LIMIT ?",
        )
        .arg(now)
        .arg(lim(limit));
        self.fetch_runs(&sql).await
    }
    async fn adopt(
        &self,
        run_id: RunId<'_>,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let sql = Sql::new(
            "UPDATE runs SET worker_id = ?, lease_expires_at = ? WHERE run_id = ? \
             AND status IN ('pending', 'running') AND NOT (status = 'pending' AND worker_id IS NULL) \
             AND (lease_expires_at IS NULL OR lease_expires_at < ?)",
        )
        .arg(worker_id)
        .arg(lease_until)
        .arg(run_id)
        .arg(now);
        self.changed(&sql).await
    }
    async fn next_pending_for_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<Option<Run>> {
        let sql = Sql::new(
            "SELECT * FROM runs WHERE owner = ? AND thread_id = ? AND status = 'pending' \
             ORDER BY created_at ASC, run_id ASC LIMIT 1",
        )
        .arg(owner)
        .arg(thread_id);
        self.fetch_run(&sql).await
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
        let res = transaction!(self.db, WriteClass::Background, |tx| {
            self.claim_next_in(tx, worker_id, lease_until, limit).await
        })
        .await;
        match res {
            // A thread started a run concurrently (one running run per thread): none now.
            Err(StoreError::Conflict(_)) => Ok(Vec::new()),
            other => other,
        }
    }
    async fn count_pending(&self) -> StoreResult<u64> {
        self.db
            .count(&Sql::new(
                "SELECT COUNT(*) AS n FROM runs WHERE status = 'pending'",
            ))
            .await
    }
    async fn request_cancel(&self, run_id: RunId<'_>, action: CancelAction) -> StoreResult<bool> {
        let sql = Sql::new(
            "UPDATE runs SET cancel_requested = COALESCE(cancel_requested, ?) \
             WHERE run_id = ? AND status IN ('pending', 'running')",
        )
        .arg(action.as_str())
        .arg(run_id);
        self.db.execute(WriteClass::Background, &sql).await?;
        // read back: MySQL reports rows *changed*, and a repeated request changes nothing
        let active = Sql::new(
            "SELECT 1 AS n FROM runs WHERE run_id = ? AND status IN ('pending', 'running')",
        )
        .arg(run_id);
        Ok(self.db.fetch_optional(&active).await?.is_some())
    }
    async fn cancel_requests(&self, worker_id: &str) -> StoreResult<Vec<(String, CancelAction)>> {
        let sql = Sql::new(
            "SELECT run_id, cancel_requested FROM runs WHERE worker_id = ? \
             AND status IN ('pending', 'running') AND cancel_requested IS NOT NULL",
        )
        .arg(worker_id);
        let rows = self.db.fetch_all(&sql).await?;
        rows.iter()
            .map(|r| Ok((r.str("run_id")?, r.parse("cancel_requested")?)))
            .collect()
    }
}

#[async_trait::async_trait]
impl<D: Dialect> ReplicaRegistry for SqlRunStore<D> {
    async fn heartbeat_replica(&self, r: &ReplicaInfo) -> StoreResult<()> {
        let sql = Sql::owned(format!(
            "INSERT INTO replicas (replica_id, started_at, heartbeat_at, host, pid, database_kind, bridge_kind) \
             VALUES (?, ?, ?, ?, ?, ?, ?){}",
            upsert::<D>(
                "replica_id",
                &["heartbeat_at", "host", "pid", "database_kind", "bridge_kind"]
            )
        ))
        .arg(&r.replica_id)
        .arg(r.started_at)
        .arg(r.heartbeat_at)
        .arg(&r.host)
        .arg(r.pid)
        .arg(&r.database)
        .arg(&r.bridge);
        self.db
            .execute(WriteClass::Background, &sql)
            .await
            .map(|_| ())
    }
    async fn list_replicas(&self, since: DateTime<Utc>) -> StoreResult<Vec<ReplicaInfo>> {
        let sql = Sql::new(
            "SELECT * FROM replicas WHERE heartbeat_at >= ? ORDER BY started_at ASC, replica_id ASC",
        )
        .arg(since);
        let rows = self.db.fetch_all(&sql).await?;
        rows.iter().map(row_to_replica).collect()
    }
    async fn remove_replica(
        &self,
        replica_id: &str,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let sql = Sql::new("DELETE FROM replicas WHERE replica_id = ? OR heartbeat_at < ?")
            .arg(replica_id)
            .arg(stale_before);
        self.db.execute(WriteClass::Background, &sql).await
    }
}
