//! The public API of a compiled graph: `run` and the state API.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::channels::Channels;
use super::exec::{Exec, ExecError, TaskResult};
use super::pending::Pending;
use super::tasks::{Task, prepare};
use crate::checkpoint::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointTuple, Checkpointer, ListOptions,
    new_checkpoint_id, now_ts,
};
use crate::context::Emitter;
use crate::graph::{CompiledGraph, NodeKind};
use crate::messages::python_repr;
use crate::types::{
    CheckpointRef, GraphError, NodeOutput, RunConfig, RunInput, RunOutcome, START, StateSnapshot,
    StreamSink, TaskSnapshot,
};

/// LangGraph's `get_checkpoint_metadata`: run metadata then `configurable`, scalars only,
/// without private (`__`) and per-task keys; plus `run_id` / `thread_id`.
fn stored_base(cfg: &RunConfig) -> Map<String, Value> {
    const EXCLUDED: &[&str] = &[
        "checkpoint_id",
        "checkpoint_ns",
        "checkpoint_map",
        "langgraph_step",
        "langgraph_node",
        "langgraph_triggers",
        "langgraph_path",
        "langgraph_checkpoint_ns",
    ];
    let mut m = Map::new();
    for obj in [&cfg.metadata, &cfg.configurable] {
        for (k, v) in obj {
            if m.contains_key(k) || EXCLUDED.contains(&k.as_str()) || k.starts_with("__") {
                continue;
            }
            if matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)) {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    if !m.contains_key("run_id") {
        m.insert("run_id".into(), json!(cfg.run_id));
    }
    if !m.contains_key("thread_id") {
        m.insert("thread_id".into(), json!(cfg.thread_id));
    }
    m
}

fn base_meta(cfg: &RunConfig) -> Map<String, Value> {
    let mut m = cfg.metadata.clone();
    if !m.contains_key("thread_id") {
        m.insert("thread_id".into(), json!(cfg.thread_id));
    }
    m
}

impl CompiledGraph {
    /// Runs the graph on a thread until it finishes, pauses (interrupt / breakpoint), fails or
    /// is cancelled. Stream output goes to `sink` synchronously, in order.
    pub async fn run(
        &self,
        checkpointer: Arc<dyn Checkpointer>,
        input: RunInput,
        config: RunConfig,
        sink: StreamSink,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, GraphError> {
        let modes = config
            .stream_modes
            .iter()
            .fold(0u16, |acc, m| acc | m.bit());
        let emitter = Emitter {
            sink,
            modes,
            ns: Vec::new(),
            subgraphs: config.subgraphs,
            shared_values: config.shared_values,
            streamed: Arc::new(Mutex::new(HashSet::new())),
        };
        let exec = Exec {
            g: self.clone(),
            cp: checkpointer,
            base_meta: Arc::new(base_meta(&config)),
            stored_base: Arc::new(stored_base(&config)),
            cfg: Arc::new(config),
            ns: String::new(),
            parents: Map::new(),
            emitter,
            cancel,
            parent_ids: Vec::new(),
            is_root: true,
        };
        let root_id = exec.cfg.run_id.clone();
        let exec = Exec {
            parent_ids: vec![root_id],
            ..exec
        };
        let span = tracing::debug_span!(
            "graph.run",
            graph = %self.inner.name,
            thread_id = %exec.cfg.thread_id,
            run_id = %exec.cfg.run_id
        );
        let result = tracing::Instrument::instrument(exec.execute(input), span).await;
        if let Err(ExecError::Graph(e)) = &result {
            tracing::debug!(kind = %e.kind, "graph run ended with an error");
        }
        match result {
            Ok(o) => Ok(o),
            Err(ExecError::Graph(e)) => Err(e),
            Err(ExecError::Parent(_)) => Err(GraphError::new(
                "InvalidUpdateError",
                "There is no parent graph",
            )),
        }
    }

    /// State of the thread at `checkpoint_id` (default: latest).
    pub async fn get_state(
        &self,
        cp: &dyn Checkpointer,
        thread_id: &str,
        checkpoint_id: Option<&str>,
        subgraphs: bool,
    ) -> Result<StateSnapshot, GraphError> {
        // the shared form: a cached latest checkpoint is read without a copy of its lists
        match cp.get_tuple_shared(thread_id, "", checkpoint_id).await? {
            None => Ok(StateSnapshot::empty()),
            Some((t, values)) => self.snapshot_of(cp, &t, values, subgraphs).await,
        }
    }

    /// History of the root namespace, newest first.
    pub async fn get_history(
        &self,
        cp: &dyn Checkpointer,
        thread_id: &str,
        opts: &ListOptions,
    ) -> Result<Vec<StateSnapshot>, GraphError> {
        let tuples = cp.list(thread_id, Some(""), opts).await?;
        let mut out = Vec::with_capacity(tuples.len());
        for t in &tuples {
            out.push(self.snapshot(cp, t, false).await?);
        }
        Ok(out)
    }

    fn snapshot<'a>(
        &'a self,
        cp: &'a dyn Checkpointer,
        t: &'a CheckpointTuple,
        subgraphs: bool,
    ) -> BoxFuture<'a, Result<StateSnapshot, GraphError>> {
        let values = t
            .checkpoint
            .channel_values
            .iter()
            .map(|(k, v)| (k.clone(), ChannelValue::Value(Arc::new(v.clone()))))
            .collect();
        self.snapshot_of(cp, t, values, subgraphs)
    }

    /// The snapshot of `t` whose channel values are `values` (shared form).
    fn snapshot_of<'a>(
        &'a self,
        cp: &'a dyn Checkpointer,
        t: &'a CheckpointTuple,
        values: BTreeMap<String, ChannelValue>,
        subgraphs: bool,
    ) -> BoxFuture<'a, Result<StateSnapshot, GraphError>> {
        Box::pin(async move {
            let gi = &self.inner;
            let ch = Channels::load(gi, Some(t), values);
            let step = t.metadata.get("step").and_then(Value::as_i64).unwrap_or(-1);
            let tasks = prepare(gi, &ch, &t.checkpoint.id, step + 1, &t.checkpoint_ns);
            let pending = Pending::parse(&t.pending_writes);
            let mut snaps = Vec::new();
            let mut all_interrupts = Vec::new();
            for task in &tasks {
                let error = pending.errors.get(&task.id).map(|e| {
                    let kind = e
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("Exception");
                    let msg = e.get("message").cloned().unwrap_or(json!(""));
                    format!("{kind}({})", python_repr(&msg))
                });
                let interrupts = pending.open_interrupts(&task.id);
                all_interrupts.extend(interrupts.iter().cloned());
                let result = pending.done.get(&task.id).map(|w| {
                    let mut m = Map::new();
                    for (k, v) in w {
                        if gi.reducer(k).is_some() {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                    Value::Object(m)
                });
                let (checkpoint, state) = match gi.node(&task.name).map(|n| &n.kind) {
                    Some(NodeKind::Subgraph(sub)) => {
                        let state = if subgraphs {
                            match cp.get_tuple(&t.thread_id, &task.ns, None).await? {
                                Some(st) => Some(sub.snapshot(cp, &st, true).await?.to_value()),
                                None => None,
                            }
                        } else {
                            None
                        };
                        (
                            Some(json!({"thread_id": t.thread_id, "checkpoint_ns": task.ns})),
                            state,
                        )
                    }
                    _ => (None, None),
                };
                snaps.push(TaskSnapshot {
                    id: task.id.clone(),
                    name: task.name.clone(),
                    path: task.path.clone(),
                    error,
                    interrupts,
                    checkpoint,
                    state,
                    result,
                });
            }
            let cref = |id: &str| CheckpointRef {
                thread_id: t.thread_id.clone(),
                checkpoint_ns: t.checkpoint_ns.clone(),
                checkpoint_id: id.to_string(),
            };
            Ok(StateSnapshot {
                values: ch.state_values(gi),
                next: tasks.iter().map(|t| t.name.clone()).collect(),
                tasks: snaps,
                metadata: Some(t.metadata.clone()),
                created_at: Some(t.checkpoint.ts.clone()),
                checkpoint: Some(cref(&t.checkpoint.id)),
                parent_checkpoint: t.parent_checkpoint_id.as_deref().map(cref),
                interrupts: all_interrupts,
                checkpoint_id: Some(t.checkpoint.id.clone()),
                parent_checkpoint_id: t.parent_checkpoint_id.clone(),
            })
        })
    }

    /// Writes `values` as if `as_node` ran (default: the last node that ran), on the latest
    /// checkpoint or on `checkpoint_id` (fork). Saves a checkpoint with source `update`.
    pub async fn update_state(
        &self,
        cp: &dyn Checkpointer,
        thread_id: &str,
        checkpoint_id: Option<&str>,
        values: Value,
        as_node: Option<&str>,
        metadata: Map<String, Value>,
    ) -> Result<CheckpointRef, GraphError> {
        let gi = &self.inner;
        let (tuple, shared) = match cp.get_tuple_shared(thread_id, "", checkpoint_id).await? {
            Some((t, v)) => (Some(t), v),
            None => (None, BTreeMap::new()),
        };
        if let (Some(id), None) = (checkpoint_id, &tuple) {
            return Err(GraphError::new(
                "ValueError",
                format!("Checkpoint {id} not found"),
            ));
        }
        let mut ch = Channels::load(gi, tuple.as_ref(), shared);
        let cur_step = tuple
            .as_ref()
            .and_then(|t| t.metadata.get("step").and_then(Value::as_i64))
            .unwrap_or(-1);
        let parent = tuple.as_ref().map(|t| t.checkpoint.id.clone());
        let as_node = match as_node {
            Some(n) => {
                if gi.node(n).is_none() {
                    return Err(GraphError::new(
                        "InvalidUpdateError",
                        format!("Node {n} does not exist"),
                    ));
                }
                n.to_string()
            }
            None => {
                // the node that ran last (highest seen version)
                let mut best: Option<(ChannelVersion, String)> = None;
                for (node, seen) in &ch.seen {
                    if node == START || gi.node(node).is_none() {
                        continue;
                    }
                    let v = seen.values().copied().max().unwrap_or(0);
                    if best.as_ref().is_none_or(|(b, _)| v > *b) {
                        best = Some((v, node.clone()));
                    }
                }
                best.map(|(_, n)| n).unwrap_or_else(|| START.to_string())
            }
        };
        let sink: StreamSink = Arc::new(|_| {});
        let exec = Exec {
            g: self.clone(),
            cp: Arc::new(crate::checkpoint::MemoryCheckpointer::new()),
            base_meta: Arc::new(Map::new()),
            stored_base: Arc::new(Map::new()),
            cfg: Arc::new(RunConfig::new(thread_id, "")),
            ns: String::new(),
            parents: Map::new(),
            emitter: Emitter {
                sink,
                modes: 0,
                ns: Vec::new(),
                subgraphs: false,
                shared_values: false,
                streamed: Arc::new(Mutex::new(HashSet::new())),
            },
            cancel: CancellationToken::new(),
            parent_ids: Vec::new(),
            is_root: true,
        };
        let (_, writes, goto) = match exec.output_writes(NodeOutput::Update(values)) {
            Ok(x) => x,
            Err(TaskResult::Failed { kind, message }) => return Err(GraphError { kind, message }),
            Err(_) => return Err(GraphError::new("InvalidUpdateError", "invalid update")),
        };
        let edges = exec.edge_writes(&ch, &as_node, &writes, &goto)?;
        let version = ch.next_version();
        if let Some(id) = &parent {
            let tasks: Vec<Task> = prepare(gi, &ch, id, cur_step + 1, "")
                .into_iter()
                .filter(|t| t.name == as_node)
                .collect();
            ch.consume(gi, &tasks, version);
        }
        let mut all = writes;
        all.extend(edges);
        let updated = ch.apply(gi, &[&all], false, version)?;
        let step = cur_step + 1;
        let id = new_checkpoint_id(step);
        let mut new_versions = BTreeMap::new();
        for k in &updated {
            if let Some(v) = ch.versions.get(k) {
                new_versions.insert(k.clone(), *v);
            }
        }
        // consumed channels also changed
        for (k, v) in &ch.versions {
            if *v == version {
                new_versions.insert(k.clone(), *v);
            }
        }
        let checkpoint = Checkpoint {
            id: id.clone(),
            ts: now_ts(),
            channel_values: Map::new(),
            channel_versions: ch.versions.clone(),
            versions_seen: ch.seen.clone(),
            updated_channels: updated,
        };
        let mut meta = metadata;
        meta.insert("source".into(), json!("update"));
        meta.insert("step".into(), json!(step));
        meta.insert("parents".into(), json!({}));
        cp.put_shared(
            thread_id,
            "",
            parent.as_deref(),
            &checkpoint,
            &ch.values,
            &meta,
            &new_versions,
        )
        .await?;
        Ok(CheckpointRef {
            thread_id: thread_id.to_string(),
            checkpoint_ns: String::new(),
            checkpoint_id: id,
        })
    }
}
