//! The executor: one task per run. It waits for its turn on the thread, drives the graph with
//! the thread's checkpointer, forwards the stream to the bridge (run stream + thread stream),
//! and finalizes the run row, the thread and the stream whatever happens.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use antler_bridge::Payload;
use antler_graph::{
    Checkpointer, Command, GraphError, Interrupts, MemoryCheckpointer, RunConfig, RunInput,
    RunOutcome, StreamPart, StreamSink,
};
use antler_store::{
    Claim, Owner, Run, RunId, RunStatus, ThreadId, ThreadStatus, ThreadUpdate, WriteOp, WriteUnit,
};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::events::{EventShaper, engine_modes};
use crate::journal::Journal;
use crate::session::{Durability, RunSession};
use crate::{
    CancelAction, FinalValues, RunCreate, RunHandle, RunResult, Runtime, thread_stream_id,
};

/// How long the stream of an ephemeral (stateless, deleted-on-completion) run is retained.
const EPHEMERAL_STREAM_RETENTION: Duration = Duration::from_secs(10);

/// Everything a run task needs.
pub(crate) struct Job {
    pub run: Run,
    pub request: RunCreate,
    pub graph_id: String,
    pub handle: Arc<RunHandle>,
    /// The previous run of the thread: this run starts after it has finished.
    pub prev: Option<Arc<RunHandle>>,
    /// Thread changes of the run's creation (status busy, graph tags), applied by the task
    /// so that the create request is acknowledged after one durable write (the run row).
    pub thread_update: Option<ThreadUpdate>,
    /// Adopted from a dead process (recovery): it may already be `running` under our lease.
    pub adopted: bool,
    /// Claimed from the durable queue: already `running` under our lease.
    pub claimed: bool,
}

/// How the graph part of a run ended.
enum Ending {
    Finished(RunOutcome),
    Failed(GraphError),
    Cancelled(CancelAction),
    TimedOut,
}

/// Why a run was let go: this process lost its lease.
const FENCED: (&str, &str) = (
    "LeaseLost",
    "this server lost its run lease; another server resumes the run",
);
/// Why a run was let go: shutdown's grace ran out.
const RELEASED: (&str, &str) = (
    "ServerShutdown",
    "this server shut down before the run ended; the next server resumes it",
);

/// The thread's state after a run.
#[derive(Default)]
struct FinalView {
    values: Option<FinalValues>,
    /// Task id -> the task's open interrupts.
    interrupts: Map<String, Value>,
}

/// How a run ended, for its row, its thread and its waiters.
struct End {
    status: RunStatus,
    thread_status: ThreadStatus,
    error: Option<Value>,
    result: RunResult,
}

fn classify(ending: &Ending, view: &FinalView, run: &Run) -> End {
    let error = |kind: &str, message: &str| Some(json!({"error": kind, "message": message}));
    match ending {
        Ending::Finished(outcome) => {
            let paused = !outcome.interrupts.is_empty();
            let stream = paused.then(|| {
                Value::Array(
                    outcome
                        .interrupts
                        .iter()
                        .map(|i| i.to_stream_value())
                        .collect(),
                )
            });
            let interrupted = paused || !view.interrupts.is_empty() || !outcome.next.is_empty();
            End {
                status: RunStatus::Success,
                thread_status: if interrupted {
                    ThreadStatus::Interrupted
                } else {
                    ThreadStatus::Idle
                },
                error: None,
                result: RunResult::Values(FinalValues::shared(outcome.state.clone(), stream)),
            }
        }
        Ending::Failed(e) => End {
            status: RunStatus::Error,
            thread_status: ThreadStatus::Error,
            error: error(&e.kind, &e.message),
            result: RunResult::Error {
                kind: e.kind.clone(),
                message: e.message.clone(),
            },
        },
        Ending::Cancelled(CancelAction::Interrupt) => End {
            status: RunStatus::Interrupted,
            thread_status: ThreadStatus::Interrupted,
            error: None,
            result: RunResult::Stopped(
                view.values
                    .as_ref()
                    .filter(|v| !v.is_empty())
                    .map_or_else(|| json!({}), FinalValues::to_value),
            ),
        },
        Ending::Cancelled(CancelAction::Rollback) => End {
            status: RunStatus::Interrupted,
            thread_status: ThreadStatus::Idle,
            error: error(
                "UserRollback",
                &format!(
                    "rollback requested via POST /threads/{}/runs/{}/cancel",
                    run.thread_id, run.run_id
                ),
            ),
            result: RunResult::RolledBack,
        },
        Ending::TimedOut => End {
            status: RunStatus::Timeout,
            thread_status: ThreadStatus::Error,
            error: error("TimeoutError", "run exceeded its timeout"),
            result: RunResult::Error {
                kind: "TimeoutError".into(),
                message: "run exceeded its timeout".into(),
            },
        },
    }
}

