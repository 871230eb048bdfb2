//! The OpenAI-compatible and Anthropic clients against the fake provider servers, over real
//! HTTP on loopback: streaming, tool-call fragments, usage, reasoning, retries, errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_llm::fake::{FakeAnthropic, FakeOpenAi, FakeReply, Scripted};
use antler_llm::{
    ChatEvent, ChatModel, ChatRequest, LlmError, MessageAssembler, ModelConfig, RetryPolicy,
    ToolSpec, build_client_with,
};
use futures::StreamExt;
use serde_json::{Value, json};

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    }
}

fn openai_model(fake: &FakeOpenAi) -> (ModelConfig, Arc<dyn ChatModel>) {
    let mut cfg = ModelConfig::openai("gpt-test", "gpt-4o-mini", &fake.base_url());
    cfg.api_key = Some("sk-secret-key".into());
    cfg.temperature = Some(0.2);
    cfg.max_tokens = Some(256);
    let client = build_client_with(&cfg, fast_retry()).unwrap();
    (cfg, client)
}

fn anthropic_model(fake: &FakeAnthropic) -> (ModelConfig, Arc<dyn ChatModel>) {
    let mut cfg = ModelConfig::anthropic("claude-test", "claude-sonnet", &fake.base_url());
    cfg.api_key = Some("ak-secret-key".into());
    let client = build_client_with(&cfg, fast_retry()).unwrap();
    (cfg, client)
}

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            json!({"type": "system", "content": "be brief", "id": "s"}),
            json!({"type": "human", "content": text, "id": "h"}),
        ],
        tools: vec![ToolSpec {
            name: "write_file".into(),
            description: "write".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }],
        ..Default::default()
    }
}

async fn collect(model: &dyn ChatModel, req: ChatRequest) -> (Vec<ChatEvent>, Option<LlmError>) {
    let mut events = Vec::new();
    let mut s = model.stream(req);
    while let Some(item) = s.next().await {
        match item {
            Ok(e) => events.push(e),
            Err(e) => return (events, Some(e)),
        }
    }
    (events, None)
}

fn assemble(events: &[ChatEvent], provider: &'static str) -> (Vec<Value>, Value) {
    let mut asm = MessageAssembler::new("lead_agent", "m", provider);
    let chunks = events.iter().filter_map(|e| asm.apply(e)).collect();
    (chunks, asm.finish())
}

