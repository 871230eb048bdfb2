//! Fake provider servers for tests: [`FakeOpenAi`] (`POST /v1/chat/completions`) and
//! [`FakeAnthropic`] (`POST /v1/messages`) listen on `127.0.0.1:0`, speak real HTTP + SSE, serve
//! a queue of [`Scripted`] responses in order, and record every request they receive.
//!
//! Each reply is scripted once and rendered in the provider's own wire format: text streamed in
//! N chunks, reasoning, tool calls whose JSON arguments arrive in fragments, usage; or an HTTP
//! error (429 with `Retry-After`, 500, ...), a malformed chunk, a stream cut short, a stall.
//! When the queue is empty the server answers 400 with a message saying so.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// A tool call of a scripted reply.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeToolCall {
    /// Call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// The raw JSON argument text (may be deliberately invalid).
    pub arguments: String,
    /// In how many fragments the arguments are streamed.
    pub fragments: usize,
}

/// A successful, streamed reply.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeReply {
    /// Answer text.
    pub text: String,
    /// In how many chunks the text is streamed.
    pub chunks: usize,
    /// Reasoning text (OpenAI `reasoning_content`, Anthropic thinking block).
    pub reasoning: Option<String>,
    /// Tool calls.
    pub tool_calls: Vec<FakeToolCall>,
    /// (input tokens, output tokens).
    pub usage: (u64, u64),
    /// Finish / stop reason; default `stop`/`end_turn`, or `tool_calls`/`tool_use` with tools.
    pub finish_reason: Option<String>,
    /// Pause before each frame after the first (a provider producing tokens over time).
    pub gap: Duration,
}

impl FakeReply {
    /// `text` streamed in `chunks` chunks, usage (10, 5).
    pub fn text(text: &str, chunks: usize) -> Self {
        Self {
            text: text.to_string(),
            chunks: chunks.max(1),
            reasoning: None,
            tool_calls: Vec::new(),
            usage: (10, 5),
            finish_reason: None,
            gap: Duration::ZERO,
        }
    }

    /// One tool call whose arguments (`args`, serialized) arrive in 3 fragments.
    pub fn tool_call(id: &str, name: &str, args: Value) -> Self {
        Self::text("", 1).with_tool_call(id, name, &args.to_string(), 3)
    }

    /// Adds a tool call with raw argument text in `fragments` fragments.
    pub fn with_tool_call(
        mut self,
        id: &str,
        name: &str,
        arguments: &str,
        fragments: usize,
    ) -> Self {
        self.tool_calls.push(FakeToolCall {
            id: id.to_string(),
            name: name.to_string(),
            arguments: arguments.to_string(),
            fragments: fragments.max(1),
        });
        self
    }

    /// Sets the usage.
    pub fn with_usage(mut self, input: u64, output: u64) -> Self {
        self.usage = (input, output);
        self
    }

    /// Adds reasoning text.
    pub fn with_reasoning(mut self, reasoning: &str) -> Self {
        self.reasoning = Some(reasoning.to_string());
        self
    }

    /// Overrides the finish reason.
    pub fn with_finish_reason(mut self, reason: &str) -> Self {
        self.finish_reason = Some(reason.to_string());
        self
    }

    /// Sends the frames `gap` apart.
    pub fn with_gap(mut self, gap: Duration) -> Self {
        self.gap = gap;
        self
    }
}

/// One scripted response.
#[derive(Clone, Debug, PartialEq)]
pub enum Scripted {
    /// A streamed reply.
    Reply(FakeReply),
    /// An HTTP error with a provider-shaped JSON body.
    Error {
        /// Status code.
        status: u16,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
        /// Error message in the body.
        message: String,
    },
    /// The first `valid_chunks` text chunks of `reply`, then `raw` as one SSE data line.
    Malformed {
        /// Reply whose beginning is sent.
        reply: FakeReply,
        /// How many text chunks go out before the bad one.
        valid_chunks: usize,
        /// The bad data.
        raw: String,
    },
    /// Exact SSE body text.
    Raw(String),
    /// The first `chunks` text chunks of `reply`, then the connection is closed.
    Truncated {
        /// Reply whose beginning is sent.
        reply: FakeReply,
        /// How many text chunks go out.
        chunks: usize,
    },
    /// Status 200 and headers, then nothing for this long.
    Stall(Duration),
}

impl Scripted {
    /// A 429 with `Retry-After: secs`.
    pub fn rate_limited(retry_after: u64) -> Self {
        Scripted::Error {
            status: 429,
            retry_after: Some(retry_after),
            message: "Rate limit reached, please retry".into(),
        }
    }

