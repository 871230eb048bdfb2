//! The Pregel loop: load the checkpoint, apply the input (`input.rs`), then run supersteps until
//! the graph is done, pauses (breakpoint or interrupt) or fails.
//!
//! A superstep from checkpoint `id` at `step`: the recursion check, the tasks `id` triggers, the
//! breakpoints before them, their task records, running them (cancellable), recording their
//! results as pending writes of `id`, then applying their writes as the checkpoint of `step`
//! and the breakpoints after them.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::channels::Channels;
use super::exec::{Exec, ExecError, TaskResult};
use super::pending::Pending;
use super::tasks::{Task, prepare};
use super::{ERROR, INTERRUPT, NO_WRITES, recursion_message};
use crate::checkpoint::now_ts;
use crate::types::{
    Command, GraphError, Interrupt, Interrupts, RunInput, RunOutcome, START, StreamMode,
};

/// The state the loop carries from the input to each superstep and from one to the next.
pub(super) struct LoopState {
    pub(super) ch: Channels,
    /// The checkpoint the next superstep starts from (`None`: the thread has none yet).
    pub(super) cur_id: Option<String>,
    /// Step of `cur_id`.
    pub(super) cur_step: i64,
    /// The last step the recursion limit allows.
    pub(super) stop: i64,
    /// Pending writes of `cur_id`: results of tasks that already ran, interrupts, resumes.
    pub(super) pending: Pending,
    /// Channels changed before the first step (command updates), saved with it.
    pub(super) pending_new: Vec<String>,
    /// The run continues a checkpoint (command or null input) and has not run a superstep yet:
    /// the breakpoints before that step are the ones it stopped at, so they do not fire again.
    pub(super) resumed_first_step: bool,
}

/// The loaded checkpoint as a resumed run re-emits it, and whether the run forks it.
pub(super) struct Loaded {
    pub(super) parent: Option<String>,
    pub(super) meta: Map<String, Value>,
    pub(super) source: String,
    /// The run starts from `RunConfig::checkpoint_id` (time travel).
    pub(super) time_travel: bool,
}

/// How a superstep ends.
enum Flow {
    /// Its checkpoint is saved: run the next one.
    Next,
    /// No task was triggered: the run is done.
    Done,
    /// The run pauses (breakpoint or interrupt) with this outcome.
    Paused(Box<RunOutcome>),
}

/// A task's outcome in a step: the writes it recorded before (a resumed step) or its result.
enum TaskRun {
    Cached(Vec<(String, Value)>),
    Ran(TaskResult),
}

