//! A subgraph node: the subgraph runs as a child executor in the task's namespace, on the same
//! thread and checkpointer, and its outcome becomes the node's output.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::exec::{Exec, ExecError};
use super::node::NodeCall;
use crate::graph::CompiledGraph;
use crate::types::{
    Command, InterruptSignal, Interrupts, NodeError, NodeOutput, RunConfig, RunInput, RunOutcome,
    StreamMode,
};

/// Events mode: the subgraph is a chain of its own ("LangGraph", Python's default name).
struct SubgraphEvents {
    run_id: String,
    meta: Map<String, Value>,
    input: Value,
    /// The ids of the runs enclosing the subgraph's chain.
    parent_ids: Vec<String>,
}

impl Exec {
    /// Runs the subgraph `sub` as the node of `call`; `node_run_id` is the node's run id
    /// (events mode).
    pub(super) async fn run_subgraph(
        &self,
        sub: &CompiledGraph,
        call: &NodeCall,
        resume: Vec<Value>,
        node_run_id: &str,
    ) -> Result<NodeOutput, NodeError> {
        let run_input = self.subgraph_input(call, &resume).await?;
        let mut parent_ids = self.parent_ids.clone();
        parent_ids.push(node_run_id.to_string());
        let events = self.emit_subgraph_start(call, &mut parent_ids);
        let child = self.child(sub, call, parent_ids);
        let result = Box::pin(child.execute(run_input)).await;
        self.subgraph_output(result, events)
    }

    /// The subgraph's input: the node's input on its first run, else a continuation of its
    /// checkpoint (with the last resume value when its interrupt was answered).
    async fn subgraph_input(
        &self,
        call: &NodeCall,
        resume: &[Value],
    ) -> Result<RunInput, NodeError> {
        let existing = self
            .cp
            .get_tuple(&self.cfg.thread_id, &call.task.ns, None)
            .await
            .map_err(|e| NodeError::failed("CheckpointError", e.to_string()))?;
        if existing.is_none() {
            return Ok(RunInput::Values(call.input.to_value()));
        }
        Ok(match resume.last() {
            Some(v) if !call.open_interrupt => RunInput::Command(Command {
                resume: Some(v.clone()),
                ..Default::default()
            }),
            _ => RunInput::Null,
        })
    }

    /// Events mode: the subgraph chain's `on_chain_start`; its run id joins `parent_ids`.
    fn emit_subgraph_start(
        &self,
        call: &NodeCall,
        parent_ids: &mut Vec<String>,
    ) -> Option<SubgraphEvents> {
        if !self.emitter.wants(StreamMode::Events) {
            return None;
        }
        let t = &call.task;
        let run_id = uuid::Uuid::now_v7().to_string();
        let mut meta = Self::with_integration(&self.task_meta(t, call.step), "langgraph");
        meta.insert("checkpoint_ns".into(), json!(t.ns));
        let input = call.input.to_value();
        self.emitter.emit(
            StreamMode::Events,
            json!({"event": "on_chain_start", "data": {"input": input}, "name": "LangGraph",
                   "tags": ["seq:step:1"], "run_id": run_id, "metadata": meta,
                   "parent_ids": parent_ids}),
        );
        let outer_ids = parent_ids.clone();
        parent_ids.push(run_id.clone());
        Some(SubgraphEvents {
            run_id,
            meta,
            input,
            parent_ids: outer_ids,
        })
    }

    /// The executor of `sub` in the namespace of `call`'s task (breakpoints are the root's).
    fn child(&self, sub: &CompiledGraph, call: &NodeCall, parent_ids: Vec<String>) -> Exec {
        let ns = &call.task.ns;
        let mut parents = self.parents.clone();
        parents.insert(self.ns.clone(), json!(call.checkpoint_id));
        Exec {
            g: sub.clone(),
            cp: self.cp.clone(),
            cfg: Arc::new(RunConfig {
                interrupt_before: Interrupts::None,
                interrupt_after: Interrupts::None,
                ..(*self.cfg).clone()
            }),
            ns: ns.clone(),
            parents,
            emitter: self
                .emitter
                .child(ns.rsplit('|').next().unwrap_or(ns).to_string()),
            cancel: self.cancel.clone(),
            parent_ids,
            base_meta: self.base_meta.clone(),
            stored_base: self.stored_base.clone(),
            is_root: false,
        }
    }

    /// The node's output for the subgraph's outcome: its state keys that the parent knows, its
    /// interrupts, its command for this graph, or its error.
    fn subgraph_output(
        &self,
        result: Result<RunOutcome, ExecError>,
        events: Option<SubgraphEvents>,
    ) -> Result<NodeOutput, NodeError> {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(ExecError::Parent(cmd)) => {
                return Ok(NodeOutput::Command(Command { graph: None, ..cmd }));
            }
            Err(ExecError::Graph(e)) if e.kind == "CancelledError" => {
                return Err(NodeError::Cancelled);
            }
            Err(ExecError::Graph(e)) => {
                return Err(NodeError::Failed {
                    kind: e.kind,
                    message: e.message,
                });
            }
        };
        if !outcome.interrupts.is_empty() {
            return Err(NodeError::Interrupt(InterruptSignal(outcome.interrupts)));
        }
        if let Some(ev) = events {
            self.emitter.emit(
                StreamMode::Events,
                json!({"event": "on_chain_end", "data": {"output": outcome.values, "input": ev.input},
                       "run_id": ev.run_id, "name": "LangGraph", "tags": ["seq:step:1"],
                       "metadata": ev.meta, "parent_ids": ev.parent_ids}),
            );
        }
        let mut update = Map::new();
        if let Value::Object(values) = outcome.values {
            for (k, v) in values {
                if self.g().reducer(&k).is_some() {
                    update.insert(k, v);
                }
            }
        }
        Ok(NodeOutput::Update(Value::Object(update)))
    }
}
