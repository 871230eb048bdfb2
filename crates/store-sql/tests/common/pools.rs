//! The stores through several pools of one database: a differential test against the
//! in-memory stores, concurrent run lifecycles, claims racing across pools, shared event
//! sequences, persistence across reconnects.

use std::collections::BTreeMap;

use antler_graph::Checkpoint;
use antler_store::{
    Claim, ItemSearch, NewRunEvent, Owner, Run, RunCompletion, RunEventQuery, RunId, RunStatus,
    SortOrder, StoreError, StoreResult, Stores, Thread, ThreadId, ThreadSearch, ThreadSortBy,
    ThreadStatus, ThreadUpdate,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

use super::{Backend, uid};

// ------------------------------------------------------------------------ differential

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(1.5)),
        Just(json!("1")),
        Just(json!("a")),
        Just(json!("A")),
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
    let key = prop_oneof![
        Just("a"),
        Just("b"),
        Just("c d"),
        Just("it's"),
        Just("graph_id")
    ];
    proptest::collection::btree_map(key, scalar(), 0..3)
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
    (object(), proptest::option::of(object()), status()).prop_map(|(metadata, values, status)| {
        Row {
            metadata,
            values,
            status,
        }
    })
}

type Query = (Map<String, Value>, Map<String, Value>, Option<ThreadStatus>);

/// Thread `owner-NNN` and item `ns/n{i % 3}:k{i}` per row.
async fn load(stores: &Stores, owner: &str, rows: &[Row]) {
    for (i, r) in rows.iter().enumerate() {
        let id = format!("{owner}-{i:03}");
        stores
            .threads
            .create(Owner(owner), Thread::new(&id, r.metadata.clone()))
            .await
            .unwrap();
        let update = ThreadUpdate {
            status: Some(r.status),
            values: r.values.clone().map(|v| Some(Value::Object(v))),
            ..Default::default()
        };
        stores
            .threads
            .update(Owner(owner), ThreadId(&id), update)
            .await
            .unwrap();
        let ns = vec!["ns".to_string(), format!("n{}", i % 3)];
        let value = Value::Object(r.metadata.clone());
        stores
            .items
            .put(Owner(owner), &ns, &format!("k{i}"), value)
            .await
            .unwrap();
    }
}

async fn unload(stores: &Stores, owner: &str, rows: &[Row]) {
    for i in 0..rows.len() {
        stores
            .threads
            .delete(Owner(owner), ThreadId(&format!("{owner}-{i:03}")))
            .await
            .unwrap();
        let ns = vec!["ns".to_string(), format!("n{}", i % 3)];
        stores
            .items
            .delete(Owner(owner), &ns, &format!("k{i}"))
            .await
            .unwrap();
    }
}

async fn thread_ids(stores: &Stores, owner: &str, q: &ThreadSearch) -> (Vec<String>, u64) {
    let found = stores.threads.search(Owner(owner), q).await.unwrap();
    let count = stores.threads.count(Owner(owner), q).await.unwrap();
    (found.into_iter().map(|t| t.thread_id).collect(), count)
}

async fn item_keys(stores: &Stores, owner: &str, q: &ItemSearch) -> Vec<String> {
    let mut k: Vec<String> = stores
        .items
        .search(Owner(owner), q)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.item.key)
        .collect();
    k.sort();
    k
}

/// `rows` loaded into the in-memory stores and into `sql` give the same answers to every
/// query (thread search/count by metadata, values and status; item search by value filter and
/// namespace prefix); `sql` is left as it was.
async fn agree(sql: &Stores, owner: &str, rows: &[Row], queries: &[Query]) {
    let memory = Stores::memory();
    load(&memory, owner, rows).await;
    load(sql, owner, rows).await;
    for (metadata, values, status) in queries {
        let q = ThreadSearch {
            metadata: metadata.clone(),
            values: values.clone(),
            status: *status,
            sort_by: ThreadSortBy::ThreadId,
            sort_order: SortOrder::Asc,
            limit: 100,
            ..Default::default()
        };
        let m = thread_ids(&memory, owner, &q).await;
        assert_eq!(m, thread_ids(sql, owner, &q).await, "thread search {q:?}");
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
            let m = item_keys(&memory, owner, &q).await;
            assert_eq!(m, item_keys(sql, owner, &q).await, "item search {q:?}");
        }
    }
    unload(sql, owner, rows).await;
}

