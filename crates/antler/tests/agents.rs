//! End-to-end tests of the agents: the real server (config parsed from YAML, SQLite, router,
//! runtime) on port 0, chat models served by the fake OpenAI / Anthropic servers of
//! `antler-llm` over real HTTP, and clients speaking HTTP + SSE.

use std::time::Duration;

use antler::config::Config;
use antler_llm::fake::{FakeAnthropic, FakeOpenAi, FakeReply, Scripted};
use serde_json::{Value, json};

struct App {
    server: Option<antler::Server>,
    url: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl App {
    /// Boots a server from YAML config text (SQLite in a temp dir, port 0).
    async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg: Config = antler::config::parse(yaml, &|_| None).unwrap();
        cfg.port = 0;
        cfg.sqlite_dir = dir.path().to_path_buf();
        cfg.heartbeat = Duration::from_millis(500);
        let server = antler::start(cfg).await.unwrap();
        let url = server.url();
        Self {
            server: Some(server),
            url,
            http: reqwest::Client::new(),
            dir,
        }
    }

    fn u(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.u(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.u(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn thread(&self) -> String {
        let (s, t) = self.post("/threads", json!({})).await;
        assert_eq!(s, 200, "{t}");
        t["thread_id"].as_str().unwrap().to_string()
    }

    /// Streams a run; returns the SSE events (name, data).
    async fn stream(&self, path: &str, body: Value) -> Vec<(String, Value)> {
        let r = self
            .http
            .post(self.u(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        parse_sse(&r.text().await.unwrap())
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

fn parse_sse(text: &str) -> Vec<(String, Value)> {
    let text = text.replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = Value::Null;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).unwrap_or(Value::Null);
            }
        }
        if let Some(e) = event {
            out.push((e, data));
        }
    }
    out
}

fn human(text: &str) -> Value {
    json!({"messages": [{"role": "human", "content": text}]})
}

/// A config with one OpenAI-compatible model at `url`.
fn openai_yaml(url: &str, extra: &str) -> String {
    format!(
        "models:\n  - name: fast\n    display_name: Fast\n    use: langchain_openai:ChatOpenAI\n    model: gpt-4o-mini\n    api_key: sk-test\n    base_url: {url}\n    max_retries: 2\n{extra}"
    )
}

fn tool_names(request_body: &Value) -> Vec<String> {
    request_body["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn tool_using_conversation_streams_tokens_counts_tokens_and_sets_the_title() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.reply(
        FakeReply::tool_call(
            "call_1",
            "write_file",
            json!({"path": "notes.txt", "content": "hello from the agent"}),
        )
        .with_usage(20, 5),
    );
    fake.reply(FakeReply::text("I saved the note in notes.txt.", 5).with_usage(30, 8));
    fake.reply(FakeReply::text("Saving A Note", 1).with_usage(12, 3));
    let app = App::start(&openai_yaml(&fake.base_url(), "")).await;
    let t = app.thread().await;

    let events = app
        .stream(
            &format!("/api/threads/{t}/runs/stream"),
            json!({
                "assistant_id": "lead_agent",
                "input": human("Please write a note"),
                "stream_mode": ["messages-tuple", "values", "updates"],
            }),
        )
        .await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"metadata"));
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    assert!(!names.contains(&"error"), "{events:?}");

    // the answer arrives token by token as (chunk, metadata) tuples
    let answer_chunks: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "messages")
        .filter(|(_, d)| d[0]["type"] == "AIMessageChunk")
        .filter(|(_, d)| d[1]["langgraph_node"] == "model")
        .filter_map(|(_, d)| d[0]["content"].as_str())
        .filter(|c| !c.is_empty())
        .collect();
    assert!(answer_chunks.len() >= 5, "{answer_chunks:?}");
    assert_eq!(answer_chunks.concat(), "I saved the note in notes.txt.");