/// The results of a step's tasks, once recorded.
#[derive(Default)]
struct Recorded<'t> {
    writes: Vec<(&'t Task, Vec<(String, Value)>)>,
    /// The first failure.
    failure: Option<GraphError>,
    interrupts: Vec<Interrupt>,
    interrupted: Vec<(&'t Task, Vec<Interrupt>)>,
    /// The first command for the parent graph.
    parent_cmd: Option<Command>,
}

/// Whether the breakpoints `at` (before or after) name one of `tasks`.
fn breaks_at(at: &Interrupts, tasks: &[Task]) -> bool {
    tasks.iter().any(|t| at.matches(&t.name))
}

fn cancelled() -> ExecError {
    GraphError::new("CancelledError", "").into()
}

impl Exec {
    /// The loop: load, apply the input, run supersteps until done, paused or failed.
    pub(super) async fn execute(self, input: RunInput) -> Result<RunOutcome, ExecError> {
        let (mut st, loaded) = self.load().await?;
        if self.events_root() {
            self.emit_run_start(&input);
        }
        if let Some(outcome) = self.apply_input(&mut st, &loaded, input).await? {
            return Ok(outcome);
        }
        while let Some(id) = st.cur_id.clone() {
            match self.superstep(&mut st, id).await? {
                Flow::Next => {}
                Flow::Done => break,
                Flow::Paused(outcome) => return Ok(*outcome),
            }
        }
        Ok(self.finish(&st.ch, st.cur_id.as_deref(), Vec::new(), Vec::new()))
    }

    /// `RunConfig::recursion_limit` as a step count.
    pub(super) fn recursion_limit(&self) -> i64 {
        i64::try_from(self.cfg.recursion_limit).unwrap_or(i64::MAX / 4)
    }

    /// Loads the checkpoint the run starts from: the latest of the namespace, or (root only) the
    /// one the config names.
    async fn load(&self) -> Result<(LoopState, Loaded), ExecError> {
        let requested = if self.is_root {
            self.cfg.checkpoint_id.clone()
        } else {
            None
        };
        let (tuple, values) = match self
            .cp
            .get_tuple_shared(&self.cfg.thread_id, &self.ns, requested.as_deref())
            .await?
        {
            Some((t, v)) => (Some(t), v),
            None => (None, BTreeMap::new()),
        };
        if let (Some(id), None) = (&requested, &tuple) {
            return Err(GraphError::new("ValueError", format!("Checkpoint {id} not found")).into());
        }
        let ch = Channels::load(self.g(), tuple.as_ref(), values);
        let cur_step: i64 = tuple
            .as_ref()
            .and_then(|t| t.metadata.get("step").and_then(Value::as_i64))
            .unwrap_or(-2);
        let st = LoopState {
            ch,
            cur_id: tuple.as_ref().map(|t| t.checkpoint.id.clone()),
            cur_step,
            // LangGraph: stop = (step of the loaded checkpoint + 1) + limit + 1 when resuming, or
            // (step of the input checkpoint) + limit + 1 for new input
            stop: cur_step.max(-2) + 1 + self.recursion_limit() + 1,
            pending: tuple
                .as_ref()
                .map(|t| Pending::parse(&t.pending_writes))
                .unwrap_or_default(),
            pending_new: Vec::new(),
            resumed_first_step: false,
        };
        let loaded = Loaded {
            parent: tuple.as_ref().and_then(|t| t.parent_checkpoint_id.clone()),
            meta: tuple
                .as_ref()
                .map(|t| t.metadata.clone())
                .unwrap_or_default(),
            source: tuple
                .as_ref()
                .and_then(|t| t.metadata.get("source").and_then(Value::as_str))
                .unwrap_or("loop")
                .to_string(),
            time_travel: requested.is_some(),
        };
        Ok((st, loaded))
    }

    /// Events mode: the root run starts as a chain named after the graph.
    fn emit_run_start(&self, input: &RunInput) {
        let iv = match input {
            RunInput::Values(v) => v.clone(),
            RunInput::Command(c) => json!({
                "graph": c.graph, "update": c.update, "resume": c.resume,
                "goto": if c.goto.is_empty() { Value::Null } else { serde_json::to_value(&c.goto).unwrap_or(Value::Null) },
            }),
            RunInput::Null => Value::Null,
        };
        self.emitter.emit(
            StreamMode::Events,
            json!({"event": "on_chain_start", "data": {"input": iv}, "name": self.g().name, "tags": [],
                   "run_id": self.cfg.run_id, "metadata": Self::with_integration(&self.base_meta, "langgraph"),
                   "parent_ids": []}),
        );
    }

    /// One superstep from the checkpoint `id` (see the module doc).
    async fn superstep(&self, st: &mut LoopState, id: String) -> Result<Flow, ExecError> {
        let step = st.cur_step + 1;
        // LangGraph checks the limit before looking for tasks
        if step > st.stop {
            return Err(GraphError::new(
                "GraphRecursionError",
                recursion_message(self.cfg.recursion_limit),
            )
            .into());
        }
        let tasks = prepare(self.g(), &st.ch, &id, step, &self.ns);
        if tasks.is_empty() {
            return Ok(Flow::Done);
        }
        let is_input_step = tasks.iter().all(|t| t.name == START);
        let resumed = std::mem::take(&mut st.resumed_first_step);
        if !(is_input_step || resumed) && breaks_at(&self.cfg.interrupt_before, &tasks) {
            return Ok(Flow::Paused(Box::new(
                self.pause_at_breakpoint(&st.ch, &id, &tasks),
            )));
        }
        self.emit_task_records(st, &tasks, step);
        let runs = self.run_tasks(st, &tasks, step, &id).await?;
        let rec = self.record_results(st, &tasks, runs, step, &id).await?;
        if let Some(e) = rec.failure {
            return Err(e.into());
        }
        if let Some(cmd) = rec.parent_cmd {
            return Err(self.parent_command(cmd));
        }
        if !rec.interrupts.is_empty() {
            let outcome = self.pause_on_interrupts(
                &st.ch,
                &id,
                &tasks,
                step,
                rec.interrupts,
                &rec.interrupted,
            );
            return Ok(Flow::Paused(Box::new(outcome)));
        }
        let new_id = self.commit_step(st, &tasks, rec.writes, step, &id).await?;
        if !is_input_step && breaks_at(&self.cfg.interrupt_after, &tasks) {
            let next = prepare(self.g(), &st.ch, &new_id, step + 1, &self.ns);
            return Ok(Flow::Paused(Box::new(
                self.pause_at_breakpoint(&st.ch, &new_id, &next),
            )));
        }
        Ok(Flow::Next)
    }

    /// A task's command for the parent graph ends this graph's run; the root has no parent.
    fn parent_command(&self, cmd: Command) -> ExecError {
        if self.is_root {
            return GraphError::new("InvalidUpdateError", "There is no parent graph").into();
        }
        ExecError::Parent(cmd)
    }

    /// A breakpoint pauses the run at the checkpoint `id`, before the tasks `next`.
    fn pause_at_breakpoint(&self, ch: &Channels, id: &str, next: &[Task]) -> RunOutcome {
        self.emitter
            .emit(StreamMode::Updates, json!({ INTERRUPT: [] }));
        let names = next.iter().map(|t| t.name.clone()).collect();
        self.finish(ch, Some(id), Vec::new(), names)
    }

    /// Task records first, for every task of the step that runs (as LangGraph's tick does).
    fn emit_task_records(&self, st: &LoopState, tasks: &[Task], step: i64) {
        if !self.emitter.wants(StreamMode::Tasks) && !self.emitter.wants(StreamMode::Debug) {
            return;
        }
        let mut state: Option<Value> = None;
        for t in tasks
            .iter()
            .filter(|t| t.name != START && !st.pending.done.contains_key(&t.id))
        {
            let iv = match &t.arg {
                Some(a) => a.clone(),
                None => state
                    .get_or_insert_with(|| st.ch.state_values(self.g()))
                    .clone(),
            };
            let rec = json!({"id": t.id, "name": t.name, "input": iv, "triggers": t.triggers, "metadata": self.cfg.metadata});
            self.emitter.emit(StreamMode::Tasks, rec.clone());
            if self.emitter.wants(StreamMode::Debug) {
                self.emitter.emit(
                    StreamMode::Debug,
                    json!({"step": step, "timestamp": now_ts(), "type": "task", "payload": rec}),
                );
            }
        }
    }

    /// Runs the step's tasks concurrently on one shared snapshot of the channels; a task with
    /// writes from before (a resumed step) does not run again. Cancellation ends the run.
    async fn run_tasks(
        &self,
        st: &LoopState,
        tasks: &[Task],
        step: i64,
        id: &str,
    ) -> Result<Vec<TaskRun>, ExecError> {
        let snapshot = Arc::new(st.ch.clone());
        let runs: Vec<Result<BoxFuture<'static, TaskResult>, _>> = tasks
            .iter()
            .map(|t| match st.pending.done.get(&t.id) {
                Some(w) => Err(w.clone()),
                None => {
                    let open = !st.pending.open_interrupts(&t.id).is_empty();
                    let resume = st.pending.resume_values(&t.id);
                    Ok(self.run_task(&snapshot, t, step, resume, open, id))
                }
            })
            .collect();
        let running = futures::future::join_all(runs.into_iter().map(|run| async move {
            match run {
                Ok(f) => TaskRun::Ran(f.await),
                Err(w) => TaskRun::Cached(w),
            }
        }));
        let results = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(cancelled()),
            r = running => r,
        };
        // the tasks are done: release their view so the writes below mutate in place
        drop(snapshot);
        Ok(results)
    }

    /// Records the tasks' results, in task order, as pending writes of the checkpoint `id` and
    /// streams them; a cancelled task ends the run.
    async fn record_results<'t>(
        &self,
        st: &LoopState,
        tasks: &'t [Task],
        runs: Vec<TaskRun>,
        step: i64,
        id: &str,
    ) -> Result<Recorded<'t>, ExecError> {
        let mut rec = Recorded::default();
        for (t, run) in tasks.iter().zip(runs) {
            let result = match run {
                TaskRun::Cached(w) => {
                    rec.writes.push((t, w));
                    continue;
                }
                TaskRun::Ran(result) => result,
            };
            match result {
                TaskResult::Writes { update, writes } => {
                    let stored: Vec<(String, Value)> = if writes.is_empty() {
                        vec![(NO_WRITES.to_string(), Value::Null)]
                    } else {
                        writes.clone()
                    };
                    self.put_task_writes(id, &t.id, &stored).await?;
                    if t.name != START {
                        self.emit_task_result(&st.ch, t, step, &update, None, &[]);
                    }
                    rec.writes.push((t, writes));
                }
                TaskResult::Failed { kind, message } => {
                    let err = json!({"error": kind, "message": message});
                    let key = format!("{}~error", t.id);
                    self.put_task_writes(id, &key, &[(ERROR.to_string(), err.clone())])
                        .await?;
                    self.emit_task_result(&st.ch, t, step, &json!({}), Some(err), &[]);
                    if rec.failure.is_none() {
                        rec.failure = Some(GraphError { kind, message });
                    }
                }
                TaskResult::Interrupted(list) => {
                    let key = format!("{}~interrupt~{}", t.id, st.pending.resume_count(&t.id));
                    let value = serde_json::to_value(&list).unwrap_or(Value::Null);
                    self.put_task_writes(id, &key, &[(INTERRUPT.to_string(), value)])
                        .await?;
                    rec.interrupted.push((t, list.clone()));
                    rec.interrupts.extend(list);
                }
                TaskResult::Parent(cmd) => {
                    if rec.parent_cmd.is_none() {
                        rec.parent_cmd = Some(cmd);
                    }
                }
                TaskResult::Cancelled => return Err(cancelled()),
            }
        }
        Ok(rec)
    }

    /// Pending writes of the checkpoint `checkpoint_id` under `key` (a task id, with a suffix
    /// for errors, interrupts and resumes).
    pub(super) async fn put_task_writes(
        &self,
        checkpoint_id: &str,
        key: &str,
        writes: &[(String, Value)],
    ) -> Result<(), ExecError> {
        self.cp
            .put_writes(&self.cfg.thread_id, &self.ns, checkpoint_id, key, writes)
            .await?;
        Ok(())
    }

    /// Interrupts pause the run at the checkpoint `id`: streamed as an update (and with the
    /// values), then the interrupted tasks' results.
    fn pause_on_interrupts(
        &self,
        ch: &Channels,
        id: &str,
        tasks: &[Task],
        step: i64,
        interrupts: Vec<Interrupt>,
        interrupted: &[(&Task, Vec<Interrupt>)],
    ) -> RunOutcome {
        let stream: Vec<Value> = interrupts.iter().map(Interrupt::to_stream_value).collect();
        self.emitter
            .emit(StreamMode::Updates, json!({ INTERRUPT: stream }));
        self.emitter
            .emit_values(|| ch.state_in_order(self.g(), Some(Value::Array(stream))));
        // LangGraph reports the interrupted tasks after the interrupt itself
        for (t, list) in interrupted {
            self.emit_task_result(ch, t, step, &json!({}), None, list);
        }
        let next = tasks.iter().map(|t| t.name.clone()).collect();
        self.finish(ch, Some(id), interrupts, next)
    }

    /// Applies the step's writes (its triggers consumed) and saves and emits them as the `loop`
    /// checkpoint of `step`, child of `id`. Returns the new checkpoint's id.
    async fn commit_step(
        &self,
        st: &mut LoopState,
        tasks: &[Task],
        mut writes: Vec<(&Task, Vec<(String, Value)>)>,
        step: i64,
        id: &str,
    ) -> Result<String, ExecError> {
        let gi = self.g();
        let version = st.ch.next_version();
        let consumed = st.ch.consume(gi, tasks, version);
        // LangGraph applies writes sorted by task path: pulls (by node name), then pushes
        writes.sort_by_key(|(t, _)| t.order_key());
        let refs: Vec<&[(String, Value)]> = writes.iter().map(|(_, w)| w.as_slice()).collect();
        let updated = st.ch.apply(gi, &refs, true, version)?;
        let mut extra = consumed;
        extra.append(&mut st.pending_new);
        let new_id = self
            .save(&st.ch, Some(id), "loop", step, updated, &extra)
            .await?;
        st.pending = Pending::default();
        st.cur_id = Some(new_id.clone());
        st.cur_step = step;
        self.emit_values(&st.ch);
        self.emit_saved_checkpoint(&st.ch, &new_id, Some(id), "loop", step);
        Ok(new_id)
    }
}
