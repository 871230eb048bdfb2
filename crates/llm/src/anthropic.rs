//! Anthropic Messages API client (`POST {base}/v1/messages`, `stream: true`, `x-api-key`,
//! `anthropic-version`). System messages become the `system` prompt; AI tool calls become
//! `tool_use` blocks and tool messages `tool_result` blocks in a user turn (consecutive turns of
//! one role are merged, as the API requires alternation).

use std::collections::VecDeque;
use std::sync::Arc;

use ::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use antler_graph::messages::content_text;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::chat::{ChatEvent, ChatModel, ChatRequest, ChatStream, Usage};
use crate::config::ModelConfig;
use crate::error::{ConfigError, LlmError, excerpt};
use crate::sse::SseEvent;
use crate::transport::{self, DecodeError, Decoder, Endpoint, Flow, RetryPolicy};

/// Default base URL.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// `anthropic-version` header.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` when the config sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// An Anthropic chat model.
pub struct AnthropicClient {
    cfg: ModelConfig,
    http: transport::HttpClient,
    retry: RetryPolicy,
}

impl AnthropicClient {
    /// A client for `cfg` (no network activity until the first call).
    pub fn new(cfg: ModelConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            http: transport::http_client(&cfg)?,
            cfg,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry backoff.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    fn url(&self) -> String {
        let base = self.cfg.base_url.as_deref().unwrap_or(ANTHROPIC_BASE_URL);
        if base.trim_end_matches('/').ends_with("/v1") {
            transport::join_url(base, "messages")
        } else {
            transport::join_url(base, "v1/messages")
        }
    }

    /// The JSON body sent for `req`.
    pub fn request_body(&self, req: &ChatRequest) -> Value {
        let (system, messages) = to_anthropic_messages(&req.messages);
        let mut body = Map::new();
        body.insert("model".into(), json!(self.cfg.model));
        body.insert(
            "max_tokens".into(),
            json!(
                req.max_tokens
                    .or(self.cfg.max_tokens)
                    .unwrap_or(DEFAULT_MAX_TOKENS)
            ),
        );
        if let Some(s) = system {
            body.insert("system".into(), json!(s));
        }
        body.insert("messages".into(), Value::Array(messages));
        body.insert("stream".into(), json!(true));
        if let Some(t) = self.cfg.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if !req.tools.is_empty() {
            body.insert(
                "tools".into(),
                Value::Array(
                    req.tools
                        .iter()
                        .map(|t| {
                            json!({"name": t.name, "description": t.description, "input_schema": t.parameters})
                        })
                        .collect(),
                ),
            );
        }
        for (k, v) in &self.cfg.extra {
            body.insert(k.clone(), v.clone());
        }
        for (k, v) in self.cfg.thinking_fields(req.thinking) {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    fn endpoint(&self) -> Result<Endpoint, LlmError> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            "anthropic-version",
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        if let Some(key) = transport::api_key(&self.cfg, &["ANTHROPIC_API_KEY"])? {
            let mut v = HeaderValue::from_str(&key).map_err(|_| LlmError::Config {
                model: self.cfg.name.clone(),
                message: "api_key contains characters not allowed in an HTTP header".into(),
            })?;
            v.set_sensitive(true);
            headers.insert("x-api-key", v);
        }
        transport::extra_headers(&self.cfg, &mut headers)?;
        Ok(Endpoint {
            client: self.http.clone(),
            provider: "anthropic",
            model: self.cfg.name.clone(),
            url: transport::parse_url(&self.cfg.name, &self.url())?,
            headers,
            timeout: self.cfg.timeout,
            max_retries: self.cfg.max_retries,
            retry: self.retry,
        })
    }
}

impl ChatModel for AnthropicClient {
    fn stream(&self, request: ChatRequest) -> ChatStream {
        let ep = match self.endpoint() {
            Ok(ep) => ep,
            Err(e) => return transport::failed(e),
        };
        let body = match serde_json::to_vec(&self.request_body(&request)) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                return transport::failed(LlmError::Config {
                    model: self.cfg.name.clone(),
                    message: format!("request body could not be serialized: {e}"),
                });
            }
        };
        transport::drive::<AnthropicDecoder>(Arc::new(ep), body)
    }

    fn class_name(&self) -> &'static str {
        "ChatAnthropic"
    }

    fn provider(&self) -> &'static str {
        "anthropic"
    }
}

// ---------------------------------------------------------------- messages

fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
    {
        let media = meta.trim_end_matches(";base64");
        return json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

fn user_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(json!({"type": "text", "text": s})),
                Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                    Some("text") => Some(json!({"type": "text", "text": o.get("text").and_then(Value::as_str).unwrap_or("")})),
                    Some("image_url") => o
                        .get("image_url")
                        .and_then(|i| i.get("url").or(Some(i)))
                        .and_then(Value::as_str)
                        .map(image_block),
                    Some("image") => {
                        if let Some(u) = o.get("url").and_then(Value::as_str) {
                            Some(image_block(u))
                        } else if o.get("source").is_some() {
                            Some(p.clone())
                        } else {
                            let data = o.get("base64").or_else(|| o.get("data")).and_then(Value::as_str)?;
                            let mime = o.get("mime_type").and_then(Value::as_str).unwrap_or("image/png");
                            Some(json!({"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}))
                        }
                    }
                    _ => Some(p.clone()),
                },
                other => Some(json!({"type": "text", "text": other.to_string()})),
            })
            .collect(),
        Some(other) => vec![json!({"type": "text", "text": other.to_string()})],
    }
}

