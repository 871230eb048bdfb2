//! The graph checkpointer on SQLite, in LangGraph's layout with two refinements.
//!
//! * `checkpoints` — one row per checkpoint: the head (id, ts, channel versions, versions
//!   seen, updated channels, and `blobs`: channel -> blob id; no values), metadata, parent id,
//!   and the run id taken from metadata (for rollback).
//! * `checkpoint_blobs` — immutable channel values, each with its own random id. A checkpoint
//!   writes blobs only for the channels in `new_versions`; unchanged channels point at the
//!   parent's blob ids, so they are never stored again. Because blobs are addressed by id and
//!   not by `(channel, version)`, a fork that reuses a version number cannot overwrite the value
//!   another branch still reads.
//! * List channels (messages) are written as **deltas** when the new list extends the list
//!   this process last wrote for that channel: the blob holds only the appended items and the
//!   id of its base blob. Chains are cut every [`MAX_DELTA_DEPTH`] deltas with a full value,
//!   so a step of a 1,000-message thread writes its new messages, not the whole history, and
//!   a read follows at most that many links (one recursive query).
//! * `checkpoint_writes` — pending writes per (checkpoint, task, index), upserted so
//!   re-delivery is idempotent and insertion order (rowid) is kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use antler_graph::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointError, CheckpointTuple, Checkpointer,
    ListOptions, PendingWrite,
};
use antler_store::StoreError;
use parking_lot::Mutex;

use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::*;
use crate::checkpoint_common::*;

/// A full value is written after this many consecutive deltas of a channel.
pub const MAX_DELTA_DEPTH: i64 = 32;

/// SQLite [`Checkpointer`].
#[derive(Clone)]
pub struct SqliteCheckpointer {
    pub(crate) db: Db,
    /// Per-process write caches (never held across an await).
    cache: Arc<Mutex<Caches>>,
}

impl std::fmt::Debug for SqliteCheckpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCheckpointer")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl SqliteCheckpointer {
    /// A checkpointer over an existing pool (migrations must have run: see [`super::connect_pool`]).
    pub fn new(pool: sqlx::SqlitePool) -> Self {
        Self::with_db(Db::new(pool))
    }

    pub(crate) fn with_db(db: Db) -> Self {
        SqliteCheckpointer {
            db,
            cache: Arc::new(Mutex::new(Caches::default())),
        }
    }
}

fn storage(e: StoreError) -> CheckpointError {
    CheckpointError::Storage(e.to_string())
}

fn sql(e: sqlx::Error) -> CheckpointError {
    storage(map_err(e))
}

