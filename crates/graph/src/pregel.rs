//! The Pregel run loop: supersteps over channels, pending writes, interrupts and resume,
//! subgraphs, stream output of every mode, and the state API (`get_state`, `get_history`,
//! `update_state`).
//!
//! Channels of a checkpoint: the state keys, plus trigger channels `__start__` (the input),
//! `branch:to:<node>` (static / conditional edges and `goto`), `join:<a>+<b>:<node>` (fan-in)
//! and `__pregel_tasks` (pending `Send`s). A node runs in the next step when one of its trigger
//! channels has a newer version than the one it last saw (`versions_seen`).
//!
//! Pending writes of a checkpoint are keyed by task id: successful writes under the task id,
//! an error under `<id>~error`, interrupts under `<id>~interrupt~<n>` and resume values under
//! `<id>~resume~<n>` (so every record is written once and never overwritten).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointTuple, Checkpointer, ListOptions,
    new_checkpoint_id, now_ts,
};
use crate::context::{CtxInner, Emitter, NodeContext, NodeInput};
use crate::graph::{CompiledGraph, GraphInner, NodeKind};
use crate::messages::{self, MessageList, python_repr};
use crate::types::{
    CheckpointRef, Command, END, GraphError, Interrupt, NodeError, NodeOutput, PARENT, Reducer,
    Route, RunConfig, RunInput, RunOutcome, START, StateSnapshot, StreamMode, StreamSink,
    TaskSnapshot,
};

const TASKS: &str = "__pregel_tasks";
const NO_WRITES: &str = "__no_writes__";
const ERROR: &str = "__error__";
const INTERRUPT: &str = "__interrupt__";
const RESUME: &str = "__resume__";

fn branch(node: &str) -> String {
    format!("branch:to:{node}")
}

fn recursion_message(limit: usize) -> String {
    format!(
        "Recursion limit of {limit} reached without hitting a stop condition. You can increase the limit by setting the `recursion_limit` config key.\nFor troubleshooting, visit: https://docs.langchain.com/oss/python/langgraph/errors/GRAPH_RECURSION_LIMIT"
    )
}

fn conflict_message(key: &str) -> String {
    format!(
        "At key '{key}': Can receive only one value per step. Use an Annotated key to handle multiple values.\nFor troubleshooting, visit: https://docs.langchain.com/oss/python/langgraph/errors/INVALID_CONCURRENT_GRAPH_UPDATE"
    )
}

// ---------------------------------------------------------------- channels

#[derive(Clone, Default)]
pub(crate) struct Channels {
    values: BTreeMap<String, ChannelValue>,
    versions: BTreeMap<String, ChannelVersion>,
    seen: BTreeMap<String, BTreeMap<String, ChannelVersion>>,
    msgs: HashMap<String, MessageList>,
}

impl Channels {
    fn load(
        g: &GraphInner,
        tuple: Option<&CheckpointTuple>,
        values: BTreeMap<String, ChannelValue>,
    ) -> Self {
        fn into_list(cv: ChannelValue) -> imbl::Vector<Arc<Value>> {
            match cv {
                ChannelValue::List(items) => items,
                ChannelValue::Value(v) => match Arc::try_unwrap(v).unwrap_or_else(|a| (*a).clone())
                {
                    Value::Array(items) => items.into_iter().map(Arc::new).collect(),
                    _ => imbl::Vector::new(),
                },
            }
        }
        let mut ch = Channels::default();
        for (k, v) in values {
            match g.reducer(&k) {
                Some(Reducer::AddMessages) => {
                    let list = MessageList::new(into_list(v));
                    ch.values
                        .insert(k.clone(), ChannelValue::List(list.items.clone()));
                    ch.msgs.insert(k, list);
                }
                Some(Reducer::Append) => {
                    ch.values.insert(k, ChannelValue::List(into_list(v)));
                }
                _ if k == TASKS => {
                    ch.values.insert(k, ChannelValue::List(into_list(v)));
                }
                _ => {
                    let v = match v {
                        ChannelValue::List(_) => ChannelValue::Value(Arc::new(v.to_value())),
                        other => other,
                    };
                    ch.values.insert(k, v);
                }
            }
        }
        if let Some(t) = tuple {
            ch.versions = t.checkpoint.channel_versions.clone();
            ch.seen = t.checkpoint.versions_seen.clone();
        }
        for (k, r) in &g.channels {
            if r.is_list() && !ch.values.contains_key(k) {
                ch.values
                    .insert(k.clone(), ChannelValue::List(imbl::Vector::new()));
                if matches!(r, Reducer::AddMessages) {
                    ch.msgs.insert(k.clone(), MessageList::default());
                }
            }
        }
        ch
    }

