//! Several runtimes over one database and one bridge, as replicas of a deployment are:
//! cross-replica cancel (durable request read by the owner's control loop), the durable run
//! queue under a capacity limit, and the replica registry's startup refusal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_bridge::{MemoryBridge, StreamBridge};
use antler_store::{Owner, RunStatus, Stores, Thread};
use serde_json::{Map, Value, json};

use crate::{
    CancelAction, Graphs, ReplicaBackends, RunCreate, Runtime, RuntimeConfig, RuntimeError,
};

fn graphs() -> Graphs {
    Graphs::new(antler_graph::examples::all())
}

fn config(max: Option<usize>) -> RuntimeConfig {
    RuntimeConfig {
        exclusive: false,
        max_concurrent_runs: max,
        poll_interval: Duration::from_millis(50),
        lease_ttl: Duration::from_secs(30),
        ..RuntimeConfig::default()
    }
}

/// `n` replicas sharing `stores` and one bridge (the shared-bridge deployment).
async fn replicas(stores: &Stores, maxes: &[Option<usize>]) -> Vec<Arc<Runtime>> {
    let bridge: Arc<dyn StreamBridge> = match MemoryBridge::new(Default::default()) {
        Ok(b) => Arc::new(b),
        Err(e) => panic!("memory bridge: {e}"),
    };
    let mut out = Vec::new();
    for max in maxes {
        let rt = Runtime::new(stores.clone(), graphs(), bridge.clone(), config(*max));
        rt.register_system_assistants().await.expect("assistants");
        rt.start_durability().await;
        out.push(rt);
    }
    out
}

async fn thread(rt: &Runtime) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    rt.stores()
        .threads
        .create(Owner("u"), Thread::new(&id, Map::new()))
        .await
        .expect("thread");
    id
}

fn request(graph: &str, delay: f64, text: &str) -> RunCreate {
    RunCreate::parse(&json!({
        "assistant_id": graph,
        "input": {"messages": [{"type": "human", "content": text}]},
        "config": {"configurable": {"delay": delay}},
    }))
    .expect("request")
}