/// Encodes an error for the run row: `{"error": kind, "message": text}` as JSON text.
pub(crate) fn encode_error(kind: &str, message: &str) -> String {
    json!({"error": kind, "message": message}).to_string()
}

/// Decodes what [`encode_error`] wrote (plain text is reported as kind `Error`).
pub(crate) fn split_error(stored: Option<&str>) -> (String, String) {
    let Some(s) = stored else {
        return ("Error".into(), "unknown error".into());
    };
    match serde_json::from_str::<Value>(s) {
        Ok(v) => (
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("Error")
                .to_string(),
            v.get("message")
                .and_then(Value::as_str)
                .unwrap_or(s)
                .to_string(),
        ),
        Err(_) => ("Error".into(), s.to_string()),
    }
}

/// What a run writes through while it executes.
struct Plumbing {
    /// The engine's checkpointer: the run's session, or a memory checkpointer (ephemeral).
    checkpointer: Arc<dyn Checkpointer>,
    session: Option<Arc<RunSession>>,
    journal: Arc<Mutex<Journal>>,
}

impl Runtime {
    pub(crate) async fn execute(self: Arc<Self>, job: Job) {
        let Job {
            run,
            request,
            graph_id,
            handle,
            prev,
            thread_update,
            adopted,
            claimed,
        } = job;
        // 1. Wait for our turn (the previous run of the thread) and `after_seconds`; a cancel
        //    while waiting ends the run without executing it.
        let cancelled_early = self.wait_turn(&handle, prev, &request).await;
        self.counters.pending.fetch_sub(1, Ordering::Relaxed);
        if cancelled_early && self.released(&handle) {
            return self.let_go(&handle, RELEASED);
        }
        if cancelled_early {
            let action = handle.cancel_action().unwrap_or(CancelAction::Interrupt);
            self.finish_unstarted(&handle, &run, action).await;
            return;
        }
        // 2. pending -> running (exactly once), under this process's lease.
        let ours_already = claimed || (adopted && run.status == RunStatus::Running);
        let Some(start) = self.start(&handle, &run, thread_update, ours_already).await else {
            return;
        };
        self.counters.running.fetch_add(1, Ordering::Relaxed);
        let mut request = request;
        if !adopted {
            canonical_input_messages(&mut request.input);
        }
        let plumbing = self.plumbing(&handle, &run, &request, start);
        // 3. Run the graph while the forwarder publishes its stream.
        let ending = self
            .drive(&handle, &run, &request, &graph_id, adopted, &plumbing)
            .await;
        self.counters.running.fetch_sub(1, Ordering::Relaxed);
        if matches!(ending, Ending::Cancelled(CancelAction::Interrupt)) && self.released(&handle) {
            return self.let_go(&handle, RELEASED);
        }
        // 4. Finalize: row, thread, stream, webhook.
        self.conclude(&handle, &run, &request, ending, plumbing)
            .await;
    }

    /// Waits for the previous run of the thread and `after_seconds`; true when cancelled.
    async fn wait_turn(
        &self,
        handle: &RunHandle,
        prev: Option<Arc<RunHandle>>,
        request: &RunCreate,
    ) -> bool {
        tokio::select! {
            biased;
            _ = handle.cancel.cancelled() => true,
            _ = async {
                if let Some(prev) = &prev {
                    let mut rx = prev.done.subscribe();
                    let _ = rx.wait_for(Option::is_some).await;
                }
                if request.after_seconds > 0.0 {
                    tokio::time::sleep(Duration::from_secs_f64(request.after_seconds)).await;
                }
            } => false,
        }
    }

