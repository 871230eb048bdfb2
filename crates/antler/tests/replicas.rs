//! Several replicas: three real `antler serve` processes on loopback share one PostgreSQL
//! database and one Redis (stream bridge, a key prefix per test). A run created on one
//! replica is streamed from another and cancelled from the third; the replica executing a
//! `slow` run is killed with SIGKILL and another one finishes it; many concurrent runs spread
//! over the replicas are each executed exactly once and every stream completes.
//!
//! URLs: `ANTLER_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`) and
//! `ANTLER_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When either is unreachable
//! (or the binary lacks the postgres backend) the tests print a notice and skip, except
//! with `CI=true`, where they fail.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::{PrivateDb, Proc, contents, get, http, post, wait_until};

/// SSE events of a finished stream body: (event, data). A blank line ends an event.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut event: Option<String> = None;
    let mut data = String::new();
    for line in body.lines().chain(std::iter::once("")) {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            if let Some(e) = event.take() {
                out.push((e, serde_json::from_str(&data).unwrap_or(Value::Null)));
            }
            data.clear();
        } else if let Some(e) = line.strip_prefix("event:") {
            event = Some(e.trim().to_string());
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push_str(d.trim_start());
        }
    }
    out
}

fn reachable(url: &str, default_port: u16) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{default_port}")
    };
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// The shared config of a cluster (a private database, dropped with the guard, and a unique
/// Redis key prefix), or `None` to skip.
fn cluster_config() -> Option<(String, PrivateDb)> {
    let pg = std::env::var("ANTLER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis = std::env::var("ANTLER_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let problem = if !antler::config::backend_compiled("postgres") {
        Some("this antler build has no postgres backend".to_string())
    } else if !reachable(&pg, 5432) {
        Some(format!("PostgreSQL unreachable at {pg}"))
    } else if !reachable(&redis, 6379) {
        Some(format!("Redis unreachable at {redis}"))
    } else {
        None
    };
    if let Some(p) = problem {
        assert!(!ci, "{p} and CI=true: the replica tests must run in CI");
        eprintln!("NOTICE: {p}; skipping the multi-replica test");
        return None;
    }
    // unique per test: the process id plus a per-call nanosecond stamp
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let prefix = format!("antler-test:{}-{stamp}:", std::process::id());
    let db = PrivateDb::create(&pg);
    let pg = db.url.clone();
    Some((
        format!(
            "database:\n  backend: postgres\n  postgres_url: \"{pg}\"\n\
         stream_bridge:\n  type: redis\n  redis_url: \"{redis}\"\n  key_prefix: \"{prefix}\"\n\
         runs:\n  lease_ttl_seconds: 2\n"
        ),
        db,
    ))
}

fn cluster(dir: &Path, config: &str) -> Vec<Proc> {
    ["a", "b", "c"]
        .iter()
        .map(|n| Proc::start(dir, n, config))
        .collect()
}

fn new_thread(url: &str) -> String {
    post(&format!("{url}/threads"), json!({}))["thread_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn slow_run(url: &str, tid: &str, delay: f64) -> String {
    let r = post(
        &format!("{url}/threads/{tid}/runs"),
        json!({"assistant_id": "slow", "input": {"messages": [{"type": "human", "content": "go"}]},
               "stream_mode": ["values", "custom"],
               "config": {"configurable": {"delay": delay}}}),
    );
    r["run_id"].as_str().unwrap().to_string()
}

#[test]
fn create_on_a_stream_from_b_cancel_from_c() {
    let Some((config, _db)) = cluster_config() else {
        return;
    };
    // Polls are 30 s apart: the cancel below reaches A through the Redis wake-up.
    let config = format!("{config}  poll_interval_ms: 30000\n");
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(tmp.path(), &config);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let tid = new_thread(&a.url);
    let rid = slow_run(&a.url, &tid, 1.0);

    // B streams the run that A executes
    let stream_url = format!("{}/threads/{tid}/runs/{rid}/stream", b.url);
    let reader = std::thread::spawn(move || http().get(stream_url).send().unwrap().text().unwrap());
    wait_until(30, "step 1 started", || {
        get(&format!("{}/threads/{tid}/runs/{rid}", c.url))["status"] == "running"
    });

    // multitask `reject` on B sees A's run
    let r = http()
        .post(format!("{}/threads/{tid}/runs", b.url))
        .json(
            &json!({"assistant_id": "slow", "multitask_strategy": "reject",
                      "input": {"messages": [{"type": "human", "content": "no"}]}}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "{:?}", r.text());

    // C cancels it and waits until it has stopped
    let started = Instant::now();
    let r = http()
        .post(format!(
            "{}/threads/{tid}/runs/{rid}/cancel?wait=true&action=interrupt",
            c.url
        ))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "cancel: {}", r.status());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the cancel reached the owner through the wake-up, not its 30 s poll: {:?}",
        started.elapsed()
    );
    let run = get(&format!("{}/threads/{tid}/runs/{rid}", b.url));
    assert_eq!(run["status"], "interrupted", "{run}");

    let body = reader.join().unwrap();
    let events = sse_events(&body);
    assert_eq!(
        events.first().map(|e| e.0.as_str()),
        Some("metadata"),
        "{body}"
    );
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "custom" && d["step"] == 1 && d["phase"] == "start"),
        "B saw A's events: {body}"
    );
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("end"), "{body}");
    assert!(
        !events
            .iter()
            .any(|(e, d)| e == "custom" && d["step"] == 3 && d["phase"] == "end"),
        "the run stopped before its end: {body}"
    );
    // joins from any replica agree
    for n in &nodes {
        let out = get(&format!("{}/threads/{tid}/runs/{rid}/join", n.url));
        assert!(!contents(&out).contains(&"step 3".to_string()), "{out}");
    }
    // /info reports this replica and its backends
    let info = get(&format!("{}/info", a.url));
    assert!(info["replica"]["replica_id"].is_string(), "{info}");
    assert!(info["replica"]["queue_depth"].is_u64(), "{info}");
}

