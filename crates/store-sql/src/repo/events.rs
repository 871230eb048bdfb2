//! `run_events` + `run_event_seqs` tables.
//!
//! Sequence numbers come from `run_event_seqs` (one row per owner's thread, bumped by the
//! batch size inside the transaction holding the inserts; the bump row-locks it until
//! commit), so they are unique and strictly increasing per thread across processes, and
//! never reused after deletes. Threads of one batch are bumped in sorted order, so two
//! batches touching the same threads lock them in the same order.
//!
//! Appends are idempotent by (thread, seq): an append keeps the seqs it was given on its
//! first attempt, so a retry after a commit whose answer was lost (a dropped connection)
//! finds its rows already there and inserts nothing twice.

use std::collections::BTreeMap;

use antler_store::{
    NewRunEvent, Owner, RunEvent, RunEventQuery, RunEventStore, RunId, StoreError, StoreResult,
    ThreadId, time,
};

use crate::sql::{Arg, Conn, Db, Dialect, Sql, SqlRow, WriteClass, from_row};

/// [`RunEventStore`] on any SQL backend.
#[derive(Debug, Clone)]
pub struct SqlRunEventStore<D: Dialect> {
    pub(crate) db: Db<D>,
}

fn row_to_event(row: &impl SqlRow) -> StoreResult<RunEvent> {
    from_row!(row => RunEvent {
        thread_id: str, run_id: str, seq: i64, event_type: str, category: str, content: json,
        metadata: json, created_at: ts,
    })
}

fn filtered(
    select: &'static str,
    owner: &str,
    thread_id: &str,
    run_id: Option<&str>,
    category: Option<&str>,
) -> Sql {
    let mut sql = Sql::new(select).arg(owner).arg(thread_id);
    if let Some(r) = run_id {
        sql.push(" AND run_id = ").bind(r);
    }
    if let Some(c) = category {
        sql.push(" AND category = ").bind(c);
    }
    sql
}

/// Events per thread of a batch, threads in sorted order (a consistent lock order).
fn per_thread(events: &[NewRunEvent]) -> BTreeMap<&str, i64> {
    let mut n: BTreeMap<&str, i64> = BTreeMap::new();
    for e in events {
        *n.entry(e.thread_id.as_str()).or_insert(0) += 1;
    }
    n
}

/// Hands out fresh seqs for `events` (bumping each thread's counter); `seqs[i]` is event i's.
async fn allocate<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    events: &[NewRunEvent],
) -> StoreResult<Vec<i64>> {
    let bump = Sql::owned(format!(
        "INSERT INTO run_event_seqs (owner, thread_id, last_seq) VALUES (?, ?, ?){}last_seq = run_event_seqs.last_seq + {}",
        D::on_conflict_update("owner, thread_id"),
        D::excluded("last_seq")
    ));
    let mut next: BTreeMap<&str, i64> = BTreeMap::new();
    for (thread_id, n) in per_thread(events) {
        D::execute(conn, &bump.clone().arg(owner).arg(thread_id).arg(n)).await?;
        // a locking read: the row as this transaction left it
        let mut read =
            Sql::new("SELECT last_seq FROM run_event_seqs WHERE owner = ? AND thread_id = ?")
                .arg(owner)
                .arg(thread_id);
        read.push(D::FOR_UPDATE);
        let row = D::fetch_optional(conn, &read)
            .await?
            .ok_or(StoreError::NotFound)?;
        next.insert(thread_id, row.i64("last_seq")? - n + 1);
    }
    Ok(events
        .iter()
        .map(|e| {
            let slot = next.entry(e.thread_id.as_str()).or_insert(1);
            *slot += 1;
            *slot - 1
        })
        .collect())
}

/// Makes each thread's counter at least the largest of `seqs` (a retried append).
async fn keep_counters<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    events: &[NewRunEvent],
    seqs: &[i64],
) -> StoreResult<()> {
    let mut max: BTreeMap<&str, i64> = BTreeMap::new();
    for (e, s) in events.iter().zip(seqs) {
        let m = max.entry(e.thread_id.as_str()).or_insert(*s);
        *m = (*m).max(*s);
    }
    let bump = Sql::owned(format!(
        "INSERT INTO run_event_seqs (owner, thread_id, last_seq) VALUES (?, ?, ?){}last_seq = {}(run_event_seqs.last_seq, {})",
        D::on_conflict_update("owner, thread_id"),
        D::GREATEST,
        D::excluded("last_seq")
    ));
    for (thread_id, m) in max {
        D::execute(conn, &bump.clone().arg(owner).arg(thread_id).arg(m)).await?;
    }
    Ok(())
}

fn stored(events: &[NewRunEvent], seqs: &[i64]) -> Vec<RunEvent> {
    events
        .iter()
        .zip(seqs)
        .map(|(e, seq)| RunEvent {
            thread_id: e.thread_id.clone(),
            run_id: e.run_id.clone(),
            seq: *seq,
            event_type: e.event_type.clone(),
            category: e.category.clone(),
            content: e.content.clone(),
            metadata: e.metadata.clone(),
            created_at: time::truncate(e.created_at),
        })
        .collect()
}

