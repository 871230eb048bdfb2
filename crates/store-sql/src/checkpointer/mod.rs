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
pub(crate) use gc::copy_all;
mod latest;
mod plan;
mod read;
mod write;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use antler_graph::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointError, CheckpointTuple, Checkpointer,
    ListOptions, PendingWrite,
};
use antler_store::{StoreError, StoreResult};
use parking_lot::Mutex;
use serde_json::{Map, Value};

pub use plan::MAX_DELTA_DEPTH;
pub(crate) use plan::Values;
use plan::{Caches, HeadKey, ListEntry};
pub(crate) use read::{Version, version_in};
use write::PlannedPut;
pub(crate) use write::{
    BlobRow, HeadRow, WriteRow, Written, encode_writes, insert_blobs, upsert_heads, upsert_writes,
    write_rows,
};

/// One checkpoint to store (the arguments of a put).
pub(crate) struct Put<'a> {
    pub thread_id: &'a str,
    pub checkpoint_ns: &'a str,
    pub parent_id: Option<&'a str>,
    pub checkpoint: &'a Checkpoint,
    pub values: Values<'a>,
    pub metadata: &'a Map<String, Value>,
    pub new_versions: &'a BTreeMap<String, ChannelVersion>,
}

impl<'a> Put<'a> {
    /// A put of the checkpoint's own channel values.
    fn plain(
        thread_id: &'a str,
        checkpoint_ns: &'a str,
        parent_id: Option<&'a str>,
        checkpoint: &'a Checkpoint,
        metadata: &'a Map<String, Value>,
        new_versions: &'a BTreeMap<String, ChannelVersion>,
    ) -> Self {
        Put {
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            values: Values::Plain(&checkpoint.channel_values),
            metadata,
            new_versions,
        }
    }
}

use crate::sql::{Db, Dialect, WriteClass, transaction};

