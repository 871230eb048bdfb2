//! The group-commit applier of every SQL backend: a batch of units in one transaction.
//!
//! Checkpoints are planned and written inside the transaction, and the write caches learn
//! each one at once, so a later unit of the same thread in the same batch writes its deltas
//! against it. Nothing is published to the latest-checkpoint cache before the commit; when
//! the transaction fails, everything cached about the threads it touched is dropped (no plan
//! may refer to a blob that was never committed), and the units are applied one by one so a
//! bad unit fails alone.
//!
//! Rows of one kind from every unit of a batch are written together: all checkpoint blobs in
//! one multi-row insert, all heads in one upsert, all pending writes in one upsert, all run
//! events with one counter bump and one insert, every thread touched with one locking read
//! and one write. Per run there remain its own row's statements (claim, completion), so the
//! statements of a batch grow with the number of runs in it by two, not by twenty; on a
//! database this process owns, a run claimed and completed in the same batch takes one.

use std::collections::{BTreeMap, HashMap};

use antler_store::commit::{
    ApplyUnits, EventsPut, WriteOp, WriteUnit, apply_in_chain, settle_claim,
};
use antler_store::{Claim, StoreError, StoreResult, ThreadUpdate};

use crate::checkpointer::{
    Put, SqlCheckpointer, Values, Version, WriteRow, copy_all, encode_writes, insert_blobs,
    upsert_heads, upsert_writes, version_in, write_rows,
};
use crate::repo::{events, runs, threads};
use crate::sql::{Conn, Db, Dialect, Sql, SqlRow, WriteClass};

/// [`ApplyUnits`] on any SQL backend.
pub(crate) struct SqlApplier<D: Dialect> {
    pub(crate) db: Db<D>,
    pub(crate) checkpointer: SqlCheckpointer<D>,
}

/// What a batch did that the caches learn after it commits (or forget if it does not).
#[derive(Default)]
struct Touched<'a> {
    puts: Vec<Put<'a>>,
    writes: Vec<&'a antler_store::commit::WritesPut>,
    threads: Vec<&'a str>,
    /// The latest checkpoint versions the batch read of threads whose run it claimed.
    confirms: Vec<(&'a str, Version)>,
}

/// The rows of a batch, written together when every unit has been staged.
#[derive(Default)]
struct Staged<'a> {
    blobs: Vec<crate::checkpointer::BlobRow>,
    heads: Vec<crate::checkpointer::HeadRow>,
    /// One row per key (a later one replaces an earlier one in place).
    writes: Vec<WriteRow>,
    write_keys: HashMap<(String, String, String, String, i64), usize>,
    events: Vec<(&'a str, &'a EventsPut)>,
    /// Per (owner, thread): its updates in order.
    threads: BTreeMap<(&'a str, &'a str), Vec<ThreadUpdate>>,
    /// Runs claimed and completed in this batch (see [`merged_claims`]): run id -> its
    /// claim's worker and lease, written with the completion.
    merged: HashMap<&'a str, (&'a str, chrono::DateTime<chrono::Utc>)>,
}

/// On a database this process owns, the runs of a batch whose claim (not the create-time
/// kind) and completion are both in it: one statement moves each from pending to its final
/// status, at the completion's place, instead of a claim and a completion.
fn merged_claims<'a>(
    units: &[&'a WriteUnit],
) -> HashMap<&'a str, (&'a str, chrono::DateTime<chrono::Utc>)> {
    let mut claims = HashMap::new();
    let mut merged = HashMap::new();
    for op in units.iter().flat_map(|u| &u.ops) {
        match op {
            WriteOp::ClaimRun {
                run_id,
                worker_id,
                lease_until,
                started: None,
            } => {
                claims.insert(run_id.as_str(), (worker_id.as_str(), *lease_until));
            }
            WriteOp::RunCompletion { run_id, .. } => {
                if let Some(claim) = claims.remove(run_id.as_str()) {
                    merged.insert(run_id.as_str(), claim);
                }
            }
            _ => {}
        }
    }
    merged
}

