//! The `lead_agent` graph: a ReAct loop on the antler-graph engine.
//!
//! ```text
//! START -> model -(tool calls)-> tools -> model ...
//!          model -(answer, no title yet)-> title -> END
//!          model -(answer)-> END
//! ```
//!
//! State: `{messages: add_messages, title: last-value, llm_usage: discarded}`. `llm_usage`
//! carries, in a node's update only, the accounting records (AI-message shaped: caller, model,
//! `usage_metadata`) of model calls that are not part of the conversation — the title
//! middleware (`middleware:title`) and subagents (`subagent:<name>`); its reducer keeps
//! nothing, so the state stays small. Conversation AI messages carry
//! `additional_kwargs.caller = "lead_agent"` and their own `usage_metadata`.
//!
//! The model of a run: `configurable.model_name` (or `model`; the runtime merges `context`
//! into `configurable`), else the agent's own model, else the first configured one. Unknown
//! name or no model at all: the `model` node fails at once with a `ValueError` saying so.

// `NodeError` (from antler-graph) is large by design; it is moved rarely.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use antler_graph::messages::{content_text, human_message, system_message, tool_message};
use antler_graph::{
    BuildError, CompiledGraph, END, ModelCallInfo, NodeContext, NodeError, NodeInput, NodeOutput,
    Reducer, Route, START, StateGraph,
};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use crate::chat::{ChatRequest, MessageAssembler, ToolSpec};
use crate::config::{ModelEntry, ModelRegistry};
use crate::error::LlmError;
use crate::tools::{Tool, ToolContext, ToolError, Workspace, WorkspaceOptions};

/// Default system prompt.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant. Use the tools available to you when they help \
answer the user's request, then answer clearly and concisely.";

/// Title middleware options (DeerFlow: enabled, 6 words, 60 chars).
#[derive(Clone, Debug)]
pub struct TitleOptions {
    /// Whether a title is generated.
    pub enabled: bool,
    /// Max words.
    pub max_words: usize,
    /// Max chars.
    pub max_chars: usize,
    /// Model for titles (default: the run's model).
    pub model_name: Option<String>,
}

impl Default for TitleOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            max_words: 6,
            max_chars: 60,
            model_name: None,
        }
    }
}

/// A subagent the `task` tool can run.
#[derive(Clone, Debug)]
pub struct SubagentSpec {
    /// Name (`subagent_type`); its tokens count as `subagent:<name>`.
    pub name: String,
    /// When to use it (shown to the lead model).
    pub description: String,
    /// Its system prompt.
    pub system_prompt: String,
    /// Its model (default: the run's model).
    pub model_name: Option<String>,
    /// Names of the lead agent's tools it may use (None: all but `task`).
    pub tools: Option<Vec<String>>,
    /// Max model calls of one task.
    pub max_turns: usize,
}

impl SubagentSpec {
    /// A general-purpose subagent with all tools and 10 turns.
    pub fn new(name: &str, description: &str, system_prompt: &str) -> Self {
        Self {
            name: name.to_string(),
            description: description.to_string(),
            system_prompt: system_prompt.to_string(),
            model_name: None,
            tools: None,
            max_turns: 10,
        }
    }
}

/// Options of [`lead_agent`].
#[derive(Clone)]
pub struct LeadAgentOptions {
    /// Graph name (`lead_agent`).
    pub name: String,
    /// The configured models.
    pub models: Arc<ModelRegistry>,
    /// This agent's model (declarative agents); None = the registry default.
    pub model_name: Option<String>,
    /// System prompt.
    pub system_prompt: String,
    /// Workspace tools (None = none).
    pub workspace: Option<WorkspaceOptions>,
    /// More tools (MCP, ...).
    pub tools: Vec<Arc<dyn Tool>>,
    /// Names of the tools this agent offers (None = all of the workspace tools and `tools`).
    /// A name that is not available is a build error (declarative agents' `tools:`).
    pub allowed_tools: Option<Vec<String>>,
    /// Title middleware.
    pub title: TitleOptions,
    /// Subagents (non-empty = the `task` tool is offered).
    pub subagents: Vec<SubagentSpec>,
}

