//! OpenAI-compatible Chat Completions client (`POST {base}/chat/completions`, `stream: true`,
//! `stream_options.include_usage`). Lenient with what providers add: unknown fields and finish
//! reasons pass, `reasoning_content` / `reasoning` deltas become reasoning, `choices: []` usage
//! chunks are understood. Invalid JSON or wrongly typed known fields are a malformed-chunk error.

use std::collections::VecDeque;
use std::sync::Arc;

use ::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use antler_graph::messages::content_text;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::chat::{ChatEvent, ChatModel, ChatRequest, ChatStream, Usage};
use crate::config::ModelConfig;
use crate::error::{ConfigError, LlmError, excerpt};
use crate::sse::SseEvent;
use crate::transport::{self, DecodeError, Decoder, Endpoint, Flow, RetryPolicy};

/// Default base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// Default base URL of `langchain_deepseek` models.
pub const DEEPSEEK_BASE_URL: &str = "https://api.deepseek.com/v1";

/// An OpenAI-compatible chat model.
pub struct OpenAiClient {
    cfg: ModelConfig,
    http: transport::HttpClient,
    retry: RetryPolicy,
}

impl OpenAiClient {
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

    fn is_deepseek(&self) -> bool {
        self.cfg
            .use_path
            .as_deref()
            .is_some_and(|u| u.to_ascii_lowercase().contains("deepseek"))
    }

    fn base_url(&self) -> &str {
        match &self.cfg.base_url {
            Some(u) => u,
            None if self.is_deepseek() => DEEPSEEK_BASE_URL,
            None => OPENAI_BASE_URL,
        }
    }

    /// The JSON body sent for `req`.
    pub fn request_body(&self, req: &ChatRequest) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.cfg.model));
        body.insert(
            "messages".into(),
            Value::Array(to_openai_messages(&req.messages)),
        );
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        if let Some(mt) = req.max_tokens.or(self.cfg.max_tokens) {
            body.insert("max_tokens".into(), json!(mt));
        }
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
                            json!({"type": "function", "function": {
                                "name": t.name, "description": t.description, "parameters": t.parameters,
                            }})
                        })
                        .collect(),
                ),
            );
        }
        if let Some(effort) = &req.reasoning_effort
            && self.cfg.supports_reasoning_effort
        {
            body.insert("reasoning_effort".into(), json!(effort));
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
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let fallback: &[&str] = if self.is_deepseek() {
            &["DEEPSEEK_API_KEY"]
        } else {
            &["OPENAI_API_KEY"]
        };
        if let Some(key) = transport::api_key(&self.cfg, fallback)? {
            let mut v =
                HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| LlmError::Config {
                    model: self.cfg.name.clone(),
                    message: "api_key contains characters not allowed in an HTTP header".into(),
                })?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        transport::extra_headers(&self.cfg, &mut headers)?;
        Ok(Endpoint {
            client: self.http.clone(),
            provider: "openai",
            model: self.cfg.name.clone(),
            url: transport::parse_url(
                &self.cfg.name,
                &transport::join_url(self.base_url(), "chat/completions"),
            )?,
            headers,
            timeout: self.cfg.timeout,
            max_retries: self.cfg.max_retries,
            retry: self.retry,
        })
    }
}

impl ChatModel for OpenAiClient {
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
        transport::drive::<OpenAiDecoder>(Arc::new(ep), body)
    }

    fn class_name(&self) -> &'static str {
        "ChatOpenAI"
    }

    fn provider(&self) -> &'static str {
        "openai"
    }
}

// ---------------------------------------------------------------- messages

fn openai_content(content: Option<&Value>) -> Value {
    match content {
        None | Some(Value::Null) => json!(""),
        Some(Value::String(s)) => json!(s),
        Some(Value::Array(parts)) => Value::Array(
            parts
                .iter()
                .map(|p| match p {
                    Value::String(s) => json!({"type": "text", "text": s}),
                    Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                        // LangChain standard image block -> OpenAI image_url
                        Some("image") => {
                            let url = o
                                .get("url")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                                .or_else(|| {
                                    let data = o
                                        .get("base64")
                                        .or_else(|| o.get("data"))
                                        .and_then(Value::as_str)?;
                                    let mime = o
                                        .get("mime_type")
                                        .and_then(Value::as_str)
                                        .unwrap_or("image/png");
                                    Some(format!("data:{mime};base64,{data}"))
                                });
                            match url {
                                Some(u) => json!({"type": "image_url", "image_url": {"url": u}}),
                                None => p.clone(),
                            }
                        }
                        _ => p.clone(),
                    },
                    other => json!({"type": "text", "text": other.to_string()}),
                })
                .collect(),
        ),
        Some(other) => json!(other.to_string()),
    }
}

