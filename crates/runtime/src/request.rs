//! The run-create request body (`POST /threads/{id}/runs[/stream|/wait]`, `POST /runs[...]`),
//! parsed from JSON into typed options. Unknown keys are ignored (as the reference server does);
//! known keys with a wrong type or value are rejected with a message naming the field.

use antler_store::{MultitaskStrategy, Run};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::RuntimeError;

/// A stream mode a client may ask for, in its wire spelling (`stream_mode` of a run create,
/// the `stream_mode` filter of a join). Parsed once at the edge; the engine modes it needs
/// and the SSE event names it produces derive from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamMode {
    /// Full state after each step.
    Values,
    /// Message chunks, re-shaped into `messages/metadata|partial|complete` events.
    Messages,
    /// Message chunks as `[message, metadata]` tuples (event `messages`).
    MessagesTuple,
    /// `{node: update}` per task.
    Updates,
    /// astream_events v2 records.
    Events,
    /// checkpoint + task + task_result records.
    Debug,
    /// Values written by the graph's nodes.
    Custom,
    /// Task start / result records.
    Tasks,
    /// Checkpoint records.
    Checkpoints,
}

impl StreamMode {
    /// Every mode, in the order the validation message lists them.
    pub const ALL: &'static [StreamMode] = &[
        StreamMode::Values,
        StreamMode::Messages,
        StreamMode::MessagesTuple,
        StreamMode::Updates,
        StreamMode::Events,
        StreamMode::Debug,
        StreamMode::Custom,
        StreamMode::Tasks,
        StreamMode::Checkpoints,
    ];

    /// The wire spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamMode::Values => "values",
            StreamMode::Messages => "messages",
            StreamMode::MessagesTuple => "messages-tuple",
            StreamMode::Updates => "updates",
            StreamMode::Events => "events",
            StreamMode::Debug => "debug",
            StreamMode::Custom => "custom",
            StreamMode::Tasks => "tasks",
            StreamMode::Checkpoints => "checkpoints",
        }
    }

    /// Parses the wire spelling (`None` when it is no stream mode).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|m| m.as_str() == s)
    }

    /// The engine mode that produces this mode's events.
    pub fn engine(&self) -> antler_graph::StreamMode {
        use antler_graph::StreamMode as Engine;
        match self {
            StreamMode::Values => Engine::Values,
            StreamMode::Messages | StreamMode::MessagesTuple => Engine::Messages,
            StreamMode::Updates => Engine::Updates,
            StreamMode::Events => Engine::Events,
            StreamMode::Debug => Engine::Debug,
            StreamMode::Custom => Engine::Custom,
            StreamMode::Tasks => Engine::Tasks,
            StreamMode::Checkpoints => Engine::Checkpoints,
        }
    }

    /// The first part of the SSE event names this mode produces (`messages-tuple` events are
    /// named `messages`; `messages` adds `/partial` ...; subgraphs add `|<ns>`).
    pub fn event_name(&self) -> &'static str {
        self.engine().as_str()
    }
}

impl std::fmt::Display for StreamMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with a wire spelling.
impl PartialEq<&str> for StreamMode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A parsed run-create body.
#[derive(Clone, Debug)]
pub struct RunCreate {
    /// Assistant UUID or graph name.
    pub assistant_id: String,
    /// `input` (None when absent or null).
    pub input: Option<Value>,
    /// `command` (resume / update / goto).
    pub command: Option<Value>,
    /// Checkpoint to fork from.
    pub checkpoint_id: Option<String>,
    /// Run metadata supplied by the client.
    pub metadata: Map<String, Value>,
    /// `config` as sent (`configurable`, `recursion_limit`, `tags`, ...).
    pub config: Map<String, Value>,
    /// `context` as sent.
    pub context: Option<Map<String, Value>>,
    /// Webhook URL called when the run ends.
    pub webhook: Option<String>,
    /// Static breakpoints: None, `"*"`, or node names.
    pub interrupt_before: Option<Value>,
    /// Static breakpoints after nodes.
    pub interrupt_after: Option<Value>,
    /// Requested stream modes, deduplicated, order kept; default `["values"]`.
    pub stream_mode: Vec<StreamMode>,
    /// Emit subgraph events.
    pub stream_subgraphs: bool,
    /// Client asked for a resumable stream (every Antler stream is resumable).
    pub stream_resumable: bool,
    /// `cancel` (default for streams) or `continue`.
    pub on_disconnect: OnDisconnect,
    /// Feedback keys (stored in kwargs).
    pub feedback_keys: Option<Value>,
    /// None = server default.
    pub multitask_strategy: Option<MultitaskStrategy>,
    /// `create` creates a missing thread; `reject` (default) answers 404.
    pub if_not_exists_create: bool,
    /// Delay before the run starts.
    pub after_seconds: f64,
    /// Stateless runs: delete the temporary thread afterwards (default) or keep it.
    pub on_completion_delete: bool,
    /// Durability mode, stored in kwargs.
    pub durability: String,
    /// checkpoint_during, stored in kwargs.
    pub checkpoint_during: bool,
}