impl LeadAgentOptions {
    /// Defaults: default prompt, no workspace, title on, no subagents.
    pub fn new(models: Arc<ModelRegistry>) -> Self {
        Self {
            name: "lead_agent".into(),
            models,
            model_name: None,
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
            workspace: None,
            tools: Vec::new(),
            allowed_tools: None,
            title: TitleOptions::default(),
            subagents: Vec::new(),
        }
    }
}

struct Shared {
    opts: LeadAgentOptions,
    workspace: Option<Workspace>,
    tools: Vec<Arc<dyn Tool>>,
    specs: Vec<ToolSpec>,
    prompt: String,
}

fn cfg_str<'a>(ctx: &'a NodeContext, key: &str) -> Option<&'a str> {
    ctx.config()
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn cfg_bool(ctx: &NodeContext, key: &str) -> Option<bool> {
    match ctx.config().get(key) {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => match s.as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn node_error(e: LlmError) -> NodeError {
    match e {
        LlmError::Cancelled => NodeError::Cancelled,
        e => NodeError::failed(e.kind(), e.to_string()),
    }
}

impl Shared {
    fn resolve_model(&self, ctx: &NodeContext) -> Result<ModelEntry, NodeError> {
        let requested = cfg_str(ctx, "model_name")
            .or_else(|| cfg_str(ctx, "model"))
            .or(self.opts.model_name.as_deref());
        self.opts
            .models
            .resolve(requested)
            .cloned()
            .map_err(|e| NodeError::failed("ValueError", e.0))
    }

    fn thread_id(ctx: &NodeContext) -> String {
        cfg_str(ctx, "thread_id")
            .or_else(|| ctx.metadata().get("thread_id").and_then(Value::as_str))
            .unwrap_or_default()
            .to_string()
    }

    fn tool_context(&self, ctx: &NodeContext, model: Option<ModelEntry>) -> ToolContext {
        let thread_id = Self::thread_id(ctx);
        let owner = cfg_str(ctx, "user_id").unwrap_or_default();
        let workspace = match &self.workspace {
            None => Err("workspace tools are not enabled".to_string()),
            Some(_) if thread_id.is_empty() => {
                Err("this run has no thread id, so it has no workspace".to_string())
            }
            Some(_) if owner.is_empty() => {
                Err("this run has no user id, so it has no workspace".to_string())
            }
            Some(ws) => ws.thread_dir(owner, &thread_id),
        };
        let mut t = ToolContext::new(&thread_id, ctx.cancellation())
            .with_workspace(workspace)
            .with_node(ctx.clone());
        t.config = ctx.config().clone();
        t.model = model;
        t
    }
}

/// Runs one model call to completion; streams chunks through `stream` when given. Returns the
/// final AI message.
pub async fn call_model(
    entry: &ModelEntry,
    request: ChatRequest,
    caller: &str,
    cancel: &antler_graph::CancellationToken,
    stream: Option<&NodeContext>,
) -> Result<Value, LlmError> {
    let client = entry.client.clone();
    let mut asm = MessageAssembler::new(caller, &entry.config.model, client.provider());
    let call = stream.filter(|c| c.streaming()).map(|c| {
        c.model_call(ModelCallInfo {
            name: client.class_name().into(),
            ls_provider: client.provider().into(),
            ls_model_name: Some(entry.config.model.clone()),
            ls_model_type: "chat".into(),
            ls_temperature: entry.config.temperature,
            ls_max_tokens: request.max_tokens.or(entry.config.max_tokens),
            extra: Map::new(),
            input: Value::Array(request.messages.clone()),
        })
    });
    let mut events = client.stream(request);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return Err(LlmError::Cancelled),
            n = events.next() => n,
        };
        match next {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(ev)) => {
                if let Some(chunk) = asm.apply(&ev)
                    && let Some(c) = &call
                {
                    c.chunk(chunk);
                }
            }
        }
    }
    match call {
        Some(c) => {
            c.chunk(asm.last_chunk());
            let msg = asm.finish();
            c.end(&msg);
            Ok(msg)
        }
        None => Ok(asm.finish()),
    }
}

