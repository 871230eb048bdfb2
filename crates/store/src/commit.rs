//! Group commit: units of durable writes queued to the writers of a database (one lane on
//! SQLite, a few on PostgreSQL / MySQL, a thread's units always in the same lane), each of
//! which applies every unit waiting in its lane at that moment in one transaction.
//!
//! A running run hands its writes over in [`WriteUnit`]s (a step's checkpoint, its pending
//! writes and run events; the run's start and end folded into its first and last unit) and
//! gets a [`Commit`] back, which resolves once the unit is durable. The queue's worker takes
//! the first unit, everything queued behind it (up to [`MAX_BATCH`]), and hands the batch to
//! the backend's [`ApplyUnits`]: while one transaction commits, the next batch gathers, so
//! concurrent runs share commits instead of queueing for one each. Units are applied in the
//! order they were submitted, and a unit's [`Commit`] never resolves before the unit's data
//! is committed.
//!
//! A backend applies a batch in one transaction; when that fails it applies the units one by
//! one, so a bad unit fails alone (a transient failure is the database's, and fails them all). Every op is idempotent (checkpoint blobs have fresh ids and
//! heads are upserts, pending writes are upserts, run events keep the seqs of their first
//! attempt), so a batch retried after a commit whose answer was lost stores nothing twice.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use antler_graph::{ChannelValue, ChannelVersion, Checkpoint};
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::{
    NewRunEvent, Owner, RunCompletion, RunEventStore, RunId, RunProgress, StoreError, StoreResult,
    ThreadId, ThreadUpdate,
};

/// Most units one transaction applies.
pub const MAX_BATCH: usize = 256;

/// A checkpoint in the engine's shared form, keyed by its storage thread key
/// ([`antler_graph::thread_key`]).
#[derive(Clone, Debug)]
pub struct CheckpointPut {
    pub thread_key: String,
    pub checkpoint_ns: String,
    pub parent_id: Option<String>,
    /// The head; `channel_values` is empty (the values are in `values`).
    pub checkpoint: Checkpoint,
    /// Every non-empty channel.
    pub values: BTreeMap<String, ChannelValue>,
    pub metadata: Map<String, Value>,
    pub new_versions: BTreeMap<String, ChannelVersion>,
}

/// One task's pending writes against a checkpoint.
#[derive(Clone, Debug)]
pub struct WritesPut {
    pub thread_key: String,
    pub checkpoint_ns: String,
    pub checkpoint_id: String,
    pub task_id: String,
    pub writes: Vec<(String, Value)>,
}

/// Run events to append, with the seqs an earlier attempt of the same append was given (so
/// a retry stores each event once).
#[derive(Debug, Default)]
pub struct EventsPut {
    pub events: Vec<NewRunEvent>,
    pub assigned: Mutex<Option<Vec<i64>>>,
}

impl Clone for EventsPut {
    fn clone(&self) -> Self {
        EventsPut {
            events: self.events.clone(),
            assigned: Mutex::new(self.assigned.lock().clone()),
        }
    }
}

impl EventsPut {
    pub fn new(events: Vec<NewRunEvent>) -> Self {
        EventsPut {
            events,
            assigned: Mutex::new(None),
        }
    }
}

/// One write of a unit.
#[derive(Clone, Debug)]
pub enum WriteOp {
    Checkpoint(Box<CheckpointPut>),
    Writes(WritesPut),
    Events(EventsPut),
    /// Moves a pending run to running under the worker's lease (as
    /// [`RunStore::claim`](crate::RunStore::claim)). A run this worker already runs (a retry
    /// after a lost answer) counts as claimed. Without `started` the unit fails when the run
    /// cannot start; with it (a new run's claim in the unit of its row) the run stays pending,
    /// the unit does not fail, and `started` says which once the unit committed.
    ClaimRun {
        run_id: String,
        worker_id: String,
        lease_until: DateTime<Utc>,
        started: Option<Arc<Mutex<bool>>>,
    },
    /// [`RunStore::update_completion`](crate::RunStore::update_completion).
    RunCompletion {
        run_id: String,
        completion: RunCompletion,
    },
    /// [`RunStore::update_model_name`](crate::RunStore::update_model_name).
    RunModelName {
        run_id: String,
        model_name: Option<String>,
    },
    /// [`RunStore::update_progress`](crate::RunStore::update_progress).
    RunProgress {
        run_id: String,
        progress: RunProgress,
    },
    /// [`ThreadStore::update`](crate::ThreadStore::update) of the unit owner's thread (a
    /// thread deleted meanwhile is not an error).
    Thread {
        thread_id: String,
        update: ThreadUpdate,
    },
    /// [`ThreadStore::copy`](crate::ThreadStore::copy) of the unit owner's thread to `new_id`
    /// together with its checkpoints (fails with `NotFound` when the thread is gone).
    CopyThread {
        thread_id: String,
        new_id: String,
    },
    /// [`RunStore::put`](crate::RunStore::put) of a new run row.
    PutRun(Box<crate::Run>),
}

