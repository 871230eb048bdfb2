#![cfg(feature = "postgres")]
//! The PostgreSQL backend against a real server: the shared conformance suites (stores +
//! checkpointer), two pools on one database (as two processes) racing claims and appending
//! events, persistence across reconnects, URL validation, tricky filters, delta-encoded
//! checkpoints (forks, rollback GC, copies), and a memory-vs-PostgreSQL differential test.
//!
//! URL: env `ANTLER_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//! When the server is unreachable the tests print a notice and skip, except with `CI=true`,
//! where they fail. The database is shared with other test runs: every test uses fresh ids
//! and owners, and nothing is dropped or truncated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use antler_graph::{ChannelValue, Checkpoint, Checkpointer};
use antler_store::{
    Claim, ItemSearch, NewRunEvent, Run, RunCompletion, RunEventQuery, RunStatus, SortOrder,
    StoreError, Stores, Thread, ThreadSearch, ThreadSortBy, ThreadStatus, ThreadUpdate,
    conformance,
};
use antler_store_sql::postgres::{
    MAX_DELTA_DEPTH, PoolOptions, PostgresCheckpointer, connect_pool, open_postgres,
};
use serde_json::{Map, Value, json};
use sqlx::PgPool;

/// The test database URL, or `None` (skip) when the server is unreachable outside CI.
async fn pg_url() -> Option<String> {
    let url = std::env::var("ANTLER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let probe = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&url);
    if let Ok(Ok(pool)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
        pool.close().await;
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "PostgreSQL is unreachable at {url} and CI=true: the PostgreSQL tests must run in CI"
    );
    eprintln!("NOTICE: PostgreSQL unreachable at {url}; skipping this PostgreSQL test");
    None
}

async fn open(url: &str) -> Stores {
    open_postgres(url, PoolOptions::default())
        .await
        .expect("open PostgreSQL stores")
}

fn sfx() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stores_pass_conformance() {
    let Some(url) = pg_url().await else { return };
    let stores = open(&url).await;
    conformance::run_all(&stores).await;
    // again on the same database: fresh ids, alongside the first run's data
    conformance::run_all(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_checkpointer_passes_conformance() {
    let Some(url) = pg_url().await else { return };
    let stores = open(&url).await;
    antler_graph::conformance::run_all(stores.checkpoints.clone()).await;
    antler_graph::conformance::run_all(stores.checkpoints).await;
}

#[tokio::test]
async fn bad_urls_are_invalid_arguments() {
    for url in [
        "mysql://root@127.0.0.1/test",
        "sqlite::memory:",
        "not a url",
        "postgres://u:secret@127.0.0.1:notaport/test",
    ] {
        match open_postgres(url, PoolOptions::default()).await {
            Err(StoreError::InvalidArgument(msg)) => {
                assert!(!msg.contains("secret"), "password leaked: {msg}");
            }
            other => panic!("{url}: expected InvalidArgument, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn pool_options_apply() {
    let Some(url) = pg_url().await else { return };
    let opts = PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Some(Duration::from_millis(1500)),
    };
    assert_eq!(PoolOptions::default().max_connections, 10);
    let pool = connect_pool(&url, opts).await.unwrap();
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(timeout, "1500ms");
    assert_eq!(pool.options().get_max_connections(), 2);
}

#[tokio::test]
async fn a_killed_connection_is_replaced() {
    let Some(url) = pg_url().await else { return };
    let opts = PoolOptions {
        max_connections: 1,
        ..PoolOptions::default()
    };
    let pool = connect_pool(&url, opts).await.unwrap();
    let stores = antler_store_sql::postgres::stores_from_pool(pool.clone());
    let x = sfx();
    let owner = format!("kill-{x}");
    stores
        .threads
        .create(&owner, Thread::new(format!("t-{x}"), Map::new()))
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    let admin = connect_pool(&url, PoolOptions::default()).await.unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(killed);
    let t = stores.threads.get(&owner, &format!("t-{x}")).await.unwrap();
    assert!(t.is_some());
    stores
        .threads
        .delete(&owner, &format!("t-{x}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn data_persists_across_reconnect() {
    let Some(url) = pg_url().await else { return };
    let x = sfx();
    let (owner, tid) = (format!("alice-{x}"), format!("t-persist-{x}"));
    {
        let stores = open(&url).await;
        let mut md = Map::new();
        md.insert("k".into(), json!("v"));
        let mut t = Thread::new(&tid, md);
        // sub-microsecond digits are dropped, microseconds kept exactly
        t.created_at = chrono::DateTime::parse_from_rfc3339("2031-02-03T04:05:06.123456789Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        stores.threads.create(&owner, t).await.unwrap();
        stores
            .items
            .put(&owner, &["docs".to_string()], "k", json!({"v": 1.5}))
            .await
            .unwrap();
    }
    let stores = open(&url).await;
    let t = stores.threads.get(&owner, &tid).await.unwrap().unwrap();
    assert_eq!(t.metadata.get("k"), Some(&json!("v")));
    assert_eq!(t.values, Some(Value::Null));
    assert_eq!(
        antler_store::time::format(&t.created_at),
        "2031-02-03T04:05:06.123456+00:00"
    );
    let item = stores
        .items
        .get(&owner, &["docs".to_string()], "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.value, json!({"v": 1.5}));
    stores.threads.delete(&owner, &tid).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_race_claims_and_share_sequences() {
    let Some(url) = pg_url().await else { return };
    let (a, b) = (open(&url).await, open(&url).await);
    let x = sfx();
    let owner = format!("o-{x}");
    let later = antler_store::time::now() + chrono::Duration::seconds(60);

    // 20 threads, each with two pending runs claimed at once through different pools
    let mut tasks = Vec::new();
    for t in 0..20 {
        let thread = format!("race-{x}-{t}");
        let mut ids = Vec::new();
        for r in 0..2 {
            let run = Run::new(format!("race-{x}-{t}-{r}"), &thread, "asst", &owner);
            a.runs.put(&run).await.unwrap();
            ids.push(run.run_id);
        }
        for (r, id) in ids.into_iter().enumerate() {
            let runs = if r == 0 {
                a.runs.clone()
            } else {
                b.runs.clone()
            };
            let worker = format!("w{r}");
            tasks.push(tokio::spawn(async move {
                (t, runs.claim(&id, &worker, later).await)
            }));
        }
    }
    let mut per_thread: BTreeMap<i32, Vec<Claim>> = BTreeMap::new();
    for task in tasks {
        let (t, res) = task.await.unwrap();
        per_thread.entry(t).or_default().push(res.unwrap());
    }
    for (t, claims) in &per_thread {
        let won = claims.iter().filter(|c| **c == Claim::Claimed).count();
        let busy = claims.iter().filter(|c| **c == Claim::Busy).count();
        assert_eq!((won, busy), (1, 1), "thread {t}: {claims:?}");
    }
    // the winner's run is running; the loser's still pending
    let thread0 = format!("race-{x}-0");
    let active = b
        .runs
        .active_for_thread(&owner, &thread0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.status, RunStatus::Running);
    let pending = a
        .runs
        .next_pending_for_thread(&owner, &thread0)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(pending.run_id, active.run_id);

    // events of one thread appended from both pools at once: seqs 1..=50, no gap, no repeat
    let shared = format!("shared-{x}");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let events = if i % 2 == 0 {
            a.events.clone()
        } else {
            b.events.clone()
        };
        let (owner, shared) = (owner.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let batch = (0..5)
                .map(|j| NewRunEvent::new(&shared, format!("r{i}"), "x", "trace", json!(j)))
                .collect();
            events.append_batch(&owner, batch).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = a
        .events
        .list(&owner, &shared, &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<i64>>()
    );
    // batches spanning two threads in opposite orders do not deadlock
    let (t1, t2) = (format!("dl1-{x}"), format!("dl2-{x}"));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let events = if i % 2 == 0 {
            a.events.clone()
        } else {
            b.events.clone()
        };
        let (first, second) = if i % 2 == 0 {
            (t1.clone(), t2.clone())
        } else {
            (t2.clone(), t1.clone())
        };
        let owner = owner.clone();
        tasks.push(tokio::spawn(async move {
            let batch = vec![
                NewRunEvent::new(&first, "r", "x", "trace", json!(i)),
                NewRunEvent::new(&second, "r", "x", "trace", json!(i)),
            ];
            events.append_batch(&owner, batch).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for t in [&t1, &t2] {
        assert_eq!(a.events.count(&owner, t, None, None).await.unwrap(), 8);
    }
}

/// 16 concurrent "runs" (thread + run rows, claims, status changes, events, checkpoints)
/// through two pools: no transient error may surface, every seq is unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_run_lifecycles_never_fail() {
    let Some(url) = pg_url().await else { return };
    let (a, b) = (open(&url).await, open(&url).await);
    let x = sfx();
    let owner = format!("o-{x}");
    let shared = format!("shared-{x}");
    let mut tasks = Vec::new();
    for w in 0..16 {
        let stores = if w % 2 == 0 { a.clone() } else { b.clone() };
        let (owner, shared, x) = (owner.clone(), shared.clone(), x.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..4 {
                let tid = format!("t{w}-{i}-{x}");
                stores
                    .threads
                    .create(&owner, Thread::new(&tid, Map::new()))
                    .await?;
                let run = Run::new(format!("r{w}-{i}-{x}"), &tid, "a", &owner);
                stores.runs.put(&run).await?;
                let until = antler_store::time::now() + chrono::Duration::seconds(30);
                assert_eq!(
                    stores.runs.claim(&run.run_id, "w", until).await?,
                    Claim::Claimed
                );
                let busy = ThreadUpdate {
                    status: Some(ThreadStatus::Busy),
                    ..Default::default()
                };
                stores.threads.update(&owner, &tid, busy).await?;
                let mut c = Checkpoint {
                    id: antler_graph::new_checkpoint_id(0),
                    ts: antler_graph::now_ts(),
                    ..Default::default()
                };
                c.channel_versions.insert("messages".into(), 1);
                c.channel_values
                    .insert("messages".into(), json!([{"content": "hi"}]));
                let nv: BTreeMap<String, u64> = [("messages".to_string(), 1)].into();
                stores
                    .checkpoints
                    .put(&tid, "", None, &c, &Map::new(), &nv)
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                let events = (0..5)
                    .map(|j| NewRunEvent::new(&shared, &run.run_id, "x", "trace", json!(j)))
                    .collect();
                stores.events.append_batch(&owner, events).await?;
                let done = RunCompletion {
                    status: Some(RunStatus::Success),
                    ..Default::default()
                };
                stores.runs.update_completion(&run.run_id, &done).await?;
                let idle = ThreadUpdate {
                    status: Some(ThreadStatus::Idle),
                    ..Default::default()
                };
                stores.threads.update(&owner, &tid, idle).await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = a
        .events
        .list(&owner, &shared, &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=16 * 4 * 5).collect::<Vec<i64>>()
    );
    assert_eq!(
        a.threads
            .count(&owner, &ThreadSearch::default())
            .await
            .unwrap(),
        64
    );
}

#[tokio::test]
async fn filters_with_tricky_keys_and_values() {
    let Some(url) = pg_url().await else { return };
    let stores = open(&url).await;
    let x = sfx();
    let owner = format!("f-{x}");
    let m = |v: Value| v.as_object().cloned().unwrap();
    let rows = [
        (
            "a",
            json!({
                "it's": "quote'd \"both\"",
                "ключ": "значение ✓",
                "n": 1,
                "f": 1.5,
                "nested": {"x": [1, {"y": null, "z": "w"}], "b": true},
                "a.b c": "dots and spaces",
                "'); DROP TABLE threads; --": 1,
                "graph_id": "g1"
            }),
        ),
        (
            "b",
            json!({"n": 2, "nested": {"b": true, "x": [1, {"z": "w"}]}, "graph_id": "g2"}),
        ),
        ("c", json!({"n": "1", "f": [1.5], "nested": null})),
    ];
    for (id, md) in &rows {
        stores
            .threads
            .create(&owner, Thread::new(format!("{id}-{x}"), m(md.clone())))
            .await
            .unwrap();
        stores
            .items
            .put(&owner, &["f".to_string()], id, md.clone())
            .await
            .unwrap();
    }
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["a", "b", "c"]),
        (json!({"it's": "quote'd \"both\""}), vec!["a"]),
        (json!({"ключ": "значение ✓"}), vec!["a"]),
        (json!({"n": 1.0}), vec!["a"]),
        (json!({"n": 1}), vec!["a"]),
        (json!({"n": "1"}), vec!["c"]),
        (json!({"f": 1.5}), vec!["a"]),
        (json!({"f": 1.50}), vec!["a"]),
        (json!({"f": [1.5]}), vec!["c"]),
        // objects regardless of key order, numbers by value inside arrays
        (
            json!({"nested": {"b": true, "x": [1.0, {"z": "w", "y": null}]}}),
            vec!["a"],
        ),
        (
            json!({"nested": {"b": true, "x": [1, {"z": "w"}]}}),
            vec!["b"],
        ),
        // arrays are element-wise, not containment
        (json!({"nested": {"b": true, "x": [1]}}), vec![]),
        (json!({"nested": null}), vec!["c"]),
        (json!({"missing": null}), vec![]),
        (json!({"a.b c": "dots and spaces"}), vec!["a"]),
        (json!({"'); DROP TABLE threads; --": 1}), vec!["a"]),
        (json!({"graph_id": "g2", "n": 2}), vec!["b"]),
        (json!({"graph_id": "g2", "n": 1}), vec![]),
    ];
    for (filter, expected) in cases {
        let q = ThreadSearch {
            metadata: m(filter.clone()),
            sort_by: ThreadSortBy::ThreadId,
            sort_order: SortOrder::Asc,
            limit: 100,
            ..Default::default()
        };
        let found: Vec<String> = stores
            .threads
            .search(&owner, &q)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.thread_id)
            .collect();
        let want: Vec<String> = expected.iter().map(|id| format!("{id}-{x}")).collect();
        assert_eq!(found, want, "threads, filter {filter}");
        assert_eq!(
            stores.threads.count(&owner, &q).await.unwrap(),
            want.len() as u64
        );
        let q = ItemSearch {
            filter: m(filter.clone()),
            limit: 100,
            ..Default::default()
        };
        let mut keys: Vec<String> = stores
            .items
            .search(&owner, &q)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.item.key)
            .collect();
        keys.sort();
        assert_eq!(keys, expected, "items, filter {filter}");
    }
    // metadata merges keep tricky keys; a NUL character is refused clearly, not a 500
    let t = stores
        .threads
        .patch_metadata(&owner, &format!("b-{x}"), m(json!({"it's": 2, "n": 3})))
        .await
        .unwrap();
    assert_eq!(t.metadata.get("it's"), Some(&json!(2)));
    assert_eq!(t.metadata.get("graph_id"), Some(&json!("g2")));
    let err = stores
        .threads
        .patch_metadata(&owner, &format!("b-{x}"), m(json!({"nul": "a\u{0}b"})))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err:?}");
    // too many filter keys: refused
    let big: Map<String, Value> = (0..5_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let q = ThreadSearch {
        metadata: big,
        ..Default::default()
    };
    assert!(matches!(
        stores.threads.search(&owner, &q).await,
        Err(StoreError::InvalidArgument(_))
    ));
    // 40,000 ids: one bound array
    let mut ids: Vec<String> = (0..40_000).map(|i| format!("id-{i}")).collect();
    ids.push(format!("c-{x}"));
    let q = ThreadSearch {
        ids: Some(ids),
        ..Default::default()
    };
    assert_eq!(stores.threads.count(&owner, &q).await.unwrap(), 1);
}

// ------------------------------------------------------------------------ checkpoint deltas

async fn checkpointer(url: &str) -> (PgPool, Arc<dyn Checkpointer>) {
    let pool = connect_pool(url, PoolOptions::default()).await.unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(PostgresCheckpointer::new(pool.clone()));
    (pool, cp)
}

fn msg(i: usize) -> Value {
    json!({"type": "ai", "content": format!("message {i}"), "id": format!("m{i}")})
}

fn meta(run_id: &str, step: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("run_id".into(), json!(run_id));
    m.insert("step".into(), json!(step));
    m
}

fn push(list: &ChannelValue, v: Value) -> ChannelValue {
    match list.clone() {
        ChannelValue::List(mut items) => {
            items.push_back(Arc::new(v));
            ChannelValue::List(items)
        }
        other => other,
    }
}

/// Puts one step: `messages` changed (version `v`), `step` changed (version `v`).
async fn step(
    cp: &dyn Checkpointer,
    thread: &str,
    parent: Option<&str>,
    list: &ChannelValue,
    v: u64,
    run: &str,
) -> String {
    let mut c = Checkpoint {
        id: antler_graph::new_checkpoint_id(v as i64),
        ts: antler_graph::now_ts(),
        ..Default::default()
    };
    c.channel_versions.insert("messages".into(), v);
    c.channel_versions.insert("step".into(), v);
    let mut values = BTreeMap::new();
    values.insert("messages".to_string(), list.clone());
    values.insert(
        "step".to_string(),
        ChannelValue::from_value(json!(v), false),
    );
    let mut nv = BTreeMap::new();
    nv.insert("messages".to_string(), v);
    nv.insert("step".to_string(), v);
    cp.put_shared(thread, "", parent, &c, &values, &meta(run, v as i64), &nv)
        .await
        .unwrap();
    c.id
}

async fn messages_at(cp: &dyn Checkpointer, thread: &str, id: Option<&str>) -> Value {
    let t = cp.get_tuple(thread, "", id).await.unwrap().unwrap();
    t.checkpoint
        .channel_values
        .get("messages")
        .cloned()
        .unwrap_or(Value::Null)
}

async fn blob_count(pool: &PgPool, thread: &str, extra: &'static str) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM checkpoint_blobs WHERE thread_id = $1 AND channel = 'messages' {extra}"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(thread)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn unchanged_channels_are_stored_once() {
    let Some(url) = pg_url().await else { return };
    let (pool, cp) = checkpointer(&url).await;
    let thread = format!("once-{}", sfx());
    let big: Vec<Value> = (0..200)
        .map(|i| json!({"type": "human", "content": format!("m{i}"), "id": i.to_string()}))
        .collect();
    let mut parent: Option<String> = None;
    for step in 0..20u64 {
        let mut c = Checkpoint {
            id: antler_graph::new_checkpoint_id(step as i64),
            ts: antler_graph::now_ts(),
            ..Default::default()
        };
        c.channel_versions.insert("messages".into(), 1);
        c.channel_versions.insert("counter".into(), step + 2);
        let mut new_versions = BTreeMap::new();
        if step == 0 {
            c.channel_values.insert("messages".into(), json!(big));
            new_versions.insert("messages".to_string(), 1);
        }
        c.channel_values.insert("counter".into(), json!(step));
        new_versions.insert("counter".to_string(), step + 2);
        let mut md = Map::new();
        md.insert("step".into(), json!(step));
        cp.put(&thread, "", parent.as_deref(), &c, &md, &new_versions)
            .await
            .unwrap();
        parent = Some(c.id.clone());
    }
    assert_eq!(blob_count(&pool, &thread, "").await, 1);
    let latest = cp.get_tuple(&thread, "", None).await.unwrap().unwrap();
    assert_eq!(latest.checkpoint.channel_values["messages"], json!(big));
    assert_eq!(latest.checkpoint.channel_values["counter"], json!(19));
}

#[tokio::test]
async fn values_round_trip_byte_for_byte() {
    let Some(url) = pg_url().await else { return };
    let (_pool, cp) = checkpointer(&url).await;
    let thread = format!("exact-{}", sfx());
    // key order (preserve_order), NUL characters and big numbers survive unchanged
    let value: Value = serde_json::from_str(
        r#"{"z": 1, "a": "nul \u0000 here", "m": 1e300, "big": 18446744073709551615}"#,
    )
    .unwrap();
    let mut c = Checkpoint {
        id: antler_graph::new_checkpoint_id(0),
        ts: antler_graph::now_ts(),
        ..Default::default()
    };
    c.channel_versions.insert("v".into(), 1);
    c.channel_values.insert("v".into(), value.clone());
    let nv: BTreeMap<String, u64> = [("v".to_string(), 1)].into();
    cp.put(&thread, "", None, &c, &Map::new(), &nv)
        .await
        .unwrap();
    cp.put_writes(
        &thread,
        "",
        &c.id,
        "task",
        &[("v".to_string(), value.clone())],
    )
    .await
    .unwrap();
    let t = cp.get_tuple(&thread, "", None).await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_string(&t.checkpoint.channel_values["v"]).unwrap(),
        serde_json::to_string(&value).unwrap()
    );
    assert_eq!(t.pending_writes[0].value, value);
    cp.delete_thread(&thread).await.unwrap();
    assert!(cp.get_tuple(&thread, "", None).await.unwrap().is_none());
}

#[tokio::test]
async fn growing_lists_are_stored_as_bounded_delta_chains() {
    let Some(url) = pg_url().await else { return };
    let (pool, cp) = checkpointer(&url).await;
    let thread = format!("delta-{}", sfx());
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut parent: Option<String> = None;
    let mut ids = Vec::new();
    for i in 0..100 {
        list = push(&list, msg(i));
        let id = step(&*cp, &thread, parent.as_deref(), &list, i as u64 + 1, "r1").await;
        parent = Some(id.clone());
        ids.push(id);
    }
    let (fulls, deltas, max_depth): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE base_id IS NULL), COUNT(*) FILTER (WHERE base_id IS NOT NULL), \
         MAX(depth) FROM checkpoint_blobs WHERE thread_id = $1 AND channel = 'messages'",
    )
    .bind(&thread)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        deltas >= 90,
        "most steps write deltas ({fulls} full, {deltas} delta)"
    );
    assert!(fulls >= 3, "chains are cut with full values ({fulls} full)");
    assert!(max_depth <= MAX_DELTA_DEPTH);
    let bytes: i64 = sqlx::query_scalar(
        "SELECT SUM(octet_length(value))::BIGINT FROM checkpoint_blobs WHERE thread_id = $1 AND channel = 'messages'",
    )
    .bind(&thread)
    .fetch_one(&pool)
    .await
    .unwrap();
    let one = msg(99).to_string().len() as i64;
    assert!(
        bytes < one * 100 * 6,
        "stored {bytes} bytes for 100 messages of ~{one} bytes"
    );
    let expected: Vec<Value> = (0..100).map(msg).collect();
    assert_eq!(
        messages_at(&*cp, &thread, None).await,
        Value::Array(expected.clone())
    );
    for (i, id) in ids.iter().enumerate().step_by(7) {
        assert_eq!(
            messages_at(&*cp, &thread, Some(id)).await,
            Value::Array(expected[..=i].to_vec()),
            "checkpoint {i}"
        );
    }
    let listed = cp
        .list(&thread, Some(""), &antler_graph::ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(
        listed[50].checkpoint.channel_values["messages"],
        Value::Array(expected[..50].to_vec())
    );
    // a reloaded (equal, newly allocated) list still extends as a delta
    let reloaded = ChannelValue::from_value(messages_at(&*cp, &thread, None).await, true);
    let before = blob_count(&pool, &thread, "AND base_id IS NOT NULL").await;
    step(
        &*cp,
        &thread,
        parent.as_deref(),
        &push(&reloaded, msg(100)),
        101,
        "r2",
    )
    .await;
    let after = blob_count(&pool, &thread, "AND base_id IS NOT NULL").await;
    assert_eq!(
        after,
        before + 1,
        "the reloaded list was written as a delta"
    );
}

#[tokio::test]
async fn forks_rollbacks_and_copies_keep_delta_chains_intact() {
    let Some(url) = pg_url().await else { return };
    let (pool, cp) = checkpointer(&url).await;
    let x = sfx();

    // a fork reusing a version number does not overwrite the other branch
    let fork = format!("fork-{x}");
    let base = ChannelValue::from_value(json!([msg(0)]), true);
    let c1 = step(&*cp, &fork, None, &base, 1, "r1").await;
    let c2 = step(&*cp, &fork, Some(&c1), &push(&base, msg(1)), 2, "r1").await;
    let c3 = step(&*cp, &fork, Some(&c1), &push(&base, msg(7)), 2, "r2").await;
    assert_eq!(
        messages_at(&*cp, &fork, Some(&c2)).await,
        json!([msg(0), msg(1)])
    );
    assert_eq!(
        messages_at(&*cp, &fork, Some(&c3)).await,
        json!([msg(0), msg(7)])
    );
    assert_eq!(messages_at(&*cp, &fork, Some(&c1)).await, json!([msg(0)]));

    // rolling back run b keeps run a's chain and collects b's blobs
    let t = format!("rb-{x}");
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut parent: Option<String> = None;
    let mut ids = Vec::new();
    for i in 0..6 {
        list = push(&list, msg(i));
        let run = if i < 3 { "a" } else { "b" };
        let id = step(&*cp, &t, parent.as_deref(), &list, i as u64 + 1, run).await;
        parent = Some(id.clone());
        ids.push(id);
    }
    cp.delete_run(&t, "b").await.unwrap();
    assert_eq!(
        messages_at(&*cp, &t, None).await,
        json!([msg(0), msg(1), msg(2)])
    );
    assert_eq!(
        blob_count(&pool, &t, "").await,
        3,
        "run b's blobs are collected"
    );
    // continue after the rollback (same version numbers as the deleted run)
    let reloaded = ChannelValue::from_value(messages_at(&*cp, &t, None).await, true);
    let c = step(&*cp, &t, Some(&ids[2]), &push(&reloaded, msg(9)), 4, "c").await;
    assert_eq!(
        messages_at(&*cp, &t, Some(&c)).await,
        json!([msg(0), msg(1), msg(2), msg(9)])
    );
    // rolling back the first run while the later one remains keeps what it reads
    cp.delete_run(&t, "a").await.unwrap();
    assert_eq!(
        messages_at(&*cp, &t, Some(&c)).await,
        json!([msg(0), msg(1), msg(2), msg(9)])
    );
    assert!(cp.get_tuple(&t, "", Some(&ids[0])).await.unwrap().is_none());

    // later deltas based on a rolled-back run's blobs keep them alive
    let t3 = format!("rb3-{x}");
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut parent: Option<String> = None;
    for i in 0..6 {
        list = push(&list, msg(i));
        let run = if i < 3 { "a2" } else { "b2" };
        parent = Some(step(&*cp, &t3, parent.as_deref(), &list, i as u64 + 1, run).await);
    }
    cp.delete_run(&t3, "a2").await.unwrap();
    assert_eq!(
        messages_at(&*cp, &t3, None).await,
        Value::Array((0..6).map(msg).collect())
    );
    assert_eq!(
        cp.list(&t3, None, &antler_graph::ListOptions::default())
            .await
            .unwrap()
            .len(),
        3
    );

    // copies keep delta chains intact
    let t2 = format!("copy-{x}");
    cp.copy_thread(&t, &t2).await.unwrap();
    assert_eq!(
        messages_at(&*cp, &t2, None).await,
        json!([msg(0), msg(1), msg(2), msg(9)])
    );

    // removing messages writes a full value
    let rm = format!("rm-{x}");
    let list = ChannelValue::from_value(json!([msg(0), msg(1)]), true);
    let r1 = step(&*cp, &rm, None, &list, 1, "r").await;
    let shorter = ChannelValue::from_value(json!([msg(1)]), true);
    let r2 = step(&*cp, &rm, Some(&r1), &shorter, 2, "r").await;
    assert_eq!(blob_count(&pool, &rm, "AND base_id IS NULL").await, 2);
    assert_eq!(messages_at(&*cp, &rm, Some(&r2)).await, json!([msg(1)]));

    for thread in [&fork, &t, &t2, &t3, &rm] {
        cp.delete_thread(thread).await.unwrap();
    }
}

#[tokio::test]
async fn a_delta_whose_base_vanished_is_written_in_full() {
    // another process rolled back the base this process would extend
    let Some(url) = pg_url().await else { return };
    let (pool, cp) = checkpointer(&url).await;
    let (_pool2, other) = checkpointer(&url).await;
    let t = format!("vanish-{}", sfx());
    let list = ChannelValue::from_value(json!([msg(0)]), true);
    let c1 = step(&*cp, &t, None, &list, 1, "gone").await;
    other.delete_run(&t, "gone").await.unwrap();
    assert!(cp.get_tuple(&t, "", Some(&c1)).await.unwrap().is_none());
    let c2 = step(&*cp, &t, None, &push(&list, msg(1)), 2, "next").await;
    assert_eq!(blob_count(&pool, &t, "AND base_id IS NOT NULL").await, 0);
    assert_eq!(
        messages_at(&*cp, &t, Some(&c2)).await,
        json!([msg(0), msg(1)])
    );
    cp.delete_thread(&t).await.unwrap();
}

// ------------------------------------------------------------------------ differential

mod differential {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!(1)),
            Just(json!(2)),
            Just(json!(1.5)),
            Just(json!("1")),
            Just(json!("a")),
            Just(json!(true)),
            Just(json!(false)),
            Just(Value::Null),
            Just(json!([1, 2])),
            Just(json!([1.0, 2])),
            Just(json!([2, 1])),
            Just(json!([])),
            Just(json!({"x": "y"})),
            Just(json!({"x": "y", "n": 1})),
            Just(json!({"n": 1.0, "x": "y"})),
            Just(json!({"n": {"deep": [true, null]}})),
            Just(json!({})),
        ]
    }

    fn object() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map(
            prop_oneof![Just("a"), Just("b"), Just("c d"), Just("it's")],
            scalar(),
            0..3,
        )
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn status() -> impl Strategy<Value = ThreadStatus> {
        prop_oneof![
            Just(ThreadStatus::Idle),
            Just(ThreadStatus::Busy),
            Just(ThreadStatus::Error)
        ]
    }

    #[derive(Debug, Clone)]
    struct Row {
        metadata: Map<String, Value>,
        values: Option<Map<String, Value>>,
        status: ThreadStatus,
    }

    fn row() -> impl Strategy<Value = Row> {
        (object(), proptest::option::of(object()), status()).prop_map(
            |(metadata, values, status)| Row {
                metadata,
                values,
                status,
            },
        )
    }

    async fn load(stores: &Stores, owner: &str, rows: &[Row]) {
        for (i, r) in rows.iter().enumerate() {
            let id = format!("{owner}-{i:03}");
            stores
                .threads
                .create(owner, Thread::new(&id, r.metadata.clone()))
                .await
                .unwrap();
            let update = ThreadUpdate {
                status: Some(r.status),
                values: r.values.clone().map(|v| Some(Value::Object(v))),
                ..Default::default()
            };
            stores.threads.update(owner, &id, update).await.unwrap();
            let ns = vec!["ns".to_string(), format!("n{}", i % 3)];
            stores
                .items
                .put(
                    owner,
                    &ns,
                    &format!("k{i}"),
                    Value::Object(r.metadata.clone()),
                )
                .await
                .unwrap();
        }
    }

    async fn thread_ids(stores: &Stores, owner: &str, q: &ThreadSearch) -> (Vec<String>, u64) {
        let found = stores.threads.search(owner, q).await.unwrap();
        let count = stores.threads.count(owner, q).await.unwrap();
        (found.into_iter().map(|t| t.thread_id).collect(), count)
    }

    #[test]
    fn memory_and_postgres_agree_on_filters() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let Some(url) = rt.block_on(pg_url()) else {
            return;
        };
        let pg = rt.block_on(open(&url));
        let run = sfx();
        let mut runner = TestRunner::new(Config {
            cases: 32,
            ..Config::default()
        });
        let case = std::sync::atomic::AtomicU32::new(0);
        runner
            .run(
                &(
                    proptest::collection::vec(row(), 0..10),
                    proptest::collection::vec(
                        (object(), object(), proptest::option::of(status())),
                        1..5,
                    ),
                ),
                |(rows, queries)| {
                    let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let owner = format!("d{n}-{run}-{}", sfx());
                    let memory = Stores::memory();
                    rt.block_on(async {
                        load(&memory, &owner, &rows).await;
                        load(&pg, &owner, &rows).await;
                        for (metadata, values, status) in &queries {
                            let q = ThreadSearch {
                                metadata: metadata.clone(),
                                values: values.clone(),
                                status: *status,
                                sort_by: ThreadSortBy::ThreadId,
                                sort_order: SortOrder::Asc,
                                limit: 100,
                                ..Default::default()
                            };
                            let m = thread_ids(&memory, &owner, &q).await;
                            let p = thread_ids(&pg, &owner, &q).await;
                            assert_eq!(m, p, "thread search {q:?}");
                            for prefix in [
                                vec![],
                                vec!["ns".to_string()],
                                vec!["ns".to_string(), "n1".to_string()],
                            ] {
                                let q = ItemSearch {
                                    namespace_prefix: prefix,
                                    filter: metadata.clone(),
                                    limit: 100,
                                    offset: 0,
                                };
                                let key = |v: Vec<antler_store::SearchItem>| {
                                    let mut k: Vec<String> =
                                        v.into_iter().map(|i| i.item.key).collect();
                                    k.sort();
                                    k
                                };
                                let m = key(memory.items.search(&owner, &q).await.unwrap());
                                let p = key(pg.items.search(&owner, &q).await.unwrap());
                                assert_eq!(m, p, "item search {q:?}");
                            }
                        }
                    });
                    Ok(())
                },
            )
            .unwrap();
    }
}