impl Staged<'_> {
    fn add_writes(&mut self, rows: Vec<WriteRow>) {
        for r in rows {
            let key = (
                r.thread_id.clone(),
                r.ns.clone(),
                r.checkpoint_id.clone(),
                r.task_id.clone(),
                r.idx,
            );
            match self.write_keys.get(&key) {
                Some(&i) => self.writes[i] = r,
                None => {
                    self.write_keys.insert(key, self.writes.len());
                    self.writes.push(r);
                }
            }
        }
    }
}

fn put_of(p: &antler_store::commit::CheckpointPut) -> Put<'_> {
    Put {
        thread_id: &p.thread_key,
        checkpoint_ns: &p.checkpoint_ns,
        parent_id: p.parent_id.as_deref(),
        checkpoint: &p.checkpoint,
        values: Values::Shared(&p.values),
        metadata: &p.metadata,
        new_versions: &p.new_versions,
    }
}

impl<D: Dialect> SqlApplier<D> {
    /// Applies `units` in one transaction (retried while it fails transiently).
    async fn apply_together(&self, units: &[&WriteUnit]) -> StoreResult<()> {
        self.db
            .retry(|| async {
                let mut touched = Touched::default();
                let out = self.apply_in_tx(units, &mut touched).await;
                match &out {
                    Ok(()) => self.publish(&touched),
                    Err(_) => {
                        for t in &touched.threads {
                            self.checkpointer.forget_thread(t);
                        }
                    }
                }
                out
            })
            .await
    }

    async fn apply_in_tx<'a>(
        &self,
        units: &[&'a WriteUnit],
        touched: &mut Touched<'a>,
    ) -> StoreResult<()> {
        // a new run's row is a write its client waits on (see `WriteClass`)
        let acked = units
            .iter()
            .any(|u| u.ops.iter().any(|op| matches!(op, WriteOp::PutRun(_))));
        let class = if acked {
            WriteClass::Ack
        } else {
            WriteClass::Background
        };
        let mut tx = self.db.begin(class).await?;
        let mut staged = Staged::default();
        if self.db.owned {
            staged.merged = merged_claims(units);
        }
        insert_new_runs::<D>(&mut tx, units).await?;
        for unit in units {
            for op in &unit.ops {
                self.stage(&mut tx, &unit.owner, op, &mut staged, touched)
                    .await?;
            }
        }
        self.flush(&mut tx, staged).await?;
        self.read_claimed_versions(&mut tx, units, touched).await?;
        tx.commit().await
    }

    /// Where other processes write too, a run's claim also reads its thread's latest
    /// checkpoint version: once committed, the run's first read of that checkpoint trusts
    /// the cache without a query (and a transaction) of its own. After the claim no other
    /// run can write the thread.
    async fn read_claimed_versions<'a>(
        &self,
        conn: &mut Conn<D>,
        units: &[&'a WriteUnit],
        touched: &mut Touched<'a>,
    ) -> StoreResult<()> {
        if self.db.owned {
            return Ok(());
        }
        let claiming = units.iter().filter(|u| u.ops.iter().any(claims_a_run));
        for unit in claiming {
            if let Some(v) = version_in::<D>(conn, &unit.key, "").await? {
                touched.confirms.push((&unit.key, v));
            }
        }
        Ok(())
    }

    /// Writes what the units staged.
    async fn flush(&self, conn: &mut Conn<D>, staged: Staged<'_>) -> StoreResult<()> {
        insert_blobs::<D>(conn, &staged.blobs).await?;
        upsert_heads::<D>(conn, &staged.heads).await?;
        upsert_writes::<D>(conn, &staged.writes).await?;
        let lists: Vec<(&str, &[antler_store::NewRunEvent])> = staged
            .events
            .iter()
            .map(|(owner, e)| (*owner, e.events.as_slice()))
            .collect();
        let seqs = events::append_many::<D>(conn, &lists).await?;
        for ((_, e), seqs) in staged.events.iter().zip(seqs) {
            *e.assigned.lock() = Some(seqs);
        }
        let updates = staged
            .threads
            .into_iter()
            .map(|((owner, thread), list)| (owner, thread, list))
            .collect();
        threads::update_many::<D>(conn, updates).await
    }

