//! The graph checkpointer on every SQL backend, in LangGraph's layout with two refinements.
//!
//! * `checkpoints` — one row per checkpoint: the head (id, ts, channel versions, versions
//!   seen, updated channels, and `blobs`: channel -> blob id; no values), metadata, parent id,
//!   and the run id taken from metadata (for rollback).
//! * `checkpoint_blobs` — immutable channel values, each with its own random id. A checkpoint
//!   writes blobs only for the channels in `new_versions`; unchanged channels point at the
//!   parent's blob ids, so they are never stored again. Because blobs are addressed by id and
//!   not by `(channel, version)`, a fork that reuses a version number cannot overwrite the value
//!   another branch still reads. Values are text (the serializer's output, byte for byte).
//! * List channels (messages) are written as **deltas** when the new list extends the list
//!   this process last wrote for that channel: the blob holds only the appended items and the
//!   id of its base blob. Chains are cut every [`MAX_DELTA_DEPTH`] deltas with a full value,
//!   so a step of a 1,000-message thread writes its new messages, not the whole history, and
//!   a read follows at most that many links (one recursive query).
//! * `checkpoint_writes` — pending writes per (checkpoint, task, index), upserted so
//!   re-delivery is idempotent and insertion order is kept.
//!
//! A put is one transaction of at most four statements whatever the number of channels (the
//! parent's head when not cached, the delta bases' existence on a shared database, every blob
//! in one multi-row insert, the head). Reads run in one snapshot.

mod gc;
mod plan;
mod read;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointError, CheckpointTuple, Checkpointer,
    ListOptions,
};
use antler_store::{StoreError, StoreResult};
use parking_lot::Mutex;
use serde_json::{Map, Value};

pub use plan::MAX_DELTA_DEPTH;
use plan::{Caches, HeadKey, ListEntry, Values};
use write::{PlannedPut, Written};

use crate::sql::{Db, Dialect, WriteClass};

/// [`Checkpointer`] on any SQL backend.
#[derive(Clone)]
pub struct SqlCheckpointer<D: Dialect> {
    pub(crate) db: Db<D>,
    /// Per-process write caches (never held across an await).
    cache: Arc<Mutex<Caches>>,
}

impl<D: Dialect> std::fmt::Debug for SqlCheckpointer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlCheckpointer")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

fn storage(e: StoreError) -> CheckpointError {
    CheckpointError::Storage(e.to_string())
}

impl<D: Dialect> SqlCheckpointer<D> {
    pub(crate) fn with_db(db: Db<D>) -> Self {
        SqlCheckpointer {
            db,
            cache: Arc::new(Mutex::new(Caches::default())),
        }
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
        let plans = plan::plan(
            &self.cache,
            thread_id,
            checkpoint_ns,
            checkpoint,
            &values,
            new_versions,
        )?;
        let head_key: HeadKey = (thread_id.to_string(), checkpoint_ns.to_string());
        let cached_parent = parent_id.and_then(|pid| {
            self.cache
                .lock()
                .heads
                .get(&head_key)
                .filter(|(id, _)| id == pid)
                .map(|(_, blobs)| blobs.clone())
        });
        let put = PlannedPut {
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            metadata,
            new_versions,
            plans: &plans,
            cached_parent: cached_parent.as_ref(),
            trusted_bases: D::EXCLUSIVE,
        };
        let written = self
            .db
            .retry(|| async {
                let mut tx = self.db.begin(WriteClass::Background).await?;
                let written = write::put_in::<D>(&mut tx, &put).await?;
                tx.commit().await?;
                Ok(written)
            })
            .await
            .map_err(storage)?;
        self.remember(thread_id, checkpoint_ns, &checkpoint.id, plans, written);
        Ok(())
    }

    /// Records what a committed put stored, for the next put's deltas and parent lookup.
    fn remember(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: &str,
        plans: Vec<plan::BlobPlan>,
        written: Written,
    ) {
        let mut cache = self.cache.lock();
        for (plan, depth) in plans.into_iter().zip(written.depths) {
            if let Some(items) = plan.list {
                let key = (
                    thread_id.to_string(),
                    checkpoint_ns.to_string(),
                    plan.channel,
                );
                let entry = ListEntry {
                    blob_id: plan.blob_id,
                    depth,
                    items,
                };
                cache.lists.insert(key, entry);
            }
        }
        let head_key = (thread_id.to_string(), checkpoint_ns.to_string());
        cache
            .heads
            .insert(head_key, (checkpoint_id.to_string(), written.blobs));
    }

    /// Runs a whole-thread write transaction after dropping the thread's cached writes.
    async fn thread_write<F, Fut>(&self, thread_id: &str, f: F) -> Result<(), CheckpointError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = StoreResult<()>>,
    {
        self.cache.lock().forget_thread(thread_id);
        self.db.retry(f).await.map_err(storage)
    }
}

#[async_trait::async_trait]
impl<D: Dialect> Checkpointer for SqlCheckpointer<D> {
    async fn get_tuple(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError> {
        let sql = read::head_sql(thread_id, checkpoint_ns, checkpoint_id);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result: Result<Option<CheckpointTuple>, CheckpointError> = async {
                // one read transaction: the head and its blobs come from the same snapshot
                let mut tx = self.db.begin_read().await.map_err(storage)?;
                let out = match D::fetch_optional(&mut tx, &sql).await.map_err(storage)? {
                    Some(row) => Some(read::load_tuple::<D>(&mut tx, &row).await?),
                    None => None,
                };
                tx.commit().await.map_err(storage)?;
                Ok(out)
            }
            .await;
            match result {
                Err(CheckpointError::Storage(msg))
                    if attempt < D::MAX_ATTEMPTS
                        && msg.starts_with("storage temporarily unavailable") =>
                {
                    tokio::time::sleep(crate::sql::backoff(D::BACKOFF_MS, attempt)).await;
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
        let sql =
            read::list_sql(&self.db.dialect, thread_id, checkpoint_ns, opts).map_err(storage)?;
        let mut tx = self.db.begin_read().await.map_err(storage)?;
        let rows = D::fetch_all(&mut tx, &sql).await.map_err(storage)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(read::load_tuple::<D>(&mut tx, row).await?);
        }
        tx.commit().await.map_err(storage)?;
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
        let values = Values::Plain(&checkpoint.channel_values);
        self.put_inner(
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            values,
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
        let encoded = write::encode_writes(writes)?;
        self.db
            .retry(|| async {
                let _write = self.db.lock(WriteClass::Background).await;
                let mut conn = self.db.pool.acquire().await.map_err(D::map_err)?;
                write::writes_in::<D>(
                    &mut conn,
                    thread_id,
                    checkpoint_ns,
                    checkpoint_id,
                    task_id,
                    &encoded,
                )
                .await
            })
            .await
            .map_err(storage)
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError> {
        self.thread_write(thread_id, || async {
            let mut tx = self.db.begin(WriteClass::Background).await?;
            gc::delete_all::<D>(&mut tx, thread_id).await?;
            tx.commit().await
        })
        .await
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError> {
        if from == to {
            return Ok(());
        }
        self.thread_write(to, || async {
            let mut tx = self.db.begin(WriteClass::Background).await?;
            gc::copy_all::<D>(&mut tx, from, to).await?;
            tx.commit().await
        })
        .await
    }

    async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError> {
        self.thread_write(thread_id, || async {
            let mut tx = self.db.begin(WriteClass::Background).await?;
            gc::delete_run_in::<D>(&mut tx, thread_id, run_id).await?;
            tx.commit().await
        })
        .await
    }
}
