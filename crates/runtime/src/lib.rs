//! `antler-runtime`: the run kernel.
//!
//! It owns the lifecycle of every run: the runs facade ([`Runtime::create_run`], cancel, join,
//! wait, delete), the per-thread registry that applies the multitask strategy atomically, the
//! supervisor (every run task is spawned on one [`TaskTracker`] and watches a
//! [`CancellationToken`]), the executor that drives a graph with the thread's checkpointer and
//! publishes its stream to the [`StreamBridge`], and the lifecycle observers that keep run rows,
//! thread status/values and run events in the stores. Its services (threads, assistants, store
//! items, the run journal and feedback) are the HTTP layer's one door to storage.
//!
//! Invariants:
//! - at most one run per thread executes at a time; runs of a thread start in creation order
//!   (each new run waits for the previous run of its thread to finish);
//! - a run row moves pending -> running -> success | error | interrupted | timeout exactly once
//!   (`RunStore::transition`), and its stream always ends (`publish_end`) whatever happened;
//! - the registry lock is a short `parking_lot` critical section, never held across `.await`.

mod create;
#[cfg(test)]
mod create_tests;
mod durability;
mod events;
mod executor;
mod graphs;
mod journal;
#[cfg(test)]
mod replica_tests;
mod request;
mod services;
mod session;
mod state;
mod values;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use antler_bridge::StreamBridge;
use antler_store::{
    Assistant, Owner, Run, RunId, RunListQuery, RunStatus, StoreError, Stores, ThreadId,
    ThreadStatus, ThreadUpdate,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use antler_store::{CancelAction, MultitaskStrategy};
pub use durability::{Recovery, ReplicaBackends, ReplicaStatus};
pub use events::{EventShaper, engine_modes};
pub use graphs::Graphs;
pub use request::{OnDisconnect, RunCreate, StreamMode};
pub use services::{
    AssistantChanges, EventFilter, FeedbackInput, IfExists, MessagePage, NewAssistant, NewThread,
    PruneStrategy, StateUpdate,
};
pub use session::Durability;
pub use state::HistoryQuery;
pub use values::FinalValues;

/// Errors of the run kernel, mapped by the gateway onto HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// 404 with this detail.
    #[error("{0}")]
    NotFound(String),
    /// 403 with this detail.
    #[error("{0}")]
    Forbidden(String),
    /// 409 with this detail.
    #[error("{0}")]
    Conflict(String),
    /// 422 with this detail.
    #[error("{0}")]
    Invalid(String),
    /// 400 with this detail.
    #[error("{0}")]
    BadRequest(String),
    /// 503: the server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// 429: this process holds `max_pending_runs` runs that have not started; retry later.
    #[error("{0}")]
    Overloaded(String),
    /// 500: storage failed.
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
    /// 503: the checkpointer failed.
    #[error("{0}")]
    Checkpoint(#[from] antler_graph::CheckpointError),
    /// 500: anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How long shutdown waits, after its grace, for the runs it stopped to let go.
const STOP_BOUND: Duration = Duration::from_secs(5);

/// `runs.max_pending_runs`'s default.
pub const DEFAULT_MAX_PENDING_RUNS: usize = 10_000;

/// Options of the run kernel (section `runs:` of the config file).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Strategy used when a request names none (LangGraph's default is `enqueue`).
    pub default_multitask_strategy: MultitaskStrategy,
    /// Per-run timeout; a run past it ends with status `timeout`.
    pub run_timeout: Option<Duration>,
    /// How long a finished run's stream stays replayable in the bridge.
    pub stream_cleanup_delay: Duration,
    /// How long shutdown waits for running runs to reach a checkpoint.
    pub shutdown_grace: Duration,
    /// Webhook delivery attempts.
    pub webhook_attempts: u32,
    /// Base URL reported in run metadata (`langgraph_api_url`).
    pub api_url: String,
    /// Events buffered before a batch append to the run-event store.
    pub event_batch_size: usize,
    /// Run-event content (other than messages) longer than this many bytes of JSON is
    /// truncated (`run_events.max_trace_content`, DeerFlow's 10,240).
    pub max_trace_content: usize,
    /// This process's id as the owner of runs (`runs.worker_id`); unique per process.
    pub worker_id: String,
    /// How long a run's lease lasts without a heartbeat; after that another process may
    /// adopt the run (`runs.lease_ttl_seconds`).
    pub lease_ttl: Duration,
    /// What happens to runs abandoned by a dead process.
    pub recovery: Recovery,
    /// This process is alone on its database (SQLite, memory): at startup every in-flight
    /// run is abandoned, without waiting for leases to expire.
    pub exclusive: bool,
    /// Most runs this process executes at once (`runs.max_concurrent_runs`); `None` =
    /// unbounded. A run created beyond it stays queued in the database (pending, no owner)
    /// until a replica with free capacity claims it.
    pub max_concurrent_runs: Option<usize>,
    /// Most runs waiting to start (`runs.max_pending_runs`): runs accepted by this process
    /// that wait for an earlier run of their thread, and beyond `max_concurrent_runs` the
    /// database's queue. A create past it is refused (429) and writes nothing.
    pub max_pending_runs: Option<usize>,
    /// How often the control loop reads cancel requests for this process's runs (made on
    /// other replicas) and claims queued runs (`runs.poll_interval_ms`).
    pub poll_interval: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            default_multitask_strategy: MultitaskStrategy::Enqueue,
            run_timeout: None,
            stream_cleanup_delay: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            webhook_attempts: 3,
            api_url: "http://127.0.0.1:8123".into(),
            event_batch_size: 20,
            max_trace_content: 10_240,
            worker_id: format!("antler-{}", uuid::Uuid::now_v7().simple()),
            lease_ttl: Duration::from_secs(30),
            recovery: Recovery::Resume,
            exclusive: true,
            max_concurrent_runs: None,
            max_pending_runs: Some(DEFAULT_MAX_PENDING_RUNS),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// The final result of a run, as `/wait` and `/join` report it.
#[derive(Clone, Debug)]
pub enum RunResult {
    /// The graph finished or paused in `interrupt()`: final values (with `__interrupt__` when
    /// paused).
    Values(FinalValues),
    /// The graph failed.
    Error {
        /// Exception-like kind (`ValueError`, `GraphRecursionError`, ...).
        kind: String,
        /// Message.
        message: String,
    },
    /// Cancelled (interrupt) or timed out: the values reached so far.
    Stopped(Value),
    /// Rolled back: nothing remains.
    RolledBack,
}

impl RunResult {
    /// [`RunResult::to_body`], serialized (a run's final state straight from the engine's
    /// shared lists: no JSON tree of a long thread's state is built).
    pub fn to_body_bytes(&self) -> Vec<u8> {
        let bytes = match self {
            RunResult::Values(v) => serde_json::to_vec(v),
            other => serde_json::to_vec(&other.to_body()),
        };
        bytes.unwrap_or_default()
    }

    /// The body of `/wait` and `/join`.
    pub fn to_body(&self) -> Value {
        match self {
            RunResult::Values(v) => v.to_value(),
            RunResult::Stopped(v) => v.clone(),
            RunResult::Error { kind, message } => {
                json!({"__error__": {"error": kind, "message": message}})
            }
            RunResult::RolledBack => json!({}),
        }
    }
}

/// A run this process is responsible for (pending or running).
struct RunHandle {
    run_id: String,
    /// A stateless run whose temporary thread is deleted at the end: its thread and run rows
    /// live in [`Runtime::ephemeral`], its checkpoints in a per-run memory checkpointer.
    ephemeral: bool,
    thread_id: String,
    owner: String,
    cancel: CancellationToken,
    /// First cancel request wins.
    action: Mutex<Option<CancelAction>>,
    /// Set once when the run has fully finished (row, thread and stream finalized).
    done: watch::Sender<Option<RunResult>>,
}

impl RunHandle {
    fn request_cancel(&self, action: CancelAction) {
        let mut slot = self.action.lock();
        if slot.is_none() {
            *slot = Some(action);
        }
        drop(slot);
        self.cancel.cancel();
    }

    fn cancel_action(&self) -> Option<CancelAction> {
        *self.action.lock()
    }

    /// Whether the run is on `owner`'s thread `thread_id` (thread ids are per owner).
    fn on_thread(&self, owner: &str, thread_id: &str) -> bool {
        self.owner == owner && self.thread_id == thread_id
    }

    /// Its thread's key in the per-thread registry ([`antler_graph::thread_key`]).
    fn thread_key(&self) -> String {
        antler_graph::thread_key(&self.owner, &self.thread_id)
    }
}

/// Live runs and the per-thread queue.
#[derive(Default)]
struct Registry {
    /// Live runs by run id.
    runs: HashMap<String, Arc<RunHandle>>,
    /// The newest run of each thread with live runs: a new run waits for it to finish, which
    /// makes the runs of a thread execute one at a time, in creation order.
    tails: HashMap<String, Arc<RunHandle>>,
}

/// The run kernel. Cheap to share (`Arc<Runtime>`).
pub struct Runtime {
    stores: Stores,
    graphs: Arc<Graphs>,
    bridge: Arc<dyn StreamBridge>,
    config: RuntimeConfig,
    /// Live runs of this process. Why a sync mutex: every access is a lookup or an
    /// insert/remove, never held across an await.
    live: Mutex<Registry>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// Cancelled when shutdown's grace is over: every run still going stops at its next await
    /// and is released for the next server to resume (each run's cancel token is a child).
    stop_runs: CancellationToken,
    /// The webhook client, built on the first webhook (a TLS client loads the system's root
    /// certificates: megabytes a server without webhooks does not need).
    http: std::sync::OnceLock<reqwest::Client>,
    counters: Counters,
    /// In-memory rows of ephemeral runs (stateless runs with `on_completion: delete`): nothing
    /// of them outlives the run, so they never touch the database.
    ephemeral: Stores,
    /// The system assistant of each graph (read-only records, cached so that resolving a graph
    /// name on every run create costs no query).
    system_assistants: parking_lot::RwLock<HashMap<String, Assistant>>,
    /// Run ownership of this process (leases, fencing).
    lease: Arc<durability::Lease>,
    /// This process's entry in the replica registry, once [`Runtime::register_replica`] ran
    /// (the heartbeat refreshes it; `/info` reports it).
    replica: std::sync::OnceLock<antler_store::ReplicaInfo>,
    /// Removes the files a thread owns outside the stores (agent workspaces) when the thread
    /// is deleted; set once by the binary ([`Runtime::on_thread_deleted`]).
    thread_files: std::sync::OnceLock<ThreadFilesCleanup>,
    /// Held while the registry entry is written; `true` once this process left the registry
    /// (a heartbeat racing the shutdown must not write the entry back).
    registry_left: tokio::sync::Mutex<bool>,
    /// Wakes the control loop before its next poll: a nudge from another replica (a cancel
    /// request on one of our runs, a queued run) or capacity freed here while runs are queued.
    wake: Arc<tokio::sync::Notify>,
    /// The last queue claim used all the room it had: runs may still be queued, so a run
    /// finishing here wakes the control loop to claim the next one at once.
    queue_backlog: std::sync::atomic::AtomicBool,
}

/// Run counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Runs created since start.
    pub created: std::sync::atomic::AtomicU64,
    /// Runs waiting to start.
    pub pending: std::sync::atomic::AtomicI64,
    /// Runs executing.
    pub running: std::sync::atomic::AtomicI64,
    /// Runs finished since start.
    pub finished: std::sync::atomic::AtomicU64,
}

/// What `create_run` returns.
#[derive(Clone, Debug)]
pub struct CreatedRun {
    /// The run row as created (status pending).
    pub run: Run,
    /// Requested options the caller needs (stream modes, on_disconnect...).
    pub request: RunCreate,
    /// The run's outcome when it executes here (watched from before it started, so a run
    /// that ends and is gone before the caller waits still answers it: see
    /// [`Runtime::wait_created`]).
    pub done: Option<tokio::sync::watch::Receiver<Option<RunResult>>>,
}

impl Runtime {
    /// A runtime over these stores, graphs and bridge.
    pub fn new(
        stores: Stores,
        graphs: Graphs,
        bridge: Arc<dyn StreamBridge>,
        config: RuntimeConfig,
    ) -> Arc<Self> {
        let lease = Arc::new(durability::Lease::new(
            config.worker_id.clone(),
            config.lease_ttl,
        ));
        Arc::new(Self {
            lease,
            stores,
            graphs: Arc::new(graphs),
            bridge,
            config,
            live: Mutex::new(Registry::default()),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            stop_runs: CancellationToken::new(),
            http: std::sync::OnceLock::new(),
            counters: Counters::default(),
            system_assistants: parking_lot::RwLock::new(HashMap::new()),
            ephemeral: Stores::memory(),
            replica: std::sync::OnceLock::new(),
            thread_files: std::sync::OnceLock::new(),
            registry_left: tokio::sync::Mutex::new(false),
            wake: Arc::new(tokio::sync::Notify::new()),
            queue_backlog: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Where the rows of a run live: the durable stores, or the in-memory ones of ephemeral runs.
    pub(crate) fn rows(&self, ephemeral: bool) -> &Stores {
        if ephemeral {
            &self.ephemeral
        } else {
            &self.stores
        }
    }

    /// The graph registry.
    pub fn graphs(&self) -> &Arc<Graphs> {
        &self.graphs
    }

    /// The stream bridge.
    pub fn bridge(&self) -> &Arc<dyn StreamBridge> {
        &self.bridge
    }

    /// The configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Run counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The live runs of `owner`'s thread `thread_id` (thread ids are per owner).
    fn live_runs_of_thread(&self, owner: &str, thread_id: &str) -> Vec<Arc<RunHandle>> {
        self.live
            .lock()
            .runs
            .values()
            .filter(|h| h.on_thread(owner, thread_id))
            .cloned()
            .collect()
    }

    /// A run of the thread (404 when the thread or run is unknown to this owner).
    pub async fn get_run(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
    ) -> Result<Run, RuntimeError> {
        let found = match self.ephemeral.runs.get(Owner(owner), RunId(run_id)).await? {
            Some(r) => Some(r),
            None => self.stores.runs.get(Owner(owner), RunId(run_id)).await?,
        };
        match found {
            Some(r) if r.thread_id == thread_id => Ok(r),
            _ => Err(RuntimeError::NotFound("Not Found".into())),
        }
    }

    /// A run by id regardless of thread (stateless routes).
    pub async fn get_run_any(&self, owner: &str, run_id: &str) -> Result<Run, RuntimeError> {
        if let Some(r) = self.ephemeral.runs.get(Owner(owner), RunId(run_id)).await? {
            return Ok(r);
        }
        self.stores
            .runs
            .get(Owner(owner), RunId(run_id))
            .await?
            .ok_or_else(|| RuntimeError::NotFound("Not Found".into()))
    }

    /// Runs of a thread, newest first.
    pub async fn list_runs(
        &self,
        owner: &str,
        thread_id: &str,
        query: &RunListQuery,
    ) -> Result<Vec<Run>, RuntimeError> {
        self.require_thread(owner, thread_id).await?;
        Ok(self
            .stores
            .runs
            .list_by_thread(Owner(owner), ThreadId(thread_id), query)
            .await?)
    }

    /// Cancels a pending or running run. With `wait`, returns once it has fully stopped.
    pub async fn cancel_run(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
        action: CancelAction,
        wait: bool,
    ) -> Result<(), RuntimeError> {
        let handle = self.live.lock().runs.get(run_id).cloned();
        let Some(handle) = handle.filter(|h| h.on_thread(owner, thread_id)) else {
            // Not live here: another replica executes it, it is queued, its process died, or
            // it is unknown / already finished.
            return self
                .cancel_remote(owner, Some(thread_id), run_id, action, wait)
                .await;
        };
        handle.request_cancel(action);
        if wait {
            let mut rx = handle.done.subscribe();
            let _ = rx.wait_for(Option::is_some).await;
        }
        Ok(())
    }

    /// Cancels a run that has no task in this process.
    ///
    /// - a queued run (pending, no owner), or any active row when this process is alone on
    ///   its database: stopped right here with a compare-and-set on its status;
    /// - a run owned by another replica: a durable cancel request on its row, which the owner
    ///   reads within its poll interval (or, if the owner died, the replica that adopts the
    ///   run after its lease expired carries it out instead of resuming the run).
    ///
    /// With `wait`, follows the run's row until it has stopped.
    async fn cancel_remote(
        &self,
        owner: &str,
        thread_id: Option<&str>,
        run_id: &str,
        action: CancelAction,
        wait: bool,
    ) -> Result<(), RuntimeError> {
        let run = match self.stores.runs.get(Owner(owner), RunId(run_id)).await? {
            Some(r) if thread_id.is_none_or(|t| r.thread_id == t) && r.status.is_active() => r,
            _ => return Err(RuntimeError::NotFound("No runs found to cancel.".into())),
        };
        if self.config.exclusive || run.worker_id.is_none() {
            let from: &[RunStatus] = if self.config.exclusive {
                &[RunStatus::Pending, RunStatus::Running]
            } else {
                &[RunStatus::Pending]
            };
            if self
                .stores
                .runs
                .transition(RunId(run_id), from, RunStatus::Interrupted, None)
                .await?
            {
                self.stop_unowned(&run, action).await;
                return Ok(());
            }
            // A replica claimed it meanwhile: ask that one.
        }
        self.stores
            .runs
            .request_cancel(RunId(run_id), action)
            .await?;
        // the owner reads the request now rather than at its next poll (no owner: whoever
        // claimed it meanwhile)
        self.bridge.wake_replica(run.worker_id.as_deref()).await;
        if wait {
            match self.wait_run(owner, run_id).await {
                Ok(_) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// After a run without a task was stopped by compare-and-set: rollback removes it, the
    /// thread turns idle unless another run of it is active, its stream ends.
    async fn stop_unowned(&self, run: &Run, action: CancelAction) {
        if action == CancelAction::Rollback {
            let _ = self
                .stores
                .runs
                .delete(Owner(&run.owner), RunId(&run.run_id))
                .await;
            let _ = self
                .stores
                .events
                .delete_run(
                    Owner(&run.owner),
                    ThreadId(&run.thread_id),
                    RunId(&run.run_id),
                )
                .await;
        }
        let busy = matches!(
            self.stores
                .runs
                .active_for_thread(Owner(&run.owner), ThreadId(&run.thread_id))
                .await,
            Ok(Some(_))
        );
        if !busy {
            let _ = self
                .stores
                .threads
                .update(
                    Owner(&run.owner),
                    ThreadId(&run.thread_id),
                    ThreadUpdate {
                        status: Some(ThreadStatus::Idle),
                        ..Default::default()
                    },
                )
                .await;
        }
        let _ = self.bridge.publish_end(&run.run_id).await;
        self.bridge
            .cleanup(&run.run_id, self.config.stream_cleanup_delay)
            .await;
    }

    /// Requests an interrupt of a run without waiting for it to stop; usable from a
    /// synchronous context (a dropped SSE stream whose run has `on_disconnect: cancel`). A
    /// run executing on another replica gets a durable cancel request (in the background).
    pub fn cancel_in_background(self: &Arc<Self>, owner: &str, thread_id: String, run_id: String) {
        let handle = self.live.lock().runs.get(&run_id).cloned();
        if let Some(h) = handle {
            if h.on_thread(owner, &thread_id) {
                h.request_cancel(CancelAction::Interrupt);
            }
            return;
        }
        if self.shutdown.is_cancelled() {
            return;
        }
        let rt = self.clone();
        let owner = owner.to_string();
        self.tracker.spawn(async move {
            let res = rt
                .cancel_remote(
                    &owner,
                    Some(&thread_id),
                    &run_id,
                    CancelAction::Interrupt,
                    false,
                )
                .await;
            if let Err(e) = res
                && !matches!(e, RuntimeError::NotFound(_))
            {
                tracing::warn!(run_id, error = %e, "cancel on disconnect failed");
            }
        });
    }

    /// Cancels several runs (`POST /runs/cancel`): by ids on a thread, or every run of a status.
    /// Returns how many were cancelled.
    pub async fn cancel_many(
        &self,
        owner: &str,
        thread_id: Option<&str>,
        run_ids: Option<&[String]>,
        status: Option<&str>,
        action: CancelAction,
    ) -> Result<usize, RuntimeError> {
        let handles: Vec<Arc<RunHandle>> = self
            .live
            .lock()
            .runs
            .values()
            .filter(|h| h.owner == owner)
            .filter(|h| thread_id.is_none_or(|t| h.thread_id == t))
            .filter(|h| run_ids.is_none_or(|ids| ids.iter().any(|id| *id == h.run_id)))
            .cloned()
            .collect();
        let mut n = 0;
        // Runs named by id that have no task here: cancel them where they are.
        if let Some(ids) = run_ids {
            for id in ids {
                if handles.iter().any(|h| h.run_id == *id) {
                    continue;
                }
                match self
                    .cancel_remote(owner, thread_id, id, action, false)
                    .await
                {
                    Ok(()) => n += 1,
                    Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // By status: the owner's active runs that have no task here (another replica's, or
        // queued) are cancelled where they are too.
        if let Some(status) = status
            && run_ids.is_none()
        {
            let wanted = |s: RunStatus| match status {
                "pending" => s == RunStatus::Pending,
                "running" => s == RunStatus::Running,
                _ => s.is_active(),
            };
            let elsewhere: Vec<Run> = self
                .stores
                .runs
                .list_inflight(None)
                .await?
                .into_iter()
                .filter(|r| r.owner == owner && wanted(r.status))
                .filter(|r| thread_id.is_none_or(|t| r.thread_id == t))
                .filter(|r| !handles.iter().any(|h| h.run_id == r.run_id))
                .collect();
            for r in elsewhere {
                match self
                    .cancel_remote(owner, Some(&r.thread_id), &r.run_id, action, false)
                    .await
                {
                    Ok(()) => n += 1,
                    Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for h in handles {
            if let Some(status) = status {
                let row = self.stores.runs.get(Owner(owner), RunId(&h.run_id)).await?;
                let matches = matches!(
                    (status, row.map(|r| r.status)),
                    ("all", Some(_))
                        | ("pending", Some(RunStatus::Pending))
                        | ("running", Some(RunStatus::Running))
                );
                if !matches {
                    continue;
                }
            }
            h.request_cancel(action);
            n += 1;
        }
        Ok(n)
    }

    /// Waits until the run has finished and returns its result. Works for runs that finished
    /// long ago (built from the run row and the thread).
    /// Waits for a run this caller just created ([`Self::wait_run`] otherwise): a stateless
    /// run leaves nothing behind once it ends, which can be before its creator waits.
    pub async fn wait_created(
        &self,
        owner: &str,
        run_id: &str,
        done: Option<tokio::sync::watch::Receiver<Option<RunResult>>>,
    ) -> Result<RunResult, RuntimeError> {
        if let Some(mut rx) = done
            && let Ok(v) = rx.wait_for(Option::is_some).await
            && let Some(r) = v.clone()
        {
            return Ok(r);
        }
        self.wait_run(owner, run_id).await
    }

    pub async fn wait_run(&self, owner: &str, run_id: &str) -> Result<RunResult, RuntimeError> {
        let mut delay = Duration::from_millis(100);
        // A run executing elsewhere ends its stream right after its final row write: following
        // the (shared) stream wakes this wait at once; the row polls are the fallback.
        let mut stream: Option<antler_bridge::Subscription> = None;
        let mut subscribed = false;
        loop {
            let handle = self.live.lock().runs.get(run_id).cloned();
            if let Some(h) = handle.filter(|h| h.owner == owner) {
                let mut rx = h.done.subscribe();
                if let Ok(v) = rx.wait_for(Option::is_some).await
                    && let Some(r) = v.clone()
                {
                    return Ok(r);
                }
            }
            let run = self.get_run_any(owner, run_id).await?;
            // Active but not here: another process executes it, or it awaits recovery after
            // its process died. Follow its row until it ends (or this process adopts it).
            if !run.status.is_active() || self.shutdown.is_cancelled() {
                return self.result_from_rows(owner, &run).await;
            }
            if !subscribed {
                subscribed = true;
                let last = self.bridge.latest_event_id(run_id).await;
                stream = self.bridge.subscribe(run_id, last.as_deref()).await.ok();
            }
            let stream_end = async {
                match stream.as_mut() {
                    Some(sub) => {
                        while let Some(item) = futures::StreamExt::next(sub).await {
                            if matches!(item, antler_bridge::BridgeItem::End) {
                                return true;
                            }
                        }
                        false
                    }
                    None => std::future::pending().await,
                }
            };
            let closed = tokio::select! {
                _ = self.shutdown.cancelled() => false,
                ended = stream_end => !ended,
                _ = tokio::time::sleep(delay) => false,
            };
            if closed {
                // the subscription ended without the run's end (gap, bridge trouble): poll
                stream = None;
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    async fn result_from_rows(&self, owner: &str, run: &Run) -> Result<RunResult, RuntimeError> {
        if run.status == RunStatus::Error {
            let (kind, message) = executor::split_error(run.error.as_deref());
            return Ok(RunResult::Error { kind, message });
        }
        let thread = match self
            .stores
            .threads
            .get(Owner(owner), ThreadId(&run.thread_id))
            .await?
        {
            Some(t) => Some(self.with_values(owner, t).await),
            None => None,
        };
        let mut values = thread
            .as_ref()
            .and_then(|t| t.values.clone())
            .filter(|v| !v.is_null())
            .unwrap_or_else(|| json!({}));
        if let Some(Value::Object(map)) = thread.and_then(|t| t.interrupts) {
            let list: Vec<Value> = map
                .values()
                .filter_map(Value::as_array)
                .flatten()
                .map(|i| {
                    json!({"value": i.get("value").cloned().unwrap_or(Value::Null),
                           "id": i.get("id").cloned().unwrap_or(Value::Null)})
                })
                .collect();
            if !list.is_empty()
                && let Some(obj) = values.as_object_mut()
            {
                obj.insert("__interrupt__".into(), Value::Array(list));
            }
        }
        Ok(RunResult::Values(FinalValues::json(values)))
    }

    /// Whether the run is live (pending or running) in this process.
    pub fn is_live(&self, run_id: &str) -> bool {
        self.live.lock().runs.contains_key(run_id)
    }

    /// Deletes a finished run (409 while it is active).
    pub async fn delete_run(
        &self,
        owner: &str,
        thread_id: &str,
        run_id: &str,
    ) -> Result<(), RuntimeError> {
        let run = self.get_run(owner, thread_id, run_id).await?;
        // Active here, or owned by another replica whose lease is current.
        let elsewhere = !self.config.exclusive
            && (run.worker_id.is_none()
                || run
                    .lease_expires_at
                    .is_some_and(|t| t > antler_store::time::now()));
        if run.status.is_active() && (self.is_live(run_id) || elsewhere) {
            return Err(RuntimeError::Conflict(
                "Run is still active; cancel it before deleting it.".into(),
            ));
        }
        self.stores.runs.delete(Owner(owner), RunId(run_id)).await?;
        let _ = self
            .stores
            .events
            .delete_run(Owner(owner), ThreadId(thread_id), RunId(run_id))
            .await;
        Ok(())
    }

    /// Sets what removes a deleted thread's files outside the stores (the binary passes the
    /// agent workspaces' `remove_thread_dir`); the first call wins.
    pub fn on_thread_deleted(&self, cleanup: ThreadFilesCleanup) {
        let _ = self.thread_files.set(cleanup);
    }

    /// Removes `owner`'s files of the thread (after its rows), off the async threads.
    pub(crate) async fn remove_thread_files(&self, owner: &str, thread_id: &str) {
        let Some(cleanup) = self.thread_files.get().cloned() else {
            return;
        };
        let (owner, thread_id) = (owner.to_string(), thread_id.to_string());
        let _ = tokio::task::spawn_blocking(move || cleanup(&owner, &thread_id)).await;
    }

    /// Stops accepting runs, lets running runs stop at their next await (bounded by
    /// `shutdown_grace`), ends every stream, and waits for the run tasks.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.deregister_replica().await;
        self.tracker.close();
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            self.stop_runs.cancel();
            let _ = tokio::time::timeout(STOP_BOUND, self.tracker.wait()).await;
            self.release_leases().await;
        }
        self.bridge.close().await;
    }

    /// The runs this process still holds become adoptable at once on a shared database
    /// (their leases end now instead of `lease_ttl` after the last heartbeat).
    async fn release_leases(&self) {
        if self.config.exclusive {
            return;
        }
        let now = antler_store::time::now();
        if let Err(e) = self
            .stores
            .runs
            .renew_leases(&self.lease.worker_id, now)
            .await
        {
            tracing::warn!(error = %e, "cannot release the leases of stopped runs");
        }
    }

    /// A token cancelled when shutdown starts (SSE streams end on it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Number of live runs.
    pub fn live_count(&self) -> usize {
        self.live.lock().runs.len()
    }

    /// Removes a finished run from the registry (and from its thread's queue tail).
    /// The handle of a run about to be registered in [`Registry`].
    pub(crate) fn new_handle(
        &self,
        run_id: &str,
        thread_id: &str,
        owner: &str,
        ephemeral: bool,
    ) -> Arc<RunHandle> {
        Arc::new(RunHandle {
            run_id: run_id.to_string(),
            ephemeral,
            thread_id: thread_id.to_string(),
            owner: owner.to_string(),
            cancel: self.stop_runs.child_token(),
            action: Mutex::new(None),
            done: watch::channel(None).0,
        })
    }

    /// Removes a run from the registry, and from its thread's queue when it is the newest.
    fn forget(&self, handle: &Arc<RunHandle>) {
        let mut live = self.live.lock();
        live.runs.remove(&handle.run_id);
        if live
            .tails
            .get(&handle.thread_key())
            .is_some_and(|t| Arc::ptr_eq(t, handle))
        {
            live.tails.remove(&handle.thread_key());
        }
        drop(live);
        if self
            .queue_backlog
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.wake.notify_one();
        }
    }
}

/// Removes the files of `owner`'s thread kept outside the stores: `(owner, thread_id)`.
pub type ThreadFilesCleanup = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The bridge stream that carries every event of a thread's runs (`GET /threads/{id}/stream`).
/// Thread ids are per owner, so the stream is named by the thread's key.
pub fn thread_stream_id(owner: &str, thread_id: &str) -> String {
    format!("thread:{}", antler_graph::thread_key(owner, thread_id))
}
