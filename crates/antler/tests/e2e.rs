//! End-to-end tests: boot the real server (router, middleware, runtime, SQLite) on port 0 and
//! speak to it over HTTP as clients do.

use std::time::Duration;

use antler::config::{Backend, Config};
use futures::StreamExt;
use serde_json::{Value, json};

struct App {
    server: Option<antler::Server>,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(f: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config {
            port: 0,
            backend: Backend::Sqlite,
            sqlite_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        cfg.heartbeat = Duration::from_millis(500);
        f(&mut cfg);
        let server = antler::start(cfg).await.unwrap();
        let url = server.url();
        Self {
            server: Some(server),
            url,
            http: reqwest::Client::new(),
            _dir: dir,
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

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Sse {
    event: String,
    data: Value,
    id: Option<String>,
}

/// Parses a complete SSE body (CRLF or LF framing), skipping comments.
fn parse_sse(text: &str) -> Vec<Sse> {
    let text = text.replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = None;
        let mut id = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap_or(Value::Null));
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.to_string());
            }
        }
        if let Some(event) = event {
            out.push(Sse {
                event,
                data: data.unwrap_or(Value::Null),
                id,
            });
        }
    }
    out
}

async fn stream(app: &App, path: &str, body: Value) -> (reqwest::header::HeaderMap, Vec<Sse>) {
    let r = app.http.post(app.u(path)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (headers, parse_sse(&text))
}

fn names(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

fn human(text: &str) -> Value {
    json!({"messages": [{"role": "human", "content": text}]})
}

fn seq_of(id: &str) -> u64 {
    id.rsplit('-').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn echo_stream_has_ids_values_and_end() {
    let app = App::start().await;
    let t = app.thread().await;
    let (headers, ev) = stream(
        &app,
        &format!("/threads/{t}/runs/stream"),
        json!({"assistant_id": "echo", "input": human("hello there, this is a long first message")}),
    )
    .await;
    assert_eq!(names(&ev), vec!["metadata", "values", "values", "end"]);
    let loc = headers["content-location"].to_str().unwrap();
    assert!(loc.starts_with(&format!("/threads/{t}/runs/")));
    assert_eq!(
        headers["content-type"].to_str().unwrap(),
        "text/event-stream; charset=utf-8"
    );
    let last = &ev[2].data;
    assert_eq!(last["title"], "hello there, this is");
    assert_eq!(
        last["messages"][1]["content"],
        "echo: hello there, this is a long first message"
    );
    assert_eq!(last["messages"][1]["type"], "ai");
    // ids: strictly increasing <ms>-<seq>, seq = offset
    let ids: Vec<u64> = ev[..3]
        .iter()
        .map(|e| seq_of(e.id.as_ref().unwrap()))
        .collect();
    assert_eq!(ids, vec![0, 1, 2]);
    // thread after: idle with values, run success
    let (_, thread) = app.get(&format!("/threads/{t}")).await;
    assert_eq!(thread["status"], "idle");
    assert_eq!(thread["values"]["title"], "hello there, this is");
    assert_eq!(thread["metadata"]["graph_id"], "echo");
    let (_, runs) = app.get(&format!("/threads/{t}/runs")).await;
    assert_eq!(runs[0]["status"], "success");
    app.stop().await;
}

#[tokio::test]
async fn wait_returns_values_errors_and_interrupts() {
    let app = App::start().await;
    let t = app.thread().await;
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({"assistant_id": "echo", "input": human("hi")}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["messages"][1]["content"], "echo: hi");

    let t2 = app.thread().await;
    let (_, v) = app
        .post(
            &format!("/threads/{t2}/runs/wait"),
            json!({"assistant_id": "fail", "input": human("hi")}),
        )
        .await;
    assert_eq!(
        v,
        json!({"__error__": {"error": "ValueError", "message": "boom"}})
    );
    let (_, thread) = app.get(&format!("/threads/{t2}")).await;
    assert_eq!(thread["status"], "error");
    assert_eq!(
        thread["error"],
        json!({"error": "ValueError", "message": "boom"})
    );

    let t3 = app.thread().await;
    let (_, v) = app
        .post(
            &format!("/threads/{t3}/runs/wait"),
            json!({"assistant_id": "interrupt", "input": human("hi")}),
        )
        .await;
    assert_eq!(
        v["__interrupt__"][0]["value"],
        json!({"question": "approve?"})
    );
    let (_, thread) = app.get(&format!("/threads/{t3}")).await;
    assert_eq!(thread["status"], "interrupted");
    let (_, v) = app
        .post(
            &format!("/threads/{t3}/runs/wait"),
            json!({"assistant_id": "interrupt", "command": {"resume": {"approved": true}}}),
        )
        .await;
    assert_eq!(
        v["messages"][1]["content"],
        "resumed with: {'approved': True}"
    );
    let (_, thread) = app.get(&format!("/threads/{t3}")).await;
    assert_eq!(thread["status"], "idle");
    app.stop().await;
}

#[tokio::test]
async fn fail_stream_ends_with_the_error_event() {
    let app = App::start().await;
    let t = app.thread().await;
    let (_, ev) = stream(
        &app,
        &format!("/threads/{t}/runs/stream"),
        json!({"assistant_id": "fail", "input": human("x"), "stream_mode": ["values", "updates"]}),
    )
    .await;
    assert_eq!(names(&ev), vec!["metadata", "values", "error"]);
    assert_eq!(
        ev[2].data,
        json!({"error": "ValueError", "message": "boom"})
    );
    app.stop().await;
}

async fn start_slow(app: &App, t: &str, delay: f64, extra: Value) -> String {
    let mut body = json!({"assistant_id": "slow", "input": human("go"),
                          "config": {"configurable": {"delay": delay}}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let (s, run) = app.post(&format!("/threads/{t}/runs"), body).await;
    assert_eq!(s, 200, "{run}");
    run["run_id"].as_str().unwrap().to_string()
}

async fn wait_status(app: &App, t: &str, r: &str, want: &str) {
    for _ in 0..200 {
        let (_, run) = app.get(&format!("/threads/{t}/runs/{r}")).await;
        if run["status"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {r} never reached {want}");
}

#[tokio::test]
async fn cancel_interrupt_keeps_steps_and_rollback_deletes_the_run() {
    let app = App::start().await;
    let t = app.thread().await;
    let r = start_slow(&app, &t, 0.3, json!({})).await;
    wait_status(&app, &t, &r, "running").await;
    // Wait until step 1 is committed (we are then in step 2), however slow the machine is.
    let mut in_step_2 = false;
    for _ in 0..400 {
        let (_, state) = app.get(&format!("/threads/{t}/state")).await;
        if state["values"]["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["content"] == "step 1"))
        {
            in_step_2 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(in_step_2, "step 1 never committed");
    let resp = app
        .http
        .post(app.u(&format!(
            "/threads/{t}/runs/{r}/cancel?wait=1&action=interrupt"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, run) = app.get(&format!("/threads/{t}/runs/{r}")).await;
    assert_eq!(run["status"], "interrupted");
    let (_, thread) = app.get(&format!("/threads/{t}")).await;
    let msgs = thread["values"]["messages"].as_array().unwrap();
    assert!(msgs.iter().any(|m| m["content"] == "step 1"), "{thread}");
    assert!(!msgs.iter().any(|m| m["content"] == "step 3"));

    let t2 = app.thread().await;
    let r2 = start_slow(&app, &t2, 0.3, json!({})).await;
    wait_status(&app, &t2, &r2, "running").await;
    let resp = app
        .http
        .post(app.u(&format!(
            "/threads/{t2}/runs/{r2}/cancel?wait=true&action=rollback"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (s, _) = app.get(&format!("/threads/{t2}/runs/{r2}")).await;
    assert_eq!(s, 404);
    let (_, thread) = app.get(&format!("/threads/{t2}")).await;
    assert_eq!(thread["status"], "idle");
    assert_eq!(thread["values"], Value::Null);
    // cancelling again: nothing to cancel
    let resp = app
        .http
        .post(app.u(&format!("/threads/{t2}/runs/{r2}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn multitask_reject_and_enqueue_order() {
    let app = App::start().await;
    let t = app.thread().await;
    let first = start_slow(&app, &t, 0.2, json!({})).await;
    wait_status(&app, &t, &first, "running").await;
    let (s, v) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "echo", "input": human("second"), "multitask_strategy": "reject"}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    let (s, second) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "echo", "input": human("second")}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, third) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "echo", "input": human("third")}),
        )
        .await;
    assert_eq!(s, 200);
    let third_id = third["run_id"].as_str().unwrap();
    let (_, v) = app.get(&format!("/threads/{t}/runs/{third_id}/join")).await;
    let contents: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        vec![
            "go",
            "step 1",
            "step 2",
            "step 3",
            "second",
            "echo: second",
            "third",
            "echo: third"
        ]
    );
    let second_id = second["run_id"].as_str().unwrap();
    let (_, r2) = app.get(&format!("/threads/{t}/runs/{second_id}")).await;
    assert_eq!(r2["status"], "success");
    app.stop().await;
}

#[tokio::test]
async fn multitask_interrupt_and_rollback() {
    let app = App::start().await;
    let t = app.thread().await;
    let first = start_slow(&app, &t, 0.3, json!({})).await;
    wait_status(&app, &t, &first, "running").await;
    let (s, second) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "echo", "input": human("second"), "multitask_strategy": "interrupt"}),
        )
        .await;
    assert_eq!(s, 200);
    let sid = second["run_id"].as_str().unwrap();
    let (_, v) = app.get(&format!("/threads/{t}/runs/{sid}/join")).await;
    assert_eq!(
        v["messages"].as_array().unwrap().last().unwrap()["content"],
        "echo: second"
    );
    let (_, r1) = app.get(&format!("/threads/{t}/runs/{first}")).await;
    assert_eq!(r1["status"], "interrupted");

    let t2 = app.thread().await;
    let first = start_slow(&app, &t2, 0.3, json!({})).await;
    wait_status(&app, &t2, &first, "running").await;
    let (_, second) = app
        .post(
            &format!("/threads/{t2}/runs"),
            json!({"assistant_id": "echo", "input": human("second"), "multitask_strategy": "rollback"}),
        )
        .await;
    let sid = second["run_id"].as_str().unwrap();
    let (_, v) = app.get(&format!("/threads/{t2}/runs/{sid}/join")).await;
    let contents: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, vec!["second", "echo: second"]);
    let (s, _) = app.get(&format!("/threads/{t2}/runs/{first}")).await;
    assert_eq!(s, 404);
    app.stop().await;
}

#[tokio::test]
async fn join_stream_resumes_exactly_after_last_event_id() {
    let app = App::start().await;
    let t = app.thread().await;
    let r = start_slow(
        &app,
        &t,
        0.15,
        json!({"stream_mode": ["values", "custom", "updates"], "on_disconnect": "continue"}),
    )
    .await;
    // Read the first few events, then drop the connection.
    let resp = app
        .http
        .get(app.u(&format!("/threads/{t}/runs/{r}/stream")))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while parse_sse(&buf).len() < 4 {
        let chunk = body.next().await.unwrap().unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(body);
    let first_part: Vec<Sse> = parse_sse(&buf)
        .into_iter()
        .filter(|e| e.id.is_some())
        .collect();
    let last_id = first_part.last().unwrap().id.clone().unwrap();
    // Rejoin after the last id seen.
    let resp = app
        .http
        .get(app.u(&format!("/threads/{t}/runs/{r}/stream")))
        .header("Last-Event-ID", &last_id)
        .send()
        .await
        .unwrap();
    let rest = parse_sse(&resp.text().await.unwrap());
    // Full replay for comparison.
    let resp = app
        .http
        .get(app.u(&format!("/threads/{t}/runs/{r}/stream")))
        .header("Last-Event-ID", "-1")
        .send()
        .await
        .unwrap();
    let full = parse_sse(&resp.text().await.unwrap());
    let mut joined = first_part.clone();
    joined.extend(rest.into_iter());
    assert_eq!(joined, full, "resume lost or repeated events");
    assert_eq!(full.last().unwrap().event, "end");
    let customs = full.iter().filter(|e| e.event == "custom").count();
    assert_eq!(customs, 6);
    app.stop().await;
}

#[tokio::test]
async fn stateless_runs_and_errors() {
    let app = App::start().await;
    let (s, v) = app
        .post(
            "/runs/wait",
            json!({"assistant_id": "echo", "input": human("yo")}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["messages"][1]["content"], "echo: yo");
    let (headers, ev) = stream(
        &app,
        "/runs/stream",
        json!({"assistant_id": "echo", "input": human("yo")}),
    )
    .await;
    assert!(
        headers["content-location"]
            .to_str()
            .unwrap()
            .starts_with("/runs/")
    );
    assert_eq!(names(&ev), vec!["metadata", "values", "values", "end"]);
    let (s, v) = app
        .post("/runs/stream", json!({"assistant_id": "nope"}))
        .await;
    assert_eq!(s, 422);
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("Invalid assistant: 'nope'")
    );
    let (s, v) = app
        .post(
            "/threads/00000000-0000-4000-8000-00000000abce/runs/stream",
            json!({"assistant_id": "echo"}),
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(v["detail"], "Thread or assistant not found.");
    let (s, _) = app
        .post(
            "/threads/00000000-0000-4000-8000-00000000abcd/runs/wait",
            json!({"assistant_id": "echo", "input": human("x"), "if_not_exists": "create"}),
        )
        .await;
    assert_eq!(s, 200);
    app.stop().await;
}

#[tokio::test]
async fn garbage_input_never_yields_5xx() {
    let app = App::start().await;
    let t = app.thread().await;
    let bodies: Vec<String> = vec![
        "".into(),
        "{".into(),
        "null".into(),
        "[]".into(),
        "42".into(),
        "\"x\"".into(),
        json!({"assistant_id": 1}).to_string(),
        json!({"assistant_id": "echo", "stream_mode": 3}).to_string(),
        json!({"assistant_id": "echo", "input": "str"}).to_string(),
        json!({"assistant_id": "echo", "command": {"resume": 1, "goto": 5}}).to_string(),
        json!({"assistant_id": "echo", "checkpoint_id": "nope"}).to_string(),
        json!({"assistant_id": "echo", "config": {"recursion_limit": -1}}).to_string(),
        json!({"limit": "ten"}).to_string(),
        json!({"values": 5, "as_node": 3}).to_string(),
    ];
    let paths = [
        format!("/threads/{t}/runs"),
        format!("/threads/{t}/runs/stream"),
        format!("/threads/{t}/runs/wait"),
        "/runs".to_string(),
        "/runs/wait".to_string(),
        "/runs/batch".to_string(),
        "/runs/cancel".to_string(),
        format!("/threads/{t}/state"),
        format!("/threads/{t}/history"),
        "/threads/search".to_string(),
        "/threads".to_string(),
        "/assistants/search".to_string(),
        "/store/items/search".to_string(),
    ];
    for p in &paths {
        for b in &bodies {
            let r = app
                .http
                .post(app.u(p))
                .header("content-type", "application/json")
                .body(b.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert!(status < 500, "POST {p} {b} -> {status} {text}");
        }
    }
    for p in [
        "/threads/not a uuid!!/state",
        "/threads/x/runs/not-a-uuid",
        "/threads/x/runs/00000000-0000-4000-8000-000000000000/join",
        "/threads/x/state/nope",
        "/assistants/%00",
    ] {
        let r = app.http.get(app.u(p)).send().await.unwrap();
        assert!(r.status().as_u16() < 500, "GET {p} -> {}", r.status());
    }
    app.stop().await;
}

#[tokio::test]
async fn state_history_and_update_state() {
    let app = App::start().await;
    let t = app.thread().await;
    let (_, empty) = app.get(&format!("/threads/{t}/state")).await;
    assert_eq!(empty["values"], json!({}));
    assert_eq!(empty["checkpoint"], Value::Null);
    app.post(
        &format!("/threads/{t}/runs/wait"),
        json!({"assistant_id": "echo", "input": human("hey")}),
    )
    .await;
    let (_, state) = app.get(&format!("/threads/{t}/state")).await;
    assert_eq!(state["next"], json!([]));
    assert_eq!(state["metadata"]["source"], "loop");
    assert_eq!(state["metadata"]["step"], 1);
    let (_, hist) = app
        .post(&format!("/threads/{t}/history"), json!({"limit": 2}))
        .await;
    assert_eq!(hist.as_array().unwrap().len(), 2);
    assert_eq!(hist[1]["next"], json!(["echo"]));
    let (s, up) = app
        .post(
            &format!("/threads/{t}/state"),
            json!({"values": {"title": "Renamed by user"}}),
        )
        .await;
    assert_eq!(s, 200, "{up}");
    assert!(up["checkpoint_id"].is_string());
    let (_, state) = app.get(&format!("/threads/{t}/state")).await;
    assert_eq!(state["values"]["title"], "Renamed by user");
    assert_eq!(state["metadata"]["source"], "update");
    let cp = state["parent_checkpoint"]["checkpoint_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, old) = app.get(&format!("/threads/{t}/state/{cp}")).await;
    assert_eq!(s, 200);
    assert_eq!(old["values"]["title"], "hey");
    app.stop().await;
}

#[tokio::test]
async fn webhook_receives_the_finished_run() {
    use axum::routing::post;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let hook = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    let hook_task = tokio::spawn(async move { axum::serve(listener, hook).await });
    let app = App::start().await;
    let t = app.thread().await;
    let (s, run) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "echo", "input": human("hook"),
                   "webhook": format!("http://{hook_addr}/hook")}),
        )
        .await;
    assert_eq!(s, 200);
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["run_id"], run["run_id"]);
    assert_eq!(got["status"], "success");

    // an https:// webhook is dialled over TLS: the first byte the endpoint gets is a TLS
    // handshake record (0x16), not the start of a plain HTTP request
    let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = tls_listener.local_addr().unwrap();
    let first_byte = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut conn, _) = tls_listener.accept().await.unwrap();
        conn.read_u8().await.unwrap()
    });
    let (s, _) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "echo", "input": human("hook"),
                   "webhook": format!("https://{tls_addr}/hook")}),
        )
        .await;
    assert_eq!(s, 200);
    let byte = tokio::time::timeout(Duration::from_secs(10), first_byte)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(byte, 0x16, "a TLS ClientHello");
    hook_task.abort();
    app.stop().await;
}

#[tokio::test]
async fn after_seconds_delays_the_start() {
    let app = App::start().await;
    let t = app.thread().await;
    let started = std::time::Instant::now();
    let (_, run) = app
        .post(
            &format!("/threads/{t}/runs"),
            json!({"assistant_id": "echo", "input": human("later"), "after_seconds": 0.5}),
        )
        .await;
    let rid = run["run_id"].as_str().unwrap();
    let (_, r) = app.get(&format!("/threads/{t}/runs/{rid}")).await;
    assert_eq!(r["status"], "pending");
    let (_, v) = app.get(&format!("/threads/{t}/runs/{rid}/join")).await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(v["messages"][1]["content"], "echo: later");
    app.stop().await;
}

/// A client that sends its headers slower than `server.header_timeout_seconds` is
/// disconnected (slowloris); one that is on time, and an SSE stream that lasts longer than the
/// timeout, are served as usual.
#[tokio::test]
async fn slow_headers_are_cut_off_and_long_streams_are_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = App::start_with(|c| c.header_timeout = Duration::from_millis(500)).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "a client stuck in its headers was never disconnected"
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"), "{buf:?}");
    // a stream outlives the header timeout
    let t = app.thread().await;
    let resp = app
        .http
        .post(app.u(&format!("/threads/{t}/runs/stream")))
        .json(&json!({"assistant_id": "slow", "input": human("go"),
                      "config": {"configurable": {"delay": 0.6}}, "stream_mode": "custom"}))
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    assert_eq!(body.matches("event: custom").count(), 6, "{body}");
    let (status, _) = app.get("/ok").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn shutdown_releases_running_runs_and_ends_streams() {
    let app = App::start_with(|c| c.runtime.shutdown_grace = Duration::from_secs(2)).await;
    let t = app.thread().await;
    let resp = app
        .http
        .post(app.u(&format!("/threads/{t}/runs/stream")))
        .json(&json!({"assistant_id": "slow", "input": human("go"),
                      "config": {"configurable": {"delay": 30}}, "stream_mode": "custom"}))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    // wait for the run to start (first custom event)
    let mut buf = String::new();
    while !buf.contains("event: custom") {
        let chunk = body.next().await.unwrap().unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    let runtime = app.server.as_ref().unwrap().runtime.clone();
    let started = std::time::Instant::now();
    let mut app = app;
    let server = app.server.take().unwrap();
    server.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // the stream ended (the body finishes)
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(rest.is_ok(), "stream did not end on shutdown");
    assert_eq!(runtime.live_count(), 0);
}

#[tokio::test]
async fn run_events_backends_jsonl_and_memory() {
    for backend in ["jsonl", "memory"] {
        let events_dir = tempfile::tempdir().unwrap();
        let dir = events_dir.path().to_path_buf();
        let app = App::start_with(|c| {
            c.run_events = match backend {
                "jsonl" => antler::config::RunEventsBackend::Jsonl(Some(dir.clone())),
                _ => antler::config::RunEventsBackend::Memory,
            };
        })
        .await;
        let t = app.thread().await;
        let (s, _) = app
            .post(
                &format!("/threads/{t}/runs/wait"),
                json!({"assistant_id": "echo", "input": {"messages": [{"type": "human", "content": "hi"}]}}),
            )
            .await;
        assert_eq!(s, 200);
        let (_, runs) = app.get(&format!("/threads/{t}/runs")).await;
        let rid = runs[0]["run_id"].as_str().unwrap().to_string();
        let (s, events) = app.get(&format!("/threads/{t}/runs/{rid}/events")).await;
        assert_eq!(s, 200, "[{backend}] {events}");
        let types: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["event_type"].as_str())
            .collect();
        assert!(types.contains(&"llm.ai.response"), "[{backend}] {types:?}");
        let file = dir.join("threads").join(&t).join("@default/events.jsonl");
        assert_eq!(
            file.exists(),
            backend == "jsonl",
            "[{backend}] {}",
            file.display()
        );
        app.stop().await;
    }
}

#[test]
fn a_sqlite_data_dir_serves_one_server_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = antler::lock_data_dir(dir.path()).expect("first server");
    let err = format!("{:#}", antler::lock_data_dir(dir.path()).unwrap_err());
    assert!(err.contains("another antler server"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    drop(first);
    antler::lock_data_dir(dir.path()).expect("free again once the first one stopped");
}

/// Earlier versions kept a thread's workspace at `workspaces/<thread_id>`; thread ids are per
/// owner now: at startup each moves under its thread's owner, where the agent looks for it.
#[tokio::test]
async fn workspaces_of_an_earlier_version_move_under_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        port: 0,
        backend: Backend::Sqlite,
        sqlite_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let server = antler::start(cfg()).await.unwrap();
    let t: Value = reqwest::Client::new()
        .post(format!("{}/threads", server.url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tid = t["thread_id"].as_str().unwrap().to_owned();
    server.shutdown().await.unwrap();

    let ws = dir.path().join("workspaces");
    std::fs::create_dir_all(ws.join(&tid)).unwrap();
    std::fs::write(ws.join(&tid).join("notes.txt"), "kept").unwrap();
    std::fs::create_dir_all(ws.join("thread-that-is-gone")).unwrap();
    let server = antler::start(cfg()).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.join("@default").join(&tid).join("notes.txt")).unwrap(),
        "kept"
    );
    assert!(!ws.join(&tid).exists());
    assert!(
        ws.join("thread-that-is-gone").exists(),
        "a workspace whose thread is gone stays where it is"
    );
    server.shutdown().await.unwrap();
}
