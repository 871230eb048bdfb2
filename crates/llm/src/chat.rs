//! The provider-neutral chat-model interface: [`ChatRequest`] in, a stream of [`ChatEvent`]s
//! out ([`ChatModel`]), and [`MessageAssembler`], which folds events into LangChain
//! `AIMessageChunk` JSON (for the `messages` stream mode) and into the final `AIMessage`.

use std::collections::BTreeMap;

use futures::stream::BoxStream;
use serde_json::{Map, Value, json};

use crate::error::LlmError;

/// A tool the model may call: name, description and JSON-schema parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// Function name.
    pub name: String,
    /// What the tool does.
    pub description: String,
    /// JSON schema of the arguments (an object schema).
    pub parameters: Value,
}

/// One chat-model request. Messages are LangChain message dicts (`system`, `human`, `ai`,
/// `tool`); system messages anywhere in the list are sent as the system prompt.
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Value>,
    /// Tools offered to the model.
    pub tools: Vec<ToolSpec>,
    /// `thinking_enabled` of the run (None = the model's default).
    pub thinking: Option<bool>,
    /// `reasoning_effort` of the run (sent when the model supports it).
    pub reasoning_effort: Option<String>,
    /// Overrides the model's `max_tokens`.
    pub max_tokens: Option<u64>,
}

/// Token usage of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens (including cached ones).
    pub input_tokens: u64,
    /// Completion tokens (including reasoning ones).
    pub output_tokens: u64,
    /// Total.
    pub total_tokens: u64,
    /// Prompt tokens read from cache.
    pub cache_read_tokens: u64,
    /// Prompt tokens written to cache (Anthropic).
    pub cache_creation_tokens: u64,
    /// Reasoning tokens.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// LangChain `usage_metadata`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("input_tokens".into(), json!(self.input_tokens));
        m.insert("output_tokens".into(), json!(self.output_tokens));
        m.insert("total_tokens".into(), json!(self.total_tokens));
        if self.cache_read_tokens > 0 || self.cache_creation_tokens > 0 {
            m.insert(
                "input_token_details".into(),
                json!({"cache_read": self.cache_read_tokens, "cache_creation": self.cache_creation_tokens}),
            );
        }
        if self.reasoning_tokens > 0 {
            m.insert(
                "output_token_details".into(),
                json!({"reasoning": self.reasoning_tokens}),
            );
        }
        Value::Object(m)
    }
}

/// One streamed event of a model call.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatEvent {
    /// The provider's message id and model (first event, when the provider sends them).
    Start {
        /// Provider message id.
        id: Option<String>,
        /// Model that answers.
        model: Option<String>,
    },
    /// Answer text.
    Text(String),
    /// Reasoning / thinking text.
    Reasoning(String),
    /// Signature of the thinking block (Anthropic; needed to send thinking back).
    ReasoningSignature(String),
    /// A piece of a tool call; pieces with the same `index` belong together.
    ToolCall {
        /// Position of the call in the message.
        index: usize,
        /// Call id (usually on the first piece).
        id: Option<String>,
        /// Function name (usually on the first piece).
        name: Option<String>,
        /// A fragment of the JSON arguments.
        arguments: String,
    },
    /// Token usage.
    Usage(Usage),
    /// Why generation stopped (`stop`, `tool_calls`, `length`, `end_turn`, `tool_use`, ...).
    Finish(String),
}

/// A stream of events; ends after the last event or after the first error.
pub type ChatStream = BoxStream<'static, Result<ChatEvent, LlmError>>;

/// A chat model.
pub trait ChatModel: Send + Sync {
    /// Starts a call. Retries (429 / 5xx / connection errors) happen inside, and only before
    /// the first event is delivered; errors after that end the stream.
    fn stream(&self, request: ChatRequest) -> ChatStream;

    /// `ChatOpenAI` / `ChatAnthropic` (LangChain class name, for stream metadata).
    fn class_name(&self) -> &'static str;

    /// `openai` / `anthropic`.
    fn provider(&self) -> &'static str;
}

#[derive(Default, Debug)]
struct PartialCall {
    id: Option<String>,
    name: Option<String>,
    args: String,
}

/// Folds [`ChatEvent`]s into LangChain JSON: one `AIMessageChunk` per delta, and the final
/// `AIMessage` (tool calls with parsed arguments; unparsable ones become
/// `invalid_tool_calls`). Every message carries `additional_kwargs.caller`; chunks carry it
/// on the first chunk only (clients concatenate string fields of merged chunks).
#[derive(Debug)]
pub struct MessageAssembler {
    id: String,
    caller: String,
    model_name: String,
    provider: &'static str,
    text: String,
    reasoning: String,
    signature: String,
    calls: BTreeMap<usize, PartialCall>,
    usage: Option<Usage>,
    finish: Option<String>,
    provider_id: Option<String>,
    chunks: usize,
}