    fn state_values(&self, g: &GraphInner) -> Value {
        let mut m = Map::new();
        for k in g.state_keys.iter() {
            if let Some(v) = self.values.get(k) {
                m.insert(k.clone(), v.to_value());
            }
        }
        Value::Object(m)
    }

    fn state_shared(&self, g: &GraphInner) -> BTreeMap<String, ChannelValue> {
        g.state_keys
            .iter()
            .filter_map(|k| self.values.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    fn input(&self, g: &GraphInner) -> NodeInput {
        NodeInput::state(self.state_shared(g), g.state_keys.clone())
    }

    /// A version greater than every version of this branch, and (with its random low bits)
    /// distinct from the versions another branch forked from the same parent picks: a fork never
    /// reuses a version number that an older branch's checkpoints still point at.
    fn next_version(&self) -> ChannelVersion {
        let max = self.versions.values().copied().max().unwrap_or(0);
        (((max >> VERSION_RANDOM_BITS) + 1) << VERSION_RANDOM_BITS)
            | (rand::random::<u64>() & ((1 << VERSION_RANDOM_BITS) - 1))
    }

    fn message_known(&self, channel: &str, id: &str) -> bool {
        self.msgs.get(channel).is_some_and(|l| l.contains(id))
    }

    /// Applies `writes` (grouped per task, in task order). Returns the updated channels.
    fn apply(
        &mut self,
        g: &GraphInner,
        writes: &[&[(String, Value)]],
        check_conflicts: bool,
        version: ChannelVersion,
    ) -> Result<Vec<String>, GraphError> {
        let mut updated: Vec<String> = Vec::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for task_writes in writes {
            for (k, _) in task_writes.iter() {
                *counts.entry(k.as_str()).or_default() += 1;
            }
        }
        if check_conflicts {
            for (k, n) in &counts {
                if *n > 1 && matches!(g.reducer(k), Some(Reducer::LastValue)) {
                    return Err(GraphError::new("InvalidUpdateError", conflict_message(k)));
                }
            }
        }
        for task_writes in writes {
            for (k, v) in task_writes.iter() {
                if k == NO_WRITES {
                    continue;
                }
                match g.reducer(k) {
                    Some(Reducer::LastValue) => {
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(v.clone())));
                    }
                    Some(Reducer::Append) => {
                        // take the list out so it is not shared while we push (no copy)
                        let mut items = match self.values.remove(k.as_str()) {
                            Some(ChannelValue::List(items)) => items,
                            _ => imbl::Vector::new(),
                        };
                        match v {
                            Value::Array(a) => items.extend(a.iter().cloned().map(Arc::new)),
                            other => items.push_back(Arc::new(other.clone())),
                        }
                        self.values.insert(k.clone(), ChannelValue::List(items));
                    }
                    Some(Reducer::AddMessages) => {
                        // drop the second reference to the list so the push is in place
                        self.values.remove(k.as_str());
                        let list = self.msgs.entry(k.clone()).or_default();
                        list.add(v)
                            .map_err(|e| GraphError::new("ValueError", e.0))?;
                        self.values
                            .insert(k.clone(), ChannelValue::List(list.items.clone()));
                    }
                    Some(Reducer::Custom(f)) => {
                        let cur = self
                            .values
                            .get(k)
                            .map(ChannelValue::to_value)
                            .unwrap_or(Value::Null);
                        let new =
                            f(&cur, v).map_err(|e| GraphError::new("InvalidUpdateError", e))?;
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(new)));
                    }
                    None if k == TASKS => {
                        let mut items = match self.values.get(k) {
                            Some(ChannelValue::List(items)) => items.clone(),
                            _ => imbl::Vector::new(),
                        };
                        items.push_back(Arc::new(v.clone()));
                        self.values.insert(k.clone(), ChannelValue::List(items));
                    }
                    None if k.starts_with("join:") => {
                        let mut arr = match self.values.get(k) {
                            Some(ChannelValue::Value(a)) => {
                                a.as_array().cloned().unwrap_or_default()
                            }
                            _ => Vec::new(),
                        };
                        if !arr.contains(v) {
                            arr.push(v.clone());
                        }
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(Value::Array(arr))));
                    }
                    None => {
                        // trigger channels (`__start__`, `branch:to:*`) and unknown keys
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(v.clone())));
                    }
                }
                if !updated.contains(k) {
                    updated.push(k.clone());
                }
            }
        }
        for k in &updated {
            self.versions.insert(k.clone(), version);
        }
        Ok(updated)
    }

    /// Marks the triggers of `tasks` as seen and consumes sends and completed joins.
    fn consume(&mut self, g: &GraphInner, tasks: &[Task], version: ChannelVersion) -> Vec<String> {
        let mut reset = Vec::new();
        for t in tasks {
            let seen = self.seen.entry(t.name.clone()).or_default();
            for c in &t.trigger_channels {
                if let Some(v) = self.versions.get(c) {
                    seen.insert(c.clone(), *v);
                }
            }
            if t.arg.is_some() && !reset.iter().any(|r| r == TASKS) {
                reset.push(TASKS.to_string());
            }
            if let Some(node) = g.node(&t.name) {
                for j in &node.join_in {
                    let c = g.joins[*j].channel.clone();
                    if t.trigger_channels.contains(&c) && !reset.contains(&c) {
                        reset.push(c);
                    }
                }
            }
        }
        for c in &reset {
            let empty = if c == TASKS {
                ChannelValue::List(imbl::Vector::new())
            } else {
                ChannelValue::Value(Arc::new(json!([])))
            };
            self.values.insert(c.clone(), empty);
            self.versions.insert(c.clone(), version);
        }
        reset
    }
}

