//! What a node sees: [`NodeInput`] (a cheap, shared view of the state or a `Send` argument) and
//! [`NodeContext`] (config, `interrupt()`, custom stream writer, cancellation, and the chat-model
//! hook [`ModelCall`] that feeds `messages` and `events` stream modes).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::ChannelValue;
use crate::types::{
    Interrupt, InterruptSignal, NodeError, SharedValues, StreamMode, StreamPart, StreamSink,
};

// ---------------------------------------------------------------- emitter

/// Routes stream output to the sink, filtered by mode and namespace.
#[derive(Clone)]
pub(crate) struct Emitter {
    pub sink: StreamSink,
    pub modes: u16,
    /// Stream namespace of the graph emitting (empty for root).
    pub ns: Vec<String>,
    /// Whether subgraph output is emitted.
    pub subgraphs: bool,
    /// `values` parts in the shared form ([`crate::RunConfig::shared_values`]).
    pub shared_values: bool,
    /// Message ids already streamed in this run (so returned messages are not re-sent).
    pub streamed: Arc<Mutex<HashSet<String>>>,
}

impl Emitter {
    pub fn wants(&self, mode: StreamMode) -> bool {
        if self.modes & mode.bit() == 0 {
            return false;
        }
        mode == StreamMode::Events || self.ns.is_empty() || self.subgraphs
    }

    pub fn emit(&self, mode: StreamMode, data: Value) {
        if self.wants(mode) {
            self.send(mode, data, None);
        }
    }

    /// Emits a `values` part: the state in the shared form where the run asked for it,
    /// otherwise as JSON (built only when emitted).
    pub fn emit_values(&self, state: impl FnOnce() -> SharedValues) {
        if !self.wants(StreamMode::Values) {
            return;
        }
        let state = state();
        if self.shared_values {
            self.send(StreamMode::Values, Value::Null, Some(Arc::new(state)));
        } else {
            self.send(StreamMode::Values, state.to_value(), None);
        }
    }

    fn send(&self, mode: StreamMode, data: Value, shared: Option<Arc<SharedValues>>) {
        // events are never namespaced (astream_events nests by parent_ids)
        let ns = if self.subgraphs && mode != StreamMode::Events {
            self.ns.clone()
        } else {
            Vec::new()
        };
        (self.sink)(StreamPart {
            ns,
            mode,
            data,
            shared,
        });
    }

    pub fn child(&self, segment: String) -> Emitter {
        let mut ns = self.ns.clone();
        ns.push(segment);
        Emitter {
            sink: self.sink.clone(),
            modes: self.modes,
            ns,
            subgraphs: self.subgraphs,
            shared_values: self.shared_values,
            streamed: self.streamed.clone(),
        }
    }
}

/// Keys the engine adds per task to messages / events metadata.
pub(crate) const TASK_KEYS: &[&str] = &[
    "langgraph_step",
    "langgraph_node",
    "langgraph_triggers",
    "langgraph_path",
    "langgraph_checkpoint_ns",
];

/// Run metadata + the task keys (`langgraph_step`, ...).
pub(crate) fn build_task_meta(
    base: &Map<String, Value>,
    step: i64,
    node: &str,
    triggers: &[String],
    path: &Value,
    ns: &str,
) -> Map<String, Value> {
    let mut m = base.clone();
    m.insert("langgraph_step".into(), json!(step));
    m.insert("langgraph_node".into(), json!(node));
    m.insert("langgraph_triggers".into(), json!(triggers));
    m.insert("langgraph_path".into(), path.clone());
    m.insert("langgraph_checkpoint_ns".into(), json!(ns));
    m
}