impl MessageAssembler {
    /// A new message `lc_run--<uuid>` for `caller` (`lead_agent`, `subagent:x`,
    /// `middleware:title`).
    pub fn new(caller: &str, model_name: &str, provider: &'static str) -> Self {
        Self {
            id: format!("lc_run--{}", uuid::Uuid::now_v7()),
            caller: caller.to_string(),
            model_name: model_name.to_string(),
            provider,
            text: String::new(),
            reasoning: String::new(),
            signature: String::new(),
            calls: BTreeMap::new(),
            usage: None,
            finish: None,
            provider_id: None,
            chunks: 0,
        }
    }

    /// The message id (shared by every chunk and the final message).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Text so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Usage, once reported.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn chunk(&mut self, content: &str) -> Map<String, Value> {
        let mut kwargs = Map::new();
        if self.chunks == 0 {
            kwargs.insert("caller".into(), json!(self.caller));
        }
        self.chunks += 1;
        let mut m = Map::new();
        m.insert("content".into(), json!(content));
        m.insert("additional_kwargs".into(), Value::Object(kwargs));
        m.insert("response_metadata".into(), json!({}));
        m.insert("type".into(), json!("AIMessageChunk"));
        m.insert("name".into(), Value::Null);
        m.insert("id".into(), json!(self.id));
        m.insert("tool_calls".into(), json!([]));
        m.insert("invalid_tool_calls".into(), json!([]));
        m.insert("usage_metadata".into(), Value::Null);
        m.insert("tool_call_chunks".into(), json!([]));
        m.insert("chunk_position".into(), Value::Null);
        m
    }

    /// Applies one event; returns the `AIMessageChunk` to stream, if the event produces one.
    pub fn apply(&mut self, ev: &ChatEvent) -> Option<Value> {
        match ev {
            ChatEvent::Start { id, model } => {
                if let Some(id) = id {
                    self.provider_id = Some(id.clone());
                }
                if let Some(m) = model
                    && !m.is_empty()
                {
                    self.model_name = m.clone();
                }
                None
            }
            ChatEvent::Text(t) => {
                if t.is_empty() {
                    return None;
                }
                self.text.push_str(t);
                Some(Value::Object(self.chunk(t)))
            }
            ChatEvent::Reasoning(t) => {
                if t.is_empty() {
                    return None;
                }
                self.reasoning.push_str(t);
                let mut c = self.chunk("");
                if let Some(Value::Object(k)) = c.get_mut("additional_kwargs") {
                    k.insert("reasoning_content".into(), json!(t));
                }
                Some(Value::Object(c))
            }
            ChatEvent::ReasoningSignature(s) => {
                self.signature.push_str(s);
                None
            }
            ChatEvent::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let call = self.calls.entry(*index).or_default();
                if let Some(id) = id
                    && !id.is_empty()
                {
                    call.id = Some(id.clone());
                }
                if let Some(n) = name
                    && !n.is_empty()
                {
                    match &mut call.name {
                        Some(existing) if existing != n => existing.push_str(n),
                        Some(_) => {}
                        None => call.name = Some(n.clone()),
                    }
                }
                call.args.push_str(arguments);
                let mut c = self.chunk("");
                c.insert(
                    "tool_call_chunks".into(),
                    json!([{
                        "name": name, "args": arguments, "id": id, "index": index,
                        "type": "tool_call_chunk",
                    }]),
                );
                Some(Value::Object(c))
            }
            ChatEvent::Usage(u) => {
                self.usage = Some(*u);
                let mut c = self.chunk("");
                c.insert("usage_metadata".into(), u.to_json());
                Some(Value::Object(c))
            }
            ChatEvent::Finish(reason) => {
                self.finish = Some(reason.clone());
                None
            }
        }
    }

    fn response_metadata(&self) -> Value {
        let mut m = Map::new();
        if let Some(r) = &self.finish {
            m.insert("finish_reason".into(), json!(r));
            if self.provider == "anthropic" {
                m.insert("stop_reason".into(), json!(r));
            }
        }
        m.insert("model_name".into(), json!(self.model_name));
        m.insert("model_provider".into(), json!(self.provider));
        if let Some(id) = &self.provider_id {
            m.insert("id".into(), json!(id));
        }
        Value::Object(m)
    }

    /// The closing chunk (`chunk_position: "last"`, finish reason and model name).
    pub fn last_chunk(&mut self) -> Value {
        let meta = self.response_metadata();
        let mut c = self.chunk("");
        c.insert("response_metadata".into(), meta);
        c.insert("chunk_position".into(), json!("last"));
        Value::Object(c)
    }

    /// The final LangChain `AIMessage`.
    pub fn finish(self) -> Value {
        let mut tool_calls = Vec::new();
        let mut invalid = Vec::new();
        for (index, call) in &self.calls {
            let id = call.id.clone().unwrap_or_else(|| {
                format!(
                    "call_{}_{index}",
                    &self.id[self.id.len().saturating_sub(8)..]
                )
            });
            let name = call.name.clone().unwrap_or_default();
            let raw = if call.args.trim().is_empty() {
                "{}"
            } else {
                call.args.as_str()
            };
            match serde_json::from_str::<Value>(raw) {
                Ok(args @ Value::Object(_)) if !name.is_empty() => tool_calls.push(json!({
                    "name": name, "args": args, "id": id, "type": "tool_call",
                })),
                Ok(_) if name.is_empty() => invalid.push(json!({
                    "name": Value::Null, "args": call.args, "id": id,
                    "error": "the tool call has no function name",
                    "type": "invalid_tool_call",
                })),
                Ok(other) => invalid.push(json!({
                    "name": name, "args": call.args, "id": id,
                    "error": format!("tool arguments must be a JSON object, got {}", crate::config::type_name(&other)),
                    "type": "invalid_tool_call",
                })),
                Err(e) => invalid.push(json!({
                    "name": name, "args": call.args, "id": id,
                    "error": format!("tool arguments are not valid JSON: {e}"),
                    "type": "invalid_tool_call",
                })),
            }
        }
        let mut kwargs = Map::new();
        kwargs.insert("caller".into(), json!(self.caller));
        if !self.reasoning.is_empty() {
            kwargs.insert("reasoning_content".into(), json!(self.reasoning));
        }
        if !self.signature.is_empty() {
            kwargs.insert("reasoning_signature".into(), json!(self.signature));
        }
        let mut m = Map::new();
        m.insert("content".into(), json!(self.text));
        m.insert("additional_kwargs".into(), Value::Object(kwargs));
        m.insert("response_metadata".into(), self.response_metadata());
        m.insert("type".into(), json!("ai"));
        m.insert("name".into(), Value::Null);
        m.insert("id".into(), json!(self.id));
        m.insert("tool_calls".into(), Value::Array(tool_calls));
        m.insert("invalid_tool_calls".into(), Value::Array(invalid));
        m.insert(
            "usage_metadata".into(),
            self.usage.map_or(Value::Null, |u| u.to_json()),
        );
        Value::Object(m)
    }
}

