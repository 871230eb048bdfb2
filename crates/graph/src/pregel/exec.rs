//! The executor of one graph (root or subgraph) on a thread: its context, checkpoint saves and
//! stream output.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::channels::Channels;
use super::pending::Pending;
use super::tasks::{Task, prepare};
use crate::checkpoint::{
    ChannelVersion, Checkpoint, CheckpointError, Checkpointer, new_checkpoint_id, now_ts,
};
use crate::context::Emitter;
use crate::graph::{CompiledGraph, GraphInner, NodeKind};
use crate::messages;
use crate::types::{
    CheckpointRef, Command, GraphError, Interrupt, Reducer, Route, RunConfig, RunOutcome,
    StreamMode,
};

pub(super) enum ExecError {
    Graph(GraphError),
    Parent(Command),
}

impl From<GraphError> for ExecError {
    fn from(e: GraphError) -> Self {
        ExecError::Graph(e)
    }
}

impl From<CheckpointError> for ExecError {
    fn from(e: CheckpointError) -> Self {
        ExecError::Graph(e.into())
    }
}

#[derive(Clone)]
pub(super) struct Exec {
    pub(super) g: CompiledGraph,
    pub(super) cp: Arc<dyn Checkpointer>,
    pub(super) cfg: Arc<RunConfig>,
    pub(super) ns: String,
    pub(super) parents: Map<String, Value>,
    pub(super) emitter: Emitter,
    pub(super) cancel: CancellationToken,
    /// events: ids of enclosing runs (root run id, subgraph node run ids).
    pub(super) parent_ids: Vec<String>,
    /// Base metadata for messages/events: run metadata + thread_id.
    pub(super) base_meta: Arc<Map<String, Value>>,
    /// Run metadata + configurable scalars, as LangGraph stores with each checkpoint.
    pub(super) stored_base: Arc<Map<String, Value>>,
    pub(super) is_root: bool,
}

/// (update for streams, state writes, goto)
pub(super) type Normalized = (Value, Vec<(String, Value)>, Vec<Route>);

pub(super) enum TaskResult {
    Writes {
        update: Value,
        writes: Vec<(String, Value)>,
    },
    Failed {
        kind: String,
        message: String,
    },
    Interrupted(Vec<Interrupt>),
    Parent(Command),
    Cancelled,
}

impl Exec {
    pub(super) fn g(&self) -> &GraphInner {
        &self.g.inner
    }

    pub(super) fn checkpoint_config(&self, id: &str) -> Value {
        let mut c = Map::new();
        c.insert("checkpoint_ns".into(), json!(self.ns));
        for (k, v) in &self.cfg.configurable {
            if k != "checkpoint_ns" && k != "checkpoint_id" {
                c.insert(k.clone(), v.clone());
            }
        }
        if !c.contains_key("thread_id") {
            c.insert("thread_id".into(), json!(self.cfg.thread_id));
        }
        if !self.ns.is_empty() {
            let mut map = self.parents.clone();
            map.insert(self.ns.clone(), json!(id));
            c.insert("checkpoint_map".into(), Value::Object(map));
        }
        c.insert("checkpoint_id".into(), json!(id));
        json!({ "configurable": c })
    }

    pub(super) fn cref(&self, id: &str) -> CheckpointRef {
        CheckpointRef {
            thread_id: self.cfg.thread_id.clone(),
            checkpoint_ns: self.ns.clone(),
            checkpoint_id: id.to_string(),
        }
    }