/// `meta` with `ls_integration` inserted between the run metadata and the task keys.
pub(crate) fn with_integration(meta: &Map<String, Value>, integration: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in meta {
        if !TASK_KEYS.contains(&k.as_str()) && k != "checkpoint_ns" {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("ls_integration".into(), json!(integration));
    for (k, v) in meta {
        if TASK_KEYS.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(ns) = meta.get("checkpoint_ns") {
        out.insert("checkpoint_ns".into(), ns.clone());
    }
    out
}

// ---------------------------------------------------------------- input

enum InputInner {
    State(BTreeMap<String, ChannelValue>, Arc<Vec<String>>),
    Arg(Value),
}

/// The state a node sees (or its `Send` argument). Cheap to clone and to create: list channels
/// are shared persistent vectors.
#[derive(Clone)]
pub struct NodeInput {
    inner: Arc<InputInner>,
}

impl NodeInput {
    pub(crate) fn state(values: BTreeMap<String, ChannelValue>, keys: Arc<Vec<String>>) -> Self {
        Self {
            inner: Arc::new(InputInner::State(values, keys)),
        }
    }

    /// An input that is a plain value (a `Send` argument, or tests).
    pub fn from_value(v: Value) -> Self {
        Self {
            inner: Arc::new(InputInner::Arg(v)),
        }
    }

    /// The `Send` argument, when the node was started by a `Send`.
    pub fn arg(&self) -> Option<&Value> {
        match &*self.inner {
            InputInner::Arg(v) => Some(v),
            InputInner::State(..) => None,
        }
    }

    /// Materializes one key.
    pub fn get(&self, key: &str) -> Option<Value> {
        match &*self.inner {
            InputInner::State(values, _) => values.get(key).map(ChannelValue::to_value),
            InputInner::Arg(v) => v.get(key).cloned(),
        }
    }

    /// A scalar key by reference (None for list channels: use [`NodeInput::items`]).
    pub fn get_ref(&self, key: &str) -> Option<&Value> {
        match &*self.inner {
            InputInner::State(values, _) => match values.get(key) {
                Some(ChannelValue::Value(v)) => Some(v),
                _ => None,
            },
            InputInner::Arg(v) => v.get(key),
        }
    }

    /// Items of a list key, by reference, without copying.
    pub fn items<'a>(&'a self, key: &str) -> Box<dyn DoubleEndedIterator<Item = &'a Value> + 'a> {
        match &*self.inner {
            InputInner::State(values, _) => match values.get(key) {
                Some(ChannelValue::List(items)) => Box::new(items.iter().map(|a| &**a)),
                Some(ChannelValue::Value(v)) => match &**v {
                    Value::Array(a) => Box::new(a.iter()),
                    _ => Box::new(std::iter::empty()),
                },
                None => Box::new(std::iter::empty()),
            },
            InputInner::Arg(v) => match v.get(key) {
                Some(Value::Array(a)) => Box::new(a.iter()),
                _ => Box::new(std::iter::empty()),
            },
        }
    }

    /// Number of items of a list key.
    pub fn len_of(&self, key: &str) -> usize {
        match &*self.inner {
            InputInner::State(values, _) => match values.get(key) {
                Some(ChannelValue::List(items)) => items.len(),
                Some(ChannelValue::Value(v)) => v.as_array().map_or(0, Vec::len),
                None => 0,
            },
            InputInner::Arg(v) => v.get(key).and_then(Value::as_array).map_or(0, Vec::len),
        }
    }

    /// The `messages` list, by reference.
    pub fn messages(&self) -> Box<dyn DoubleEndedIterator<Item = &Value> + '_> {
        self.items("messages")
    }

    /// Materializes the whole input (O(state size)).
    pub fn to_value(&self) -> Value {
        match &*self.inner {
            InputInner::State(values, keys) => {
                let mut m = Map::new();
                for k in keys.iter() {
                    if let Some(v) = values.get(k) {
                        m.insert(k.clone(), v.to_value());
                    }
                }
                Value::Object(m)
            }
            InputInner::Arg(v) => v.clone(),
        }
    }
}

// ---------------------------------------------------------------- context

pub(crate) struct CtxInner {
    pub cfg: Arc<crate::types::RunConfig>,
    /// Run metadata + thread_id.
    pub base_meta: Arc<Map<String, Value>>,
    pub triggers: Vec<String>,
    pub path: Value,
    pub checkpoint_ns: String,
    pub resume: Vec<Value>,
    pub interrupt_count: Mutex<usize>,
    pub emitter: Emitter,
    pub cancel: CancellationToken,
    pub node_run_id: String,
    pub parent_ids: Vec<String>,
    pub step: i64,
    pub node: String,
}

/// Per-task context handed to a node. Cheap to clone.
#[derive(Clone)]
pub struct NodeContext {
    pub(crate) inner: Arc<CtxInner>,
}

impl NodeContext {
    /// The run's `configurable` map.
    pub fn config(&self) -> &Map<String, Value> {
        &self.inner.cfg.configurable
    }

    /// The run metadata.
    pub fn metadata(&self) -> &Map<String, Value> {
        &self.inner.cfg.metadata
    }

    /// Name of the running node.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Step of the running task.
    pub fn step(&self) -> i64 {
        self.inner.step
    }

    /// Checkpoint namespace of this task (`node:task_id`, nested with `|`).
    pub fn checkpoint_ns(&self) -> &str {
        &self.inner.checkpoint_ns
    }

    /// Pauses the run with `value`; returns the resume value when resumed. The n-th call in a
    /// task returns the n-th resume value.
    pub fn interrupt(&self, value: Value) -> Result<Value, NodeError> {
        let mut count = self.inner.interrupt_count.lock();
        let n = *count;
        *count += 1;
        match self.inner.resume.get(n) {
            Some(v) => Ok(v.clone()),
            None => Err(NodeError::Interrupt(InterruptSignal(vec![Interrupt {
                value,
                id: crate::pregel::interrupt_id(&self.inner.checkpoint_ns),
            }]))),
        }
    }

    /// A context for work this task runs as a graph of its own (a subagent's model calls and
    /// tool steps): what is written through it streams under the namespace segment `segment`
    /// below this task's, as output of node `node` — visible, like a subgraph's output, only with
    /// `stream_subgraphs` (events mode always). It shares the run's configuration and
    /// cancellation; nothing of it is checkpointed.
    pub fn nested(&self, segment: &str, node: &str) -> NodeContext {
        let i = &self.inner;
        let mut parent_ids = i.parent_ids.clone();
        if !i.node_run_id.is_empty() {
            parent_ids.push(i.node_run_id.clone());
        }
        let checkpoint_ns = if i.checkpoint_ns.is_empty() {
            segment.to_string()
        } else {
            format!("{}|{segment}", i.checkpoint_ns)
        };
        NodeContext {
            inner: Arc::new(CtxInner {
                cfg: i.cfg.clone(),
                base_meta: i.base_meta.clone(),
                triggers: vec![format!("branch:to:{node}")],
                path: json!(["__pregel_pull", node]),
                checkpoint_ns,
                resume: Vec::new(),
                interrupt_count: Mutex::new(0),
                emitter: i.emitter.child(segment.to_string()),
                cancel: i.cancel.clone(),
                node_run_id: String::new(),
                parent_ids,
                step: i.step,
                node: node.to_string(),
            }),
        }
    }

    /// Writes `data` to stream mode `mode` in this context's namespace (for a
    /// [`nested`](Self::nested) context: its node's `updates`, its `values`).
    pub fn write_stream(&self, mode: StreamMode, data: Value) {
        self.inner.emitter.emit(mode, data);
    }

    /// Writes to the `custom` stream mode.
    pub fn write_custom(&self, value: Value) {
        self.inner.emitter.emit(StreamMode::Custom, value);
    }

    /// The run's cancellation token.
    pub fn cancellation(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Whether token chunks are listened to (messages or events mode): a model client may skip
    /// streaming otherwise.
    pub fn streaming(&self) -> bool {
        // the run's modes, whatever the namespace: LangChain streams whenever a handler exists
        let m = self.inner.emitter.modes;
        m & (StreamMode::Messages.bit() | StreamMode::Events.bit()) != 0
    }

    /// Starts a chat-model call: emits `on_chat_model_start` (events mode) and returns the handle
    /// through which chunks are streamed.
    pub fn model_call(&self, info: ModelCallInfo) -> ModelCall {
        // LangGraph's quirk: `checkpoint_ns` is the enclosing graph's ns for nested graphs,
        // the task ns at the root.
        let ns = &self.inner.checkpoint_ns;
        let cns = match ns.rfind('|') {
            Some(pos) => ns[..pos].to_string(),
            None => ns.clone(),
        };
        // keep key order: run meta, ls_integration, langgraph_*, checkpoint_ns, ls_*
        let i = &self.inner;
        let task_meta = build_task_meta(
            &i.base_meta,
            i.step,
            &i.node,
            &i.triggers,
            &i.path,
            &i.checkpoint_ns,
        );
        let mut ordered = with_integration(&task_meta, "langchain_chat_model");
        ordered.insert("checkpoint_ns".into(), json!(cns));
        ordered.insert("ls_provider".into(), json!(info.ls_provider));
        if let Some(name) = &info.ls_model_name {
            ordered.insert("ls_model_name".into(), json!(name));
        }
        ordered.insert("ls_model_type".into(), json!(info.ls_model_type));
        if let Some(t) = info.ls_temperature {
            ordered.insert("ls_temperature".into(), json!(t));
        }
        if let Some(t) = info.ls_max_tokens {
            ordered.insert("ls_max_tokens".into(), json!(t));
        }
        for (k, v) in &info.extra {
            ordered.insert(k.clone(), v.clone());
        }
        let run_id = uuid::Uuid::now_v7().to_string();
        let mut parent_ids = self.inner.parent_ids.clone();
        if !self.inner.node_run_id.is_empty() {
            parent_ids.push(self.inner.node_run_id.clone());
        }
        let call = ModelCall {
            ctx: self.clone(),
            metadata: Arc::new(ordered),
            run_id,
            parent_ids,
            name: info.name.clone(),
            input: info.input.clone(),
        };
        if self.inner.emitter.wants(StreamMode::Events) {
            self.inner.emitter.emit(
                StreamMode::Events,
                json!({
                    "event": "on_chat_model_start",
                    "data": {"input": {"messages": [info.input]}},
                    "name": call.name,
                    "tags": ["seq:step:1"],
                    "run_id": call.run_id,
                    "metadata": *call.metadata,
                    "parent_ids": call.parent_ids,
                }),
            );
        }
        call
    }
}

/// Describes a chat-model call (LangSmith `ls_*` fields).
#[derive(Clone, Debug, Default)]
pub struct ModelCallInfo {
    /// Class-like name, e.g. `GenericFakeChatModel`, `ChatOpenAI`.
    pub name: String,
    /// e.g. `openai`, `genericfakechatmodel`.
    pub ls_provider: String,
    /// Model name.
    pub ls_model_name: Option<String>,
    /// `chat`.
    pub ls_model_type: String,
    /// Temperature.
    pub ls_temperature: Option<f64>,
    /// Max tokens.
    pub ls_max_tokens: Option<u64>,
    /// Extra metadata keys appended after the `ls_*` ones.
    pub extra: Map<String, Value>,
    /// The prompt messages (for `on_chat_model_start`).
    pub input: Value,
}

/// A chat-model call in progress; chunks go to `messages` and `events` modes.
pub struct ModelCall {
    ctx: NodeContext,
    metadata: Arc<Map<String, Value>>,
    run_id: String,
    parent_ids: Vec<String>,
    name: String,
    input: Value,
}

impl ModelCall {
    /// Streams one `AIMessageChunk` JSON.
    pub fn chunk(&self, chunk: Value) {
        let em = &self.ctx.inner.emitter;
        // only what was really sent counts as streamed (subgraph output may be filtered out,
        // then the parent sends the whole message when the node returns it)
        if let Some(id) = chunk.get("id").and_then(Value::as_str)
            && em.wants(StreamMode::Messages)
        {
            em.streamed.lock().insert(id.to_string());
        }
        if em.wants(StreamMode::Events) {
            em.emit(
                StreamMode::Events,
                json!({
                    "event": "on_chat_model_stream",
                    "data": {"chunk": chunk},
                    "run_id": self.run_id,
                    "name": self.name,
                    "tags": ["seq:step:1"],
                    "metadata": *self.metadata,
                    "parent_ids": self.parent_ids,
                }),
            );
        }
        if em.wants(StreamMode::Messages) {
            em.emit(StreamMode::Messages, json!([chunk, *self.metadata]));
        }
    }

    /// Ends the call with the whole message (marked as streamed, so it is not re-sent when the
    /// node returns it).
    pub fn end(self, message: &Value) {
        let em = &self.ctx.inner.emitter;
        // only what was really sent counts as streamed (subgraph output may be filtered out,
        // then the parent sends the whole message when the node returns it)
        if let Some(id) = message.get("id").and_then(Value::as_str)
            && em.wants(StreamMode::Messages)
        {
            em.streamed.lock().insert(id.to_string());
        }
        if em.wants(StreamMode::Events) {
            em.emit(
                StreamMode::Events,
                json!({
                    "event": "on_chat_model_end",
                    "data": {"output": message, "input": {"messages": [self.input]}},
                    "run_id": self.run_id,
                    "name": self.name,
                    "tags": ["seq:step:1"],
                    "metadata": *self.metadata,
                    "parent_ids": self.parent_ids,
                }),
            );
        }
    }
}
