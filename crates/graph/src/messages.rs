//! LangChain message JSON: constructors, coercion of loose shapes (`{"role": ...}`, LangChain
//! dicts, bare strings) into the canonical serialized form the LangGraph API emits, and the
//! `add_messages` reducer on persistent vectors.
//!
//! Canonical key order: `content, additional_kwargs, response_metadata, type, name, id`, then for
//! `ai`: `tool_calls, invalid_tool_calls, usage_metadata`; for `AIMessageChunk` additionally
//! `tool_call_chunks, chunk_position`; for `tool`: `tool_call_id, artifact, status`.

use std::sync::Arc;

use serde_json::{Map, Value, json};

/// Id of a `RemoveMessage` that removes every message.
pub const REMOVE_ALL_MESSAGES: &str = "__remove_all__";

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn base(content: Value, kind: &str, id: Option<String>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("content".into(), content);
    m.insert("additional_kwargs".into(), json!({}));
    m.insert("response_metadata".into(), json!({}));
    m.insert("type".into(), json!(kind));
    m.insert("name".into(), Value::Null);
    m.insert("id".into(), id.map(Value::String).unwrap_or(Value::Null));
    m
}

/// A human message with a fresh id.
pub fn human_message(content: impl Into<Value>) -> Value {
    Value::Object(base(content.into(), "human", Some(new_id())))
}

/// A system message with a fresh id.
pub fn system_message(content: impl Into<Value>) -> Value {
    Value::Object(base(content.into(), "system", Some(new_id())))
}

/// An AI message with a fresh id.
pub fn ai_message(content: impl Into<Value>) -> Value {
    ai_message_with_id(new_id(), content)
}

/// An AI message with the given id.
pub fn ai_message_with_id(id: impl Into<String>, content: impl Into<Value>) -> Value {
    let mut m = base(content.into(), "ai", Some(id.into()));
    m.insert("tool_calls".into(), json!([]));
    m.insert("invalid_tool_calls".into(), json!([]));
    m.insert("usage_metadata".into(), Value::Null);
    Value::Object(m)
}

/// A streamed AI message chunk (`AIMessageChunk`); `last` marks the final chunk
/// (`chunk_position: "last"`).
pub fn ai_chunk(id: impl Into<String>, content: impl Into<Value>, last: bool) -> Value {
    let mut m = base(content.into(), "AIMessageChunk", Some(id.into()));
    m.insert("tool_calls".into(), json!([]));
    m.insert("invalid_tool_calls".into(), json!([]));
    m.insert("usage_metadata".into(), Value::Null);
    m.insert("tool_call_chunks".into(), json!([]));
    m.insert(
        "chunk_position".into(),
        if last { json!("last") } else { Value::Null },
    );
    Value::Object(m)
}

/// A tool message answering `tool_call_id`.
pub fn tool_message(content: impl Into<Value>, tool_call_id: &str) -> Value {
    let mut m = base(content.into(), "tool", Some(new_id()));
    m.insert("tool_call_id".into(), json!(tool_call_id));
    m.insert("artifact".into(), Value::Null);
    m.insert("status".into(), json!("success"));
    Value::Object(m)
}

/// A `RemoveMessage` for `id` (use [`REMOVE_ALL_MESSAGES`] to clear the list).
pub fn remove_message(id: &str) -> Value {
    Value::Object(base(json!(""), "remove", Some(id.to_string())))
}

/// The canonical `type` of a message value, if it is one.
pub fn message_type(m: &Value) -> Option<&str> {
    m.get("type").and_then(Value::as_str)
}

/// The id of a message value, if any.
pub fn message_id(m: &Value) -> Option<&str> {
    m.get("id").and_then(Value::as_str)
}

/// Whether `m` is a human message.
pub fn is_human(m: &Value) -> bool {
    message_type(m) == Some("human")
}

/// Text of a message's content: the string, or the concatenated `text` parts of a list.
pub fn content_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_string),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(""),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Error of message coercion (Python's `ValueError` text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct MessageError(pub String);

fn canonical_type(raw: &str) -> Option<&'static str> {
    Some(match raw {
        "human" | "user" | "HumanMessage" | "HumanMessageChunk" => "human",
        "ai" | "assistant" | "AIMessage" | "AIMessageChunk" => "ai",
        "system" | "developer" | "SystemMessage" | "SystemMessageChunk" => "system",
        "tool" | "ToolMessage" | "ToolMessageChunk" => "tool",
        "remove" | "RemoveMessage" => "remove",
        "function" => "function",
        "chat" => "chat",
        _ => return None,
    })
}

