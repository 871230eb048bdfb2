//! Run creation ([`Runtime::create_run`]): resolve the assistant and the thread, build the run
//! row, then either queue the row in the database (past this process's capacity: any replica
//! with room claims it) or apply the multitask strategy under the registry lock, insert the
//! row and spawn the run here.

use std::sync::Arc;
use std::time::Duration;

use antler_store::commit::{WriteOp, WriteUnit};
use antler_store::{
    Assistant, MultitaskStrategy, Owner, Run, RunId, StoreError, Stores, Thread, ThreadId,
    ThreadStatus, ThreadUpdate,
};
use serde_json::{Map, Value, json};

use crate::services::new_id;
use crate::{
    CancelAction, CreatedRun, RunCreate, RunHandle, RunResult, Runtime, RuntimeError, executor,
    thread_stream_id,
};

/// The 409 of multitask `reject` (the reference's words).
const REJECT_MESSAGE: &str = "Thread is already running a task. Wait for it to finish or choose a different multitask strategy.";

/// What a run create resolved before its row is written.
struct NewRun<'a> {
    owner: &'a str,
    assistant: Assistant,
    thread: Thread,
    /// The thread was created for this run (it is born busy and tagged with its graph).
    created_now: bool,
    /// A stateless run (on a temporary thread).
    temporary: bool,
    /// A stateless run whose thread is deleted at the end: its rows live in memory only.
    ephemeral: bool,
    /// The request's strategy, or the server's default.
    strategy: MultitaskStrategy,
}

impl NewRun<'_> {
    fn thread_id(&self) -> &str {
        &self.thread.thread_id
    }

    /// On a shared database an existing thread's active run may execute on another replica:
    /// the multitask strategy applies to it as to a local one.
    fn shared_thread(&self, exclusive: bool) -> bool {
        !self.ephemeral && !self.created_now && !exclusive
    }
}

/// A run registered in this process's queue of its thread.
struct Registered {
    run: Run,
    handle: Arc<RunHandle>,
    /// Runs of the thread to cancel because of the multitask strategy.
    to_cancel: Vec<(Arc<RunHandle>, CancelAction)>,
    /// The thread's queue tail the new run replaced (it waits for that one).
    prev: Option<Arc<RunHandle>>,
}

impl Runtime {
    /// Creates a run (stateful when `thread_id` is given, otherwise on a new temporary thread)
    /// and schedules it. Applies the multitask strategy atomically for the thread.
    ///
    /// Cancel-safe: the create runs as its own task, so a caller that goes away mid-create (a
    /// client that disconnects) cannot leave a half-made run, registered as its thread's
    /// newest but never spawned, for the thread's later runs to wait on forever.
    pub async fn create_run(
        self: &Arc<Self>,
        owner: &str,
        thread_id: Option<&str>,
        request: RunCreate,
    ) -> Result<CreatedRun, RuntimeError> {
        if self.shutdown.is_cancelled() {
            return Err(RuntimeError::ShuttingDown);
        }
        let pending = self
            .counters
            .pending
            .load(std::sync::atomic::Ordering::Relaxed);
        self.check_pending(u64::try_from(pending).unwrap_or(0))?;
        let rt = self.clone();
        let (owner, thread_id) = (owner.to_string(), thread_id.map(str::to_string));
        let task = self.tracker.spawn(async move {
            rt.create_run_here(&owner, thread_id.as_deref(), request)
                .await
        });
        task.await
            .map_err(|e| RuntimeError::Internal(format!("run create failed: {e}")))?
    }

