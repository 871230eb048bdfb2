//! Reading checkpoints: a head row plus its blobs (following delta chains) and pending writes.

use std::collections::{BTreeMap, HashMap};

use antler_graph::{Checkpoint, CheckpointError, CheckpointTuple, ListOptions, PendingWrite};
use antler_store::StoreResult;
use serde_json::{Map, Value};

use super::plan::{Head, serde_err};
use crate::sql::{Conn, Dialect, Sql, SqlRow};

fn storage(e: antler_store::StoreError) -> CheckpointError {
    CheckpointError::Storage(e.to_string())
}

/// Every referenced blob plus its delta chain, oldest link first per starting blob.
fn chain_sql(thread_id: &str, ns: &str, ids: impl Iterator<Item = i64>) -> Sql {
    let mut sql = Sql::new(
        "WITH RECURSIVE chain (start_id, base_id, value, lvl) AS ( \
         SELECT b.blob_id, b.base_id, b.value, 0 FROM checkpoint_blobs AS b WHERE b.thread_id = ? AND b.checkpoint_ns = ?",
    )
    .arg(thread_id)
    .arg(ns);
    sql.and_in("b.blob_id", ids);
    sql.push(
        " UNION ALL SELECT chain.start_id, b.base_id, b.value, chain.lvl + 1 FROM chain \
         JOIN checkpoint_blobs AS b ON b.thread_id = ",
    )
    .bind(thread_id)
    .push(" AND b.checkpoint_ns = ")
    .bind(ns)
    .push(
        " AND b.blob_id = chain.base_id WHERE chain.lvl < 1000) \
         SELECT start_id, base_id, value FROM chain ORDER BY start_id, lvl DESC",
    );
    sql
}

/// The values of a head's channels, rebuilt from their blobs.
async fn channel_values<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    ns: &str,
    head: &Head,
) -> Result<Map<String, Value>, CheckpointError> {
    let mut found: BTreeMap<String, Option<Value>> = BTreeMap::new();
    if !head.blobs.is_empty() {
        // blob id -> channel (each blob holds one channel's value)
        let channel_of: HashMap<i64, &str> = head
            .blobs
            .iter()
            .map(|(channel, id)| (*id, channel.as_str()))
            .collect();
        let sql = chain_sql(thread_id, ns, head.blobs.values().copied());
        for r in &D::fetch_all(conn, &sql).await.map_err(storage)? {
            let start = r.i64("start_id").map_err(storage)?;
            let Some(channel) = channel_of.get(&start) else {
                continue;
            };
            let base_id = r.opt_i64("base_id").map_err(storage)?;
            let value = r
                .opt_str("value")
                .map_err(storage)?
                .map(|v| serde_json::from_str::<Value>(&v))
                .transpose()
                .map_err(serde_err)?;
            link(&mut found, channel, base_id, value, &head.id)?;
        }
    }
    let mut values = Map::new();
    for channel in head.channel_versions.keys() {
        if let Some(Some(v)) = found.remove(channel) {
            values.insert(channel.clone(), v);
        }
    }
    Ok(values)
}

/// Adds one link of a channel's chain (full value first, then deltas in order).
fn link(
    found: &mut BTreeMap<String, Option<Value>>,
    channel: &str,
    base_id: Option<i64>,
    value: Option<Value>,
    checkpoint_id: &str,
) -> Result<(), CheckpointError> {
    match base_id {
        None => {
            found.insert(channel.to_string(), value);
            Ok(())
        }
        Some(_) => match (found.get_mut(channel), value) {
            (Some(Some(Value::Array(list))), Some(Value::Array(more))) => {
                list.extend(more);
                Ok(())
            }
            _ => Err(CheckpointError::Storage(format!(
                "broken delta chain for channel '{channel}' of checkpoint {checkpoint_id}"
            ))),
        },
    }
}

/// The pending writes of a checkpoint, in insertion order.
pub(crate) async fn pending_writes<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    ns: &str,
    checkpoint_id: &str,
) -> Result<Vec<PendingWrite>, CheckpointError> {
    let sql = Sql::owned(format!(
        "SELECT task_id, channel, value FROM checkpoint_writes \
         WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? ORDER BY {}",
        D::SEQ_COL
    ))
    .arg(thread_id)
    .arg(ns)
    .arg(checkpoint_id);
    let rows = D::fetch_all(conn, &sql).await.map_err(storage)?;
    rows.iter()
        .map(|r| {
            Ok(PendingWrite {
                task_id: r.str("task_id").map_err(storage)?,
                channel: r.str("channel").map_err(storage)?,
                value: serde_json::from_str(&r.str("value").map_err(storage)?)
                    .map_err(serde_err)?,
            })
        })
        .collect()
}

