//! Crash recovery: the real `antler` binary is killed with SIGKILL while `slow` runs are
//! mid-flight, restarted on the same database, and the runs must finish (resumed from their
//! last checkpoint, every step exactly once), or fail clearly with `runs.recovery: fail`.
//!
//! SQLite always; PostgreSQL / MySQL when the binary was built with those backends and
//! `ANTLER_TEST_POSTGRES_URL` / `ANTLER_TEST_MYSQL_URL` are reachable (see `backends()`).

use std::path::Path;

use serde_json::json;

mod support;
use support::{PrivateDb, Proc, contents, get, http, post, wait_until};

/// The storage sections to test: SQLite always, the others when configured (each in a private
/// database, dropped with the returned guard).
fn backends(dir: &Path) -> Vec<(&'static str, String, Option<PrivateDb>)> {
    let mut out = vec![(
        "sqlite",
        format!(
            "database:\n  backend: sqlite\n  sqlite_dir: {}\n",
            dir.join("db").display()
        ),
        None,
    )];
    for (name, var) in [
        ("postgres", "ANTLER_TEST_POSTGRES_URL"),
        ("mysql", "ANTLER_TEST_MYSQL_URL"),
    ] {
        if !antler::config::backend_compiled(name) {
            continue;
        }
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => {
                let db = PrivateDb::create(&url);
                out.push((
                    name,
                    format!(
                        "database:\n  backend: {name}\n  {name}_url: \"{}\"\n",
                        db.url
                    ),
                    Some(db),
                ));
            }
            _ if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{var} must be set under CI to test the {name} backend")
            }
            _ => eprintln!("{var} not set: skipping the {name} crash tests"),
        }
    }
    out
}

/// Lease TTL of the test servers: a restarted server on a shared database adopts runs once
/// their lease has expired.
const RUNS: &str = "runs:\n  lease_ttl_seconds: 2\n";

#[test]
fn killed_server_resumes_runs_from_their_last_checkpoint() {
    killed_server_resumes(None);
}

#[test]
fn killed_server_resumes_sync_runs_from_their_last_checkpoint() {
    killed_server_resumes(Some("sync"));
}

#[test]
fn killed_server_resumes_async_runs_from_their_last_checkpoint() {
    killed_server_resumes(Some("async"));
}

/// Kills the server once step 1 of a run is committed: after a restart every run finishes
/// with each step exactly once (`durability`: the runs' mode; `None` = the default).
fn killed_server_resumes(durability: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db, _guard) in backends(tmp.path()) {
        let config = format!("{db}{RUNS}");
        let a = Proc::start(tmp.path(), "config", &config);
        // two threads with a slow run each, plus a second run queued behind the first
        let mut runs = Vec::new();
        for _ in 0..2 {
            let t = post(&format!("{}/threads", a.url), json!({}));
            let tid = t["thread_id"].as_str().unwrap().to_string();
            let mut body = json!({"assistant_id": "slow",
                "input": {"messages": [{"type": "human", "content": "go"}]},
                "config": {"configurable": {"delay": 0.6}}});
            if let Some(mode) = durability {
                body["durability"] = json!(mode);
            }
            let r = post(&format!("{}/threads/{tid}/runs", a.url), body);
            runs.push((tid, r["run_id"].as_str().unwrap().to_string()));
        }
        let (tid0, _) = runs[0].clone();
        let queued = post(
            &format!("{}/threads/{tid0}/runs", a.url),
            json!({"assistant_id": "echo", "input": {"messages": [{"type": "human", "content": "after"}]}}),
        );
        let queued_id = queued["run_id"].as_str().unwrap().to_string();
        // kill once step 1 of the first run is committed
        wait_until(30, "step 1 committed", || {
            let st = get(&format!("{}/threads/{tid0}/state", a.url));
            contents(&st["values"]).contains(&"step 1".to_string())
        });
        a.kill9();

        let b = Proc::start(tmp.path(), "config", &config);
        for (tid, rid) in &runs {
            let out = get(&format!("{}/threads/{tid}/runs/{rid}/join", b.url));
            assert_eq!(
                contents(&out),
                ["go", "step 1", "step 2", "step 3"],
                "[{backend}] every step exactly once: {out}"
            );
            let run = get(&format!("{}/threads/{tid}/runs/{rid}", b.url));
            assert_eq!(run["status"], "success", "[{backend}] {run}");
        }
        let out = get(&format!("{}/threads/{tid0}/runs/{queued_id}/join", b.url));
        assert_eq!(
            contents(&out),
            ["go", "step 1", "step 2", "step 3", "after", "echo: after"],
            "[{backend}] the queued run ran after the resumed one: {out}"
        );
        for (tid, _) in &runs {
            wait_until(10, "thread idle", || {
                get(&format!("{}/threads/{tid}", b.url))["status"] == "idle"
            });
        }
        // nothing left in flight
        let stats = get(&format!("{}/info", b.url));
        assert!(stats.is_object());
        drop(b);
    }
}