fn to_backend(e: CheckpointError) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SqliteCheckpointer {
    #[allow(clippy::too_many_arguments)]
    async fn put_inner(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        values: Values<'_>,
        metadata: &Map<String, Value>,
        new_versions: &BTreeMap<String, ChannelVersion>,
    ) -> Result<(), CheckpointError> {
        let plans = plan(
            &self.cache,
            thread_id,
            checkpoint_ns,
            checkpoint,
            &values,
            new_versions,
        )?;
        let meta = serde_json::to_string(metadata).map_err(serde_err)?;
        let head_key: HeadKey = (thread_id.to_string(), checkpoint_ns.to_string());
        let cached_parent = parent_id.and_then(|pid| {
            self.cache
                .lock()
                .heads
                .get(&head_key)
                .filter(|(id, _)| id == pid)
                .map(|(_, blobs)| blobs.clone())
        });
        let (plans_ref, meta_ref, cached_ref) = (&plans, &meta, &cached_parent);
        let (blobs, depths) = self
            .db
            .retry(|| async move {
                // No transaction: blobs are written first (fresh ids, `ON CONFLICT DO NOTHING`
                // so a retry is idempotent) and the checkpoint row last, so a failure in
                // between leaves at most unreferenced blobs; the process write lock orders
                // concurrent writers. Saves the BEGIN/COMMIT round trips on every step.
                let _write = self.db.lock_write().await;
                let mut tx = self.db.pool.acquire().await.map_err(map_err)?;
                // blob ids of the parent, for the channels this checkpoint did not change
                let parent_blobs = match (cached_ref, parent_id) {
                    (Some(b), _) => b.clone(),
                    (None, Some(pid)) => {
                        let head: Option<String> = sqlx::query_scalar(
                            "SELECT checkpoint FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                        )
                        .bind(thread_id)
                        .bind(checkpoint_ns)
                        .bind(pid)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        match head {
                            Some(h) => serde_json::from_str::<Head>(&h).map_err(|e| StoreError::Backend(e.to_string()))?.blobs,
                            None => BTreeMap::new(),
                        }
                    }
                    (None, None) => BTreeMap::new(),
                };
                let mut blobs: BTreeMap<String, i64> = BTreeMap::new();
                for (channel, version) in &checkpoint.channel_versions {
                    if new_versions.contains_key(channel) {
                        continue;
                    }
                    if let Some(id) = parent_blobs.get(channel) {
                        blobs.insert(channel.clone(), *id);
                    } else {
                        // no parent head to inherit from: the latest blob of that version
                        let id: Option<i64> = sqlx::query_scalar(
                            "SELECT blob_id FROM checkpoint_blobs WHERE thread_id = ? AND checkpoint_ns = ? AND channel = ? \
                             AND version = ? ORDER BY rowid DESC LIMIT 1",
                        )
                        .bind(thread_id)
                        .bind(checkpoint_ns)
                        .bind(channel)
                        .bind(version_i64(*version))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        if let Some(id) = id {
                            blobs.insert(channel.clone(), id);
                        }
                    }
                }
                let mut depths: Vec<i64> = Vec::with_capacity(plans_ref.len());
                for plan in plans_ref {
                    let mut depth = 0;
                    let mut written = false;
                    if let Payload::Delta { base_id, depth: d, suffix } = &plan.payload {
                        // a delta only if its base still exists (it may have been rolled back)
                        let done = sqlx::query(
                            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) \
                             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE EXISTS (SELECT 1 FROM checkpoint_blobs \
                             WHERE thread_id = ?1 AND checkpoint_ns = ?2 AND blob_id = ?6) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(thread_id)
                        .bind(checkpoint_ns)
                        .bind(plan.blob_id)
                        .bind(&plan.channel)
                        .bind(version_i64(plan.version))
                        .bind(base_id)
                        .bind(d)
                        .bind(suffix)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        if done.rows_affected() > 0 {
                            depth = *d;
                            written = true;
                        }
                    }
                    if !written {
                        let full = match (&plan.payload, &plan.list) {
                            (Payload::Full(v), _) => v.clone(),
                            (Payload::Delta { .. }, Some(list)) => Some(channel_json(list).map_err(to_backend)?),
                            (Payload::Delta { .. }, None) => None,
                        };
                        sqlx::query(
                            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) \
                             VALUES (?, ?, ?, ?, ?, NULL, 0, ?) ON CONFLICT DO NOTHING",
                        )
                        .bind(thread_id)
                        .bind(checkpoint_ns)
                        .bind(plan.blob_id)
                        .bind(&plan.channel)
                        .bind(version_i64(plan.version))
                        .bind(full)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                    }
                    blobs.insert(plan.channel.clone(), plan.blob_id);
                    depths.push(depth);
                }
                let head = serde_json::to_string(&HeadRef {
                    id: &checkpoint.id,
                    ts: &checkpoint.ts,
                    channel_versions: &checkpoint.channel_versions,
                    versions_seen: &checkpoint.versions_seen,
                    updated_channels: &checkpoint.updated_channels,
                    blobs: &blobs,
                })
                .map_err(|e| StoreError::Backend(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET \
                     parent_checkpoint_id = excluded.parent_checkpoint_id, run_id = excluded.run_id, \
                     checkpoint = excluded.checkpoint, metadata = excluded.metadata",
                )
                .bind(thread_id)
                .bind(checkpoint_ns)
                .bind(&checkpoint.id)
                .bind(parent_id)
                .bind(run_id_of(metadata))
                .bind(&head)
                .bind(meta_ref)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                Ok((blobs, depths))
            })
            .await
            .map_err(storage)?;

        let mut cache = self.cache.lock();
        for (plan, depth) in plans.into_iter().zip(depths) {
            if let Some(items) = plan.list {
                cache.lists.insert(
                    (
                        thread_id.to_string(),
                        checkpoint_ns.to_string(),
                        plan.channel,
                    ),
                    ListEntry {
                        blob_id: plan.blob_id,
                        depth,
                        items,
                    },
                );
            }
        }
        cache.heads.insert(head_key, (checkpoint.id.clone(), blobs));
        Ok(())
    }
}

/// Builds the full tuple of a `checkpoints` row: values rebuilt from its blobs (following
/// delta chains), plus its pending writes.
async fn load_tuple(
    conn: &mut SqliteConnection,
    row: &SqliteRow,
) -> Result<CheckpointTuple, CheckpointError> {
    let get = |name: &str| -> Result<String, CheckpointError> {
        row.try_get::<String, _>(name)
            .map_err(|e| CheckpointError::Storage(e.to_string()))
    };
    let thread_id = get("thread_id")?;
    let checkpoint_ns = get("checkpoint_ns")?;
    let parent: Option<String> = row
        .try_get("parent_checkpoint_id")
        .map_err(|e| CheckpointError::Storage(e.to_string()))?;
    let head: Head = serde_json::from_str(&get("checkpoint")?).map_err(serde_err)?;
    let metadata: Map<String, Value> =
        serde_json::from_str(&get("metadata")?).map_err(serde_err)?;

    let mut found: BTreeMap<String, Option<Value>> = BTreeMap::new();
    if !head.blobs.is_empty() {
        let blob_map = serde_json::to_string(&head.blobs).map_err(serde_err)?;
        let rows = sqlx::query(
            "WITH RECURSIVE chain(channel, base_id, value, lvl) AS ( \
               SELECT j.key, b.base_id, b.value, 0 FROM json_each(?1) AS j \
               JOIN checkpoint_blobs AS b ON b.thread_id = ?2 AND b.checkpoint_ns = ?3 AND b.blob_id = j.value \
               UNION ALL \
               SELECT chain.channel, b.base_id, b.value, chain.lvl + 1 FROM chain \
               JOIN checkpoint_blobs AS b ON b.thread_id = ?2 AND b.checkpoint_ns = ?3 AND b.blob_id = chain.base_id \
               WHERE chain.lvl < 10000 \
             ) SELECT channel, base_id, value FROM chain ORDER BY channel, lvl DESC",
        )
        .bind(&blob_map)
        .bind(&thread_id)
        .bind(&checkpoint_ns)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql)?;
        for r in &rows {
            let channel: String = r
                .try_get("channel")
                .map_err(|e| CheckpointError::Storage(e.to_string()))?;
            let base_id: Option<i64> = r
                .try_get("base_id")
                .map_err(|e| CheckpointError::Storage(e.to_string()))?;
            let value: Option<String> = r
                .try_get("value")
                .map_err(|e| CheckpointError::Storage(e.to_string()))?;
            let value = value
                .map(|v| serde_json::from_str::<Value>(&v))
                .transpose()
                .map_err(serde_err)?;
            match base_id {
                None => {
                    found.insert(channel, value);
                }
                Some(_) => match (found.get_mut(&channel), value) {
                    (Some(Some(Value::Array(list))), Some(Value::Array(more))) => list.extend(more),
                    _ => {
                        return Err(CheckpointError::Storage(format!(
                            "broken delta chain for channel '{channel}' of checkpoint {}",
                            head.id
                        )));
                    }
                },
            }
        }
    }
    let mut channel_values = Map::new();
    for channel in head.channel_versions.keys() {
        if let Some(Some(v)) = found.remove(channel) {
            channel_values.insert(channel.clone(), v);
        }
    }

    let write_rows = sqlx::query(
        "SELECT task_id, channel, value FROM checkpoint_writes \
         WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? ORDER BY rowid",
    )
    .bind(&thread_id)
    .bind(&checkpoint_ns)
    .bind(&head.id)
    .fetch_all(&mut *conn)
    .await
    .map_err(sql)?;
    let mut pending_writes = Vec::with_capacity(write_rows.len());
    for r in &write_rows {
        let task_id: String = r
            .try_get("task_id")
            .map_err(|e| CheckpointError::Storage(e.to_string()))?;
        let channel: String = r
            .try_get("channel")
            .map_err(|e| CheckpointError::Storage(e.to_string()))?;
        let value: String = r
            .try_get("value")
            .map_err(|e| CheckpointError::Storage(e.to_string()))?;
        pending_writes.push(PendingWrite {
            task_id,
            channel,
            value: serde_json::from_str(&value).map_err(serde_err)?,
        });
    }

    Ok(CheckpointTuple {
        thread_id,
        checkpoint_ns,
        checkpoint: Checkpoint {
            id: head.id,
            ts: head.ts,
            channel_values,
            channel_versions: head.channel_versions,
            versions_seen: head.versions_seen,
            updated_channels: head.updated_channels,
        },
        metadata,
        parent_checkpoint_id: parent,
        pending_writes,
    })
}

