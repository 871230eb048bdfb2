//! The graph checkpointer on PostgreSQL: the layout of the SQLite checkpointer
//! (`src/sqlite/checkpointer.rs`), written natively.
//!
//! * `checkpoints` — one row per checkpoint: the head as JSONB (id, ts, channel versions,
//!   versions seen, updated channels, and `blobs`: channel -> blob id; no values), metadata
//!   (JSONB, filtered by `list`), parent id, and the run id taken from metadata (rollback).
//! * `checkpoint_blobs` — immutable channel values, each with its own random id; only the
//!   channels in `new_versions` get new blobs, unchanged ones point at the parent's. List
//!   channels are written as **deltas** (appended items + base blob id) when they extend the
//!   list this process last wrote, with a full value every [`MAX_DELTA_DEPTH`] deltas.
//!   Values are TEXT (the serializer's output, kept byte for byte).
//! * `checkpoint_writes` — pending writes per (checkpoint, task, index), upserted so
//!   re-delivery is idempotent; `seq` keeps insertion order.
//!
//! A put is one transaction with at most five statements whatever the number of channels:
//! all blobs go in one `INSERT ... SELECT FROM UNNEST(...)` whose deltas are written only if
//! their base still exists (a rollback may have removed it); the deltas refused are written
//! as full values by a second statement. Reads run in a REPEATABLE READ snapshot and rebuild
//! every channel with one recursive query.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use antler_graph::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointError, CheckpointTuple, Checkpointer,
    ListOptions, PendingWrite,
};
use antler_store::StoreError;
use parking_lot::Mutex;

use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use super::*;
use crate::checkpoint_common::*;

/// Attempts of a checkpoint operation failing transiently.
const MAX_ATTEMPTS: u32 = 5;

/// PostgreSQL [`Checkpointer`].
#[derive(Clone)]
pub struct PostgresCheckpointer {
    pub(crate) db: Db,
    /// Per-process write caches (never held across an await).
    cache: Arc<Mutex<Caches>>,
}

impl std::fmt::Debug for PostgresCheckpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCheckpointer")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl PostgresCheckpointer {
    /// A checkpointer over an existing pool (migrations must have run: see
    /// [`super::connect_pool`]).
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self::with_db(Db { pool })
    }

    pub(crate) fn with_db(db: Db) -> Self {
        PostgresCheckpointer {
            db,
            cache: Arc::new(Mutex::new(Caches::default())),
        }
    }
}

// ------------------------------------------------------------------------ write caches

// ------------------------------------------------------------------------ stored shapes

fn storage(e: StoreError) -> CheckpointError {
    CheckpointError::Storage(e.to_string())
}

fn sql(e: sqlx::Error) -> CheckpointError {
    storage(map_err(e))
}

fn col(e: sqlx::Error) -> CheckpointError {
    CheckpointError::Storage(format!("bad stored checkpoint row: {e}"))
}

/// True for errors made from a transient [`StoreError`] (see [`storage`]).
fn is_transient(e: &CheckpointError) -> bool {
    let prefix = StoreError::Transient(String::new()).to_string();
    let no_retry = StoreError::Transient(NO_RETRY.to_string()).to_string();
    matches!(e, CheckpointError::Storage(msg) if msg.starts_with(&prefix) && !msg.starts_with(&no_retry))
}

/// One blob to write.
struct BlobPlan {
    channel: String,
    version: ChannelVersion,
    blob_id: i64,
    /// `Some((base_id, depth))` for a delta.
    delta: Option<(i64, i64)>,
    /// The full value, or the appended items of a delta (`None` = empty channel).
    value: Option<String>,
    /// The list value, for the delta cache and for the full-write fallback.
    list: Option<ChannelValue>,
}

/// Retries `f` while it fails transiently.
async fn retry_cp<T, F, Fut>(mut f: F) -> Result<T, CheckpointError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CheckpointError>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match f().await {
            Err(e) if attempt < MAX_ATTEMPTS && is_transient(&e) => {
                tracing::debug!(attempt, error = %e, "checkpoint storage busy, retrying");
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
            }
            other => return other,
        }
    }
}