async fn wait_status(rt: &Runtime, run_id: &str, want: RunStatus, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let run = rt.get_run_any("u", run_id).await.expect("run");
        if run.status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} is {:?}, expected {want:?}",
            run.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn contents(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["content"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_another_replica_stops_the_run_within_a_poll() {
    let stores = Stores::memory();
    let rs = replicas(&stores, &[None, None]).await;
    let (a, b) = (&rs[0], &rs[1]);
    let tid = thread(a).await;
    let created = a
        .create_run("u", Some(&tid), request("slow", 5.0, "go"))
        .await
        .expect("create");
    let run_id = created.run.run_id.clone();
    wait_status(a, &run_id, RunStatus::Running, 10).await;
    assert!(!b.is_live(&run_id));
    let started = Instant::now();
    b.cancel_run("u", &tid, &run_id, CancelAction::Interrupt, true)
        .await
        .expect("cancel from b");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the owner saw the request within its poll interval: {:?}",
        started.elapsed()
    );
    let run = b.get_run_any("u", &run_id).await.expect("run");
    assert_eq!(
        run.status,
        RunStatus::Interrupted,
        "wait=true returns once it stopped"
    );
    // unknown / finished runs are 404 on the remote path too
    let again = b
        .cancel_run("u", &tid, &run_id, CancelAction::Interrupt, false)
        .await;
    assert!(matches!(again, Err(RuntimeError::NotFound(_))), "{again:?}");
    for rt in &rs {
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_from_another_replica_removes_the_run() {
    let stores = Stores::memory();
    let rs = replicas(&stores, &[None, None]).await;
    let (a, b) = (&rs[0], &rs[1]);
    let tid = thread(a).await;
    let run_id = a
        .create_run("u", Some(&tid), request("slow", 5.0, "go"))
        .await
        .expect("create")
        .run
        .run_id;
    wait_status(a, &run_id, RunStatus::Running, 10).await;
    b.cancel_run("u", &tid, &run_id, CancelAction::Rollback, true)
        .await
        .expect("rollback from b");
    assert!(matches!(
        b.get_run_any("u", &run_id).await,
        Err(RuntimeError::NotFound(_))
    ));
    for rt in &rs {
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_beyond_capacity_are_queued_and_executed_by_any_replica() {
    let stores = Stores::memory();
    // a executes one run at a time; b has room
    let rs = replicas(&stores, &[Some(1), Some(8)]).await;
    let (a, b) = (&rs[0], &rs[1]);
    let mut runs = Vec::new();
    for i in 0..6 {
        let tid = thread(a).await;
        let text = format!("m{i}");
        let created = a
            .create_run("u", Some(&tid), request("slow", 0.2, &text))
            .await
            .expect("create");
        runs.push((tid, created.run.run_id, text));
    }
    // the first one runs on a at once; the others were queued for whoever has room
    let first = a.get_run_any("u", &runs[0].1).await.expect("first");
    assert_eq!(first.worker_id.as_deref(), Some(a.worker_id()));
    for (tid, run_id, text) in &runs {
        let out = b.wait_run("u", run_id).await.expect("wait");
        assert_eq!(
            contents(&out.to_body()),
            [text.as_str(), "step 1", "step 2", "step 3"],
            "executed exactly once ({tid})"
        );
        let run = b.get_run_any("u", run_id).await.expect("run");
        assert_eq!(run.status, RunStatus::Success);
    }
    let by_b = {
        let mut n = 0;
        for (_, run_id, _) in &runs {
            let run = a.get_run_any("u", run_id).await.expect("run");
            n += usize::from(run.worker_id.as_deref() == Some(b.worker_id()));
        }
        n
    };
    assert!(by_b >= 1, "the replica with room executed queued runs");
    assert_eq!(a.stores().runs.count_pending().await.expect("depth"), 0);
    for rt in &rs {
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_runs_of_a_thread_keep_their_order_and_cancel_directly() {
    let stores = Stores::memory();
    let rs = replicas(&stores, &[Some(1)]).await;
    let a = &rs[0];
    let busy = thread(a).await;
    let tid = thread(a).await;
    // capacity taken by a slow run: the next three runs of `tid` are queued
    let blocker = a
        .create_run("u", Some(&busy), request("slow", 0.3, "hold"))
        .await
        .expect("blocker");
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let r = a
            .create_run("u", Some(&tid), request("echo", 0.0, text))
            .await
            .expect("create");
        assert!(r.run.worker_id.is_none(), "queued without an owner");
        ids.push(r.run.run_id);
    }
    // a queued run is cancelled right away (compare-and-set), no owner involved
    a.cancel_run("u", &tid, &ids[1], CancelAction::Interrupt, true)
        .await
        .expect("cancel queued");
    assert_eq!(
        a.get_run_any("u", &ids[1]).await.expect("run").status,
        RunStatus::Interrupted
    );
    a.wait_run("u", &blocker.run.run_id).await.expect("blocker");
    let out = a.wait_run("u", &ids[2]).await.expect("last");
    assert_eq!(
        contents(&out.to_body()),
        ["one", "echo: one", "three", "echo: three"],
        "creation order, the cancelled run skipped"
    );
    let status = a.replica_status().await.expect("status");
    assert_eq!(status.queue_depth, 0);
    assert_eq!(status.max_concurrent_runs, Some(1));
    for rt in &rs {
        rt.shutdown().await;
    }
}

fn backends(shared: bool) -> ReplicaBackends {
    ReplicaBackends {
        database: "postgres".into(),
        bridge: if shared { "redis" } else { "memory" }.into(),
        bridge_shared: shared,
    }
}

#[tokio::test]
async fn a_second_replica_is_refused_unless_the_deployment_can_be_shared() {
    let bridge: Arc<dyn StreamBridge> =
        Arc::new(MemoryBridge::new(Default::default()).expect("bridge"));
    let stores = Stores::memory();
    let mk = |exclusive: bool| {
        let mut cfg = config(None);
        cfg.exclusive = exclusive;
        Runtime::new(stores.clone(), graphs(), bridge.clone(), cfg)
    };
    let a = mk(false);
    a.register_replica(backends(true)).await.expect("first");
    // shared database + shared bridge: fine
    let b = mk(false);
    b.register_replica(backends(true))
        .await
        .expect("second, shared");
    // shared database + in-memory bridge: refused, with the reason
    let c = mk(false);
    match c.register_replica(backends(false)).await {
        Err(RuntimeError::Conflict(msg)) => {
            assert!(msg.contains("stream bridge"), "{msg}");
            assert!(
                msg.contains(a.worker_id()) || msg.contains(b.worker_id()),
                "{msg}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // a database only one process may use (SQLite): refused whatever the bridge
    let d = mk(true);
    match d.register_replica(backends(true)).await {
        Err(RuntimeError::Conflict(msg)) => assert!(msg.contains("cannot be shared"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let status = a.replica_status().await.expect("status");
    assert_eq!(status.replica_id, a.worker_id());
    assert_eq!(status.database.as_deref(), Some("postgres"));
    assert_eq!(status.bridge.as_deref(), Some("redis"));
    let ids: Vec<&str> = status
        .replicas
        .iter()
        .map(|r| r.replica_id.as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    // a clean shutdown leaves the registry: then a memory-bridge server may start
    a.shutdown().await;
    b.shutdown().await;
    let e = mk(false);
    e.register_replica(backends(false))
        .await
        .expect("alone again");
}

#[tokio::test]
async fn a_dead_process_on_this_host_does_not_block_startup() {
    let bridge: Arc<dyn StreamBridge> =
        Arc::new(MemoryBridge::new(Default::default()).expect("bridge"));
    let stores = Stores::memory();
    let now = antler_store::time::now();
    // a fresh heartbeat, but its process is gone (killed with SIGKILL)
    stores
        .runs
        .heartbeat_replica(&antler_store::ReplicaInfo {
            replica_id: "dead".into(),
            started_at: now,
            heartbeat_at: now,
            host: super::durability::host_name_for_tests(),
            pid: i64::from(i32::MAX),
            database: "sqlite".into(),
            bridge: "memory".into(),
        })
        .await
        .expect("register dead");
    let mut cfg = config(None);
    cfg.exclusive = true;
    let rt = Runtime::new(stores.clone(), graphs(), bridge, cfg);
    rt.register_replica(ReplicaBackends {
        database: "sqlite".into(),
        bridge: "memory".into(),
        bridge_shared: false,
    })
    .await
    .expect("the dead process is ignored");
}

fn with(mut req: RunCreate, body: Value) -> RunCreate {
    let extra = RunCreate::parse(&body).expect("request");
    req.multitask_strategy = extra.multitask_strategy.or(req.multitask_strategy);
    req.after_seconds = extra.after_seconds.max(req.after_seconds);
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multitask_strategies_see_another_replicas_run() {
    let stores = Stores::memory();
    let rs = replicas(&stores, &[None, None]).await;
    let (a, b) = (&rs[0], &rs[1]);
    let tid = thread(a).await;
    let first = a
        .create_run("u", Some(&tid), request("slow", 5.0, "first"))
        .await
        .expect("create");
    let first_id = first.run.run_id.clone();
    wait_status(a, &first_id, RunStatus::Running, 10).await;

    // reject on b: a's run is active
    let rejected = b
        .create_run(
            "u",
            Some(&tid),
            with(
                request("slow", 0.0, "no"),
                json!({"assistant_id": "slow", "multitask_strategy": "reject"}),
            ),
        )
        .await;
    assert!(
        matches!(rejected, Err(RuntimeError::Conflict(_))),
        "{rejected:?}"
    );
    let runs = b
        .list_runs("u", &tid, &Default::default())
        .await
        .expect("list");
    assert_eq!(runs.len(), 1, "the rejected run left nothing behind");

    // interrupt on b: a's run is interrupted, b's runs after it
    let second = b
        .create_run(
            "u",
            Some(&tid),
            with(
                request("slow", 0.0, "second"),
                json!({"assistant_id": "slow", "multitask_strategy": "interrupt"}),
            ),
        )
        .await
        .expect("interrupt");
    wait_status(a, &first_id, RunStatus::Interrupted, 10).await;
    let out = b
        .wait_run("u", &second.run.run_id)
        .await
        .expect("second runs");
    assert!(
        contents(&out.to_body()).contains(&"second".to_string()),
        "{:?}",
        out.to_body()
    );
    assert_eq!(
        a.get_run_any("u", &second.run.run_id)
            .await
            .expect("run")
            .status,
        RunStatus::Success
    );
    for rt in &rs {
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_by_status_reaches_other_replicas_and_the_queue() {
    let stores = Stores::memory();
    // a runs one run at a time, so its second run is queued
    let rs = replicas(&stores, &[Some(1), Some(0)]).await;
    let (a, b) = (&rs[0], &rs[1]);
    let (t1, t2) = (thread(a).await, thread(a).await);
    let running = a
        .create_run("u", Some(&t1), request("slow", 5.0, "r"))
        .await
        .expect("running");
    let queued = a
        .create_run("u", Some(&t2), request("slow", 5.0, "q"))
        .await
        .expect("queued");
    assert!(queued.run.worker_id.is_none());
    wait_status(a, &running.run.run_id, RunStatus::Running, 10).await;
    // b executes nothing: everything is elsewhere or queued
    let n = b
        .cancel_many("u", None, None, Some("all"), CancelAction::Interrupt)
        .await
        .expect("cancel all");
    assert_eq!(n, 2);
    wait_status(a, &running.run.run_id, RunStatus::Interrupted, 10).await;
    wait_status(a, &queued.run.run_id, RunStatus::Interrupted, 10).await;
    // nothing is left to cancel
    assert_eq!(
        b.cancel_many("u", None, None, Some("all"), CancelAction::Interrupt)
            .await
            .expect("again"),
        0
    );
    for rt in &rs {
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_keeps_its_after_seconds() {
    let stores = Stores::memory();
    // a has no room at all: its runs are queued and b claims them
    let rs = replicas(&stores, &[Some(0), None]).await;
    let (a, b) = (&rs[0], &rs[1]);
    let tid = thread(a).await;
    let created_at = Instant::now();
    let created = a
        .create_run(
            "u",
            Some(&tid),
            with(
                request("echo", 0.0, "later"),
                json!({"assistant_id": "echo", "after_seconds": 1.0}),
            ),
        )
        .await
        .expect("create");
    assert!(created.run.worker_id.is_none(), "queued");
    // not claimed before it is due: it stays pending, holding nobody's capacity
    tokio::time::sleep(Duration::from_millis(400)).await;
    let run = b.get_run_any("u", &created.run.run_id).await.expect("run");
    assert_eq!(
        run.status,
        RunStatus::Pending,
        "claimed before its after_seconds"
    );
    assert!(run.worker_id.is_none());
    let out = b.wait_run("u", &created.run.run_id).await.expect("wait");
    assert_eq!(contents(&out.to_body()), ["later", "echo: later"]);
    assert!(
        created_at.elapsed() >= Duration::from_millis(950),
        "the run did not start before its after_seconds: {:?}",
        created_at.elapsed()
    );
    let run = b.get_run_any("u", &created.run.run_id).await.expect("run");
    assert_eq!(run.worker_id.as_deref(), Some(b.worker_id()));
    for rt in &rs {
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_starts_on_an_exclusive_database_never_both_stay() {
    for _ in 0..20 {
        let bridge: Arc<dyn StreamBridge> =
            Arc::new(MemoryBridge::new(Default::default()).expect("bridge"));
        let stores = Stores::memory();
        let mk = || {
            let mut cfg = config(None);
            cfg.exclusive = true;
            Runtime::new(stores.clone(), graphs(), bridge.clone(), cfg)
        };
        let (a, b) = (mk(), mk());
        let sqlite = || ReplicaBackends {
            database: "sqlite".into(),
            bridge: "memory".into(),
            bridge_shared: false,
        };
        // on two worker threads at once, so both may find the registry empty
        let (ta, tb) = (
            tokio::spawn(async move { a.register_replica(sqlite()).await }),
            tokio::spawn(async move { b.register_replica(sqlite()).await }),
        );
        let (ra, rb) = (ta.await.expect("a"), tb.await.expect("b"));
        let started = usize::from(ra.is_ok()) + usize::from(rb.is_ok());
        assert!(started <= 1, "never both: {ra:?} / {rb:?}");
        let live = stores
            .runs
            .list_replicas(antler_store::time::now() - chrono::Duration::seconds(30))
            .await
            .expect("registry");
        assert_eq!(live.len(), started, "a refused server left the registry");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_left_queued_by_an_earlier_process_all_run_after_a_restart() {
    let stores = Stores::memory();
    let rs = replicas(&stores, &[Some(1)]).await;
    let a = &rs[0];
    let busy = thread(a).await;
    let tid = thread(a).await;
    a.create_run("u", Some(&busy), request("slow", 5.0, "hold"))
        .await
        .expect("blocker");
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        let r = a
            .create_run("u", Some(&tid), request("echo", 0.0, text))
            .await
            .expect("queued");
        assert!(r.run.worker_id.is_none());
        ids.push(r.run.run_id);
    }
    a.shutdown().await;
    // the same database, now one process with unbounded capacity: the three queued runs of one
    // thread run one after the other
    let bridge: Arc<dyn StreamBridge> =
        Arc::new(MemoryBridge::new(Default::default()).expect("bridge"));
    let mut cfg = config(None);
    cfg.exclusive = true;
    let b = Runtime::new(stores.clone(), graphs(), bridge, cfg);
    b.register_system_assistants().await.expect("assistants");
    b.start_durability().await;
    for id in &ids {
        wait_status(&b, id, RunStatus::Success, 15).await;
    }
    let out = b.wait_run("u", &ids[2]).await.expect("last");
    assert_eq!(
        contents(&out.to_body()),
        [
            "one",
            "echo: one",
            "two",
            "echo: two",
            "three",
            "echo: three"
        ]
    );
    b.shutdown().await;
}

/// Shutdown's grace runs out while a run is mid-way: the run is released, not ended, and
/// another replica adopts it and finishes it from its last checkpoint, each step once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_still_going_at_shutdown_is_released_and_finished_by_another_replica() {
    let stores = Stores::memory();
    let bridge: Arc<dyn StreamBridge> =
        Arc::new(MemoryBridge::new(Default::default()).expect("bridge"));
    let short = |grace: f64| RuntimeConfig {
        lease_ttl: Duration::from_secs(3),
        shutdown_grace: Duration::from_secs_f64(grace),
        ..config(None)
    };
    let mut rs = Vec::new();
    for grace in [0.2, 5.0] {
        let rt = Runtime::new(stores.clone(), graphs(), bridge.clone(), short(grace));
        rt.register_system_assistants().await.expect("assistants");
        rt.start_durability().await;
        rs.push(rt);
    }
    let (a, b) = (&rs[0], &rs[1]);
    let tid = thread(a).await;
    let created = a
        .create_run("u", Some(&tid), request("slow", 0.6, "go"))
        .await
        .expect("create");
    let run_id = created.run.run_id.clone();
    wait_status(a, &run_id, RunStatus::Running, 10).await;
    tokio::time::sleep(Duration::from_millis(800)).await; // step 1 committed, step 2 going
    a.shutdown().await;
    assert_eq!(a.live_count(), 0);
    let run = b.get_run_any("u", &run_id).await.expect("run");
    assert!(
        run.status.is_active(),
        "released, not ended: {:?}",
        run.status
    );
    wait_status(b, &run_id, RunStatus::Success, 20).await;
    let state = b
        .stores()
        .checkpointer("u")
        .get_tuple(&tid, "", None)
        .await
        .expect("state");
    let values = state
        .map(|t| t.checkpoint.channel_values)
        .unwrap_or_default();
    let texts: Vec<Value> = values
        .get("messages")
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(
        texts,
        vec![
            json!("go"),
            json!("step 1"),
            json!("step 2"),
            json!("step 3")
        ]
    );
    b.shutdown().await;
}
