//! Running one task: `START` (the input), a node function or a subgraph (`subgraph.rs`), and
//! turning its output into the task's result.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::channels::Channels;
use super::exec::{Exec, TaskResult};
use super::tasks::Task;
use crate::context::{CtxInner, NodeContext, NodeInput};
use crate::graph::{NodeFn, NodeKind};
use crate::types::{NodeError, NodeOutput, Route, START, StreamMode};

/// One task's run of a node, owned by the task's future.
pub(super) struct NodeCall {
    pub(super) task: Task,
    pub(super) step: i64,
    pub(super) input: NodeInput,
    /// The task has an interrupt that is not answered yet.
    pub(super) open_interrupt: bool,
    /// The checkpoint the task runs from.
    pub(super) checkpoint_id: String,
}

/// Events mode's view of a node's run: a chain of its own.
struct NodeEvents {
    run_id: String,
    meta: Map<String, Value>,
    input: Value,
}

impl Exec {
    /// The future of the task `t` of `step`, reading the channels `ch`; `resume` holds the
    /// resume values of its interrupts, in order.
    pub(super) fn run_task(
        &self,
        ch: &Arc<Channels>,
        t: &Task,
        step: i64,
        resume: Vec<Value>,
        open_interrupt: bool,
        checkpoint_id: &str,
    ) -> BoxFuture<'static, TaskResult> {
        let this = self.clone();
        let input = match &t.arg {
            Some(arg) => NodeInput::from_value(arg.clone()),
            None => ch.input(self.g()),
        };
        let call = NodeCall {
            task: t.clone(),
            step,
            input,
            open_interrupt,
            checkpoint_id: checkpoint_id.to_string(),
        };
        let ch = Arc::clone(ch);
        Box::pin(async move {
            if call.task.name == START {
                return this.start_task(&ch);
            }
            this.run_node(&ch, &call, resume).await
        })
    }

    /// `START`'s task: the input's state writes and `START`'s edges.
    fn start_task(&self, ch: &Channels) -> TaskResult {
        let raw = match ch.values.get(START) {
            Some(v) => v.to_value(),
            None => Value::Null,
        };
        // raw input writes (the reducers coerce them), as LangGraph stores them
        let writes: Vec<(String, Value)> = match &raw {
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| self.g().reducer(k).is_some())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Value::Null => Vec::new(),
            other => {
                return TaskResult::Failed {
                    kind: "InvalidUpdateError".into(),
                    message: format!("Expected dict, got {other}"),
                };
            }
        };
        self.task_writes(ch, START, raw, writes, &[])
    }

    /// Runs a node (its function or its subgraph) and makes its output the task's result.
    async fn run_node(&self, ch: &Channels, call: &NodeCall, resume: Vec<Value>) -> TaskResult {
        let t = &call.task;
        let Some(spec) = self.g().node(&t.name) else {
            return TaskResult::Failed {
                kind: "InvalidUpdateError".into(),
                message: format!("Node {} does not exist", t.name),
            };
        };
        let events = self.emit_node_start(call);
        // only events mode shows run ids
        let run_id = events
            .as_ref()
            .map_or_else(String::new, |e| e.run_id.clone());
        let output = match &spec.kind {
            NodeKind::Func(f) => self.call_func(f, call, resume, &run_id).await,
            NodeKind::Subgraph(sub) => self.run_subgraph(sub, call, resume, &run_id).await,
        };
        let result = self.node_result(ch, &t.name, output);
        if let (Some(ev), TaskResult::Writes { update, .. }) = (&events, &result) {
            self.emit_node_end(ev, call, update);
        }
        result
    }

    /// Calls a node function; a panicking node fails its task instead of tearing down the run.
    async fn call_func(
        &self,
        f: &NodeFn,
        call: &NodeCall,
        resume: Vec<Value>,
        run_id: &str,
    ) -> Result<NodeOutput, NodeError> {
        let t = &call.task;
        let ctx = NodeContext {
            inner: Arc::new(CtxInner {
                cfg: self.cfg.clone(),
                base_meta: self.base_meta.clone(),
                triggers: t.triggers.clone(),
                path: t.path.clone(),
                checkpoint_ns: t.ns.clone(),
                resume,
                interrupt_count: Mutex::new(0),
                emitter: self.emitter.clone(),
                cancel: self.cancel.clone(),
                node_run_id: run_id.to_string(),
                parent_ids: self.parent_ids.clone(),
                step: call.step,
                node: t.name.clone(),
            }),
        };
        match std::panic::AssertUnwindSafe(f(call.input.clone(), ctx))
            .catch_unwind()
            .await
        {
            Ok(r) => r,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "node panicked".to_string());
                Err(NodeError::failed("PanicError", msg))
            }
        }
    }

    /// The task's result for a node's output: its writes, or its failure / interrupt / command
    /// for the parent graph / cancellation.
    fn node_result(
        &self,
        ch: &Channels,
        node: &str,
        output: Result<NodeOutput, NodeError>,
    ) -> TaskResult {
        match output {
            Ok(out) => match self.output_writes(out) {
                Ok((update, writes, goto)) => self.task_writes(ch, node, update, writes, &goto),
                Err(r) => r,
            },
            Err(NodeError::Failed { kind, message }) => TaskResult::Failed { kind, message },
            Err(NodeError::Interrupt(sig)) => TaskResult::Interrupted(sig.0),
            Err(NodeError::ParentCommand(cmd)) => TaskResult::Parent(cmd),
            Err(NodeError::Cancelled) => TaskResult::Cancelled,
        }
    }

    /// A task's writes: its state writes, then the writes of `node`'s edges.
    fn task_writes(
        &self,
        ch: &Channels,
        node: &str,
        update: Value,
        writes: Vec<(String, Value)>,
        goto: &[Route],
    ) -> TaskResult {
        match self.edge_writes(ch, node, &writes, goto) {
            Ok(edges) => {
                let mut all = writes;
                all.extend(edges);
                TaskResult::Writes {
                    update,
                    writes: all,
                }
            }
            Err(e) => TaskResult::Failed {
                kind: e.kind,
                message: e.message,
            },
        }
    }

    /// Events mode: the node's `on_chain_start`; returns what its end needs.
    fn emit_node_start(&self, call: &NodeCall) -> Option<NodeEvents> {
        if !self.emitter.wants(StreamMode::Events) {
            return None;
        }
        let t = &call.task;
        let ev = NodeEvents {
            run_id: uuid::Uuid::now_v7().to_string(),
            meta: Self::with_integration(&self.task_meta(t, call.step), "langgraph"),
            input: call.input.to_value(),
        };
        self.emitter.emit(
            StreamMode::Events,
            json!({"event": "on_chain_start", "data": {"input": ev.input}, "name": t.name,
                   "tags": [format!("graph:step:{}", call.step)], "run_id": ev.run_id,
                   "metadata": ev.meta, "parent_ids": self.parent_ids}),
        );
        Some(ev)
    }

    /// Events mode: the node's `on_chain_stream` and `on_chain_end` with its `update`.
    fn emit_node_end(&self, ev: &NodeEvents, call: &NodeCall, update: &Value) {
        let (name, step) = (&call.task.name, call.step);
        self.emitter.emit(
            StreamMode::Events,
            json!({"event": "on_chain_stream", "run_id": ev.run_id, "name": name,
                   "tags": [format!("graph:step:{step}")], "metadata": ev.meta,
                   "data": {"chunk": update}, "parent_ids": self.parent_ids}),
        );
        self.emitter.emit(
            StreamMode::Events,
            json!({"event": "on_chain_end", "data": {"output": update, "input": ev.input},
                   "run_id": ev.run_id, "name": name,
                   "tags": [format!("graph:step:{step}")], "metadata": ev.meta,
                   "parent_ids": self.parent_ids}),
        );
    }
}