fn kind_of(m: &Value) -> &str {
    m.get("type")
        .and_then(Value::as_str)
        .or_else(|| m.get("role").and_then(Value::as_str))
        .unwrap_or("human")
}

/// LangChain messages -> OpenAI chat messages.
pub fn to_openai_messages(messages: &[Value]) -> Vec<Value> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match kind_of(m) {
            "system" | "developer" | "SystemMessage" => {
                out.push(json!({"role": "system", "content": content_text(m)}));
            }
            "ai" | "assistant" | "AIMessage" | "AIMessageChunk" => {
                let mut calls = Vec::new();
                for tc in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let args = tc.get("args").cloned().unwrap_or(json!({}));
                    calls.push(json!({
                        "id": tc.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": tc.get("name").cloned().unwrap_or(json!("")),
                            "arguments": serde_json::to_string(&args).unwrap_or_else(|_| "{}".into()),
                        },
                    }));
                }
                for tc in m
                    .get("invalid_tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    calls.push(json!({
                        "id": tc.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": tc.get("name").and_then(Value::as_str).unwrap_or(""),
                            "arguments": tc.get("args").and_then(Value::as_str).unwrap_or(""),
                        },
                    }));
                }
                let text = content_text(m);
                let mut msg = Map::new();
                msg.insert("role".into(), json!("assistant"));
                msg.insert(
                    "content".into(),
                    if text.is_empty() && !calls.is_empty() {
                        Value::Null
                    } else {
                        json!(text)
                    },
                );
                if !calls.is_empty() {
                    msg.insert("tool_calls".into(), Value::Array(calls));
                }
                out.push(Value::Object(msg));
            }
            "tool" | "ToolMessage" => {
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": m.get("tool_call_id").cloned().unwrap_or(Value::Null),
                    "content": content_text(m),
                }));
            }
            "remove" => {}
            _ => {
                out.push(json!({"role": "user", "content": openai_content(m.get("content"))}));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- decoding

#[derive(Default)]
pub(crate) struct OpenAiDecoder {
    started: bool,
    finished: bool,
    seen: bool,
}

fn malformed(what: &str, data: &str) -> DecodeError {
    DecodeError::Malformed(format!("{what}: {}", excerpt(data, 200)))
}

fn opt_string(v: Option<&Value>, field: &str, data: &str) -> Result<Option<String>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(&format!("`{field}` is not a string"), data)),
    }
}

fn num(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0)
}

