//! The `lead_agent` graph end to end on the antler-graph engine, with the fake provider servers
//! over real HTTP: question -> tool calls -> tool results -> streamed answer -> title; token
//! usage by caller; workspace escapes refused; subagents; clear failures.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use antler_graph::*;
use antler_llm::fake::{FakeAnthropic, FakeOpenAi, FakeReply, Scripted};
use antler_llm::tools::{ToolContext, Workspace, WorkspaceOptions};
use antler_llm::{
    LeadAgentOptions, ModelConfig, ModelRegistry, RetryPolicy, SubagentSpec, build_client_with,
    lead_agent,
};
use parking_lot::Mutex;
use serde_json::{Value, json};

type Parts = Arc<Mutex<Vec<StreamPart>>>;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(1),
    }
}

fn registry(cfgs: Vec<ModelConfig>) -> Arc<ModelRegistry> {
    let mut reg = ModelRegistry::empty();
    for c in cfgs {
        let client = build_client_with(&c, fast_retry()).unwrap();
        reg.push(c, client).unwrap();
    }
    Arc::new(reg)
}

fn openai_cfg(fake: &FakeOpenAi) -> ModelConfig {
    let mut c = ModelConfig::openai("fast", "gpt-4o-mini", &fake.base_url());
    c.api_key = Some("sk-test".into());
    c
}

fn options(models: Arc<ModelRegistry>, root: &Path) -> LeadAgentOptions {
    let mut o = LeadAgentOptions::new(models);
    o.system_prompt = "You are a test agent.".into();
    o.workspace = Some(WorkspaceOptions::new(root));
    o
}

fn config(thread: &str, modes: &[StreamMode]) -> RunConfig {
    let mut c = RunConfig::new(thread, uuid::Uuid::now_v7().to_string());
    c.stream_modes = modes.to_vec();
    c.configurable.insert("thread_id".into(), json!(thread));
    c.configurable.insert("user_id".into(), json!("tester"));
    c
}

async fn run(
    g: &CompiledGraph,
    cp: &Arc<dyn Checkpointer>,
    input: Value,
    c: RunConfig,
) -> (Result<RunOutcome, GraphError>, Vec<StreamPart>) {
    let parts: Parts = Arc::new(Mutex::new(Vec::new()));
    let p = parts.clone();
    let sink: StreamSink = Arc::new(move |part| p.lock().push(part));
    let r = g
        .run(
            cp.clone(),
            RunInput::Values(input),
            c,
            sink,
            CancellationToken::new(),
        )
        .await;
    let out = parts.lock().clone();
    (r, out)
}