    /// Starts the run: the writes of its start, to fold into its first unit (`Some`), or
    /// `None` when it ended before starting. Where this process is alone on its database
    /// the run is this process's by construction, so the claim and the thread's busy status
    /// commit with the first step; elsewhere the claim is committed first (another replica
    /// may run the thread).
    async fn start(
        &self,
        handle: &Arc<RunHandle>,
        run: &Run,
        thread_update: Option<ThreadUpdate>,
        ours_already: bool,
    ) -> Option<Vec<WriteOp>> {
        let mut ops = Vec::new();
        if !ours_already {
            ops.push(WriteOp::ClaimRun {
                run_id: run.run_id.clone(),
                worker_id: self.lease.worker_id.clone(),
                lease_until: self.lease.expiry(),
                started: None,
            });
        }
        if let Some(update) = thread_update {
            ops.push(WriteOp::Thread {
                thread_id: run.thread_id.clone(),
                update,
            });
        }
        if self.config.exclusive && !handle.ephemeral {
            return Some(ops);
        }
        let claimed = if handle.ephemeral {
            self.claim_ephemeral(run, ops).await
        } else {
            self.claim(handle, ops).await
        };
        match claimed {
            Some(true) => Some(Vec::new()),
            Some(false) => {
                // Deleted or already handled elsewhere: nothing to execute.
                self.finish_unstarted(handle, run, CancelAction::Interrupt)
                    .await;
                None
            }
            None if self.released(handle) => {
                self.let_go(handle, RELEASED);
                None
            }
            None => {
                let action = handle.cancel_action().unwrap_or(CancelAction::Interrupt);
                self.finish_unstarted(handle, run, action).await;
                None
            }
        }
    }

    /// The journal and the checkpointer the engine writes through.
    fn plumbing(
        &self,
        handle: &RunHandle,
        run: &Run,
        request: &RunCreate,
        start: Vec<WriteOp>,
    ) -> Plumbing {
        let ephemeral = handle.ephemeral;
        let journal = Arc::new(Mutex::new(Journal::new(self, run, request, !ephemeral)));
        journal.lock().start();
        if ephemeral {
            // A stateless run whose temporary thread is deleted when it ends keeps its
            // checkpoints in memory: nothing of it outlives the run.
            return Plumbing {
                checkpointer: Arc::new(MemoryCheckpointer::new()),
                session: None,
                journal,
            };
        }
        let durability = Durability::of(&request.durability, request.checkpoint_during);
        let session = Arc::new(RunSession::new(
            &run.owner,
            &run.thread_id,
            durability,
            self.stores.commits.clone(),
            self.stores.checkpointer(&run.owner),
            journal.clone(),
            self.lease.clone(),
            start,
        ));
        Plumbing {
            checkpointer: session.clone(),
            session: Some(session),
            journal,
        }
    }

    /// Runs the graph concurrently with the forwarder (same task: no extra spawn). The engine's
    /// sink is synchronous: the journal records each part, then it goes through an unbounded
    /// channel to the forwarder, which shapes, serializes once and publishes in order. The
    /// sink (and the channel's sender) is dropped when the graph future completes, which ends
    /// the forwarder after it has published everything.
    async fn drive(
        self: &Arc<Self>,
        handle: &Arc<RunHandle>,
        run: &Run,
        request: &RunCreate,
        graph_id: &str,
        adopted: bool,
        plumbing: &Plumbing,
    ) -> Ending {
        let (tx, rx) = mpsc::unbounded_channel::<StreamPart>();
        let journal = plumbing.journal.clone();
        let sink: StreamSink = Arc::new(move |part| {
            journal.lock().observe(&part);
            let _ = tx.send(part);
        });
        // (`metadata` was published when the run was created, so a stream's first byte does
        // not wait for the run to start.)
        let forwarder = self.forward(handle, run, request, rx);
        let graph_part = async {
            let Some(graph) = self.graphs.get(graph_id).cloned() else {
                drop(sink);
                return Ending::Failed(GraphError {
                    kind: "GraphNotFound".into(),
                    message: format!("graph '{graph_id}' is not registered"),
                });
            };
            let (input, mut config) = self.graph_inputs(run, request, adopted);
            // the thread outlives the run: its next run loads these lists
            config.keep_message_index = !handle.ephemeral;
            let cp = plumbing.checkpointer.clone();
            let fut = graph.run(cp, input, config, sink, handle.cancel.clone());
            let timed = match self.config.run_timeout {
                Some(t) => tokio::time::timeout(t, fut).await.ok(),
                None => Some(fut.await),
            };
            self.ending(handle, timed)
        };
        let (ending, ()) = tokio::join!(graph_part, forwarder);
        ending
    }