    fn publish(&self, touched: &Touched<'_>) {
        for put in &touched.puts {
            self.checkpointer.publish_latest(put);
        }
        for w in &touched.writes {
            self.checkpointer.writes_committed(
                &w.thread_key,
                &w.checkpoint_ns,
                &w.checkpoint_id,
                &w.task_id,
                &w.writes,
            );
        }
        for (thread, version) in &touched.confirms {
            self.checkpointer.confirm_latest(thread, "", version);
        }
    }

    /// Stages one op: rows of the kinds written together go to `staged`, a run's own row
    /// is written at once (in unit order: a run's completion precedes the next run's claim).
    async fn stage<'a>(
        &self,
        conn: &mut Conn<D>,
        owner: &'a str,
        op: &'a WriteOp,
        staged: &mut Staged<'a>,
        touched: &mut Touched<'a>,
    ) -> StoreResult<()> {
        match op {
            WriteOp::Checkpoint(p) => {
                let put = put_of(p);
                touched.threads.push(&p.thread_key);
                let ns = &p.checkpoint_ns;
                let earlier: Vec<i64> = (staged.blobs.iter())
                    .filter_map(|b| b.id_in(&p.thread_key, ns))
                    .collect();
                let (rows, plans, written) =
                    self.checkpointer.prepare(conn, &put, &earlier).await?;
                // the next unit's plan of this thread builds on this one
                let c = &put.checkpoint.id;
                self.checkpointer
                    .remember(put.thread_id, put.checkpoint_ns, c, plans, written);
                staged.blobs.extend(rows.blobs);
                staged.heads.push(rows.head);
                touched.puts.push(put);
            }
            WriteOp::Writes(w) => {
                touched.threads.push(&w.thread_key);
                let encoded =
                    encode_writes(&w.writes).map_err(|e| StoreError::Backend(e.to_string()))?;
                let (t, ns) = (&w.thread_key, &w.checkpoint_ns);
                staged.add_writes(write_rows(t, ns, &w.checkpoint_id, &w.task_id, &encoded));
                touched.writes.push(w);
            }
            WriteOp::Events(e) => {
                let prev = e.assigned.lock().clone();
                match prev {
                    // a retry keeps its seqs (see `repo::events`)
                    Some(seqs) => {
                        events::append_in::<D>(conn, owner, &e.events, Some(&seqs)).await?;
                    }
                    None => staged.events.push((owner, e)),
                }
            }
            WriteOp::Thread { thread_id, update } => {
                let list = staged.threads.entry((owner, thread_id)).or_default();
                list.push(update.clone());
            }
            WriteOp::ClaimRun { run_id, .. } if staged.merged.contains_key(run_id.as_str()) => {}
            WriteOp::ClaimRun {
                run_id,
                worker_id,
                lease_until,
                started,
            } => {
                let claim = self.claim(conn, run_id, worker_id, *lease_until).await?;
                settle_claim(run_id, started.as_deref(), claim)?;
            }
            WriteOp::RunCompletion { run_id, completion } => {
                if let Some(&(worker, lease)) = staged.merged.get(run_id.as_str()) {
                    let sql = runs::claimed_completion_sql(run_id, completion, worker, lease);
                    if D::execute(conn, &sql).await? == 1 {
                        return Ok(());
                    }
                    // not claimable as it stands: the claim's own checks say why
                    let claim = self.claim(conn, run_id, worker, lease).await?;
                    settle_claim(run_id, None, claim)?;
                }
                D::execute(conn, &runs::completion_sql(run_id, completion)).await?;
            }
            WriteOp::RunModelName { run_id, model_name } => {
                let sql = runs::model_name_sql(run_id, model_name.as_deref());
                D::execute(conn, &sql).await?;
            }
            WriteOp::RunProgress { run_id, progress } => {
                D::execute(conn, &runs::progress_sql(run_id, progress)).await?;
            }
            WriteOp::CopyThread { thread_id, new_id } => {
                threads::copy_in::<D>(conn, owner, thread_id, new_id).await?;
                let from = antler_graph::thread_key(owner, thread_id);
                let to = antler_graph::thread_key(owner, new_id);
                self.checkpointer.forget_thread(&to);
                copy_all::<D>(conn, &from, &to).await?;
            }
            // inserted before the batch's other ops (`insert_new_runs`)
            WriteOp::PutRun(_) => {}
        }
        Ok(())
    }

    /// Claims a run. On a database this process owns, the order of a thread's runs is kept
    /// by this process (it starts a thread's runs one after the other), so a pending run is
    /// claimed with one statement; anything else takes the full check.
    async fn claim(
        &self,
        conn: &mut Conn<D>,
        run_id: &str,
        worker_id: &str,
        lease_until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Claim> {
        if self.db.owned {
            // (only SQLite owns its database: a refused statement leaves its transaction open)
            let sql = runs::claim_sql(run_id, worker_id, lease_until);
            match D::execute(conn, &sql).await {
                Ok(1) => return Ok(Claim::Claimed),
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        claim::<D>(conn, run_id, worker_id, lease_until).await
    }
}

/// Claims a run inside the batch; a run this worker already runs (the retry of a batch whose
/// commit answer was lost) counts as claimed.
async fn claim<D: Dialect>(
    conn: &mut Conn<D>,
    run_id: &str,
    worker_id: &str,
    lease_until: chrono::DateTime<chrono::Utc>,
) -> StoreResult<Claim> {
    match runs::claim_in::<D>(conn, run_id, worker_id, lease_until).await? {
        Claim::Claimed => Ok(Claim::Claimed),
        other => {
            let ours = Sql::new(
                "SELECT 1 AS n FROM runs WHERE run_id = ? AND status = 'running' AND worker_id = ?",
            )
            .arg(run_id)
            .arg(worker_id);
            match D::fetch_optional(conn, &ours).await? {
                Some(row) => row.i64("n").map(|_| Claim::Claimed),
                None => Ok(other),
            }
        }
    }
}

#[async_trait::async_trait]
impl<D: Dialect> ApplyUnits for SqlApplier<D> {
    async fn apply(&self, units: &[WriteUnit]) -> Vec<StoreResult<()>> {
        // per thread in submission order, threads in key order (a stable sort): concurrent
        // batches lock the same rows in the same order
        let mut order: Vec<&WriteUnit> = units.iter().collect();
        order.sort_by(|a, b| a.key.cmp(&b.key));
        match self.apply_together(&order).await {
            Ok(()) => units.iter().map(|_| Ok(())).collect(),
            Err(e) if units.len() == 1 => vec![Err(e)],
            // the database, not a unit, failed (still busy, unreachable after the retries):
            // one by one would wait as long again per unit
            Err(e @ StoreError::Transient(_)) => units.iter().map(|_| Err(e.clone())).collect(),
            Err(_) => {
                let mut out = Vec::with_capacity(units.len());
                for unit in units {
                    out.push(apply_in_chain(unit, self.apply_together(&[unit])).await);
                }
                out
            }
        }
    }
}

/// The new run rows of a batch, first and together (a few hundred per statement): a run's
/// claim later in the batch finds its row, and no other op reads a run that is not yet
/// created.
async fn insert_new_runs<D: Dialect>(conn: &mut Conn<D>, units: &[&WriteUnit]) -> StoreResult<()> {
    let rows: Vec<antler_store::Run> = (units.iter().flat_map(|u| &u.ops))
        .filter_map(|op| match op {
            WriteOp::PutRun(run) => Some(run.as_stored()),
            _ => None,
        })
        .collect();
    for chunk in rows.chunks(200) {
        D::execute(conn, &runs::insert_many_sql(chunk)).await?;
    }
    Ok(())
}

/// Whether `op` (as committed) moved a run to running.
fn claims_a_run(op: &WriteOp) -> bool {
    match op {
        WriteOp::ClaimRun { started, .. } => started.as_ref().is_none_or(|s| *s.lock()),
        _ => false,
    }
}