// ---------------------------------------------------------------- tasks

#[derive(Clone, Debug)]
pub(crate) struct Task {
    id: String,
    name: String,
    path: Value,
    triggers: Vec<String>,
    trigger_channels: Vec<String>,
    arg: Option<Value>,
    ns: String,
}

impl Task {
    /// Sort key of LangGraph's `task_path_str`: `__pregel_pull` before `__pregel_push`.
    fn order_key(&self) -> (u8, String, u64) {
        match self.path.get(1) {
            Some(Value::Number(n)) => (1, String::new(), n.as_u64().unwrap_or(0)),
            _ => (0, self.name.clone(), 0),
        }
    }
}

fn task_id(checkpoint_id: &str, ns: &str, step: i64, name: &str, path: &str) -> String {
    let key = format!("{checkpoint_id}|{ns}|{step}|{name}|{path}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).to_string()
}

pub(crate) fn interrupt_id(task_ns: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, task_ns.as_bytes())
        .simple()
        .to_string()
}

fn task_ns(parent_ns: &str, name: &str, id: &str) -> String {
    if parent_ns.is_empty() {
        format!("{name}:{id}")
    } else {
        format!("{parent_ns}|{name}:{id}")
    }
}

/// Tasks triggered at the checkpoint `checkpoint_id`, to run at `step`.
fn prepare(g: &GraphInner, ch: &Channels, checkpoint_id: &str, step: i64, ns: &str) -> Vec<Task> {
    let mut tasks = Vec::new();
    if let Some(ChannelValue::List(items)) = ch.values.get(TASKS) {
        for (i, item) in items.iter().enumerate() {
            let name = item.get("node").and_then(Value::as_str).unwrap_or_default();
            if g.node(name).is_none() {
                continue;
            }
            let id = task_id(checkpoint_id, ns, step, name, &format!("push:{i}"));
            tasks.push(Task {
                ns: task_ns(ns, name, &id),
                id,
                name: name.to_string(),
                path: json!(["__pregel_push", i, false]),
                triggers: vec!["__pregel_push".to_string()],
                trigger_channels: vec![TASKS.to_string()],
                arg: Some(item.get("arg").cloned().unwrap_or(Value::Null)),
            });
        }
    }
    for node in &g.nodes {
        let seen = ch.seen.get(&node.name);
        let fresh = |c: &str| -> bool {
            match ch.versions.get(c) {
                Some(v) => *v > seen.and_then(|s| s.get(c)).copied().unwrap_or(0),
                None => false,
            }
        };
        let mut triggers = Vec::new();
        let own = if node.name == START {
            START.to_string()
        } else {
            branch(&node.name)
        };
        if fresh(&own) {
            triggers.push(own);
        }
        for j in &node.join_in {
            let join = &g.joins[*j];
            if fresh(&join.channel) {
                let complete = match ch.values.get(&join.channel) {
                    Some(ChannelValue::Value(v)) => join.sources.iter().all(|s| {
                        v.as_array()
                            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(s)))
                    }),
                    _ => false,
                };
                if complete {
                    triggers.push(join.channel.clone());
                }
            }
        }
        if triggers.is_empty() {
            continue;
        }
        let id = task_id(checkpoint_id, ns, step, &node.name, "pull");
        tasks.push(Task {
            ns: task_ns(ns, &node.name, &id),
            id,
            name: node.name.clone(),
            path: json!(["__pregel_pull", node.name]),
            triggers: triggers.clone(),
            trigger_channels: triggers,
            arg: None,
        });
    }
    tasks
}

// ---------------------------------------------------------------- pending writes

#[derive(Default)]
struct Pending {
    done: HashMap<String, Vec<(String, Value)>>,
    errors: HashMap<String, Value>,
    /// task id -> (n, interrupts) with the largest n
    interrupts: HashMap<String, (usize, Vec<Interrupt>)>,
    /// task id -> resume values in order
    resumes: HashMap<String, BTreeMap<usize, Value>>,
}

