//! Writing a checkpoint (blobs + head) and pending writes inside a caller's transaction.

use std::collections::{BTreeMap, HashSet};

use antler_graph::{ChannelVersion, Checkpoint, CheckpointError};
use antler_store::{StoreError, StoreResult};
use serde_json::{Map, Value};

use super::plan::{BlobPlan, Head, HeadRef, Payload, channel_json, run_id_of, version_i64};
use crate::sql::{Arg, Conn, Dialect, Sql, SqlRow, upsert};

/// Everything one checkpoint write stores, planned (see [`super::plan::plan`]).
pub(crate) struct PlannedPut<'a> {
    pub thread_id: &'a str,
    pub checkpoint_ns: &'a str,
    pub parent_id: Option<&'a str>,
    pub checkpoint: &'a Checkpoint,
    pub metadata: &'a Map<String, Value>,
    pub new_versions: &'a BTreeMap<String, ChannelVersion>,
    pub plans: &'a [BlobPlan],
    /// The parent's channel -> blob id map when this process wrote the parent.
    pub cached_parent: Option<&'a BTreeMap<String, i64>>,
    /// Delta bases this process knows to exist (it wrote them and nothing deleted them since):
    /// their existence is not checked again.
    pub trusted_bases: bool,
    /// Blob ids of this thread staged earlier in the same transaction (a batch's earlier
    /// step of the run, not inserted yet): they exist at commit, so a delta on one is kept.
    pub staged: &'a [i64],
}

/// What a write stored: the head's channel -> blob id map and the depth each plan was
/// written at (0 = full value).
pub(crate) struct Written {
    pub blobs: BTreeMap<String, i64>,
    pub depths: Vec<i64>,
}

fn to_store(e: CheckpointError) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Blob ids of the checkpoint's unchanged channels: the parent's (from the cache or its head).
async fn inherited<D: Dialect>(
    conn: &mut Conn<D>,
    p: &PlannedPut<'_>,
) -> StoreResult<BTreeMap<String, i64>> {
    let parent_blobs = match (p.cached_parent, p.parent_id) {
        (Some(b), _) => b.clone(),
        (None, Some(pid)) => {
            let sql = Sql::new(
                "SELECT checkpoint FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
            )
            .arg(p.thread_id)
            .arg(p.checkpoint_ns)
            .arg(pid);
            match D::fetch_optional(conn, &sql).await? {
                Some(row) => {
                    serde_json::from_value::<Head>(row.json("checkpoint")?)
                        .map_err(|e| StoreError::Backend(format!("bad checkpoint head: {e}")))?
                        .blobs
                }
                None => BTreeMap::new(),
            }
        }
        (None, None) => BTreeMap::new(),
    };
    let mut blobs = BTreeMap::new();
    for (channel, version) in &p.checkpoint.channel_versions {
        if p.new_versions.contains_key(channel) {
            continue;
        }
        if let Some(id) = parent_blobs.get(channel) {
            blobs.insert(channel.clone(), *id);
        } else if let Some(id) = latest_blob::<D>(conn, p, channel, *version).await? {
            // no parent head to inherit from: the latest blob of that version
            blobs.insert(channel.clone(), id);
        }
    }
    Ok(blobs)
}

async fn latest_blob<D: Dialect>(
    conn: &mut Conn<D>,
    p: &PlannedPut<'_>,
    channel: &str,
    version: ChannelVersion,
) -> StoreResult<Option<i64>> {
    let sql = Sql::owned(format!(
        "SELECT blob_id FROM checkpoint_blobs WHERE thread_id = ? AND checkpoint_ns = ? AND channel = ? \
         AND version = ? ORDER BY {} DESC LIMIT 1",
        D::SEQ_COL
    ))
    .arg(p.thread_id)
    .arg(p.checkpoint_ns)
    .arg(channel)
    .arg(version_i64(version));
    D::fetch_optional(conn, &sql)
        .await?
        .map(|r| r.i64("blob_id"))
        .transpose()
}

