//! Public value types of the engine: commands, routes, node outputs and errors, run
//! configuration, stream parts, interrupts and state snapshots (serialized exactly like the
//! LangGraph API's `GET /threads/{id}/state`).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

/// Name of the virtual entry node.
pub const START: &str = "__start__";
/// Name of the virtual exit node.
pub const END: &str = "__end__";
/// `Command.graph` value that targets the parent graph.
pub const PARENT: &str = "__parent__";

/// A custom reducer: `f(current, update) -> new` (error text becomes an `InvalidUpdateError`).
pub type ReducerFn = Arc<dyn Fn(&Value, &Value) -> Result<Value, String> + Send + Sync>;

/// How a channel combines writes.
#[derive(Clone)]
pub enum Reducer {
    /// Keeps the last value; two writes in one step is an `InvalidUpdateError`.
    LastValue,
    /// Appends items (a list write appends each item).
    Append,
    /// LangChain `add_messages`.
    AddMessages,
    /// `f(current, update) -> new`.
    Custom(ReducerFn),
}

impl Reducer {
    /// Whether the channel holds a list in shared form.
    pub fn is_list(&self) -> bool {
        matches!(self, Reducer::Append | Reducer::AddMessages)
    }
}

impl fmt::Debug for Reducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reducer::LastValue => "LastValue",
            Reducer::Append => "Append",
            Reducer::AddMessages => "AddMessages",
            Reducer::Custom(_) => "Custom",
        })
    }
}

/// Where control goes after a node (router result, `Command.goto`).
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// A node name, or [`END`].
    To(String),
    /// Run `node` in the next step with `arg` as its input (map-reduce).
    Send {
        /// Target node.
        node: String,
        /// The node's input.
        arg: Value,
    },
}

impl Route {
    /// `Route::To(name)`.
    pub fn to(name: impl Into<String>) -> Self {
        Route::To(name.into())
    }
}

impl Serialize for Route {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Route::To(n) => s.serialize_str(n),
            Route::Send { node, arg } => json!({"node": node, "input": arg}).serialize(s),
        }
    }
}

fn route_from_value(v: &Value) -> Result<Route, String> {
    match v {
        Value::String(s) => Ok(Route::To(s.clone())),
        Value::Object(o) => {
            let node = o
                .get("node")
                .and_then(Value::as_str)
                .ok_or_else(|| "goto object needs a \"node\"".to_string())?;
            let arg = o
                .get("input")
                .or_else(|| o.get("arg"))
                .cloned()
                .unwrap_or(Value::Null);
            Ok(Route::Send {
                node: node.to_string(),
                arg,
            })
        }
        other => Err(format!("invalid goto: {other}")),
    }
}

fn de_goto<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Route>, D::Error> {
    let v = Value::deserialize(d)?;
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        single => vec![single],
    };
    items
        .iter()
        .map(route_from_value)
        .collect::<Result<_, _>>()
        .map_err(serde::de::Error::custom)
}

/// A command: returned by a node (update + goto, or to the parent graph), or sent as run input
/// (resume an interrupt). Wire form: `{"resume", "update", "goto": "n" | ["a","b"] |
/// {"node","input"}, "graph"}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Command {
    /// State update (object, or list of `[key, value]` pairs).
    #[serde(default)]
    pub update: Option<Value>,
    /// Next nodes / sends.
    #[serde(default, deserialize_with = "de_goto")]
    pub goto: Vec<Route>,
    /// Resume value: a single value, or a map interrupt id -> value.
    #[serde(default)]
    pub resume: Option<Value>,
    /// `"__parent__"` to address the parent graph.
    #[serde(default)]
    pub graph: Option<String>,
}

/// What a node returns.
#[derive(Clone, Debug)]
pub enum NodeOutput {
    /// Partial state update (object or null).
    Update(Value),
    /// Update + goto (+ graph).
    Command(Command),
}

impl From<Value> for NodeOutput {
    fn from(v: Value) -> Self {
        NodeOutput::Update(v)
    }
}

/// Interrupts raised inside a node (opaque; propagate it with `?`).
#[derive(Clone, Debug)]
pub struct InterruptSignal(pub(crate) Vec<Interrupt>);