    async fn create_run_here(
        self: &Arc<Self>,
        owner: &str,
        thread_id: Option<&str>,
        request: RunCreate,
    ) -> Result<CreatedRun, RuntimeError> {
        let nr = self.resolve_new_run(owner, thread_id, &request).await?;
        if self.should_queue(&nr).await? {
            self.check_pending(self.stores.runs.count_pending().await?)?;
            let mut run = self.build_run(&nr, &new_id(), &request);
            queue(&mut run, request.after_seconds);
            return self.enqueue_durable(&nr, run, request).await;
        }
        let remote_active = self.remote_active_run(&nr).await?;
        let Registered {
            run,
            handle,
            to_cancel,
            prev,
        } = self.register_local(&nr, &request)?;
        // on a shared database a run with nothing to wait for is claimed by the write of its
        // row (and its thread turns busy there), so its start commits nothing of its own; a
        // database this process owns folds the claim into the first step's unit anyway
        let starts_now = !self.config.exclusive && prev.is_none() && request.after_seconds <= 0.0;
        let thread_update = (!nr.created_now).then(|| busy_update(&nr.thread, &nr.assistant));
        let start = starts_now.then(|| self.start_ops(&run, thread_update.clone()));
        let started = match self.insert_run_row(&nr, &run, start).await {
            Ok(started) => started,
            Err(e) => {
                self.withdraw(handle, prev);
                return Err(e);
            }
        };
        let thread_stream = if nr.ephemeral {
            String::new()
        } else {
            thread_stream_id(owner, nr.thread_id())
        };
        self.publish_metadata(&run.run_id, &thread_stream).await;
        for (h, action) in to_cancel {
            h.request_cancel(action);
        }
        if let Some(other) = remote_active {
            self.cancel_remote_active(&nr, &other).await;
        }
        // A thread created above is already busy and tagged; an existing one turns busy
        // (done already when the run started with its row).
        let thread_update = if started { None } else { thread_update };
        let done = Some(handle.done.subscribe());
        let job = executor::Job {
            run: run.clone(),
            request: request.clone(),
            graph_id: nr.assistant.graph_id.clone(),
            handle,
            prev,
            thread_update,
            adopted: false,
            claimed: started,
        };
        self.spawn_run(job);
        Ok(CreatedRun { run, request, done })
    }

