//! Turns the engine's stream parts into wire events (SSE event name + JSON data).
//!
//! Rules (langgraph-peer.md §3): the event name is the stream mode, with `messages-tuple` sent as
//! `messages`; subgraph events append `|<ns>` parts; when the client asked for `messages` (and not
//! `messages-tuple`), message tuples are re-shaped into `messages/metadata`, `messages/partial`
//! (content accumulated so far) and `messages/complete`.

use std::collections::HashMap;

use antler_graph::{StreamMode as EngineMode, StreamPart};
use serde_json::{Map, Value, json};

use crate::StreamMode;

/// Maps the requested wire modes onto engine modes. `updates` is always included: the run
/// journal reads it (it is only published when the client asked for it).
pub fn engine_modes(requested: &[StreamMode]) -> Vec<EngineMode> {
    let mut out = vec![EngineMode::Updates];
    for mode in requested.iter().map(StreamMode::engine) {
        if !out.contains(&mode) {
            out.push(mode);
        }
    }
    out
}

fn with_ns(name: &str, ns: &[String]) -> String {
    if ns.is_empty() {
        name.to_string()
    } else {
        let mut s = name.to_string();
        for part in ns {
            s.push('|');
            s.push_str(part);
        }
        s
    }
}

/// Converts stream parts of one run into wire events, keeping the per-message accumulation state
/// that the `messages` (non-tuple) mode needs.
pub struct EventShaper {
    tuple_form: bool,
    want_updates: bool,
    seen: HashMap<String, Value>,
}

impl EventShaper {
    /// `requested` are the wire modes the client asked for.
    pub fn new(requested: &[StreamMode]) -> Self {
        let tuple_form = requested.contains(&StreamMode::MessagesTuple)
            || !requested.contains(&StreamMode::Messages);
        Self {
            tuple_form,
            want_updates: requested.contains(&StreamMode::Updates),
            seen: HashMap::new(),
        }
    }

    /// Shapes one part into zero or more `(event name, data)` pairs.
    pub fn shape(&mut self, part: StreamPart) -> Vec<(String, Value)> {
        if part.mode == EngineMode::Updates && !self.want_updates {
            return Vec::new();
        }
        if part.mode != EngineMode::Messages || self.tuple_form {
            return vec![(part.event_name(), part.data)];
        }
        let Value::Array(mut pair) = part.data else {
            return Vec::new();
        };
        if pair.len() != 2 {
            return Vec::new();
        }
        let metadata = pair.pop().unwrap_or(Value::Null);
        let msg = pair.pop().unwrap_or(Value::Null);
        let id = msg
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut out = Vec::new();
        let is_chunk = msg
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("Chunk"));
        if !self.seen.contains_key(&id) {
            let mut m = Map::new();
            m.insert(id.clone(), json!({ "metadata": metadata }));
            out.push((with_ns("messages/metadata", &part.ns), Value::Object(m)));
        }
        if is_chunk {
            let acc = self.seen.entry(id.clone()).or_insert_with(|| empty_ai(&id));
            merge_chunk(acc, &msg);
            out.push((
                with_ns("messages/partial", &part.ns),
                Value::Array(vec![acc.clone()]),
            ));
        } else {
            self.seen.insert(id, msg.clone());
            out.push((
                with_ns("messages/complete", &part.ns),
                Value::Array(vec![msg]),
            ));
        }
        out
    }
}

fn empty_ai(id: &str) -> Value {
    json!({
        "content": "",
        "additional_kwargs": {},
        "response_metadata": {},
        "type": "ai",
        "name": null,
        "id": id,
        "tool_calls": [],
        "invalid_tool_calls": [],
        "usage_metadata": null
    })
}

/// Folds an `AIMessageChunk` into the accumulated AI message.
fn merge_chunk(acc: &mut Value, chunk: &Value) {
    let Some(acc) = acc.as_object_mut() else {
        return;
    };
    match (acc.get_mut("content"), chunk.get("content")) {
        (Some(Value::String(a)), Some(Value::String(c))) => a.push_str(c),
        (Some(slot), Some(Value::Array(c))) => {
            let mut items = match slot.take() {
                Value::String(s) if s.is_empty() => Vec::new(),
                Value::String(s) => vec![json!({"type": "text", "text": s})],
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            items.extend(c.iter().cloned());
            *slot = Value::Array(items);
        }
        _ => {}
    }
    for key in ["additional_kwargs", "response_metadata"] {
        if let (Some(Value::Object(a)), Some(Value::Object(c))) = (acc.get_mut(key), chunk.get(key))
        {
            for (k, v) in c {
                a.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(chunks)) = chunk.get("tool_call_chunks")
        && let Some(Value::Array(calls)) = acc.get_mut("tool_calls")
    {
        for tc in chunks {
            let index = tc.get("index").cloned().unwrap_or(Value::Null);
            let existing = calls
                .iter_mut()
                .find(|c| !index.is_null() && c.get("index") == Some(&index));
            match existing {
                Some(c) => {
                    let add = tc.get("args").and_then(Value::as_str).unwrap_or_default();
                    if let Some(Value::String(args)) = c.get_mut("args") {
                        args.push_str(add);
                    }
                }
                None => calls.push(tc.clone()),
            }
        }
    }
    if let Some(u) = chunk.get("usage_metadata").filter(|u| !u.is_null()) {
        acc.insert("usage_metadata".into(), u.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(content: &str) -> Value {
        json!([{"content": content, "type": "AIMessageChunk", "id": "m1", "additional_kwargs": {},
                "response_metadata": {}, "tool_call_chunks": []}, {"langgraph_node": "chat"}])
    }

    #[test]
    fn tuple_mode_passes_through_with_namespace() {
        let mut s = EventShaper::new(&[StreamMode::MessagesTuple]);
        let out = s.shape(StreamPart {
            ns: vec!["child:1".into()],
            mode: EngineMode::Messages,
            data: chunk("hi"),
            shared: None,
        });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "messages|child:1");
    }

    #[test]
    fn messages_mode_accumulates_partials() {
        let mut s = EventShaper::new(&[StreamMode::Messages]);
        let a = s.shape(StreamPart {
            ns: vec![],
            mode: EngineMode::Messages,
            data: chunk("hello"),
            shared: None,
        });
        assert_eq!(a[0].0, "messages/metadata");
        assert_eq!(a[1].0, "messages/partial");
        let b = s.shape(StreamPart {
            ns: vec![],
            mode: EngineMode::Messages,
            data: chunk(" world"),
            shared: None,
        });
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].1[0]["content"], "hello world");
        assert_eq!(b[0].1[0]["type"], "ai");
    }

    #[test]
    fn whole_messages_are_complete_events() {
        let mut s = EventShaper::new(&[StreamMode::Messages]);
        let out = s.shape(StreamPart {
            ns: vec![],
            mode: EngineMode::Messages,
            data: json!([{"content": "x", "type": "ai", "id": "m2"}, {}]),
            shared: None,
        });
        assert_eq!(out[1].0, "messages/complete");
    }
}