/// Why a node did not produce an output.
#[derive(Clone, Debug)]
pub enum NodeError {
    /// The node failed (Python exception class + message).
    Failed {
        /// e.g. `ValueError`.
        kind: String,
        /// e.g. `boom`.
        message: String,
    },
    /// `interrupt()` paused the node.
    Interrupt(InterruptSignal),
    /// A `Command` addressed to the parent graph.
    ParentCommand(Command),
    /// The run was cancelled.
    Cancelled,
}

impl NodeError {
    /// `NodeError::Failed`.
    pub fn failed(kind: &str, message: impl Into<String>) -> Self {
        NodeError::Failed {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeError::Failed { kind, message } => write!(f, "{kind}: {message}"),
            NodeError::Interrupt(_) => f.write_str("interrupted"),
            NodeError::ParentCommand(_) => f.write_str("parent command"),
            NodeError::Cancelled => f.write_str("cancelled"),
        }
    }
}

impl std::error::Error for NodeError {}

/// An interrupt raised by `interrupt(value)`. Wire: `{"value","id"}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Interrupt {
    /// The value passed to `interrupt()`.
    pub value: Value,
    /// 32 hex chars, stable per task.
    pub id: String,
}

impl Interrupt {
    /// Stream form: `{"value","id","response_schema":null}`.
    pub fn to_stream_value(&self) -> Value {
        json!({"value": self.value, "id": self.id, "response_schema": null})
    }
}

/// Stream modes the engine produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    /// Full state after each step.
    Values,
    /// `{node: update}` per task.
    Updates,
    /// `[message chunk, metadata]` tuples.
    Messages,
    /// Values written with `NodeContext::write_custom`.
    Custom,
    /// Task start / result records.
    Tasks,
    /// Checkpoint records.
    Checkpoints,
    /// checkpoint + task + task_result records.
    Debug,
    /// astream_events v2 records.
    Events,
}

impl StreamMode {
    /// The SSE event name.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamMode::Values => "values",
            StreamMode::Updates => "updates",
            StreamMode::Messages => "messages",
            StreamMode::Custom => "custom",
            StreamMode::Tasks => "tasks",
            StreamMode::Checkpoints => "checkpoints",
            StreamMode::Debug => "debug",
            StreamMode::Events => "events",
        }
    }

    /// Parses a wire name (`messages-tuple` -> `Messages`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "values" => StreamMode::Values,
            "updates" => StreamMode::Updates,
            "messages" | "messages-tuple" => StreamMode::Messages,
            "custom" => StreamMode::Custom,
            "tasks" => StreamMode::Tasks,
            "checkpoints" => StreamMode::Checkpoints,
            "debug" => StreamMode::Debug,
            "events" => StreamMode::Events,
            _ => return None,
        })
    }

    pub(crate) fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// One piece of stream output.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamPart {
    /// Namespace, e.g. `["child:<task_id>"]`; empty for the root graph.
    pub ns: Vec<String>,
    /// Mode.
    pub mode: StreamMode,
    /// Payload (null when `shared` holds it).
    pub data: Value,
    /// A `values` part's payload in the engine's shared form, when the run asked for it
    /// ([`RunConfig::shared_values`]): the state is never copied into a JSON tree.
    pub shared: Option<Arc<SharedValues>>,
}

/// The state of a `values` part as the engine holds it (list channels are shared persistent
/// vectors). Serializes to the bytes of [`SharedValues::to_value`]: the state's keys in the
/// graph's order, then `__interrupt__` when the run paused.
#[derive(Clone, Debug)]
pub struct SharedValues {
    pub state: Vec<(String, crate::checkpoint::ChannelValue)>,
    pub interrupts: Option<Value>,
}

impl SharedValues {
    /// The payload as JSON (O(state)).
    pub fn to_value(&self) -> Value {
        let mut m: Map<String, Value> = self
            .state
            .iter()
            .map(|(k, v)| (k.clone(), v.to_value()))
            .collect();
        if let Some(i) = &self.interrupts {
            m.insert("__interrupt__".into(), i.clone());
        }
        Value::Object(m)
    }
}

