//! `threads` table. Every write is one statement (metadata merged server-side with JSONB
//! `||`, copies with `INSERT ... SELECT`), so no transaction or lock is needed.

use antler_store::{
    StoreError, StoreResult, Thread, ThreadSearch, ThreadSortBy, ThreadStatus, ThreadStore,
    ThreadUpdate, time,
};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder};

use super::*;

/// PostgreSQL [`ThreadStore`].
#[derive(Debug, Clone)]
pub struct PostgresThreadStore {
    pub(crate) db: Db,
}

fn row_to_thread(row: &PgRow) -> StoreResult<Thread> {
    Ok(Thread {
        thread_id: get_str(row, "thread_id")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        state_updated_at: get_ts(row, "state_updated_at")?,
        metadata: get_map(row, "metadata")?,
        status: parse_enum::<ThreadStatus>(row, "status")?,
        config: get_json(row, "config")?,
        values: get_opt_json(row, "state_values")?,
        error: get_opt_json(row, "error")?,
        interrupts: get_opt_json(row, "interrupts")?,
        owner: get_str(row, "owner")?,
    })
}

fn conflict(e: StoreError, thread_id: &str) -> StoreError {
    match e {
        StoreError::Conflict(_) => {
            StoreError::Conflict(format!("thread {thread_id} already exists"))
        }
        other => other,
    }
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, owner: &str, q: &ThreadSearch) -> StoreResult<()> {
    qb.push(" WHERE owner = ");
    qb.push_bind(owner.to_string());
    if let Some(ids) = &q.ids {
        // one bound array, whatever the number of ids
        qb.push(" AND thread_id = ANY(");
        qb.push_bind(ids.clone());
        qb.push(")");
    }
    if let Some(s) = q.status {
        qb.push(" AND status = ");
        qb.push_bind(s.as_str());
    }
    push_json_filter(qb, "threads.metadata", &q.metadata)?;
    push_json_filter(qb, "threads.state_values", &q.values)
}

/// `UPDATE threads SET ... RETURNING *` applying a [`ThreadUpdate`] in one statement.
fn single_update(owner: &str, thread_id: &str, u: &ThreadUpdate) -> QueryBuilder<Postgres> {
    let now = time::now();
    let mut qb = QueryBuilder::<Postgres>::new("UPDATE threads SET updated_at = ");
    qb.push_bind(now);
    if let Some(s) = u.status {
        qb.push(", status = ");
        qb.push_bind(s.as_str());
    }
    let mut state_changed = false;
    for (column, field) in [
        ("state_values", &u.values),
        ("error", &u.error),
        ("interrupts", &u.interrupts),
    ] {
        if let Some(v) = field {
            qb.push(format!(", {column} = "));
            qb.push_bind(v.clone());
            qb.push("::jsonb");
            state_changed |= column != "error";
        }
    }
    if state_changed {
        qb.push(", state_updated_at = ");
        qb.push_bind(now);
    }
    if let Some(c) = &u.config {
        qb.push(", config = ");
        qb.push_bind(c.clone());
    }
    if let Some(m) = u.metadata.as_ref().filter(|m| !m.is_empty()) {
        // top-level merge, the rule of `antler_store::util::merge_metadata`
        qb.push(", metadata = metadata || ");
        qb.push_bind(obj(m));
        qb.push("::jsonb");
    }
    qb.push(" WHERE thread_id = ");
    qb.push_bind(thread_id.to_string());
    qb.push(" AND owner = ");
    qb.push_bind(owner.to_string());
    qb.push(" RETURNING *");
    qb
}