fn kind_of(m: &Value) -> &str {
    m.get("type")
        .and_then(Value::as_str)
        .or_else(|| m.get("role").and_then(Value::as_str))
        .unwrap_or("human")
}

/// LangChain messages -> (system prompt, Anthropic messages).
pub fn to_anthropic_messages(messages: &[Value]) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<(String, Vec<Value>)> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match out.last_mut() {
            Some((r, existing)) if r == role => existing.extend(blocks),
            _ => out.push((role.to_string(), blocks)),
        }
    };
    for m in messages {
        match kind_of(m) {
            "system" | "developer" | "SystemMessage" => {
                let t = content_text(m);
                if !t.is_empty() {
                    system.push(t);
                }
            }
            "ai" | "assistant" | "AIMessage" | "AIMessageChunk" => {
                let mut blocks = Vec::new();
                let kw = m.get("additional_kwargs");
                let reasoning = kw
                    .and_then(|k| k.get("reasoning_content"))
                    .and_then(Value::as_str);
                let signature = kw
                    .and_then(|k| k.get("reasoning_signature"))
                    .and_then(Value::as_str);
                if let (Some(r), Some(s)) = (reasoning, signature) {
                    blocks.push(json!({"type": "thinking", "thinking": r, "signature": s}));
                }
                let text = content_text(m);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for tc in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": tc.get("id").cloned().unwrap_or(Value::Null),
                        "name": tc.get("name").cloned().unwrap_or(json!("")),
                        "input": tc.get("args").filter(|a| a.is_object()).cloned().unwrap_or(json!({})),
                    }));
                }
                for tc in m
                    .get("invalid_tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": tc.get("id").cloned().unwrap_or(Value::Null),
                        "name": tc.get("name").and_then(Value::as_str).unwrap_or(""),
                        "input": {},
                    }));
                }
                push("assistant", blocks);
            }
            "tool" | "ToolMessage" => {
                let mut block = json!({
                    "type": "tool_result",
                    "tool_use_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": content_text(m),
                });
                if m.get("status").and_then(Value::as_str) == Some("error") {
                    block["is_error"] = json!(true);
                }
                push("user", vec![block]);
            }
            "remove" => {}
            _ => push("user", user_blocks(m.get("content"))),
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    let messages = out
        .into_iter()
        .map(|(role, blocks)| {
            // a lone text block is sent as a plain string (the common, most compatible form)
            if blocks.len() == 1 && blocks[0].get("type").and_then(Value::as_str) == Some("text") {
                json!({"role": role, "content": blocks[0]["text"]})
            } else {
                json!({"role": role, "content": blocks})
            }
        })
        .collect();
    (system, messages)
}

// ---------------------------------------------------------------- decoding

#[derive(Default)]
pub(crate) struct AnthropicDecoder {
    seen: bool,
    input_tokens: u64,
    cache_read: u64,
    cache_creation: u64,
    output_tokens: u64,
    usage_sent: bool,
    /// block index -> is a tool_use block
    tool_blocks: std::collections::HashMap<u64, ()>,
}

fn malformed(what: &str, data: &str) -> DecodeError {
    DecodeError::Malformed(format!("{what}: {}", excerpt(data, 200)))
}

fn str_field<'a>(v: &'a Value, field: &str, data: &str) -> Result<&'a str, DecodeError> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(&format!("`{field}` is missing or not a string"), data))
}

impl AnthropicDecoder {
    fn usage(&self) -> Usage {
        let input = self.input_tokens + self.cache_read + self.cache_creation;
        Usage {
            input_tokens: input,
            output_tokens: self.output_tokens,
            total_tokens: input + self.output_tokens,
            cache_read_tokens: self.cache_read,
            cache_creation_tokens: self.cache_creation,
            reasoning_tokens: 0,
        }
    }

    fn read_usage(&mut self, u: &Value) {
        if let Some(n) = u.get("input_tokens").and_then(Value::as_u64) {
            self.input_tokens = n;
        }
        if let Some(n) = u.get("cache_read_input_tokens").and_then(Value::as_u64) {
            self.cache_read = n;
        }
        if let Some(n) = u.get("cache_creation_input_tokens").and_then(Value::as_u64) {
            self.cache_creation = n;
        }
        if let Some(n) = u.get("output_tokens").and_then(Value::as_u64) {
            self.output_tokens = n;
        }
    }
}