#[test]
fn killed_replica_run_is_finished_by_another() {
    let Some((config, _db)) = cluster_config() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(tmp.path(), &config);
    let tid = new_thread(&nodes[1].url);
    let rid = slow_run(&nodes[0].url, &tid, 0.6);
    wait_until(30, "step 1 committed", || {
        let st = get(&format!("{}/threads/{tid}/state", nodes[1].url));
        contents(&st["values"]).contains(&"step 1".to_string())
    });
    nodes.remove(0).kill9();

    // B streams it while C (or B) adopts and finishes it after the 2 s lease expired
    let body = http()
        .get(format!("{}/threads/{tid}/runs/{rid}/stream", nodes[0].url))
        .header("Last-Event-ID", "-1")
        .send()
        .unwrap()
        .text()
        .unwrap();
    let events = sse_events(&body);
    assert_eq!(events.last().map(|e| e.0.as_str()), Some("end"), "{body}");
    let out = get(&format!("{}/threads/{tid}/runs/{rid}/join", nodes[1].url));
    assert_eq!(
        contents(&out),
        ["go", "step 1", "step 2", "step 3"],
        "every step exactly once: {out}"
    );
    let run = get(&format!("{}/threads/{tid}/runs/{rid}", nodes[0].url));
    assert_eq!(run["status"], "success", "{run}");
}

#[test]
fn concurrent_runs_over_three_replicas_run_exactly_once() {
    let Some((config, _db)) = cluster_config() else {
        return;
    };
    // Two runs at a time per replica: the rest wait in the durable queue and are claimed by
    // whichever replica has room, so runs are executed by replicas that did not create them.
    let config = format!("{config}  max_concurrent_runs: 2\n  poll_interval_ms: 100\n");
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(tmp.path(), &config);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    const CLIENTS: usize = 20;
    const PER_CLIENT: usize = 15;
    let mut workers = Vec::new();
    for client in 0..CLIENTS {
        let urls = urls.clone();
        workers.push(std::thread::spawn(move || {
            let mut done = Vec::new();
            for i in 0..PER_CLIENT {
                // create on one replica, stream from the next, read the state from the third
                let (x, y, z) = (
                    &urls[(client + i) % 3],
                    &urls[(client + i + 1) % 3],
                    &urls[(client + i + 2) % 3],
                );
                let tid = new_thread(x);
                let text = format!("c{client}-{i}");
                let r = post(
                    &format!("{x}/threads/{tid}/runs"),
                    json!({"assistant_id": "echo", "stream_mode": ["values", "updates"],
                           "input": {"messages": [{"type": "human", "content": text}]}}),
                );
                let rid = r["run_id"].as_str().unwrap().to_string();
                let body = http()
                    .get(format!("{y}/threads/{tid}/runs/{rid}/stream"))
                    .send()
                    .unwrap()
                    .text()
                    .unwrap();
                let out = get(&format!("{z}/threads/{tid}/runs/{rid}/join"));
                done.push((tid, rid, text, body, out));
            }
            done
        }));
    }
    let mut total = 0;
    for w in workers {
        for (tid, rid, text, body, out) in w.join().unwrap() {
            total += 1;
            let events = sse_events(&body);
            assert_eq!(
                events.last().map(|e| e.0.as_str()),
                Some("end"),
                "{rid}: {body}"
            );
            let updates = events.iter().filter(|(e, _)| e == "updates").count();
            assert_eq!(updates, 1, "one step, streamed once ({rid}): {body}");
            let metadata = events.iter().filter(|(e, _)| e == "metadata").count();
            assert_eq!(metadata, 1, "started once ({rid}): {body}");
            assert_eq!(
                contents(&out),
                [text.clone(), format!("echo: {text}")],
                "executed exactly once ({tid})"
            );
        }
    }
    assert_eq!(total, CLIENTS * PER_CLIENT);
}

