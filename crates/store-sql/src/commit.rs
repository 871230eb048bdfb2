//! The group-commit applier of every SQL backend: a batch of units in one transaction.
//!
//! Checkpoints are planned and written inside the transaction, and the write caches learn
//! each one at once, so a later unit of the same thread in the same batch writes its deltas
//! against it. Nothing is published to the latest-checkpoint cache before the commit; when
//! the transaction fails, everything cached about the threads it touched is dropped (no plan
//! may refer to a blob that was never committed), and the units are applied one by one so a
//! bad unit fails alone.

use antler_store::commit::{ApplyUnits, WriteOp, WriteUnit, unclaimable};
use antler_store::{Claim, StoreError, StoreResult};

use crate::checkpointer::{Put, SqlCheckpointer, Values, encode_writes, writes_in};
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
        let mut tx = self.db.begin(WriteClass::Background).await?;
        for unit in units {
            for op in &unit.ops {
                self.apply_op(&mut tx, &unit.owner, op, touched).await?;
            }
        }
        tx.commit().await
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
    }

    async fn apply_op<'a>(
        &self,
        conn: &mut Conn<D>,
        owner: &str,
        op: &'a WriteOp,
        touched: &mut Touched<'a>,
    ) -> StoreResult<()> {
        match op {
            WriteOp::Checkpoint(p) => {
                let put = put_of(p);
                touched.threads.push(&p.thread_key);
                let (plans, written) = self.checkpointer.put_in(conn, &put).await?;
                let c = &put.checkpoint.id;
                self.checkpointer
                    .remember(put.thread_id, put.checkpoint_ns, c, plans, written);
                touched.puts.push(put);
                Ok(())
            }
            WriteOp::Writes(w) => {
                touched.threads.push(&w.thread_key);
                let encoded =
                    encode_writes(&w.writes).map_err(|e| StoreError::Backend(e.to_string()))?;
                let (t, ns) = (&w.thread_key, &w.checkpoint_ns);
                writes_in::<D>(conn, t, ns, &w.checkpoint_id, &w.task_id, &encoded).await?;
                touched.writes.push(w);
                Ok(())
            }
            WriteOp::Events(e) => {
                let prev = e.assigned.lock().clone();
                let rows = events::append_in::<D>(conn, owner, &e.events, prev.as_deref()).await?;
                *e.assigned.lock() = Some(rows.iter().map(|r| r.seq).collect());
                Ok(())
            }
            WriteOp::ClaimRun {
                run_id,
                worker_id,
                lease_until,
            } => claim::<D>(conn, run_id, worker_id, *lease_until).await,
            WriteOp::RunCompletion { run_id, completion } => {
                D::execute(conn, &runs::completion_sql(run_id, completion))
                    .await
                    .map(|_| ())
            }
            WriteOp::RunModelName { run_id, model_name } => {
                let sql = runs::model_name_sql(run_id, model_name.as_deref());
                D::execute(conn, &sql).await.map(|_| ())
            }
            WriteOp::RunProgress { run_id, progress } => {
                D::execute(conn, &runs::progress_sql(run_id, progress))
                    .await
                    .map(|_| ())
            }
            WriteOp::Thread { thread_id, update } => {
                match threads::update_in::<D>(conn, owner, thread_id, update.clone()).await {
                    Err(StoreError::NotFound) => Ok(()),
                    other => other.map(|_| ()),
                }
            }
        }
    }
}

/// Claims a run inside the batch; a run this worker already runs (the retry of a batch whose
/// commit answer was lost) counts as claimed.
async fn claim<D: Dialect>(
    conn: &mut Conn<D>,
    run_id: &str,
    worker_id: &str,
    lease_until: chrono::DateTime<chrono::Utc>,
) -> StoreResult<()> {
    match runs::claim_in::<D>(conn, run_id, worker_id, lease_until).await? {
        Claim::Claimed => Ok(()),
        other => {
            let ours = Sql::new(
                "SELECT 1 AS n FROM runs WHERE run_id = ? AND status = 'running' AND worker_id = ?",
            )
            .arg(run_id)
            .arg(worker_id);
            match D::fetch_optional(conn, &ours).await? {
                Some(row) => row.i64("n").map(|_| ()),
                None => Err(unclaimable(run_id, other)),
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
            Err(_) => {
                let mut out = Vec::with_capacity(units.len());
                for unit in units {
                    out.push(self.apply_together(&[unit]).await);
                }
                out
            }
        }
    }
}