fn is_transient(e: &CheckpointError) -> bool {
    matches!(e, CheckpointError::Storage(msg) if msg.starts_with("storage temporarily unavailable"))
}

#[async_trait::async_trait]
impl Checkpointer for SqliteCheckpointer {
    async fn get_tuple(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result: Result<Option<CheckpointTuple>, CheckpointError> = async {
                // one read transaction: the head and its blobs come from the same snapshot
                let mut tx = self.db.pool.begin().await.map_err(sql)?;
                let row = match checkpoint_id {
                    Some(id) => {
                        sqlx::query(
                            "SELECT * FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                        )
                        .bind(thread_id)
                        .bind(checkpoint_ns)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                    }
                    None => {
                        sqlx::query(
                            "SELECT * FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? \
                             ORDER BY checkpoint_id DESC LIMIT 1",
                        )
                        .bind(thread_id)
                        .bind(checkpoint_ns)
                        .fetch_optional(&mut *tx)
                        .await
                    }
                }
                .map_err(sql)?;
                let out = match row {
                    Some(row) => Some(load_tuple(&mut tx, &row).await?),
                    None => None,
                };
                tx.commit().await.map_err(sql)?;
                Ok(out)
            }
            .await;
            match result {
                Err(e) if attempt < 5 && is_transient(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn list(
        &self,
        thread_id: &str,
        checkpoint_ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Vec<CheckpointTuple>, CheckpointError> {
        let mut tx = self.db.pool.begin().await.map_err(sql)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM checkpoints WHERE thread_id = ");
        qb.push_bind(thread_id.to_string());
        if let Some(ns) = checkpoint_ns {
            qb.push(" AND checkpoint_ns = ");
            qb.push_bind(ns.to_string());
        }
        if let Some(before) = &opts.before {
            qb.push(" AND checkpoint_id < ");
            qb.push_bind(before.clone());
        }
        push_json_filter(&mut qb, "checkpoints.metadata", &opts.filter).map_err(storage)?;
        qb.push(" ORDER BY checkpoint_id DESC, checkpoint_ns DESC");
        if let Some(limit) = opts.limit {
            qb.push(" LIMIT ");
            qb.push_bind(lim(limit));
        }
        let rows = qb.build().fetch_all(&mut *tx).await.map_err(sql)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(load_tuple(&mut tx, row).await?);
        }
        tx.commit().await.map_err(sql)?;
        Ok(out)
    }

    async fn put(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        metadata: &Map<String, Value>,
        new_versions: &BTreeMap<String, ChannelVersion>,
    ) -> Result<(), CheckpointError> {
        self.put_inner(
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            Values::Plain(&checkpoint.channel_values),
            metadata,
            new_versions,
        )
        .await
    }

    async fn put_shared(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        values: &BTreeMap<String, ChannelValue>,
        metadata: &Map<String, Value>,
        new_versions: &BTreeMap<String, ChannelVersion>,
    ) -> Result<(), CheckpointError> {
        self.put_inner(
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            Values::Shared(values),
            metadata,
            new_versions,
        )
        .await
    }

    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: &str,
        task_id: &str,
        writes: &[(String, Value)],
    ) -> Result<(), CheckpointError> {
        if writes.is_empty() {
            return Ok(());
        }
        let encoded = writes
            .iter()
            .map(|(c, v)| serde_json::to_string(v).map(|s| (c.as_str(), s)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(serde_err)?;
        let encoded = &encoded;
        // one multi-row upsert: atomic on its own, no transaction needed
        self.db
            .retry(|| async move {
                let _write = self.db.lock_write().await;
                let mut qb = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value) ",
                );
                qb.push_values(encoded.iter().enumerate(), |mut row, (idx, (channel, value))| {
                    row.push_bind(thread_id.to_string())
                        .push_bind(checkpoint_ns.to_string())
                        .push_bind(checkpoint_id.to_string())
                        .push_bind(task_id.to_string())
                        .push_bind(lim(idx))
                        .push_bind(channel.to_string())
                        .push_bind(value.clone());
                });
                qb.push(
                    " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) \
                     DO UPDATE SET channel = excluded.channel, value = excluded.value",
                );
                qb.build().execute(&self.db.pool).await.map_err(map_err)?;
                Ok(())
            })
            .await
            .map_err(storage)
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError> {
        self.cache.lock().forget_thread(thread_id);
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                for sql in [
                    "DELETE FROM checkpoints WHERE thread_id = ?",
                    "DELETE FROM checkpoint_blobs WHERE thread_id = ?",
                    "DELETE FROM checkpoint_writes WHERE thread_id = ?",
                ] {
                    sqlx::query(sql)
                        .bind(thread_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            })
            .await
            .map_err(storage)
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError> {
        if from == to {
            return Ok(());
        }
        self.cache.lock().forget_thread(to);
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                for sql in [
                    "DELETE FROM checkpoints WHERE thread_id = ?",
                    "DELETE FROM checkpoint_blobs WHERE thread_id = ?",
                    "DELETE FROM checkpoint_writes WHERE thread_id = ?",
                ] {
                    sqlx::query(sql).bind(to).execute(&mut *tx).await.map_err(map_err)?;
                }
                sqlx::query(
                    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata) \
                     SELECT ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata \
                     FROM checkpoints WHERE thread_id = ?",
                )
                .bind(to)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) \
                     SELECT ?, checkpoint_ns, blob_id, channel, version, base_id, depth, value \
                     FROM checkpoint_blobs WHERE thread_id = ?",
                )
                .bind(to)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value) \
                     SELECT ?, checkpoint_ns, checkpoint_id, task_id, idx, channel, value FROM checkpoint_writes \
                     WHERE thread_id = ? ORDER BY rowid",
                )
                .bind(to)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            })
            .await
            .map_err(storage)
    }

    async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError> {
        self.cache.lock().forget_thread(thread_id);
        self.db
            .retry(|| async {
                let mut tx = self.db.begin().await?;
                let doomed = sqlx::query(
                    "SELECT checkpoint_ns, checkpoint_id, checkpoint FROM checkpoints WHERE thread_id = ? AND run_id = ?",
                )
                .bind(thread_id)
                .bind(run_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                if doomed.is_empty() {
                    return Ok(());
                }
                // blobs only the deleted checkpoints may reference
                let mut candidates: HashSet<(String, i64)> = HashSet::new();
                for row in &doomed {
                    let ns = get_str(row, "checkpoint_ns")?;
                    let id = get_str(row, "checkpoint_id")?;
                    let head: Head = serde_json::from_str(&get_str(row, "checkpoint")?)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    candidates.extend(head.blobs.into_values().map(|b| (ns.clone(), b)));
                    sqlx::query(
                        "DELETE FROM checkpoint_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
                    )
                    .bind(thread_id)
                    .bind(&ns)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                }
                sqlx::query("DELETE FROM checkpoints WHERE thread_id = ? AND run_id = ?")
                    .bind(thread_id)
                    .bind(run_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                // keep every blob a remaining checkpoint reads, directly or as a delta base
                let mut live: Vec<(String, i64)> = Vec::new();
                let remaining = sqlx::query("SELECT checkpoint_ns, checkpoint FROM checkpoints WHERE thread_id = ?")
                    .bind(thread_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_err)?;
                for row in &remaining {
                    let ns = get_str(row, "checkpoint_ns")?;
                    let head: Head = serde_json::from_str(&get_str(row, "checkpoint")?)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    live.extend(head.blobs.into_values().map(|b| (ns.clone(), b)));
                }
                let links = sqlx::query("SELECT checkpoint_ns, blob_id, base_id FROM checkpoint_blobs WHERE thread_id = ? AND base_id IS NOT NULL")
                    .bind(thread_id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(map_err)?;
                let mut base_of: HashMap<(String, i64), i64> = HashMap::new();
                for row in &links {
                    let ns = get_str(row, "checkpoint_ns")?;
                    let id = get_i64(row, "blob_id")?;
                    let base = get_i64(row, "base_id")?;
                    base_of.insert((ns, id), base);
                }
                let mut seen: HashSet<(String, i64)> = HashSet::new();
                while let Some(key) = live.pop() {
                    if !seen.insert(key.clone()) {
                        continue;
                    }
                    candidates.remove(&key);
                    if let Some(base) = base_of.get(&key) {
                        live.push((key.0.clone(), *base));
                    }
                }
                for (ns, blob_id) in &candidates {
                    sqlx::query("DELETE FROM checkpoint_blobs WHERE thread_id = ? AND checkpoint_ns = ? AND blob_id = ?")
                        .bind(thread_id)
                        .bind(ns)
                        .bind(blob_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                }
                tx.commit().await.map_err(map_err)
            })
            .await
            .map_err(storage)
    }
}