    /// The assistant (after the agent switch), the thread (created when the run needs a new
    /// one) and the strategy of a run create.
    async fn resolve_new_run<'a>(
        &self,
        owner: &'a str,
        thread_id: Option<&str>,
        request: &RunCreate,
    ) -> Result<NewRun<'a>, RuntimeError> {
        let assistant = self.resolve_assistant(owner, &request.assistant_id).await?;
        let assistant = self.select_agent(assistant, request)?;
        let temporary = thread_id.is_none();
        let ephemeral = temporary && request.on_completion_delete;
        let rows = self.rows(ephemeral);
        let (thread, created_now) =
            thread_for_run(rows, owner, thread_id, request, &assistant).await?;
        Ok(NewRun {
            owner,
            assistant,
            thread,
            created_now,
            temporary,
            ephemeral,
            strategy: request
                .multitask_strategy
                .unwrap_or(self.config.default_multitask_strategy),
        })
    }

    /// DeerFlow's custom-agent switch: a run of an agent graph whose `context.agent_name` (or
    /// `configurable.agent_name`) names another agent runs that agent instead (its system
    /// assistant). A name that is no agent is a 422 listing the agents.
    fn select_agent(
        &self,
        assistant: Assistant,
        request: &RunCreate,
    ) -> Result<Assistant, RuntimeError> {
        if !self.graphs.is_agent(&assistant.graph_id) {
            return Ok(assistant);
        }
        let named = request
            .context
            .as_ref()
            .and_then(|c| c.get("agent_name"))
            .or_else(|| request.configurable_value("agent_name"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let Some(name) = named else {
            return Ok(assistant);
        };
        match self.graphs.agent_named(&name) {
            Some(graph) if graph == assistant.graph_id => Ok(assistant),
            Some(graph) => Ok(self
                .system_assistants
                .read()
                .get(graph)
                .cloned()
                .unwrap_or_else(|| Assistant::system(graph))),
            None => Err(RuntimeError::Invalid(format!(
                "Unknown agent_name '{name}'. Agents: {}",
                self.graphs.agent_ids().join(", ")
            ))),
        }
    }

    /// Beyond this process's capacity a durable run is queued in the database (no owner, no
    /// local task): the control loop of whichever replica has room claims it.
    async fn should_queue(&self, nr: &NewRun<'_>) -> Result<bool, RuntimeError> {
        if nr.ephemeral {
            return Ok(false);
        }
        if !self.has_capacity() {
            return Ok(true);
        }
        if nr.created_now || self.config.max_concurrent_runs.is_none() {
            return Ok(false);
        }
        // A queued run of the thread goes first: this one queues behind it rather than
        // holding capacity while it waits.
        Ok(self
            .stores
            .runs
            .next_pending_for_thread(Owner(nr.owner), ThreadId(nr.thread_id()))
            .await?
            .is_some_and(|r| r.worker_id.is_none()))
    }

    /// The thread's active run executing on another replica, when the strategy cancels it.
    async fn remote_active_run(&self, nr: &NewRun<'_>) -> Result<Option<Run>, RuntimeError> {
        if !nr.shared_thread(self.config.exclusive) || nr.strategy.cancel_action().is_none() {
            return Ok(None);
        }
        Ok(self
            .stores
            .runs
            .active_for_thread(Owner(nr.owner), ThreadId(nr.thread_id()))
            .await?
            .filter(|r| !self.is_live(&r.run_id) && r.cancel_requested.is_none()))
    }

    /// The multitask decision and the registration of the new run, under the registry lock,
    /// so two concurrent creates on one thread cannot both see it idle. The run's id and
    /// `created_at` are minted here too: the thread's queue order in this process is then the
    /// order of the rows, which a claim checks (a run is not claimed while an older run of its
    /// thread is pending; minted before the lock, two racing creates could queue in one order
    /// here and the other in the database, each waiting for the other).
    fn register_local(
        &self,
        nr: &NewRun<'_>,
        request: &RunCreate,
    ) -> Result<Registered, RuntimeError> {
        let mut live = self.live.lock();
        let active: Vec<Arc<RunHandle>> = live
            .runs
            .values()
            .filter(|h| h.on_thread(nr.owner, nr.thread_id()) && h.cancel_action().is_none())
            .cloned()
            .collect();
        if nr.strategy == MultitaskStrategy::Reject && !active.is_empty() {
            return Err(RuntimeError::Conflict(REJECT_MESSAGE.into()));
        }
        let run = self.build_run(nr, &new_id(), request);
        let handle = self.new_handle(&run.run_id, nr.thread_id(), nr.owner, nr.ephemeral);
        live.runs.insert(handle.run_id.clone(), handle.clone());
        let prev = live.tails.insert(handle.thread_key(), handle.clone());
        let to_cancel = match nr.strategy.cancel_action() {
            Some(action) => active.into_iter().map(|h| (h, action)).collect(),
            None => Vec::new(),
        };
        Ok(Registered {
            run,
            handle,
            to_cancel,
            prev,
        })
    }

    /// Undoes a registration whose run row could not be written: the run is no longer live
    /// (the multitask strategy of later creates does not see it), but it stays in its place in
    /// the thread's queue until the run before it is done, so that a run created behind it in
    /// the meantime still waits for that one.
    fn withdraw(self: &Arc<Self>, handle: Arc<RunHandle>, prev: Option<Arc<RunHandle>>) {
        self.live.lock().runs.remove(&handle.run_id);
        let rt = self.clone();
        self.tracker.spawn(async move {
            if let Some(prev) = prev {
                let _ = prev.done.subscribe().wait_for(Option::is_some).await;
            }
            rt.forget(&handle);
            handle.done.send_replace(Some(RunResult::RolledBack));
        });
    }

    /// The writes that start a run with its row: its claim, if it can start now, and its
    /// thread's busy status.
    fn start_ops(&self, run: &Run, thread_update: Option<ThreadUpdate>) -> Vec<WriteOp> {
        let mut ops = vec![WriteOp::ClaimRun {
            run_id: run.run_id.clone(),
            worker_id: self.lease.worker_id.clone(),
            lease_until: self.lease.expiry(),
            started: Some(Default::default()),
        }];
        if let Some(update) = thread_update {
            ops.push(WriteOp::Thread {
                thread_id: run.thread_id.clone(),
                update,
            });
        }
        ops
    }

    /// Writes the run row, in one commit-queue unit with `start` (see [`Self::start_ops`])
    /// when given: concurrent creates share a commit. Returns whether the run started (was
    /// claimed) with it. `reject` on a shared database: the thread's active run may execute
    /// on another replica, so the database decides, atomically with the insert.
    async fn insert_run_row(
        &self,
        nr: &NewRun<'_>,
        run: &Run,
        start: Option<Vec<WriteOp>>,
    ) -> Result<bool, RuntimeError> {
        let rows = self.rows(nr.ephemeral);
        if nr.strategy == MultitaskStrategy::Reject && nr.shared_thread(self.config.exclusive) {
            let inserted = rows.runs.put_if_idle(run).await?;
            return if inserted {
                Ok(false)
            } else {
                Err(RuntimeError::Conflict(REJECT_MESSAGE.into()))
            };
        }
        if nr.ephemeral {
            rows.runs.put(run).await?;
            return Ok(false);
        }
        let mut unit = WriteUnit::new(nr.owner, antler_graph::thread_key(nr.owner, nr.thread_id()));
        unit.ops.push(WriteOp::PutRun(Box::new(run.clone())));
        unit.ops.extend(start.unwrap_or_default());
        let started = unit.ops.iter().find_map(|op| match op {
            WriteOp::ClaimRun { started, .. } => started.clone(),
            _ => None,
        });
        match rows.commits.submit(unit).await {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
                "run {} already exists (or another run of thread {} is running)",
                run.run_id, run.thread_id
            ))
            .into()),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(started.is_some_and(|s| *s.lock())),
        }
    }

    /// The first event of every run's stream.
    async fn publish_metadata(&self, run_id: &str, thread_stream: &str) {
        self.publish(
            run_id,
            thread_stream,
            "metadata",
            &json!({"run_id": run_id, "attempt": 1}),
        )
        .await;
    }

    /// Cancels the thread's active run on another replica (multitask interrupt / rollback).
    async fn cancel_remote_active(&self, nr: &NewRun<'_>, other: &Run) {
        let action = nr
            .strategy
            .cancel_action()
            .unwrap_or(CancelAction::Interrupt);
        match self
            .cancel_remote(nr.owner, Some(nr.thread_id()), &other.run_id, action, false)
            .await
        {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => {
                tracing::warn!(run_id = %other.run_id, error = %e, "multitask cancel on another replica failed");
            }
        }
    }

    /// Counts the new run and spawns its task on the tracker.
    fn spawn_run(self: &Arc<Self>, job: executor::Job) {
        self.counters
            .created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .pending
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let rt = self.clone();
        self.tracker.spawn(async move { rt.execute(job).await });
    }

    /// Refuses one more run when `pending` runs already wait (`max_pending_runs`).
    fn check_pending(&self, pending: u64) -> Result<(), RuntimeError> {
        match self.config.max_pending_runs {
            Some(max) if pending >= max as u64 => Err(RuntimeError::Overloaded(format!(
                "Too many runs waiting to start ({pending}, runs.max_pending_runs = {max}): retry later"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether this process may start one more run now (`max_concurrent_runs`).
    pub(crate) fn has_capacity(&self) -> bool {
        self.config
            .max_concurrent_runs
            .is_none_or(|max| self.live.lock().runs.len() < max)
    }

    /// `create_run` past capacity: the run row is queued (no owner) and the thread marked
    /// busy; no local task. Multitask `reject` / `interrupt` / `rollback` see this process's
    /// live runs of the thread and the thread's active run in the database.
    async fn enqueue_durable(
        &self,
        nr: &NewRun<'_>,
        run: Run,
        request: RunCreate,
    ) -> Result<CreatedRun, RuntimeError> {
        let (owner, thread_id) = (nr.owner, nr.thread_id());
        if let Some(active) = self
            .stores
            .runs
            .active_for_thread(Owner(owner), ThreadId(thread_id))
            .await?
        {
            self.apply_strategy_to_active(nr, &active).await?;
        }
        // The stream begins before the row exists: once the row is in, any replica may claim
        // and run it, and its first event must be this `metadata`.
        self.publish_metadata(&run.run_id, &thread_stream_id(owner, thread_id))
            .await;
        if let Err(e) = self.stores.runs.put(&run).await {
            self.bridge.cleanup(&run.run_id, Duration::ZERO).await;
            return Err(e.into());
        }
        if !nr.created_now {
            let update = busy_update(&nr.thread, &nr.assistant);
            let _ = self
                .stores
                .threads
                .update(Owner(owner), ThreadId(thread_id), update)
                .await;
        }
        self.counters
            .created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Any replica with room may take it now rather than at its next poll (only now: its
        // stream must begin with the `metadata` published above).
        self.bridge.wake_replica(None).await;
        Ok(CreatedRun {
            run,
            request,
            done: None,
        })
    }

    /// The multitask strategy of a queued run against the thread's active run (wherever it
    /// executes): `reject` refuses, `interrupt` / `rollback` cancel it, `enqueue` waits.
    async fn apply_strategy_to_active(
        &self,
        nr: &NewRun<'_>,
        active: &Run,
    ) -> Result<(), RuntimeError> {
        if nr.strategy == MultitaskStrategy::Reject {
            return Err(RuntimeError::Conflict(REJECT_MESSAGE.into()));
        }
        let Some(action) = nr.strategy.cancel_action() else {
            return Ok(());
        };
        for h in self.live_runs_of_thread(nr.owner, nr.thread_id()) {
            h.request_cancel(action);
        }
        self.stores
            .runs
            .request_cancel(RunId(&active.run_id), action)
            .await?;
        self.bridge.wake_replica(active.worker_id.as_deref()).await;
        Ok(())
    }

    /// The run row of a create: pending, owned by this process under a fresh lease.
    fn build_run(&self, nr: &NewRun<'_>, run_id: &str, req: &RunCreate) -> Run {
        let metadata = run_metadata(nr, req);
        let config = run_config(nr, run_id, req, &metadata);
        let mut run = Run::new(run_id, nr.thread_id(), &nr.assistant.assistant_id, nr.owner);
        run.worker_id = Some(self.lease.worker_id.clone());
        run.lease_expires_at = Some(self.lease.expiry());
        run.metadata = metadata;
        run.kwargs = run_kwargs(nr, req, config);
        run.multitask_strategy = nr.strategy;
        run.temporary = nr.temporary;
        run
    }
}

/// The thread a run executes on: the named one (created when missing and the request says
/// `if_not_exists: create`), or a new temporary one. Returns whether it was created here.
async fn thread_for_run(
    rows: &Stores,
    owner: &str,
    thread_id: Option<&str>,
    request: &RunCreate,
    assistant: &Assistant,
) -> Result<(Thread, bool), RuntimeError> {
    let Some(tid) = thread_id else {
        let tid = new_id();
        let thread = rows
            .threads
            .create(Owner(owner), fresh_thread(&tid, assistant))
            .await?;
        return Ok((thread, true));
    };
    let not_found = || RuntimeError::NotFound("Thread or assistant not found.".into());
    if let Some(t) = rows.threads.get(Owner(owner), ThreadId(tid)).await? {
        return Ok((t, false));
    }
    if !request.if_not_exists_create {
        return Err(not_found());
    }
    match rows
        .threads
        .create(Owner(owner), fresh_thread(tid, assistant))
        .await
    {
        Ok(t) => Ok((t, true)),
        Err(StoreError::Conflict(_)) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

/// A thread created for a run: born busy and tagged with its graph (no extra update).
fn fresh_thread(thread_id: &str, assistant: &Assistant) -> Thread {
    let mut meta = Map::new();
    meta.insert("graph_id".into(), json!(assistant.graph_id));
    meta.insert("assistant_id".into(), json!(assistant.assistant_id));
    let mut t = Thread::new(thread_id, meta);
    t.status = ThreadStatus::Busy;
    t
}

/// An existing thread a run is created on turns busy and gets the graph tags it lacks (the
/// first run's graph sticks).
fn busy_update(thread: &Thread, assistant: &Assistant) -> ThreadUpdate {
    let mut meta = Map::new();
    if !thread.metadata.contains_key("graph_id") {
        meta.insert("graph_id".into(), json!(assistant.graph_id));
    }
    if !thread.metadata.contains_key("assistant_id") {
        meta.insert("assistant_id".into(), json!(assistant.assistant_id));
    }
    ThreadUpdate {
        status: Some(ThreadStatus::Busy),
        metadata: (!meta.is_empty()).then_some(meta),
        ..Default::default()
    }
}

/// A run queued in the database: no owner, and its `lease_expires_at` is when it may start
/// (no replica claims it before).
fn queue(run: &mut Run, after_seconds: f64) {
    run.worker_id = None;
    run.lease_expires_at = (after_seconds > 0.0)
        .then(|| run.created_at + chrono::Duration::milliseconds((after_seconds * 1000.0) as i64));
}

/// Run metadata: the thread's, the assistant's, the graph tags, then the request's.
fn run_metadata(nr: &NewRun<'_>, req: &RunCreate) -> Map<String, Value> {
    let mut metadata = nr.thread.metadata.clone();
    for (k, v) in &nr.assistant.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    metadata.insert("graph_id".into(), json!(nr.assistant.graph_id));
    metadata.insert("assistant_id".into(), json!(nr.assistant.assistant_id));
    for (k, v) in &req.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    metadata
}

/// The run's config: the request's, with `configurable` = assistant config + request config
/// + internal keys, and the run metadata.
fn run_config(
    nr: &NewRun<'_>,
    run_id: &str,
    req: &RunCreate,
    metadata: &Map<String, Value>,
) -> Map<String, Value> {
    let assistant = &nr.assistant;
    let mut configurable = assistant
        .config
        .get("configurable")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in req.configurable() {
        configurable.insert(k, v);
    }
    configurable.insert("run_id".into(), json!(run_id));
    configurable.insert("thread_id".into(), json!(nr.thread.thread_id));
    configurable.insert("graph_id".into(), json!(assistant.graph_id));
    configurable.insert("assistant_id".into(), json!(assistant.assistant_id));
    configurable.insert("user_id".into(), json!(nr.owner));
    configurable.insert("__after_seconds__".into(), json!(req.after_seconds));
    let mut config = req.config.clone();
    config.insert("configurable".into(), Value::Object(configurable));
    config.insert("metadata".into(), Value::Object(metadata.clone()));
    config
}

/// The stored request of a run (what recovery rebuilds it from, see `RunCreate::from_run`).
fn run_kwargs(nr: &NewRun<'_>, req: &RunCreate, config: Map<String, Value>) -> Value {
    let mut context = nr
        .assistant
        .context
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in req.context.clone().unwrap_or_default() {
        context.insert(k, v);
    }
    json!({
        "input": req.input,
        "command": req.command,
        "config": config,
        "context": context,
        "stream_mode": req.stream_mode,
        "interrupt_before": req.interrupt_before,
        "interrupt_after": req.interrupt_after,
        "webhook": req.webhook,
        "feedback_keys": req.feedback_keys,
        "temporary": nr.temporary,
        "subgraphs": req.stream_subgraphs,
        "resumable": req.stream_resumable,
        "checkpoint_during": req.checkpoint_during,
        "durability": req.durability,
        "checkpoint_id": req.checkpoint_id,
        "on_completion": if req.on_completion_delete { "delete" } else { "keep" },
    })
}