/// Builds the full tuple of a `checkpoints` row.
pub(crate) async fn load_tuple<D: Dialect>(
    conn: &mut Conn<D>,
    row: &D::Row,
) -> Result<CheckpointTuple, CheckpointError> {
    let thread_id = row.str("thread_id").map_err(storage)?;
    let checkpoint_ns = row.str("checkpoint_ns").map_err(storage)?;
    let parent = row.opt_str("parent_checkpoint_id").map_err(storage)?;
    let head: Head =
        serde_json::from_value(row.json("checkpoint").map_err(storage)?).map_err(serde_err)?;
    let metadata = row.map("metadata").map_err(storage)?;
    let channel_values = channel_values::<D>(conn, &thread_id, &checkpoint_ns, &head).await?;
    let pending_writes = pending_writes::<D>(conn, &thread_id, &checkpoint_ns, &head.id).await?;
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

/// The head row of a checkpoint (`None`: the latest of the thread + namespace).
pub(crate) fn head_sql(thread_id: &str, ns: &str, checkpoint_id: Option<&str>) -> Sql {
    match checkpoint_id {
        Some(id) => Sql::new(
            "SELECT * FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
        )
        .arg(thread_id)
        .arg(ns)
        .arg(id),
        None => Sql::new(
            "SELECT * FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? \
             ORDER BY checkpoint_id DESC LIMIT 1",
        )
        .arg(thread_id)
        .arg(ns),
    }
}

/// Heads of `thread_id` matching `opts`, newest first.
pub(crate) fn list_sql<D: Dialect>(
    d: &D,
    thread_id: &str,
    ns: Option<&str>,
    opts: &ListOptions,
) -> StoreResult<Sql> {
    let mut sql = Sql::new("SELECT * FROM checkpoints WHERE thread_id = ?").arg(thread_id);
    if let Some(ns) = ns {
        sql.push(" AND checkpoint_ns = ").bind(ns);
    }
    if let Some(before) = &opts.before {
        sql.push(" AND checkpoint_id < ").bind(before);
    }
    d.push_json_filter(&mut sql, "checkpoints.metadata", &opts.filter)?;
    sql.push(" ORDER BY checkpoint_id DESC, checkpoint_ns DESC");
    if let Some(limit) = opts.limit {
        sql.push(" LIMIT ").bind(crate::sql::lim(limit));
    }
    Ok(sql)
}

/// A checkpoint's id and its number of pending writes: what a cached copy must still match.
pub(crate) type Version = (String, i64);

/// The [`Version`] of the latest checkpoint of (thread, ns), if it has one.
pub(crate) async fn version<D: Dialect>(
    db: &crate::sql::Db<D>,
    thread_id: &str,
    ns: &str,
) -> StoreResult<Option<Version>> {
    let row = db.fetch_optional(&version_sql(thread_id, ns)).await?;
    row.as_ref().map(version_of).transpose()
}

/// The same inside a transaction.
pub(crate) async fn version_in<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    ns: &str,
) -> StoreResult<Option<Version>> {
    let row = D::fetch_optional(conn, &version_sql(thread_id, ns)).await?;
    row.as_ref().map(version_of).transpose()
}

fn version_of(row: &impl SqlRow) -> StoreResult<Version> {
    Ok((row.str("checkpoint_id")?, row.i64("n")?))
}

/// The id of the latest checkpoint of (thread, ns) and its number of pending writes: what
/// a cached copy must still match.
fn version_sql(thread_id: &str, ns: &str) -> Sql {
    Sql::new(
        "SELECT c.checkpoint_id, (SELECT COUNT(*) FROM checkpoint_writes w WHERE w.thread_id = c.thread_id \
         AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id) AS n \
         FROM checkpoints c WHERE c.thread_id = ? AND c.checkpoint_ns = ? ORDER BY c.checkpoint_id DESC LIMIT 1",
    )
    .arg(thread_id)
    .arg(ns)
}
