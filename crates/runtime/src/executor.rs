//! The executor: one task per run. It waits for its turn on the thread, drives the graph with
//! the thread's checkpointer, forwards the stream to the bridge (run stream + thread stream),
//! and finalizes the run row, the thread and the stream whatever happens.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use antler_graph::{
    Checkpointer, Command, GraphError, Interrupts, MemoryCheckpointer, RunConfig, RunInput,
    RunOutcome, StreamPart, StreamSink,
};
use antler_store::{Claim, Run, RunStatus, ThreadStatus, ThreadUpdate};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::durability::FencedCheckpointer;
use crate::events::{EventShaper, engine_modes};
use crate::journal::Journal;
use crate::{CancelAction, RunCreate, RunHandle, RunResult, Runtime, thread_stream_id};

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
        if let Some(update) = thread_update {
            let _ = self
                .rows(handle.ephemeral)
                .threads
                .update(&run.owner, &run.thread_id, update)
                .await;
        }
        let owner = run.owner.clone();
        let run_id = run.run_id.clone();
        let thread_id = run.thread_id.clone();
        // A stateless run whose temporary thread is deleted when it ends keeps its checkpoints
        // in memory: nothing of it outlives the run, so writing them to disk would be pure cost.
        let ephemeral = handle.ephemeral;
        let checkpointer: Arc<dyn Checkpointer> = if ephemeral {
            Arc::new(MemoryCheckpointer::new())
        } else {
            Arc::new(FencedCheckpointer {
                inner: self.stores.checkpointer(&owner),
                lease: self.lease.clone(),
            })
        };

        // 1. Wait for our turn (the previous run of the thread) and `after_seconds`; a cancel
        //    while waiting ends the run without executing it.
        let cancelled_early = tokio::select! {
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
        };
        drop(prev);
        self.counters.pending.fetch_sub(1, Ordering::Relaxed);
        if cancelled_early {
            let action = handle.cancel_action().unwrap_or(CancelAction::Interrupt);
            self.finish_unstarted(&handle, &run, action).await;
            return;
        }

        // 2. pending -> running (exactly once), under this process's lease. An adopted run
        //    that was running is ours already.
        let ours_already = claimed || (adopted && run.status == RunStatus::Running);
        if !ours_already {
            match self.claim(&handle, &run).await {
                Some(true) => {}
                Some(false) => {
                    // Deleted or already handled elsewhere: nothing to execute.
                    self.finish_unstarted(&handle, &run, CancelAction::Interrupt)
                        .await;
                    return;
                }
                None => {
                    let action = handle.cancel_action().unwrap_or(CancelAction::Interrupt);
                    self.finish_unstarted(&handle, &run, action).await;
                    return;
                }
            }
        }
        self.counters.running.fetch_add(1, Ordering::Relaxed);

        // 3. Stream plumbing: the engine's sink is synchronous, so parts go through an unbounded
        //    channel to a forwarder that shapes, serializes once and publishes in order.
        let (tx, rx) = mpsc::unbounded_channel::<StreamPart>();
        let sink: StreamSink = Arc::new(move |part| {
            let _ = tx.send(part);
        });
        // (`metadata` was published when the run was created, so a stream's first byte does
        // not wait for the run to start.)
        // Nobody can join an ephemeral run's temporary thread: no thread stream for it.
        let thread_stream = if ephemeral {
            String::new()
        } else {
            thread_stream_id(&owner, &thread_id)
        };
        let mut journal = Journal::new(&self, &run, &request, !ephemeral);
        journal.start().await;
        let forwarder = {
            let rt = self.clone();
            let run_id = run_id.clone();
            let thread_stream = thread_stream.clone();
            let requested = request.stream_mode.clone();
            async move {
                let mut rx = rx;
                let mut shaper = EventShaper::new(&requested);
                let mut journal = journal;
                while let Some(part) = rx.recv().await {
                    journal.observe(&part).await;
                    for (name, data) in shaper.shape(part) {
                        rt.publish(&run_id, &thread_stream, &name, &data).await;
                    }
                }
                journal
            }
        };

        // 4. Run the graph, concurrently with the forwarder (same task: no extra spawn). The
        //    sink (and with it the channel's sender) is dropped when the graph future completes,
        //    which ends the forwarder after it has published everything.
        let graph_part = async {
            let Some(graph) = self.graphs.get(&graph_id).cloned() else {
                drop(sink);
                return Ending::Failed(GraphError {
                    kind: "GraphNotFound".into(),
                    message: format!("graph '{graph_id}' is not registered"),
                });
            };
            let (input, config) = self.graph_inputs(&run, &request, adopted);
            let fut = graph.run(
                checkpointer.clone(),
                input,
                config,
                sink,
                handle.cancel.clone(),
            );
            let timed = match self.config.run_timeout {
                Some(t) => tokio::time::timeout(t, fut).await.ok(),
                None => Some(fut.await),
            };
            match timed {
                None => Ending::TimedOut,
                Some(Ok(outcome)) => Ending::Finished(outcome),
                Some(Err(e)) => match handle.cancel_action() {
                    Some(action) if handle.cancel.is_cancelled() => Ending::Cancelled(action),
                    _ if self.shutdown.is_cancelled() => Ending::Cancelled(CancelAction::Interrupt),
                    _ => Ending::Failed(e),
                },
            }
        };
        let (ending, journal) = tokio::join!(graph_part, forwarder);

        // 5. Finalize: row, thread, stream, journal, webhook.
        self.counters.running.fetch_sub(1, Ordering::Relaxed);
        if !ephemeral && !self.lease.valid() {
            // Fenced: another process may own the run by now. Write nothing; it resumes the
            // run from the last checkpoint we committed.
            drop(journal);
            self.forget(&handle);
            self.counters.finished.fetch_add(1, Ordering::Relaxed);
            handle.done.send_replace(Some(RunResult::Error {
                kind: "LeaseLost".into(),
                message: "this server lost its run lease; another server resumes the run".into(),
            }));
            return;
        }
        let result = self
            .finalize(&run, checkpointer.as_ref(), ephemeral, ending, journal)
            .await;
        self.end_streams(&run_id, &thread_stream, &result).await;
        if let Some(url) = request.webhook.clone() {
            self.send_webhook(url, &owner, &run_id).await;
        }
        if ephemeral {
            let _ = self.delete_thread_rows(&owner, &thread_id).await;
            self.remove_thread_files(&owner, &thread_id).await;
        }
        self.forget(&handle);
        self.counters.finished.fetch_add(1, Ordering::Relaxed);
        handle.done.send_replace(Some(result));
    }

    /// Claims the run for this process: `Some(true)` claimed, `Some(false)` gone (not pending
    /// any more), `None` cancelled while waiting. While another run of the thread is running
    /// (in another process: this one runs a thread's runs in order), it waits and retries.
    async fn claim(&self, handle: &RunHandle, run: &Run) -> Option<bool> {
        let mut delay = Duration::from_millis(50);
        loop {
            let res = self
                .rows(handle.ephemeral)
                .runs
                .claim(&run.run_id, &self.lease.worker_id, self.lease.expiry())
                .await;
            match res {
                Ok(Claim::Claimed) => return Some(true),
                Ok(Claim::Gone) => return Some(false),
                Ok(Claim::Busy) => {}
                Err(e) => {
                    tracing::warn!(run_id = %run.run_id, error = %e, "claim failed, retrying")
                }
            }
            tokio::select! {
                _ = handle.cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
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
        };
        (input, config)
    }

    pub(crate) async fn publish(
        &self,
        run_id: &str,
        thread_stream: &str,
        event: &str,
        data: &Value,
    ) {
        let data: Arc<str> = match serde_json::to_string(data) {
            Ok(s) => s.into(),
            Err(_) => return,
        };
        if let Err(e) = self.bridge.publish(run_id, event, data.clone()).await {
            tracing::warn!(run_id, error = %e, "stream publish failed");
        }
        self.publish_thread(thread_stream, event, data).await;
    }

    /// Publishes to a thread's stream. That stream never ends on purpose, but the bridge ends
    /// streams nobody published to for a long time: then it is dropped and started afresh.
    async fn publish_thread(&self, thread_stream: &str, event: &str, data: Arc<str>) {
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
                    .delete(&run.owner, &run.run_id)
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
                    .transition(&run.run_id, from, RunStatus::Interrupted, None)
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
                    owner,
                    thread_id,
                    ThreadUpdate {
                        status: Some(ThreadStatus::Idle),
                        ..Default::default()
                    },
                )
                .await;
        }
    }

    async fn finalize(
        &self,
        run: &Run,
        checkpointer: &dyn Checkpointer,
        ephemeral: bool,
        ending: Ending,
        journal: Journal,
    ) -> RunResult {
        let owner = run.owner.as_str();
        let thread_id = run.thread_id.as_str();
        let graph = self.graphs.get(
            run.metadata
                .get("graph_id")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        // Rollback first: remove what the run wrote.
        if let Ending::Cancelled(CancelAction::Rollback) = ending {
            let _ = checkpointer.delete_run(thread_id, &run.run_id).await;
            let _ = self.rows(ephemeral).runs.delete(owner, &run.run_id).await;
            let _ = self
                .stores
                .events
                .delete_run(owner, thread_id, &run.run_id)
                .await;
        }
        // Current state of the thread (values + pending interrupts). A run that simply finished
        // already has it in its outcome; the others read it back from the checkpointer.
        let finished_clean =
            matches!(&ending, Ending::Finished(o) if o.interrupts.is_empty() && o.next.is_empty());
        let snapshot = match graph {
            Some(g) if !finished_clean => {
                g.get_state(checkpointer, thread_id, None, false).await.ok()
            }
            _ => None,
        };
        let values = match (&ending, &snapshot) {
            (Ending::Finished(o), _) if finished_clean => Some(o.values.clone()),
            (_, Some(s)) => Some(s.values.clone()),
            _ => None,
        }
        .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()));
        let mut interrupts = Map::new();
        if let Some(s) = &snapshot {
            for t in &s.tasks {
                if !t.interrupts.is_empty() {
                    let list: Vec<Value> = t
                        .interrupts
                        .iter()
                        .map(|i| json!({"id": i.id, "value": i.value}))
                        .collect();
                    interrupts.insert(t.id.clone(), Value::Array(list));
                }
            }
        }
        let (status, thread_status, error, result) = match &ending {
            Ending::Finished(outcome) => {
                let mut vals = outcome.values.clone();
                let paused = !outcome.interrupts.is_empty();
                if paused && let Some(obj) = vals.as_object_mut() {
                    obj.insert(
                        "__interrupt__".into(),
                        Value::Array(
                            outcome
                                .interrupts
                                .iter()
                                .map(|i| i.to_stream_value())
                                .collect(),
                        ),
                    );
                }
                let at_breakpoint = !outcome.next.is_empty();
                let ts = if paused || !interrupts.is_empty() || at_breakpoint {
                    ThreadStatus::Interrupted
                } else {
                    ThreadStatus::Idle
                };
                (RunStatus::Success, ts, None, RunResult::Values(vals))
            }
            Ending::Failed(e) => (
                RunStatus::Error,
                ThreadStatus::Error,
                Some(json!({"error": e.kind, "message": e.message})),
                RunResult::Error {
                    kind: e.kind.clone(),
                    message: e.message.clone(),
                },
            ),
            Ending::Cancelled(CancelAction::Interrupt) => (
                RunStatus::Interrupted,
                ThreadStatus::Interrupted,
                None,
                RunResult::Stopped(values.clone().unwrap_or_else(|| json!({}))),
            ),
            Ending::Cancelled(CancelAction::Rollback) => (
                RunStatus::Interrupted,
                ThreadStatus::Idle,
                Some(json!({
                    "error": "UserRollback",
                    "message": format!("rollback requested via POST /threads/{thread_id}/runs/{}/cancel", run.run_id),
                })),
                RunResult::RolledBack,
            ),
            Ending::TimedOut => (
                RunStatus::Timeout,
                ThreadStatus::Error,
                Some(json!({"error": "TimeoutError", "message": "run exceeded its timeout"})),
                RunResult::Error {
                    kind: "TimeoutError".into(),
                    message: "run exceeded its timeout".into(),
                },
            ),
        };
        let rolled_back = matches!(ending, Ending::Cancelled(CancelAction::Rollback));
        if !rolled_back {
            // Status, error and the final counters in one write.
            let mut completion = journal.completion();
            completion.status = Some(status);
            completion.error = error.as_ref().map(|e| e.to_string());
            let _ = self
                .rows(ephemeral)
                .runs
                .update_completion(&run.run_id, &completion)
                .await;
        }
        journal.finish(status, error.as_ref()).await;
        // Another queued run on this thread keeps it busy.
        let queued = self
            .live_runs_of_thread(owner, thread_id)
            .iter()
            .any(|h| h.run_id != run.run_id);
        let title = values
            .as_ref()
            .and_then(|v| v.get("title"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut meta = Map::new();
        if let Some(t) = title {
            meta.insert("title".into(), Value::String(t));
        }
        if ephemeral {
            // The temporary thread is deleted right after: no point updating it.
            return result;
        }
        let update = ThreadUpdate {
            status: Some(if queued {
                ThreadStatus::Busy
            } else {
                thread_status
            }),
            values: Some(Some(values.clone().unwrap_or(Value::Null))),
            error: Some(Some(error.clone().unwrap_or(Value::Null))),
            interrupts: if rolled_back {
                Some(None)
            } else {
                Some(Some(Value::Object(interrupts)))
            },
            config: Some(json!({"configurable": {}})),
            metadata: (!meta.is_empty()).then_some(meta),
        };
        let _ = self
            .rows(ephemeral)
            .threads
            .update(owner, thread_id, update)
            .await;
        if matches!(result, RunResult::Values(_)) && thread_status == ThreadStatus::Interrupted {
            self.bridge.mark_awaiting_input(&run.run_id).await;
        }
        result
    }

    /// Deletes a temporary thread's rows and checkpoints (stateless runs, `on_completion: delete`).
    async fn delete_thread_rows(
        &self,
        owner: &str,
        thread_id: &str,
    ) -> Result<(), crate::RuntimeError> {
        // Its checkpoints lived in memory and its run events were not persisted.
        self.rows(true).threads.delete(owner, thread_id).await?;
        let _ = self
            .rows(true)
            .runs
            .delete_by_thread(owner, thread_id)
            .await;
        Ok(())
    }
}