fn tool_calls_of(m: &Value) -> (Vec<Value>, Vec<Value>) {
    let list = |k: &str| {
        m.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    (list("tool_calls"), list("invalid_tool_calls"))
}

fn tool_result(content: String, call_id: &str, name: &str, ok: bool) -> Value {
    let mut m = tool_message(content, call_id);
    m["name"] = json!(name);
    if !ok {
        m["status"] = json!("error");
    }
    m
}

/// Executes every tool call (and answers every invalid one) of `ai`, in order. Tool errors
/// become error `ToolMessage`s; only cancellation is an error.
pub async fn execute_tool_calls(
    tools: &[Arc<dyn Tool>],
    ai: &Value,
    ctx: &ToolContext,
) -> Result<Vec<Value>, NodeError> {
    let (calls, invalid) = tool_calls_of(ai);
    let mut out = Vec::with_capacity(calls.len() + invalid.len());
    for call in calls {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = call
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let args = call.get("args").cloned().unwrap_or(json!({}));
        let Some(tool) = tools.iter().find(|t| t.name() == name) else {
            let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
            out.push(tool_result(
                format!(
                    "Error: tool '{name}' does not exist. Available tools: {}",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
                &id,
                &name,
                false,
            ));
            continue;
        };
        let result = tokio::select! {
            _ = ctx.cancel.cancelled() => return Err(NodeError::Cancelled),
            r = tool.call(args, ctx) => r,
        };
        match result {
            Ok(text) => out.push(tool_result(text, &id, &name, true)),
            Err(ToolError(e)) => out.push(tool_result(format!("Error: {e}"), &id, &name, false)),
        }
    }
    for call in invalid {
        let id = call.get("id").and_then(Value::as_str).unwrap_or("");
        let name = call.get("name").and_then(Value::as_str).unwrap_or("");
        let err = call
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("invalid tool call");
        let args = call.get("args").and_then(Value::as_str).unwrap_or("");
        out.push(tool_result(
            format!("Error: invalid call of tool '{name}': {err}. Arguments received: {args}"),
            id,
            name,
            false,
        ));
    }
    Ok(out)
}

fn has_tool_calls(m: &Value) -> bool {
    let (c, i) = tool_calls_of(m);
    !c.is_empty() || !i.is_empty()
}

/// Cleans a model's title: first line, no quotes / markdown / `Title:`, at most `max_words`
/// words and `max_chars` chars.
pub fn sanitize_title(raw: &str, max_words: usize, max_chars: usize) -> String {
    let line = raw
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut s = line.trim_matches(|c: char| "\"'`*#“”‘’「」".contains(c) || c.is_whitespace());
    for prefix in ["Title:", "title:", "TITLE:"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest.trim_matches(|c: char| "\"'`*“”".contains(c) || c.is_whitespace());
        }
    }
    let words: Vec<&str> = s.split_whitespace().take(max_words.max(1)).collect();
    let mut out = words.join(" ");
    if out.chars().count() > max_chars {
        out = out
            .chars()
            .take(max_chars)
            .collect::<String>()
            .trim_end()
            .to_string();
    }
    out.trim_end_matches(['.', ',', ';', ':']).to_string()
}

async fn model_node(
    sh: Arc<Shared>,
    input: NodeInput,
    ctx: NodeContext,
) -> Result<NodeOutput, NodeError> {
    let entry = sh.resolve_model(&ctx)?;
    let mut messages = vec![system_message(sh.prompt.clone())];
    messages.extend(
        input
            .messages()
            .filter(|m| m.get("type").and_then(Value::as_str) != Some("system"))
            .cloned(),
    );
    let request = ChatRequest {
        messages,
        tools: sh.specs.clone(),
        thinking: cfg_bool(&ctx, "thinking_enabled"),
        reasoning_effort: cfg_str(&ctx, "reasoning_effort").map(str::to_string),
        max_tokens: None,
    };
    let msg = call_model(
        &entry,
        request,
        "lead_agent",
        &ctx.cancellation(),
        Some(&ctx),
    )
    .await
    .map_err(node_error)?;
    Ok(NodeOutput::Update(json!({"messages": [msg]})))
}

async fn tools_node(
    sh: Arc<Shared>,
    input: NodeInput,
    ctx: NodeContext,
) -> Result<NodeOutput, NodeError> {
    let Some(last) = input.messages().next_back().cloned() else {
        return Ok(NodeOutput::Update(Value::Null));
    };
    let model = sh.resolve_model(&ctx).ok();
    let tctx = sh.tool_context(&ctx, model);
    let results = execute_tool_calls(&sh.tools, &last, &tctx).await?;
    let mut update = json!({"messages": results});
    let usage = tctx.take_usage();
    if !usage.is_empty() {
        update["llm_usage"] = Value::Array(usage);
    }
    Ok(NodeOutput::Update(update))
}

async fn title_node(
    sh: Arc<Shared>,
    input: NodeInput,
    ctx: NodeContext,
) -> Result<NodeOutput, NodeError> {
    let t = &sh.opts.title;
    let user = input
        .messages()
        .find(|m| m.get("type").and_then(Value::as_str) == Some("human"))
        .map(content_text)
        .unwrap_or_default();
    let assistant = input
        .messages()
        .rev()
        .find(|m| m.get("type").and_then(Value::as_str) == Some("ai") && !has_tool_calls(m))
        .map(content_text)
        .unwrap_or_default();
    let fallback = || {
        let s = sanitize_title(&user, t.max_words, t.max_chars);
        if s.is_empty() {
            "New conversation".to_string()
        } else {
            s
        }
    };
    let entry = match &t.model_name {
        Some(n) => sh.opts.models.get(n).cloned(),
        None => sh.resolve_model(&ctx).ok(),
    };
    let Some(entry) = entry else {
        return Ok(NodeOutput::Update(json!({"title": fallback()})));
    };
    let clip = |s: &str| s.chars().take(1000).collect::<String>();
    let prompt = format!(
        "Generate a concise title (at most {} words) for this conversation.\nUser: {}\nAssistant: {}\n\nReturn ONLY the title, no quotes, no explanation.",
        t.max_words,
        clip(&user),
        clip(&assistant)
    );
    let request = ChatRequest {
        messages: vec![human_message(prompt)],
        tools: Vec::new(),
        thinking: Some(false),
        reasoning_effort: None,
        max_tokens: Some(64),
    };
    match call_model(
        &entry,
        request,
        "middleware:title",
        &ctx.cancellation(),
        None,
    )
    .await
    {
        Ok(msg) => {
            let mut title = sanitize_title(&content_text(&msg), t.max_words, t.max_chars);
            if title.is_empty() {
                title = fallback();
            }
            Ok(NodeOutput::Update(json!({
                "title": title,
                "llm_usage": [crate::tools::usage_record(&msg)],
            })))
        }
        Err(LlmError::Cancelled) => Err(NodeError::Cancelled),
        Err(e) => {
            // a title is a nicety: the run does not fail for it
            tracing::warn!(error = %e, "title generation failed; using the first message");
            Ok(NodeOutput::Update(json!({"title": fallback()})))
        }
    }
}

fn route_after_model(sh: &Shared, input: &NodeInput) -> Vec<Route> {
    let last = input.messages().next_back();
    if last.is_some_and(has_tool_calls) {
        return vec![Route::to("tools")];
    }
    let untitled = match input.get_ref("title") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    };
    if sh.opts.title.enabled && untitled {
        vec![Route::to("title")]
    } else {
        vec![Route::to(END)]
    }
}