/// Writes committed atomically, on behalf of `owner`.
#[derive(Debug)]
pub struct WriteUnit {
    pub owner: String,
    /// The thread whose rows the unit writes (its storage key): a batch applies units in
    /// submission order per thread and in the order of this key across threads, so two
    /// batches lock rows in the same order.
    pub key: String,
    pub ops: Vec<WriteOp>,
    /// The units this one follows (a run's steps), if any: see [`Chain`].
    pub chain: Option<Arc<Chain>>,
}

impl WriteUnit {
    pub fn new(owner: impl Into<String>, key: impl Into<String>) -> Self {
        WriteUnit {
            owner: owner.into(),
            key: key.into(),
            ops: Vec::new(),
            chain: None,
        }
    }

    /// The unit in `chain`.
    pub fn in_chain(mut self, chain: &Arc<Chain>) -> Self {
        self.chain = Some(chain.clone());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The error of an earlier unit of its chain: this one must not be applied.
    pub fn chain_broken(&self) -> Option<StoreError> {
        self.chain.as_ref()?.0.get().cloned()
    }

    /// Records this unit's failure on its chain (the later units fail unapplied).
    pub fn break_chain(&self, e: &StoreError) {
        if let Some(c) = &self.chain {
            let _ = c.0.set(e.clone());
        }
    }
}

/// Units that commit in submission order or not at all: once one fails, the later ones fail
/// with its error without being applied. A run's steps form a chain, so a step's checkpoint
/// (a delta on its parent's) never lands after its parent was lost: a run's committed steps
/// are always a prefix of its steps.
#[derive(Debug, Default)]
pub struct Chain(OnceLock<StoreError>);

/// A backend's way of applying a batch of units.
#[async_trait::async_trait]
pub trait ApplyUnits: Send + Sync + 'static {
    /// Applies the units in order, in one transaction where possible; one result per unit.
    async fn apply(&self, units: &[WriteUnit]) -> Vec<StoreResult<()>>;
}

/// Resolves when its unit is committed (or failed). Dropping it does not cancel the unit.
pub struct Commit(CommitState);

enum CommitState {
    Waiting(oneshot::Receiver<StoreResult<()>>),
    Ready(Option<StoreResult<()>>),
}

impl Commit {
    /// An already-resolved commit (an empty unit, a queue that is gone).
    pub fn ready(result: StoreResult<()>) -> Self {
        Commit(CommitState::Ready(Some(result)))
    }
}

impl Future for Commit {
    type Output = StoreResult<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StoreResult<()>> {
        match &mut self.0 {
            CommitState::Waiting(rx) => Pin::new(rx).poll(cx).map(|r| {
                r.unwrap_or_else(|_| {
                    Err(StoreError::Backend("the commit queue stopped".to_string()))
                })
            }),
            CommitState::Ready(r) => Poll::Ready(r.take().unwrap_or(Ok(()))),
        }
    }
}

type Job = (WriteUnit, oneshot::Sender<StoreResult<()>>);

struct Inner {
    applier: Arc<dyn ApplyUnits>,
    /// Run events kept outside the database (JSONL, memory): appended after the batch.
    events: RwLock<Option<Arc<dyn RunEventStore>>>,
    /// One worker per lane, started on first use.
    lanes: Vec<OnceLock<mpsc::UnboundedSender<Job>>>,
    stats: CommitStats,
}

/// Counters of a queue (for benchmarks and `/metrics`).
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Batches applied (transactions, when a batch commits at once).
    pub batches: std::sync::atomic::AtomicU64,
    /// Units applied.
    pub units: std::sync::atomic::AtomicU64,
}

/// The per-database queue (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct CommitQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CommitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitQueue").finish_non_exhaustive()
    }
}

impl CommitQueue {
    /// One writer: every unit in one lane (a database with a single writer, SQLite).
    pub fn new(applier: Arc<dyn ApplyUnits>) -> Self {
        Self::with_lanes(applier, 1)
    }