fn texts(events: &[ChatEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ChatEvent::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------- OpenAI-compatible

#[tokio::test]
async fn openai_streams_text_in_chunks_with_usage() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.reply(FakeReply::text("hello from the fake model", 5).with_usage(12, 7));
    let (_, model) = openai_model(&fake);
    let (events, err) = collect(model.as_ref(), request("hi")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(texts(&events).len(), 5);
    assert_eq!(texts(&events).concat(), "hello from the fake model");
    assert!(events.contains(&ChatEvent::Finish("stop".into())));
    let (chunks, msg) = assemble(&events, "openai");
    assert_eq!(chunks.iter().filter(|c| c["content"] != "").count(), 5);
    assert!(
        chunks
            .iter()
            .all(|c| c["type"] == "AIMessageChunk" && c["id"] == msg["id"])
    );
    assert_eq!(msg["content"], "hello from the fake model");
    assert_eq!(
        msg["usage_metadata"],
        json!({"input_tokens": 12, "output_tokens": 7, "total_tokens": 19})
    );
    assert_eq!(msg["response_metadata"]["finish_reason"], "stop");
    assert_eq!(msg["response_metadata"]["model_name"], "gpt-4o-mini");

    // the request as the provider saw it
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some("Bearer sk-secret-key"));
    let b = &r.body;
    assert_eq!(b["model"], "gpt-4o-mini");
    assert_eq!(b["stream"], true);
    assert_eq!(b["stream_options"], json!({"include_usage": true}));
    assert_eq!(b["max_tokens"], 256);
    assert_eq!(b["temperature"], 0.2);
    assert_eq!(
        b["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    );
    assert_eq!(b["tools"][0]["type"], "function");
    assert_eq!(b["tools"][0]["function"]["name"], "write_file");
}

#[tokio::test]
async fn openai_assembles_tool_call_arguments_from_fragments() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.reply(
        FakeReply::text("", 1)
            .with_tool_call(
                "call_a",
                "write_file",
                r#"{"path": "notes/a.txt", "content": "x"}"#,
                6,
            )
            .with_tool_call("call_b", "read_file", r#"{"path": "notes/a.txt"}"#, 4)
            .with_tool_call("call_c", "ls", r#"{"path": "#, 2),
    );
    let (_, model) = openai_model(&fake);
    let (events, err) = collect(model.as_ref(), request("write it")).await;
    assert!(err.is_none(), "{err:?}");
    let fragments = events
        .iter()
        .filter(|e| matches!(e, ChatEvent::ToolCall { index: 0, .. }))
        .count();
    assert!(fragments >= 6, "{fragments} fragments");
    let (chunks, msg) = assemble(&events, "openai");
    assert!(
        chunks
            .iter()
            .any(|c| c["tool_call_chunks"][0]["index"] == 1)
    );
    assert_eq!(
        msg["tool_calls"],
        json!([
            {"name": "write_file", "args": {"path": "notes/a.txt", "content": "x"}, "id": "call_a", "type": "tool_call"},
            {"name": "read_file", "args": {"path": "notes/a.txt"}, "id": "call_b", "type": "tool_call"},
        ])
    );
    // the truncated JSON becomes an invalid tool call, not a panic
    assert_eq!(msg["invalid_tool_calls"][0]["id"], "call_c");
    assert_eq!(msg["invalid_tool_calls"][0]["args"], r#"{"path": "#);
    assert_eq!(msg["response_metadata"]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn openai_reasoning_content_and_lenient_fields() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.reply(
        FakeReply::text("42", 1)
            .with_reasoning("think think")
            .with_finish_reason("content_filter_v9"),
    );
    // unknown fields, unknown finish reason, `reasoning` alias, no [DONE]
    fake.push(Scripted::Raw(
        "data: {\"id\":\"x\",\"model\":\"m\",\"new_field\":{\"a\":1},\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"r\",\"content\":\"ok\",\"audio\":null},\"finish_reason\":null}]}\n\n\
         : keep-alive comment\n\n\
         data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"eos\"}]}\n\n"
            .into(),
    ));
    let (_, model) = openai_model(&fake);
    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert!(err.is_none(), "{err:?}");
    let (chunks, msg) = assemble(&events, "openai");
    assert_eq!(msg["additional_kwargs"]["reasoning_content"], "think think");
    assert!(
        chunks
            .iter()
            .any(|c| c["additional_kwargs"]["reasoning_content"].is_string())
    );
    assert_eq!(msg["content"], "42");
    assert_eq!(
        msg["response_metadata"]["finish_reason"],
        "content_filter_v9"
    );

    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert!(err.is_none(), "{err:?}");
    let (_, msg) = assemble(&events, "openai");
    assert_eq!(msg["content"], "ok");
    assert_eq!(msg["additional_kwargs"]["reasoning_content"], "r");
    assert_eq!(msg["response_metadata"]["finish_reason"], "eos");
}

#[tokio::test]
async fn openai_retries_after_429_then_succeeds() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.push(Scripted::rate_limited(1));
    fake.push(Scripted::server_error());
    fake.reply(FakeReply::text("finally", 2));
    let (_, model) = openai_model(&fake);
    let started = Instant::now();
    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(texts(&events).concat(), "finally");
    assert_eq!(fake.requests().len(), 3);
    // Retry-After: 1 was honoured
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    // every attempt sent the same body
    let reqs = fake.requests();
    assert_eq!(reqs[0].body, reqs[2].body);
}

#[tokio::test]
async fn openai_exhausted_retries_give_a_clear_error() {
    let fake = FakeOpenAi::start().await.unwrap();
    for _ in 0..3 {
        fake.push(Scripted::Error {
            status: 429,
            retry_after: Some(0),
            message: "Rate limit reached for gpt-4o-mini".into(),
        });
    }
    let (_, model) = openai_model(&fake);
    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert!(events.is_empty());
    let err = err.expect("an error");
    assert_eq!(err.kind(), "RateLimitError");
    let text = err.to_string();
    assert!(text.contains("HTTP 429"), "{text}");
    assert!(text.contains("after 3 attempts"), "{text}");
    assert!(
        text.contains("Rate limit reached for gpt-4o-mini"),
        "{text}"
    );
    assert!(text.contains("gpt-test"), "{text}");
    assert!(!text.contains("sk-secret-key"), "{text}");
    assert_eq!(fake.requests().len(), 3, "1 try + max_retries (2)");
}

#[tokio::test]
async fn openai_client_errors_are_not_retried() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.push(Scripted::Error {
        status: 401,
        retry_after: None,
        message: "Incorrect API key provided".into(),
    });
    let (_, model) = openai_model(&fake);
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap();
    assert_eq!(err.kind(), "AuthenticationError");
    assert!(err.to_string().contains("Incorrect API key provided"));
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn openai_malformed_chunk_is_an_error_after_the_valid_ones() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.push(Scripted::Malformed {
        reply: FakeReply::text("one two three", 3),
        valid_chunks: 2,
        raw: "{\"choices\": [{\"delta\": {\"content\": \"unterminated".into(),
    });
    fake.push(Scripted::Raw("data: {\"choices\": \"nope\"}\n\n".into()));
    fake.push(Scripted::Raw("data: [1, 2]\n\n".into()));
    let (_, model) = openai_model(&fake);
    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert_eq!(texts(&events).len(), 2, "valid chunks are delivered first");
    let err = err.unwrap();
    assert!(matches!(err, LlmError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid JSON"), "{err}");
    assert!(err.to_string().contains("unterminated"), "{err}");
    // no retry once a chunk was delivered, and a malformed body is not retried anyway
    assert_eq!(fake.requests().len(), 1);

    let (_, err) = collect(model.as_ref(), request("q")).await;
    assert!(err.unwrap().to_string().contains("`choices` is not a list"));
    let (_, err) = collect(model.as_ref(), request("q")).await;
    assert!(err.unwrap().to_string().contains("expected a JSON object"));
}

#[tokio::test]
async fn openai_truncated_stream_and_stream_error_event() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.push(Scripted::Truncated {
        reply: FakeReply::text("abcdef", 3),
        chunks: 1,
    });
    fake.push(Scripted::Raw(
        "data: {\"error\": {\"message\": \"context length exceeded\"}}\n\n".into(),
    ));
    let (_, model) = openai_model(&fake);
    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert_eq!(texts(&events), vec!["ab".to_string()]);
    assert!(
        err.unwrap()
            .to_string()
            .contains("ended before the response was complete")
    );
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap();
    assert!(matches!(err, LlmError::Provider { .. }));
    assert!(err.to_string().contains("context length exceeded"));
}

#[tokio::test]
async fn openai_timeout_and_connection_refused() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.push(Scripted::Stall(Duration::from_secs(5)));
    let mut cfg = ModelConfig::openai("slow", "m", &fake.base_url());
    cfg.timeout = Duration::from_millis(300);
    cfg.max_retries = 0;
    let model = build_client_with(&cfg, fast_retry()).unwrap();
    let started = Instant::now();
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap();
    assert!(matches!(err, LlmError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.kind(), "APITimeoutError");

    // nothing listens on this port: connection errors are retried, then reported
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut cfg = ModelConfig::openai("gone", "m", &format!("http://127.0.0.1:{port}/v1"));
    cfg.max_retries = 1;
    let model = build_client_with(&cfg, fast_retry()).unwrap();
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap();
    assert!(
        matches!(err, LlmError::Connect { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("could not reach openai model 'gone' after 2 attempts"),
        "{err}"
    );
}

#[tokio::test]
async fn openai_thinking_fields_and_extra_are_merged_into_the_body() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.reply(FakeReply::text("a", 1));
    fake.reply(FakeReply::text("b", 1));
    let cfg = ModelConfig::from_value(&json!({
        "name": "ds", "use": "langchain_deepseek:ChatDeepSeek", "model": "deepseek-v3",
        "base_url": fake.base_url(), "api_key": "k", "supports_thinking": true,
        "when_thinking_enabled": {"extra_body": {"thinking": {"type": "enabled"}}},
        "when_thinking_disabled": {"extra_body": {"thinking": {"type": "disabled"}}},
        "top_p": 0.5,
    }))
    .unwrap();
    let model = build_client_with(&cfg, fast_retry()).unwrap();
    let mut req = request("q");
    req.thinking = Some(true);
    collect(model.as_ref(), req.clone()).await;
    req.thinking = Some(false);
    collect(model.as_ref(), req).await;
    let reqs = fake.requests();
    assert_eq!(reqs[0].body["thinking"], json!({"type": "enabled"}));
    assert_eq!(reqs[1].body["thinking"], json!({"type": "disabled"}));
    assert_eq!(reqs[0].body["top_p"], 0.5);
}

#[tokio::test]
async fn missing_env_key_is_a_clear_config_error() {
    let fake = FakeOpenAi::start().await.unwrap();
    let mut cfg = ModelConfig::openai("envy", "m", &fake.base_url());
    cfg.api_key = Some("$ANTLER_TEST_SURELY_UNSET_KEY".into());
    let model = build_client_with(&cfg, fast_retry()).unwrap();
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap();
    assert!(matches!(err, LlmError::Config { .. }));
    assert!(err.to_string().contains("ANTLER_TEST_SURELY_UNSET_KEY"));
    assert!(fake.requests().is_empty());
}

// ---------------------------------------------------------------- Anthropic

#[tokio::test]
async fn anthropic_streams_text_thinking_tools_and_usage() {
    let fake = FakeAnthropic::start().await.unwrap();
    fake.reply(
        FakeReply::text("Let me write that.", 4)
            .with_reasoning("the user wants a file")
            .with_tool_call(
                "toolu_1",
                "write_file",
                r#"{"path": "a.txt", "content": "hi"}"#,
                5,
            )
            .with_usage(30, 11),
    );
    let (_, model) = anthropic_model(&fake);
    let (events, err) = collect(model.as_ref(), request("write a.txt")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(texts(&events).len(), 4);
    let (_, msg) = assemble(&events, "anthropic");
    assert_eq!(msg["content"], "Let me write that.");
    assert_eq!(
        msg["additional_kwargs"]["reasoning_content"],
        "the user wants a file"
    );
    assert_eq!(
        msg["additional_kwargs"]["reasoning_signature"],
        "fake-signature"
    );
    assert_eq!(
        msg["tool_calls"],
        json!([{"name": "write_file", "args": {"path": "a.txt", "content": "hi"}, "id": "toolu_1", "type": "tool_call"}])
    );
    assert_eq!(
        msg["usage_metadata"],
        json!({"input_tokens": 30, "output_tokens": 11, "total_tokens": 41})
    );
    assert_eq!(msg["response_metadata"]["stop_reason"], "tool_use");
    assert_eq!(msg["response_metadata"]["model_name"], "claude-sonnet");

    let r = &fake.requests()[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some("ak-secret-key"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.body["system"], "be brief");
    assert_eq!(
        r.body["messages"],
        json!([{"role": "user", "content": "write a.txt"}])
    );
    assert_eq!(r.body["max_tokens"], 4096);
    assert_eq!(r.body["stream"], true);
    assert_eq!(r.body["tools"][0]["input_schema"]["type"], "object");
}

#[tokio::test]
async fn anthropic_tool_round_trip_body() {
    let fake = FakeAnthropic::start().await.unwrap();
    fake.reply(FakeReply::text("done", 1));
    let (_, model) = anthropic_model(&fake);
    let req = ChatRequest {
        messages: vec![
            json!({"type": "human", "content": "ls"}),
            json!({"type": "ai", "content": "", "tool_calls": [{"name": "ls", "args": {}, "id": "toolu_9", "type": "tool_call"}]}),
            json!({"type": "tool", "content": "a.txt", "tool_call_id": "toolu_9", "status": "success"}),
        ],
        ..Default::default()
    };
    let (_, err) = collect(model.as_ref(), req).await;
    assert!(err.is_none(), "{err:?}");
    let body = &fake.requests()[0].body;
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": "ls"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "ls", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "a.txt"}]},
        ])
    );
    assert!(body.get("system").is_none());
}

#[tokio::test]
async fn anthropic_retries_overload_then_reports_errors() {
    let fake = FakeAnthropic::start().await.unwrap();
    fake.push(Scripted::Error {
        status: 529,
        retry_after: None,
        message: "Overloaded".into(),
    });
    fake.reply(FakeReply::text("ok", 1));
    let (_, model) = anthropic_model(&fake);
    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(texts(&events).concat(), "ok");
    assert_eq!(fake.requests().len(), 2);

    for _ in 0..3 {
        fake.push(Scripted::rate_limited(0));
    }
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap().to_string();
    assert!(
        err.contains("anthropic model 'claude-test' returned HTTP 429 after 3 attempts"),
        "{err}"
    );
    assert!(!err.contains("ak-secret-key"));
}

#[tokio::test]
async fn anthropic_error_event_malformed_and_truncated() {
    let fake = FakeAnthropic::start().await.unwrap();
    fake.push(Scripted::Raw(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":1}}}\n\n\
         event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
            .into(),
    ));
    fake.push(Scripted::Malformed {
        reply: FakeReply::text("abc", 3),
        valid_chunks: 1,
        raw: "{\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": 5}}".into(),
    });
    fake.push(Scripted::Truncated {
        reply: FakeReply::text("abc", 3),
        chunks: 2,
    });
    let (_, model) = anthropic_model(&fake);
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap();
    assert!(matches!(err, LlmError::Provider { .. }));
    assert!(
        err.to_string().contains("overloaded_error: Overloaded"),
        "{err}"
    );

    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert_eq!(texts(&events), vec!["a".to_string()]);
    assert!(
        err.unwrap()
            .to_string()
            .contains("`text` is missing or not a string")
    );

    let (events, err) = collect(model.as_ref(), request("q")).await;
    assert_eq!(texts(&events).concat(), "ab");
    assert!(
        err.unwrap()
            .to_string()
            .contains("ended before message_stop")
    );
}

/// HTTPS goes through rustls: a TLS handshake against a plain-HTTP server fails with a TLS
/// error (and is not mistaken for a provider answer).
#[cfg(feature = "tls")]
#[tokio::test]
async fn https_urls_go_through_tls() {
    let fake = FakeOpenAi::start().await.unwrap();
    let url = fake.base_url().replace("http://", "https://");
    let mut cfg = ModelConfig::openai("tls", "m", &url);
    cfg.max_retries = 0;
    let model = build_client_with(&cfg, fast_retry()).unwrap();
    let (_, err) = collect(model.as_ref(), request("q")).await;
    let err = err.unwrap();
    assert!(matches!(err, LlmError::Connect { .. }), "{err:?}");
    let text = err.to_string().to_ascii_lowercase();
    assert!(
        text.contains("tls") || text.contains("corrupt") || text.contains("handshake"),
        "{text}"
    );
    assert!(
        fake.requests().is_empty(),
        "no HTTP request reached the plain server"
    );
}