/// Whether `o` already has the canonical shape (fast path of coercion).
fn is_canonical(o: &Map<String, Value>) -> bool {
    let base = matches!(o.get("id"), Some(Value::String(id)) if !id.is_empty())
        && o.contains_key("content")
        && o.get("additional_kwargs").is_some_and(Value::is_object)
        && o.get("response_metadata").is_some_and(Value::is_object)
        && o.contains_key("name");
    base && match o.get("type").and_then(Value::as_str) {
        Some("human" | "system") => true,
        Some("ai") => {
            o.contains_key("tool_calls")
                && o.contains_key("invalid_tool_calls")
                && o.contains_key("usage_metadata")
        }
        Some("tool") => o.contains_key("tool_call_id") && o.contains_key("status"),
        _ => false,
    }
}

/// Coerces one message-like value into the canonical LangChain JSON shape (chunks become whole
/// messages, as `add_messages` does). Assigns a uuid4 id when missing.
pub fn coerce_message(v: &Value) -> Result<Value, MessageError> {
    if let Value::Object(o) = v
        && is_canonical(o)
    {
        return Ok(v.clone());
    }
    match v {
        Value::String(s) => Ok(human_message(s.clone())),
        Value::Object(o) => {
            // LangChain "constructor" serialization: {"lc":1,"type":"constructor","id":[...,"AIMessage"],"kwargs":{...}}
            if o.get("lc").is_some()
                && let (Some(Value::Array(path)), Some(Value::Object(kwargs))) =
                    (o.get("id"), o.get("kwargs"))
            {
                let class = path.last().and_then(Value::as_str).unwrap_or("");
                let mut inner = kwargs.clone();
                inner.insert("type".into(), json!(class));
                return coerce_message(&Value::Object(inner));
            }
            let raw_type = o
                .get("type")
                .and_then(Value::as_str)
                .or_else(|| o.get("role").and_then(Value::as_str))
                .ok_or_else(|| {
                    MessageError(format!(
                        "Message dict must contain 'role' and 'content' keys, got {}",
                        v
                    ))
                })?;
            let kind = canonical_type(raw_type).ok_or_else(|| {
                MessageError(format!(
                    "Unexpected message type: '{raw_type}'. Use one of 'human', 'user', 'ai', 'assistant', 'function', 'tool', 'system', or 'developer'."
                ))
            })?;
            let id = match o.get("id") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => new_id(),
            };
            let content = o.get("content").cloned().unwrap_or(json!(""));
            let mut m = base(content, kind, Some(id));
            for key in ["additional_kwargs", "response_metadata"] {
                if let Some(val @ Value::Object(_)) = o.get(key) {
                    m.insert(key.into(), val.clone());
                }
            }
            if let Some(name) = o.get("name") {
                m.insert("name".into(), name.clone());
            }
            match kind {
                "ai" => {
                    m.insert(
                        "tool_calls".into(),
                        o.get("tool_calls").cloned().unwrap_or(json!([])),
                    );
                    m.insert(
                        "invalid_tool_calls".into(),
                        o.get("invalid_tool_calls").cloned().unwrap_or(json!([])),
                    );
                    m.insert(
                        "usage_metadata".into(),
                        o.get("usage_metadata").cloned().unwrap_or(Value::Null),
                    );
                }
                "tool" => {
                    m.insert(
                        "tool_call_id".into(),
                        o.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    );
                    m.insert(
                        "artifact".into(),
                        o.get("artifact").cloned().unwrap_or(Value::Null),
                    );
                    m.insert(
                        "status".into(),
                        o.get("status").cloned().unwrap_or(json!("success")),
                    );
                }
                _ => {}
            }
            const SKIP: &[&str] = &[
                "role",
                "tool_call_chunks",
                "chunk_position",
                "lc",
                "example",
            ];
            for (k, val) in o {
                if !m.contains_key(k) && !SKIP.contains(&k.as_str()) {
                    m.insert(k.clone(), val.clone());
                }
            }
            Ok(Value::Object(m))
        }
        other => Err(MessageError(format!(
            "Unsupported message type: {}",
            match other {
                Value::Null => "NoneType",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::Array(_) => "list",
                _ => "object",
            }
        ))),
    }
}