/// The `task` tool: runs a subagent's own ReAct loop to completion and returns its answer.
struct TaskTool {
    models: Arc<ModelRegistry>,
    subagents: Vec<SubagentSpec>,
    /// The lead agent's tools, without `task`.
    tools: Vec<Arc<dyn Tool>>,
}

#[async_trait]
impl Tool for TaskTool {
    fn name(&self) -> &str {
        "task"
    }
    fn description(&self) -> String {
        let mut d = String::from(
            "Delegate a self-contained task to a subagent, which works on it with its own tools and returns its final answer. Subagents:",
        );
        for s in &self.subagents {
            d.push_str(&format!("\n- {}: {}", s.name, s.description));
        }
        d
    }
    fn parameters(&self) -> Value {
        let names: Vec<&str> = self.subagents.iter().map(|s| s.name.as_str()).collect();
        json!({"type": "object", "properties": {
            "description": {"type": "string", "description": "A short (3-5 words) label of the task"},
            "prompt": {"type": "string", "description": "Everything the subagent needs to know to do the task"},
            "subagent_type": {"type": "string", "enum": names},
        }, "required": ["description", "prompt", "subagent_type"]})
    }
    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let kind = args
            .get("subagent_type")
            .and_then(Value::as_str)
            .or_else(|| self.subagents.first().map(|s| s.name.as_str()))
            .unwrap_or_default();
        let spec = self
            .subagents
            .iter()
            .find(|s| s.name == kind)
            .ok_or_else(|| ToolError(format!("unknown subagent_type '{kind}'")))?;
        let prompt = args
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or_else(|| ToolError("missing required argument `prompt`".into()))?;
        let description = args
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or(kind);
        let entry = match &spec.model_name {
            Some(n) => self.models.get(n).cloned(),
            None => ctx.model.clone(),
        }
        .ok_or_else(|| ToolError(format!("subagent '{}' has no model to run on", spec.name)))?;
        let tools: Vec<Arc<dyn Tool>> = self
            .tools
            .iter()
            .filter(|t| {
                spec.tools
                    .as_ref()
                    .is_none_or(|allowed| allowed.iter().any(|a| a == t.name()))
            })
            .cloned()
            .collect();
        let specs: Vec<ToolSpec> = tools.iter().map(|t| t.spec()).collect();
        let task_id = uuid::Uuid::now_v7().to_string();
        ctx.write_custom(json!({"type": "task_started", "task_id": task_id, "subagent": spec.name, "description": description}));
        let caller = format!("subagent:{}", spec.name);
        let mut messages = vec![
            system_message(spec.system_prompt.clone()),
            human_message(prompt),
        ];
        // The subagent streams as a subgraph of the tool call, under `task:<task_id>` (seen
        // with `stream_subgraphs`): its model's tokens (messages), each step's update and its
        // state (values). Its conversation is its own: only the answer returns to the lead.
        let scope = |node: &str| {
            ctx.node
                .as_ref()
                .map(|n| n.nested(&format!("task:{task_id}"), node))
        };
        let (model_scope, tools_scope) = (scope("model"), scope("tools"));
        let stream_step = |s: &Option<NodeContext>, node: &str, new: &[Value], all: &[Value]| {
            if let Some(s) = s {
                s.write_stream(
                    antler_graph::types::StreamMode::Updates,
                    json!({ node: {"messages": new} }),
                );
                s.write_stream(
                    antler_graph::types::StreamMode::Values,
                    json!({"messages": &all[1..]}),
                );
            }
        };
        for _turn in 0..spec.max_turns.max(1) {
            let request = ChatRequest {
                messages: messages.clone(),
                tools: specs.clone(),
                thinking: None,
                reasoning_effort: None,
                max_tokens: None,
            };
            let msg = match call_model(&entry, request, &caller, &ctx.cancel, model_scope.as_ref())
                .await
            {
                Ok(m) => m,
                Err(LlmError::Cancelled) => return Err(ToolError("task cancelled".into())),
                Err(e) => {
                    ctx.write_custom(
                        json!({"type": "task_failed", "task_id": task_id, "error": e.to_string()}),
                    );
                    return Err(ToolError(format!("subagent '{}' failed: {e}", spec.name)));
                }
            };
            ctx.record_usage(&msg);
            let done = !has_tool_calls(&msg);
            messages.push(msg.clone());
            stream_step(&model_scope, "model", std::slice::from_ref(&msg), &messages);
            if done {
                let answer = content_text(&msg);
                ctx.write_custom(
                    json!({"type": "task_completed", "task_id": task_id, "result": answer}),
                );
                return Ok(answer);
            }
            ctx.write_custom(json!({"type": "task_running", "task_id": task_id, "message": msg}));
            let results = execute_tool_calls(&tools, &msg, ctx)
                .await
                .map_err(|_| ToolError("task cancelled".into()))?;
            messages.extend(results.iter().cloned());
            stream_step(&tools_scope, "tools", &results, &messages);
        }
        let err = format!(
            "subagent '{}' did not finish within {} turns",
            spec.name, spec.max_turns
        );
        ctx.write_custom(json!({"type": "task_failed", "task_id": task_id, "error": err}));
        Err(ToolError(err))
    }
}

