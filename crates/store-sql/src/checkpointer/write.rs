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
    if bases.is_empty() || p.trusted_bases {
        return Ok(bases.into_iter().collect());
    }
    let mut sql =
        Sql::new("SELECT blob_id FROM checkpoint_blobs WHERE thread_id = ? AND checkpoint_ns = ?")
            .arg(p.thread_id)
            .arg(p.checkpoint_ns);
    sql.and_in("blob_id", bases).push(D::FOR_SHARE);
    D::fetch_all(conn, &sql)
        .await?
        .iter()
        .map(|r| r.i64("blob_id"))
        .collect()
}

/// Inserts every blob in one statement: deltas whose base exists as deltas, the others as
/// full values. Returns the depth each plan was written at.
async fn insert_blobs<D: Dialect>(conn: &mut Conn<D>, p: &PlannedPut<'_>) -> StoreResult<Vec<i64>> {
    if p.plans.is_empty() {
        return Ok(Vec::new());
    }
    let bases = existing_bases::<D>(conn, p).await?;
    let mut sql = Sql::new(
        "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) VALUES ",
    );
    let mut depths = Vec::with_capacity(p.plans.len());
    for (i, plan) in p.plans.iter().enumerate() {
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
        sql.push(if i == 0 { "(" } else { ", (" });
        sql.bind(p.thread_id)
            .push(", ")
            .bind(p.checkpoint_ns)
            .push(", ");
        sql.bind(plan.blob_id)
            .push(", ")
            .bind(&plan.channel)
            .push(", ");
        sql.bind(version_i64(plan.version))
            .push(", ")
            .bind(base)
            .push(", ");
        sql.bind(depth).push(", ").bind(value).push(")");
        depths.push(depth);
    }
    // fresh random ids: a retry of the same plans is idempotent
    sql.push(&D::insert_ignore("thread_id, checkpoint_ns, blob_id"));
    D::execute(conn, &sql).await?;
    Ok(depths)
}

/// Writes the blobs and the checkpoint row inside `conn`'s transaction.
pub(crate) async fn put_in<D: Dialect>(
    conn: &mut Conn<D>,
    p: &PlannedPut<'_>,
) -> StoreResult<Written> {
    let mut blobs = inherited::<D>(conn, p).await?;
    let depths = insert_blobs::<D>(conn, p).await?;
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
    let meta = serde_json::to_string(p.metadata).map_err(|e| StoreError::Backend(e.to_string()))?;
    let sql = Sql::owned(format!(
        "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata) \
         VALUES (?, ?, ?, ?, ?, ?, ?){}",
        upsert::<D>(
            "thread_id, checkpoint_ns, checkpoint_id",
            &["parent_checkpoint_id", "run_id", "checkpoint", "metadata"]
        )
    ))
    .arg(p.thread_id)
    .arg(p.checkpoint_ns)
    .arg(&c.id)
    .arg(p.parent_id)
    .arg(run_id_of(p.metadata))
    .arg(Arg::JsonText(head))
    .arg(Arg::JsonText(meta));
    D::execute(conn, &sql).await?;
    Ok(Written { blobs, depths })
}

/// Pending writes of one task (one multi-row upsert: re-delivery is idempotent per
/// `(task_id, index)`, and an upsert keeps the row's insertion order).
pub(crate) async fn writes_in<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    checkpoint_ns: &str,
    checkpoint_id: &str,
    task_id: &str,
    encoded: &[(String, String)],
) -> StoreResult<()> {
    if encoded.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(
        "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value) VALUES ",
    );
    for (idx, (channel, value)) in encoded.iter().enumerate() {
        sql.push(if idx == 0 { "(" } else { ", (" });
        sql.bind(thread_id)
            .push(", ")
            .bind(checkpoint_ns)
            .push(", ");
        sql.bind(checkpoint_id).push(", ").bind(task_id).push(", ");
        sql.bind(crate::sql::lim(idx))
            .push(", ")
            .bind(channel)
            .push(", ");
        sql.bind(value).push(")");
    }
    sql.push(&upsert::<D>(
        "thread_id, checkpoint_ns, checkpoint_id, task_id, idx",
        &["channel", "value"],
    ));
    D::execute(conn, &sql).await.map(|_| ())
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