fn question(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

fn of_mode(parts: &[StreamPart], mode: StreamMode) -> Vec<Value> {
    parts
        .iter()
        .filter(|p| p.mode == mode)
        .map(|p| p.data.clone())
        .collect()
}

#[tokio::test]
async fn question_tool_calls_answer_and_title_end_to_end() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.reply(
        FakeReply::tool_call(
            "call_w",
            "write_file",
            json!({"path": "notes/hello.txt", "content": "hi there"}),
        )
        .with_usage(100, 20),
    );
    fake.reply(
        FakeReply::tool_call("call_r", "read_file", json!({"path": "notes/hello.txt"}))
            .with_usage(150, 15),
    );
    fake.reply(FakeReply::text("The file says: hi there", 4).with_usage(200, 10));
    fake.reply(
        FakeReply::text("\"Writing And Reading A Note File Together Today\"", 2).with_usage(40, 8),
    );
    let tmp = tempfile::tempdir().unwrap();
    let g = lead_agent(options(registry(vec![openai_cfg(&fake)]), tmp.path())).unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());

    let (r, parts) = run(
        &g,
        &cp,
        question("Save 'hi there' to notes/hello.txt and read it back"),
        config(
            "thread-1",
            &[
                StreamMode::Values,
                StreamMode::Updates,
                StreamMode::Messages,
            ],
        ),
    )
    .await;
    let out = r.unwrap();

    // the conversation
    let msgs = out.values["messages"].as_array().unwrap();
    let kinds: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["human", "ai", "tool", "ai", "tool", "ai"]);
    assert_eq!(
        msgs[1]["tool_calls"][0]["args"],
        json!({"path": "notes/hello.txt", "content": "hi there"})
    );
    assert_eq!(msgs[2]["tool_call_id"], "call_w");
    assert_eq!(msgs[2]["name"], "write_file");
    assert_eq!(msgs[2]["status"], "success");
    assert_eq!(msgs[2]["content"], "Wrote 8 bytes to notes/hello.txt");
    assert_eq!(msgs[4]["tool_call_id"], "call_r");
    assert_eq!(msgs[4]["content"], "hi there");
    assert_eq!(msgs[5]["content"], "The file says: hi there");
    for ai in [&msgs[1], &msgs[3], &msgs[5]] {
        assert_eq!(ai["additional_kwargs"]["caller"], "lead_agent");
        assert!(ai["usage_metadata"]["total_tokens"].as_u64().unwrap() > 0);
        assert_eq!(ai["response_metadata"]["model_name"], "gpt-4o-mini");
    }
    assert_eq!(
        msgs[5]["usage_metadata"],
        json!({"input_tokens": 200, "output_tokens": 10, "total_tokens": 210})
    );
    // the file really is in the thread's workspace
    let file = tmp.path().join("@tester/thread-1/notes/hello.txt");
    assert_eq!(std::fs::read_to_string(file).unwrap(), "hi there");

    // accounting records are not kept in the state
    assert!(out.values.get("llm_usage").is_none_or(Value::is_null));

    // title: cleaned and capped at 6 words
    assert_eq!(out.values["title"], "Writing And Reading A Note File");

    // messages mode: the answer's token chunks, with LangGraph metadata
    let msg_parts = of_mode(&parts, StreamMode::Messages);
    let answer_chunks: Vec<&Value> = msg_parts
        .iter()
        .filter(|p| p[0]["id"] == msgs[5]["id"] && p[0]["content"] != "")
        .collect();
    assert_eq!(answer_chunks.len(), 4);
    let streamed: String = answer_chunks
        .iter()
        .map(|p| p[0]["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "The file says: hi there");
    let meta = &answer_chunks[0][1];
    assert_eq!(meta["langgraph_node"], "model");
    assert_eq!(meta["ls_provider"], "openai");
    assert_eq!(meta["ls_model_name"], "gpt-4o-mini");
    assert!(
        msg_parts
            .iter()
            .any(|p| p[0]["tool_call_chunks"][0]["name"] == "write_file")
    );
    assert!(msg_parts.iter().any(|p| p[0]["chunk_position"] == "last"));
    // the title call is not streamed into the conversation
    assert!(
        !msg_parts
            .iter()
            .any(|p| p[0]["additional_kwargs"]["caller"] == "middleware:title")
    );

    // updates: tool calls and results as LangChain messages; title usage under llm_usage
    let updates = of_mode(&parts, StreamMode::Updates);
    let nodes: Vec<String> = updates
        .iter()
        .map(|u| u.as_object().unwrap().keys().next().unwrap().clone())
        .collect();
    assert_eq!(
        nodes,
        ["model", "tools", "model", "tools", "model", "title"]
    );
    let title_update = &updates[5]["title"];
    assert_eq!(title_update["title"], "Writing And Reading A Note File");
    assert_eq!(
        title_update["llm_usage"][0]["additional_kwargs"]["caller"],
        "middleware:title"
    );
    assert_eq!(
        title_update["llm_usage"][0]["usage_metadata"]["total_tokens"],
        48
    );

    // what the provider received
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 4);
    let first = &reqs[0].body;
    assert_eq!(first["messages"][0]["role"], "system");
    assert!(
        first["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("You are a test agent.")
    );
    let tool_names: Vec<&str> = first["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        tool_names,
        ["ls", "read_file", "write_file", "str_replace", "bash"]
    );
    let second = reqs[1].body["messages"].as_array().unwrap();
    assert_eq!(
        second.last().unwrap(),
        &json!({"role": "tool", "tool_call_id": "call_w", "content": "Wrote 8 bytes to notes/hello.txt"})
    );
    assert_eq!(second[2]["tool_calls"][0]["function"]["name"], "write_file");
    let title_req = &reqs[3].body;
    assert!(title_req.get("tools").is_none());
    let prompt = title_req["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains("Save 'hi there' to notes/hello.txt"),
        "{prompt}"
    );
    assert!(prompt.contains("The file says: hi there"), "{prompt}");

    // a second turn on the titled thread: no new title call
    fake.reply(FakeReply::text("Still here.", 2));
    let (r, _) = run(
        &g,
        &cp,
        question("thanks"),
        config("thread-1", &[StreamMode::Values]),
    )
    .await;
    let out = r.unwrap();
    assert_eq!(out.values["title"], "Writing And Reading A Note File");
    assert_eq!(fake.requests().len(), 5);
    assert_eq!(fake.remaining(), 0);
    assert_eq!(out.values["messages"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn workspace_escapes_are_refused_as_tool_errors() {
    let fake = FakeOpenAi::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // another thread of the same user
    std::fs::create_dir_all(tmp.path().join("@tester/other")).unwrap();
    std::fs::write(tmp.path().join("@tester/other/secret.txt"), "top secret").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("pwned.txt");
    fake.reply(
        FakeReply::text("", 1)
            .with_tool_call(
                "c1",
                "read_file",
                &json!({"path": "../other/secret.txt"}).to_string(),
                2,
            )
            .with_tool_call(
                "c2",
                "write_file",
                &json!({"path": target.to_str().unwrap(), "content": "x"}).to_string(),
                2,
            )
            .with_tool_call(
                "c3",
                "ls",
                &json!({"path": "notes/../../other"}).to_string(),
                2,
            )
            .with_tool_call("c4", "no_such_tool", "{}", 1)
            .with_tool_call("c5", "write_file", "{\"path\": \"a.txt\", ", 2),
    );
    fake.reply(FakeReply::text("I cannot do that.", 2));
    let mut opts = options(registry(vec![openai_cfg(&fake)]), tmp.path());
    opts.title.enabled = false;
    let g = lead_agent(opts).unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let (r, _) = run(
        &g,
        &cp,
        question("read the other thread's secret"),
        config("me", &[]),
    )
    .await;
    let out = r.unwrap();
    let msgs = out.values["messages"].as_array().unwrap();
    let tools: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "tool").collect();
    assert_eq!(tools.len(), 5);
    for t in &tools {
        assert_eq!(t["status"], "error", "{t}");
        assert!(!t["content"].as_str().unwrap().contains("top secret"));
    }
    assert!(tools[0]["content"].as_str().unwrap().contains("'..'"));
    assert!(
        tools[1]["content"]
            .as_str()
            .unwrap()
            .contains("outside the workspace")
    );
    assert!(tools[2]["content"].as_str().unwrap().contains("'..'"));
    assert!(
        tools[3]["content"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    assert!(
        tools[4]["content"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(tools[4]["tool_call_id"], "c5");
    assert!(!target.exists());
    assert_eq!(msgs.last().unwrap()["content"], "I cannot do that.");
    assert!(out.values.get("title").is_none_or(Value::is_null));
}

#[tokio::test]
async fn no_model_unknown_model_and_provider_failures_fail_the_run_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());

    let g = lead_agent(options(Arc::new(ModelRegistry::empty()), tmp.path())).unwrap();
    let (r, _) = run(&g, &cp, question("hi"), config("t-none", &[])).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, "ValueError");
    assert!(e.message.contains("`models:`"), "{}", e.message);

    let fake = FakeOpenAi::start().await.unwrap();
    let g = lead_agent(options(registry(vec![openai_cfg(&fake)]), tmp.path())).unwrap();
    let mut c = config("t-unknown", &[]);
    c.configurable.insert("model_name".into(), json!("gpt-99"));
    let (r, _) = run(&g, &cp, question("hi"), c).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, "ValueError");
    assert!(
        e.message.contains("'gpt-99'") && e.message.contains("fast"),
        "{}",
        e.message
    );
    assert!(fake.requests().is_empty());

    // a malformed chunk: a clear run error after the valid chunks were streamed
    fake.push(Scripted::Malformed {
        reply: FakeReply::text("partial answer", 2),
        valid_chunks: 1,
        raw: "not json at all".into(),
    });
    let (r, parts) = run(
        &g,
        &cp,
        question("hi"),
        config("t-bad", &[StreamMode::Messages]),
    )
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, "APIResponseValidationError");
    assert!(
        e.message.contains("malformed stream chunk"),
        "{}",
        e.message
    );
    assert_eq!(of_mode(&parts, StreamMode::Messages).len(), 1);

    // retries exhausted: the provider's message and the attempts
    for _ in 0..3 {
        fake.push(Scripted::rate_limited(0));
    }
    let (r, _) = run(&g, &cp, question("hi"), config("t-429", &[])).await;
    let e = r.unwrap_err();
    assert_eq!(e.kind, "RateLimitError");
    assert!(
        e.message.contains("after 3 attempts") && e.message.contains("Rate limit"),
        "{}",
        e.message
    );

    // a scripted 429 then success: the run succeeds
    fake.push(Scripted::rate_limited(0));
    fake.reply(FakeReply::text("recovered", 1));
    fake.reply(FakeReply::text("Recovery", 1));
    let (r, _) = run(&g, &cp, question("hi"), config("t-retry", &[])).await;
    let out = r.unwrap();
    assert_eq!(out.values["messages"][1]["content"], "recovered");
}

#[tokio::test]
async fn model_is_chosen_per_run_and_thinking_is_passed() {
    let a = FakeOpenAi::start().await.unwrap();
    let b = FakeAnthropic::start().await.unwrap();
    let mut claude = ModelConfig::anthropic("claude", "claude-sonnet", &b.base_url());
    claude.supports_thinking = true;
    claude.when_thinking_enabled = json!({"thinking": {"type": "enabled", "budget_tokens": 1024}})
        .as_object()
        .cloned()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = options(registry(vec![openai_cfg(&a), claude]), tmp.path());
    opts.title.enabled = false;
    let g = lead_agent(opts).unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    b.reply(
        FakeReply::text("from claude", 3)
            .with_reasoning("hmm")
            .with_usage(9, 4),
    );
    let mut c = config("t-claude", &[StreamMode::Messages]);
    c.configurable.insert("model_name".into(), json!("claude"));
    c.configurable
        .insert("thinking_enabled".into(), json!(true));
    let (r, parts) = run(&g, &cp, question("hi"), c).await;
    let out = r.unwrap();
    let ai = &out.values["messages"][1];
    assert_eq!(ai["content"], "from claude");
    assert_eq!(ai["additional_kwargs"]["reasoning_content"], "hmm");
    assert_eq!(ai["additional_kwargs"]["caller"], "lead_agent");
    assert_eq!(ai["usage_metadata"]["total_tokens"], 13);
    assert_eq!(
        of_mode(&parts, StreamMode::Messages)[0][1]["ls_provider"],
        "anthropic"
    );
    let body = &b.requests()[0].body;
    assert_eq!(
        body["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert!(
        body["system"]
            .as_str()
            .unwrap()
            .starts_with("You are a test agent.")
    );
    assert!(a.requests().is_empty());
}

#[tokio::test]
async fn task_tool_runs_a_subagent_with_its_own_caller() {
    let fake = FakeAnthropic::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("@tester/t-sub")).unwrap();
    std::fs::write(tmp.path().join("@tester/t-sub/data.csv"), "a,b\n1,2\n").unwrap();
    // lead: delegate
    fake.reply(
        FakeReply::tool_call(
            "toolu_task",
            "task",
            json!({"description": "inspect files", "prompt": "List the workspace and report", "subagent_type": "researcher"}),
        )
        .with_usage(50, 10),
    );
    // subagent: ls, then answer
    fake.reply(FakeReply::tool_call("toolu_ls", "ls", json!({})).with_usage(20, 5));
    fake.reply(FakeReply::text("There is one file: data.csv", 2).with_usage(30, 6));
    // lead: final answer
    fake.reply(FakeReply::text("The workspace holds data.csv.", 2).with_usage(60, 7));
    let mut cfg = ModelConfig::anthropic("claude", "claude-sonnet", &fake.base_url());
    cfg.api_key = Some("k".into());
    let mut opts = options(registry(vec![cfg]), tmp.path());
    opts.title.enabled = false;
    let mut researcher = SubagentSpec::new("researcher", "Looks at files", "You inspect files.");
    researcher.tools = Some(vec!["ls".into(), "read_file".into()]);
    opts.subagents = vec![researcher];
    let g = lead_agent(opts).unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let (r, parts) = run(
        &g,
        &cp,
        question("what is in my workspace?"),
        config("t-sub", &[StreamMode::Updates, StreamMode::Custom]),
    )
    .await;
    let out = r.unwrap();
    let msgs = out.values["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[2]["type"], "tool");
    assert_eq!(msgs[2]["name"], "task");
    assert_eq!(msgs[2]["content"], "There is one file: data.csv");
    assert_eq!(msgs[3]["content"], "The workspace holds data.csv.");

    let updates = of_mode(&parts, StreamMode::Updates);
    let tools_update = updates.iter().find_map(|u| u.get("tools")).unwrap();
    let usage = tools_update["llm_usage"].as_array().unwrap();
    assert_eq!(usage.len(), 2);
    for u in usage {
        assert_eq!(u["additional_kwargs"]["caller"], "subagent:researcher");
    }
    assert_eq!(usage[0]["usage_metadata"]["total_tokens"], 25);
    assert_eq!(usage[1]["usage_metadata"]["total_tokens"], 36);

    let custom = of_mode(&parts, StreamMode::Custom);
    let types: Vec<&str> = custom.iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["task_started", "task_running", "task_completed"]);

    // the subagent had its own prompt and only its allowed tools
    let reqs = fake.requests();
    assert_eq!(reqs[1].body["system"], "You inspect files.");
    let names: Vec<&str> = reqs[1].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ls", "read_file"]);
    let lead_tools: Vec<&str> = reqs[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(lead_tools.contains(&"task"));
    // the subagent saw the ls result
    assert_eq!(
        reqs[2].body["messages"][2]["content"][0]["type"],
        "tool_result"
    );
    assert!(
        reqs[2].body["messages"][2]["content"][0]["content"]
            .as_str()
            .unwrap()
            .contains("data.csv")
    );
}

#[tokio::test]
async fn workspace_tools_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wo = WorkspaceOptions::new(tmp.path());
    wo.bash_timeout = Duration::from_millis(500);
    wo.max_output = 100;
    let ws = Workspace::new(wo);
    let dir = ws.thread_dir("tester", "tt").unwrap();
    let ctx = ToolContext::new("tt", CancellationToken::new()).with_workspace(Ok(dir.clone()));
    let tools = ws.tools();
    let tool = |n: &str| tools.iter().find(|t| t.name() == n).unwrap().clone();

    tool("write_file")
        .call(json!({"path": "a/b.txt", "content": "one two one"}), &ctx)
        .await
        .unwrap();
    let e = tool("str_replace")
        .call(
            json!({"path": "a/b.txt", "old_str": "one", "new_str": "1"}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert!(e.0.contains("occurs 2 times"), "{e}");
    tool("str_replace")
        .call(
            json!({"path": "a/b.txt", "old_str": "two", "new_str": "2"}),
            &ctx,
        )
        .await
        .unwrap();
    assert_eq!(
        tool("read_file")
            .call(json!({"path": "a/b.txt"}), &ctx)
            .await
            .unwrap(),
        "one 2 one"
    );
    assert_eq!(tool("ls").call(json!({}), &ctx).await.unwrap(), "a/");
    assert!(
        tool("ls")
            .call(json!({"path": "a"}), &ctx)
            .await
            .unwrap()
            .contains("b.txt (9 bytes)")
    );
    let e = tool("read_file").call(json!({}), &ctx).await.unwrap_err();
    assert!(e.0.contains("missing required argument `path`"));
    let e = tool("read_file")
        .call(json!({"path": "nope.txt"}), &ctx)
        .await
        .unwrap_err();
    assert!(e.0.contains("no such file"), "{e}");

    // bash: runs in the workspace, reports exit codes, caps output, times out
    let out = tool("bash")
        .call(json!({"command": "cat a/b.txt; pwd"}), &ctx)
        .await
        .unwrap();
    assert!(
        out.contains("one 2 one") && out.contains(dir.to_str().unwrap()),
        "{out}"
    );
    let out = tool("bash")
        .call(json!({"command": "echo oops >&2; exit 3"}), &ctx)
        .await
        .unwrap();
    assert!(
        out.contains("[stderr]\noops") && out.contains("[exit code: 3]"),
        "{out}"
    );
    let out = tool("bash")
        .call(json!({"command": "yes | head -c 5000"}), &ctx)
        .await
        .unwrap();
    assert!(
        out.contains("[output truncated: 100 of 5000 bytes shown]"),
        "{out}"
    );
    let started = std::time::Instant::now();
    let e = tool("bash")
        .call(json!({"command": "sleep 30 & sleep 30"}), &ctx)
        .await
        .unwrap_err();
    assert!(e.0.contains("timed out"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // bash switched off: not offered
    let mut off = WorkspaceOptions::new(tmp.path());
    off.bash = false;
    assert!(
        Workspace::new(off)
            .tools()
            .iter()
            .all(|t| t.name() != "bash")
    );
}

/// With `stream_subgraphs`, a subagent streams like a subgraph of the tool call: its tokens,
/// its steps' updates and its state under the namespace `task:<id>`; without it, none of that
/// reaches the stream (the lead's own output is the same either way).
#[tokio::test]
async fn subagent_streams_under_its_own_namespace() {
    for subgraphs in [true, false] {
        let fake = FakeOpenAi::start().await.unwrap();
        let tmp = tempfile::tempdir().unwrap();
        fake.reply(FakeReply::tool_call(
            "call_task",
            "task",
            json!({"description": "look", "prompt": "List the workspace", "subagent_type": "researcher"}),
        ));
        fake.reply(FakeReply::tool_call("call_ls", "ls", json!({})));
        fake.reply(FakeReply::text("Nothing there", 3));
        fake.reply(FakeReply::text("Empty workspace.", 2));
        let mut opts = options(registry(vec![openai_cfg(&fake)]), tmp.path());
        opts.title.enabled = false;
        let mut researcher = SubagentSpec::new("researcher", "Looks at files", "You inspect.");
        researcher.tools = Some(vec!["ls".into()]);
        opts.subagents = vec![researcher];
        let g = lead_agent(opts).unwrap();
        let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
        let mut c = config(
            "t-ns",
            &[
                StreamMode::Updates,
                StreamMode::Values,
                StreamMode::Messages,
            ],
        );
        c.subgraphs = subgraphs;
        let (r, parts) = run(&g, &cp, question("what is there?"), c).await;
        let out = r.unwrap();
        assert_eq!(
            out.values["messages"].as_array().unwrap().last().unwrap()["content"],
            "Empty workspace."
        );
        let nested: Vec<&StreamPart> = parts.iter().filter(|p| !p.ns.is_empty()).collect();
        if !subgraphs {
            assert!(nested.is_empty(), "{nested:?}");
            continue;
        }
        let ns = &nested[0].ns;
        assert_eq!(ns.len(), 1);
        assert!(ns[0].starts_with("task:"), "{ns:?}");
        assert!(nested.iter().all(|p| &p.ns == ns), "one namespace per task");
        let updates: Vec<&Value> = nested
            .iter()
            .filter(|p| p.mode == StreamMode::Updates)
            .map(|p| &p.data)
            .collect();
        assert_eq!(updates.len(), 3, "model, tools, model: {updates:?}");
        assert_eq!(
            updates[0]["model"]["messages"][0]["tool_calls"][0]["name"],
            "ls"
        );
        assert_eq!(updates[1]["tools"]["messages"][0]["type"], "tool");
        assert_eq!(
            updates[2]["model"]["messages"][0]["content"],
            "Nothing there"
        );
        let last_values = nested
            .iter()
            .rfind(|p| p.mode == StreamMode::Values)
            .map(|p| &p.data)
            .unwrap();
        let contents: Vec<&str> = last_values["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(contents.first(), Some(&"List the workspace"));
        assert_eq!(contents.last(), Some(&"Nothing there"));
        // the subagent's tokens, with its namespace and node in the metadata
        let chunks: Vec<&Value> = nested
            .iter()
            .filter(|p| p.mode == StreamMode::Messages)
            .map(|p| &p.data)
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c[0]["content"].as_str())
            .collect();
        assert_eq!(text, "Nothing there");
        assert_eq!(chunks[0][1]["langgraph_node"], "model");
        assert!(
            chunks[0][1]["langgraph_checkpoint_ns"]
                .as_str()
                .unwrap()
                .contains(&ns[0]),
            "{}",
            chunks[0][1]
        );
        // the lead's own stream is unchanged: its tools update carries the answer
        let root_tools = parts
            .iter()
            .filter(|p| p.ns.is_empty() && p.mode == StreamMode::Updates)
            .find_map(|p| p.data.get("tools"))
            .unwrap();
        assert_eq!(root_tools["messages"][0]["content"], "Nothing there");
    }
}