    /// A 500.
    pub fn server_error() -> Self {
        Scripted::Error {
            status: 500,
            retry_after: None,
            message: "The server had an error while processing your request".into(),
        }
    }
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Path.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Parsed JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Scripted>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Flavor {
    OpenAi,
    Anthropic,
}

struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    async fn start(flavor: Flavor) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let app = match flavor {
            Flavor::OpenAi => Router::new()
                .route("/v1/chat/completions", post(handle_openai))
                .route("/chat/completions", post(handle_openai)),
            Flavor::Anthropic => Router::new().route("/v1/messages", post(handle_anthropic)),
        }
        .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // owned by this struct: aborted on drop
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake provider server stopped");
            }
        });
        Ok(Self { addr, shared, task })
    }

    fn push(&self, s: Scripted) {
        self.shared.script.lock().push_back(s);
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().clone()
    }
}

/// A fake OpenAI-compatible server.
pub struct FakeOpenAi(FakeServer);

impl FakeOpenAi {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Ok(Self(FakeServer::start(Flavor::OpenAi).await?))
    }

    /// Base URL to configure (`http://127.0.0.1:<port>/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.0.addr)
    }

    /// Queues a response.
    pub fn push(&self, s: Scripted) -> &Self {
        self.0.push(s);
        self
    }

    /// Queues a streamed reply.
    pub fn reply(&self, r: FakeReply) -> &Self {
        self.push(Scripted::Reply(r))
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.0.requests()
    }

    /// Responses still queued.
    pub fn remaining(&self) -> usize {
        self.0.shared.script.lock().len()
    }
}

/// A fake Anthropic Messages API server.
pub struct FakeAnthropic(FakeServer);

impl FakeAnthropic {
    /// Starts on `127.0.0.1:0`.
    pub async fn start() -> std::io::Result<Self> {
        Ok(Self(FakeServer::start(Flavor::Anthropic).await?))
    }

    /// Base URL to configure (`http://127.0.0.1:<port>`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.0.addr)
    }

    /// Queues a response.
    pub fn push(&self, s: Scripted) -> &Self {
        self.0.push(s);
        self
    }

    /// Queues a streamed reply.
    pub fn reply(&self, r: FakeReply) -> &Self {
        self.push(Scripted::Reply(r))
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.0.requests()
    }

    /// Responses still queued.
    pub fn remaining(&self) -> usize {
        self.0.shared.script.lock().len()
    }
}

// ---------------------------------------------------------------- handlers

fn record(shared: &Shared, path: &str, headers: &HeaderMap, body: &Bytes) -> Value {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    shared.requests.lock().push(RecordedRequest {
        path: path.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: parsed.clone(),
    });
    parsed
}

async fn handle_openai(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = record(&shared, "/v1/chat/completions", &headers, &body);
    let next = shared.script.lock().pop_front();
    respond(Flavor::OpenAi, next, &req)
}

async fn handle_anthropic(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = record(&shared, "/v1/messages", &headers, &body);
    let next = shared.script.lock().pop_front();
    respond(Flavor::Anthropic, next, &req)
}

fn json_response(status: u16, retry_after: Option<u64>, body: Value) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Frames as a streamed body, one write per frame (so clients see real chunking), `gap` apart.
fn frames_body(frames: Vec<String>, gap: Duration) -> Body {
    let stream =
        futures::stream::iter(frames.into_iter().enumerate()).then(move |(i, f)| async move {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            } else {
                tokio::task::yield_now().await;
            }
            Ok::<_, Infallible>(Bytes::from(f))
        });
    Body::from_stream(stream)
}

fn respond(flavor: Flavor, next: Option<Scripted>, req: &Value) -> Response {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_string();
    let error_body = |message: &str, kind: &str| match flavor {
        Flavor::OpenAi => json!({"error": {"message": message, "type": kind, "code": null}}),
        Flavor::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    };
    let Some(next) = next else {
        return json_response(
            400,
            None,
            error_body(
                "fake server: no scripted response left",
                "invalid_request_error",
            ),
        );
    };
    let render = |reply: &FakeReply| match flavor {
        Flavor::OpenAi => openai_frames(reply, &model),
        Flavor::Anthropic => anthropic_frames(reply, &model),
    };
    match next {
        Scripted::Reply(r) => sse_response(frames_body(render(&r).all(), r.gap)),
        Scripted::Error {
            status,
            retry_after,
            message,
        } => {
            let kind = if status == 429 {
                "rate_limit_error"
            } else {
                "api_error"
            };
            json_response(status, retry_after, error_body(&message, kind))
        }
        Scripted::Malformed {
            reply,
            valid_chunks,
            raw,
        } => {
            let f = render(&reply);
            let mut frames = f.head;
            frames.extend(f.text.into_iter().take(valid_chunks));
            frames.push(format!("data: {raw}\n\n"));
            sse_response(frames_body(frames, reply.gap))
        }
        Scripted::Raw(text) => sse_response(Body::from(text)),
        Scripted::Truncated { reply, chunks } => {
            let f = render(&reply);
            let mut frames = f.head;
            frames.extend(f.text.into_iter().take(chunks));
            sse_response(frames_body(frames, reply.gap))
        }
        Scripted::Stall(d) => {
            let stream = futures::stream::once(async move {
                tokio::time::sleep(d).await;
                Ok::<_, Infallible>(Bytes::new())
            });
            sse_response(Body::from_stream(stream))
        }
    }
}