/// [`Checkpointer`] on any SQL backend.
#[derive(Clone)]
pub struct SqlCheckpointer<D: Dialect> {
    pub(crate) db: Db<D>,
    /// Per-process write caches (never held across an await).
    cache: Arc<Mutex<Caches>>,
    /// Each thread's latest checkpoint as last committed (see [`latest`]).
    latest: Arc<Mutex<latest::Latest>>,
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
            latest: Arc::new(Mutex::new(latest::Latest::default())),
        }
    }

    async fn put_inner(&self, put: Put<'_>) -> Result<(), CheckpointError> {
        let (plans, written) = transaction!(self.db, WriteClass::Background, |tx| {
            // planned under the write lock: no other write of this process can change
            // the delta bases between the plan and the insert
            self.put_in(tx, &put).await
        })
        .await
        .map_err(storage)?;
        self.committed(&put, plans, written);
        Ok(())
    }

    /// Plans and writes one checkpoint inside `conn`'s transaction.
    pub(crate) async fn put_in(
        &self,
        conn: &mut crate::sql::Conn<D>,
        put: &Put<'_>,
    ) -> StoreResult<(Vec<plan::BlobPlan>, Written)> {
        let (rows, plans, written) = self.prepare(conn, put, &[]).await?;
        write::insert_blobs::<D>(conn, &rows.blobs).await?;
        write::upsert_heads::<D>(conn, std::slice::from_ref(&rows.head)).await?;
        Ok((plans, written))
    }

    /// Plans one checkpoint: the rows to write (reading what it needs inside `conn`'s
    /// transaction; `staged`: this thread's blob ids written earlier in it, not inserted yet),
    /// the plans for the caches, and what it stores.
    pub(crate) async fn prepare(
        &self,
        conn: &mut crate::sql::Conn<D>,
        put: &Put<'_>,
        staged: &[i64],
    ) -> StoreResult<(write::Rows, Vec<plan::BlobPlan>, Written)> {
        let plans = plan::plan(
            &self.cache,
            put.thread_id,
            put.checkpoint_ns,
            put.checkpoint,
            &put.values,
            put.new_versions,
        )
        .map_err(|e| StoreError::Backend(e.to_string()))?;
        let head_key: HeadKey = (put.thread_id.to_string(), put.checkpoint_ns.to_string());
        let cached_parent = put.parent_id.and_then(|pid| {
            self.cache
                .lock()
                .heads
                .get(&head_key)
                .filter(|(id, _)| id == pid)
                .map(|(_, blobs)| blobs.clone())
        });
        let planned = PlannedPut {
            thread_id: put.thread_id,
            checkpoint_ns: put.checkpoint_ns,
            parent_id: put.parent_id,
            checkpoint: put.checkpoint,
            metadata: put.metadata,
            new_versions: put.new_versions,
            plans: &plans,
            cached_parent: cached_parent.as_ref(),
            trusted_bases: self.db.owned,
            staged,
        };
        let (rows, written) = write::rows_of::<D>(conn, &planned).await?;
        Ok((rows, plans, written))
    }

    /// After a put committed: the write caches, and the latest checkpoint when the put
    /// carried every channel (a shared put does; a plain one only the changed ones).
    pub(crate) fn committed(&self, put: &Put<'_>, plans: Vec<plan::BlobPlan>, written: Written) {
        self.remember(
            put.thread_id,
            put.checkpoint_ns,
            &put.checkpoint.id,
            plans,
            written,
        );
        self.publish_latest(put);
    }

    /// Caches `put` as its thread's latest checkpoint (it is committed).
    pub(crate) fn publish_latest(&self, put: &Put<'_>) {
        let (thread_id, ns) = (put.thread_id, put.checkpoint_ns);
        let key: HeadKey = (thread_id.to_string(), ns.to_string());
        let mut latest = self.latest.lock();
        match put.values {
            Values::Shared(values) => {
                let mut checkpoint = put.checkpoint.clone();
                checkpoint.channel_values = Map::new();
                let tuple = CheckpointTuple {
                    thread_id: thread_id.to_string(),
                    checkpoint_ns: ns.to_string(),
                    checkpoint,
                    metadata: put.metadata.clone(),
                    parent_checkpoint_id: put.parent_id.map(str::to_string),
                    pending_writes: Vec::new(),
                };
                let values = values.clone();
                latest.put(key, latest::Entry { tuple, values });
            }
            Values::Plain(_) => latest.remove(&key),
        }
    }

    /// Drops everything cached about a thread whose writes did not commit.
    pub(crate) fn forget_thread(&self, thread_id: &str) {
        self.cache.lock().forget_thread(thread_id);
        self.latest.lock().forget_thread(thread_id);
    }

    /// After a transaction that read `version` as the latest of (thread, ns) committed (see
    /// [`latest::Latest::confirm`]).
    pub(crate) fn confirm_latest(&self, thread_id: &str, checkpoint_ns: &str, version: &Version) {
        let key: HeadKey = (thread_id.to_string(), checkpoint_ns.to_string());
        let n = usize::try_from(version.1).unwrap_or(usize::MAX);
        self.latest.lock().confirm(&key, &version.0, n);
    }

    /// After pending writes committed: the cached latest checkpoint gets them too.
    pub(crate) fn writes_committed(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: &str,
        task_id: &str,
        writes: &[(String, Value)],
    ) {
        let key: HeadKey = (thread_id.to_string(), checkpoint_ns.to_string());
        let pending = writes
            .iter()
            .map(|(channel, value)| PendingWrite {
                task_id: task_id.to_string(),
                channel: channel.clone(),
                value: value.clone(),
            })
            .collect();
        self.latest
            .lock()
            .add_writes(&key, checkpoint_id, task_id, pending);
    }

    /// The cached latest checkpoint of (thread, ns) when it can be trusted: always on a
    /// database this pool owns ([`Db::owned`]); elsewhere after checking it is still the latest one with
    /// as many pending writes (another process may have written since).
    async fn cached_latest(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<Arc<latest::Entry>>, CheckpointError> {
        let key: HeadKey = (thread_id.to_string(), checkpoint_ns.to_string());
        let Some(entry) = self.latest.lock().get(&key) else {
            return Ok(None);
        };
        if checkpoint_id.is_some_and(|id| id != entry.tuple.checkpoint.id) {
            return Ok(None);
        }
        if self.db.owned || self.latest.lock().take_confirmed(&key) {
            return Ok(Some(entry));
        }
        let current = read::version(&self.db, thread_id, checkpoint_ns)
            .await
            .map_err(storage)?;
        let cached = (
            entry.tuple.checkpoint.id.clone(),
            entry.tuple.pending_writes.len() as i64,
        );
        if current.as_ref() == Some(&cached) {
            return Ok(Some(entry));
        }
        self.latest.lock().remove(&key);
        Ok(None)
    }

    /// Reads a checkpoint from the database (one snapshot, transient failures retried).
    async fn load(
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

    /// Records what a committed put stored, for the next put's deltas and parent lookup.
    pub(crate) fn remember(
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
    async fn thread_write(
        &self,
        thread_id: &str,
        write: impl Future<Output = StoreResult<()>>,
    ) -> Result<(), CheckpointError> {
        self.cache.lock().forget_thread(thread_id);
        self.latest.lock().forget_thread(thread_id);
        let out = write.await.map_err(storage);
        // a read that raced the write may have cached what it replaced
        self.latest.lock().forget_thread(thread_id);
        out
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
        if let Some(e) = self
            .cached_latest(thread_id, checkpoint_ns, checkpoint_id)
            .await?
        {
            let mut tuple = e.tuple.clone();
            tuple.checkpoint.channel_values = e
                .values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_value()))
                .collect();
            return Ok(Some(tuple));
        }
        self.load(thread_id, checkpoint_ns, checkpoint_id).await
    }

    async fn get_tuple_shared(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<(CheckpointTuple, BTreeMap<String, ChannelValue>)>, CheckpointError> {
        if let Some(e) = self
            .cached_latest(thread_id, checkpoint_ns, checkpoint_id)
            .await?
        {
            return Ok(Some((e.tuple.clone(), e.values.clone())));
        }
        let Some(mut tuple) = self.load(thread_id, checkpoint_ns, checkpoint_id).await? else {
            return Ok(None);
        };
        let values: BTreeMap<String, ChannelValue> =
            std::mem::take(&mut tuple.checkpoint.channel_values)
                .into_iter()
                .map(|(k, v)| {
                    let list = v.is_array();
                    (k, ChannelValue::from_value(v, list))
                })
                .collect();
        if checkpoint_id.is_none() {
            let key: HeadKey = (thread_id.to_string(), checkpoint_ns.to_string());
            let entry = latest::Entry {
                tuple: tuple.clone(),
                values: values.clone(),
            };
            self.latest.lock().put(key, entry);
        }
        Ok(Some((tuple, values)))
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
        let put = Put::plain(
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            metadata,
            new_versions,
        );
        self.put_inner(put).await
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
        self.put_inner(Put {
            values: Values::Shared(values),
            ..Put::plain(
                thread_id,
                checkpoint_ns,
                parent_id,
                checkpoint,
                metadata,
                new_versions,
            )
        })
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
                let mut conn = self.db.acquire().await?;
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
            .map_err(storage)?;
        self.writes_committed(thread_id, checkpoint_ns, checkpoint_id, task_id, writes);
        Ok(())
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError> {
        let write = transaction!(self.db, WriteClass::Background, |tx| {
            gc::delete_all::<D>(tx, thread_id).await
        });
        self.thread_write(thread_id, write).await
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError> {
        if from == to {
            return Ok(());
        }
        let write = transaction!(self.db, WriteClass::Background, |tx| {
            gc::copy_all::<D>(tx, from, to).await
        });
        self.thread_write(to, write).await
    }

    async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError> {
        let write = transaction!(self.db, WriteClass::Background, |tx| {
            gc::delete_run_in::<D>(tx, thread_id, run_id).await
        });
        self.thread_write(thread_id, write).await
    }
}
