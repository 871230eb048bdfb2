//! The six example graphs that ship with the server (`echo`, `slow`, `interrupt`, `fail`,
//! `chat`, `parent`), the Rust twins of `peers/graphs/graphs.py`. All share the state
//! `{messages: add_messages, title: last-value}`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::context::{ModelCallInfo, NodeContext, NodeInput};
use crate::graph::{CompiledGraph, StateGraph};
use crate::messages::{self, ai_chunk, ai_message, ai_message_with_id, python_str};
use crate::types::{BuildError, END, NodeError, NodeOutput, Reducer, START};

fn state(name: &str) -> StateGraph {
    StateGraph::new(name)
        .channel("messages", Reducer::AddMessages)
        .channel("title", Reducer::LastValue)
}

fn humans(input: &NodeInput) -> impl DoubleEndedIterator<Item = &Value> {
    input.messages().filter(|m| messages::is_human(m))
}

fn content_str(m: Option<&Value>) -> String {
    m.and_then(|m| m.get("content"))
        .map(python_str)
        .unwrap_or_default()
}

/// `echo`: appends `"echo: " + <last human content>`, sets `title` to the first 20 chars of the
/// first human message.
pub fn echo() -> Result<CompiledGraph, BuildError> {
    state("echo")
        .node("echo", |input: NodeInput, _ctx: NodeContext| async move {
            let last = content_str(humans(&input).next_back());
            let first = content_str(humans(&input).next());
            let title: String = first.chars().take(20).collect();
            Ok(NodeOutput::Update(json!({
                "messages": [ai_message(format!("echo: {last}"))],
                "title": title,
            })))
        })
        .edge(START, "echo")
        .edge("echo", END)
        .compile()
}

/// `configurable.delay` in seconds (number or numeric string; default 0.5).
fn delay(ctx: &NodeContext) -> f64 {
    match ctx.config().get("delay") {
        None | Some(Value::Null) => 0.5,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.5),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0.5),
        Some(_) => 0.5,
    }
}

async fn slow_step(n: u64, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
    ctx.write_custom(json!({"step": n, "phase": "start"}));
    let secs = delay(&ctx);
    if secs.is_finite() && secs > 0.0 {
        let cancel = ctx.cancellation();
        tokio::select! {
            _ = cancel.cancelled() => return Err(NodeError::Cancelled),
            _ = tokio::time::sleep(Duration::from_secs_f64(secs.min(86_400.0))) => {}
        }
    }
    ctx.write_custom(json!({"step": n, "phase": "end"}));
    Ok(NodeOutput::Update(
        json!({"messages": [ai_message(format!("step {n}"))]}),
    ))
}

/// `slow`: `step1 -> step2 -> step3`, each emitting custom start/end events around a sleep of
/// `configurable.delay` seconds and appending `"step N"`.
pub fn slow() -> Result<CompiledGraph, BuildError> {
    state("slow")
        .node("step1", |_i, ctx| slow_step(1, ctx))
        .node("step2", |_i, ctx| slow_step(2, ctx))
        .node("step3", |_i, ctx| slow_step(3, ctx))
        .edge(START, "step1")
        .edge("step1", "step2")
        .edge("step2", "step3")
        .edge("step3", END)
        .compile()
}

/// `interrupt`: `ask` interrupts with `{"question": "approve?"}`, then appends
/// `"resumed with: <str(resume)>"`.
pub fn interrupt() -> Result<CompiledGraph, BuildError> {
    state("interrupt")
        .node("ask", |_i, ctx: NodeContext| async move {
            let answer = ctx.interrupt(json!({"question": "approve?"}))?;
            Ok(NodeOutput::Update(json!({
                "messages": [ai_message(format!("resumed with: {}", python_str(&answer)))]
            })))
        })
        .edge(START, "ask")
        .edge("ask", END)
        .compile()
}

/// `fail`: raises `ValueError("boom")`.
pub fn fail() -> Result<CompiledGraph, BuildError> {
    state("fail")
        .node("fail", |_i, _ctx| async move {
            Err::<NodeOutput, _>(NodeError::failed("ValueError", "boom"))
        })
        .edge(START, "fail")
        .edge("fail", END)
        .compile()
}

/// The scripted reply of the fake chat model.
pub const FAKE_REPLY: &str = "hello from the fake model";

/// Tokens of [`FAKE_REPLY`] as GenericFakeChatModel streams them (words and the spaces).
pub fn fake_tokens() -> Vec<String> {
    let mut out = Vec::new();
    for (i, word) in FAKE_REPLY.split(' ').enumerate() {
        if i > 0 {
            out.push(" ".to_string());
        }
        out.push(word.to_string());
    }
    out
}

/// `chat`: emits a custom `task_running` event, then a scripted chat model streams
/// [`FAKE_REPLY`] chunk by chunk and the whole AI message is appended.
pub fn chat() -> Result<CompiledGraph, BuildError> {
    state("chat")
        .node("chat", |input: NodeInput, ctx: NodeContext| async move {
            ctx.write_custom(
                json!({"type": "task_running", "task_id": "t1", "note": "calling fake llm"}),
            );
            let run = format!("lc_run--{}", uuid::Uuid::now_v7());
            if !ctx.streaming() {
                // invoke without streaming: LangChain suffixes the generation index
                let msg = ai_message_with_id(format!("{run}-0"), FAKE_REPLY);
                return Ok(NodeOutput::Update(json!({"messages": [msg]})));
            }
            let mut extra = serde_json::Map::new();
            extra.insert("lc_versions".into(), json!({"langchain-core": "1.7.2"}));
            let call = ctx.model_call(ModelCallInfo {
                name: "GenericFakeChatModel".into(),
                ls_provider: "genericfakechatmodel".into(),
                ls_model_type: "chat".into(),
                extra,
                input: input.get("messages").unwrap_or(json!([])),
                ..Default::default()
            });
            let tokens = fake_tokens();
            let last = tokens.len().saturating_sub(1);
            for (i, tok) in tokens.iter().enumerate() {
                if ctx.cancellation().is_cancelled() {
                    return Err(NodeError::Cancelled);
                }
                call.chunk(ai_chunk(run.clone(), tok.as_str(), i == last));
                tokio::task::yield_now().await;
            }
            let msg = ai_message_with_id(run, FAKE_REPLY);
            call.end(&msg);
            Ok(NodeOutput::Update(json!({"messages": [msg]})))
        })
        .edge(START, "chat")
        .edge("chat", END)
        .compile()
}

/// `parent`: node `child` is the compiled `chat` graph.
pub fn parent() -> Result<CompiledGraph, BuildError> {
    state("parent")
        .subgraph("child", chat()?)
        .edge(START, "child")
        .edge("child", END)
        .compile()
}

/// All six, by graph id.
pub fn all() -> Vec<(&'static str, CompiledGraph)> {
    type Builder = fn() -> Result<CompiledGraph, BuildError>;
    let builders: [(&'static str, Builder); 6] = [
        ("echo", echo),
        ("slow", slow),
        ("interrupt", interrupt),
        ("fail", fail),
        ("chat", chat),
        ("parent", parent),
    ];
    builders
        .into_iter()
        .filter_map(|(name, build)| build().ok().map(|g| (name, g)))
        .collect()
}