impl PartialEq for SharedValues {
    fn eq(&self, other: &Self) -> bool {
        self.to_value() == other.to_value()
    }
}

/// Serializes a channel's value as its JSON (a list straight from its shared items).
pub struct ChannelJson<'a>(pub &'a crate::checkpoint::ChannelValue);

impl Serialize for ChannelJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use crate::checkpoint::ChannelValue;
        match self.0 {
            ChannelValue::Value(v) => v.serialize(s),
            ChannelValue::List(items) => s.collect_seq(items.iter().map(|v| &**v)),
        }
    }
}

impl Serialize for SharedValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let len = self.state.len() + usize::from(self.interrupts.is_some());
        let mut m = s.serialize_map(Some(len))?;
        for (k, v) in &self.state {
            m.serialize_entry(k, &ChannelJson(v))?;
        }
        if let Some(i) = &self.interrupts {
            m.serialize_entry("__interrupt__", i)?;
        }
        m.end()
    }
}

impl StreamPart {
    /// The payload as JSON, whichever form it is in.
    pub fn into_value(self) -> Value {
        match self.shared {
            Some(shared) => shared.to_value(),
            None => self.data,
        }
    }
}

impl StreamPart {
    /// SSE event name: `mode` or `mode|ns1|ns2`.
    pub fn event_name(&self) -> String {
        if self.ns.is_empty() {
            self.mode.as_str().to_string()
        } else {
            format!("{}|{}", self.mode.as_str(), self.ns.join("|"))
        }
    }
}

/// Receives stream output, synchronously and in order.
pub type StreamSink = Arc<dyn Fn(StreamPart) + Send + Sync>;

/// Static breakpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Interrupts {
    /// None.
    #[default]
    None,
    /// Every node (`"*"` on the wire).
    All,
    /// These nodes.
    Nodes(Vec<String>),
}

impl Interrupts {
    /// Whether `node` has a breakpoint.
    pub fn matches(&self, node: &str) -> bool {
        match self {
            Interrupts::None => false,
            Interrupts::All => node != START,
            Interrupts::Nodes(ns) => ns.iter().any(|n| n == node),
        }
    }

    /// From the wire: `"*"`, a list of names, or null.
    pub fn from_value(v: &Value) -> Self {
        match v {
            Value::String(s) if s == "*" => Interrupts::All,
            Value::Array(items) => {
                let names: Vec<String> = items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                if names.iter().any(|n| n == "*") {
                    Interrupts::All
                } else if names.is_empty() {
                    Interrupts::None
                } else {
                    Interrupts::Nodes(names)
                }
            }
            _ => Interrupts::None,
        }
    }
}

/// Configuration of one run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Thread.
    pub thread_id: String,
    /// Run from this (older) checkpoint: fork.
    pub checkpoint_id: Option<String>,
    /// Run id (stored in checkpoint metadata as `run_id` when absent from `metadata`).
    pub run_id: String,
    /// Max supersteps (default 25).
    pub recursion_limit: usize,
    /// Passed to nodes and echoed in checkpoint configs.
    pub configurable: Map<String, Value>,
    /// Run metadata: merged into checkpoint metadata, messages/events/tasks metadata.
    pub metadata: Map<String, Value>,
    /// Breakpoints before nodes.
    pub interrupt_before: Interrupts,
    /// Breakpoints after nodes.
    pub interrupt_after: Interrupts,
    /// Only these modes are produced.
    pub stream_modes: Vec<StreamMode>,
    /// Emit subgraph output (with ns).
    pub subgraphs: bool,
    /// Materialize [`RunOutcome::values`] (default). A caller that reads the final state from
    /// [`RunOutcome::state`] (or not at all) turns it off: building the values is O(state).
    pub output_values: bool,
    /// `values` parts carry the state in its shared form ([`StreamPart::shared`], `data`
    /// null) instead of a JSON copy: for a caller that serializes them itself (off by default).
    pub shared_values: bool,
    /// The run's thread outlives it: keep the id index of its final message lists for the
    /// next run that loads them ([`crate::messages::MessageList::shared`]; off by default).
    pub keep_message_index: bool,
}