impl Pending {
    fn parse(writes: &[crate::checkpoint::PendingWrite]) -> Self {
        let mut p = Pending::default();
        for w in writes {
            let mut parts = w.task_id.splitn(3, '~');
            let id = parts.next().unwrap_or_default().to_string();
            let kind = parts.next();
            let n: usize = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            match kind {
                None => p
                    .done
                    .entry(id)
                    .or_default()
                    .push((w.channel.clone(), w.value.clone())),
                Some("error") => {
                    p.errors.insert(id, w.value.clone());
                }
                Some("interrupt") => {
                    let list: Vec<Interrupt> =
                        serde_json::from_value(w.value.clone()).unwrap_or_default();
                    let replace = p.interrupts.get(&id).is_none_or(|(m, _)| n >= *m);
                    if replace {
                        p.interrupts.insert(id, (n, list));
                    }
                }
                Some("resume") => {
                    p.resumes.entry(id).or_default().insert(n, w.value.clone());
                }
                Some(_) => {}
            }
        }
        p
    }

    fn resume_count(&self, id: &str) -> usize {
        self.resumes.get(id).map_or(0, BTreeMap::len)
    }

    /// Interrupts of `id` not answered yet.
    fn open_interrupts(&self, id: &str) -> Vec<Interrupt> {
        match self.interrupts.get(id) {
            Some((n, list)) if *n >= self.resume_count(id) && !self.done.contains_key(id) => {
                list.clone()
            }
            _ => Vec::new(),
        }
    }

    fn resume_values(&self, id: &str) -> Vec<Value> {
        self.resumes
            .get(id)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------- execution

enum ExecError {
    Graph(GraphError),
    Parent(Command),
}

impl From<GraphError> for ExecError {
    fn from(e: GraphError) -> Self {
        ExecError::Graph(e)
    }
}

impl From<crate::checkpoint::CheckpointError> for ExecError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        ExecError::Graph(e.into())
    }
}

#[derive(Clone)]
struct Exec {
    g: CompiledGraph,
    cp: Arc<dyn Checkpointer>,
    cfg: Arc<RunConfig>,
    ns: String,
    parents: Map<String, Value>,
    emitter: Emitter,
    cancel: CancellationToken,
    /// events: ids of enclosing runs (root run id, subgraph node run ids).
    parent_ids: Vec<String>,
    /// Base metadata for messages/events: run metadata + thread_id.
    base_meta: Arc<Map<String, Value>>,
    /// Run metadata + configurable scalars, as LangGraph stores with each checkpoint.
    stored_base: Arc<Map<String, Value>>,
    is_root: bool,
}

/// (update for streams, state writes, goto)
type Normalized = (Value, Vec<(String, Value)>, Vec<Route>);

enum TaskResult {
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
    fn g(&self) -> &GraphInner {
        &self.g.inner
    }