/// Coerces a single message or a list of messages.
pub fn coerce_messages(v: &Value) -> Result<Vec<Value>, MessageError> {
    match v {
        Value::Array(items) => items.iter().map(coerce_message).collect(),
        Value::Null => Ok(Vec::new()),
        single => Ok(vec![coerce_message(single)?]),
    }
}

/// A message list in shared form plus an id -> position index.
#[derive(Clone, Debug, Default)]
pub struct MessageList {
    /// The messages in order.
    pub items: imbl::Vector<Arc<Value>>,
    /// id -> position in `items`.
    index: imbl::HashMap<Arc<str>, usize>,
}

/// Message lists this process saved recently, by the identity of their items (the address of
/// the last message and the length; a hit is confirmed with `ptr_eq`). A run loading a thread
/// whose list was saved here gets the same shared vector back from the checkpointer's cache,
/// and reuses its index instead of rebuilding it: O(1) instead of O(messages) per run.
static RECENT: std::sync::LazyLock<parking_lot::Mutex<Recent>> =
    std::sync::LazyLock::new(Default::default);

#[derive(Default)]
struct Recent {
    lists: std::collections::HashMap<(usize, usize), MessageList>,
    /// Messages held by `lists` (they keep the lists alive).
    weight: usize,
}

/// Most lists kept in [`RECENT`], and most messages across them: it is emptied when either is
/// reached (a miss only costs a rebuild), so what it keeps alive stays bounded.
const RECENT_CAP: usize = 1024;
const RECENT_WEIGHT_CAP: usize = 200_000;

fn identity(items: &imbl::Vector<Arc<Value>>) -> Option<(usize, usize)> {
    let last = items.last()?;
    Some((Arc::as_ptr(last) as usize, items.len()))
}

impl MessageList {
    /// [`MessageList::new`], reusing the index of a list this process saved with the very
    /// same items (see [`MessageList::remember`]).
    pub fn shared(items: imbl::Vector<Arc<Value>>) -> Self {
        if let Some(key) = identity(&items)
            && let Some(hit) = RECENT.lock().lists.get(&key)
            && hit.items.ptr_eq(&items)
        {
            return hit.clone();
        }
        Self::new(items)
    }

    /// Keeps this list (cheap: persistent structures) for a later [`MessageList::shared`].
    pub fn remember(&self) {
        let Some(key) = identity(&self.items) else {
            return;
        };
        let mut recent = RECENT.lock();
        let n = self.items.len();
        if recent.lists.len() >= RECENT_CAP || recent.weight + n > RECENT_WEIGHT_CAP {
            recent.lists.clear();
            recent.weight = 0;
        }
        if let Some(old) = recent.lists.insert(key, self.clone()) {
            recent.weight -= old.items.len();
        }
        recent.weight += n;
    }

    /// Builds the index for `items` (O(n)).
    pub fn new(items: imbl::Vector<Arc<Value>>) -> Self {
        let index = items
            .iter()
            .enumerate()
            .filter_map(|(i, m)| message_id(m).map(|id| (Arc::<str>::from(id), i)))
            .collect();
        Self { items, index }
    }

    /// Whether a message with `id` is present.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// LangChain's `add_messages`: coerces `right`, replaces same ids, appends new ones, applies
    /// `RemoveMessage` (and remove-all). Cost O(k log n) for k new messages unless something is
    /// removed.
    pub fn add(&mut self, right: &Value) -> Result<(), MessageError> {
        let mut incoming = coerce_messages(right)?;
        if let Some(pos) = incoming.iter().rposition(|m| {
            message_type(m) == Some("remove") && message_id(m) == Some(REMOVE_ALL_MESSAGES)
        }) {
            let rest = incoming.split_off(pos + 1);
            *self = MessageList::default();
            incoming = rest;
        }
        for m in incoming {
            let id = message_id(&m).unwrap_or_default().to_string();
            if message_type(&m) == Some("remove") {
                match self.index.get(id.as_str()).copied() {
                    Some(pos) => {
                        self.items.remove(pos);
                        // positions after `pos` shifted: rebuild the index
                        self.reindex();
                    }
                    None => {
                        return Err(MessageError(format!(
                            "Attempting to delete a message with an ID that doesn't exist ('{id}')"
                        )));
                    }
                }
                continue;
            }
            match self.index.get(id.as_str()).copied() {
                Some(pos) => {
                    self.items.set(pos, Arc::new(m));
                }
                None => {
                    self.index.insert(Arc::from(id), self.items.len());
                    self.items.push_back(Arc::new(m));
                }
            }
        }
        Ok(())
    }