/// What happens to a run when its streaming client disconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDisconnect {
    /// Cancel the run (interrupt).
    Cancel,
    /// Let it finish.
    Continue,
}

fn invalid(field: &str, msg: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Invalid(format!("Invalid value for \"{field}\": {msg}"))
}

fn opt_str(body: &Map<String, Value>, field: &str) -> Result<Option<String>, RuntimeError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(field, format!("{other} is not of type \"string\""))),
    }
}

fn opt_bool(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, RuntimeError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid(
            field,
            format!("{other} is not of type \"boolean\""),
        )),
    }
}

fn opt_object(
    body: &Map<String, Value>,
    field: &str,
) -> Result<Option<Map<String, Value>>, RuntimeError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(other) => Err(invalid(field, format!("{other} is not of type \"object\""))),
    }
}

fn breakpoints(body: &Map<String, Value>, field: &str) -> Result<Option<Value>, RuntimeError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "*" => Ok(Some(Value::String(s.clone()))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok(Some(Value::Array(items.clone())))
        }
        Some(other) => Err(invalid(
            field,
            format!("{other} must be \"*\" or a list of node names"),
        )),
    }
}

/// `field`, a string that must be one of `choices` (absent or null: `None`).
fn one_of(
    body: &Map<String, Value>,
    field: &str,
    choices: &[&'static str],
) -> Result<Option<&'static str>, RuntimeError> {
    let Some(s) = opt_str(body, field)? else {
        return Ok(None);
    };
    match choices.iter().find(|c| **c == s) {
        Some(choice) => Ok(Some(*choice)),
        None => {
            let listed: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
            Err(invalid(
                field,
                format!("\"{s}\" is not one of {}", listed.join(", ")),
            ))
        }
    }
}

fn assistant_id(body: &Map<String, Value>) -> Result<String, RuntimeError> {
    match body.get("assistant_id") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(invalid("assistant_id", "must not be empty")),
        None | Some(Value::Null) => Err(RuntimeError::Invalid(
            "\"assistant_id\" is a required property".into(),
        )),
        Some(other) => Err(invalid(
            "assistant_id",
            format!("{other} is not of type \"string\""),
        )),
    }
}

/// `input`: an object or a list (absent or null: `None`).
fn input(body: &Map<String, Value>) -> Result<Option<Value>, RuntimeError> {
    match body.get("input") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ (Value::Object(_) | Value::Array(_))) => Ok(Some(v.clone())),
        Some(other) => Err(invalid(
            "input",
            format!("{other} is not of type \"object\""),
        )),
    }
}

/// `checkpoint_id`, or the `checkpoint_id` of a `checkpoint` object (which wins).
fn checkpoint_id(body: &Map<String, Value>) -> Result<Option<String>, RuntimeError> {
    let mut checkpoint_id = opt_str(body, "checkpoint_id")?;
    if let Some(cp) = opt_object(body, "checkpoint")?
        && let Some(Value::String(id)) = cp.get("checkpoint_id")
    {
        checkpoint_id = Some(id.clone());
    }
    Ok(checkpoint_id)
}

/// `config`, with a positive `recursion_limit` and an object `configurable` when present.
fn config(body: &Map<String, Value>) -> Result<Map<String, Value>, RuntimeError> {
    let config = opt_object(body, "config")?.unwrap_or_default();
    if let Some(v) = config.get("recursion_limit")
        && !v.is_null()
        && v.as_u64().is_none_or(|n| n == 0)
    {
        return Err(invalid(
            "config.recursion_limit",
            format!("{v} is not a positive integer"),
        ));
    }
    if let Some(v) = config.get("configurable")
        && !v.is_null()
        && !v.is_object()
    {
        return Err(invalid(
            "config.configurable",
            format!("{v} is not of type \"object\""),
        ));
    }
    Ok(config)
}

fn webhook(body: &Map<String, Value>) -> Result<Option<String>, RuntimeError> {
    let webhook = opt_str(body, "webhook")?;
    if let Some(url) = &webhook
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(invalid("webhook", "must be an http(s) URL"));
    }
    Ok(webhook)
}

