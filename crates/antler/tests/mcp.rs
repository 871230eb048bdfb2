//! End-to-end: MCP tools in `lead_agent`. The real server (config from YAML, SQLite, port 0)
//! connects to the stdio MCP server `tests/fixtures/mcp_echo_server.py`; the chat model is the
//! fake OpenAI server of `antler-llm`, scripted to call the MCP tools.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use antler_llm::fake::{FakeOpenAi, FakeReply};
use serde_json::{Value, json};

fn fixture() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/mcp_echo_server.py")
        .display()
        .to_string()
}

/// Collects the log lines written while it is the thread's subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default()
    }
}

struct App {
    server: Option<antler::Server>,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = antler::config::parse(yaml, &|_| None).unwrap();
        cfg.port = 0;
        cfg.sqlite_dir = dir.path().to_path_buf();
        let server = antler::start(cfg).await.unwrap();
        Self {
            url: server.url(),
            server: Some(server),
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn thread(&self) -> String {
        let (s, t) = self.post("/threads", json!({})).await;
        assert_eq!(s, 200, "{t}");
        t["thread_id"].as_str().unwrap().to_string()
    }

    async fn wait(&self, thread: &str, assistant: &str, text: &str) -> Value {
        let (s, v) = self
            .post(
                &format!("/threads/{thread}/runs/wait"),
                json!({"assistant_id": assistant, "input": {"messages": [{"role": "human", "content": text}]}}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(marker))
        .count()
}

fn config(model_url: &str, marker: &str) -> String {
    format!(
        "models:\n  - name: fast\n    use: langchain_openai:ChatOpenAI\n    model: gpt-4o-mini\n    api_key: sk-test\n    base_url: {model_url}\ntitle:\n  enabled: false\nsandbox:\n  enabled: false\nmcp_servers:\n  echo:\n    command: python3\n    args: [{fixture}, {marker}]\n    env: {{PYTHONUNBUFFERED: 1}}\n    timeout_seconds: 5\n  broken:\n    type: stdio\n    command: /nonexistent/antler-mcp-server\n  off:\n    enabled: false\n    command: /nonexistent/never-started\nagents:\n  - name: plain\n    mcp_servers: [broken]\n  - name: picky\n    tools: [echo]\n",
        fixture = fixture()
    )
}

#[tokio::test]
async fn mcp_tools_are_called_their_errors_are_tool_messages_and_a_broken_server_only_warns() {
    let fake = FakeOpenAi::start().await.unwrap();
    // run 1: echo, then the answer; run 2: fail, then the answer; run 3 (`plain`): an answer
    fake.reply(FakeReply::tool_call(
        "call_echo",
        "echo",
        json!({"text": "ping from mcp"}),
    ));
    fake.reply(FakeReply::text("The echo said: ping from mcp.", 3));
    fake.reply(FakeReply::tool_call("call_fail", "fail", json!({})));
    fake.reply(FakeReply::text("The fail tool failed, as expected.", 3));
    fake.reply(FakeReply::text("No tools here.", 2));
    fake.reply(FakeReply::text("Echo is offered.", 2));

    let marker = format!("--antler-e2e-{}", std::process::id());
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let app = {
        // Current-thread test runtime: startup (and so build_graphs) runs on this thread.
        let _guard = tracing::subscriber::set_default(subscriber);
        App::start(&config(&fake.base_url(), &marker)).await
    };
    let logs = logs.text();
    assert!(
        logs.contains("WARN") && logs.contains("MCP server 'broken' is unavailable"),
        "{logs}"
    );
    assert!(
        !logs.contains("'off'"),
        "a disabled server is not started: {logs}"
    );

    let t = app.thread().await;
    let v = app.wait(&t, "lead_agent", "Echo something").await;
    let msgs = v["messages"].as_array().unwrap();
    let types: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, vec!["human", "ai", "tool", "ai"], "{v}");
    assert_eq!(msgs[1]["tool_calls"][0]["name"], "echo");
    assert_eq!(msgs[2]["tool_call_id"], "call_echo");
    assert_eq!(msgs[2]["name"], "echo");
    assert_eq!(msgs[2]["content"], "ping from mcp");
    assert_ne!(msgs[2]["status"], "error", "{}", msgs[2]);
    assert_eq!(msgs[3]["content"], "The echo said: ping from mcp.");

    let v = app.wait(&t, "lead_agent", "Now fail").await;
    let msgs = v["messages"].as_array().unwrap();
    let tool_msg = msgs
        .iter()
        .find(|m| m["tool_call_id"] == "call_fail")
        .expect("the fail tool message");
    assert_eq!(tool_msg["status"], "error", "{tool_msg}");
    assert!(
        tool_msg["content"]
            .as_str()
            .unwrap()
            .contains("the fail tool failed on purpose"),
        "{tool_msg}"
    );
    assert_eq!(
        msgs.last().unwrap()["content"],
        "The fail tool failed, as expected."
    );
    let r = app
        .http
        .get(format!("{}/threads/{t}/runs", app.url))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let runs: Value = r.json().await.unwrap();
    assert_eq!(s, 200, "{runs}");
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "success")
            && runs.as_array().unwrap().len() == 2,
        "{runs}"
    );

    // `plain` takes its MCP tools from `broken` only (none); `picky` lists `echo` in `tools:`.
    let t2 = app.thread().await;
    app.wait(&t2, "plain", "hi").await;
    let t3 = app.thread().await;
    app.wait(&t3, "picky", "hi").await;

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 6);
    assert_eq!(tool_names(&reqs[0].body), vec!["echo", "fail", "sleep"]);
    let echo_spec = reqs[0].body["tools"][0]["function"].clone();
    assert_eq!(echo_spec["description"], "Echo the given text back.");
    assert_eq!(echo_spec["parameters"]["required"], json!(["text"]));
    // the tool result went back to the model
    let sent = reqs[1].body["messages"].as_array().unwrap();
    assert_eq!(sent.last().unwrap()["role"], "tool");
    assert_eq!(sent.last().unwrap()["content"], "ping from mcp");
    assert!(tool_names(&reqs[4].body).is_empty(), "{:?}", reqs[4].body);
    assert_eq!(tool_names(&reqs[5].body), vec!["echo", "fail", "sleep"]);

    // the MCP child lives as long as the server
    assert_eq!(processes_with(&marker), 1);
    app.stop().await;
    let mut gone = false;
    for _ in 0..100 {
        if processes_with(&marker) == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the MCP server outlived the shutdown");
}

#[tokio::test]
async fn an_agent_naming_an_unknown_mcp_server_is_a_config_error() {
    let err = antler::config::parse(
        "mcp_servers:\n  a:\n    command: x\nagents:\n  - name: b\n    mcp_servers: [nope]\n",
        &|_| None,
    )
    .err()
    .unwrap();
    assert!(
        format!("{err:#}").contains("'nope' is not in `mcp_servers:`"),
        "{err:#}"
    );
    // no servers configured: nothing is started, startup is not delayed
    let started = std::time::Instant::now();
    let cfg = antler::config::parse("", &|_| None).unwrap();
    let models = Arc::new(antler_llm::ModelRegistry::empty());
    antler::build_graphs(&cfg, &models).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}