impl PostgresCheckpointer {
    fn plan(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint: &Checkpoint,
        values: &Values<'_>,
        new_versions: &BTreeMap<String, ChannelVersion>,
    ) -> Result<Vec<BlobPlan>, CheckpointError> {
        let mut plans = Vec::with_capacity(new_versions.len());
        for (channel, nv) in new_versions {
            let version = checkpoint
                .channel_versions
                .get(channel)
                .copied()
                .unwrap_or(*nv);
            let mut plan = BlobPlan {
                channel: channel.clone(),
                version,
                blob_id: new_blob_id(),
                delta: None,
                value: None,
                list: None,
            };
            match values {
                Values::Plain(m) => {
                    plan.value = m
                        .get(channel)
                        .map(|v| serde_json::to_string(v).map_err(serde_err))
                        .transpose()?;
                }
                Values::Shared(m) => match m.get(channel) {
                    Some(cv @ ChannelValue::List(items)) => {
                        let key = (
                            thread_id.to_string(),
                            checkpoint_ns.to_string(),
                            channel.clone(),
                        );
                        let base = self.cache.lock().lists.get(&key).cloned();
                        let delta = base.and_then(|b| {
                            if b.depth >= MAX_DELTA_DEPTH {
                                return None;
                            }
                            extends(&b.items, cv).map(|shared| (b, shared))
                        });
                        match delta {
                            Some((b, shared)) => {
                                plan.delta = Some((b.blob_id, b.depth + 1));
                                plan.value = Some(items_json(items.iter().skip(shared))?);
                            }
                            None => plan.value = Some(channel_json(cv)?),
                        }
                        plan.list = Some(cv.clone());
                    }
                    Some(cv) => plan.value = Some(channel_json(cv)?),
                    None => {}
                },
            }
            plans.push(plan);
        }
        Ok(plans)
    }

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
        let plans = self.plan(thread_id, checkpoint_ns, checkpoint, &values, new_versions)?;
        let meta = Value::Object(metadata.clone());
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
        let (blobs, depths) = retry_cp(|| async move {
            let mut tx = self.db.begin().await.map_err(storage)?;
            let written = write_checkpoint(
                &mut tx,
                thread_id,
                checkpoint_ns,
                parent_id,
                checkpoint,
                plans_ref,
                meta_ref,
                run_id_of(metadata),
                cached_ref.as_ref(),
                new_versions,
            )
            .await?;
            tx.commit().await.map_err(sql)?;
            Ok(written)
        })
        .await?;

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

/// Writes the blobs and the checkpoint row inside `conn`'s transaction; returns the head's
/// channel -> blob id map and the depth each plan was written at (0 = full value).
#[allow(clippy::too_many_arguments)]
async fn write_checkpoint(
    conn: &mut PgConnection,
    thread_id: &str,
    checkpoint_ns: &str,
    parent_id: Option<&str>,
    checkpoint: &Checkpoint,
    plans: &[BlobPlan],
    metadata: &Value,
    run_id: Option<&str>,
    cached_parent: Option<&BTreeMap<String, i64>>,
    new_versions: &BTreeMap<String, ChannelVersion>,
) -> Result<(BTreeMap<String, i64>, Vec<i64>), CheckpointError> {
    // blob ids of the parent, for the channels this checkpoint did not change
    let parent_blobs = match (cached_parent, parent_id) {
        (Some(b), _) => b.clone(),
        (None, Some(pid)) => {
            let head: Option<Value> = sqlx::query_scalar(
                "SELECT checkpoint FROM checkpoints WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = $3",
            )
            .bind(thread_id)
            .bind(checkpoint_ns)
            .bind(pid)
            .fetch_optional(&mut *conn)
            .await
            .map_err(sql)?;
            match head {
                Some(h) => serde_json::from_value::<Head>(h).map_err(serde_err)?.blobs,
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
                "SELECT blob_id FROM checkpoint_blobs WHERE thread_id = $1 AND checkpoint_ns = $2 AND channel = $3 \
                 AND version = $4 ORDER BY seq DESC LIMIT 1",
            )
            .bind(thread_id)
            .bind(checkpoint_ns)
            .bind(channel)
            .bind(version_i64(*version))
            .fetch_optional(&mut *conn)
            .await
            .map_err(sql)?;
            if let Some(id) = id {
                blobs.insert(channel.clone(), id);
            }
        }
    }

    // every blob in one statement; a delta only if its base still exists
    let mut written: HashSet<i64> = HashSet::new();
    if !plans.is_empty() {
        let ids: Vec<i64> = plans.iter().map(|p| p.blob_id).collect();
        let channels: Vec<String> = plans.iter().map(|p| p.channel.clone()).collect();
        let versions: Vec<i64> = plans.iter().map(|p| version_i64(p.version)).collect();
        let bases: Vec<Option<i64>> = plans.iter().map(|p| p.delta.map(|d| d.0)).collect();
        let depths: Vec<i64> = plans.iter().map(|p| p.delta.map_or(0, |d| d.1)).collect();
        let values: Vec<Option<String>> = plans.iter().map(|p| p.value.clone()).collect();
        let rows: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) \
             SELECT $1, $2, p.blob_id, p.channel, p.version, p.base_id, p.depth, p.value \
             FROM UNNEST($3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::BIGINT[], $8::TEXT[]) \
               AS p(blob_id, channel, version, base_id, depth, value) \
             WHERE p.base_id IS NULL OR EXISTS (SELECT 1 FROM checkpoint_blobs AS b \
               WHERE b.thread_id = $1 AND b.checkpoint_ns = $2 AND b.blob_id = p.base_id) \
             ON CONFLICT DO NOTHING RETURNING blob_id",
        )
        .bind(thread_id)
        .bind(checkpoint_ns)
        .bind(ids)
        .bind(channels)
        .bind(versions)
        .bind(bases)
        .bind(depths)
        .bind(values)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql)?;
        written.extend(rows);
    }
    // deltas whose base is gone: their full value
    let mut fallback: Vec<(&BlobPlan, Option<String>)> = Vec::new();
    for plan in plans {
        if plan.delta.is_some() && !written.contains(&plan.blob_id) {
            let full = plan.list.as_ref().map(channel_json).transpose()?;
            fallback.push((plan, full));
        }
    }
    if !fallback.is_empty() {
        let ids: Vec<i64> = fallback.iter().map(|(p, _)| p.blob_id).collect();
        let channels: Vec<String> = fallback.iter().map(|(p, _)| p.channel.clone()).collect();
        let versions: Vec<i64> = fallback
            .iter()
            .map(|(p, _)| version_i64(p.version))
            .collect();
        let values: Vec<Option<String>> = fallback.iter().map(|(_, v)| v.clone()).collect();
        sqlx::query(
            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) \
             SELECT $1, $2, p.blob_id, p.channel, p.version, NULL, 0, p.value \
             FROM UNNEST($3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::TEXT[]) AS p(blob_id, channel, version, value) \
             ON CONFLICT DO NOTHING",
        )
        .bind(thread_id)
        .bind(checkpoint_ns)
        .bind(ids)
        .bind(channels)
        .bind(versions)
        .bind(values)
        .execute(&mut *conn)
        .await
        .map_err(sql)?;
    }
    let mut depths = Vec::with_capacity(plans.len());
    for plan in plans {
        let depth = match plan.delta {
            Some((_, d)) if written.contains(&plan.blob_id) => d,
            _ => 0,
        };
        blobs.insert(plan.channel.clone(), plan.blob_id);
        depths.push(depth);
    }

    let head = serde_json::to_value(HeadRef {
        id: &checkpoint.id,
        ts: &checkpoint.ts,
        channel_versions: &checkpoint.channel_versions,
        versions_seen: &checkpoint.versions_seen,
        updated_channels: &checkpoint.updated_channels,
        blobs: &blobs,
    })
    .map_err(serde_err)?;
    sqlx::query(
        "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET \
         parent_checkpoint_id = EXCLUDED.parent_checkpoint_id, run_id = EXCLUDED.run_id, \
         checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata",
    )
    .bind(thread_id)
    .bind(checkpoint_ns)
    .bind(&checkpoint.id)
    .bind(parent_id)
    .bind(run_id)
    .bind(&head)
    .bind(metadata)
    .execute(&mut *conn)
    .await
    .map_err(sql)?;
    Ok((blobs, depths))
}