    fn ending(&self, handle: &RunHandle, timed: Option<Result<RunOutcome, GraphError>>) -> Ending {
        match timed {
            None => Ending::TimedOut,
            Some(Ok(outcome)) => Ending::Finished(outcome),
            Some(Err(e)) => match handle.cancel_action() {
                Some(action) if handle.cancel.is_cancelled() => Ending::Cancelled(action),
                _ if self.shutdown.is_cancelled() => Ending::Cancelled(CancelAction::Interrupt),
                _ => Ending::Failed(e),
            },
        }
    }

    /// Publishes the run's stream parts to its stream and its thread's stream.
    async fn forward(
        &self,
        handle: &RunHandle,
        run: &Run,
        request: &RunCreate,
        mut rx: mpsc::UnboundedReceiver<StreamPart>,
    ) {
        // Nobody can join an ephemeral run's temporary thread: no thread stream for it.
        let thread_stream = self.thread_stream_of(handle, run);
        let mut shaper = EventShaper::new(&request.stream_mode);
        while let Some(part) = rx.recv().await {
            // a `values` part in the engine's shared form: serialized from its lists when a
            // subscriber first reads it (a `/wait` client reads the result, not the stream)
            if let Some(state) = part.shared.clone() {
                let name = part.event_name();
                let data = Payload::lazy(state);
                self.publish_payload(&run.run_id, &thread_stream, &name, data)
                    .await;
                continue;
            }
            for (name, data) in shaper.shape(part) {
                self.publish(&run.run_id, &thread_stream, &name, &data)
                    .await;
            }
        }
    }

    fn thread_stream_of(&self, handle: &RunHandle, run: &Run) -> String {
        if handle.ephemeral {
            String::new()
        } else {
            thread_stream_id(&run.owner, &run.thread_id)
        }
    }

    /// After the graph part: the final writes, the streams' ends, the webhook, the cleanup of
    /// an ephemeral run, and the run's `done` watch.
    async fn conclude(
        &self,
        handle: &Arc<RunHandle>,
        run: &Run,
        request: &RunCreate,
        ending: Ending,
        plumbing: Plumbing,
    ) {
        let ephemeral = handle.ephemeral;
        if !ephemeral && !self.lease.valid() {
            // Fenced: another process may own the run by now.
            return self.let_go(handle, FENCED);
        }
        let result = self.finalize(handle, run, ending, &plumbing).await;
        let thread_stream = self.thread_stream_of(handle, run);
        self.end_streams(&run.run_id, &thread_stream, &result).await;
        if let Some(url) = request.webhook.clone() {
            self.send_webhook(url, &run.owner, &run.run_id).await;
        }
        if ephemeral {
            let _ = self.delete_thread_rows(&run.owner, &run.thread_id).await;
            self.remove_thread_files(&run.owner, &run.thread_id).await;
        }
        self.forget(handle);
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        handle.done.send_replace(Some(result));
    }

    /// Whether the run stopped because shutdown's grace ran out (not by a cancel request): a
    /// durable run is then released, not ended.
    fn released(&self, handle: &RunHandle) -> bool {
        !handle.ephemeral && handle.cancel_action().is_none() && self.stop_runs.is_cancelled()
    }

    /// Lets go of a run without writing anything more: another server (or this one after a
    /// restart) resumes it from the last checkpoint committed. Its waiters here get `why`.
    fn let_go(&self, handle: &Arc<RunHandle>, (kind, message): (&str, &str)) {
        self.forget(handle);
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        handle.done.send_replace(Some(RunResult::Error {
            kind: kind.into(),
            message: message.into(),
        }));
    }

