//! Running one task: a node or a subgraph, and turning its output into writes.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::channels::Channels;
use super::exec::{Exec, ExecError, Normalized, TaskResult};
use super::tasks::Task;
use super::{TASKS, branch};
use crate::context::{CtxInner, NodeContext, NodeInput};
use crate::graph::{CompiledGraph, NodeKind};
use crate::messages;
use crate::types::{
    Command, END, GraphError, NodeError, NodeOutput, PARENT, Reducer, Route, RunConfig, RunInput,
    START, StreamMode,
};

impl Exec {
    /// Writes produced by `node` for edges, given its state writes.
    pub(super) fn edge_writes(
        &self,
        ch: &Channels,
        node: &str,
        state_writes: &[(String, Value)],
        goto: &[Route],
    ) -> Result<Vec<(String, Value)>, GraphError> {
        let g = self.g();
        let spec = g.node(node).ok_or_else(|| {
            GraphError::new("InvalidUpdateError", format!("Node {node} does not exist"))
        })?;
        let mut out = Vec::new();
        let route = |r: &Route, out: &mut Vec<(String, Value)>| -> Result<(), GraphError> {
            match r {
                Route::To(n) if n == END => Ok(()),
                Route::To(n) => {
                    if g.node(n).is_none() || n == START {
                        return Err(GraphError::new(
                            "InvalidUpdateError",
                            format!("At '{node}' node, branch found unknown target '{n}'"),
                        ));
                    }
                    out.push((branch(n), Value::Null));
                    Ok(())
                }
                Route::Send { node: target, arg } => {
                    if g.node(target).is_none() || target == START {
                        return Err(GraphError::new(
                            "InvalidUpdateError",
                            format!("Invalid node name {target}"),
                        ));
                    }
                    out.push((TASKS.to_string(), json!({"node": target, "arg": arg})));
                    Ok(())
                }
            }
        };
        for r in goto {
            route(r, &mut out)?;
        }
        for t in &spec.static_out {
            if t != END {
                out.push((branch(t), Value::Null));
            }
        }
        for j in &spec.join_out {
            out.push((g.joins[*j].channel.clone(), json!(node)));
        }
        if !spec.branches.is_empty() {
            let mut local = ch.clone();
            let w: &[(String, Value)] = state_writes;
            local.apply(g, &[w], false, 0)?;
            let input = local.input(g);
            for b in &spec.branches {
                let routes = (g.branches[*b].router)(&input);
                for r in &routes {
                    route(r, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// Normalizes a node's output into (update for streams, state writes, goto).
    pub(super) fn output_writes(&self, output: NodeOutput) -> Result<Normalized, TaskResult> {
        let g = self.g();
        let (update, goto) = match output {
            NodeOutput::Update(v) => (v, Vec::new()),
            NodeOutput::Command(cmd) => {
                if cmd.graph.as_deref() == Some(PARENT) {
                    return Err(TaskResult::Parent(cmd));
                }
                (cmd.update.unwrap_or(Value::Null), cmd.goto)
            }
        };
        let mut writes = Vec::new();
        // the update as streams show it: built only when a mode will show it
        let keep = self.emitter.modes
            & (StreamMode::Updates.bit()
                | StreamMode::Tasks.bit()
                | StreamMode::Debug.bit()
                | StreamMode::Events.bit()
                | StreamMode::Messages.bit())
            != 0;
        let update = match update {
            Value::Null => Value::Null,
            Value::Object(o) if !keep => {
                for (k, v) in o {
                    let v = match g.reducer(&k) {
                        None => continue,
                        Some(Reducer::AddMessages) => match &v {
                            Value::Array(_) => messages::coerce_messages(&v).map(Value::Array),
                            Value::Null => Ok(Value::Null),
                            single => messages::coerce_message(single),
                        }
                        .map_err(|e| TaskResult::Failed {
                            kind: "ValueError".into(),
                            message: e.0,
                        })?,
                        Some(_) => v,
                    };
                    writes.push((k, v));
                }
                Value::Object(Map::new())
            }
            Value::Object(o) => {
                let mut coerced = Map::new();
                for (k, v) in o {
                    let v = match g.reducer(&k) {
                        Some(Reducer::AddMessages) => match &v {
                            Value::Array(_) => messages::coerce_messages(&v).map(Value::Array),
                            Value::Null => Ok(Value::Null),
                            single => messages::coerce_message(single),
                        }
                        .map_err(|e| TaskResult::Failed {
                            kind: "ValueError".into(),
                            message: e.0,
                        })?,
                        _ => v,
                    };
                    if g.reducer(&k).is_some() {
                        writes.push((k.clone(), v.clone()));
                    }
                    coerced.insert(k, v);
                }
                Value::Object(coerced)
            }
            Value::Array(pairs) => {
                // [[key, value], ...]
                let mut coerced = Map::new();
                for p in pairs {
                    if let Some([Value::String(k), v]) = p.as_array().map(Vec::as_slice) {
                        if g.reducer(k).is_some() {
                            writes.push((k.clone(), v.clone()));
                        }
                        coerced.insert(k.clone(), v.clone());
                    }
                }
                Value::Object(coerced)
            }
            other => {
                return Err(TaskResult::Failed {
                    kind: "InvalidUpdateError".into(),
                    message: format!("Expected dict, got {other}"),
                });
            }
        };
        Ok((update, writes, goto))
    }

    pub(super) fn run_task(
        &self,
        ch: &Arc<Channels>,
        t: &Task,
        step: i64,
        resume: Vec<Value>,
        open_interrupt: bool,
        checkpoint_id: &str,
    ) -> BoxFuture<'static, TaskResult> {
        let checkpoint_id = checkpoint_id.to_string();
        let this = self.clone();
        let t = t.clone();
        let g = self.g.clone();
        let input = match &t.arg {
            Some(arg) => NodeInput::from_value(arg.clone()),
            None => ch.input(&g.inner),
        };
        let ch_for_edges = Arc::clone(ch);
        Box::pin(async move {
            let gi = &g.inner;
            if t.name == START {
                // the input: state writes + START's edges
                let raw = match ch_for_edges.values.get(START) {
                    Some(v) => v.to_value(),
                    None => Value::Null,
                };
                // raw input writes (the reducers coerce them), as LangGraph stores them
                let writes: Vec<(String, Value)> = match &raw {
                    Value::Object(o) => o
                        .iter()
                        .filter(|(k, _)| gi.reducer(k).is_some())
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
                let update = raw;
                return match this.edge_writes(&ch_for_edges, START, &writes, &[]) {
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
                };
            }
            let Some(spec) = gi.node(&t.name) else {
                return TaskResult::Failed {
                    kind: "InvalidUpdateError".into(),
                    message: format!("Node {} does not exist", t.name),
                };
            };
            let events = this.emitter.wants(StreamMode::Events);
            // only events mode shows run ids
            let node_run_id = if events {
                uuid::Uuid::now_v7().to_string()
            } else {
                String::new()
            };
            let ev_meta = if events {
                Some(Self::with_integration(
                    &this.task_meta(&t, step),
                    "langgraph",
                ))
            } else {
                None
            };
            let input_value = if events { Some(input.to_value()) } else { None };
            if let (Some(m), Some(iv)) = (&ev_meta, &input_value) {
                this.emitter.emit(
                    StreamMode::Events,
                    json!({"event": "on_chain_start", "data": {"input": iv}, "name": t.name,
                           "tags": [format!("graph:step:{step}")], "run_id": node_run_id,
                           "metadata": m, "parent_ids": this.parent_ids}),
                );
            }
            let output: Result<NodeOutput, NodeError> = match &spec.kind {
                NodeKind::Func(f) => {
                    let ctx = NodeContext {
                        inner: Arc::new(CtxInner {
                            cfg: this.cfg.clone(),
                            base_meta: this.base_meta.clone(),
                            triggers: t.triggers.clone(),
                            path: t.path.clone(),
                            checkpoint_ns: t.ns.clone(),
                            resume,
                            interrupt_count: Mutex::new(0),
                            emitter: this.emitter.clone(),
                            cancel: this.cancel.clone(),
                            node_run_id: node_run_id.clone(),
                            parent_ids: this.parent_ids.clone(),
                            step,
                            node: t.name.clone(),
                        }),
                    };
                    // a panicking node fails its task instead of tearing down the run
                    match std::panic::AssertUnwindSafe(f(input.clone(), ctx))
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
                NodeKind::Subgraph(sub) => {
                    this.run_subgraph(
                        sub,
                        &t,
                        &input,
                        resume,
                        open_interrupt,
                        &node_run_id,
                        &checkpoint_id,
                        step,
                    )
                    .await
                }
            };
            let result = match output {
                Ok(out) => match this.output_writes(out) {
                    Ok((update, writes, goto)) => {
                        match this.edge_writes(&ch_for_edges, &t.name, &writes, &goto) {
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
                    Err(r) => r,
                },
                Err(NodeError::Failed { kind, message }) => TaskResult::Failed { kind, message },
                Err(NodeError::Interrupt(sig)) => TaskResult::Interrupted(sig.0),
                Err(NodeError::ParentCommand(cmd)) => TaskResult::Parent(cmd),
                Err(NodeError::Cancelled) => TaskResult::Cancelled,
            };
            if let (Some(m), Some(iv), TaskResult::Writes { update, .. }) =
                (&ev_meta, &input_value, &result)
            {
                this.emitter.emit(
                    StreamMode::Events,
                    json!({"event": "on_chain_stream", "run_id": node_run_id, "name": t.name,
                           "tags": [format!("graph:step:{step}")], "metadata": m,
                           "data": {"chunk": update}, "parent_ids": this.parent_ids}),
                );
                this.emitter.emit(
                    StreamMode::Events,
                    json!({"event": "on_chain_end", "data": {"output": update, "input": iv},
                           "run_id": node_run_id, "name": t.name,
                           "tags": [format!("graph:step:{step}")], "metadata": m,
                           "parent_ids": this.parent_ids}),
                );
            }
            result
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_subgraph(
        &self,
        sub: &CompiledGraph,
        t: &Task,
        input: &NodeInput,
        resume: Vec<Value>,
        open_interrupt: bool,
        node_run_id: &str,
        checkpoint_id: &str,
        step: i64,
    ) -> Result<NodeOutput, NodeError> {
        let existing = self
            .cp
            .get_tuple(&self.cfg.thread_id, &t.ns, None)
            .await
            .map_err(|e| NodeError::failed("CheckpointError", e.to_string()))?;
        let run_input = if existing.is_some() {
            match resume.last() {
                Some(v) if !open_interrupt => RunInput::Command(Command {
                    resume: Some(v.clone()),
                    ..Default::default()
                }),
                _ => RunInput::Null,
            }
        } else {
            RunInput::Values(input.to_value())
        };
        let mut parents = self.parents.clone();
        parents.insert(self.ns.clone(), json!(checkpoint_id));
        let mut parent_ids = self.parent_ids.clone();
        parent_ids.push(node_run_id.to_string());
        // events: the subgraph is a chain of its own ("LangGraph", Python's default name)
        let sub_events = if self.emitter.wants(StreamMode::Events) {
            let sub_run_id = uuid::Uuid::now_v7().to_string();
            let mut meta = Self::with_integration(&self.task_meta(t, step), "langgraph");
            meta.insert("checkpoint_ns".into(), json!(t.ns));
            let iv = input.to_value();
            self.emitter.emit(
                StreamMode::Events,
                json!({"event": "on_chain_start", "data": {"input": iv}, "name": "LangGraph",
                       "tags": ["seq:step:1"], "run_id": sub_run_id, "metadata": meta,
                       "parent_ids": parent_ids}),
            );
            let outer_ids = parent_ids.clone();
            parent_ids.push(sub_run_id.clone());
            Some((sub_run_id, meta, iv, outer_ids))
        } else {
            None
        };
        let child = Exec {
            g: sub.clone(),
            cp: self.cp.clone(),
            cfg: Arc::new(RunConfig {
                interrupt_before: crate::types::Interrupts::None,
                interrupt_after: crate::types::Interrupts::None,
                ..(*self.cfg).clone()
            }),
            ns: t.ns.clone(),
            parents,
            emitter: self
                .emitter
                .child(t.ns.rsplit('|').next().unwrap_or(&t.ns).to_string()),
            cancel: self.cancel.clone(),
            parent_ids,
            base_meta: self.base_meta.clone(),
            stored_base: self.stored_base.clone(),
            is_root: false,
        };
        match Box::pin(child.execute(run_input)).await {
            Ok(outcome) => {
                if !outcome.interrupts.is_empty() {
                    return Err(NodeError::Interrupt(crate::types::InterruptSignal(
                        outcome.interrupts,
                    )));
                }
                if let Some((run_id, meta, iv, ids)) = sub_events {
                    self.emitter.emit(
                        StreamMode::Events,
                        json!({"event": "on_chain_end", "data": {"output": outcome.values, "input": iv},
                               "run_id": run_id, "name": "LangGraph", "tags": ["seq:step:1"],
                               "metadata": meta, "parent_ids": ids}),
                    );
                }
                // the subgraph's output: its state keys that the parent knows
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
            Err(ExecError::Parent(cmd)) => Ok(NodeOutput::Command(Command { graph: None, ..cmd })),
            Err(ExecError::Graph(e)) if e.kind == "CancelledError" => Err(NodeError::Cancelled),
            Err(ExecError::Graph(e)) => Err(NodeError::Failed {
                kind: e.kind,
                message: e.message,
            }),
        }
    }
}