#[test]
fn recovery_fail_marks_abandoned_runs_error() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db, _guard) in backends(tmp.path()) {
        let config = format!("{db}runs:\n  lease_ttl_seconds: 2\n  recovery: fail\n");
        let a = Proc::start(tmp.path(), "config", &config);
        let t = post(&format!("{}/threads", a.url), json!({}));
        let tid = t["thread_id"].as_str().unwrap().to_string();
        let r = post(
            &format!("{}/threads/{tid}/runs", a.url),
            json!({"assistant_id": "slow", "input": {"messages": []},
                   "config": {"configurable": {"delay": 5}}}),
        );
        let rid = r["run_id"].as_str().unwrap().to_string();
        wait_until(30, "run running", || {
            get(&format!("{}/threads/{tid}/runs/{rid}", a.url))["status"] == "running"
        });
        a.kill9();

        let b = Proc::start(tmp.path(), "config", &config);
        wait_until(30, "run marked error", || {
            get(&format!("{}/threads/{tid}/runs/{rid}", b.url))["status"] == "error"
        });
        let thread = get(&format!("{}/threads/{tid}", b.url));
        assert_eq!(thread["status"], "error", "[{backend}] {thread}");
        assert_eq!(
            thread["error"]["error"], "ServerRestart",
            "[{backend}] {thread}"
        );
        // its stream is ended, not left hanging
        let body = http()
            .get(format!("{}/threads/{tid}/runs/{rid}/stream", b.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(body.contains("ServerRestart"), "[{backend}] {body}");
    }
}

/// `durability: exit` commits nothing until the run ends: while it runs its steps are not in
/// the thread's state; at its end the state and one checkpoint hold all of them; a crash in
/// between loses the run's steps (the restarted server runs it again from its request).
#[test]
fn exit_durability_commits_at_the_end_only() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db, _guard) in backends(tmp.path()) {
        let config = format!("{db}{RUNS}");
        let a = Proc::start(tmp.path(), "config", &config);
        let t = post(&format!("{}/threads", a.url), json!({}));
        let tid = t["thread_id"].as_str().unwrap().to_string();
        let before = get(&format!("{}/threads/{tid}/history", a.url));
        let r = post(
            &format!("{}/threads/{tid}/runs", a.url),
            json!({"assistant_id": "slow", "durability": "exit",
                   "input": {"messages": [{"type": "human", "content": "go"}]},
                   "config": {"configurable": {"delay": 0.5}}}),
        );
        let rid = r["run_id"].as_str().unwrap().to_string();
        wait_until(30, "run running", || {
            get(&format!("{}/threads/{tid}/runs/{rid}", a.url))["status"] == "running"
        });
        // 0.5 s into a 1.5 s run: step 1 has run, nothing is committed
        std::thread::sleep(std::time::Duration::from_millis(800));
        let st = get(&format!("{}/threads/{tid}/state", a.url));
        assert!(
            !contents(&st["values"]).contains(&"step 1".to_string()),
            "[{backend}] nothing committed mid-run: {st}"
        );
        let out = get(&format!("{}/threads/{tid}/runs/{rid}/join", a.url));
        assert_eq!(
            contents(&out),
            ["go", "step 1", "step 2", "step 3"],
            "[{backend}] {out}"
        );
        let st = get(&format!("{}/threads/{tid}/state", a.url));
        assert_eq!(
            contents(&st["values"]),
            ["go", "step 1", "step 2", "step 3"],
            "[{backend}]"
        );
        let history = get(&format!("{}/threads/{tid}/history", a.url));
        let grown = history.as_array().map_or(0, Vec::len) - before.as_array().map_or(0, Vec::len);
        assert_eq!(
            grown, 1,
            "[{backend}] one checkpoint for the whole run: {history}"
        );

        // a crash mid-run loses the run's steps: the restarted server runs it again
        let r = post(
            &format!("{}/threads/{tid}/runs", a.url),
            json!({"assistant_id": "slow", "durability": "exit",
                   "input": {"messages": [{"type": "human", "content": "again"}]},
                   "config": {"configurable": {"delay": 0.5}}}),
        );
        let rid = r["run_id"].as_str().unwrap().to_string();
        wait_until(30, "run running", || {
            get(&format!("{}/threads/{tid}/runs/{rid}", a.url))["status"] == "running"
        });
        std::thread::sleep(std::time::Duration::from_millis(800));
        a.kill9();
        let b = Proc::start(tmp.path(), "config", &config);
        let st = get(&format!("{}/threads/{tid}/state", b.url));
        assert_eq!(
            contents(&st["values"]),
            ["go", "step 1", "step 2", "step 3"],
            "[{backend}] the crashed run left nothing: {st}"
        );
        let out = get(&format!("{}/threads/{tid}/runs/{rid}/join", b.url));
        let all = contents(&out);
        assert_eq!(all.len(), 8, "[{backend}] {out}");
        assert_eq!(
            all[4..],
            ["again", "step 1", "step 2", "step 3"],
            "[{backend}] rerun from its request, each step once in the state: {out}"
        );
    }
}