    fn reindex(&mut self) {
        *self = MessageList::new(std::mem::take(&mut self.items));
    }

    /// Materializes the list as JSON.
    pub fn to_value(&self) -> Value {
        Value::Array(self.items.iter().map(|m| (**m).clone()).collect())
    }
}

/// Pure-JSON `add_messages` (convenience; the engine uses [`MessageList::add`]).
pub fn add_messages(left: &Value, right: &Value) -> Result<Value, MessageError> {
    let existing = coerce_messages(left)?;
    let mut list = MessageList::new(existing.into_iter().map(Arc::new).collect());
    list.add(right)?;
    Ok(list.to_value())
}

/// Python `str()` of a JSON value: strings unquoted, dicts/lists in Python repr
/// (`{'approved': True}`).
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

/// Python `repr()` of a JSON value.
pub fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && n.is_f64()
                && f.fract() == 0.0
                && f.is_finite()
            {
                format!("{f:.1}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) => {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{s}\"")
            } else {
                format!(
                    "'{}'",
                    s.replace('\\', "\\\\")
                        .replace('\'', "\\'")
                        .replace('\n', "\\n")
                )
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coerces_role_shorthand_in_canonical_order() {
        let m = coerce_message(&json!({"role": "user", "content": "hi"})).unwrap();
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "content",
                "additional_kwargs",
                "response_metadata",
                "type",
                "name",
                "id"
            ]
        );
        assert_eq!(m["type"], "human");
        assert_eq!(m["id"].as_str().unwrap().len(), 36);
        let a = coerce_message(&json!({"role": "assistant", "content": "yo", "id": "x"})).unwrap();
        assert_eq!(
            a,
            json!({"content":"yo","additional_kwargs":{},"response_metadata":{},"type":"ai","name":null,"id":"x","tool_calls":[],"invalid_tool_calls":[],"usage_metadata":null})
        );
        let c = coerce_message(&ai_chunk("c", "tok", true)).unwrap();
        assert_eq!(c["type"], "ai");
        assert!(c.get("chunk_position").is_none());
        assert!(coerce_message(&json!({"role": "wizard", "content": "x"})).is_err());
        assert!(coerce_message(&json!(3)).is_err());
    }

    #[test]
    fn add_messages_replaces_removes_and_clears() {
        let left = json!([{"type": "human", "content": "a", "id": "1"}, {"type": "ai", "content": "b", "id": "2"}]);
        let out = add_messages(&left, &json!({"type": "ai", "content": "B", "id": "2"})).unwrap();
        assert_eq!(out.as_array().unwrap().len(), 2);
        assert_eq!(out[1]["content"], "B");
        let out = add_messages(&out, &remove_message("1")).unwrap();
        assert_eq!(out.as_array().unwrap().len(), 1);
        assert_eq!(out[0]["id"], "2");
        assert!(add_messages(&out, &remove_message("nope")).is_err());
        let out = add_messages(
            &out,
            &json!([remove_message(REMOVE_ALL_MESSAGES), {"role": "user", "content": "fresh", "id": "9"}]),
        )
        .unwrap();
        assert_eq!(out.as_array().unwrap().len(), 1);
        assert_eq!(out[0]["id"], "9");
    }

    #[test]
    fn python_str_matches_python() {
        assert_eq!(python_str(&json!({"approved": true})), "{'approved': True}");
        assert_eq!(python_str(&json!("yes please")), "yes please");
        assert_eq!(python_str(&json!([1, null, "a"])), "[1, None, 'a']");
        assert_eq!(python_str(&json!(1.5)), "1.5");
    }
}