    // tool call, tool result and answer in the final values; the title is set
    let values = &events
        .iter()
        .rev()
        .find(|(n, _)| n == "values")
        .expect("values")
        .1;
    let msgs = values["messages"].as_array().unwrap();
    let types: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["human", "ai", "tool", "ai"]);
    assert_eq!(msgs[1]["tool_calls"][0]["name"], "write_file");
    assert_eq!(
        msgs[1]["tool_calls"][0]["args"]["content"],
        "hello from the agent"
    );
    assert_eq!(msgs[2]["tool_call_id"], "call_1");
    assert_ne!(msgs[2]["status"], "error", "{}", msgs[2]);
    assert_eq!(msgs[3]["content"], "I saved the note in notes.txt.");
    assert_eq!(values["title"], "Saving A Note");
    // the title call is reported under llm_usage in `updates`, not as a message
    let title_update = events
        .iter()
        .find(|(n, d)| n == "updates" && d.get("title").is_some())
        .expect("title update");
    assert_eq!(
        title_update.1["title"]["llm_usage"][0]["additional_kwargs"]["caller"],
        "middleware:title"
    );

    // the file is in the user's workspace of the thread under the data directory
    let written = std::fs::read_to_string(
        app.dir
            .path()
            .join("workspaces/@default")
            .join(&t)
            .join("notes.txt"),
    )
    .unwrap();
    assert_eq!(written, "hello from the agent");

    // the provider saw the workspace tools, without bash (off unless configured)
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(
        tool_names(&reqs[0].body),
        vec!["ls", "read_file", "write_file", "str_replace"]
    );
    assert_eq!(reqs[0].body["stream"], true);
    assert_eq!(reqs[0].header("authorization"), Some("Bearer sk-test"));

    // the thread title is synced; token usage by caller and by model
    let (_, thread) = app.get(&format!("/threads/{t}")).await;
    assert_eq!(thread["values"]["title"], "Saving A Note");
    assert_eq!(thread["status"], "idle");
    let (s, usage) = app.get(&format!("/api/threads/{t}/token-usage")).await;
    assert_eq!(s, 200, "{usage}");
    assert_eq!(usage["total_tokens"], 78);
    assert_eq!(usage["total_input_tokens"], 62);
    assert_eq!(usage["total_output_tokens"], 16);
    assert_eq!(usage["total_runs"], 1);
    assert_eq!(
        usage["by_caller"],
        json!({"lead_agent": 63, "subagent": 0, "middleware": 15})
    );
    assert_eq!(
        usage["by_model"],
        json!({"gpt-4o-mini": {"tokens": 78, "runs": 1}})
    );

    // deleting the thread deletes its workspace
    let ws = app.dir.path().join("workspaces/@default").join(&t);
    assert!(ws.exists());
    let r = app
        .http
        .delete(app.u(&format!("/threads/{t}")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(!ws.exists(), "the deleted thread's workspace is gone");
    app.stop().await;
}

/// A stateless run's temporary thread is deleted when it ends: so is its workspace.
#[tokio::test]
async fn a_stateless_runs_workspace_goes_with_its_temporary_thread() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.reply(FakeReply::tool_call(
        "call_1",
        "write_file",
        json!({"path": "scratch.txt", "content": "temporary"}),
    ));
    fake.reply(FakeReply::text("Done.", 1));
    let app = App::start(&openai_yaml(&fake.base_url(), "title:\n  enabled: false\n")).await;
    let (s, v) = app
        .post(
            "/runs/wait",
            json!({"assistant_id": "lead_agent", "input": human("scribble")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["messages"][2]["type"], "tool", "{v}");
    assert_ne!(
        v["messages"][2]["status"], "error",
        "the file was written: {v}"
    );
    let root = app.dir.path().join("workspaces/@default");
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "workspaces left behind: {left:?}");
    app.stop().await;
}

#[tokio::test]
async fn rate_limit_is_retried_and_a_malformed_chunk_is_a_run_error() {
    let fake = FakeOpenAi::start().await.unwrap();
    fake.push(Scripted::rate_limited(0));
    fake.reply(FakeReply::text("after the retry", 3));
    fake.push(Scripted::Malformed {
        reply: FakeReply::text("one two three", 3),
        valid_chunks: 1,
        raw: "{\"choices\": [{\"delta\": {\"content\": \"unterminated".into(),
    });
    let app = App::start(&openai_yaml(&fake.base_url(), "title:\n  enabled: false\n")).await;
    let t = app.thread().await;
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({"assistant_id": "lead_agent", "input": human("hi")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.last().unwrap()["content"], "after the retry");
    assert_eq!(fake.requests().len(), 2, "the 429 was retried once");
    assert!(v.get("title").is_none_or(Value::is_null), "{v}");

    let events = app
        .stream(
            &format!("/threads/{t}/runs/stream"),
            json!({"assistant_id": "lead_agent", "input": human("again"), "stream_mode": ["messages-tuple"]}),
        )
        .await;
    let (_, err) = events
        .iter()
        .find(|(n, _)| n == "error")
        .unwrap_or_else(|| panic!("no error event: {events:?}"));
    assert_eq!(err["error"], "APIResponseValidationError", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("invalid JSON"),
        "{err}"
    );
    assert_eq!(
        fake.requests().len(),
        3,
        "a malformed stream is not retried"
    );
    let (_, runs) = app.get(&format!("/threads/{t}/runs")).await;
    let statuses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"error") && statuses.contains(&"success"));
    // the server is fine afterwards
    let (s, _) = app.get("/ok").await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn without_models_the_server_starts_and_lead_agent_fails_at_once() {
    let app = App::start("").await;
    let (s, models) = app.get("/api/models").await;
    assert_eq!(s, 200);
    assert_eq!(
        models,
        json!({"models": [], "token_usage": {"enabled": true}})
    );
    // lead_agent is registered next to the example graphs
    let (s, found) = app.post("/assistants/search", json!({"limit": 100})).await;
    assert_eq!(s, 200, "{found}");
    let graphs: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["graph_id"].as_str().unwrap())
        .collect();
    assert!(
        graphs.contains(&"lead_agent") && graphs.contains(&"echo"),
        "{graphs:?}"
    );

    let t = app.thread().await;
    let started = std::time::Instant::now();
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({"assistant_id": "lead_agent", "input": human("hi")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(v["__error__"]["error"], "ValueError", "{v}");
    let msg = v["__error__"]["message"].as_str().unwrap();
    assert!(msg.contains("`models:`"), "{msg}");

    // any model_name is refused: none is configured
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "lead_agent", "input": human("hi"), "context": {"model_name": "gpt-4o"}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("configured: none"),
        "{v}"
    );
    app.stop().await;
}

#[tokio::test]
async fn model_routes_model_selection_and_unknown_model_names() {
    let openai = FakeOpenAi::start().await.unwrap();
    let anthropic = FakeAnthropic::start().await.unwrap();
    let yaml = openai_yaml(
        &openai.base_url(),
        &format!(
            "  - name: claude\n    use: langchain_anthropic:ChatAnthropic\n    model: claude-sonnet\n    api_key: ak-test\n    base_url: {}\n    supports_thinking: true\ntitle:\n  enabled: false\n",
            anthropic.base_url()
        ),
    );
    let app = App::start(&yaml).await;
    for path in ["/models", "/api/models"] {
        let (s, v) = app.get(path).await;
        assert_eq!(s, 200);
        let names: Vec<&str> = v["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["fast", "claude"]);
        assert_eq!(v["models"][0]["display_name"], "Fast");
        assert!(v["models"][0].get("api_key").is_none());
    }
    let (s, v) = app.get("/api/models/claude").await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"name": "claude", "model": "claude-sonnet", "display_name": null, "description": null, "supports_thinking": true, "supports_reasoning_effort": false})
    );
    let (s, v) = app.get("/api/models/nope").await;
    assert_eq!(s, 404);
    assert_eq!(v["detail"], "Model 'nope' not found");

    // context.model_name picks the Anthropic model
    anthropic.reply(FakeReply::text("hello from claude", 2));
    let t = app.thread().await;
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({"assistant_id": "lead_agent", "input": human("hi"), "context": {"model_name": "claude"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["messages"].as_array().unwrap().last().unwrap()["content"],
        "hello from claude"
    );
    assert_eq!(anthropic.requests().len(), 1);
    assert_eq!(openai.requests().len(), 0);

    // unknown names: 400 on every run-create route, nothing created
    let bad = json!({"assistant_id": "lead_agent", "input": human("hi"), "context": {"model_name": "gpt-99"}});
    for path in [
        format!("/threads/{t}/runs"),
        format!("/api/threads/{t}/runs/stream"),
        format!("/threads/{t}/runs/wait"),
        "/runs/wait".to_string(),
        "/api/runs/stream".to_string(),
    ] {
        let (s, v) = app.post(&path, bad.clone()).await;
        assert_eq!(s, 400, "{path}: {v}");
        let d = v["detail"].as_str().unwrap();
        assert!(
            d.contains("'gpt-99'") && d.contains("allowlist") && d.contains("fast, claude"),
            "{d}"
        );
    }
    let (s, v) = app
        .post(
            "/runs/batch",
            json!([{"assistant_id": "echo", "input": human("x")}, {"assistant_id": "lead_agent", "config": {"configurable": {"model_name": "nope"}}}]),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "lead_agent", "context": {"model_name": 7}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, runs) = app.get(&format!("/threads/{t}/runs")).await;
    assert_eq!(
        runs.as_array().unwrap().len(),
        1,
        "only the good run exists"
    );
    // other POST routes are untouched by the check
    let (s, _) = app
        .post(
            "/threads/search",
            json!({"metadata": {"model_name": "gpt-99"}}),
        )
        .await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn declarative_agents_are_assistants_with_their_own_prompt_model_and_tools() {
    let openai = FakeOpenAi::start().await.unwrap();
    let yaml = openai_yaml(
        &openai.base_url(),
        "  - name: second\n    provider: openai\n    model: gpt-second\n    base_url: BASE\nagents:\n  - name: researcher\n    description: Reads files\n    model: second\n    system_prompt: You are a careful researcher.\n    tools: [read_file, ls]\nsandbox:\n  use: deerflow.sandbox.local:LocalSandboxProvider\n  allow_host_bash: true\ntitle:\n  enabled: false\n",
    )
    .replace("BASE", &openai.base_url());
    let app = App::start(&yaml).await;
    let (s, found) = app
        .post("/assistants/search", json!({"graph_id": "researcher"}))
        .await;
    assert_eq!(s, 200, "{found}");
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["metadata"]["created_by"], "system");
    assert_eq!(found[0]["description"], "Reads files", "{found}");

    openai.reply(FakeReply::text("Nothing to read yet.", 2));
    openai.reply(FakeReply::text("Lead answer.", 2));
    let t = app.thread().await;
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({"assistant_id": "researcher", "input": human("What is in my files?")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["messages"].as_array().unwrap().last().unwrap()["content"],
        "Nothing to read yet."
    );
    let t2 = app.thread().await;
    let (s, v) = app
        .post(
            &format!("/threads/{t2}/runs/wait"),
            json!({"assistant_id": "lead_agent", "input": human("hi")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let reqs = openai.requests();
    assert_eq!(reqs.len(), 2);
    // the agent: its model, its prompt, only its tools
    assert_eq!(reqs[0].body["model"], "gpt-second");
    let system = reqs[0].body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.starts_with("You are a careful researcher."),
        "{system}"
    );
    assert_eq!(tool_names(&reqs[0].body), vec!["ls", "read_file"]);
    // lead_agent: the default model and every workspace tool, bash included (allowed)
    assert_eq!(reqs[1].body["model"], "gpt-4o-mini");
    assert_eq!(
        tool_names(&reqs[1].body),
        vec!["ls", "read_file", "write_file", "str_replace", "bash"]
    );

    // DeerFlow's frontend runs `lead_agent` and names the custom agent in the context
    // (normalized: case, `_` as `-`): the run is the agent's
    openai.reply(FakeReply::text("As the researcher.", 2));
    let t3 = app.thread().await;
    let (s, v) = app
        .post(
            &format!("/threads/{t3}/runs/wait"),
            json!({"assistant_id": "lead_agent", "input": human("hi"),
                   "context": {"agent_name": " Researcher "}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let reqs = openai.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2].body["model"], "gpt-second");
    let (_, runs) = app.get(&format!("/threads/{t3}/runs")).await;
    assert_eq!(runs[0]["metadata"]["graph_id"], "researcher", "{runs}");
    // an unknown agent is a 422 naming the agents, and creates no run
    let (s, err) = app
        .post(
            &format!("/threads/{t3}/runs"),
            json!({"assistant_id": "lead_agent", "input": human("hi"),
                   "context": {"agent_name": "nobody"}}),
        )
        .await;
    assert_eq!(s, 422, "{err}");
    let detail = err["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("nobody") && detail.contains("researcher"),
        "{detail}"
    );
    let (_, runs) = app.get(&format!("/threads/{t3}/runs")).await;
    assert_eq!(runs.as_array().unwrap().len(), 1);
    // example graphs are no agents: agent_name is ignored there
    let (s, _) = app
        .post(
            &format!("/threads/{t3}/runs/wait"),
            json!({"assistant_id": "echo", "input": human("hi"),
                   "context": {"agent_name": "nobody"}}),
        )
        .await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn invalid_agent_sections_fail_at_startup_with_clear_errors() {
    let bad_tool = "models:\n  - name: m\n    provider: openai\n    model: x\nagents:\n  - name: writer\n    tools: [bash]\n";
    let cfg = antler::config::parse(bad_tool, &|_| None).unwrap();
    let models = std::sync::Arc::new(antler_llm::ModelRegistry::new(cfg.models.clone()).unwrap());
    let err = format!("{:#}", antler::build_graphs(&cfg, &models).err().unwrap());
    assert!(
        err.contains("'writer'") && err.contains("'bash'"),
        "bash is off by default: {err}"
    );
    let clash = "agents:\n  - name: echo\n";
    let cfg = antler::config::parse(clash, &|_| None).unwrap();
    let err = format!(
        "{:#}",
        antler::build_graphs(
            &cfg,
            &std::sync::Arc::new(antler_llm::ModelRegistry::empty())
        )
        .err()
        .unwrap()
    );
    assert!(err.contains("'echo'") && err.contains("graph id"), "{err}");
}

/// The non-empty answer chunks of the `model` node in an SSE response, with the time each
/// arrived at the client.
async fn answer_arrivals(r: reqwest::Response) -> Vec<(std::time::Instant, String)> {
    use futures::StreamExt;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut buf = String::new();
    let mut arrivals = Vec::new();
    while let Some(bytes) = body.next().await {
        let now = std::time::Instant::now();
        buf.push_str(&String::from_utf8_lossy(&bytes.unwrap()).replace("\r\n", "\n"));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            for (name, data) in parse_sse(&block) {
                let text = data[0]["content"].as_str().unwrap_or("");
                if name == "messages" && data[1]["langgraph_node"] == "model" && !text.is_empty() {
                    arrivals.push((now, text.to_string()));
                }
            }
        }
    }
    arrivals
}

/// Token streaming reaches the client as the provider produces it: a final answer whose three
/// chunks leave the model 50 ms apart arrives at an SSE client 50 ms apart, not in one burst at
/// the end of the model call, on the run's own stream (DeerFlow's request: its stream modes,
/// subgraphs, `on_disconnect: continue`, its context) and on a join of a background run (what
/// DeerFlow's page does after it navigated to the new thread).
#[tokio::test]
async fn answer_tokens_reach_the_sse_client_as_the_model_sends_them() {
    let gap = Duration::from_millis(50);
    let fake = FakeOpenAi::start().await.unwrap();
    let app = App::start(&openai_yaml(&fake.base_url(), "")).await;
    let t = app.thread().await;
    let request = json!({
        "assistant_id": "lead_agent",
        "input": human("write a note"),
        "stream_mode": ["values", "messages-tuple", "updates", "custom"],
        "stream_subgraphs": true,
        "on_disconnect": "continue",
        "config": {"recursion_limit": 1000},
        "context": {"thinking_enabled": true, "is_plan_mode": false, "subagent_enabled": false,
                    "reasoning_effort": "medium", "thread_id": t, "mode": "pro"},
    });
    for join in [false, true] {
        fake.reply(
            FakeReply::tool_call(
                "call_1",
                "write_file",
                json!({"path": "note.txt", "content": "x"}),
            )
            .with_gap(gap),
        );
        fake.reply(FakeReply::text("done: note written", 3).with_gap(gap));
        fake.reply(FakeReply::text("Note", 1));
        let response = if join {
            let (s, run) = app
                .post(&format!("/api/threads/{t}/runs"), request.clone())
                .await;
            assert_eq!(s, 200, "{run}");
            let rid = run["run_id"].as_str().unwrap();
            let url = app.u(&format!("/api/threads/{t}/runs/{rid}/stream"));
            app.http.get(url).header("last-event-id", "-1").send().await
        } else {
            let url = app.u(&format!("/api/threads/{t}/runs/stream"));
            app.http.post(url).json(&request).send().await
        };
        let arrivals = answer_arrivals(response.unwrap()).await;
        let texts: Vec<&str> = arrivals.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts.len(), 3, "join: {join}: {texts:?}");
        assert_eq!(texts.concat(), "done: note written", "join: {join}");
        let gaps: Vec<Duration> = arrivals
            .windows(2)
            .map(|w| w[1].0.duration_since(w[0].0))
            .collect();
        // a burst would be ~0 ms apart; allow for a loaded machine, not for buffering
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(20)),
            "join: {join}: the chunks arrived together: {gaps:?}"
        );
    }
    app.stop().await;
}