/// Starts a `slow` run (three steps of `delay` s) on a new thread: `(thread_id, run_id)`.
fn start_slow(url: &str, delay: f64) -> (String, String) {
    let t = post(&format!("{url}/threads"), json!({}));
    let tid = t["thread_id"].as_str().unwrap().to_string();
    let r = post(
        &format!("{url}/threads/{tid}/runs"),
        json!({"assistant_id": "slow",
               "input": {"messages": [{"type": "human", "content": "go"}]},
               "config": {"configurable": {"delay": delay}}}),
    );
    (tid, r["run_id"].as_str().unwrap().to_string())
}

/// Runs `f` on a one-thread Tokio runtime (the test's own database connections).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A SQLite database locked from outside (another process holds its write lock for 16 s, far
/// past the server's 5 s `busy_timeout`) fails the run in flight clearly: its stream ends with an `error`
/// event naming the storage error (no hang), and once the lock is gone its row and thread
/// say `error`; the next run on the thread works.
#[test]
fn a_locked_database_fails_the_run_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let config = format!(
        "database:\n  backend: sqlite\n  sqlite_dir: {}\n",
        dir.display()
    );
    let a = Proc::start(tmp.path(), "config", &config);
    // steps of 2 s: the lock is taken while step 2 runs, so its commit meets the lock
    let (tid, rid) = start_slow(&a.url, 2.0);
    wait_until(30, "step 1 committed", || {
        let st = get(&format!("{}/threads/{tid}/state", a.url));
        contents(&st["values"]).contains(&"step 1".to_string())
    });
    let file = dir.join("antler.db");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let locker = std::thread::spawn(move || {
        block_on(async move {
            use sqlx::Connection;
            let url = format!("sqlite://{}", file.display());
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut c)
                .await
                .unwrap();
            locked_tx.send(()).unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(16)).await;
            sqlx::query("ROLLBACK").execute(&mut c).await.unwrap();
        })
    });
    locked_rx.recv().unwrap();
    let started = std::time::Instant::now();
    let body = http()
        .get(format!("{}/threads/{tid}/runs/{rid}/stream", a.url))
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        body.contains("event: error") && body.contains("StorageError"),
        "the stream ends with the storage error: {body}"
    );
    // each write waits at most `busy_timeout` (5 s) once, and one may queue behind another
    // writer's wait: the run fails while the lock is still held, not after it
    assert!(
        started.elapsed() < std::time::Duration::from_secs(16),
        "the run failed while the database was locked: {:?}",
        started.elapsed()
    );
    locker.join().unwrap();
    wait_until(30, "run and thread marked error", || {
        get(&format!("{}/threads/{tid}/runs/{rid}", a.url))["status"] == "error"
            && get(&format!("{}/threads/{tid}", a.url))["status"] == "error"
    });
    let thread = get(&format!("{}/threads/{tid}", a.url));
    assert_eq!(thread["error"]["error"], "StorageError", "{thread}");
    let out = post(
        &format!("{}/threads/{tid}/runs/wait", a.url),
        json!({"assistant_id": "echo", "input": {"messages": [{"type": "human", "content": "again"}]}}),
    );
    let messages = contents(&out);
    assert_eq!(
        messages.last().map(String::as_str),
        Some("echo: again"),
        "{out}"
    );
}