impl RunConfig {
    /// Defaults for `thread_id` / `run_id`: limit 25, no modes, no breakpoints.
    pub fn new(thread_id: impl Into<String>, run_id: impl Into<String>) -> Self {
        Self {
            thread_id: thread_id.into(),
            checkpoint_id: None,
            run_id: run_id.into(),
            recursion_limit: 25,
            configurable: Map::new(),
            metadata: Map::new(),
            interrupt_before: Interrupts::None,
            interrupt_after: Interrupts::None,
            stream_modes: Vec::new(),
            subgraphs: false,
            output_values: true,
            shared_values: false,
            keep_message_index: false,
        }
    }
}

/// Input of a run.
#[derive(Clone, Debug)]
pub enum RunInput {
    /// New input (state update through `__start__`).
    Values(Value),
    /// Resume / update / goto.
    Command(Command),
    /// Continue from a breakpoint or after an error.
    Null,
}

/// Result of a run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// Final state values (`null` when the run's config turned `output_values` off).
    pub values: Value,
    /// Final state in the engine's shared form (state keys only; O(channels) to clone).
    pub state: std::collections::BTreeMap<String, crate::ChannelValue>,
    /// Pending interrupts (non-empty = paused by `interrupt()`).
    pub interrupts: Vec<Interrupt>,
    /// Nodes that would run next (non-empty after a breakpoint or interrupt).
    pub next: Vec<String>,
    /// The latest checkpoint.
    pub checkpoint: Option<CheckpointRef>,
}

/// A failed run: kind (Python exception class) + message.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphError {
    /// e.g. `ValueError`, `GraphRecursionError`, `CancelledError`, `InvalidUpdateError`.
    pub kind: String,
    /// Message text.
    pub message: String,
}

impl GraphError {
    /// New error.
    pub fn new(kind: &str, message: impl Into<String>) -> Self {
        Self {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for GraphError {}

impl From<crate::checkpoint::CheckpointError> for GraphError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        GraphError::new("CheckpointError", e.to_string())
    }
}

/// Errors of [`crate::StateGraph::compile`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// A node name is used twice.
    #[error("Node `{0}` already present.")]
    DuplicateNode(String),
    /// A reserved or invalid node name.
    #[error("Node name `{0}` is reserved or invalid")]
    InvalidName(String),
    /// An edge references an unknown node.
    #[error("Found edge referencing unknown node `{0}`")]
    UnknownNode(String),
    /// Nothing starts from START.
    #[error("Graph must have an entrypoint: add at least one edge from START to another node")]
    NoEntryPoint,
    /// Other invalid structure.
    #[error("{0}")]
    Invalid(String),
}

/// Reference to a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointRef {
    /// Thread.
    pub thread_id: String,
    /// Namespace.
    pub checkpoint_ns: String,
    /// Id.
    pub checkpoint_id: String,
}

fn ser_ref<S: Serializer>(r: &Option<CheckpointRef>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        None => s.serialize_none(),
        Some(r) => json!({"checkpoint_id": r.checkpoint_id, "thread_id": r.thread_id, "checkpoint_ns": r.checkpoint_ns}).serialize(s),
    }
}

fn ser_interrupts<S: Serializer>(v: &[Interrupt], s: S) -> Result<S::Ok, S::Error> {
    Value::Array(
        v.iter()
            .map(|i| json!({"id": i.id, "value": i.value}))
            .collect(),
    )
    .serialize(s)
}

/// A pending task of a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct TaskSnapshot {
    /// Task id.
    pub id: String,
    /// Node name.
    pub name: String,
    /// `["__pregel_pull", name]` or `["__pregel_push", i]`.
    pub path: Value,
    /// Python repr of the error (`ValueError('boom')`), if the task failed.
    pub error: Option<String>,
    /// Interrupts raised by the task.
    #[serde(serialize_with = "ser_interrupts")]
    pub interrupts: Vec<Interrupt>,
    /// For subgraph tasks: `{"thread_id", "checkpoint_ns"}` of the subgraph's checkpoints.
    pub checkpoint: Option<Value>,
    /// Subgraph state snapshot when asked for subgraphs, else null.
    pub state: Option<Value>,
    /// The task's writes, when it completed.
    pub result: Option<Value>,
}