    fn checkpoint_config(&self, id: &str) -> Value {
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

    fn cref(&self, id: &str) -> CheckpointRef {
        CheckpointRef {
            thread_id: self.cfg.thread_id.clone(),
            checkpoint_ns: self.ns.clone(),
            checkpoint_id: id.to_string(),
        }
    }

    fn stored_metadata(&self, source: &str, step: i64) -> Map<String, Value> {
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
    async fn save(
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
    fn emit_checkpoint(
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

    /// On resume LangGraph re-emits the checkpoint it continues from.
    #[allow(clippy::too_many_arguments)]
    fn emit_current_checkpoint(
        &self,
        ch: &Channels,
        id: Option<&str>,
        parent: Option<&str>,
        source: &str,
        step: i64,
        meta: &Map<String, Value>,
        pending: &Pending,
    ) {
        let Some(id) = id else { return };
        if self.emitter.wants(StreamMode::Checkpoints) || self.emitter.wants(StreamMode::Debug) {
            let next = prepare(self.g(), ch, id, step + 1, &self.ns);
            self.emit_checkpoint(
                ch,
                id,
                parent,
                source,
                step,
                &next,
                Some(meta),
                Some(pending),
            );
        }
    }

    fn emit_values(&self, ch: &Channels) {
        if self.emitter.wants(StreamMode::Values) {
            self.emitter
                .emit(StreamMode::Values, ch.state_values(self.g()));
        }
    }

    fn task_meta(&self, t: &Task, step: i64) -> Map<String, Value> {
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

    fn with_integration(meta: &Map<String, Value>, integration: &str) -> Map<String, Value> {
        crate::context::with_integration(meta, integration)
    }

    /// Writes produced by `node` for edges, given its state writes.
    fn edge_writes(
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
    fn output_writes(&self, output: NodeOutput) -> Result<Normalized, TaskResult> {
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

    fn run_task(
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
    async fn run_subgraph(
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

    /// The loop: load, apply the input, run supersteps until done, paused or failed.
    async fn execute(self, input: RunInput) -> Result<RunOutcome, ExecError> {
        let thread = self.cfg.thread_id.clone();
        let checkpoint_id = if self.is_root {
            self.cfg.checkpoint_id.clone()
        } else {
            None
        };
        let (tuple, values) = match self
            .cp
            .get_tuple_shared(&thread, &self.ns, checkpoint_id.as_deref())
            .await?
        {
            Some((t, v)) => (Some(t), v),
            None => (None, BTreeMap::new()),
        };
        if let (Some(id), None) = (&checkpoint_id, &tuple) {
            return Err(GraphError::new("ValueError", format!("Checkpoint {id} not found")).into());
        }
        let g = self.g.clone();
        let gi = &g.inner;
        let mut ch = Channels::load(gi, tuple.as_ref(), values);
        let mut cur_id: Option<String> = tuple.as_ref().map(|t| t.checkpoint.id.clone());
        let mut cur_step: i64 = tuple
            .as_ref()
            .and_then(|t| t.metadata.get("step").and_then(Value::as_i64))
            .unwrap_or(-2);
        let mut pending = tuple
            .as_ref()
            .map(|t| Pending::parse(&t.pending_writes))
            .unwrap_or_default();
        let loaded_parent = tuple.as_ref().and_then(|t| t.parent_checkpoint_id.clone());
        let loaded_meta = tuple
            .as_ref()
            .map(|t| t.metadata.clone())
            .unwrap_or_default();
        let loaded_source = tuple
            .as_ref()
            .and_then(|t| {
                t.metadata
                    .get("source")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "loop".to_string());
        drop(tuple);

        let events_root = self.is_root && self.emitter.wants(StreamMode::Events);
        if events_root {
            let iv = match &input {
                RunInput::Values(v) => v.clone(),
                RunInput::Command(c) => json!({
                    "graph": c.graph, "update": c.update, "resume": c.resume,
                    "goto": if c.goto.is_empty() { Value::Null } else { serde_json::to_value(&c.goto).unwrap_or(Value::Null) },
                }),
                RunInput::Null => Value::Null,
            };
            self.emitter.emit(
                StreamMode::Events,
                json!({"event": "on_chain_start", "data": {"input": iv}, "name": gi.name, "tags": [],
                       "run_id": self.cfg.run_id, "metadata": Self::with_integration(&self.base_meta, "langgraph"),
                       "parent_ids": []}),
            );
        }

        let mut resuming = false;
        let limit = i64::try_from(self.cfg.recursion_limit).unwrap_or(i64::MAX / 4);
        // LangGraph: stop = (step of the loaded checkpoint + 1) + limit + 1 when resuming, or
        // (step of the input checkpoint) + limit + 1 for new input
        let mut stop = cur_step.max(-2) + 1 + limit + 1;
        // channels changed before the first step (command updates), saved with it
        let mut pending_new: Vec<String> = Vec::new();
        let input = match input {
            // a null input is a continuation, as on the wire
            RunInput::Values(Value::Null) => RunInput::Null,
            RunInput::Command(cmd) if cur_id.is_none() && cmd.resume.is_none() => {
                RunInput::Values(cmd.update.unwrap_or(Value::Null))
            }
            other => other,
        };
        match input {
            RunInput::Values(v) => {
                // discard unfinished tasks of the previous checkpoint
                if let Some(id) = &cur_id {
                    let old = prepare(gi, &ch, id, cur_step + 1, &self.ns);
                    let version = ch.next_version();
                    ch.consume(gi, &old, version);
                }
                pending = Pending::default();
                let step = if cur_id.is_some() { cur_step + 1 } else { -1 };
                let version = ch.next_version();
                let w = vec![(START.to_string(), v)];
                let updated = ch.apply(gi, &[&w], false, version)?;
                let parent = cur_id.clone();
                let id = self
                    .save(&ch, parent.as_deref(), "input", step, updated, &[])
                    .await?;
                let next = prepare(gi, &ch, &id, step + 1, &self.ns);
                self.emit_checkpoint(
                    &ch,
                    &id,
                    parent.as_deref(),
                    "input",
                    step,
                    &next,
                    None,
                    None,
                );
                cur_id = Some(id);
                cur_step = step;
                stop = step + limit + 1;
            }
            RunInput::Command(cmd) => {
                resuming = true;
                let Some(id) = cur_id.clone() else {
                    return Ok(self.finish(&ch, None, Vec::new(), Vec::new(), events_root));
                };
                if let Some(resume) = &cmd.resume {
                    let tasks = prepare(gi, &ch, &id, cur_step + 1, &self.ns);
                    let open: Vec<(String, Vec<Interrupt>)> = tasks
                        .iter()
                        .map(|t| (t.id.clone(), pending.open_interrupts(&t.id)))
                        .filter(|(_, i)| !i.is_empty())
                        .collect();
                    let by_id = match resume {
                        Value::Object(m)
                            if !m.is_empty()
                                && m.keys().all(|k| {
                                    open.iter().any(|(_, is)| is.iter().any(|i| &i.id == k))
                                }) =>
                        {
                            Some(m.clone())
                        }
                        _ => None,
                    };
                    if by_id.is_none() && open.len() > 1 {
                        return Err(GraphError::new(
                            "RuntimeError",
                            "When there are multiple pending interrupts, you must specify the interrupt id when resuming. Docs: https://docs.langchain.com/oss/python/langgraph/interrupts#handling-multiple-interrupts.",
                        )
                        .into());
                    }
                    for (task_id, interrupts) in &open {
                        let value = match &by_id {
                            Some(m) => interrupts.iter().find_map(|i| m.get(&i.id).cloned()),
                            None => Some(resume.clone()),
                        };
                        if let Some(value) = value {
                            let n = pending.resume_count(task_id);
                            self.cp
                                .put_writes(
                                    &thread,
                                    &self.ns,
                                    &id,
                                    &format!("{task_id}~resume~{n}"),
                                    &[(RESUME.to_string(), value.clone())],
                                )
                                .await?;
                            pending
                                .resumes
                                .entry(task_id.clone())
                                .or_default()
                                .insert(n, value);
                        }
                    }
                }
                if cmd.update.is_some() || !cmd.goto.is_empty() {
                    let (_, writes, goto) = match self.output_writes(NodeOutput::Command(Command {
                        graph: None,
                        ..cmd.clone()
                    })) {
                        Ok(x) => x,
                        Err(TaskResult::Failed { kind, message }) => {
                            return Err(GraphError { kind, message }.into());
                        }
                        Err(_) => (Value::Null, Vec::new(), Vec::new()),
                    };
                    let mut all = writes;
                    for r in &goto {
                        match r {
                            Route::To(n) if n != END && gi.node(n).is_some() => {
                                all.push((branch(n), Value::Null))
                            }
                            Route::Send { node, arg } if gi.node(node).is_some() => {
                                all.push((TASKS.to_string(), json!({"node": node, "arg": arg})))
                            }
                            _ => {}
                        }
                    }
                    let version = ch.next_version();
                    let updated = ch.apply(gi, &[&all], false, version)?;
                    if cmd.resume.is_some() {
                        // saved with the next step (the resumed tasks belong to this checkpoint)
                        pending_new.extend(updated);
                    } else {
                        let step = cur_step + 1;
                        let new_id = self
                            .save(&ch, Some(&id), "input", step, updated, &[])
                            .await?;
                        let next = prepare(gi, &ch, &new_id, step + 1, &self.ns);
                        self.emit_checkpoint(
                            &ch,
                            &new_id,
                            Some(&id),
                            "input",
                            step,
                            &next,
                            None,
                            None,
                        );
                        pending = Pending::default();
                        cur_id = Some(new_id);
                        cur_step = step;
                    }
                }
                self.emit_values(&ch);
                self.emit_current_checkpoint(
                    &ch,
                    cur_id.as_deref(),
                    loaded_parent.as_deref(),
                    &loaded_source,
                    cur_step,
                    &loaded_meta,
                    &pending,
                );
            }
            RunInput::Null => {
                resuming = true;
                if cur_id.is_none() {
                    return Ok(self.finish(&ch, None, Vec::new(), Vec::new(), events_root));
                }
                self.emit_values(&ch);
                self.emit_current_checkpoint(
                    &ch,
                    cur_id.as_deref(),
                    loaded_parent.as_deref(),
                    &loaded_source,
                    cur_step,
                    &loaded_meta,
                    &pending,
                );
                if checkpoint_id.is_some() {
                    // time travel: LangGraph re-runs the checkpoint's tasks instead of reusing
                    // their old writes, on a fork (source "fork") unless it is one already
                    pending = Pending::default();
                    if let Some(id) = cur_id
                        .clone()
                        .filter(|_| loaded_source != "update" && loaded_source != "fork")
                    {
                        let step = cur_step + 1;
                        let new_id = self
                            .save(&ch, Some(&id), "fork", step, Vec::new(), &[])
                            .await?;
                        pending = Pending::default();
                        cur_id = Some(new_id);
                        cur_step = step;
                    }
                }
            }
        }

        let mut first = true;
        while let Some(id) = cur_id.clone() {
            let step = cur_step + 1;
            // LangGraph checks the limit before looking for tasks
            if step > stop {
                return Err(GraphError::new(
                    "GraphRecursionError",
                    recursion_message(self.cfg.recursion_limit),
                )
                .into());
            }
            let tasks = prepare(gi, &ch, &id, step, &self.ns);
            if tasks.is_empty() {
                break;
            }
            let is_input_step = tasks.iter().all(|t| t.name == START);
            if !(is_input_step || resuming && first)
                && tasks
                    .iter()
                    .any(|t| self.cfg.interrupt_before.matches(&t.name))
            {
                self.emitter
                    .emit(StreamMode::Updates, json!({ INTERRUPT: [] }));
                let next = tasks.iter().map(|t| t.name.clone()).collect();
                return Ok(self.finish(&ch, Some(&id), Vec::new(), next, events_root));
            }
            first = false;

            // task records first, for every task of the step (as LangGraph's tick does)
            if self.emitter.wants(StreamMode::Tasks) || self.emitter.wants(StreamMode::Debug) {
                let mut state: Option<Value> = None;
                for t in tasks
                    .iter()
                    .filter(|t| t.name != START && !pending.done.contains_key(&t.id))
                {
                    let iv = match &t.arg {
                        Some(a) => a.clone(),
                        None => state.get_or_insert_with(|| ch.state_values(gi)).clone(),
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

            // run (tasks read one shared snapshot of the channels)
            let snapshot = Arc::new(ch.clone());
            let mut futs = Vec::new();
            let mut cached: Vec<Option<Vec<(String, Value)>>> = Vec::new();
            for t in &tasks {
                if let Some(w) = pending.done.get(&t.id) {
                    cached.push(Some(w.clone()));
                    futs.push(None);
                } else {
                    cached.push(None);
                    let open = !pending.open_interrupts(&t.id).is_empty();
                    futs.push(Some(self.run_task(
                        &snapshot,
                        t,
                        step,
                        pending.resume_values(&t.id),
                        open,
                        &id,
                    )));
                }
            }
            let running = futures::future::join_all(futs.into_iter().map(|f| async move {
                match f {
                    Some(f) => Some(f.await),
                    None => None,
                }
            }));
            let results = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    return Err(GraphError::new("CancelledError", "").into());
                }
                r = running => r,
            };
            // the tasks are done: release their view so the writes below mutate in place
            drop(snapshot);

            // record
            let mut failure: Option<GraphError> = None;
            let mut interrupts: Vec<Interrupt> = Vec::new();
            let mut interrupted: Vec<(&Task, Vec<Interrupt>)> = Vec::new();
            let mut parent_cmd: Option<Command> = None;
            let mut step_writes: Vec<(&Task, Vec<(String, Value)>)> = Vec::new();
            for ((t, result), cached) in tasks.iter().zip(results).zip(cached) {
                if let Some(w) = cached {
                    step_writes.push((t, w));
                    continue;
                }
                let Some(result) = result else { continue };
                match result {
                    TaskResult::Writes { update, writes } => {
                        let stored: Vec<(String, Value)> = if writes.is_empty() {
                            vec![(NO_WRITES.to_string(), Value::Null)]
                        } else {
                            writes.clone()
                        };
                        self.cp
                            .put_writes(&thread, &self.ns, &id, &t.id, &stored)
                            .await?;
                        if t.name != START {
                            self.emit_task_result(&ch, t, step, &update, None, &[]);
                        }
                        step_writes.push((t, writes));
                    }
                    TaskResult::Failed { kind, message } => {
                        let err = json!({"error": kind, "message": message});
                        self.cp
                            .put_writes(
                                &thread,
                                &self.ns,
                                &id,
                                &format!("{}~error", t.id),
                                &[(ERROR.to_string(), err.clone())],
                            )
                            .await?;
                        self.emit_task_result(&ch, t, step, &json!({}), Some(err), &[]);
                        if failure.is_none() {
                            failure = Some(GraphError { kind, message });
                        }
                    }
                    TaskResult::Interrupted(list) => {
                        let n = pending.resume_count(&t.id);
                        self.cp
                            .put_writes(
                                &thread,
                                &self.ns,
                                &id,
                                &format!("{}~interrupt~{n}", t.id),
                                &[(
                                    INTERRUPT.to_string(),
                                    serde_json::to_value(&list).unwrap_or(Value::Null),
                                )],
                            )
                            .await?;
                        interrupted.push((t, list.clone()));
                        interrupts.extend(list);
                    }
                    TaskResult::Parent(cmd) => {
                        if parent_cmd.is_none() {
                            parent_cmd = Some(cmd);
                        }
                    }
                    TaskResult::Cancelled => {
                        return Err(GraphError::new("CancelledError", "").into());
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e.into());
            }
            if let Some(cmd) = parent_cmd {
                if self.is_root {
                    return Err(
                        GraphError::new("InvalidUpdateError", "There is no parent graph").into(),
                    );
                }
                return Err(ExecError::Parent(cmd));
            }
            if !interrupts.is_empty() {
                let stream: Vec<Value> =
                    interrupts.iter().map(Interrupt::to_stream_value).collect();
                self.emitter
                    .emit(StreamMode::Updates, json!({ INTERRUPT: stream }));
                if self.emitter.wants(StreamMode::Values) {
                    let mut v = ch.state_values(gi);
                    if let Value::Object(m) = &mut v {
                        m.insert(INTERRUPT.into(), Value::Array(stream));
                    }
                    self.emitter.emit(StreamMode::Values, v);
                }
                // LangGraph reports the interrupted tasks after the interrupt itself
                for (t, list) in &interrupted {
                    self.emit_task_result(&ch, t, step, &json!({}), None, list);
                }
                let next = tasks.iter().map(|t| t.name.clone()).collect();
                return Ok(self.finish(&ch, Some(&id), interrupts, next, events_root));
            }

            // apply
            let version = ch.next_version();
            let consumed = ch.consume(gi, &tasks, version);
            // LangGraph applies writes sorted by task path: pulls (by node name), then pushes
            step_writes.sort_by_key(|(t, _)| t.order_key());
            let refs: Vec<&[(String, Value)]> =
                step_writes.iter().map(|(_, w)| w.as_slice()).collect();
            let updated = ch.apply(gi, &refs, true, version)?;
            let mut extra = consumed;
            extra.append(&mut pending_new);
            let new_id = self
                .save(&ch, Some(&id), "loop", step, updated, &extra)
                .await?;
            pending = Pending::default();
            cur_id = Some(new_id.clone());
            cur_step = step;
            self.emit_values(&ch);
            let next = if self.emitter.wants(StreamMode::Checkpoints)
                || self.emitter.wants(StreamMode::Debug)
            {
                prepare(gi, &ch, &new_id, step + 1, &self.ns)
            } else {
                Vec::new()
            };
            self.emit_checkpoint(&ch, &new_id, Some(&id), "loop", step, &next, None, None);
            if !is_input_step
                && tasks
                    .iter()
                    .any(|t| self.cfg.interrupt_after.matches(&t.name))
            {
                let next = prepare(gi, &ch, &new_id, step + 1, &self.ns);
                self.emitter
                    .emit(StreamMode::Updates, json!({ INTERRUPT: [] }));
                let names = next.iter().map(|t| t.name.clone()).collect();
                return Ok(self.finish(&ch, Some(&new_id), Vec::new(), names, events_root));
            }
        }
        let id = cur_id.clone();
        Ok(self.finish(&ch, id.as_deref(), Vec::new(), Vec::new(), events_root))
    }

    fn emit_task_result(
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
    fn emit_returned_messages(&self, ch: &Channels, t: &Task, step: i64, update: &Value) {
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

    fn finish(
        &self,
        ch: &Channels,
        id: Option<&str>,
        interrupts: Vec<Interrupt>,
        next: Vec<String>,
        events_root: bool,
    ) -> RunOutcome {
        let values = ch.state_values(self.g());
        if events_root {
            self.emitter.emit(
                StreamMode::Events,
                json!({"event": "on_chain_end", "data": {"output": values}, "run_id": self.cfg.run_id,
                       "name": self.g().name, "tags": [],
                       "metadata": Self::with_integration(&self.base_meta, "langgraph"), "parent_ids": []}),
            );
        }
        RunOutcome {
            values,
            interrupts,
            next,
            checkpoint: id.map(|i| self.cref(i)),
        }
    }
}

// ---------------------------------------------------------------- public API

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
        match cp.get_tuple(thread_id, "", checkpoint_id).await? {
            None => Ok(StateSnapshot::empty()),
            Some(t) => self.snapshot(cp, &t, subgraphs).await,
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
        Box::pin(async move {
            let gi = &self.inner;
            let values = t
                .checkpoint
                .channel_values
                .iter()
                .map(|(k, v)| (k.clone(), ChannelValue::Value(Arc::new(v.clone()))))
                .collect();
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

/// Compile-time check: the run future is `Send` (the runtime spawns it).
#[allow(dead_code)]
fn _assert_send(g: CompiledGraph, cp: Arc<dyn Checkpointer>) {
    fn is_send<T: Send>(_: T) {}
    let sink: StreamSink = Arc::new(|_| {});
    is_send(async move {
        let _ = g
            .run(
                cp,
                RunInput::Null,
                RunConfig::new("t", "r"),
                sink,
                CancellationToken::new(),
            )
            .await;
    });
}

/// Low bits of a channel version that are random (see `next_version`).
const VERSION_RANDOM_BITS: u32 = 20;
