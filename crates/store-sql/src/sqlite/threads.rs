//! `threads` table.

use antler_store::{
    StoreError, StoreResult, Thread, ThreadSearch, ThreadSortBy, ThreadStatus, ThreadStore,
    ThreadUpdate, time, util,
};
use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::*;

/// SQLite [`ThreadStore`].
#[derive(Debug, Clone)]
pub struct SqliteThreadStore {
    pub(crate) db: Db,
}

fn row_to_thread(row: &SqliteRow) -> StoreResult<Thread> {
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

async fn insert(conn: &mut SqliteConnection, t: &Thread) -> StoreResult<()> {
    let res = sqlx::query(
        "INSERT INTO threads (thread_id, owner, status, metadata, config, state_values, error, interrupts, \
         created_at, updated_at, state_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&t.thread_id)
    .bind(&t.owner)
    .bind(t.status.as_str())
    .bind(json_map(&t.metadata))
    .bind(json(&t.config))
    .bind(t.values.as_ref().map(json))
    .bind(t.error.as_ref().map(json))
    .bind(t.interrupts.as_ref().map(json))
    .bind(ts(&t.created_at))
    .bind(ts(&t.updated_at))
    .bind(ts(&t.state_updated_at))
    .execute(conn)
    .await
    .map_err(map_err);
    match res {
        Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
            "thread {} already exists",
            t.thread_id
        ))),
        other => other.map(|_| ()),
    }
}

async fn owned(conn: &mut SqliteConnection, owner: &str, id: &str) -> StoreResult<Thread> {
    let row = sqlx::query("SELECT * FROM threads WHERE thread_id = ? AND owner = ?")
        .bind(id)
        .bind(owner)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    row_to_thread(&row)
}

fn push_filters(qb: &mut QueryBuilder<Sqlite>, owner: &str, q: &ThreadSearch) -> StoreResult<()> {
    qb.push(" WHERE owner = ");
    qb.push_bind(owner.to_string());
    if let Some(ids) = &q.ids {
        // one bound JSON array, whatever the number of ids (no SQLite variable limit)
        qb.push(" AND thread_id IN (SELECT j.value FROM json_each(");
        qb.push_bind(serde_json::to_string(ids).unwrap_or_else(|_| "[]".into()));
        qb.push(") AS j)");
    }
    if let Some(s) = q.status {
        qb.push(" AND status = ");
        qb.push_bind(s.as_str());
    }
    push_json_filter(qb, "threads.metadata", &q.metadata)?;
    push_json_filter(qb, "threads.state_values", &q.values)
}

/// `UPDATE threads SET ... RETURNING *` applying a [`ThreadUpdate`] in one statement.
fn single_update(
    owner: &str,
    thread_id: &str,
    u: &ThreadUpdate,
) -> StoreResult<QueryBuilder<Sqlite>> {
    let now = ts(&time::now());
    let mut qb = QueryBuilder::<Sqlite>::new("UPDATE threads SET updated_at = ");
    qb.push_bind(now.clone());
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
            qb.push_bind(v.as_ref().map(json));
            state_changed |= column != "error";
        }
    }
    if state_changed {
        qb.push(", state_updated_at = ");
        qb.push_bind(now);
    }
    if let Some(c) = &u.config {
        qb.push(", config = ");
        qb.push_bind(json(c));
    }
    if let Some(m) = u.metadata.as_ref().filter(|m| !m.is_empty()) {
        qb.push(", metadata = json_set(metadata");
        for (k, v) in m {
            qb.push(", ");
            qb.push_bind(path_key("$", k)?);
            qb.push(", json(");
            qb.push_bind(json(v));
            qb.push(")");
        }
        qb.push(")");
    }
    qb.push(" WHERE thread_id = ");
    qb.push_bind(thread_id.to_string());
    qb.push(" AND owner = ");
    qb.push_bind(owner.to_string());
    qb.push(" RETURNING *");
    Ok(qb)
}

#[async_trait::async_trait]
impl ThreadStore for SqliteThreadStore {
    async fn create(&self, owner: &str, mut thread: Thread) -> StoreResult<Thread> {
        thread.owner = owner.to_string();
        thread.created_at = time::truncate(thread.created_at);
        thread.updated_at = time::truncate(thread.updated_at);
        thread.state_updated_at = time::truncate(thread.state_updated_at);
        let t = &thread;
        self.db
            .retry(|| async move {
                // one statement: autocommit under the process write lock, ahead of queued
                // background writes (a client waits for this acknowledgement)
                let _write = self.db.lock_write_ack().await;
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                insert(&mut conn, t).await?;
                Ok(())
            })
            .await?;
        Ok(thread)
    }