/// State of a thread at a checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct StateSnapshot {
    /// State values.
    pub values: Value,
    /// Next nodes.
    pub next: Vec<String>,
    /// Pending tasks.
    pub tasks: Vec<TaskSnapshot>,
    /// Checkpoint metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Checkpoint timestamp.
    pub created_at: Option<String>,
    /// This checkpoint.
    #[serde(serialize_with = "ser_ref")]
    pub checkpoint: Option<CheckpointRef>,
    /// Its parent.
    #[serde(serialize_with = "ser_ref")]
    pub parent_checkpoint: Option<CheckpointRef>,
    /// All pending interrupts.
    #[serde(serialize_with = "ser_interrupts")]
    pub interrupts: Vec<Interrupt>,
    /// Id of `checkpoint`.
    pub checkpoint_id: Option<String>,
    /// Id of `parent_checkpoint`.
    pub parent_checkpoint_id: Option<String>,
}

impl StateSnapshot {
    /// The snapshot of a thread without checkpoints.
    pub fn empty() -> Self {
        Self {
            values: json!({}),
            next: Vec::new(),
            tasks: Vec::new(),
            metadata: None,
            created_at: None,
            checkpoint: None,
            parent_checkpoint: None,
            interrupts: Vec::new(),
            checkpoint_id: None,
            parent_checkpoint_id: None,
        }
    }

    /// As JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_goto_wire_forms() {
        let c: Command = serde_json::from_value(json!({"resume": "x", "goto": "a"})).unwrap();
        assert_eq!(c.goto, vec![Route::to("a")]);
        assert_eq!(c.resume, Some(json!("x")));
        let c: Command =
            serde_json::from_value(json!({"goto": ["a", {"node": "b", "input": {"k": 1}}]}))
                .unwrap();
        assert_eq!(
            c.goto[1],
            Route::Send {
                node: "b".into(),
                arg: json!({"k": 1})
            }
        );
        let c: Command =
            serde_json::from_value(json!({"goto": {"node": "b", "input": 2}, "update": {"x": 1}}))
                .unwrap();
        assert_eq!(c.goto.len(), 1);
        assert_eq!(c.update, Some(json!({"x": 1})));
        let c: Command = serde_json::from_value(json!({})).unwrap();
        assert!(c.goto.is_empty() && c.resume.is_none());
    }

    #[test]
    fn stream_mode_names() {
        assert_eq!(
            StreamMode::parse("messages-tuple"),
            Some(StreamMode::Messages)
        );
        assert_eq!(StreamMode::parse("nope"), None);
        let p = StreamPart {
            ns: vec!["child:1".into()],
            mode: StreamMode::Values,
            data: Value::Null,
            shared: None,
        };
        assert_eq!(p.event_name(), "values|child:1");
        assert_eq!(Interrupts::from_value(&json!("*")), Interrupts::All);
        assert_eq!(
            Interrupts::from_value(&json!(["a"])),
            Interrupts::Nodes(vec!["a".into()])
        );
    }

    #[test]
    fn shared_values_serialize_to_the_bytes_of_their_json() {
        use crate::checkpoint::ChannelValue;
        let state = vec![
            (
                "title".to_string(),
                ChannelValue::from_value(json!("t"), false),
            ),
            (
                "messages".to_string(),
                ChannelValue::from_value(json!([{"z": 1, "a": "x\"y"}, "two"]), true),
            ),
            (
                "n".to_string(),
                ChannelValue::from_value(json!(null), false),
            ),
        ];
        for interrupts in [None, Some(json!([{"id": "i", "value": 1}]))] {
            let v = SharedValues {
                state: state.clone(),
                interrupts,
            };
            let direct = serde_json::to_string(&v).unwrap();
            assert_eq!(direct, serde_json::to_string(&v.to_value()).unwrap());
            assert!(
                direct.starts_with(r#"{"title":"t","messages":[{"z":1"#),
                "{direct}"
            );
        }
    }
}