/// `stream_mode`: one mode or a list of them, deduplicated in order; default `values`.
fn stream_modes(body: &Map<String, Value>) -> Result<Vec<StreamMode>, RuntimeError> {
    let names: Vec<&str> = match body.get("stream_mode") {
        None | Some(Value::Null) => return Ok(vec![StreamMode::Values]),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => {
            let mut names = Vec::with_capacity(items.len());
            for item in items {
                let Some(s) = item.as_str() else {
                    return Err(invalid("stream_mode", format!("{item} is not a string")));
                };
                names.push(s);
            }
            names
        }
        Some(other) => {
            return Err(invalid(
                "stream_mode",
                format!("{other} is not a string or a list of strings"),
            ));
        }
    };
    let mut modes = Vec::with_capacity(names.len());
    for name in names {
        let mode = StreamMode::parse(name).ok_or_else(|| {
            let expected: Vec<&str> = StreamMode::ALL.iter().map(StreamMode::as_str).collect();
            RuntimeError::Invalid(format!(
                "\"{name}\" is not a valid stream_mode; expected one of: {}",
                expected.join(", ")
            ))
        })?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    Ok(modes)
}

fn multitask_strategy(
    body: &Map<String, Value>,
) -> Result<Option<MultitaskStrategy>, RuntimeError> {
    let Some(s) = opt_str(body, "multitask_strategy")? else {
        return Ok(None);
    };
    MultitaskStrategy::parse(&s).map(Some).ok_or_else(|| {
        RuntimeError::Invalid(format!(
            "\"{s}\" is not one of \"reject\", \"rollback\", \"interrupt\", \"enqueue\""
        ))
    })
}

/// `after_seconds`: 0 to 7 days; default 0.
fn after_seconds(body: &Map<String, Value>) -> Result<f64, RuntimeError> {
    match body.get("after_seconds") {
        None | Some(Value::Null) => Ok(0.0),
        Some(v) => match v.as_f64() {
            Some(n) if n >= 0.0 && n.is_finite() && n <= 86_400.0 * 7.0 => Ok(n),
            _ => Err(invalid(
                "after_seconds",
                format!("{v} is not a number between 0 and 604800"),
            )),
        },
    }
}

impl RunCreate {
    /// Parses and validates a run-create body. Fields are checked in a fixed order, so the
    /// error names the first bad one.
    pub fn parse(body: &Value) -> Result<Self, RuntimeError> {
        let Value::Object(body) = body else {
            return Err(RuntimeError::Invalid(
                "Request body must be a JSON object".into(),
            ));
        };
        let assistant_id = assistant_id(body)?;
        let input = input(body)?;
        let command = opt_object(body, "command")?.map(Value::Object);
        let checkpoint_id = checkpoint_id(body)?;
        let metadata = opt_object(body, "metadata")?.unwrap_or_default();
        let config = config(body)?;
        let context = opt_object(body, "context")?;
        let webhook = webhook(body)?;
        let stream_mode = stream_modes(body)?;
        let on_disconnect = match one_of(body, "on_disconnect", &["cancel", "continue"])? {
            Some("continue") => OnDisconnect::Continue,
            _ => OnDisconnect::Cancel,
        };
        let multitask_strategy = multitask_strategy(body)?;
        let if_not_exists = one_of(body, "if_not_exists", &["create", "reject"])?;
        let after_seconds = after_seconds(body)?;
        let on_completion = one_of(body, "on_completion", &["delete", "keep"])?;
        let durability = one_of(body, "durability", &["sync", "async", "exit"])?;
        Ok(Self {
            assistant_id,
            input,
            command,
            checkpoint_id,
            metadata,
            config,
            context,
            webhook,
            interrupt_before: breakpoints(body, "interrupt_before")?,
            interrupt_after: breakpoints(body, "interrupt_after")?,
            stream_mode,
            stream_subgraphs: opt_bool(body, "stream_subgraphs")?.unwrap_or(false),
            stream_resumable: opt_bool(body, "stream_resumable")?.unwrap_or(false),
            on_disconnect,
            feedback_keys: body.get("feedback_keys").cloned().filter(|v| !v.is_null()),
            multitask_strategy,
            if_not_exists_create: if_not_exists == Some("create"),
            after_seconds,
            on_completion_delete: on_completion != Some("keep"),
            durability: durability.unwrap_or("async").to_string(),
            checkpoint_during: opt_bool(body, "checkpoint_during")?.unwrap_or(true),
        })
    }

    /// Rebuilds the request of a stored run from its `kwargs` (recovery of a run whose process
    /// died). The stored config already carries the run's effective `configurable`.
    pub fn from_run(run: &Run) -> Result<Self, RuntimeError> {
        let k = &run.kwargs;
        let field = |name: &str| k.get(name).cloned().unwrap_or(Value::Null);
        let mut body = Map::new();
        body.insert(
            "assistant_id".into(),
            Value::String(run.assistant_id.clone()),
        );
        for name in [
            "input",
            "command",
            "config",
            "context",
            "webhook",
            "interrupt_before",
            "interrupt_after",
            "stream_mode",
            "feedback_keys",
            "checkpoint_id",
            "on_completion",
            "durability",
            "checkpoint_during",
        ] {
            body.insert(name.into(), field(name));
        }
        body.insert("stream_subgraphs".into(), field("subgraphs"));
        body.insert("stream_resumable".into(), field("resumable"));
        // nobody is attached to a recovered run's stream any more
        body.insert("on_disconnect".into(), Value::String("continue".into()));
        let mut request = Self::parse(&Value::Object(body))?;
        request.multitask_strategy = Some(run.multitask_strategy);
        // the delay as requested, counted from the run's creation (the caller subtracts the
        // time already waited)
        request.after_seconds = k
            .pointer("/config/configurable/__after_seconds__")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(0.0);
        Ok(request)
    }

    /// One value of the user-supplied `configurable` map.
    pub fn configurable_value(&self, key: &str) -> Option<&Value> {
        self.config
            .get("configurable")
            .and_then(Value::as_object)
            .and_then(|c| c.get(key))
    }

    /// The user-supplied `configurable` map.
    pub fn configurable(&self) -> Map<String, Value> {
        self.config
            .get("configurable")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// JSON whose object keys are mostly the body's real fields, at any depth.
    fn body_like() -> impl Strategy<Value = Value> {
        let field = prop_oneof![
            Just("assistant_id"),
            Just("input"),
            Just("command"),
            Just("config"),
            Just("configurable"),
            Just("recursion_limit"),
            Just("context"),
            Just("metadata"),
            Just("stream_mode"),
            Just("stream_subgraphs"),
            Just("interrupt_before"),
            Just("interrupt_after"),
            Just("multitask_strategy"),
            Just("on_disconnect"),
            Just("on_completion"),
            Just("after_seconds"),
            Just("checkpoint"),
            Just("checkpoint_id"),
            Just("webhook"),
            Just("if_not_exists"),
            Just("resume"),
            Just("goto"),
            Just("update"),
            Just("durability"),
            Just("feedback_keys"),
            Just("messages"),
            Just("thread_id"),
            Just("x"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop_oneof![
                Just("echo"),
                Just("values"),
                Just("*"),
                Just(""),
                Just("reject"),
                Just("updates"),
                Just("-1"),
                Just("1e999")
            ]
            .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(field.clone(), inner, 0..6).prop_map(|m| {
                    Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any body a client sends is a run request or a 422 naming what is wrong; never a
        /// panic and never another kind of error.
        #[test]
        fn any_body_parses_or_is_invalid(mut body in body_like(), graph in any::<bool>()) {
            if graph && let Value::Object(m) = &mut body {
                m.insert("assistant_id".into(), json!("echo"));
            }
            match RunCreate::parse(&body) {
                Ok(_) | Err(RuntimeError::Invalid(_)) => {}
                Err(e) => prop_assert!(false, "{e:?}"),
            }
        }
    }

    #[test]
    fn parses_defaults() {
        let r = RunCreate::parse(&json!({"assistant_id": "echo"})).unwrap();
        assert_eq!(r.stream_mode, vec!["values"]);
        assert_eq!(r.on_disconnect, OnDisconnect::Cancel);
        assert!(r.multitask_strategy.is_none());
        assert!(r.on_completion_delete);
        assert_eq!(r.after_seconds, 0.0);
    }

    #[test]
    fn rejects_bad_values_with_field_names() {
        let cases = [
            json!({}),
            json!({"assistant_id": 3}),
            json!({"assistant_id": "echo", "stream_mode": "bogus"}),
            json!({"assistant_id": "echo", "multitask_strategy": "bogus"}),
            json!({"assistant_id": "echo", "after_seconds": -1}),
            json!({"assistant_id": "echo", "config": {"recursion_limit": "x"}}),
            json!({"assistant_id": "echo", "interrupt_before": 5}),
            json!({"assistant_id": "echo", "webhook": "ftp://x"}),
        ];
        for c in cases {
            let err = RunCreate::parse(&c).unwrap_err();
            assert!(matches!(err, RuntimeError::Invalid(_)), "{c}: {err:?}");
        }
    }

    #[test]
    fn stream_modes_are_deduplicated_in_order() {
        let r = RunCreate::parse(&json!({
            "assistant_id": "echo",
            "stream_mode": ["updates", "values", "updates", "messages-tuple"]
        }))
        .unwrap();
        assert_eq!(r.stream_mode, vec!["updates", "values", "messages-tuple"]);
    }
}
