//! Authentication and per-user isolation, over HTTP against the real server (port 0, SQLite):
//! the isolation matrix (every documented route, two users, in `api_key`, `local` and
//! `trusted_header` modes), login + cookie + CSRF, token revocation on password change,
//! lockout, API key life cycle, trusted-header secrets, and secret stripping from run kwargs.

use std::collections::BTreeSet;
use std::time::Duration;

use antler::config::{Backend, Config};
use antler_auth::AuthMode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

const PROXY_SECRET: &str = "proxy-shared-secret-0123456789";

struct App {
    server: Option<antler::Server>,
    url: String,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start(f: impl FnOnce(&mut Config)) -> Self {
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
            _dir: dir,
        }
    }

    fn anonymous(&self) -> Client {
        Client::new(&self.url, HeaderMap::new())
    }

    async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

/// A client that sends one identity's headers on every request.
#[derive(Clone)]
struct Client {
    base: String,
    http: reqwest::Client,
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::String(self.text.clone()))
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| {
                let first = c.split(';').next()?;
                let (k, v) = first.split_once('=')?;
                (k.trim() == name).then(|| v.trim().to_owned())
            })
    }
}

impl Client {
    fn new(base: &str, headers: HeaderMap) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    fn with_headers(base: &str, pairs: &[(&str, &str)]) -> Self {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Self::new(base, h)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Reply {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None, &[]).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(body), &[]).await
    }
}

/// `username=..&password=..` (percent-encoding the few characters the tests use).
fn form(user: &str, pw: &str) -> String {
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('@', "%40")
            .replace(' ', "+")
            .replace('&', "%26")
    };
    format!("username={}&password={}", enc(user), enc(pw))
}

fn human(text: &str) -> Value {
    json!({"messages": [{"role": "human", "content": text}]})
}

// ------------------------------------------------------------------ identities per mode