/// `auth.mode: local` on two replicas: the accounts and the session secret live in the shared
/// database, so a user registered on A logs in on B, and A's session token works on B.
#[test]
fn accounts_and_sessions_are_shared_by_replicas() {
    let Some((config, _db)) = cluster_config() else {
        return;
    };
    let config = format!("{config}auth:\n  mode: local\n");
    let tmp = tempfile::tempdir().unwrap();
    let a = Proc::start(tmp.path(), "a", &config);
    let b = Proc::start(tmp.path(), "b", &config);
    let r = http()
        .post(format!("{}/api/v1/auth/register", a.url))
        .json(&json!({"email": "eve@example.com", "password": "a fine long password"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let token = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("access_token="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    let bearer = format!("Bearer {token}");
    // A's session on B
    let me = http()
        .get(format!("{}/api/v1/auth/me", b.url))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(me.status().as_u16(), 200);
    let me: Value = me.json().unwrap();
    assert_eq!(me["email"], "eve@example.com", "{me}");
    // the account registered on A logs in on B
    let login = http()
        .post(format!("{}/api/v1/auth/login/local", b.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("username=eve%40example.com&password=a+fine+long+password")
        .send()
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    // what eve creates on A is hers on B, and nobody's without credentials
    let thread: Value = http()
        .post(format!("{}/threads", a.url))
        .header("authorization", &bearer)
        .json(&json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let tid = thread["thread_id"].as_str().unwrap();
    let seen = http()
        .get(format!("{}/threads/{tid}", b.url))
        .header("authorization", &bearer)
        .send()
        .unwrap();
    assert_eq!(seen.status().as_u16(), 200);
    let anon = http()
        .get(format!("{}/threads/{tid}", b.url))
        .send()
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
}

/// Upgrading a PostgreSQL deployment whose replicas kept accounts in their local `auth.db`
/// (earlier versions): the leftover accounts and keys are merged into the shared database at
/// startup, so existing API keys keep working on every replica.
#[test]
fn accounts_of_a_leftover_local_auth_db_are_imported() {
    let Some((config, _db)) = cluster_config() else {
        return;
    };
    let config = format!("{config}auth:\n  mode: api_key\n");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join(".antler");
    let key = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = antler_auth::SqliteAuthStore::open(&data).await.unwrap();
        let auth = antler_auth::Auth::new(
            antler_auth::AuthConfig {
                mode: antler_auth::AuthMode::ApiKey,
                ..Default::default()
            },
            std::sync::Arc::new(store),
        )
        .unwrap();
        let user = auth.ensure_user("old-timer").await.unwrap();
        auth.create_api_key(&user.id, Some("old")).await.unwrap().1
    });
    let a = Proc::start(tmp.path(), "a", &config);
    let other = tempfile::tempdir().unwrap();
    let b = Proc::start(other.path(), "b", &config);
    for node in [&a, &b] {
        let r = http()
            .post(format!("{}/threads", node.url))
            .header("x-api-key", &key)
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "the old key works on {}",
            node.url
        );
    }
    assert!(!data.join("auth.db").exists(), "imported once");
    assert!(data.join("auth.db.imported").exists());
}
