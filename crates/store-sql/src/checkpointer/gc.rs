//! Whole-thread operations and rollback: delete, copy, and removing one run's checkpoints
//! together with the blobs only they used.

use std::collections::{HashMap, HashSet};

use antler_store::{StoreError, StoreResult};

use super::plan::Head;
use crate::sql::{Conn, Dialect, Sql, SqlRow};

/// Deletes every checkpoint row of `thread_id` (all three tables).
pub(crate) async fn delete_all<D: Dialect>(conn: &mut Conn<D>, thread_id: &str) -> StoreResult<()> {
    for stmt in [
        "DELETE FROM checkpoints WHERE thread_id = ?",
        "DELETE FROM checkpoint_blobs WHERE thread_id = ?",
        "DELETE FROM checkpoint_writes WHERE thread_id = ?",
    ] {
        D::execute(conn, &Sql::new(stmt).arg(thread_id)).await?;
    }
    Ok(())
}

/// Replaces `to`'s checkpoints with a copy of `from`'s.
pub(crate) async fn copy_all<D: Dialect>(
    conn: &mut Conn<D>,
    from: &str,
    to: &str,
) -> StoreResult<()> {
    delete_all::<D>(conn, to).await?;
    let copies = [
        "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata) \
         SELECT ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, checkpoint, metadata \
         FROM checkpoints WHERE thread_id = ?"
            .to_string(),
        format!(
            "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, blob_id, channel, version, base_id, depth, value) \
             SELECT ?, checkpoint_ns, blob_id, channel, version, base_id, depth, value \
             FROM checkpoint_blobs WHERE thread_id = ? ORDER BY {}",
            D::SEQ_COL
        ),
        format!(
            "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, value) \
             SELECT ?, checkpoint_ns, checkpoint_id, task_id, idx, channel, value FROM checkpoint_writes \
             WHERE thread_id = ? ORDER BY {}",
            D::SEQ_COL
        ),
    ];
    for stmt in copies {
        D::execute(conn, &Sql::owned(stmt).arg(to).arg(from)).await?;
    }
    Ok(())
}

fn head_blobs(row: &impl SqlRow) -> StoreResult<(String, Vec<i64>)> {
    let ns = row.str("checkpoint_ns")?;
    let head: Head = serde_json::from_value(row.json("checkpoint")?)
        .map_err(|e| StoreError::Backend(format!("bad checkpoint head: {e}")))?;
    Ok((ns, head.blobs.into_values().collect()))
}

/// Deletes the checkpoints of `thread_id` written by `run_id` and their pending writes;
/// returns the blobs they referenced.
async fn delete_heads<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    run_id: &str,
) -> StoreResult<HashSet<(String, i64)>> {
    let mut sql = Sql::new(
        "SELECT checkpoint_ns, checkpoint_id, checkpoint FROM checkpoints WHERE thread_id = ? AND run_id = ?",
    )
    .arg(thread_id)
    .arg(run_id);
    sql.push(D::FOR_UPDATE);
    let doomed = D::fetch_all(conn, &sql).await?;
    let mut candidates = HashSet::new();
    for row in &doomed {
        let (ns, blobs) = head_blobs(row)?;
        candidates.extend(blobs.into_iter().map(|b| (ns.clone(), b)));
        let writes = Sql::new(
            "DELETE FROM checkpoint_writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?",
        )
        .arg(thread_id)
        .arg(ns)
        .arg(row.str("checkpoint_id")?);
        D::execute(conn, &writes).await?;
    }
    if !doomed.is_empty() {
        let heads = Sql::new("DELETE FROM checkpoints WHERE thread_id = ? AND run_id = ?")
            .arg(thread_id)
            .arg(run_id);
        D::execute(conn, &heads).await?;
    }
    Ok(candidates)
}

/// Removes from `candidates` every blob a remaining checkpoint reads, directly or as a
/// delta base.
async fn keep_live<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    candidates: &mut HashSet<(String, i64)>,
) -> StoreResult<()> {
    let mut sql = Sql::new("SELECT checkpoint_ns, checkpoint FROM checkpoints WHERE thread_id = ?")
        .arg(thread_id);
    sql.push(D::FOR_UPDATE);
    let mut live: Vec<(String, i64)> = Vec::new();
    for row in &D::fetch_all(conn, &sql).await? {
        let (ns, blobs) = head_blobs(row)?;
        live.extend(blobs.into_iter().map(|b| (ns.clone(), b)));
    }
    let mut links = Sql::new(
        "SELECT checkpoint_ns, blob_id, base_id FROM checkpoint_blobs WHERE thread_id = ? AND base_id IS NOT NULL",
    )
    .arg(thread_id);
    links.push(D::FOR_UPDATE);
    let mut base_of: HashMap<(String, i64), i64> = HashMap::new();
    for row in &D::fetch_all(conn, &links).await? {
        base_of.insert(
            (row.str("checkpoint_ns")?, row.i64("blob_id")?),
            row.i64("base_id")?,
        );
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
    Ok(())
}

/// Rollback: deletes the run's checkpoints and garbage-collects the blobs only they used,
/// keeping every delta base a remaining checkpoint needs.
pub(crate) async fn delete_run_in<D: Dialect>(
    conn: &mut Conn<D>,
    thread_id: &str,
    run_id: &str,
) -> StoreResult<()> {
    let mut candidates = delete_heads::<D>(conn, thread_id, run_id).await?;
    if candidates.is_empty() {
        return Ok(());
    }
    keep_live::<D>(conn, thread_id, &mut candidates).await?;
    for (ns, blob_id) in &candidates {
        let sql = Sql::new(
            "DELETE FROM checkpoint_blobs WHERE thread_id = ? AND checkpoint_ns = ? AND blob_id = ?",
        )
        .arg(thread_id)
        .arg(ns)
        .arg(*blob_id);
        D::execute(conn, &sql).await?;
    }
    Ok(())
}