/// Builds the `lead_agent` graph.
pub fn lead_agent(options: LeadAgentOptions) -> Result<CompiledGraph, BuildError> {
    let workspace = options.workspace.clone().map(Workspace::new);
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    if let Some(ws) = &workspace {
        tools.extend(ws.tools());
    }
    tools.extend(options.tools.iter().cloned());
    if let Some(allowed) = &options.allowed_tools {
        if let Some(missing) = allowed
            .iter()
            .find(|name| !tools.iter().any(|t| t.name() == name.as_str()))
        {
            let available: Vec<&str> = tools.iter().map(|t| t.name()).collect();
            return Err(BuildError::Invalid(format!(
                "agent '{}': tool '{missing}' is not available (available: {})",
                options.name,
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            )));
        }
        tools.retain(|t| allowed.iter().any(|a| a == t.name()));
    }
    if !options.subagents.is_empty() {
        let task = TaskTool {
            models: options.models.clone(),
            subagents: options.subagents.clone(),
            tools: tools.clone(),
        };
        tools.push(Arc::new(task));
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tools {
        if !seen.insert(t.name().to_string()) {
            return Err(BuildError::Invalid(format!(
                "two tools are named '{}'",
                t.name()
            )));
        }
    }
    let mut prompt = options.system_prompt.clone();
    if let Some(ws) = &workspace {
        prompt.push_str(&format!(
            "\n\nYou have a private workspace directory for this conversation. The file tools \
             (ls, read_file, write_file, str_replace{}) take paths relative to it; paths outside \
             it are refused.",
            if ws.options().bash { ", bash" } else { "" }
        ));
    }
    let specs = tools.iter().map(|t| t.spec()).collect();
    let sh = Arc::new(Shared {
        opts: options,
        workspace,
        tools,
        specs,
        prompt,
    });
    let (m, t, ti, r) = (sh.clone(), sh.clone(), sh.clone(), sh.clone());
    StateGraph::new(sh.opts.name.clone())
        .channel("messages", Reducer::AddMessages)
        .channel("title", Reducer::LastValue)
        // accounting records travel in node updates only; the state keeps nothing
        .channel(
            "llm_usage",
            Reducer::Custom(Arc::new(|_, _| Ok(Value::Null))),
        )
        .node("model", move |i, c| model_node(m.clone(), i, c))
        .node("tools", move |i, c| tools_node(t.clone(), i, c))
        .node("title", move |i, c| title_node(ti.clone(), i, c))
        .edge(START, "model")
        .conditional_edges(
            "model",
            move |i: &NodeInput| route_after_model(&r, i),
            Some(&["tools", "title", END]),
        )
        .edge("tools", "model")
        .edge("title", END)
        .compile()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_cleaned_and_capped() {
        assert_eq!(
            sanitize_title("\"Rust Async Runtime Basics\"\nexplanation", 6, 60),
            "Rust Async Runtime Basics"
        );
        assert_eq!(
            sanitize_title("Title: one two three four five six seven eight", 6, 60),
            "one two three four five six"
        );
        let long = "Supercalifragilisticexpialidocious ".repeat(3);
        assert!(sanitize_title(&long, 6, 60).chars().count() <= 60);
        assert_eq!(sanitize_title("   ", 6, 60), "");
        assert_eq!(sanitize_title("**Weekend plans.**", 6, 60), "Weekend plans");
    }

    #[test]
    fn allowed_tools_must_exist() {
        let dir = std::env::temp_dir().join("antler-llm-allowed-tools");
        let mut o = LeadAgentOptions::new(Arc::new(ModelRegistry::empty()));
        o.workspace = Some(WorkspaceOptions::new(&dir));
        o.allowed_tools = Some(vec!["read_file".into(), "web_search".into()]);
        let err = match lead_agent(o.clone()) {
            Err(BuildError::Invalid(e)) => e,
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("an unknown tool name must not build"),
        };
        assert!(
            err.contains("'web_search'") && err.contains("read_file, write_file"),
            "{err}"
        );
        o.allowed_tools = Some(vec!["read_file".into()]);
        assert!(lead_agent(o).is_ok());
    }
}
