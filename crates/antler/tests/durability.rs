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
