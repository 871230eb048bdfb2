//! `run_events` + `run_event_seqs` tables.
//!
//! Sequence numbers come from `run_event_seqs` (one row per thread, bumped by the batch size
//! inside the same `BEGIN IMMEDIATE` transaction as the inserts), so they are unique and
//! strictly increasing per thread across processes, and never reused after deletes.

use std::collections::HashMap;

use antler_store::{NewRunEvent, RunEvent, RunEventQuery, RunEventStore, StoreResult, time};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite};

use super::*;

/// SQLite [`RunEventStore`].
#[derive(Debug, Clone)]
pub struct SqliteRunEventStore {
    pub(crate) db: Db,
}

fn row_to_event(row: &SqliteRow) -> StoreResult<RunEvent> {
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
    qb: &mut QueryBuilder<Sqlite>,
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
impl RunEventStore for SqliteRunEventStore {
    async fn append_batch(
        &self,
        owner: &str,
        events: Vec<NewRunEvent>,
    ) -> StoreResult<Vec<RunEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Batch size per thread, in first-appearance order.
        let mut per_thread: Vec<(String, i64)> = Vec::new();
        for e in &events {
            match per_thread.iter_mut().find(|(t, _)| t == &e.thread_id) {
                Some((_, n)) => *n += 1,
                None => per_thread.push((e.thread_id.clone(), 1)),
            }
        }
        let events = &events;
        let per_thread = &per_thread;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                let mut next: HashMap<&str, i64> = HashMap::new();
                for (thread_id, n) in per_thread {
                    let last: i64 = sqlx::query_scalar(
                        "INSERT INTO run_event_seqs (owner, thread_id, last_seq) VALUES (?, ?, ?) \
                         ON CONFLICT (owner, thread_id) DO UPDATE SET last_seq = last_seq + excluded.last_seq \
                         RETURNING last_seq",
                    )
                    .bind(owner)
                    .bind(thread_id)
                    .bind(n)
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
                // one multi-row INSERT per chunk (SQLite binds at most 32,766 values)
                for chunk in out.chunks(1000) {
                    let mut qb = QueryBuilder::<Sqlite>::new(
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
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM run_events");
                push_filters(
                    &mut qb,
                    owner,
                    thread_id,
                    q.run_id.as_deref(),
                    q.category.as_deref(),
                );
                if !q.event_types.is_empty() {
                    qb.push(" AND event_type IN (SELECT j.value FROM json_each(");
                    qb.push_bind(
                        serde_json::to_string(&q.event_types).unwrap_or_else(|_| "[]".into()),
                    );
                    qb.push(") AS j)");
                }
                let limit = q.limit.map(lim).unwrap_or(-1);
                match q.before_seq {
                    Some(before) => {
                        // the last `limit` below the cursor, returned ascending
                        qb.push(" AND seq < ");
                        qb.push_bind(before);
                        qb.push(" ORDER BY seq DESC LIMIT ");
                        qb.push_bind(limit);
                    }
                    None => {
                        qb.push(" AND seq > ");
                        qb.push_bind(q.after_seq.unwrap_or(0));
                        qb.push(" ORDER BY seq ASC LIMIT ");
                        qb.push_bind(limit);
                    }
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
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM run_events");
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
                // one statement: autocommit under the process write lock
                let _write = self.db.lock_write().await;
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
                // one statement: autocommit under the process write lock
                let _write = self.db.lock_write().await;
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
