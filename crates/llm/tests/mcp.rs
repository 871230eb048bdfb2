//! MCP client against the stdio fixture server (`tests/fixtures/mcp_echo_server.py`): listing,
//! calls, error results, timeouts, and the child's end when the hub is dropped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use antler_graph::CancellationToken;
use antler_llm::{McpHub, McpServerConfig, McpTransport, Tool, ToolContext};
use serde_json::json;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mcp_echo_server.py")
}

fn echo_server(name: &str, marker: &str) -> McpServerConfig {
    McpServerConfig::new(
        name,
        McpTransport::Stdio {
            command: "python3".into(),
            args: vec![fixture().display().to_string(), marker.to_string()],
            env: BTreeMap::from([("PYTHONUNBUFFERED".to_string(), "1".to_string())]),
        },
    )
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

fn tool(hub: &McpHub, name: &str) -> std::sync::Arc<dyn Tool> {
    hub.tools()
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
}

#[tokio::test]
async fn tools_are_listed_called_and_closed() {
    let marker = format!("--antler-test-{}", uuid::Uuid::now_v7());
    // `echo` collides with a reserved name on purpose: it is offered as `echo-srv__echo`.
    let hub = McpHub::start(
        vec![echo_server("echo-srv", &marker)],
        &["echo".to_string()],
    );
    assert!(hub.failures().is_empty(), "{:?}", hub.failures());
    assert_eq!(
        hub.tool_names(None),
        vec!["echo-srv__echo", "fail", "sleep"]
    );
    assert_eq!(hub.tools_of(&["other".to_string()]).len(), 0);
    let echo = tool(&hub, "echo-srv__echo");
    assert_eq!(echo.parameters()["required"], json!(["text"]));
    assert_eq!(echo.description(), "Echo the given text back.");

    let ctx = ToolContext::new("t1", CancellationToken::new());
    assert_eq!(
        echo.call(json!({"text": "hello mcp"}), &ctx).await.unwrap(),
        "hello mcp"
    );
    let err = tool(&hub, "fail").call(json!({}), &ctx).await.unwrap_err();
    assert_eq!(err.0, "the fail tool failed on purpose");
    let err = echo.call(json!([1]), &ctx).await.unwrap_err();
    assert!(err.0.contains("must be a JSON object"), "{err}");
    assert_eq!(processes_with(&marker), 1);

    let late = tool(&hub, "echo-srv__echo");
    drop(hub);
    drop(echo);
    // A tool still held keeps the session open...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(processes_with(&marker), 1, "closed while a tool is alive");
    let text = late.call(json!({"text": "still open"}), &ctx).await;
    assert_eq!(text.unwrap(), "still open");
    // ...and once the hub and every tool are dropped the session closes: the child exits
    // (stdin closed, then SIGTERM / kill).
    drop(late);
    let mut gone = false;
    for _ in 0..100 {
        if processes_with(&marker) == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gone,
        "the MCP child is still running after the hub was dropped"
    );
}

#[tokio::test]
async fn a_hung_call_times_out_and_the_server_stays_usable() {
    let marker = format!("--antler-test-{}", uuid::Uuid::now_v7());
    let mut cfg = echo_server("slow", &marker);
    cfg.call_timeout = Duration::from_millis(300);
    let hub = McpHub::start(vec![cfg], &[]);
    assert!(hub.failures().is_empty(), "{:?}", hub.failures());
    let ctx = ToolContext::new("t1", CancellationToken::new());
    let started = std::time::Instant::now();
    let err = tool(&hub, "sleep")
        .call(json!({"seconds": 0.6}), &ctx)
        .await
        .unwrap_err();
    assert!(err.0.contains("timed out after 0.3 s"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(600));
    // The server (one request at a time) answers the next call once it has finished sleeping.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = tool(&hub, "echo")
        .call(json!({"text": "still here"}), &ctx)
        .await;
    assert_eq!(ok.unwrap(), "still here");
}

#[tokio::test]
async fn a_cancelled_run_cancels_the_call() {
    let hub = McpHub::start(vec![echo_server("c", "--antler-cancel")], &[]);
    let cancel = CancellationToken::new();
    let ctx = ToolContext::new("t1", cancel.clone());
    let sleep = tool(&hub, "sleep");
    let call = sleep.call(json!({"seconds": 5}), &ctx);
    cancel.cancel();
    let err = call.await.unwrap_err();
    assert!(err.0.contains("cancelled"), "{err}");
}

#[tokio::test]
async fn a_server_that_does_not_speak_mcp_is_a_failure() {
    let mut cfg = McpServerConfig::new(
        "mute",
        McpTransport::Stdio {
            command: "sleep".into(),
            args: vec!["30".into()],
            env: BTreeMap::new(),
        },
    );
    cfg.connect_timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let hub = McpHub::start(vec![cfg, echo_server("ok", "--antler-mute")], &[]);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(hub.failures().len(), 1);
    assert_eq!(hub.failures()[0].server, "mute");
    assert!(hub.failures()[0].error.contains("no answer within 0.5 s"));
    assert_eq!(hub.tool_names(None), vec!["echo", "fail", "sleep"]);
}

/// The legacy HTTP+SSE transport (DeerFlow's `type: sse`) against the fixture in `--sse` mode:
/// listing and calls over the event stream, and a clean failure (no hang) once the server is
/// gone.
#[tokio::test]
async fn legacy_sse_servers_are_listed_and_called() {
    use std::io::BufRead;
    let mut child = std::process::Command::new("python3")
        .arg(fixture())
        .arg("--sse")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected fixture output: {line}"));
    let mut server = McpServerConfig::new(
        "legacy",
        McpTransport::Sse {
            url: format!("http://127.0.0.1:{port}/sse"),
            headers: BTreeMap::from([("X-Antler-Test".to_string(), "1".to_string())]),
        },
    );
    server.call_timeout = Duration::from_secs(5);
    let hub = McpHub::start(vec![server], &[]);
    assert!(hub.failures().is_empty(), "{:?}", hub.failures());
    assert_eq!(hub.tool_names(None), vec!["echo", "fail", "sleep"]);
    let ctx = ToolContext::new("t-sse", CancellationToken::new());
    let echo = tool(&hub, "echo");
    assert_eq!(
        echo.call(json!({"text": "over sse"}), &ctx).await.unwrap(),
        "over sse"
    );
    let err = tool(&hub, "fail").call(json!({}), &ctx).await.unwrap_err();
    assert_eq!(err.0, "the fail tool failed on purpose");

    let _ = child.kill();
    let _ = child.wait();
    let started = std::time::Instant::now();
    let gone = echo.call(json!({"text": "anyone?"}), &ctx).await;
    assert!(gone.is_err(), "{gone:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a dead server fails the call instead of hanging"
    );
}