#[async_trait::async_trait]
impl ThreadStore for PostgresThreadStore {
    async fn create(&self, owner: &str, mut thread: Thread) -> StoreResult<Thread> {
        thread.owner = owner.to_string();
        thread.created_at = time::truncate(thread.created_at);
        thread.updated_at = time::truncate(thread.updated_at);
        thread.state_updated_at = time::truncate(thread.state_updated_at);
        let t = &thread;
        self.db
            .retry(|| async move {
                sqlx::query(
                    "INSERT INTO threads (thread_id, owner, status, metadata, config, state_values, error, interrupts, \
                     created_at, updated_at, state_updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(&t.thread_id)
                .bind(&t.owner)
                .bind(t.status.as_str())
                .bind(obj(&t.metadata))
                .bind(&t.config)
                .bind(&t.values)
                .bind(&t.error)
                .bind(&t.interrupts)
                .bind(t.created_at)
                .bind(t.updated_at)
                .bind(t.state_updated_at)
                .execute(&self.db.pool)
                .await
                .map_err(|e| conflict(map_err(e), &t.thread_id))?;
                Ok(())
            })
            .await?;
        Ok(thread)
    }

    async fn get(&self, owner: &str, thread_id: &str) -> StoreResult<Option<Thread>> {
        self.db
            .retry(|| async {
                sqlx::query("SELECT * FROM threads WHERE thread_id = $1 AND owner = $2")
                    .bind(thread_id)
                    .bind(owner)
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(map_err)?
                    .map(|r| row_to_thread(&r))
                    .transpose()
            })
            .await
    }

    async fn patch_metadata(
        &self,
        owner: &str,
        thread_id: &str,
        metadata: Map<String, Value>,
    ) -> StoreResult<Thread> {
        self.update(
            owner,
            thread_id,
            ThreadUpdate {
                metadata: Some(metadata),
                ..Default::default()
            },
        )
        .await
    }

    async fn update(
        &self,
        owner: &str,
        thread_id: &str,
        update: ThreadUpdate,
    ) -> StoreResult<Thread> {
        let update = &update;
        let row = self
            .db
            .retry(|| async move {
                single_update(owner, thread_id, update)
                    .build()
                    .fetch_optional(&self.db.pool)
                    .await
                    .map_err(map_err)
            })
            .await?;
        match row {
            Some(row) => row_to_thread(&row),
            None => Err(StoreError::NotFound),
        }
    }

    async fn delete(&self, owner: &str, thread_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
                let done = sqlx::query("DELETE FROM threads WHERE thread_id = $1 AND owner = $2")
                    .bind(thread_id)
                    .bind(owner)
                    .execute(&self.db.pool)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn search(&self, owner: &str, q: &ThreadSearch) -> StoreResult<Vec<Thread>> {
        let sort = match q.sort_by {
            ThreadSortBy::ThreadId => "thread_id",
            ThreadSortBy::Status => "status",
            ThreadSortBy::CreatedAt => "created_at",
            ThreadSortBy::UpdatedAt => "updated_at",
            ThreadSortBy::StateUpdatedAt => "state_updated_at",
        };
        let d = dir(q.sort_order);
        let rows = self
            .db
            .retry(|| async {
                let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM threads");
                push_filters(&mut qb, owner, q)?;
                qb.push(format!(" ORDER BY {sort} {d}, thread_id {d} LIMIT "));
                qb.push_bind(lim(q.limit));
                qb.push(" OFFSET ");
                qb.push_bind(lim(q.offset));
                qb.build().fetch_all(&self.db.pool).await.map_err(map_err)
            })
            .await?;
        rows.iter().map(row_to_thread).collect()
    }

    async fn count(&self, owner: &str, q: &ThreadSearch) -> StoreResult<u64> {
        self.db
            .retry(|| async {
                let mut qb = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM threads");
                push_filters(&mut qb, owner, q)?;
                let n: i64 = qb
                    .build_query_scalar()
                    .fetch_one(&self.db.pool)
                    .await
                    .map_err(map_err)?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    async fn copy(&self, owner: &str, thread_id: &str, new_id: &str) -> StoreResult<Thread> {
        let now = time::now();
        let row = self
            .db
            .retry(|| async {
                sqlx::query(
                    "INSERT INTO threads (thread_id, owner, status, metadata, config, state_values, error, interrupts, \
                     created_at, updated_at, state_updated_at) \
                     SELECT $1, owner, CASE WHEN status = $2 THEN $3 ELSE status END, metadata, config, state_values, \
                     error, interrupts, $4, $4, $4 FROM threads WHERE thread_id = $5 AND owner = $6 \
                     RETURNING *",
                )
                .bind(new_id)
                .bind(ThreadStatus::Busy.as_str())
                .bind(ThreadStatus::Idle.as_str())
                .bind(now)
                .bind(thread_id)
                .bind(owner)
                .fetch_optional(&self.db.pool)
                .await
                .map_err(|e| conflict(map_err(e), new_id))
            })
            .await?;
        match row {
            Some(row) => row_to_thread(&row),
            None => Err(StoreError::NotFound),
        }
    }

    async fn owners_of(&self, thread_id: &str) -> StoreResult<Vec<String>> {
        self.db
            .retry(|| async {
                sqlx::query_scalar("SELECT owner FROM threads WHERE thread_id = $1 ORDER BY owner")
                    .bind(thread_id)
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(map_err)
            })
            .await
    }
}