/// PostgreSQL connections dropped again and again while runs execute (every server backend
/// terminated every 200 ms): the server reconnects and retries its commits, every run
/// finishes with each step once, and no run event is stored twice.
#[test]
fn dropped_connections_lose_and_duplicate_nothing() {
    let url = match std::env::var("ANTLER_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() && antler::config::backend_compiled("postgres") => u,
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("ANTLER_TEST_POSTGRES_URL must be set under CI")
        }
        _ => return eprintln!("ANTLER_TEST_POSTGRES_URL not set: skipping"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let db = PrivateDb::create(&url);
    let config = format!(
        "database:\n  backend: postgres\n  postgres_url: \"{}\"\n{RUNS}",
        db.url
    );
    let a = Proc::start(tmp.path(), "config", &config);
    let runs: Vec<(String, String)> = (0..6).map(|_| start_slow(&a.url, 0.5)).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (stop, db_url) = (stop.clone(), db.url.clone());
        std::thread::spawn(move || {
            block_on(async move {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&db_url).await.unwrap();
                let mut killed = 0i64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // (a test that failed first drops the database: then this one ends too)
                    let Ok(n) = sqlx::query_scalar::<_, i64>(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    )
                    .fetch_one(&mut c)
                    .await
                    else {
                        break;
                    };
                    killed += n;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                killed
            })
        })
    };
    for (tid, rid) in &runs {
        let out = get(&format!("{}/threads/{tid}/runs/{rid}/join", a.url));
        assert_eq!(
            contents(&out),
            ["go", "step 1", "step 2", "step 3"],
            "every step once: {out}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let killed = killer.join().unwrap();
    assert!(killed > 0, "connections were dropped");
    for (tid, rid) in &runs {
        wait_until(30, "run success", || {
            get(&format!("{}/threads/{tid}/runs/{rid}", a.url))["status"] == "success"
        });
        let events = get(&format!("{}/threads/{tid}/runs/{rid}/events", a.url));
        let events = events.as_array().unwrap();
        let seqs: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
        let mut unique = seqs.clone();
        unique.dedup();
        assert_eq!(seqs, unique, "no event stored twice: {events:?}");
        let bodies: std::collections::HashSet<String> = events
            .iter()
            .map(|e| format!("{}{}", e["event_type"], e["content"]))
            .collect();
        assert_eq!(
            bodies.len(),
            events.len(),
            "no event stored twice: {events:?}"
        );
        assert!(!events.is_empty());
    }
}

/// A long chat stores its messages as deltas on every backend (full copies only to bound the
/// delta chains), also when a run's steps commit in one batch: on a shared database a step's
/// delta base written earlier in the same transaction counts as existing.
#[test]
fn long_threads_store_message_deltas_on_every_backend() {
    let tmp = tempfile::tempdir().unwrap();
    for (backend, db, guard) in backends(tmp.path()) {
        let a = Proc::start(tmp.path(), "config", &format!("{db}{RUNS}"));
        let t = post(&format!("{}/threads", a.url), json!({}));
        let tid = t["thread_id"].as_str().unwrap().to_string();
        for i in 0..40 {
            let out = post(
                &format!("{}/threads/{tid}/runs/wait", a.url),
                json!({"assistant_id": "echo",
                       "input": {"messages": [{"type": "human", "content": format!("m{i}")}]}}),
            );
            assert_eq!(contents(&out).len(), 2 * (i + 1), "[{backend}] {out}");
        }
        let sql =
            "SELECT COUNT(*) FROM checkpoint_blobs WHERE channel = 'messages' AND base_id IS NULL";
        let full: i64 = block_on(async {
            use sqlx::Connection;
            match &guard {
                None => {
                    let url = format!("sqlite://{}", tmp.path().join("db/antler.db").display());
                    let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                    sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
                }
                Some(db) if backend == "postgres" => {
                    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                    sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
                }
                Some(db) => {
                    let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
                    sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap()
                }
            }
        });
        // 40 runs x 2 checkpoints with new messages; chains of at most 32 deltas
        assert!(
            full <= 6,
            "[{backend}] {full} full copies of the message list for 40 runs"
        );
        drop(a);
    }
}