/// Runs a call to completion without streaming anywhere; returns the final `AIMessage`.
pub async fn generate(
    model: &dyn ChatModel,
    model_name: &str,
    request: ChatRequest,
    caller: &str,
) -> Result<Value, LlmError> {
    use futures::StreamExt;
    let mut asm = MessageAssembler::new(caller, model_name, model.provider());
    let mut stream = model.stream(request);
    while let Some(ev) = stream.next().await {
        asm.apply(&ev?);
    }
    Ok(asm.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembles_text_tools_usage_and_invalid_args() {
        let mut a = MessageAssembler::new("lead_agent", "m", "openai");
        let c1 = a.apply(&ChatEvent::Text("Hel".into())).unwrap();
        assert_eq!(c1["additional_kwargs"]["caller"], "lead_agent");
        let c2 = a.apply(&ChatEvent::Text("lo".into())).unwrap();
        assert_eq!(c2["additional_kwargs"], json!({}));
        assert_eq!(c2["id"], c1["id"]);
        a.apply(&ChatEvent::ToolCall {
            index: 0,
            id: Some("c1".into()),
            name: Some("ls".into()),
            arguments: "{\"pa".into(),
        });
        a.apply(&ChatEvent::ToolCall {
            index: 0,
            id: None,
            name: None,
            arguments: "th\": \".\"}".into(),
        });
        a.apply(&ChatEvent::ToolCall {
            index: 1,
            id: Some("c2".into()),
            name: Some("bad".into()),
            arguments: "{nope".into(),
        });
        a.apply(&ChatEvent::Usage(Usage {
            input_tokens: 3,
            output_tokens: 4,
            total_tokens: 7,
            ..Default::default()
        }));
        a.apply(&ChatEvent::Finish("tool_calls".into()));
        let last = a.last_chunk();
        assert_eq!(last["chunk_position"], "last");
        assert_eq!(last["response_metadata"]["finish_reason"], "tool_calls");
        let m = a.finish();
        assert_eq!(m["content"], "Hello");
        assert_eq!(
            m["tool_calls"],
            json!([{"name": "ls", "args": {"path": "."}, "id": "c1", "type": "tool_call"}])
        );
        assert_eq!(m["invalid_tool_calls"][0]["id"], "c2");
        assert_eq!(m["invalid_tool_calls"][0]["args"], "{nope");
        assert_eq!(
            m["usage_metadata"],
            json!({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7})
        );
        assert_eq!(m["additional_kwargs"]["caller"], "lead_agent");
        assert!(m["id"].as_str().unwrap().starts_with("lc_run--"));
        // a valid LangChain message for the engine
        antler_graph::messages::coerce_message(&m).unwrap();
    }
}
