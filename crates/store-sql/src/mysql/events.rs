//! `run_events` + `run_event_seqs` tables.
//!
//! Sequence numbers come from `run_event_seqs` (one row per thread, bumped by the batch size
//! with an upsert that row-locks it until the transaction holding the inserts commits), so
//! they are unique and strictly increasing per thread across processes, and never reused
//! after deletes. Threads of one batch are bumped in sorted order, so two batches touching
//! the same threads lock them in the same order.

use std::collections::HashMap;

use antler_store::{
    NewRunEvent, RunEvent, RunEventQuery, RunEventStore, StoreError, StoreResult, time,
};
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, QueryBuilder};

use super::*;

/// MySQL [`RunEventStore`].
#[derive(Debug, Clone)]
pub struct MySqlRunEventStore {
    pub(crate) db: Db,
}

fn row_to_event(row: &MySqlRow) -> StoreResult<RunEvent> {
    Ok(RunEvent {
        thread_id: get_str(row, "thread_id")?,
        run_id: get_str(row, "run_id")?,
        seq: get_i64(row, "seq")?,
        event_type: get_str(row, "event_type")?,
        category: get_str(row, "category")?,
        content: get_json(row, "content")?,
        metadata: get_json(row, "metadata")?,
        created_at: get_ts(row, "created_at")?,
    })
}

fn push_filters(
    qb: &mut QueryBuilder<MySql>,
    owner: &str,
    thread_id: &str,
    run_id: Option<&str>,
    category: Option<&str>,
) {
    qb.push(" WHERE owner = ");
    qb.push_bind(owner.to_string());
    qb.push(" AND thread_id = ");
    qb.push_bind(thread_id.to_string());
    if let Some(r) = run_id {
        qb.push(" AND run_id = ");
        qb.push_bind(r.to_string());
    }
    if let Some(c) = category {
        qb.push(" AND category = ");
        qb.push_bind(c.to_string());
    }
}

#[async_trait::async_trait]
impl RunEventStore for MySqlRunEventStore {
    async fn append_batch(
        &self,
        owner: &str,
        events: Vec<NewRunEvent>,
    ) -> StoreResult<Vec<RunEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Batch size per thread, in sorted order (a consistent lock order across batches).
        let mut per_thread: std::collections::BTreeMap<String, i64> = Default::default();
        for e in &events {
            *per_thread.entry(e.thread_id.clone()).or_insert(0) += 1;
        }
        let events = &events;
        let per_thread = &per_thread;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                let mut next: HashMap<&str, i64> = HashMap::new();
                for (thread_id, n) in per_thread {
                    sqlx::query(
                        "INSERT INTO run_event_seqs (owner, thread_id, last_seq) VALUES (?, ?, ?) \
                         ON DUPLICATE KEY UPDATE last_seq = last_seq + ?",
                    )
                    .bind(owner)
                    .bind(thread_id)
                    .bind(n)
                    .bind(n)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    // a locking read: the row as this transaction left it
                    let last: i64 = sqlx::query_scalar(
                        "SELECT last_seq FROM run_event_seqs WHERE owner = ? AND thread_id = ? FOR UPDATE",
                    )
                    .bind(owner)
                    .bind(thread_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_err)?;
                    next.insert(thread_id.as_str(), last - n + 1);
                }
                let mut out = Vec::with_capacity(events.len());
                for e in events {
                    let slot = next.entry(e.thread_id.as_str()).or_insert(1);
                    out.push(RunEvent {
                        thread_id: e.thread_id.clone(),
                        run_id: e.run_id.clone(),
                        seq: *slot,
                        event_type: e.event_type.clone(),
                        category: e.category.clone(),
                        content: e.content.clone(),
                        metadata: e.metadata.clone(),
                        created_at: time::truncate(e.created_at),
                    });
                    *slot += 1;
                }
                // one multi-row INSERT per chunk (MySQL binds at most 65,535 values)
                for chunk in out.chunks(1000) {
                    let mut qb = QueryBuilder::<MySql>::new(
                        "INSERT INTO run_events (thread_id, run_id, owner, seq, event_type, category, content, metadata, created_at) ",
                    );
                    qb.push_values(chunk, |mut row, e| {
                        row.push_bind(e.thread_id.clone())
                            .push_bind(e.run_id.clone())
                            .push_bind(owner.to_string())
                            .push_bind(e.seq)
                            .push_bind(e.event_type.clone())
                            .push_bind(e.category.clone())
                            .push_bind(json(&e.content))
                            .push_bind(json(&e.metadata))
                            .push_bind(ts(&e.created_at));
                    });
                    qb.build().execute(&mut *tx).await.map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)?;
                Ok(out)
            })
            .await
    }

    async fn list(
        &self,
        owner: &str,
        thread_id: &str,
        q: &RunEventQuery,
    ) -> StoreResult<Vec<RunEvent>> {
        let rows = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<MySql>::new("SELECT * FROM run_events");
                push_filters(
                    &mut qb,
                    owner,
                    thread_id,
                    q.run_id.as_deref(),
                    q.category.as_deref(),
                );
                if !q.event_types.is_empty() {
                    if q.event_types.len() > MAX_IN_LIST {
                        return Err(StoreError::InvalidArgument(format!(
                            "too many event types (at most {MAX_IN_LIST})"
                        )));
                    }
                    push_in_list(&mut qb, "event_type", &q.event_types);
                }
                match q.before_seq {
                    Some(before) => {
                        // the last `limit` below the cursor, returned ascending
                        qb.push(" AND seq < ");
                        qb.push_bind(before);
                        qb.push(" ORDER BY seq DESC");
                    }
                    None => {
                        qb.push(" AND seq > ");
                        qb.push_bind(q.after_seq.unwrap_or(0));
                        qb.push(" ORDER BY seq ASC");
                    }
                }
                if let Some(limit) = q.limit {
                    qb.push(" LIMIT ");
                    qb.push_bind(lim(limit));
                }
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        let mut events = rows
            .iter()
            .map(row_to_event)
            .collect::<StoreResult<Vec<_>>>()?;
        if q.before_seq.is_some() {
            events.reverse();
        }
        Ok(events)
    }

    async fn count(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: Option<&str>,
        category: Option<&str>,
    ) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut qb = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM run_events");
                push_filters(&mut qb, owner, thread_id, run_id, category);
                let n: i64 = qb
                    .build_query_scalar()
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(map_err)?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    async fn delete_thread(&self, owner: &str, thread_id: &str) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query("DELETE FROM run_events WHERE thread_id = ? AND owner = ?")
                    .bind(thread_id)
                    .bind(owner)
                    .execute(&mut *conn)
                    .await
                    .map_err(map_err)?;
                Ok(done.rows_affected())
            })
            .await
    }

    async fn delete_run(&self, owner: &str, thread_id: &str, run_id: &str) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query(
                    "DELETE FROM run_events WHERE thread_id = ? AND run_id = ? AND owner = ?",
                )
                .bind(thread_id)
                .bind(run_id)
                .bind(owner)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
                Ok(done.rows_affected())
            })
            .await
    }
}