    /// `lanes` writers, each with its own batches (on its own connection): a thread's units
    /// always take the same lane (by its key), so per thread they still apply in submission
    /// order, while batches of other threads commit beside them. On a server database one
    /// writer serializes every statement of every run on one connection; a few lanes let the
    /// database work on several transactions at once.
    pub fn with_lanes(applier: Arc<dyn ApplyUnits>, lanes: usize) -> Self {
        CommitQueue {
            inner: Arc::new(Inner {
                applier,
                events: RwLock::new(None),
                lanes: (0..lanes.max(1)).map(|_| OnceLock::new()).collect(),
                stats: CommitStats::default(),
            }),
        }
    }

    fn lane_of(&self, key: &str) -> &OnceLock<mpsc::UnboundedSender<Job>> {
        use std::hash::{Hash, Hasher};
        let lanes = &self.inner.lanes;
        if lanes.len() == 1 {
            return &lanes[0];
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &lanes[(h.finish() % lanes.len() as u64) as usize]
    }

    /// Routes run events to `events` instead of the backend's own tables (they are appended
    /// right after the batch that carried them commits).
    pub fn route_events(&self, events: Arc<dyn RunEventStore>) {
        *self.inner.events.write() = Some(events);
    }

    /// Queues a unit; the returned [`Commit`] resolves when it is durable. Units are applied
    /// in submission order. Must be called inside a Tokio runtime (the worker starts on the
    /// first unit).
    pub fn submit(&self, unit: WriteUnit) -> Commit {
        if unit.is_empty() {
            return Commit::ready(Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        let sender = self.lane_of(&unit.key).get_or_init(|| self.start());
        match sender.send((unit, tx)) {
            Ok(()) => Commit(CommitState::Waiting(rx)),
            Err(_) => Commit::ready(Err(StoreError::Backend(
                "the commit queue stopped".to_string(),
            ))),
        }
    }

    /// The queue's counters.
    pub fn stats(&self) -> &CommitStats {
        &self.inner.stats
    }

    fn start(&self) -> mpsc::UnboundedSender<Job> {
        let (tx, rx) = mpsc::unbounded_channel();
        // The worker holds the queue weakly: it ends when the last handle is dropped and
        // everything queued has been applied.
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(worker(inner, rx));
        tx
    }
}

async fn worker(inner: std::sync::Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut batch: Vec<Job> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else {
            for (_, tx) in batch.drain(..) {
                let _ = tx.send(Err(StoreError::Backend("the commit queue stopped".into())));
            }
            continue;
        };
        run_batch(&inner, &mut batch).await;
    }
}

async fn run_batch(inner: &Inner, batch: &mut Vec<Job>) {
    use std::sync::atomic::Ordering::Relaxed;
    let external = inner.events.read().clone();
    let mut units: Vec<WriteUnit> = Vec::with_capacity(batch.len());
    let mut senders = Vec::with_capacity(batch.len());
    let mut outside: Vec<(String, Vec<EventsPut>)> = Vec::new();
    for (mut unit, tx) in batch.drain(..) {
        if external.is_some() {
            let (events, rest): (Vec<WriteOp>, Vec<WriteOp>) = unit
                .ops
                .into_iter()
                .partition(|op| matches!(op, WriteOp::Events(_)));
            unit.ops = rest;
            let events = events
                .into_iter()
                .filter_map(|op| match op {
                    WriteOp::Events(e) => Some(e),
                    _ => None,
                })
                .collect();
            outside.push((unit.owner.clone(), events));
        }
        units.push(unit);
        senders.push(tx);
    }
    let count = units.len() as u64;
    let mut results = apply_chained(inner.applier.as_ref(), units).await;
    if let Some(store) = external {
        for ((owner, events), result) in outside.into_iter().zip(results.iter_mut()) {
            if result.is_err() {
                continue;
            }
            for e in events {
                if let Err(err) = store.append_batch(Owner(&owner), e.events).await {
                    *result = Err(err);
                    break;
                }
            }
        }
    }
    inner.stats.batches.fetch_add(1, Relaxed);
    inner.stats.units.fetch_add(count, Relaxed);
    for (tx, result) in senders.into_iter().zip(results) {
        let _ = tx.send(result);
    }
}

/// Applies the units whose chain holds (a failure breaks the unit's chain); the others fail
/// with their chain's error, unapplied.
async fn apply_chained(applier: &dyn ApplyUnits, units: Vec<WriteUnit>) -> Vec<StoreResult<()>> {
    let broken: Vec<Option<StoreError>> = units.iter().map(WriteUnit::chain_broken).collect();
    let live: Vec<WriteUnit> = units
        .into_iter()
        .zip(&broken)
        .filter(|(_, b)| b.is_none())
        .map(|(u, _)| u)
        .collect();
    let applied = if live.is_empty() {
        Vec::new()
    } else {
        applier.apply(&live).await
    };
    for (unit, r) in live.iter().zip(&applied) {
        if let Err(e) = r {
            unit.break_chain(e);
        }
    }
    let mut applied = applied.into_iter();
    broken
        .into_iter()
        .map(|b| match b {
            Some(e) => Err(e),
            None => applied.next().unwrap_or(Ok(())),
        })
        .collect()
}

/// Applies units through the repository traits, op by op (for backends without
/// transactions: the in-memory stores).
pub struct StoreApplier {
    pub threads: Arc<dyn crate::ThreadStore>,
    pub runs: Arc<dyn crate::RunStore>,
    pub events: Arc<dyn RunEventStore>,
    pub checkpoints: Arc<dyn antler_graph::Checkpointer>,
}

#[async_trait::async_trait]
impl ApplyUnits for StoreApplier {
    async fn apply(&self, units: &[WriteUnit]) -> Vec<StoreResult<()>> {
        let mut out = Vec::with_capacity(units.len());
        for unit in units {
            out.push(apply_in_chain(unit, apply_unit(self, unit)).await);
        }
        out
    }
}

/// Applies one unit of a batch applied unit by unit: not at all when an earlier unit of its
/// chain failed; a failure breaks its chain.
pub async fn apply_in_chain(
    unit: &WriteUnit,
    apply: impl Future<Output = StoreResult<()>>,
) -> StoreResult<()> {
    if let Some(e) = unit.chain_broken() {
        return Err(e);
    }
    let r = apply.await;
    if let Err(e) = &r {
        unit.break_chain(e);
    }
    r
}

async fn apply_unit(stores: &StoreApplier, unit: &WriteUnit) -> StoreResult<()> {
    for op in &unit.ops {
        apply_op(stores, &unit.owner, op).await?;
    }
    Ok(())
}

fn checkpoint_err(e: antler_graph::CheckpointError) -> StoreError {
    StoreError::Backend(e.to_string())
}

async fn apply_op(stores: &StoreApplier, owner: &str, op: &WriteOp) -> StoreResult<()> {
    let cp = &stores.checkpoints;
    match op {
        WriteOp::Checkpoint(p) => cp
            .put_shared(
                &p.thread_key,
                &p.checkpoint_ns,
                p.parent_id.as_deref(),
                &p.checkpoint,
                &p.values,
                &p.metadata,
                &p.new_versions,
            )
            .await
            .map_err(checkpoint_err),
        WriteOp::Writes(w) => cp
            .put_writes(
                &w.thread_key,
                &w.checkpoint_ns,
                &w.checkpoint_id,
                &w.task_id,
                &w.writes,
            )
            .await
            .map_err(checkpoint_err),
        WriteOp::Events(e) => stores
            .events
            .append_batch(Owner(owner), e.events.clone())
            .await
            .map(|_| ()),
        WriteOp::ClaimRun {
            run_id,
            worker_id,
            lease_until,
            started,
        } => {
            let claim = claim(stores, owner, run_id, worker_id, *lease_until).await?;
            settle_claim(run_id, started.as_deref(), claim)
        }
        WriteOp::RunCompletion { run_id, completion } => stores
            .runs
            .update_completion(RunId(run_id), completion)
            .await
            .map(|_| ()),
        WriteOp::RunModelName { run_id, model_name } => stores
            .runs
            .update_model_name(RunId(run_id), model_name.as_deref())
            .await
            .map(|_| ()),
        WriteOp::RunProgress { run_id, progress } => {
            stores.runs.update_progress(RunId(run_id), progress).await
        }
        WriteOp::CopyThread { thread_id, new_id } => {
            stores
                .threads
                .copy(Owner(owner), ThreadId(thread_id), ThreadId(new_id))
                .await?;
            let (from, to) = (
                antler_graph::thread_key(owner, thread_id),
                antler_graph::thread_key(owner, new_id),
            );
            cp.copy_thread(&from, &to).await.map_err(checkpoint_err)
        }
        WriteOp::PutRun(run) => stores.runs.put(run).await,
        WriteOp::Thread { thread_id, update } => {
            match stores
                .threads
                .update(Owner(owner), ThreadId(thread_id), update.clone())
                .await
            {
                Err(StoreError::NotFound) => Ok(()),
                other => other.map(|_| ()),
            }
        }
    }
}

async fn claim(
    stores: &StoreApplier,
    owner: &str,
    run_id: &str,
    worker_id: &str,
    lease_until: DateTime<Utc>,
) -> StoreResult<crate::Claim> {
    match stores
        .runs
        .claim(RunId(run_id), worker_id, lease_until)
        .await?
    {
        crate::Claim::Claimed => Ok(crate::Claim::Claimed),
        other => {
            let run = stores.runs.get(Owner(owner), RunId(run_id)).await?;
            let ours = run.is_some_and(|r| {
                r.status == crate::RunStatus::Running && r.worker_id.as_deref() == Some(worker_id)
            });
            Ok(if ours { crate::Claim::Claimed } else { other })
        }
    }
}

/// The unit's outcome of a [`WriteOp::ClaimRun`] that got `claim`: see there.
pub fn settle_claim(
    run_id: &str,
    started: Option<&Mutex<bool>>,
    claim: crate::Claim,
) -> StoreResult<()> {
    let claimed = claim == crate::Claim::Claimed;
    match started {
        Some(started) => *started.lock() = claimed,
        None if !claimed => return Err(unclaimable(run_id, claim)),
        None => {}
    }
    Ok(())
}

const UNCLAIMABLE: &str = "run cannot start: ";

/// The error of a unit whose run could not be claimed ([`claim_failure`] reads it back).
pub fn unclaimable(run_id: &str, claim: crate::Claim) -> StoreError {
    let why = match claim {
        crate::Claim::Busy => "busy",
        _ => "gone",
    };
    StoreError::Conflict(format!("{UNCLAIMABLE}{why} ({run_id})"))
}

/// Why a unit's `ClaimRun` failed: [`Claim::Busy`](crate::Claim::Busy) (another run of the
/// thread is running) or [`Claim::Gone`](crate::Claim::Gone); `None` for any other error.
pub fn claim_failure(e: &StoreError) -> Option<crate::Claim> {
    match e {
        StoreError::Conflict(m) => match m.strip_prefix(UNCLAIMABLE)? {
            w if w.starts_with("busy") => Some(crate::Claim::Busy),
            _ => Some(crate::Claim::Gone),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The queue's own mechanics (batching, order, per-unit results) with an applier that
    //! records what it is given; what the backends do with a batch is tested on real
    //! databases in `antler-store-sql`.
    use super::*;
    use tokio::sync::Notify;

    /// Records each batch as the owners of its units; fails units owned by "bad"; the first
    /// batch waits for `gate`.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<String>>>,
        gate: Notify,
    }

    #[async_trait::async_trait]
    impl ApplyUnits for Arc<Recorder> {
        async fn apply(&self, units: &[WriteUnit]) -> Vec<StoreResult<()>> {
            let first = self.batches.lock().is_empty();
            self.batches
                .lock()
                .push(units.iter().map(|u| u.owner.clone()).collect());
            if first {
                self.gate.notified().await;
            }
            units
                .iter()
                .map(|u| match u.owner.as_str() {
                    "bad" => Err(StoreError::Backend("bad unit".into())),
                    _ => Ok(()),
                })
                .collect()
        }
    }

    fn unit(owner: &str) -> WriteUnit {
        let mut u = WriteUnit::new(owner, format!("{owner}:t"));
        u.ops.push(WriteOp::RunModelName {
            run_id: "r".into(),
            model_name: None,
        });
        u
    }

    #[tokio::test]
    async fn units_queued_behind_a_commit_share_the_next_one_in_order() {
        let rec = Arc::new(Recorder::default());
        let q = CommitQueue::new(Arc::new(rec.clone()));
        let first = q.submit(unit("a"));
        // the worker is inside the first batch: everything submitted now waits for it
        while rec.batches.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<Commit> = ["b", "bad", "c"]
            .iter()
            .map(|o| q.submit(unit(o)))
            .collect();
        let mut first = Box::pin(first);
        assert!(
            futures_now(&mut first).is_none(),
            "a commit never resolves before its batch is applied"
        );
        rec.gate.notify_one();
        assert_eq!(first.await, Ok(()));
        let results: Vec<_> = futures::future::join_all(rest).await;
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[1], Err(StoreError::Backend("bad unit".into())));
        assert_eq!(results[2], Ok(()), "a bad unit fails alone");
        assert_eq!(
            *rec.batches.lock(),
            vec![
                vec!["a".to_string()],
                vec!["b".into(), "bad".into(), "c".into()]
            ]
        );
        assert_eq!(
            q.stats().batches.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            q.stats().units.load(std::sync::atomic::Ordering::Relaxed),
            4
        );
    }

    #[tokio::test]
    async fn empty_units_resolve_at_once_and_dropped_commits_still_apply() {
        let rec = Arc::new(Recorder::default());
        rec.gate.notify_one();
        let q = CommitQueue::new(Arc::new(rec.clone()));
        assert_eq!(q.submit(WriteUnit::new("a", "a:t")).await, Ok(()));
        assert!(rec.batches.lock().is_empty(), "nothing to apply");
        drop(q.submit(unit("a")));
        q.submit(unit("b")).await.unwrap();
        let applied: Vec<String> = rec.batches.lock().concat();
        assert_eq!(
            applied,
            ["a", "b"],
            "a dropped Commit does not cancel its unit"
        );
    }

    #[tokio::test]
    async fn a_batch_never_exceeds_max_batch() {
        let rec = Arc::new(Recorder::default());
        let q = CommitQueue::new(Arc::new(rec.clone()));
        let first = q.submit(unit("a"));
        while rec.batches.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        let rest: Vec<Commit> = (0..MAX_BATCH + 10).map(|_| q.submit(unit("x"))).collect();
        rec.gate.notify_one();
        first.await.unwrap();
        for r in futures::future::join_all(rest).await {
            r.unwrap();
        }
        let sizes: Vec<usize> = rec.batches.lock().iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, MAX_BATCH, 10]);
    }

