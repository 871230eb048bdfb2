//! The run-create request body (`POST /threads/{id}/runs[/stream|/wait]`, `POST /runs[...]`),
//! parsed from JSON into typed options. Unknown keys are ignored (as the reference server does);
//! known keys with a wrong type or value are rejected with a message naming the field.

use antler_store::{MultitaskStrategy, Run};
use serde_json::{Map, Value};

use crate::RuntimeError;

/// The stream modes a client may ask for, in wire spelling.
pub const STREAM_MODES: &[&str] = &[
    "values",
    "messages",
    "messages-tuple",
    "updates",
    "events",
    "debug",
    "custom",
    "tasks",
    "checkpoints",
];

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
    /// Requested stream modes, wire spelling, deduplicated, order kept; default `["values"]`.
    pub stream_mode: Vec<String>,
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

impl RunCreate {
    /// Parses and validates a run-create body.
    pub fn parse(body: &Value) -> Result<Self, RuntimeError> {
        let Value::Object(body) = body else {
            return Err(RuntimeError::Invalid(
                "Request body must be a JSON object".into(),
            ));
        };
        let assistant_id = match body.get("assistant_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) => return Err(invalid("assistant_id", "must not be empty")),
            None | Some(Value::Null) => {
                return Err(RuntimeError::Invalid(
                    "\"assistant_id\" is a required property".into(),
                ));
            }
            Some(other) => {
                return Err(invalid(
                    "assistant_id",
                    format!("{other} is not of type \"string\""),
                ));
            }
        };
        let input = match body.get("input") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.clone()),
            Some(other) => {
                return Err(invalid(
                    "input",
                    format!("{other} is not of type \"object\""),
                ));
            }
        };
        let command = match body.get("command") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => {
                return Err(invalid(
                    "command",
                    format!("{other} is not of type \"object\""),
                ));
            }
        };
        let mut checkpoint_id = opt_str(body, "checkpoint_id")?;
        if let Some(cp) = opt_object(body, "checkpoint")?
            && let Some(Value::String(id)) = cp.get("checkpoint_id")
        {
            checkpoint_id = Some(id.clone());
        }
        let metadata = opt_object(body, "metadata")?.unwrap_or_default();
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
        let context = opt_object(body, "context")?;
        let webhook = opt_str(body, "webhook")?;
        if let Some(url) = &webhook
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("webhook", "must be an http(s) URL"));
        }
        let stream_mode = match body.get("stream_mode") {
            None | Some(Value::Null) => vec!["values".to_string()],
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    let Some(s) = item.as_str() else {
                        return Err(invalid("stream_mode", format!("{item} is not a string")));
                    };
                    if !out.iter().any(|m: &String| m == s) {
                        out.push(s.to_string());
                    }
                }
                out
            }
            Some(other) => {
                return Err(invalid(
                    "stream_mode",
                    format!("{other} is not a string or a list of strings"),
                ));
            }
        };
        for m in &stream_mode {
            if !STREAM_MODES.contains(&m.as_str()) {
                return Err(RuntimeError::Invalid(format!(
                    "\"{m}\" is not a valid stream_mode; expected one of: {}",
                    STREAM_MODES.join(", ")
                )));
            }
        }
        let on_disconnect = match opt_str(body, "on_disconnect")?.as_deref() {
            None | Some("cancel") => OnDisconnect::Cancel,
            Some("continue") => OnDisconnect::Continue,
            Some(other) => {
                return Err(invalid(
                    "on_disconnect",
                    format!("\"{other}\" is not one of \"cancel\", \"continue\""),
                ));
            }
        };
        let multitask_strategy = match opt_str(body, "multitask_strategy")? {
            None => None,
            Some(s) => Some(MultitaskStrategy::parse(&s).ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "\"{s}\" is not one of \"reject\", \"rollback\", \"interrupt\", \"enqueue\""
                ))
            })?),
        };
        let if_not_exists_create = match opt_str(body, "if_not_exists")?.as_deref() {
            None | Some("reject") => false,
            Some("create") => true,
            Some(other) => {
                return Err(invalid(
                    "if_not_exists",
                    format!("\"{other}\" is not one of \"create\", \"reject\""),
                ));
            }
        };
        let after_seconds = match body.get("after_seconds") {
            None | Some(Value::Null) => 0.0,
            Some(v) => match v.as_f64() {
                Some(n) if n >= 0.0 && n.is_finite() && n <= 86_400.0 * 7.0 => n,
                _ => {
                    return Err(invalid(
                        "after_seconds",
                        format!("{v} is not a number between 0 and 604800"),
                    ));
                }
            },
        };
        let on_completion_delete = match opt_str(body, "on_completion")?.as_deref() {
            None | Some("delete") => true,
            Some("keep") => false,
            Some(other) => {
                return Err(invalid(
                    "on_completion",
                    format!("\"{other}\" is not one of \"delete\", \"keep\""),
                ));
            }
        };
        let durability = opt_str(body, "durability")?.unwrap_or_else(|| "async".to_string());
        if !["sync", "async", "exit"].contains(&durability.as_str()) {
            return Err(invalid(
                "durability",
                format!("\"{durability}\" is not one of \"sync\", \"async\", \"exit\""),
            ));
        }
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
            if_not_exists_create,
            after_seconds,
            on_completion_delete,
            durability,
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
    use serde_json::json;

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