/// Inserts the rows (skipping (owner, thread, seq) already present); how many went in.
async fn insert_rows<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    rows: &[RunEvent],
) -> StoreResult<u64> {
    let mut inserted = 0;
    // one multi-row INSERT per chunk (SQLite binds at most 32,766 values, MySQL 65,535)
    for chunk in rows.chunks(1000) {
        let mut sql = Sql::new(
            "INSERT INTO run_events (thread_id, run_id, owner, seq, event_type, category, content, metadata, created_at) VALUES ",
        );
        for (i, e) in chunk.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { ", (" });
            sql.bind(&e.thread_id).push(", ").bind(&e.run_id).push(", ");
            sql.bind(owner).push(", ").bind(e.seq).push(", ");
            sql.bind(&e.event_type)
                .push(", ")
                .bind(&e.category)
                .push(", ");
            sql.bind(Arg::json(&e.content)).push(", ");
            sql.bind(Arg::json(&e.metadata))
                .push(", ")
                .bind(e.created_at);
            sql.push(")");
        }
        sql.push(&D::insert_ignore("owner, thread_id, seq"));
        inserted += D::execute(conn, &sql).await?;
    }
    Ok(inserted)
}

/// Whether every event of `rows` is stored as itself (same run and type at its seq).
async fn all_ours<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    rows: &[RunEvent],
) -> StoreResult<bool> {
    for e in rows {
        let sql = Sql::new(
            "SELECT run_id, event_type FROM run_events WHERE owner = ? AND thread_id = ? AND seq = ?",
        )
        .arg(owner)
        .arg(&e.thread_id)
        .arg(e.seq);
        let Some(row) = D::fetch_optional(conn, &sql).await? else {
            return Ok(false);
        };
        if row.str("run_id")? != e.run_id || row.str("event_type")? != e.event_type {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Appends `events` inside `conn`'s transaction. `assigned`: the seqs an earlier attempt of
/// this append was given (reused, see the module docs). Returns the stored events.
pub(crate) async fn append_in<D: Dialect>(
    conn: &mut Conn<D>,
    owner: &str,
    events: &[NewRunEvent],
    assigned: Option<&[i64]>,
) -> StoreResult<Vec<RunEvent>> {
    if let Some(seqs) = assigned {
        keep_counters::<D>(conn, owner, events, seqs).await?;
        let rows = stored(events, seqs);
        let n = insert_rows::<D>(conn, owner, &rows).await?;
        if n == rows.len() as u64 || all_ours::<D>(conn, owner, &rows).await? {
            return Ok(rows);
        }
        // the seqs went to other events in between: take fresh ones
    }
    let seqs = allocate::<D>(conn, owner, events).await?;
    let rows = stored(events, &seqs);
    insert_rows::<D>(conn, owner, &rows).await?;
    Ok(rows)
}

/// ` (owner = ? AND thread_id = ?) OR ...` for a list of (owner, thread) keys.
pub(crate) fn push_keys<'k>(sql: &mut Sql, keys: impl IntoIterator<Item = (&'k str, &'k str)>) {
    for (i, (owner, thread)) in keys.into_iter().enumerate() {
        sql.push(if i == 0 { "(" } else { " OR (" });
        sql.push("owner = ")
            .bind(owner)
            .push(" AND thread_id = ")
            .bind(thread)
            .push(")");
    }
}

/// Fresh seqs for many appends at once: one counter bump and one read for every thread of
/// the batch (threads in sorted order). `lists` are (owner, events); returns each list's seqs.
async fn allocate_many<D: Dialect>(
    conn: &mut Conn<D>,
    lists: &[(&str, &[NewRunEvent])],
) -> StoreResult<Vec<Vec<i64>>> {
    let mut counts: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (owner, events) in lists {
        for e in *events {
            *counts.entry((owner, e.thread_id.as_str())).or_insert(0) += 1;
        }
    }
    let keys: Vec<((&str, &str), i64)> = counts.into_iter().collect();
    let mut next: BTreeMap<(String, String), i64> = BTreeMap::new();
    for chunk in keys.chunks(300) {
        let mut bump = Sql::new("INSERT INTO run_event_seqs (owner, thread_id, last_seq) VALUES ");
        for (i, ((owner, thread), n)) in chunk.iter().enumerate() {
            bump.push(if i == 0 { "(" } else { ", (" });
            bump.bind(*owner)
                .push(", ")
                .bind(*thread)
                .push(", ")
                .bind(*n)
                .push(")");
        }
        bump.push(&format!(
            "{}last_seq = run_event_seqs.last_seq + {}",
            D::on_conflict_update("owner, thread_id"),
            D::excluded("last_seq")
        ));
        D::execute(conn, &bump).await?;
        let mut read = Sql::new("SELECT owner, thread_id, last_seq FROM run_event_seqs WHERE ");
        push_keys(&mut read, chunk.iter().map(|(k, _)| *k));
        read.push(D::FOR_UPDATE);
        let counts: BTreeMap<(&str, &str), i64> = chunk.iter().cloned().collect();
        for row in D::fetch_all(conn, &read).await? {
            let key = (row.str("owner")?, row.str("thread_id")?);
            let n = counts
                .get(&(key.0.as_str(), key.1.as_str()))
                .copied()
                .unwrap_or(0);
            next.insert(key, row.i64("last_seq")? - n + 1);
        }
    }
    let mut out = Vec::with_capacity(lists.len());
    for (owner, events) in lists {
        let seqs = events
            .iter()
            .map(|e| {
                let slot = next
                    .entry((owner.to_string(), e.thread_id.clone()))
                    .or_insert(1);
                *slot += 1;
                *slot - 1
            })
            .collect();
        out.push(seqs);
    }
    Ok(out)
}

/// Appends many first-attempt event lists in one go (see [`allocate_many`]): one insert for
/// all their rows. Returns each list's seqs.
pub(crate) async fn append_many<D: Dialect>(
    conn: &mut Conn<D>,
    lists: &[(&str, &[NewRunEvent])],
) -> StoreResult<Vec<Vec<i64>>> {
    if lists.is_empty() {
        return Ok(Vec::new());
    }
    let seqs = allocate_many::<D>(conn, lists).await?;
    let mut by_owner: BTreeMap<&str, Vec<RunEvent>> = BTreeMap::new();
    for ((owner, events), seqs) in lists.iter().zip(&seqs) {
        by_owner
            .entry(owner)
            .or_default()
            .extend(stored(events, seqs));
    }
    for (owner, rows) in by_owner {
        insert_rows::<D>(conn, owner, &rows).await?;
    }
    Ok(seqs)
}

#[async_trait::async_trait]
impl<D: Dialect> RunEventStore for SqlRunEventStore<D> {
    async fn append_batch(
        &self,
        owner: Owner<'_>,
        events: Vec<NewRunEvent>,
    ) -> StoreResult<Vec<RunEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // the seqs of the last attempt, kept for the next one
        let assigned = parking_lot::Mutex::new(None::<Vec<i64>>);
        self.db
            .retry(|| async {
                let mut tx = self.db.begin(WriteClass::Background).await?;
                let prev = assigned.lock().clone();
                let rows =
                    append_in::<D>(&mut tx, owner.as_str(), &events, prev.as_deref()).await?;
                *assigned.lock() = Some(rows.iter().map(|e| e.seq).collect());
                tx.commit().await?;
                Ok(rows)
            })
            .await
    }

    async fn list(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        q: &RunEventQuery,
    ) -> StoreResult<Vec<RunEvent>> {
        let mut sql = filtered(
            "SELECT * FROM run_events WHERE owner = ? AND thread_id = ?",
            owner.as_str(),
            thread_id.as_str(),
            q.run_id.as_deref(),
            q.category.as_deref(),
        );
        if !q.event_types.is_empty() {
            D::and_in_list(&mut sql, "event_type", &q.event_types);
        }
        let limit = q.limit.map_or(i64::MAX, crate::sql::lim);
        match q.before_seq {
            // the last `limit` below the cursor, returned ascending
            Some(before) => sql
                .push(" AND seq < ")
                .bind(before)
                .push(" ORDER BY seq DESC"),
            None => sql
                .push(" AND seq > ")
                .bind(q.after_seq.unwrap_or(0))
                .push(" ORDER BY seq ASC"),
        };
        sql.push(" LIMIT ").bind(limit);
        let rows = self.db.fetch_all(&sql).await?;
        let mut events = rows
            .iter()
            .map(row_to_event)
            .collect::<StoreResult<Vec<_>>>()?;
        if q.before_seq.is_some() {
            events.reverse();
        }
        Ok(events)
    }

    async fn count(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: Option<RunId<'_>>,
        category: Option<&str>,
    ) -> StoreResult<u64> {
        let sql = filtered(
            "SELECT COUNT(*) AS n FROM run_events WHERE owner = ? AND thread_id = ?",
            owner.as_str(),
            thread_id.as_str(),
            run_id.map(RunId::as_str),
            category,
        );
        self.db.count(&sql).await
    }

    async fn delete_thread(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<u64> {
        let sql = Sql::new("DELETE FROM run_events WHERE thread_id = ? AND owner = ?")
            .arg(thread_id)
            .arg(owner);
        self.db.execute(WriteClass::Background, &sql).await
    }

    async fn delete_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<u64> {
        let sql =
            Sql::new("DELETE FROM run_events WHERE thread_id = ? AND run_id = ? AND owner = ?")
                .arg(thread_id)
                .arg(run_id)
                .arg(owner);
        self.db.execute(WriteClass::Background, &sql).await
    }
}