    #[tokio::test]
    async fn after_a_failed_unit_its_chain_fails_unapplied() {
        let rec = Arc::new(Recorder::default());
        rec.gate.notify_one();
        let q = CommitQueue::new(Arc::new(rec.clone()));
        let chain = Arc::new(Chain::default());
        let bad = q.submit(unit("bad").in_chain(&chain)).await;
        assert!(bad.is_err());
        let later = q.submit(unit("a").in_chain(&chain)).await;
        assert_eq!(
            later, bad,
            "the chain's later unit fails with the first error"
        );
        q.submit(unit("b")).await.unwrap();
        let applied: Vec<String> = rec.batches.lock().concat();
        assert_eq!(
            applied,
            ["bad", "b"],
            "the broken chain's unit was not applied"
        );
    }

    /// Records the (owner, run id) of every unit it applies, in order; never fails.
    #[derive(Default)]
    struct Log(Mutex<Vec<(String, String)>>);

    #[async_trait::async_trait]
    impl ApplyUnits for Arc<Log> {
        async fn apply(&self, units: &[WriteUnit]) -> Vec<StoreResult<()>> {
            tokio::task::yield_now().await;
            for u in units {
                let Some(WriteOp::RunModelName { run_id, .. }) = u.ops.first() else {
                    continue;
                };
                self.0.lock().push((u.owner.clone(), run_id.clone()));
            }
            units.iter().map(|_| Ok(())).collect()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_keep_each_threads_units_in_submission_order() {
        let log = Arc::new(Log::default());
        let q = CommitQueue::with_lanes(Arc::new(log.clone()), 4);
        let mut commits = Vec::new();
        for i in 0..400 {
            let owner = format!("t{}", i % 8);
            let mut u = WriteUnit::new(&owner, &owner);
            u.ops.push(WriteOp::RunModelName {
                run_id: format!("{i:03}"),
                model_name: None,
            });
            commits.push(q.submit(u));
        }
        for c in futures::future::join_all(commits).await {
            c.unwrap();
        }
        let log = log.0.lock();
        assert_eq!(log.len(), 400);
        for t in 0..8 {
            let owner = format!("t{t}");
            let seen: Vec<&String> = log
                .iter()
                .filter(|(o, _)| *o == owner)
                .map(|(_, r)| r)
                .collect();
            let mut sorted = seen.clone();
            sorted.sort();
            assert_eq!(seen, sorted, "thread {owner}: units in submission order");
        }
    }

    /// Polls a future once.
    fn futures_now<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match Pin::new(f).poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }
}