/// Rendered frames: head (start), text chunks, tail (everything else).
struct Frames {
    head: Vec<String>,
    text: Vec<String>,
    tail: Vec<String>,
}

impl Frames {
    fn all(self) -> Vec<String> {
        let mut v = self.head;
        v.extend(self.text);
        v.extend(self.tail);
        v
    }
}

/// Splits `s` into `n` pieces of (nearly) equal char counts; empty -> no pieces.
pub fn split_pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return Vec::new();
    }
    let n = n.clamp(1, chars.len());
    let size = chars.len().div_ceil(n);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

fn data(v: Value) -> String {
    format!("data: {v}\n\n")
}

fn openai_frames(r: &FakeReply, model: &str) -> Frames {
    let id = format!("chatcmpl-fake-{}", uuid::Uuid::new_v4().simple());
    let chunk = |delta: Value, finish: Value| {
        data(json!({
            "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        }))
    };
    let head = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let mut text = Vec::new();
    let mut tail = Vec::new();
    if let Some(reasoning) = &r.reasoning {
        for piece in split_pieces(reasoning, 2) {
            text.push(chunk(json!({"reasoning_content": piece}), Value::Null));
        }
    }
    for piece in split_pieces(&r.text, r.chunks) {
        text.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (i, tc) in r.tool_calls.iter().enumerate() {
        let frags = split_pieces(&tc.arguments, tc.fragments);
        tail.push(chunk(
            json!({"tool_calls": [{"index": i, "id": tc.id, "type": "function",
                   "function": {"name": tc.name, "arguments": ""}}]}),
            Value::Null,
        ));
        for f in frags {
            tail.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": f}}]}),
                Value::Null,
            ));
        }
    }
    let finish = r.finish_reason.clone().unwrap_or_else(|| {
        if r.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        }
        .to_string()
    });
    tail.push(chunk(json!({}), json!(finish)));
    tail.push(data(json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [],
        "usage": {"prompt_tokens": r.usage.0, "completion_tokens": r.usage.1,
                  "total_tokens": r.usage.0 + r.usage.1,
                  "prompt_tokens_details": {"cached_tokens": 0}},
    })));
    tail.push("data: [DONE]\n\n".to_string());
    Frames { head, text, tail }
}

fn event(name: &str, v: Value) -> String {
    format!("event: {name}\ndata: {v}\n\n")
}

fn anthropic_frames(r: &FakeReply, model: &str) -> Frames {
    let id = format!("msg_fake_{}", uuid::Uuid::new_v4().simple());
    let mut head = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": r.usage.0, "output_tokens": 1},
        }}),
    )];
    head.push(event("ping", json!({"type": "ping"})));
    let mut index = 0;
    if let Some(reasoning) = &r.reasoning {
        head.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": ""}}),
        ));
        for piece in split_pieces(reasoning, 2) {
            head.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": piece}}),
            ));
        }
        head.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": "fake-signature"}}),
        ));
        head.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    let mut text = Vec::new();
    let mut tail = Vec::new();
    if !r.text.is_empty() {
        head.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in split_pieces(&r.text, r.chunks) {
            text.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        tail.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for tc in &r.tool_calls {
        tail.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                   "content_block": {"type": "tool_use", "id": tc.id, "name": tc.name, "input": {}}}),
        ));
        for f in split_pieces(&tc.arguments, tc.fragments) {
            tail.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": f}}),
            ));
        }
        tail.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    let stop = r.finish_reason.clone().unwrap_or_else(|| {
        if r.tool_calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        }
        .to_string()
    });
    tail.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": r.usage.1}}),
    ));
    tail.push(event("message_stop", json!({"type": "message_stop"})));
    Frames { head, text, tail }
}