    pub(super) fn stored_metadata(&self, source: &str, step: i64) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("source".into(), json!(source));
        m.insert("step".into(), json!(step));
        m.insert("parents".into(), Value::Object(self.parents.clone()));
        for (k, v) in self.stored_base.iter() {
            if !m.contains_key(k) {
                m.insert(k.clone(), v.clone());
            }
        }
        m
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn save(
        &self,
        ch: &Channels,
        parent: Option<&str>,
        source: &str,
        step: i64,
        updated: Vec<String>,
        extra_new: &[String],
    ) -> Result<String, ExecError> {
        let id = new_checkpoint_id(step);
        let mut new_versions: BTreeMap<String, ChannelVersion> = BTreeMap::new();
        for k in updated.iter().chain(extra_new.iter()) {
            if let Some(v) = ch.versions.get(k) {
                new_versions.insert(k.clone(), *v);
            }
        }
        let mut all_updated = updated;
        for k in extra_new {
            if !all_updated.contains(k) {
                all_updated.push(k.clone());
            }
        }
        let checkpoint = Checkpoint {
            id: id.clone(),
            ts: now_ts(),
            channel_values: Map::new(),
            channel_versions: ch.versions.clone(),
            versions_seen: ch.seen.clone(),
            updated_channels: all_updated,
        };
        let metadata = self.stored_metadata(source, step);
        self.cp
            .put_shared(
                &self.cfg.thread_id,
                &self.ns,
                parent,
                &checkpoint,
                &ch.values,
                &metadata,
                &new_versions,
            )
            .await?;
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_checkpoint(
        &self,
        ch: &Channels,
        id: &str,
        parent: Option<&str>,
        source: &str,
        step: i64,
        next: &[Task],
        resumed_meta: Option<&Map<String, Value>>,
        pending: Option<&Pending>,
    ) {
        let cp_mode = self.emitter.wants(StreamMode::Checkpoints);
        let dbg_mode = self.emitter.wants(StreamMode::Debug);
        if !cp_mode && !dbg_mode {
            return;
        }
        let mut payload = Map::new();
        payload.insert("config".into(), self.checkpoint_config(id));
        payload.insert(
            "parent_config".into(),
            match (parent, resumed_meta) {
                (None, _) => Value::Null,
                (Some(p), Some(_)) => json!({"configurable": {
                    "thread_id": self.cfg.thread_id, "checkpoint_ns": self.ns, "checkpoint_id": p}}),
                (Some(p), None) => self.checkpoint_config(p),
            },
        );
        payload.insert("values".into(), ch.state_values(self.g()));
        payload.insert(
            "metadata".into(),
            match resumed_meta {
                Some(m) => Value::Object(m.clone()),
                None => json!({"source": source, "step": step, "parents": self.parents}),
            },
        );
        payload.insert(
            "next".into(),
            json!(next.iter().map(|t| t.name.clone()).collect::<Vec<_>>()),
        );
        payload.insert(
            "tasks".into(),
            Value::Array(
                next.iter()
                    .map(|t| {
                        let state = match self.g().node(&t.name).map(|n| &n.kind) {
                            Some(NodeKind::Subgraph(_)) => json!({"configurable": {
                                "thread_id": self.cfg.thread_id, "checkpoint_ns": t.ns}}),
                            _ => Value::Null,
                        };
                        let ints: Vec<Value> = pending
                            .and_then(|p| p.interrupts.get(&t.id))
                            .map(|(_, l)| l.iter().map(Interrupt::to_stream_value).collect())
                            .unwrap_or_default();
                        json!({"id": t.id, "name": t.name, "interrupts": ints, "state": state})
                    })
                    .collect(),
            ),
        );
        if cp_mode {
            self.emitter
                .emit(StreamMode::Checkpoints, Value::Object(payload.clone()));
        }
        if dbg_mode {
            let r = |i: &str| json!({"checkpoint_id": i, "thread_id": self.cfg.thread_id, "checkpoint_ns": self.ns});
            payload.insert("checkpoint".into(), r(id));
            payload.insert("parent_checkpoint".into(), parent.map_or(Value::Null, r));
            self.emitter.emit(
                StreamMode::Debug,
                json!({"step": step, "timestamp": now_ts(), "type": "checkpoint", "payload": payload}),
            );
        }
    }

    /// Emits the checkpoint `id` this run saved, with the tasks it triggers next.
    pub(super) fn emit_saved_checkpoint(
        &self,
        ch: &Channels,
        id: &str,
        parent: Option<&str>,
        source: &str,
        step: i64,
    ) {
        if self.emitter.wants(StreamMode::Checkpoints) || self.emitter.wants(StreamMode::Debug) {
            let next = prepare(self.g(), ch, id, step + 1, &self.ns);
            self.emit_checkpoint(ch, id, parent, source, step, &next, None, None);
        }
    }

    pub(super) fn emit_values(&self, ch: &Channels) {
        self.emitter
            .emit_values(|| ch.state_in_order(self.g(), None));
    }

    pub(super) fn task_meta(&self, t: &Task, step: i64) -> Map<String, Value> {
        let mut m = crate::context::build_task_meta(
            &self.base_meta,
            step,
            &t.name,
            &t.triggers,
            &t.path,
            &t.ns,
        );
        if !self.ns.is_empty() {
            // inside a subgraph, LangChain's config metadata carries the graph's namespace
            m.insert("checkpoint_ns".into(), json!(self.ns));
        }
        m
    }

    pub(super) fn with_integration(
        meta: &Map<String, Value>,
        integration: &str,
    ) -> Map<String, Value> {
        crate::context::with_integration(meta, integration)
    }

    pub(super) fn emit_task_result(
        &self,
        ch: &Channels,
        t: &Task,
        _step: i64,
        update: &Value,
        error: Option<Value>,
        interrupts: &[Interrupt],
    ) {
        let ints: Vec<Value> = interrupts.iter().map(Interrupt::to_stream_value).collect();
        if error.is_none() && interrupts.is_empty() {
            if self.emitter.wants(StreamMode::Messages) {
                self.emit_returned_messages(ch, t, _step, update);
            }
            if self.emitter.wants(StreamMode::Updates) {
                self.emitter
                    .emit(StreamMode::Updates, json!({ t.name.clone(): update }));
            }
        }
        let want_tasks = self.emitter.wants(StreamMode::Tasks);
        let want_debug = self.emitter.wants(StreamMode::Debug);
        if want_tasks || want_debug {
            let result = if update.is_object() {
                update.clone()
            } else {
                json!({})
            };
            let rec = json!({"id": t.id, "name": t.name, "error": error, "result": result, "interrupts": ints});
            if want_tasks {
                self.emitter.emit(StreamMode::Tasks, rec.clone());
            }
            if want_debug {
                self.emitter.emit(
                    StreamMode::Debug,
                    json!({"step": _step, "timestamp": now_ts(), "type": "task_result", "payload": rec}),
                );
            }
        }
    }

    /// Messages a node returned that were not streamed as chunks: sent whole.
    pub(super) fn emit_returned_messages(
        &self,
        ch: &Channels,
        t: &Task,
        step: i64,
        update: &Value,
    ) {
        let Value::Object(o) = update else { return };
        let mut meta: Option<Map<String, Value>> = None;
        for (k, v) in o {
            if !matches!(self.g().reducer(k), Some(Reducer::AddMessages)) {
                continue;
            }
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Object(_) => vec![v],
                _ => Vec::new(),
            };
            for m in items {
                let Some(id) = messages::message_id(m) else {
                    continue;
                };
                if messages::message_type(m) == Some("remove") || ch.message_known(k, id) {
                    continue;
                }
                {
                    let mut streamed = self.emitter.streamed.lock();
                    if !streamed.insert(id.to_string()) {
                        continue;
                    }
                }
                let md = meta.get_or_insert_with(|| {
                    Self::with_integration(&self.task_meta(t, step), "langgraph")
                });
                self.emitter.emit(StreamMode::Messages, json!([m, md]));
            }
        }
    }

    /// Events mode shows the root run as a chain of its own (a subgraph's chain is emitted by
    /// the parent's task, see `subgraph.rs`).
    pub(super) fn events_root(&self) -> bool {
        self.is_root && self.emitter.wants(StreamMode::Events)
    }

    pub(super) fn finish(
        &self,
        ch: &Channels,
        id: Option<&str>,
        interrupts: Vec<Interrupt>,
        next: Vec<String>,
    ) -> RunOutcome {
        if self.is_root && self.cfg.keep_message_index {
            ch.remember_messages();
        }
        let materialize = self.cfg.output_values || !self.is_root || self.events_root();
        let values = if materialize {
            ch.state_values(self.g())
        } else {
            Value::Null
        };
        if self.events_root() {
            self.emitter.emit(
                StreamMode::Events,
                json!({"event": "on_chain_end", "data": {"output": values}, "run_id": self.cfg.run_id,
                       "name": self.g().name, "tags": [],
                       "metadata": Self::with_integration(&self.base_meta, "langgraph"), "parent_ids": []}),
            );
        }
        RunOutcome {
            values,
            state: ch.state_shared(self.g()),
            interrupts,
            next,
            checkpoint: id.map(|i| self.cref(i)),
        }
    }
}