impl Decoder for AnthropicDecoder {
    fn event(&mut self, ev: &SseEvent, out: &mut VecDeque<ChatEvent>) -> Result<Flow, DecodeError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| malformed(&format!("invalid JSON ({e})"), data))?;
        if !v.is_object() {
            return Err(malformed("expected a JSON object", data));
        }
        self.seen = true;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(ev.event.as_str());
        match kind {
            "message_start" => {
                let msg = v
                    .get("message")
                    .filter(|m| m.is_object())
                    .ok_or_else(|| malformed("`message` is missing", data))?;
                if let Some(u) = msg.get("usage") {
                    self.read_usage(u);
                }
                out.push_back(ChatEvent::Start {
                    id: msg.get("id").and_then(Value::as_str).map(str::to_string),
                    model: msg.get("model").and_then(Value::as_str).map(str::to_string),
                });
            }
            "content_block_start" => {
                let index = v
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| malformed("`index` is missing", data))?;
                let block = v
                    .get("content_block")
                    .filter(|b| b.is_object())
                    .ok_or_else(|| malformed("`content_block` is missing", data))?;
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            out.push_back(ChatEvent::Text(t.to_string()));
                        }
                    }
                    Some("thinking") => {
                        if let Some(t) = block.get("thinking").and_then(Value::as_str)
                            && !t.is_empty()
                        {
                            out.push_back(ChatEvent::Reasoning(t.to_string()));
                        }
                    }
                    Some("tool_use") | Some("server_tool_use") => {
                        self.tool_blocks.insert(index, ());
                        let input = match block.get("input") {
                            Some(Value::Object(o)) if !o.is_empty() => {
                                Value::Object(o.clone()).to_string()
                            }
                            _ => String::new(),
                        };
                        out.push_back(ChatEvent::ToolCall {
                            index: usize::try_from(index).unwrap_or(usize::MAX),
                            id: Some(str_field(block, "id", data)?.to_string()),
                            name: Some(str_field(block, "name", data)?.to_string()),
                            arguments: input,
                        });
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v
                    .get("index")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| malformed("`index` is missing", data))?;
                let delta = v
                    .get("delta")
                    .filter(|d| d.is_object())
                    .ok_or_else(|| malformed("`delta` is missing", data))?;
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        out.push_back(ChatEvent::Text(str_field(delta, "text", data)?.to_string()))
                    }
                    Some("thinking_delta") => out.push_back(ChatEvent::Reasoning(
                        str_field(delta, "thinking", data)?.to_string(),
                    )),
                    Some("signature_delta") => out.push_back(ChatEvent::ReasoningSignature(
                        str_field(delta, "signature", data)?.to_string(),
                    )),
                    Some("input_json_delta") => {
                        if !self.tool_blocks.contains_key(&index) {
                            return Err(malformed(
                                "input_json_delta for a block that is not a tool_use",
                                data,
                            ));
                        }
                        out.push_back(ChatEvent::ToolCall {
                            index: usize::try_from(index).unwrap_or(usize::MAX),
                            id: None,
                            name: None,
                            arguments: str_field(delta, "partial_json", data)?.to_string(),
                        });
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.read_usage(u);
                }
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    out.push_back(ChatEvent::Finish(r.to_string()));
                }
            }
            "message_stop" => {
                if !self.usage_sent {
                    self.usage_sent = true;
                    out.push_back(ChatEvent::Usage(self.usage()));
                }
                return Ok(Flow::Done);
            }
            "error" => {
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                return Err(DecodeError::Provider(format!("{kind}: {msg}")));
            }
            // ping, content_block_stop and future event types
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn eof(&mut self) -> Result<(), DecodeError> {
        if !self.seen {
            Err(DecodeError::Malformed(
                "the stream ended without any data".into(),
            ))
        } else {
            Err(DecodeError::Malformed(
                "the stream ended before message_stop".into(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_merges_turns() {
        let msgs = vec![
            json!({"type": "system", "content": "be brief"}),
            json!({"type": "human", "content": "hi"}),
            json!({"type": "ai", "content": "let me look", "additional_kwargs": {"reasoning_content": "hmm", "reasoning_signature": "sig"},
                   "tool_calls": [{"name": "ls", "args": {"path": "."}, "id": "t1", "type": "tool_call"},
                                  {"name": "read_file", "args": {"path": "a"}, "id": "t2", "type": "tool_call"}]}),
            json!({"type": "tool", "content": "a.txt", "tool_call_id": "t1", "status": "success"}),
            json!({"type": "tool", "content": "boom", "tool_call_id": "t2", "status": "error"}),
            json!({"type": "human", "content": "and?"}),
        ];
        let (system, out) = to_anthropic_messages(&msgs);
        assert_eq!(system.as_deref(), Some("be brief"));
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], json!({"role": "user", "content": "hi"}));
        assert_eq!(
            out[1]["content"][0],
            json!({"type": "thinking", "thinking": "hmm", "signature": "sig"})
        );
        assert_eq!(
            out[1]["content"][2],
            json!({"type": "tool_use", "id": "t1", "name": "ls", "input": {"path": "."}})
        );
        assert_eq!(out[2]["role"], "user");
        assert_eq!(
            out[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"})
        );
        assert_eq!(out[2]["content"][1]["is_error"], true);
        assert_eq!(
            out[2]["content"][2],
            json!({"type": "text", "text": "and?"})
        );
    }
}