/// Registers a user in `local` mode and returns a bearer client for it.
async fn local_user(app: &App, email: &str) -> Client {
    let anon = app.anonymous();
    let r = anon
        .post(
            "/api/v1/auth/register",
            json!({"email": email, "password": "a fine long password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.cookie("access_token").expect("session cookie");
    Client::with_headers(&app.url, &[("authorization", &format!("Bearer {token}"))])
}

async fn api_key_user(app: &App, user: &str) -> Client {
    let auth = &app.server.as_ref().unwrap().auth;
    let (_, key) = auth.create_api_key(user, Some("test")).await.unwrap();
    Client::with_headers(&app.url, &[("x-api-key", &key)])
}

fn trusted_user(app: &App, user: &str) -> Client {
    Client::with_headers(
        &app.url,
        &[
            ("x-forwarded-user", user),
            ("x-antler-proxy-secret", PROXY_SECRET),
        ],
    )
}

async fn two_users(mode: AuthMode) -> (App, Client, Client) {
    let app = App::start(|c| {
        c.auth.mode = mode;
        if mode == AuthMode::TrustedHeader {
            c.auth.trusted_secret = Some(PROXY_SECRET.to_owned());
        }
    })
    .await;
    let (a, b) = match mode {
        AuthMode::ApiKey => (
            api_key_user(&app, "alice").await,
            api_key_user(&app, "bob").await,
        ),
        AuthMode::Local => (
            local_user(&app, "alice@example.com").await,
            local_user(&app, "bob@example.com").await,
        ),
        AuthMode::TrustedHeader => (trusted_user(&app, "alice"), trusted_user(&app, "bob")),
        AuthMode::None => unreachable!("no users in mode none"),
    };
    (app, a, b)
}

// ------------------------------------------------------------------ the isolation matrix

/// What user A owns.
struct Owned {
    thread: String,
    run: String,
    assistant: String,
    checkpoint: String,
}

const A_MARKER: &str = "alice-private-marker";

async fn seed(a: &Client) -> Owned {
    let r = a
        .post(
            "/assistants",
            json!({"graph_id": "echo", "name": "alice's"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let assistant = r.json()["assistant_id"].as_str().unwrap().to_owned();
    let r = a
        .post("/threads", json!({"metadata": {"note": A_MARKER}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let thread = r.json()["thread_id"].as_str().unwrap().to_owned();
    let r = a
        .post(
            &format!("/threads/{thread}/runs/wait"),
            json!({"assistant_id": assistant, "input": human(A_MARKER)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = a.get(&format!("/threads/{thread}/runs")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let run = r.json()[0]["run_id"].as_str().unwrap().to_owned();
    let r = a
        .post(
            &format!("/threads/{thread}/runs/{run}/feedback"),
            json!({"rating": 1, "comment": A_MARKER}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = a.get(&format!("/threads/{thread}/state")).await;
    let checkpoint = r.json()["checkpoint"]["checkpoint_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = a
        .send(
            "PUT",
            "/store/items",
            Some(json!({"namespace": ["notes"], "key": "k1", "value": {"text": A_MARKER}})),
            &[],
        )
        .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text);
    Owned {
        thread,
        run,
        assistant,
        checkpoint,
    }
}

/// Everything of A's, as A sees it.
async fn snapshot(a: &Client, o: &Owned) -> Vec<(u16, Value)> {
    let t = &o.thread;
    let mut out = Vec::new();
    for r in [
        a.get(&format!("/threads/{t}")).await,
        a.get(&format!("/threads/{t}/state")).await,
        a.get(&format!("/threads/{t}/history")).await,
        a.get(&format!("/threads/{t}/runs")).await,
        a.get(&format!("/threads/{t}/runs/{}", o.run)).await,
        a.get(&format!("/threads/{t}/runs/{}/feedback", o.run))
            .await,
        a.get(&format!("/threads/{t}/runs/{}/events", o.run)).await,
        a.get(&format!("/threads/{t}/runs/{}/messages", o.run))
            .await,
        a.get(&format!("/threads/{t}/messages")).await,
        a.get(&format!("/threads/{t}/token-usage")).await,
        a.get(&format!("/assistants/{}", o.assistant)).await,
        a.post(&format!("/assistants/{}/versions", o.assistant), json!({}))
            .await,
        a.get("/store/items?namespace=notes&key=k1").await,
        a.post(
            "/store/items/search",
            json!({"namespace_prefix": ["notes"]}),
        )
        .await,
        a.post("/threads/search", json!({})).await,
        a.post("/threads/count", json!({})).await,
    ] {
        out.push((r.status, r.json()));
    }
    assert!(out.iter().all(|(s, _)| *s == 200), "A lost access: {out:?}");
    out
}

/// Routes that refuse every non-admin caller alike with 403 (see `routes::frontend`).
fn refused_to_everyone(path: &str) -> bool {
    path.starts_with("/agents") || path == "/user-profile" || path == "/mcp/config"
}

/// The request B sends for one documented route, and whether it must be a 404.
fn b_request(method: &str, path: &str, o: &Owned) -> (String, Option<Value>, bool) {
    let p = path
        .replace("{thread_id}", &o.thread)
        .replace("{run_id}", &o.run)
        .replace("{assistant_id}", &o.assistant)
        .replace("{checkpoint_id}", &o.checkpoint)
        .replace("{namespace}", "child");
    let run_body = json!({"assistant_id": "echo", "input": human("from bob")});
    let targets_a = path.contains("{thread_id}") || path.contains("{assistant_id}");
    let body = match (method, path) {
        ("DELETE", "/store/items") => Some(json!({"namespace": ["notes"], "key": "k1"})),
        ("GET", _) => None,
        ("PUT", "/store/items") => {
            Some(json!({"namespace": ["notes"], "key": "k1", "value": {"text": "bob"}}))
        }
        ("POST", "/assistants") => Some(json!({"graph_id": "echo"})),
        ("PATCH", "/assistants/{assistant_id}") => Some(json!({"name": "stolen"})),
        ("POST", "/assistants/{assistant_id}/latest") => Some(json!({"version": 1})),
        ("POST", "/threads") => Some(json!({})),
        ("POST", "/threads/prune") => Some(json!({"thread_ids": [o.thread]})),
        ("PATCH", "/threads/{thread_id}") => Some(json!({"metadata": {"owner": "bob"}})),
        ("POST", "/threads/{thread_id}/state") => {
            Some(json!({"values": {"title": "bob was here"}}))
        }
        ("POST", "/threads/{thread_id}/state/checkpoint") => {
            Some(json!({"checkpoint": {"checkpoint_id": o.checkpoint}}))
        }
        ("POST", "/threads/{thread_id}/runs/{run_id}/cancel") => Some(json!({})),
        ("POST" | "PUT", "/threads/{thread_id}/runs/{run_id}/feedback") => {
            Some(json!({"rating": -1, "comment": "bob"}))
        }
        ("POST", "/runs/batch") => Some(json!([run_body])),
        ("POST", "/threads/{thread_id}/suggestions") => Some(json!({"messages": []})),
        ("POST", "/runs/cancel") => Some(json!({"thread_id": o.thread, "run_ids": [o.run]})),
        ("POST", p) if p.contains("/runs") => Some(run_body),
        _ => Some(json!({})),
    };
    let must_404 = targets_a || (method, path) == ("POST", "/runs/cancel");
    let p = if (method, path) == ("GET", "/store/items") {
        format!("{p}?namespace=notes&key=k1")
    } else {
        p
    };
    (p, body, must_404)
}

async fn isolation_matrix(mode: AuthMode) {
    let (app, a, b) = two_users(mode).await;
    let o = seed(&a).await;
    let before = snapshot(&a, &o).await;
    let secrets = [
        o.thread.as_str(),
        o.run.as_str(),
        o.assistant.as_str(),
        A_MARKER,
    ];

    let routes: Vec<_> = antler_gateway::routes::all_docs()
        .into_iter()
        .filter(|d| !matches!(d.tag, "System" | "Auth" | "Admin"))
        .collect();
    assert!(
        routes.len() >= 40,
        "route table unexpectedly small: {}",
        routes.len()
    );
    let mut seen = BTreeSet::new();
    for d in &routes {
        for prefix in ["", "/api"] {
            let (path, body, must_404) = b_request(d.method, d.path, &o);
            let path = format!("{prefix}{path}");
            let r = b.send(d.method, &path, body, &[]).await;
            let what = format!(
                "[{mode:?}] B {} {path} -> {} {}",
                d.method, r.status, r.text
            );
            if must_404 && d.path == "/threads/{thread_id}/runs/{run_id}/stream" {
                // The reference answers an unknown run's stream join with 200 and an error
                // event: B gets exactly what a run that does not exist gets.
                assert!(
                    r.status == 404 || (r.status == 200 && r.text.contains("404: Run not found")),
                    "{what}"
                );
            } else if must_404 {
                assert_eq!(r.status, 404, "{what}");
            } else if refused_to_everyone(d.path) {
                // DeerFlow's 403s that are about the server, not B: the custom-agent API is
                // off, and MCP settings are admin-only (an admin B may read them)
                let admin_ok = d.path == "/mcp/config" && d.method == "GET" && r.status == 200;
                assert!(r.status == 403 || admin_ok, "{what}");
            } else {
                assert!(
                    r.status < 500 && r.status != 401 && r.status != 403,
                    "{what}"
                );
            }
            for s in secrets {
                // A 404 may echo the id B itself sent; nothing else of A's may appear.
                if r.status == 404 && s != A_MARKER {
                    continue;
                }
                assert!(!r.text.contains(s), "leak of {s}: {what}");
            }
            seen.insert((d.method, d.path));
        }
    }
    assert_eq!(seen.len(), routes.len());

    // A's run id under B's own thread is just as unknown.
    let tb = b.post("/threads", json!({})).await.json()["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = &o.run;
    for (method, path, body) in [
        ("GET", format!("/threads/{tb}/runs/{r}"), None),
        ("DELETE", format!("/threads/{tb}/runs/{r}"), None),
        (
            "POST",
            format!("/threads/{tb}/runs/{r}/cancel"),
            Some(json!({})),
        ),
        ("GET", format!("/threads/{tb}/runs/{r}/join"), None),
        (
            "POST",
            "/runs/cancel".to_owned(),
            Some(json!({"thread_id": tb, "run_ids": [r]})),
        ),
    ] {
        let resp = b.send(method, &path, body, &[]).await;
        assert_eq!(
            resp.status, 404,
            "[{mode:?}] B {method} {path}: {}",
            resp.text
        );
    }

    // B's lists are B's alone.
    let r = b.post("/threads/search", json!({})).await;
    let bobs: Vec<Value> = serde_json::from_value(r.json()).unwrap();
    assert!(bobs.iter().all(|t| t["thread_id"] != o.thread.as_str()));
    let r = b.post("/threads/count", json!({})).await;
    assert_eq!(r.json(), json!(bobs.len()), "count matches B's own threads");
    let ra = a.post("/assistants/count", json!({})).await.json();
    let rb = b.post("/assistants/count", json!({})).await.json();
    // A made one assistant, B two (the matrix runs each route at / and /api); the system
    // ones are shared.
    assert_eq!(ra.as_u64().unwrap() + 1, rb.as_u64().unwrap());
    // Same namespace and key, two owners: two items.
    let r = b
        .send(
            "PUT",
            "/store/items",
            Some(json!({"namespace": ["notes"], "key": "k1", "value": {"text": "bob"}})),
            &[],
        )
        .await;
    assert!(r.status < 300, "{}", r.text);
    let r = b.get("/store/items?namespace=notes&key=k1").await;
    assert_eq!(
        r.json()["value"],
        json!({"text": "bob"}),
        "B's own item: {}",
        r.text
    );

    let after = snapshot(&a, &o).await;
    // Ignore B's own activity that A cannot see anyway; A's records must be identical.
    assert_eq!(before, after, "[{mode:?}] A's data changed");

    same_ids_are_other_resources(mode, &app, &a, &b, &o).await;
    app.stop().await;
}

/// Thread and assistant ids are chosen by clients and are per owner: B using the id of A's
/// thread gets a thread of B's own (nothing of A's in it, nothing of B's in A's), so an id
/// collision never confirms that A's thread exists. Covers create (plain and `if_exists`), runs
/// with `if_not_exists: create`, state, history, runs, events, the thread's live stream, copy
/// and delete; then the same for an assistant (create, update, versions, delete).
async fn same_ids_are_other_resources(
    mode: AuthMode,
    app: &App,
    a: &Client,
    b: &Client,
    o: &Owned,
) {
    let t = &o.thread;
    let what = |s: &str| format!("[{mode:?}] B on A's thread id: {s}");
    let r = b.post("/threads", json!({"thread_id": t})).await;
    assert_eq!(r.status, 200, "{}", what(&r.text));
    assert_eq!(r.json()["thread_id"], json!(t));
    assert_eq!(r.json()["metadata"], json!({}), "{}", what(&r.text));
    let r = b
        .post(
            "/threads",
            json!({"thread_id": t, "if_exists": "do_nothing"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", what(&r.text));
    assert!(!r.text.contains(A_MARKER), "{}", what(&r.text));
    let r = b.post("/threads", json!({"thread_id": t})).await;
    assert_eq!(
        r.status,
        409,
        "B's own thread exists now: {}",
        what(&r.text)
    );

    // B's live stream of B's thread `t` sees B's run, never A's (A runs on A's `t` first).
    let stream = b
        .http
        .get(format!("{}/threads/{t}/stream?stream_mode=values", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let r = a
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({"assistant_id": o.assistant, "input": human(A_MARKER)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = b
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({"assistant_id": "echo", "input": human("bob's turn")}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", what(&r.text));
    let values = r.json();
    assert_eq!(
        values["messages"].as_array().map(Vec::len),
        Some(2),
        "{values}"
    );
    assert!(!r.text.contains(A_MARKER), "{}", what(&r.text));
    let mut body = stream.bytes_stream();
    let mut seen = String::new();
    use futures::StreamExt;
    while !seen.contains("echo: bob's turn") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("B's thread stream carries B's run")
            .expect("stream open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains(A_MARKER), "{}", what(&seen));
    drop(body);

    for path in [
        format!("/threads/{t}"),
        format!("/threads/{t}/state"),
        format!("/threads/{t}/history"),
        format!("/threads/{t}/runs"),
        format!("/threads/{t}/messages"),
        format!("/threads/{t}/token-usage"),
    ] {
        let r = b.get(&path).await;
        assert_eq!(r.status, 200, "{}", what(&format!("{path}: {}", r.text)));
        for s in [A_MARKER, o.run.as_str(), o.checkpoint.as_str()] {
            assert!(
                !r.text.contains(s),
                "{}",
                what(&format!("{path}: {}", r.text))
            );
        }
    }
    let runs = b.get(&format!("/threads/{t}/runs")).await.json();
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    let history = b.get(&format!("/threads/{t}/history")).await.json();
    assert!(
        history.as_array().is_some_and(|h| !h.is_empty()),
        "{history}"
    );
    // A's checkpoint id is unknown on B's thread of the same id
    let r = b.get(&format!("/threads/{t}/state/{}", o.checkpoint)).await;
    assert_eq!(r.status, 404, "{}", what(&r.text));

    // `if_not_exists: create` on an id A uses creates B's thread instead of a 404
    let r = a.post("/threads", json!({})).await;
    let t2 = r.json()["thread_id"].as_str().unwrap().to_owned();
    let r = b
        .post(
            &format!("/threads/{t2}/runs/wait"),
            json!({"assistant_id": "echo", "input": human("new"), "if_not_exists": "create"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", what(&r.text));
    let r = a.get(&format!("/threads/{t2}/runs")).await;
    assert_eq!(r.json(), json!([]), "A's second thread has no run of B's");

    // B copies and deletes B's `t`: A's `t` is untouched
    let r = b.post(&format!("/threads/{t}/copy"), json!({})).await;
    assert_eq!(r.status, 200, "{}", what(&r.text));
    let r = b.send("DELETE", &format!("/threads/{t}"), None, &[]).await;
    assert!(r.status < 300, "{}", what(&r.text));
    assert_eq!(b.get(&format!("/threads/{t}")).await.status, 404);
    let r = a.get(&format!("/threads/{t}")).await;
    assert_eq!(
        r.status, 200,
        "[{mode:?}] A's thread survives B's delete: {}",
        r.text
    );
    assert_eq!(r.json()["metadata"]["note"], json!(A_MARKER));
    let runs = a.get(&format!("/threads/{t}/runs")).await.json();
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(2),
        "A's two runs: {runs}"
    );
    let state = a.get(&format!("/threads/{t}/state")).await;
    assert_eq!(state.status, 200);
    let texts: Vec<String> = state.json()["values"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            A_MARKER.to_owned(),
            format!("echo: {A_MARKER}"),
            A_MARKER.to_owned(),
            format!("echo: {A_MARKER}")
        ],
        "[{mode:?}] A's conversation has nothing of B's"
    );
    let r = a.get(&format!("/threads/{t}/runs/{}/events", o.run)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains("bob"), "{}", r.text);

    // assistants: B's assistant of A's assistant id is B's own
    let id = &o.assistant;
    let before = a.get(&format!("/assistants/{id}")).await.json();
    let r = b
        .post(
            "/assistants",
            json!({"assistant_id": id, "graph_id": "echo", "name": "bob's"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", what(&r.text));
    assert_eq!(r.json()["name"], json!("bob's"));
    let r = b
        .send(
            "PATCH",
            &format!("/assistants/{id}"),
            Some(json!({"name": "bob's v2"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", what(&r.text));
    let r = b
        .post(&format!("/assistants/{id}/versions"), json!({}))
        .await;
    assert_eq!(
        r.json().as_array().map(Vec::len),
        Some(2),
        "{}",
        what(&r.text)
    );
    assert!(!r.text.contains("alice's"), "{}", what(&r.text));
    let r = b
        .send("DELETE", &format!("/assistants/{id}"), None, &[])
        .await;
    assert!(r.status < 300, "{}", what(&r.text));
    assert_eq!(a.get(&format!("/assistants/{id}")).await.json(), before);
    let r = a
        .post(&format!("/assistants/{id}/versions"), json!({}))
        .await;
    assert_eq!(
        r.json().as_array().map(Vec::len),
        Some(1),
        "A's versions: {}",
        r.text
    );
    // the system assistants' ids are everyone's: taken
    let echo = antler_store::system_assistant_id("echo");
    let r = b
        .post(
            "/assistants",
            json!({"assistant_id": echo, "graph_id": "echo"}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", what(&r.text));
}

#[tokio::test]
async fn isolation_matrix_api_key() {
    isolation_matrix(AuthMode::ApiKey).await;
}

#[tokio::test]
async fn isolation_matrix_local() {
    isolation_matrix(AuthMode::Local).await;
}

#[tokio::test]
async fn isolation_matrix_trusted_header() {
    isolation_matrix(AuthMode::TrustedHeader).await;
}

// ------------------------------------------------------------------ none mode

#[tokio::test]
async fn none_mode_acts_as_default_without_credentials() {
    let app = App::start(|_| {}).await;
    let anon = app.anonymous();
    assert_eq!(anon.post("/threads", json!({})).await.status, 200);
    let me = anon.get("/api/v1/auth/me").await;
    assert_eq!(me.json()["id"], "default");
    let status = anon.get("/api/v1/auth/setup-status").await.json();
    assert_eq!(status["mode"], "none");
    assert_eq!(status["needs_setup"], false);
    // No accounts, so no account routes.
    assert_eq!(anon.get("/api/v1/auth/api-keys").await.status, 404);
    assert_eq!(
        anon.post("/api/v1/auth/login/local", json!({}))
            .await
            .status,
        404
    );
    app.stop().await;
}

// ------------------------------------------------------------------ api_key mode

#[tokio::test]
async fn api_key_mode_requires_a_valid_unrevoked_key() {
    let app = App::start(|c| c.auth.mode = AuthMode::ApiKey).await;
    let anon = app.anonymous();
    for path in [
        "/ok",
        "/info",
        "/openapi.json",
        "/docs",
        "/metrics",
        "/api/ok",
    ] {
        assert_eq!(anon.get(path).await.status, 200, "{path} is public");
    }
    let r = anon.post("/threads", json!({})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["detail"]["code"], "not_authenticated");
    let r = anon.post("/api/threads/search", json!({})).await;
    assert_eq!(r.status, 401);
    let bad = Client::with_headers(&app.url, &[("x-api-key", "ak_0123456789abcdef_nope")]);
    let r = bad.post("/threads", json!({})).await;
    assert_eq!(r.status, 401);
    assert!(!r.text.contains("nope"), "the key is not echoed");
    // CORS preflights stay public.
    let r = anon
        .send(
            "OPTIONS",
            "/threads",
            None,
            &[
                ("origin", "http://ui.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);

    let alice = api_key_user(&app, "alice").await;
    assert_eq!(alice.post("/threads", json!({})).await.status, 200);
    let me = alice.get("/api/v1/auth/me").await;
    assert_eq!(me.json()["id"], "alice");

    // Self-service keys: create, list (no secret), use, revoke.
    let r = alice
        .post("/api/v1/auth/api-keys", json!({"name": "laptop"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.json()["key"].as_str().unwrap().to_owned();
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let listed = alice.get("/api/v1/auth/api-keys").await;
    assert_eq!(listed.json().as_array().unwrap().len(), 2);
    assert!(!listed.text.contains(&key));
    let laptop = Client::with_headers(&app.url, &[("x-api-key", &key)]);
    assert_eq!(laptop.post("/threads/search", json!({})).await.status, 200);
    let bob = api_key_user(&app, "bob").await;
    let r = bob
        .send("DELETE", &format!("/api/v1/auth/api-keys/{id}"), None, &[])
        .await;
    assert_eq!(r.status, 404, "another user's key is not found");
    let r = alice
        .send("DELETE", &format!("/api/v1/auth/api-keys/{id}"), None, &[])
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(laptop.post("/threads/search", json!({})).await.status, 401);

    // Admin routes need the admin role; an admin reaches other users' keys only there.
    let r = alice.get("/api/v1/admin/users").await;
    assert_eq!(r.status, 403);
    let auth = &app.server.as_ref().unwrap().auth;
    let ops = auth.ensure_user("ops").await.unwrap();
    auth.set_role(&ops.id, antler_auth::Role::Admin)
        .await
        .unwrap();
    let admin = api_key_user(&app, "ops").await;
    let users = admin.get("/api/v1/admin/users").await;
    assert_eq!(users.status, 200, "{}", users.text);
    let names: BTreeSet<String> = users
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains("alice") && names.contains("bob"),
        "{names:?}"
    );
    let r = admin
        .post(
            "/api/v1/admin/api-keys",
            json!({"user": "bob", "name": "issued"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let issued = r.json()["key"].as_str().unwrap().to_owned();
    let issued_id = r.json()["id"].as_str().unwrap().to_owned();
    let bob2 = Client::with_headers(&app.url, &[("x-api-key", &issued)]);
    assert_eq!(bob2.get("/api/v1/auth/me").await.json()["id"], "bob");
    let bobs = admin.get("/api/v1/admin/api-keys?user_id=bob").await;
    assert_eq!(bobs.json().as_array().unwrap().len(), 2);
    let r = admin
        .send(
            "DELETE",
            &format!("/api/v1/admin/api-keys/{issued_id}"),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(bob2.get("/api/v1/auth/me").await.status, 401);
    // On ordinary routes the admin is just its own owner.
    assert_eq!(
        admin.post("/threads/search", json!({})).await.json(),
        json!([])
    );
    app.stop().await;
}

// ------------------------------------------------------------------ trusted_header mode

#[tokio::test]
async fn trusted_header_needs_the_shared_secret() {
    let app = App::start(|c| {
        c.auth.mode = AuthMode::TrustedHeader;
        c.auth.trusted_secret = Some(PROXY_SECRET.to_owned());
    })
    .await;
    let no_secret = Client::with_headers(&app.url, &[("x-forwarded-user", "alice")]);
    assert_eq!(no_secret.post("/threads", json!({})).await.status, 401);
    let wrong = Client::with_headers(
        &app.url,
        &[
            ("x-forwarded-user", "alice"),
            ("x-antler-proxy-secret", "guess"),
        ],
    );
    let r = wrong.post("/threads", json!({})).await;
    assert_eq!(r.status, 401);
    assert!(!r.text.contains(PROXY_SECRET));
    let no_user = Client::with_headers(&app.url, &[("x-antler-proxy-secret", PROXY_SECRET)]);
    assert_eq!(no_user.post("/threads", json!({})).await.status, 401);
    let alice = trusted_user(&app, "alice");
    assert_eq!(alice.post("/threads", json!({})).await.status, 200);
    assert_eq!(alice.get("/api/v1/auth/me").await.json()["id"], "alice");
    app.stop().await;
}

// ------------------------------------------------------------------ local mode

#[tokio::test]
async fn local_login_cookie_csrf_and_password_change() {
    let app = App::start(|c| c.auth.mode = AuthMode::Local).await;
    let anon = app.anonymous();
    let r = anon.get("/api/v1/auth/setup-status").await;
    assert_eq!(r.json()["needs_setup"], true);
    let r = anon
        .post(
            "/api/v1/auth/initialize",
            json!({"email": "root@example.com", "password": "root password 123"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["system_role"], "admin");
    let r = anon
        .post(
            "/api/v1/auth/initialize",
            json!({"email": "x@example.com", "password": "root password 123"}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["detail"]["code"], "system_already_initialized");
    assert_eq!(
        anon.get("/api/v1/auth/setup-status").await.json()["needs_setup"],
        false
    );

    let r = anon
        .post(
            "/api/v1/auth/register",
            json!({"email": "carol@example.com", "password": "short"}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = anon
        .post(
            "/api/v1/auth/register",
            json!({"email": "carol@example.com", "password": "carols password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = anon
        .post(
            "/api/v1/auth/register",
            json!({"email": "Carol@example.com", "password": "carols password"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["detail"]["code"], "email_already_exists");

    // Login with form fields.
    let http = reqwest::Client::new();
    let login = |user: &'static str, pw: &'static str| {
        http.post(format!("{}/api/v1/auth/login/local", app.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(user, pw))
            .send()
    };
    let r = login("carol@example.com", "carols password").await.unwrap();
    assert_eq!(r.status(), 200);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["expires_in"], 7 * 86_400);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("access_token="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("csrf_token="))
        .unwrap();
    assert!(!csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"));
    let value = |c: &str| {
        c.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned()
    };
    let token = value(session);
    let csrf = value(csrf_cookie);
    let cookie_header = format!("access_token={token}; csrf_token={csrf}");

    let browser = Client::with_headers(&app.url, &[("cookie", &cookie_header)]);
    // Reads with the cookie need no CSRF header.
    let r = browser.get("/api/v1/auth/me").await;
    assert_eq!(r.json()["email"], "carol@example.com");
    assert_eq!(
        browser.post("/api/threads/search", json!({})).await.status,
        403
    );
    let r = browser.post("/api/threads", json!({})).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["detail"],
        "CSRF token missing. Include X-CSRF-Token header."
    );
    let r = browser
        .send(
            "POST",
            "/api/threads",
            Some(json!({})),
            &[("x-csrf-token", "forged")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["detail"], "CSRF token mismatch.");
    let r = browser
        .send(
            "POST",
            "/api/threads",
            Some(json!({})),
            &[("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Bearer tokens need no CSRF header (not sent automatically by browsers).
    let bearer = Client::with_headers(&app.url, &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!(bearer.post("/api/threads", json!({})).await.status, 200);

    // Cross-site login attempts are refused.
    let r = anon
        .send(
            "POST",
            "/api/v1/auth/login/local",
            None,
            &[
                ("origin", "http://evil.example"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);

    // Changing the password revokes older tokens and hands out a new one.
    let r = browser
        .send(
            "POST",
            "/api/v1/auth/change-password",
            Some(json!({"current_password": "wrong one!", "new_password": "carols new password"})),
            &[("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 401);
    let r = browser
        .send(
            "POST",
            "/api/v1/auth/change-password",
            Some(json!({"current_password": "carols password", "new_password": "carols new password"})),
            &[("x-csrf-token", &csrf)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = r.cookie("access_token").unwrap();
    let r = bearer.get("/api/v1/auth/me").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["detail"]["code"], "token_invalid");
    assert_eq!(
        r.json()["detail"]["message"],
        "Token revoked (password changed)"
    );
    assert_eq!(browser.get("/api/threads/x").await.status, 401);
    let renewed = Client::with_headers(&app.url, &[("authorization", &format!("Bearer {fresh}"))]);
    assert_eq!(renewed.get("/api/v1/auth/me").await.status, 200);
    assert_eq!(
        login("carol@example.com", "carols password")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        login("carol@example.com", "carols new password")
            .await
            .unwrap()
            .status(),
        200
    );

    // Logout clears both cookies.
    let r = browser.post("/api/v1/auth/logout", json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.cookie("access_token").as_deref(), Some(""));

    // The admin sees users through the admin routes only.
    let r = login("root@example.com", "root password 123")
        .await
        .unwrap();
    let admin_token = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .unwrap()
                .strip_prefix("access_token=")
                .map(|s| s.split(';').next().unwrap().to_owned())
        })
        .unwrap();
    let admin = Client::with_headers(
        &app.url,
        &[("authorization", &format!("Bearer {admin_token}"))],
    );
    let users = admin.get("/api/v1/admin/users").await;
    assert_eq!(users.json().as_array().unwrap().len(), 2);
    assert!(!users.text.contains("argon2"), "no hashes leave the server");
    assert_eq!(
        admin.post("/api/threads/search", json!({})).await.json(),
        json!([])
    );
    assert_eq!(renewed.get("/api/v1/admin/users").await.status, 403);
    app.stop().await;
}

#[tokio::test]
async fn session_secret_is_generated_once_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |d: &std::path::Path| {
        let mut c = Config {
            port: 0,
            backend: Backend::Sqlite,
            sqlite_dir: d.to_path_buf(),
            ..Config::default()
        };
        c.auth.mode = AuthMode::Local;
        c
    };
    let server = antler::start(cfg(dir.path())).await.unwrap();
    let anon = Client::new(&server.url(), HeaderMap::new());
    let r = anon
        .post(
            "/api/v1/auth/register",
            json!({"email": "fay@example.com", "password": "fays long password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.cookie("access_token").unwrap();
    server.shutdown().await.unwrap();
    let secret_file = dir.path().join(antler::JWT_SECRET_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let server = antler::start(cfg(dir.path())).await.unwrap();
    let fay = Client::with_headers(
        &server.url(),
        &[("authorization", &format!("Bearer {token}"))],
    );
    let me = fay.get("/api/v1/auth/me").await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json()["email"], "fay@example.com");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn registration_can_be_disabled() {
    let app = App::start(|c| {
        c.auth.mode = AuthMode::Local;
        c.auth.allow_registration = false;
    })
    .await;
    let anon = app.anonymous();
    assert_eq!(
        anon.get("/api/v1/auth/setup-status").await.json()["registration_enabled"],
        false
    );
    let r = anon
        .post(
            "/api/v1/auth/register",
            json!({"email": "d@example.com", "password": "dans long password"}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["detail"]["code"], "registration_disabled");
    app.stop().await;
}

#[tokio::test]
async fn lockout_after_five_failed_logins() {
    let app = App::start(|c| c.auth.mode = AuthMode::Local).await;
    let anon = app.anonymous();
    let r = anon
        .post(
            "/api/v1/auth/register",
            json!({"email": "eve@example.com", "password": "eves long password"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let http = reqwest::Client::new();
    let attempt = |pw: &'static str| {
        http.post(format!("{}/api/v1/auth/login/local", app.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form("eve@example.com", pw))
            .send()
    };
    for _ in 0..5 {
        let r = attempt("not the password").await.unwrap();
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["detail"]["code"], "invalid_credentials");
    }
    let r = attempt("eves long password").await.unwrap();
    assert_eq!(r.status(), 429, "locked out even with the right password");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 290 && retry <= 300, "{retry}");
    app.stop().await;
}

// ------------------------------------------------------------------ secrets

#[tokio::test]
async fn secrets_never_reach_run_kwargs() {
    let app = App::start(|c| c.auth.mode = AuthMode::ApiKey).await;
    let alice = api_key_user(&app, "alice").await;
    let t = alice.post("/threads", json!({})).await.json()["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = alice
        .post(
            &format!("/threads/{t}/runs/wait"),
            json!({
                "assistant_id": "echo",
                "input": human("hi"),
                "config": {"configurable": {"api_key": "sk-very-secret", "openai_api_key": "sk-2", "model": "m1"}},
                "metadata": {"access_token": "tok-secret", "purpose": "test"},
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let runs = alice.get(&format!("/threads/{t}/runs")).await;
    assert!(!runs.text.contains("sk-very-secret"), "{}", runs.text);
    assert!(!runs.text.contains("sk-2"));
    assert!(!runs.text.contains("tok-secret"));
    let run = &runs.json()[0];
    assert_eq!(run["kwargs"]["config"]["configurable"]["model"], "m1");
    assert_eq!(run["metadata"]["purpose"], "test");
    // Stored configs and metadata are cleaned the same way.
    let r = alice
        .post(
            "/assistants",
            json!({"graph_id": "echo", "config": {"configurable": {"api_key": "sk-asst", "model": "m2"}},
                   "metadata": {"password": "pw-asst", "team": "x"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains("sk-asst") && !r.text.contains("pw-asst"),
        "{}",
        r.text
    );
    assert_eq!(r.json()["config"]["configurable"]["model"], "m2");
    let r = alice
        .post(
            "/threads",
            json!({"metadata": {"github_token": "ghp-secret", "project": "p"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["metadata"], json!({"project": "p"}));
    app.stop().await;
}