    /// Claims the run for this process (its start ops, committed through the queue so that
    /// concurrent claims share commits): `Some(true)` claimed, `Some(false)` gone (not pending
    /// any more), `None` cancelled while waiting. While another run of the thread is running
    /// (in another process: this one runs a thread's runs in order), it waits and retries.
    async fn claim(&self, handle: &RunHandle, ops: Vec<WriteOp>) -> Option<bool> {
        let mut delay = Duration::from_millis(50);
        let commits = &self.rows(handle.ephemeral).commits;
        loop {
            let mut unit = WriteUnit::new(handle.owner.clone(), handle.thread_key());
            unit.ops = ops.clone();
            match commits.submit(unit).await {
                Ok(()) => return Some(true),
                Err(e) => match antler_store::commit::claim_failure(&e) {
                    Some(Claim::Gone) => return Some(false),
                    Some(_) => {}
                    None => {
                        tracing::warn!(run_id = %handle.run_id, error = %e, "claim failed, retrying")
                    }
                },
            }
            tokio::select! {
                _ = handle.cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// The start of a run whose rows live in memory (nothing to share or retry).
    async fn claim_ephemeral(&self, run: &Run, ops: Vec<WriteOp>) -> Option<bool> {
        let rows = self.rows(true);
        for op in ops {
            match op {
                WriteOp::ClaimRun {
                    run_id,
                    worker_id,
                    lease_until,
                    ..
                } => {
                    let claim = rows
                        .runs
                        .claim(RunId(&run_id), &worker_id, lease_until)
                        .await;
                    if !matches!(claim, Ok(Claim::Claimed)) {
                        return Some(false);
                    }
                }
                WriteOp::Thread { thread_id, update } => {
                    let _ = rows
                        .threads
                        .update(Owner(&run.owner), ThreadId(&thread_id), update)
                        .await;
                }
                _ => {}
            }
        }
        Some(true)
    }

    fn graph_inputs(&self, run: &Run, request: &RunCreate, adopted: bool) -> (RunInput, RunConfig) {
        let configurable = run
            .kwargs
            .pointer("/config/configurable")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        // Context (LangGraph >= 0.6) is visible to nodes through the configurable map too.
        let mut configurable = configurable;
        if let Some(Value::Object(ctx)) = run.kwargs.get("context") {
            for (k, v) in ctx {
                configurable.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let mut metadata = run.metadata.clone();
        metadata.insert("run_attempt".into(), json!(if adopted { 2 } else { 1 }));
        metadata.insert("langgraph_api_url".into(), json!(self.config.api_url));
        metadata.insert("run_id".into(), json!(run.run_id));
        metadata.insert("thread_id".into(), json!(run.thread_id));
        metadata.insert("user_id".into(), json!(run.owner));
        let recursion_limit = request
            .config
            .get("recursion_limit")
            .and_then(Value::as_u64)
            .map_or(25, |n| n as usize);
        let input = match (&request.command, &request.input) {
            (Some(cmd), _) => match serde_json::from_value::<Command>(cmd.clone()) {
                Ok(c) => RunInput::Command(c),
                Err(_) => RunInput::Null,
            },
            (None, Some(v)) => RunInput::Values(v.clone()),
            (None, None) => RunInput::Null,
        };
        let config = RunConfig {
            thread_id: run.thread_id.clone(),
            checkpoint_id: request.checkpoint_id.clone(),
            run_id: run.run_id.clone(),
            recursion_limit,
            configurable,
            metadata,
            interrupt_before: request
                .interrupt_before
                .as_ref()
                .map(Interrupts::from_value)
                .unwrap_or_default(),
            interrupt_after: request
                .interrupt_after
                .as_ref()
                .map(Interrupts::from_value)
                .unwrap_or_default(),
            stream_modes: engine_modes(&request.stream_mode),
            subgraphs: request.stream_subgraphs,
            // the final state is read from the outcome's shared channels, when at all
            output_values: false,
            // `values` parts are serialized by the forwarder straight from the shared lists
            shared_values: true,
            keep_message_index: false,
        };
        (input, config)
    }

    pub(crate) async fn publish(
        &self,
        run_id: &str,
        thread_stream: &str,
        event: &str,
        data: &(impl serde::Serialize + ?Sized),
    ) {
        if let Ok(s) = serde_json::to_string(data) {
            self.publish_payload(run_id, thread_stream, event, s.into())
                .await;
        }
    }

    /// Publishes one payload to the run's stream and its thread's stream (shared: a lazy
    /// payload is serialized once, by the first reader of either).
    async fn publish_payload(&self, run_id: &str, thread_stream: &str, event: &str, data: Payload) {
        if let Err(e) = self.bridge.publish(run_id, event, data.clone()).await {
            tracing::warn!(run_id, error = %e, "stream publish failed");
        }
        self.publish_thread(thread_stream, event, data).await;
    }

    /// Publishes to a thread's stream. That stream never ends on purpose, but the bridge ends
    /// streams nobody published to for a long time: then it is dropped and started afresh.
    async fn publish_thread(&self, thread_stream: &str, event: &str, data: Payload) {
        if thread_stream.is_empty() {
            return;
        }
        if let Err(antler_bridge::BridgeError::StreamEnded { .. }) = self
            .bridge
            .publish(thread_stream, event, data.clone())
            .await
        {
            self.bridge.cleanup(thread_stream, Duration::ZERO).await;
            let _ = self.bridge.publish(thread_stream, event, data).await;
        }
    }

    async fn end_streams(&self, run_id: &str, thread_stream: &str, result: &RunResult) {
        if let RunResult::Error { kind, message } = result {
            let data = json!({"error": kind, "message": message});
            self.publish(run_id, thread_stream, "error", &data).await;
        }
        let _ = self.bridge.publish_end(run_id).await;
        // An ephemeral run's stream can only be read by the request that created it (its
        // temporary thread is gone): keep it just long enough for that reader.
        let delay = if thread_stream.is_empty() {
            self.config
                .stream_cleanup_delay
                .min(EPHEMERAL_STREAM_RETENTION)
        } else {
            self.config.stream_cleanup_delay
        };
        self.bridge.cleanup(run_id, delay).await;
        let done = json!({"status": "run_done", "run_id": run_id});
        if let Ok(s) = serde_json::to_string(&done) {
            self.publish_thread(thread_stream, "metadata", s.into())
                .await;
        }
    }

    /// A run cancelled (or deleted) before it started.
    async fn finish_unstarted(&self, handle: &Arc<RunHandle>, run: &Run, action: CancelAction) {
        let result = match action {
            CancelAction::Rollback => {
                // An adopted or claimed run may have written checkpoints before: remove them.
                if !handle.ephemeral && run.status == RunStatus::Running {
                    let _ = self
                        .stores
                        .checkpointer(&run.owner)
                        .delete_run(&run.thread_id, &run.run_id)
                        .await;
                }
                let _ = self
                    .rows(handle.ephemeral)
                    .runs
                    .delete(Owner(&run.owner), RunId(&run.run_id))
                    .await;
                RunResult::RolledBack
            }
            CancelAction::Interrupt => {
                // Pending, or running under our lease (adopted / claimed, stopped before
                // the graph started). A run we did not hold as running is never touched
                // while running: someone else may own it.
                let from: &[RunStatus] = if run.status == RunStatus::Running {
                    &[RunStatus::Pending, RunStatus::Running]
                } else {
                    &[RunStatus::Pending]
                };
                let _ = self
                    .rows(handle.ephemeral)
                    .runs
                    .transition(RunId(&run.run_id), from, RunStatus::Interrupted, None)
                    .await;
                RunResult::Stopped(Value::Object(Map::new()))
            }
        };
        self.settle_thread_status(&run.owner, &run.thread_id, handle.ephemeral)
            .await;
        let _ = self.bridge.publish_end(&run.run_id).await;
        self.bridge
            .cleanup(&run.run_id, self.config.stream_cleanup_delay)
            .await;
        self.forget(handle);
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        handle.done.send_replace(Some(result));
    }

    /// After a run that did not execute: the thread is idle again unless other runs are queued.
    async fn settle_thread_status(&self, owner: &str, thread_id: &str, ephemeral: bool) {
        let others = self.live_runs_of_thread(owner, thread_id).len() > 1;
        if !others {
            let _ = self
                .rows(ephemeral)
                .threads
                .update(
                    Owner(owner),
                    ThreadId(thread_id),
                    ThreadUpdate {
                        status: Some(ThreadStatus::Idle),
                        ..Default::default()
                    },
                )
                .await;
        }
    }

    /// The run's last writes (row, thread, last events: one unit with whatever the session
    /// still holds) and its result.
    async fn finalize(
        &self,
        handle: &RunHandle,
        run: &Run,
        ending: Ending,
        plumbing: &Plumbing,
    ) -> RunResult {
        let rolled_back = matches!(ending, Ending::Cancelled(CancelAction::Rollback));
        if rolled_back {
            self.roll_back(handle, run, plumbing).await;
        }
        let view = self
            .final_view(run, plumbing.checkpointer.as_ref(), &ending)
            .await;
        let end = classify(&ending, &view, run);
        let mut ops = Vec::new();
        if !rolled_back {
            // Status, error and the final counters in one write.
            let mut completion = plumbing.journal.lock().completion();
            completion.status = Some(end.status);
            completion.error = end.error.as_ref().map(|e| e.to_string());
            ops.push(WriteOp::RunCompletion {
                run_id: run.run_id.clone(),
                completion,
            });
        }
        plumbing
            .journal
            .lock()
            .finish(end.status, end.error.as_ref());
        let thread_status = end.thread_status;
        if !handle.ephemeral {
            ops.push(self.final_thread_update(run, &view, &end, rolled_back));
        }
        let result = match self.commit_end(handle, plumbing, ops).await {
            Ok(()) => end.result,
            Err(e) => self.storage_failure(run, e),
        };
        if matches!(result, RunResult::Values(_)) && thread_status == ThreadStatus::Interrupted {
            self.bridge.mark_awaiting_input(&run.run_id).await;
        }
        result
    }

    /// Rollback first: remove what the run wrote (after its queued units committed).
    async fn roll_back(&self, handle: &RunHandle, run: &Run, plumbing: &Plumbing) {
        let (owner, thread_id) = (run.owner.as_str(), run.thread_id.as_str());
        let _ = plumbing
            .checkpointer
            .delete_run(thread_id, &run.run_id)
            .await;
        let _ = self
            .rows(handle.ephemeral)
            .runs
            .delete(Owner(owner), RunId(&run.run_id))
            .await;
        let _ = self
            .stores
            .events
            .delete_run(Owner(owner), ThreadId(thread_id), RunId(&run.run_id))
            .await;
    }

    /// The thread's state after the run. A run that simply finished has it in its outcome;
    /// the others read it back (from the run's own latest checkpoint: no database read).
    async fn final_view(&self, run: &Run, cp: &dyn Checkpointer, ending: &Ending) -> FinalView {
        let clean =
            matches!(ending, Ending::Finished(o) if o.interrupts.is_empty() && o.next.is_empty());
        if let (Ending::Finished(o), true) = (ending, clean) {
            return FinalView {
                values: Some(FinalValues::shared(o.state.clone(), None)),
                interrupts: Map::new(),
            };
        }
        let graph_id = run.metadata.get("graph_id").and_then(Value::as_str);
        let snapshot = match graph_id.and_then(|g| self.graphs.get(g)) {
            Some(g) => g.get_state(cp, &run.thread_id, None, false).await.ok(),
            None => None,
        };
        let Some(s) = snapshot else {
            return FinalView::default();
        };
        let mut interrupts = Map::new();
        for t in s.tasks.iter().filter(|t| !t.interrupts.is_empty()) {
            let list: Vec<Value> = t
                .interrupts
                .iter()
                .map(|i| json!({"id": i.id, "value": i.value}))
                .collect();
            interrupts.insert(t.id.clone(), Value::Array(list));
        }
        FinalView {
            values: Some(FinalValues::json(s.values)),
            interrupts,
        }
    }

    /// The thread as the run leaves it (another queued run on it keeps it busy).
    fn final_thread_update(
        &self,
        run: &Run,
        view: &FinalView,
        end: &End,
        rolled_back: bool,
    ) -> WriteOp {
        let queued = self
            .live_runs_of_thread(&run.owner, &run.thread_id)
            .iter()
            .any(|h| h.run_id != run.run_id);
        let values = view.values.as_ref().filter(|v| !v.is_empty());
        let mut meta = Map::new();
        if let Some(t) = values.and_then(|v| v.get_str("title")) {
            meta.insert("title".into(), Value::String(t));
        }
        let update = ThreadUpdate {
            status: Some(if queued {
                ThreadStatus::Busy
            } else {
                end.thread_status
            }),
            // no snapshot of the state: reads derive a thread's values from its latest
            // checkpoint (writing it here would cost O(state) on every run)
            values: None,
            error: Some(Some(end.error.clone().unwrap_or(Value::Null))),
            interrupts: if rolled_back {
                Some(None)
            } else {
                Some(Some(Value::Object(view.interrupts.clone())))
            },
            config: Some(json!({"configurable": {}})),
            metadata: (!meta.is_empty()).then_some(meta),
        };
        WriteOp::Thread {
            thread_id: run.thread_id.clone(),
            update,
        }
    }

    /// Commits the run's last unit and waits for every unit of the run.
    async fn commit_end(
        &self,
        handle: &RunHandle,
        plumbing: &Plumbing,
        ops: Vec<WriteOp>,
    ) -> Result<(), antler_store::StoreError> {
        match &plumbing.session {
            Some(session) => session.finish(ops).await,
            None => {
                let mut unit = WriteUnit::new(handle.owner.clone(), handle.thread_key());
                unit.ops = ops;
                self.rows(true).commits.submit(unit).await
            }
        }
    }

    /// A run whose writes could not be committed: it fails at once with the storage error
    /// (the client's `error` event), and its run and thread rows are marked failed as soon as
    /// the database takes a write again (see [`mark_failed`]).
    fn storage_failure(&self, run: &Run, e: antler_store::StoreError) -> RunResult {
        tracing::error!(run_id = %run.run_id, error = %e, "run writes not committed");
        let message = format!("the run's writes could not be committed: {e}");
        tokio::spawn(mark_failed(
            self.stores.clone(),
            self.lease.clone(),
            run.clone(),
            json!({"error": "StorageError", "message": message}),
        ));
        RunResult::Error {
            kind: "StorageError".into(),
            message,
        }
    }

    /// Deletes a temporary thread's rows and checkpoints (stateless runs, `on_completion: delete`).
    async fn delete_thread_rows(
        &self,
        owner: &str,
        thread_id: &str,
    ) -> Result<(), crate::RuntimeError> {
        // Its checkpoints lived in memory and its run events were not persisted.
        self.rows(true)
            .threads
            .delete(Owner(owner), ThreadId(thread_id))
            .await?;
        let _ = self
            .rows(true)
            .runs
            .delete_by_thread(Owner(owner), ThreadId(thread_id))
            .await;
        Ok(())
    }
}

/// How long a failed run's rows are retried (a database down for longer leaves the run to
/// recovery: its row still says `running`, and a restarted server or another replica resumes
/// or fails it per `runs.recovery`).
const MARK_FAILED_FOR: Duration = Duration::from_secs(120);

/// Marks a run whose writes were lost as failed (`error` row, `error` thread), retrying while
/// the database refuses writes, for as long as this process owns the run.
async fn mark_failed(
    stores: antler_store::Stores,
    lease: Arc<crate::durability::Lease>,
    run: Run,
    error: Value,
) {
    let stored = error.to_string();
    let deadline = tokio::time::Instant::now() + MARK_FAILED_FOR;
    let mut delay = Duration::from_millis(100);
    let thread = ThreadUpdate {
        status: Some(ThreadStatus::Error),
        error: Some(Some(error.clone())),
        ..ThreadUpdate::default()
    };
    while lease.valid() && tokio::time::Instant::now() < deadline {
        let marked = stores
            .runs
            .update_status(RunId(&run.run_id), RunStatus::Error, Some(&stored))
            .await;
        let thread = match marked {
            Ok(_) => stores
                .threads
                .update(Owner(&run.owner), ThreadId(&run.thread_id), thread.clone())
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match thread {
            Ok(()) | Err(antler_store::StoreError::NotFound) => return,
            Err(e) => tracing::debug!(run_id = %run.run_id, error = %e, "marking the run failed"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    tracing::warn!(run_id = %run.run_id, "could not mark the failed run; recovery will");
}

/// Gives the input's messages their canonical form and ids before the run starts (what the
/// `messages` reducer would do to them), so that the run journal records the human message
/// with the id it gets in the thread's state (DeerFlow's message feed and the state agree on
/// it). An input whose messages do not all coerce is left as it is: the graph reports it.
fn canonical_input_messages(input: &mut Option<Value>) {
    let Some(Value::Array(msgs)) = input.as_mut().and_then(|i| i.get_mut("messages")) else {
        return;
    };
    let coerced: Result<Vec<Value>, _> = msgs
        .iter()
        .map(antler_graph::messages::coerce_message)
        .collect();
    if let Ok(coerced) = coerced {
        *msgs = coerced;
    }
}