/// Builds the full tuple of a `checkpoints` row: values rebuilt from its blobs (following
/// delta chains), plus its pending writes.
async fn load_tuple(
    conn: &mut PgConnection,
    row: &PgRow,
) -> Result<CheckpointTuple, CheckpointError> {
    let thread_id: String = row.try_get("thread_id").map_err(col)?;
    let checkpoint_ns: String = row.try_get("checkpoint_ns").map_err(col)?;
    let parent: Option<String> = row.try_get("parent_checkpoint_id").map_err(col)?;
    let head: Value = row.try_get("checkpoint").map_err(col)?;
    let head: Head = serde_json::from_value(head).map_err(serde_err)?;
    let metadata = match row.try_get::<Value, _>("metadata").map_err(col)? {
        Value::Object(m) => m,
        other => {
            return Err(CheckpointError::Serde(format!(
                "checkpoint metadata is not an object: {other}"
            )));
        }
    };

    let mut found: BTreeMap<String, Option<Value>> = BTreeMap::new();
    if !head.blobs.is_empty() {
        let channels: Vec<String> = head.blobs.keys().cloned().collect();
        let ids: Vec<i64> = head.blobs.values().copied().collect();
        let rows = sqlx::query(
            "WITH RECURSIVE chain(channel, base_id, value, lvl) AS ( \
               SELECT j.channel, b.base_id, b.value, 0 \
               FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS j(channel, blob_id) \
               JOIN checkpoint_blobs AS b ON b.thread_id = $3 AND b.checkpoint_ns = $4 AND b.blob_id = j.blob_id \
               UNION ALL \
               SELECT chain.channel, b.base_id, b.value, chain.lvl + 1 FROM chain \
               JOIN checkpoint_blobs AS b ON b.thread_id = $3 AND b.checkpoint_ns = $4 AND b.blob_id = chain.base_id \
               WHERE chain.lvl < 10000 \
             ) SELECT channel, base_id, value FROM chain ORDER BY channel, lvl DESC",
        )
        .bind(channels)
        .bind(ids)
        .bind(&thread_id)
        .bind(&checkpoint_ns)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql)?;
        for r in &rows {
            let channel: String = r.try_get("channel").map_err(col)?;
            let base_id: Option<i64> = r.try_get("base_id").map_err(col)?;
            let value: Option<String> = r.try_get("value").map_err(col)?;
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
         WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = $3 ORDER BY seq",
    )
    .bind(&thread_id)
    .bind(&checkpoint_ns)
    .bind(&head.id)
    .fetch_all(&mut *conn)
    .await
    .map_err(sql)?;
    let mut pending_writes = Vec::with_capacity(write_rows.len());
    for r in &write_rows {
        let task_id: String = r.try_get("task_id").map_err(col)?;
        let channel: String = r.try_get("channel").map_err(col)?;
        let value: String = r.try_get("value").map_err(col)?;
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

/// A read snapshot: the heads and the blobs they name come from the same moment.
const READ_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// Deletes every checkpoint row of `thread_id` (all three tables).
async fn delete_all(conn: &mut PgConnection, thread_id: &str) -> Result<(), StoreError> {
    for stmt in [
        "DELETE FROM checkpoints WHERE thread_id = $1",
        "DELETE FROM checkpoint_blobs WHERE thread_id = $1",
        "DELETE FROM checkpoint_writes WHERE thread_id = $1",
    ] {
        sqlx::query(stmt)
            .bind(thread_id)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

fn head_blobs(row: &PgRow) -> Result<(String, Vec<i64>), StoreError> {
    let ns = get_str(row, "checkpoint_ns")?;
    let head: Head = serde_json::from_value(get_json(row, "checkpoint")?)
        .map_err(|e| StoreError::Backend(format!("bad checkpoint head: {e}")))?;
    Ok((ns, head.blobs.into_values().collect()))
}

#[async_trait::async_trait]
impl Checkpointer for PostgresCheckpointer {
    async fn get_tuple(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError> {
        retry_cp(|| async {
            let mut tx = self.db.pool.begin_with(READ_SNAPSHOT).await.map_err(sql)?;
            let row = match checkpoint_id {
                Some(id) => {
                    sqlx::query(
                        "SELECT * FROM checkpoints WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = $3",
                    )
                    .bind(thread_id)
                    .bind(checkpoint_ns)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                }
                None => {
                    sqlx::query(
                        "SELECT * FROM checkpoints WHERE thread_id = $1 AND checkpoint_ns = $2 \
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
        })
        .await
    }

    async fn list(
        &self,
        thread_id: &str,
        checkpoint_ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Vec<CheckpointTuple>, CheckpointError> {
        retry_cp(|| async {
            let mut tx = self.db.pool.begin_with(READ_SNAPSHOT).await.map_err(sql)?;
            let mut qb =
                QueryBuilder::<Postgres>::new("SELECT * FROM checkpoints WHERE thread_id = ");
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
        })
        .await
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
        let mut idxs: Vec<i64> = Vec::with_capacity(writes.len());
        let mut channels: Vec<String> = Vec::with_capacity(writes.len());
        let mut values: Vec<String> = Vec::with_capacity(writes.len());
        for (i, (c, v)) in writes.iter().enumerate() {
            idxs.push(lim(i));
            channels.push(c.clone());
            values.push(serde_json::to_string(v).map_err(serde_err)?);
        }
        let (idxs, channels, values) = (&idxs, &channels, &values);
        // one multi-row upsert: atomic on its own; WITH ORDINALITY keeps the given order for
        // the `seq` of new rows, an upsert keeps the `seq` of the row it replaces
        self.db
            .retry(|| async move {
                sqlx::query(
                    "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value) \
                     SELECT $1, $2, $3, $4, w.idx, w.channel, w.value \
                     FROM UNNEST($5::BIGINT[], $6::TEXT[], $7::TEXT[]) WITH ORDINALITY AS w(idx, channel, value, ord) \
                     ORDER BY w.ord \
                     ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) \
                     DO UPDATE SET channel = EXCLUDED.channel, value = EXCLUDED.value",
                )
                .bind(thread_id)
                .bind(checkpoint_ns)
                .bind(checkpoint_id)
                .bind(task_id)
                .bind(idxs)
                .bind(channels)
                .bind(values)
                .execute(&self.db.pool)
                .await
                .map_err(map_err)?;
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
                delete_all(&mut tx, thread_id).await?;
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
                delete_all(&mut tx, to).await?;
                sqlx::query(
                    "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata) \
                     SELECT $1, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata \
                     FROM checkpoints WHERE thread_id = $2",
                )
                .bind(to)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) \
                     SELECT $1, checkpoint_ns, blob_id, channel, version, base_id, depth, value \
                     FROM checkpoint_blobs WHERE thread_id = $2 ORDER BY seq",
                )
                .bind(to)
                .bind(from)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value) \
                     SELECT $1, checkpoint_ns, checkpoint_id, task_id, idx, channel, value FROM checkpoint_writes \
                     WHERE thread_id = $2 ORDER BY seq",
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
                // the doomed checkpoints, row-locked, and their pending writes
                let doomed = sqlx::query(
                    "DELETE FROM checkpoints WHERE thread_id = $1 AND run_id = $2 \
                     RETURNING checkpoint_ns, checkpoint_id, checkpoint",
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
                let mut doomed_ns: Vec<String> = Vec::with_capacity(doomed.len());
                let mut doomed_ids: Vec<String> = Vec::with_capacity(doomed.len());
                for row in &doomed {
                    let (ns, ids) = head_blobs(row)?;
                    candidates.extend(ids.into_iter().map(|b| (ns.clone(), b)));
                    doomed_ids.push(get_str(row, "checkpoint_id")?);
                    doomed_ns.push(ns);
                }
                sqlx::query(
                    "DELETE FROM checkpoint_writes AS w USING UNNEST($2::TEXT[], $3::TEXT[]) AS d(ns, id) \
                     WHERE w.thread_id = $1 AND w.checkpoint_ns = d.ns AND w.checkpoint_id = d.id",
                )
                .bind(thread_id)
                .bind(&doomed_ns)
                .bind(&doomed_ids)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                // keep every blob a remaining checkpoint reads, directly or as a delta base
                let mut live: Vec<(String, i64)> = Vec::new();
                let remaining = sqlx::query(
                    "SELECT checkpoint_ns, checkpoint FROM checkpoints WHERE thread_id = $1",
                )
                .bind(thread_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(map_err)?;
                for row in &remaining {
                    let (ns, ids) = head_blobs(row)?;
                    live.extend(ids.into_iter().map(|b| (ns.clone(), b)));
                }
                let links = sqlx::query(
                    "SELECT checkpoint_ns, blob_id, base_id FROM checkpoint_blobs \
                     WHERE thread_id = $1 AND base_id IS NOT NULL",
                )
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
                if !candidates.is_empty() {
                    let (gc_ns, gc_ids): (Vec<String>, Vec<i64>) = candidates.into_iter().unzip();
                    sqlx::query(
                        "DELETE FROM checkpoint_blobs AS b USING UNNEST($2::TEXT[], $3::BIGINT[]) AS d(ns, id) \
                         WHERE b.thread_id = $1 AND b.checkpoint_ns = d.ns AND b.blob_id = d.id",
                    )
                    .bind(thread_id)
                    .bind(&gc_ns)
                    .bind(&gc_ids)
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