    async fn get(&self, owner: &str, thread_id: &str) -> StoreResult<Option<Thread>> {
        self.db
            .retry(|| async {
                sqlx::query("SELECT * FROM threads WHERE thread_id = ? AND owner = ?")
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
        // Fast path: one `UPDATE ... RETURNING *` (metadata merged with json_set) when every
        // metadata key can be written as a JSON path; otherwise read-modify-write below.
        let mergeable = update
            .metadata
            .as_ref()
            .is_none_or(|m| m.keys().all(|k| path_key("$", k).is_ok()));
        if mergeable {
            let update = &update;
            let row = self
                .db
                .retry(|| async move {
                    let _write = self.db.lock_write().await;
                    let mut qb = single_update(owner, thread_id, update)?;
                    qb.build()
                        .fetch_optional(&self.db.pool)
                        .await
                        .map_err(map_err)
                })
                .await?;
            return match row {
                Some(row) => row_to_thread(&row),
                None => Err(StoreError::NotFound),
            };
        }
        let update = &update;
        self.db
            .retry(|| async move {
                let mut tx = self.db.begin().await?;
                let mut t = owned(&mut tx, owner, thread_id).await?;
                let now = time::now();
                let u = update.clone();
                let mut state_changed = false;
                if let Some(s) = u.status {
                    t.status = s;
                }
                if let Some(v) = u.values {
                    t.values = v;
                    state_changed = true;
                }
                if let Some(e) = u.error {
                    t.error = e;
                }
                if let Some(i) = u.interrupts {
                    t.interrupts = i;
                    state_changed = true;
                }
                if let Some(c) = u.config {
                    t.config = c;
                }
                if let Some(m) = u.metadata {
                    util::merge_metadata(&mut t.metadata, m);
                }
                t.updated_at = now;
                if state_changed {
                    t.state_updated_at = now;
                }
                sqlx::query(
                    "UPDATE threads SET status = ?, metadata = ?, config = ?, state_values = ?, error = ?, interrupts = ?, \
                     updated_at = ?, state_updated_at = ? WHERE owner = ? AND thread_id = ?",
                )
                .bind(t.status.as_str())
                .bind(json_map(&t.metadata))
                .bind(json(&t.config))
                .bind(t.values.as_ref().map(json))
                .bind(t.error.as_ref().map(json))
                .bind(t.interrupts.as_ref().map(json))
                .bind(ts(&t.updated_at))
                .bind(ts(&t.state_updated_at))
                .bind(owner)
                .bind(thread_id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(t)
            })
            .await
    }

    async fn delete(&self, owner: &str, thread_id: &str) -> StoreResult<()> {
        self.db
            .retry(|| async {
                // one statement: autocommit under the process write lock
                let _write = self.db.lock_write().await;
                let mut conn = self.db.pool.acquire().await.map_err(map_err)?;
                let done = sqlx::query("DELETE FROM threads WHERE thread_id = ? AND owner = ?")
                    .bind(thread_id)
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
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM threads");
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
                let mut qb = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM threads");
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
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let src = owned(&mut tx, owner, thread_id).await?;
                let now = time::now();
                let copy = Thread {
                    thread_id: new_id.to_string(),
                    created_at: now,
                    updated_at: now,
                    state_updated_at: now,
                    status: if src.status == ThreadStatus::Busy {
                        ThreadStatus::Idle
                    } else {
                        src.status
                    },
                    ..src
                };
                insert(&mut tx, &copy).await?;
                tx.commit().await.map_err(map_err)?;
                Ok(copy)
            })
            .await
    }

    async fn owners_of(&self, thread_id: &str) -> StoreResult<Vec<String>> {
        self.db
            .retry(|| async {
                sqlx::query_scalar("SELECT owner FROM threads WHERE thread_id = ? ORDER BY owner")
                    .bind(thread_id)
                    .fetch_all(&self.db.pool)
                    .await
                    .map_err(map_err)
            })
            .await
    }
}