/// The delta bases of `plans` that exist (share-locked until commit, so a concurrent
/// rollback elsewhere cannot remove one under a delta being written).
async fn existing_bases<D: Dialect>(
    conn: &mut Conn<D>,
    p: &PlannedPut<'_>,
) -> StoreResult<HashSet<i64>> {
    let bases: Vec<i64> = p
        .plans
        .iter()
        .filter_map(|plan| match &plan.payload {
            Payload::Delta { base_id, .. } => Some(*base_id),
            Payload::Full(_) => None,
        })
        .collect();
    let (mut known, unknown): (HashSet<i64>, Vec<i64>) = if p.trusted_bases {
        (bases.into_iter().collect(), Vec::new())
    } else {
        let (staged, stored): (Vec<i64>, Vec<i64>) =
            bases.into_iter().partition(|b| p.staged.contains(b));
        (staged.into_iter().collect(), stored)
    };
    if unknown.is_empty() {
        return Ok(known);
    }
    let mut sql =
        Sql::new("SELECT blob_id FROM checkpoint_blobs WHERE thread_id = ? AND checkpoint_ns = ?")
            .arg(p.thread_id)
            .arg(p.checkpoint_ns);
    sql.and_in("blob_id", unknown).push(D::FOR_SHARE);
    for r in D::fetch_all(conn, &sql).await? {
        known.insert(r.i64("blob_id")?);
    }
    Ok(known)
}

impl BlobRow {
    /// The row's blob id when it belongs to `thread_id` / `ns`.
    pub(crate) fn id_in(&self, thread_id: &str, ns: &str) -> Option<i64> {
        (self.thread_id == thread_id && self.ns == ns).then_some(self.blob_id)
    }
}

/// One row of `checkpoint_blobs`.
pub(crate) struct BlobRow {
    thread_id: String,
    ns: String,
    blob_id: i64,
    channel: String,
    version: i64,
    base: Option<i64>,
    depth: i64,
    value: Option<String>,
}

/// One row of `checkpoints`.
pub(crate) struct HeadRow {
    thread_id: String,
    ns: String,
    checkpoint_id: String,
    parent_id: Option<String>,
    run_id: Option<String>,
    head: String,
    metadata: String,
}

/// The rows of one checkpoint.
pub(crate) struct Rows {
    pub blobs: Vec<BlobRow>,
    pub head: HeadRow,
}

/// The blob rows of a put: deltas whose base exists as deltas, the others as full values.
/// Returns them with the depth each plan is written at.
async fn blob_rows<D: Dialect>(
    conn: &mut Conn<D>,
    p: &PlannedPut<'_>,
) -> StoreResult<(Vec<BlobRow>, Vec<i64>)> {
    if p.plans.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let bases = existing_bases::<D>(conn, p).await?;
    let mut rows = Vec::with_capacity(p.plans.len());
    let mut depths = Vec::with_capacity(p.plans.len());
    for plan in p.plans {
        let (base, depth, value) = match &plan.payload {
            Payload::Delta {
                base_id,
                depth,
                suffix,
            } if bases.contains(base_id) => (Some(*base_id), *depth, Some(suffix.clone())),
            // a delta whose base is gone (rolled back): its full value
            Payload::Delta { .. } => (
                None,
                0,
                plan.list
                    .as_ref()
                    .map(channel_json)
                    .transpose()
                    .map_err(to_store)?,
            ),
            Payload::Full(v) => (None, 0, v.clone()),
        };
        rows.push(BlobRow {
            thread_id: p.thread_id.to_string(),
            ns: p.checkpoint_ns.to_string(),
            blob_id: plan.blob_id,
            channel: plan.channel.clone(),
            version: version_i64(plan.version),
            base,
            depth,
            value,
        });
        depths.push(depth);
    }
    Ok((rows, depths))
}

/// Rows per multi-row statement (every backend binds well under 32,766 values this way).
const ROWS_PER_STATEMENT: usize = 500;

/// Inserts blob rows, many per statement (fresh random ids: a retry is idempotent).
pub(crate) async fn insert_blobs<D: Dialect>(
    conn: &mut Conn<D>,
    rows: &[BlobRow],
) -> StoreResult<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(
            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind(&r.thread_id).push(", ").bind(&r.ns).push(", ");
            sql.bind(r.blob_id).push(", ").bind(&r.channel).push(", ");
            sql.bind(r.version).push(", ").bind(r.base).push(", ");
            sql.bind(r.depth).push(", ").bind(r.value.clone()).push(")");
        }
        sql.push(&D::insert_ignore("thread_id, checkpoint_ns, blob_id"));
        D::execute(conn, &sql).await?;
    }
    Ok(())
}

/// Upserts checkpoint heads, many per statement (one row per key: the caller keeps the last).
pub(crate) async fn upsert_heads<D: Dialect>(
    conn: &mut Conn<D>,
    rows: &[HeadRow],
) -> StoreResult<()> {
    let tail = upsert::<D>(
        "thread_id, checkpoint_ns, checkpoint_id",
        &["parent_checkpoint_id", "run_id", "checkpoint", "metadata"],
    );
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind(&r.thread_id).push(", ").bind(&r.ns).push(", ");
            sql.bind(&r.checkpoint_id)
                .push(", ")
                .bind(r.parent_id.clone())
                .push(", ");
            sql.bind(r.run_id.clone()).push(", ");
            sql.bind(Arg::JsonText(r.head.clone())).push(", ");
            sql.bind(Arg::JsonText(r.metadata.clone())).push(")");
        }
        sql.push(&tail);
        D::execute(conn, &sql).await?;
    }
    Ok(())
}