impl Decoder for OpenAiDecoder {
    fn event(&mut self, ev: &SseEvent, out: &mut VecDeque<ChatEvent>) -> Result<Flow, DecodeError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(Flow::Continue);
        }
        if data == "[DONE]" {
            return Ok(Flow::Done);
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| malformed(&format!("invalid JSON ({e})"), data))?;
        let o = v
            .as_object()
            .ok_or_else(|| malformed("expected a JSON object", data))?;
        self.seen = true;
        if let Some(err) = o.get("error").filter(|e| !e.is_null()) {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string());
            return Err(DecodeError::Provider(msg));
        }
        if !self.started {
            self.started = true;
            out.push_back(ChatEvent::Start {
                id: opt_string(o.get("id"), "id", data)?,
                model: opt_string(o.get("model"), "model", data)?,
            });
        }
        let choices = match o.get("choices") {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => return Err(malformed("`choices` is not a list", data)),
        };
        // n > 1 is not supported: only the first choice is read
        let choice = choices
            .iter()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
        if let Some(choice) = choice {
            if !choice.is_object() {
                return Err(malformed("a choice is not an object", data));
            }
            match choice.get("delta") {
                None | Some(Value::Null) => {}
                Some(Value::Object(delta)) => self.delta(delta, data, out)?,
                Some(_) => return Err(malformed("`delta` is not an object", data)),
            }
            if let Some(reason) = opt_string(choice.get("finish_reason"), "finish_reason", data)? {
                self.finished = true;
                out.push_back(ChatEvent::Finish(reason));
            }
        }
        match o.get("usage") {
            None | Some(Value::Null) => {}
            Some(u @ Value::Object(_)) => {
                let input = num(u, "/prompt_tokens");
                let output = num(u, "/completion_tokens");
                let total = u
                    .get("total_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(input + output);
                let cache_read = u
                    .pointer("/prompt_tokens_details/cached_tokens")
                    .or_else(|| u.get("prompt_cache_hit_tokens"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                out.push_back(ChatEvent::Usage(Usage {
                    input_tokens: input,
                    output_tokens: output,
                    total_tokens: total,
                    cache_read_tokens: cache_read,
                    cache_creation_tokens: 0,
                    reasoning_tokens: num(u, "/completion_tokens_details/reasoning_tokens"),
                }));
            }
            Some(_) => return Err(malformed("`usage` is not an object", data)),
        }
        Ok(Flow::Continue)
    }

    fn eof(&mut self) -> Result<(), DecodeError> {
        if !self.seen {
            Err(DecodeError::Malformed(
                "the stream ended without any data".into(),
            ))
        } else if !self.finished {
            Err(DecodeError::Malformed(
                "the stream ended before the response was complete (no finish_reason and no [DONE])".into(),
            ))
        } else {
            Ok(())
        }
    }
}

impl OpenAiDecoder {
    fn delta(
        &mut self,
        delta: &Map<String, Value>,
        data: &str,
        out: &mut VecDeque<ChatEvent>,
    ) -> Result<(), DecodeError> {
        for key in ["reasoning_content", "reasoning"] {
            if let Some(r) = opt_string(delta.get(key), key, data)?.filter(|r| !r.is_empty()) {
                out.push_back(ChatEvent::Reasoning(r));
            }
        }
        match delta.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => out.push_back(ChatEvent::Text(s.clone())),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        out.push_back(ChatEvent::Text(t.to_string()));
                    }
                }
            }
            Some(_) => return Err(malformed("`content` is not a string", data)),
        }
        match delta.get("tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                for (pos, tc) in calls.iter().enumerate() {
                    let tc = tc
                        .as_object()
                        .ok_or_else(|| malformed("a tool call delta is not an object", data))?;
                    let index = match tc.get("index") {
                        None | Some(Value::Null) => pos,
                        Some(Value::Number(n)) => n
                            .as_u64()
                            .and_then(|i| usize::try_from(i).ok())
                            .filter(|i| *i < 1024)
                            .ok_or_else(|| malformed("tool call `index` is out of range", data))?,
                        Some(_) => {
                            return Err(malformed("tool call `index` is not a number", data));
                        }
                    };
                    let id = opt_string(tc.get("id"), "id", data)?;
                    let (name, arguments) = match tc.get("function") {
                        None | Some(Value::Null) => (None, String::new()),
                        Some(Value::Object(f)) => {
                            let name = opt_string(f.get("name"), "function.name", data)?;
                            let args = match f.get("arguments") {
                                None | Some(Value::Null) => String::new(),
                                Some(Value::String(s)) => s.clone(),
                                // some servers send the arguments as an object
                                Some(obj @ Value::Object(_)) => obj.to_string(),
                                Some(_) => {
                                    return Err(malformed(
                                        "`function.arguments` is not a string",
                                        data,
                                    ));
                                }
                            };
                            (name, args)
                        }
                        Some(_) => return Err(malformed("`function` is not an object", data)),
                    };
                    out.push_back(ChatEvent::ToolCall {
                        index,
                        id,
                        name,
                        arguments,
                    });
                }
            }
            Some(_) => return Err(malformed("`tool_calls` is not a list", data)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_langchain_messages() {
        let msgs = vec![
            json!({"type": "system", "content": "be brief"}),
            json!({"type": "human", "content": "hi"}),
            json!({"type": "ai", "content": "", "tool_calls": [{"name": "ls", "args": {"path": "."}, "id": "c1", "type": "tool_call"}],
                   "invalid_tool_calls": [{"name": "x", "args": "{bad", "id": "c2", "error": "e", "type": "invalid_tool_call"}]}),
            json!({"type": "tool", "content": "a.txt", "tool_call_id": "c1"}),
            json!({"type": "human", "content": [{"type": "text", "text": "look"}, {"type": "image", "base64": "AAA", "mime_type": "image/png"}]}),
        ];
        let out = to_openai_messages(&msgs);
        assert_eq!(out[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(out[1], json!({"role": "user", "content": "hi"}));
        assert_eq!(out[2]["content"], Value::Null);
        assert_eq!(
            out[2]["tool_calls"][0],
            json!({"id": "c1", "type": "function", "function": {"name": "ls", "arguments": "{\"path\":\".\"}"}})
        );
        assert_eq!(out[2]["tool_calls"][1]["function"]["arguments"], "{bad");
        assert_eq!(
            out[3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"})
        );
        assert_eq!(
            out[4]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}})
        );
    }
}