/// Random data and random filters give the same answers from the in-memory stores and from
/// the backend (48 proptest cases).
pub async fn memory_and_backend_agree_on_filters<B: Backend>(b: &B) {
    let sql = b.open().await;
    let handle = tokio::runtime::Handle::current();
    let run = uid();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 48,
            ..Config::default()
        });
        let case = std::sync::atomic::AtomicU32::new(0);
        let queries =
            proptest::collection::vec((object(), object(), proptest::option::of(status())), 1..6);
        let input = (proptest::collection::vec(row(), 0..12), queries);
        runner.run(&input, |(rows, queries)| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            handle.block_on(agree(&sql, &format!("d{n}-{run}"), &rows, &queries));
            Ok(())
        })
    })
    .await;
    match outcome {
        Ok(result) => result.unwrap(),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

// ------------------------------------------------------------------------ several pools

/// One run's life on thread `{owner}-t{w}-{i}`: thread and run rows, a claim (even workers,
/// asserting it wins) or a status transition (odd ones), busy, a checkpoint, 5 events on the
/// shared thread, completion, idle.
async fn lifecycle(
    stores: &Stores,
    owner: &str,
    shared: &str,
    w: usize,
    i: usize,
) -> StoreResult<()> {
    let tid = format!("{owner}-t{w}-{i}");
    stores
        .threads
        .create(Owner(owner), Thread::new(&tid, Map::new()))
        .await?;
    let run = Run::new(format!("{owner}-r{w}-{i}"), &tid, "a", owner);
    stores.runs.put(&run).await?;
    if w.is_multiple_of(2) {
        let until = antler_store::time::now() + chrono::Duration::seconds(30);
        assert_eq!(
            stores.runs.claim(RunId(&run.run_id), "w", until).await?,
            Claim::Claimed
        );
    } else {
        let pending = [RunStatus::Pending];
        stores
            .runs
            .transition(RunId(&run.run_id), &pending, RunStatus::Running, None)
            .await?;
    }
    let status = |status| ThreadUpdate {
        status: Some(status),
        ..Default::default()
    };
    stores
        .threads
        .update(Owner(owner), ThreadId(&tid), status(ThreadStatus::Busy))
        .await?;
    let mut c = Checkpoint {
        id: antler_graph::new_checkpoint_id(0),
        ts: antler_graph::now_ts(),
        ..Default::default()
    };
    c.channel_versions.insert("messages".into(), 1);
    c.channel_values
        .insert("messages".into(), json!([{"content": "hi"}]));
    let nv: BTreeMap<String, u64> = [("messages".to_string(), 1)].into();
    let put = stores
        .checkpoints
        .put(&tid, "", None, &c, &Map::new(), &nv)
        .await;
    put.map_err(|e| StoreError::Backend(e.to_string()))?;
    let events = (0..5)
        .map(|j| NewRunEvent::new(shared, &run.run_id, "x", "trace", json!(j)))
        .collect();
    stores.events.append_batch(Owner(owner), events).await?;
    let done = RunCompletion {
        status: Some(RunStatus::Success),
        ..Default::default()
    };
    stores
        .runs
        .update_completion(RunId(&run.run_id), &done)
        .await?;
    stores
        .threads
        .update(Owner(owner), ThreadId(&tid), status(ThreadStatus::Idle))
        .await?;
    Ok(())
}

/// Concurrent run lifecycles through two pools: no busy/locked error, deadlock or lock
/// timeout may surface, every seq is unique, every thread ends idle.
pub async fn concurrent_run_lifecycles_never_fail<B: Backend>(b: &B) {
    let (a, other) = (b.open().await, b.open().await);
    let (workers, runs) = B::LIFECYCLES;
    let x = uid();
    let (owner, shared) = (format!("o-{x}"), format!("shared-{x}"));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let stores = if w % 2 == 0 { a.clone() } else { other.clone() };
        let (owner, shared) = (owner.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..runs {
                lifecycle(&stores, &owner, &shared, w, i).await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = a
        .events
        .list(Owner(&owner), ThreadId(&shared), &RunEventQuery::default())
        .await
        .unwrap();
    let total = (workers * runs) as i64;
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=total * 5).collect::<Vec<i64>>()
    );
    assert_eq!(
        a.threads
            .count(Owner(&owner), &ThreadSearch::default())
            .await
            .unwrap(),
        total as u64
    );
    let idle = ThreadSearch {
        status: Some(ThreadStatus::Idle),
        ..Default::default()
    };
    assert_eq!(
        a.threads.count(Owner(&owner), &idle).await.unwrap(),
        total as u64
    );
    // leave nothing behind in the shared database
    for w in 0..workers {
        for i in 0..runs {
            let tid = format!("{owner}-t{w}-{i}");
            a.runs
                .delete_by_thread(Owner(&owner), ThreadId(&tid))
                .await
                .unwrap();
            a.checkpoints.delete_thread(&tid).await.unwrap();
            a.threads
                .delete(Owner(&owner), ThreadId(&tid))
                .await
                .unwrap();
        }
    }
    a.events
        .delete_thread(Owner(&owner), ThreadId(&shared))
        .await
        .unwrap();
}

/// 20 threads, each with two pending runs claimed at once through different pools: on every
/// thread one wins and one is told the thread is busy.
pub async fn two_pools_race_claims_per_thread<B: Backend>(b: &B) {
    let (a, other) = (b.open().await, b.open().await);
    let x = uid();
    let owner = format!("o-{x}");
    let later = antler_store::time::now() + chrono::Duration::seconds(60);
    let mut tasks = Vec::new();
    for t in 0..20 {
        let thread = format!("race-{x}-{t}");
        let runs = [0, 1].map(|r| Run::new(format!("race-{x}-{t}-{r}"), &thread, "asst", &owner));
        for run in &runs {
            a.runs.put(run).await.unwrap();
        }
        for (r, run) in runs.into_iter().enumerate() {
            let store = if r == 0 {
                a.runs.clone()
            } else {
                other.runs.clone()
            };
            let worker = format!("w{r}-{x}");
            tasks.push(tokio::spawn(async move {
                (t, store.claim(RunId(&run.run_id), &worker, later).await)
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
    let active = other
        .runs
        .active_for_thread(Owner(&owner), ThreadId(&thread0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(active.status, RunStatus::Running);
    let pending = a
        .runs
        .next_pending_for_thread(Owner(&owner), ThreadId(&thread0))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(pending.run_id, active.run_id);
    for t in 0..20 {
        a.runs
            .delete_by_thread(Owner(&owner), ThreadId(&format!("race-{x}-{t}")))
            .await
            .unwrap();
    }
}

/// 8 pending runs of one thread claimed at once from both pools: exactly one wins, the others
/// are told the thread is busy.
pub async fn two_pools_race_claims_on_one_thread<B: Backend>(b: &B) {
    let (a, other) = (b.open().await, b.open().await);
    let (owner, thread) = (format!("o-{}", uid()), format!("t-{}", uid()));
    a.threads
        .create(Owner(&owner), Thread::new(&thread, Map::new()))
        .await
        .unwrap();
    let runs: Vec<String> = (0..8).map(|i| format!("r{i}-{}", uid())).collect();
    for r in &runs {
        a.runs
            .put(&Run::new(r.clone(), &thread, "asst", &owner))
            .await
            .unwrap();
    }
    let lease = antler_store::time::now() + chrono::Duration::seconds(60);
    let mut tasks = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let store = if i % 2 == 0 {
            a.runs.clone()
        } else {
            other.runs.clone()
        };
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            store.claim(RunId(&r), &format!("worker-{i}"), lease).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap());
    }
    let count = |c: Claim| outcomes.iter().filter(|o| **o == c).count();
    assert_eq!(count(Claim::Claimed), 1, "{outcomes:?}");
    assert_eq!(count(Claim::Busy), 7, "{outcomes:?}");
    let running = a
        .runs
        .active_for_thread(Owner(&owner), ThreadId(&thread))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.status, RunStatus::Running);
    a.runs
        .delete_by_thread(Owner(&owner), ThreadId(&thread))
        .await
        .unwrap();
    a.threads
        .delete(Owner(&owner), ThreadId(&thread))
        .await
        .unwrap();
}

/// The same pending run claimed by both pools at once: one claims it, the other finds it gone.
pub async fn two_pools_claim_the_same_run<B: Backend>(b: &B) {
    let (a, other) = (b.open().await, b.open().await);
    let (owner, thread2, run2) = (
        format!("o-{}", uid()),
        format!("t-{}", uid()),
        format!("r-{}", uid()),
    );
    a.runs
        .put(&Run::new(run2.clone(), &thread2, "asst", &owner))
        .await
        .unwrap();
    let lease = antler_store::time::now() + chrono::Duration::seconds(60);
    let (x, y) = tokio::join!(
        a.runs.claim(RunId(&run2), "wa", lease),
        other.runs.claim(RunId(&run2), "wb", lease)
    );
    let mut both = [x.unwrap(), y.unwrap()];
    both.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(both, [Claim::Claimed, Claim::Gone]);
    a.runs
        .delete_by_thread(Owner(&owner), ThreadId(&thread2))
        .await
        .unwrap();
}

/// Event batches of one thread appended concurrently through both pools: seqs 1..=50, no gap,
/// no repeat; deleting never lets a seq be reused.
pub async fn two_pools_share_event_sequences<B: Backend>(b: &B) {
    let (a, other) = (b.open().await, b.open().await);
    let (owner, shared) = (format!("o-{}", uid()), format!("t-events-{}", uid()));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let events = if i % 2 == 0 {
            a.events.clone()
        } else {
            other.events.clone()
        };
        let (owner, shared) = (owner.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            let batch = (0..5)
                .map(|j| NewRunEvent::new(&shared, format!("r{i}"), "x", "trace", json!(j)))
                .collect();
            events.append_batch(Owner(&owner), batch).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = other
        .events
        .list(Owner(&owner), ThreadId(&shared), &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<i64>>()
    );
    a.events
        .delete_thread(Owner(&owner), ThreadId(&shared))
        .await
        .unwrap();
    let again = vec![NewRunEvent::new(&shared, "r", "x", "trace", json!(0))];
    let again = a.events.append_batch(Owner(&owner), again).await.unwrap();
    assert_eq!(again[0].seq, 51);
    a.events
        .delete_thread(Owner(&owner), ThreadId(&shared))
        .await
        .unwrap();
}

/// Batches spanning two threads in opposite orders, through both pools, do not deadlock.
pub async fn batches_spanning_two_threads_do_not_deadlock<B: Backend>(b: &B) {
    let (a, other) = (b.open().await, b.open().await);
    let x = uid();
    let (owner, t1, t2) = (format!("o-{x}"), format!("dl1-{x}"), format!("dl2-{x}"));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let events = if i % 2 == 0 {
            a.events.clone()
        } else {
            other.events.clone()
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
            events.append_batch(Owner(&owner), batch).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    for t in [&t1, &t2] {
        assert_eq!(
            a.events
                .count(Owner(&owner), ThreadId(t), None, None)
                .await
                .unwrap(),
            8
        );
        a.events
            .delete_thread(Owner(&owner), ThreadId(t))
            .await
            .unwrap();
    }
}

/// A thread and an item written through one pool read back whole through a new one after the
/// first is gone: metadata, `values: null`, timestamps to the microsecond (sub-microsecond
/// digits dropped), numbers.
pub async fn data_survives_reconnect<B: Backend>(b: &B) {
    let x = uid();
    let (owner, tid, docs) = (
        format!("alice-{x}"),
        format!("t-persist-{x}"),
        vec!["docs".to_string()],
    );
    let created = {
        let stores = b.open().await;
        let mut md = Map::new();
        md.insert("k".into(), json!("v"));
        let mut t = Thread::new(&tid, md);
        t.created_at = chrono::DateTime::parse_from_rfc3339("2031-02-03T04:05:06.123456789Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let created = stores.threads.create(Owner(&owner), t).await.unwrap();
        stores
            .items
            .put(Owner(&owner), &docs, "k", json!({"v": 1.5}))
            .await
            .unwrap();
        created
    };
    let stores = b.open().await;
    let t = stores
        .threads
        .get(Owner(&owner), ThreadId(&tid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.metadata.get("k"), Some(&json!("v")));
    assert_eq!(t.values, Some(Value::Null));
    assert_eq!(
        antler_store::time::format(&t.created_at),
        "2031-02-03T04:05:06.123456+00:00"
    );
    assert_eq!(t.created_at, created.created_at);
    assert_eq!(t.updated_at, created.updated_at);
    let item = stores
        .items
        .get(Owner(&owner), &docs, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.value, json!({"v": 1.5}));
    stores
        .threads
        .delete(Owner(&owner), ThreadId(&tid))
        .await
        .unwrap();
    stores
        .items
        .delete(Owner(&owner), &docs, "k")
        .await
        .unwrap();
}

/// The ops of unit `i` of [`units_batched_or_one_by_one_store_the_same`]: two events and a
/// thread update on thread `i % 3`; unit 4 also claims a run that does not exist.
fn commit_unit(owner: &str, x: &str, i: usize) -> antler_store::WriteUnit {
    use antler_store::WriteOp;
    use antler_store::commit::EventsPut;
    let tid = format!("gc{}-{x}", i % 3);
    let mut unit = antler_store::WriteUnit::new(owner, format!("{owner}:{tid}"));
    let events = (0..2)
        .map(|k| NewRunEvent::new(&tid, "r", "x", "trace", json!([i, k])))
        .collect();
    unit.ops.push(WriteOp::Events(EventsPut::new(events)));
    let mut metadata = Map::new();
    metadata.insert(format!("k{i}"), json!(i));
    unit.ops.push(WriteOp::Thread {
        thread_id: tid,
        update: ThreadUpdate {
            status: Some(if i.is_multiple_of(2) {
                ThreadStatus::Busy
            } else {
                ThreadStatus::Idle
            }),
            metadata: Some(metadata),
            ..ThreadUpdate::default()
        },
    });
    if i == 4 {
        unit.ops.push(WriteOp::ClaimRun {
            run_id: format!("missing-{x}"),
            worker_id: "w".into(),
            lease_until: chrono::Utc::now(),
            started: None,
        });
    }
    unit
}

/// Group commit: units submitted together (one batch, one of them failing) store exactly
/// what the same units store one by one; the failing unit fails alone and leaves nothing.
pub async fn units_batched_or_one_by_one_store_the_same<B: Backend>(b: &B) {
    let stores = b.open().await;
    let x = uid();
    let (batched, single) = (format!("gb-{x}"), format!("gs-{x}"));
    for owner in [&batched, &single] {
        for t in 0..3 {
            let t = Thread::new(format!("gc{t}-{x}"), Map::new());
            stores.threads.create(Owner(owner), t).await.unwrap();
        }
    }
    let commits: Vec<_> = (0..8)
        .map(|i| stores.commits.submit(commit_unit(&batched, &x, i)))
        .collect();
    let together = futures::future::join_all(commits).await;
    let mut one_by_one = Vec::new();
    for i in 0..8 {
        one_by_one.push(stores.commits.submit(commit_unit(&single, &x, i)).await);
    }
    for (i, (a, b)) in together.iter().zip(&one_by_one).enumerate() {
        assert_eq!(a.is_ok(), i != 4, "unit {i}: {a:?}");
        assert_eq!(a.is_ok(), b.is_ok(), "unit {i}: {a:?} vs {b:?}");
    }
    for t in 0..3 {
        let tid = format!("gc{t}-{x}");
        let read = |owner: String| {
            let (stores, tid) = (&stores, &tid);
            async move {
                let q = RunEventQuery::default();
                let events = stores
                    .events
                    .list(Owner(&owner), ThreadId(tid), &q)
                    .await
                    .unwrap();
                let events: Vec<(i64, Value)> =
                    events.into_iter().map(|e| (e.seq, e.content)).collect();
                let t = stores
                    .threads
                    .get(Owner(&owner), ThreadId(tid))
                    .await
                    .unwrap()
                    .unwrap();
                (events, t.status, t.metadata)
            }
        };
        let (a, b) = (read(batched.clone()).await, read(single.clone()).await);
        assert_eq!(a, b, "thread {tid}: batched vs one by one");
        let failed = a.0.iter().any(|(_, c)| c[0] == json!(4));
        assert!(!failed, "the failed unit wrote nothing: {:?}", a.0);
    }
    for owner in [&batched, &single] {
        for t in 0..3 {
            let tid = format!("gc{t}-{x}");
            stores
                .events
                .delete_thread(Owner(owner), ThreadId(&tid))
                .await
                .unwrap();
            stores
                .threads
                .delete(Owner(owner), ThreadId(&tid))
                .await
                .unwrap();
        }
    }
}

/// A unit retried with the seqs its first attempt was given (an answer lost after the commit
/// went through) stores each event once.
pub async fn a_retried_event_append_stores_each_event_once<B: Backend>(b: &B) {
    use antler_store::WriteOp;
    use antler_store::commit::EventsPut;
    let stores = b.open().await;
    let x = uid();
    let (owner, tid) = (format!("o-{x}"), format!("retry-{x}"));
    let events: Vec<NewRunEvent> = (0..3)
        .map(|k| NewRunEvent::new(&tid, "r", "x", "trace", json!(k)))
        .collect();
    let unit = |assigned: Option<Vec<i64>>| {
        let put = EventsPut::new(events.clone());
        *put.assigned.lock() = assigned;
        let mut u = antler_store::WriteUnit::new(&owner, format!("{owner}:{tid}"));
        u.ops.push(WriteOp::Events(put));
        u
    };
    stores.commits.submit(unit(None)).await.unwrap();
    let q = RunEventQuery::default();
    let first = stores
        .events
        .list(Owner(&owner), ThreadId(&tid), &q)
        .await
        .unwrap();
    let seqs: Vec<i64> = first.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    stores
        .commits
        .submit(unit(Some(seqs.clone())))
        .await
        .unwrap();
    let again = stores
        .events
        .list(Owner(&owner), ThreadId(&tid), &q)
        .await
        .unwrap();
    assert_eq!(again.len(), 3, "the retry stored nothing twice: {again:?}");
    let next = stores
        .events
        .append_batch(Owner(&owner), events[..1].to_vec())
        .await;
    assert_eq!(
        next.unwrap()[0].seq,
        4,
        "the counter was not moved by the retry"
    );
    stores
        .events
        .delete_thread(Owner(&owner), ThreadId(&tid))
        .await
        .unwrap();
}

/// A thread copy is one unit: its row, checkpoints and runs commit together, or (a run row
/// that cannot be written) none of them do.
pub async fn a_thread_copy_commits_whole_or_not_at_all<B: Backend>(b: &B) {
    use antler_store::{WriteOp, WriteUnit};
    let stores = b.open().await;
    let x = uid();
    let (owner, src) = (format!("o-{x}"), format!("src-{x}"));
    stores
        .threads
        .create(Owner(&owner), Thread::new(&src, Map::new()))
        .await
        .unwrap();
    let existing = Run::new(format!("r-{x}"), &src, "a", &owner);
    stores.runs.put(&existing).await.unwrap();
    let copy = |new_id: &str, run: Run| {
        let mut u = WriteUnit::new(&owner, format!("{owner}:{src}"));
        u.ops.push(WriteOp::CopyThread {
            thread_id: src.clone(),
            new_id: new_id.to_string(),
        });
        u.ops.push(WriteOp::PutRun(Box::new(run)));
        u
    };
    let bad = format!("bad-{x}");
    let dup = Run::new(existing.run_id.clone(), &bad, "a", &owner);
    let failed = stores.commits.submit(copy(&bad, dup)).await;
    assert!(failed.is_err(), "a duplicate run id fails the copy");
    let none = stores
        .threads
        .get(Owner(&owner), ThreadId(&bad))
        .await
        .unwrap();
    assert!(
        none.is_none(),
        "nothing of a failed copy is stored: {none:?}"
    );
    let good = format!("good-{x}");
    let run = Run::new(format!("r2-{x}"), &good, "a", &owner);
    stores
        .commits
        .submit(copy(&good, run.clone()))
        .await
        .unwrap();
    assert!(
        stores
            .threads
            .get(Owner(&owner), ThreadId(&good))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        stores
            .runs
            .get(Owner(&owner), RunId(&run.run_id))
            .await
            .unwrap()
            .is_some()
    );
    for t in [&src, &good] {
        let _ = stores.threads.delete(Owner(&owner), ThreadId(t)).await;
        let _ = stores
            .runs
            .delete_by_thread(Owner(&owner), ThreadId(t))
            .await;
    }
}

/// A new run's row with its claim (`ClaimRun` with `started`), units sharing one batch: the run whose
/// thread is free is running once its unit commits; the one whose thread runs a run through
/// another pool stays pending, and neither its unit nor the batch fails.
pub async fn a_new_run_starts_with_its_row_when_its_thread_is_free<B: Backend>(b: &B) {
    use antler_store::WriteOp;
    let (a, other) = (b.open().await, b.open().await);
    let owner = format!("o-{}", uid());
    let (busy, free) = (format!("tb-{}", uid()), format!("tf-{}", uid()));
    for t in [&busy, &free] {
        let t = Thread::new(t.clone(), Map::new());
        a.threads.create(Owner(&owner), t).await.unwrap();
    }
    let lease = antler_store::time::now() + chrono::Duration::seconds(60);
    let r0 = format!("r0-{}", uid());
    other
        .runs
        .put(&Run::new(r0.clone(), &busy, "asst", &owner))
        .await
        .unwrap();
    let claimed = other.runs.claim(RunId(&r0), "w-other", lease).await;
    assert_eq!(claimed.unwrap(), Claim::Claimed);
    let unit = |thread: &str| {
        let run = Run::new(format!("r-{}", uid()), thread, "asst", &owner);
        let started = std::sync::Arc::default();
        let mut unit = antler_store::WriteUnit::new(&owner, format!("{owner}:{thread}"));
        unit.ops.push(WriteOp::ClaimRun {
            run_id: run.run_id.clone(),
            worker_id: "w-a".into(),
            lease_until: lease,
            started: Some(std::sync::Arc::clone(&started)),
        });
        unit.ops.insert(0, WriteOp::PutRun(Box::new(run.clone())));
        (unit, started, run.run_id)
    };
    let (u_busy, s_busy, r_busy) = unit(&busy);
    let (u_free, s_free, r_free) = unit(&free);
    let (c_busy, c_free) = (a.commits.submit(u_busy), a.commits.submit(u_free));
    c_busy.await.unwrap();
    c_free.await.unwrap();
    assert!(!*s_busy.lock(), "its thread runs r0 elsewhere");
    assert!(*s_free.lock());
    let row = |r: String| {
        let a = &a;
        let owner = &owner;
        async move { a.runs.get(Owner(owner), RunId(&r)).await.unwrap().unwrap() }
    };
    let waiting = row(r_busy).await;
    assert_eq!(
        (waiting.status, waiting.worker_id),
        (RunStatus::Pending, None)
    );
    let started = row(r_free).await;
    assert_eq!(started.status, RunStatus::Running);
    assert_eq!(started.worker_id.as_deref(), Some("w-a"));
    for t in [&busy, &free] {
        a.runs
            .delete_by_thread(Owner(&owner), ThreadId(t))
            .await
            .unwrap();
        a.threads.delete(Owner(&owner), ThreadId(t)).await.unwrap();
    }
}

/// The latest-checkpoint cache on a database other processes write: a run's claim reads its
/// thread's latest version in its own transaction and vouches for the cached checkpoint only
/// when they agree, so a checkpoint another pool wrote after this pool cached its own is what
/// the run (and every reader here) gets.
pub async fn a_claim_vouches_only_for_the_checkpoint_it_read<B: Backend>(b: &B) {
    use super::checkpoints::{messages_at, msg, push, step};
    use antler_graph::ChannelValue;
    use antler_store::WriteOp;
    let (a, other) = (b.open().await, b.open().await);
    let (owner, tid) = (format!("o-{}", uid()), format!("t-{}", uid()));
    let t = Thread::new(tid.clone(), Map::new());
    a.threads.create(Owner(&owner), t).await.unwrap();
    let key = antler_graph::thread_key(&owner, &tid);
    let l1 = push(&ChannelValue::from_value(json!([]), true), msg(1));
    let c1 = step(&*a.checkpoints, &key, None, &l1, 1, "r1").await;
    assert_eq!(
        messages_at(&*a.checkpoints, &key, None).await,
        json!([msg(1)])
    );
    let l2 = push(&l1, msg(2));
    let c2 = step(&*other.checkpoints, &key, Some(&c1), &l2, 2, "r2").await;
    for (round, want) in [(1, json!([msg(1), msg(2)])), (2, json!([msg(1), msg(2)]))] {
        let run = Run::new(format!("r-{}", uid()), &tid, "asst", &owner);
        let started = std::sync::Arc::default();
        let mut unit = antler_store::WriteUnit::new(&owner, key.clone());
        unit.ops.push(WriteOp::PutRun(Box::new(run.clone())));
        unit.ops.push(WriteOp::ClaimRun {
            run_id: run.run_id.clone(),
            worker_id: "w-a".into(),
            lease_until: antler_store::time::now() + chrono::Duration::seconds(60),
            started: Some(std::sync::Arc::clone(&started)),
        });
        a.commits.submit(unit).await.unwrap();
        assert!(*started.lock(), "round {round}");
        // round 1: a's cache held c1 while the database had c2; round 2: both hold c2
        assert_eq!(
            messages_at(&*a.checkpoints, &key, None).await,
            want,
            "round {round}"
        );
        let latest = a
            .checkpoints
            .get_tuple(&key, "", None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(latest.checkpoint.id, c2, "round {round}");
        let done = RunCompletion {
            status: Some(RunStatus::Success),
            ..Default::default()
        };
        a.runs
            .update_completion(RunId(&run.run_id), &done)
            .await
            .unwrap();
    }
    a.runs
        .delete_by_thread(Owner(&owner), ThreadId(&tid))
        .await
        .unwrap();
    a.threads
        .delete(Owner(&owner), ThreadId(&tid))
        .await
        .unwrap();
}

/// A thread row whose stored metadata its reader rejects (here: a JSON array where an object
/// belongs) is left out of its owner's listings instead of failing them, is still counted, and
/// can still be deleted.
pub async fn a_row_that_does_not_decode_leaves_listings_working<B: Backend>(b: &B) {
    let s = b.open().await;
    let owner = format!("o-{}", uid());
    let (good, bad) = (format!("t-{}", uid()), format!("t-{}", uid()));
    for t in [&good, &bad] {
        let thread = Thread::new(t.clone(), Map::new());
        s.threads.create(Owner(&owner), thread).await.unwrap();
    }
    b.set_raw_thread_metadata(&bad, "[1]").await;
    let all = ThreadSearch {
        limit: 10,
        ..Default::default()
    };
    let found = s.threads.search(Owner(&owner), &all).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|t| t.thread_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![good.as_str()],
        "the good row is listed, the bad one left out"
    );
    assert_eq!(s.threads.count(Owner(&owner), &all).await.unwrap(), 2);
    assert!(s.threads.get(Owner(&owner), ThreadId(&bad)).await.is_err());
    for t in [&good, &bad] {
        s.threads.delete(Owner(&owner), ThreadId(t)).await.unwrap();
    }
    let left = s.threads.count(Owner(&owner), &all).await.unwrap();
    assert_eq!(left, 0, "both deleted");
}

/// A run claimed and completed in one batch (on SQLite owned by the process: one statement
/// for both): on a free thread it ends `success` under the claim's worker, started and
/// finished; on a thread that runs another run, or when it is no longer pending, its unit
/// fails and its row is left as it was.
pub async fn a_run_claimed_and_completed_in_one_batch<B: Backend>(b: &B) {
    claimed_and_completed_in_one_batch(&b.open().await).await;
}

/// [`a_run_claimed_and_completed_in_one_batch`] on `stores`.
pub async fn claimed_and_completed_in_one_batch(stores: &Stores) {
    use antler_store::WriteOp;
    let owner = format!("o-{}", uid());
    let (free, busy) = (format!("tf-{}", uid()), format!("tb-{}", uid()));
    for t in [&free, &busy] {
        let t = Thread::new(t.clone(), Map::new());
        stores.threads.create(Owner(&owner), t).await.unwrap();
    }
    let lease = antler_store::time::now() + chrono::Duration::seconds(60);
    let new_run = |thread: &str| Run::new(format!("r-{}", uid()), thread, "asst", &owner);
    let (running, a, b, done) = (
        new_run(&busy),
        new_run(&free),
        new_run(&busy),
        new_run(&free),
    );
    for r in [&running, &a, &b, &done] {
        stores.runs.put(r).await.unwrap();
    }
    let claimed = stores
        .runs
        .claim(RunId(&running.run_id), "w-0", lease)
        .await;
    assert_eq!(claimed.unwrap(), Claim::Claimed);
    let finished = RunCompletion {
        status: Some(RunStatus::Success),
        ..RunCompletion::default()
    };
    stores
        .runs
        .update_completion(RunId(&done.run_id), &finished)
        .await
        .unwrap();
    let unit = |run: &Run| {
        let mut unit = antler_store::WriteUnit::new(&owner, format!("{owner}:{}", run.thread_id));
        unit.ops.push(WriteOp::ClaimRun {
            run_id: run.run_id.clone(),
            worker_id: "w-a".into(),
            lease_until: lease,
            started: None,
        });
        unit.ops.push(WriteOp::RunCompletion {
            run_id: run.run_id.clone(),
            completion: RunCompletion {
                message_count: 2,
                last_ai_message: Some("echo: hi".into()),
                ..finished.clone()
            },
        });
        unit
    };
    let (ca, cb, cd) = (
        stores.commits.submit(unit(&a)),
        stores.commits.submit(unit(&b)),
        stores.commits.submit(unit(&done)),
    );
    ca.await.unwrap();
    assert!(cb.await.is_err(), "its thread runs another run");
    assert!(cd.await.is_err(), "it is no longer pending");
    let row = |r: &Run| {
        let id = r.run_id.clone();
        let owner = owner.clone();
        async move {
            stores
                .runs
                .get(Owner(&owner), RunId(&id))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let a_row = row(&a).await;
    assert_eq!(a_row.status, RunStatus::Success);
    assert_eq!(a_row.worker_id.as_deref(), Some("w-a"));
    assert_eq!(a_row.message_count, 2);
    assert_eq!(a_row.last_ai_message.as_deref(), Some("echo: hi"));
    let (started, ended) = (a_row.started_at.unwrap(), a_row.finished_at.unwrap());
    assert!(started <= ended, "{started} {ended}");
    let b_row = row(&b).await;
    assert_eq!((b_row.status, b_row.worker_id), (RunStatus::Pending, None));
    let d_row = row(&done).await;
    assert_eq!((d_row.status, d_row.message_count), (RunStatus::Success, 0));
}

/// New runs created together share one insert: every row is stored as given, and a run whose
/// id already exists fails alone (the others of its batch are stored).
pub async fn runs_created_together_are_stored_and_a_duplicate_fails_alone<B: Backend>(b: &B) {
    use antler_store::WriteOp;
    let stores = b.open().await;
    let owner = format!("o-{}", uid());
    let tid = format!("t-{}", uid());
    let t = Thread::new(tid.clone(), Map::new());
    stores.threads.create(Owner(&owner), t).await.unwrap();
    let existing = Run::new(format!("r-{}", uid()), &tid, "asst", &owner);
    stores.runs.put(&existing).await.unwrap();
    let mut runs: Vec<Run> = (0..5)
        .map(|_| Run::new(format!("r-{}", uid()), &tid, "asst", &owner))
        .collect();
    runs[2] = existing.clone();
    let commits: Vec<_> = runs
        .iter()
        .map(|r| {
            let mut unit = antler_store::WriteUnit::new(&owner, format!("{owner}:{tid}"));
            unit.ops.push(WriteOp::PutRun(Box::new(r.clone())));
            stores.commits.submit(unit)
        })
        .collect();
    let results = futures::future::join_all(commits).await;
    for (i, (r, res)) in runs.iter().zip(&results).enumerate() {
        assert_eq!(res.is_err(), i == 2, "run {i}: {res:?}");
        let stored = stores
            .runs
            .get(Owner(&owner), RunId(&r.run_id))
            .await
            .unwrap();
        assert_eq!(stored.map(|s| s.run_id), Some(r.run_id.clone()));
    }
    let listed = stores
        .runs
        .list_by_thread(
            Owner(&owner),
            ThreadId(&tid),
            &antler_store::RunListQuery::default(),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 5, "the existing run once, four new ones");
}