/// The rows of one checkpoint (reading what it inherits from its parent, and which delta
/// bases exist, inside `conn`'s transaction) and what it stores.
pub(crate) async fn rows_of<D: Dialect>(
    conn: &mut Conn<D>,
    p: &PlannedPut<'_>,
) -> StoreResult<(Rows, Written)> {
    let mut blobs = inherited::<D>(conn, p).await?;
    let (blob_rows, depths) = blob_rows::<D>(conn, p).await?;
    for plan in p.plans {
        blobs.insert(plan.channel.clone(), plan.blob_id);
    }
    let c = p.checkpoint;
    let head = serde_json::to_string(&HeadRef {
        id: &c.id,
        ts: &c.ts,
        channel_versions: &c.channel_versions,
        versions_seen: &c.versions_seen,
        updated_channels: &c.updated_channels,
        blobs: &blobs,
    })
    .map_err(|e| StoreError::Backend(e.to_string()))?;
    let metadata =
        serde_json::to_string(p.metadata).map_err(|e| StoreError::Backend(e.to_string()))?;
    let head = HeadRow {
        thread_id: p.thread_id.to_string(),
        ns: p.checkpoint_ns.to_string(),
        checkpoint_id: c.id.clone(),
        parent_id: p.parent_id.map(str::to_string),
        run_id: run_id_of(p.metadata).map(str::to_string),
        head,
        metadata,
    };
    let rows = Rows {
        blobs: blob_rows,
        head,
    };
    Ok((rows, Written { blobs, depths }))
}

/// One row of `checkpoint_writes`.
pub(crate) struct WriteRow {
    pub thread_id: String,
    pub ns: String,
    pub checkpoint_id: String,
    pub task_id: String,
    pub idx: i64,
    pub channel: String,
    pub value: String,
}

/// Upserts pending writes, many per statement (re-delivery is idempotent per
/// `(task_id, index)`, and an upsert keeps the row's insertion order). One row per key: the
/// caller keeps the last.
pub(crate) async fn upsert_writes<D: Dialect>(
    conn: &mut Conn<D>,
    rows: &[WriteRow],
) -> StoreResult<()> {
    let tail = upsert::<D>(
        "thread_id, checkpoint_ns, checkpoint_id, task_id, idx",
        &["channel", "value"],
    );
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(
            "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value) VALUES ",
        );
        for (i, r) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind(&r.thread_id).push(", ").bind(&r.ns).push(", ");
            sql.bind(&r.checkpoint_id)
                .push(", ")
                .bind(&r.task_id)
                .push(", ");
            sql.bind(r.idx).push(", ").bind(&r.channel).push(", ");
            sql.bind(&r.value).push(")");
        }
        sql.push(&tail);
        D::execute(conn, &sql).await?;
    }
    Ok(())
}

/// The rows of one task's pending writes.
pub(crate) fn write_rows(
    thread_id: &str,
    checkpoint_ns: &str,
    checkpoint_id: &str,
    task_id: &str,
    encoded: &[(String, String)],
) -> Vec<WriteRow> {
    encoded
        .iter()
        .enumerate()
        .map(|(idx, (channel, value))| WriteRow {
            thread_id: thread_id.to_string(),
            ns: checkpoint_ns.to_string(),
            checkpoint_id: checkpoint_id.to_string(),
            task_id: task_id.to_string(),
            idx: crate::sql::lim(idx),
            channel: channel.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Pending writes of one task.
pub(crate) async fn writes_in<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    checkpoint_ns: &str,
    checkpoint_id: &str,
    task_id: &str,
    encoded: &[(String, String)],
) -> StoreResult<()> {
    let rows = write_rows(thread_id, checkpoint_ns, checkpoint_id, task_id, encoded);
    upsert_writes::<D>(conn, &rows).await
}

/// Serializes pending writes once (the values as stored).
pub(crate) fn encode_writes(
    writes: &[(String, Value)],
) -> Result<Vec<(String, String)>, CheckpointError> {
    writes
        .iter()
        .map(|(c, v)| serde_json::to_string(v).map(|s| (c.clone(), s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(super::plan::serde_err)
}
