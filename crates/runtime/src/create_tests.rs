//! Run creation is cancel-safe: a create whose caller goes away at any await (a client that
//! disconnects mid-request) leaves the thread's queue as it found it or with the run fully
//! created, never with a run that blocks the thread's later runs.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use antler_bridge::{MemoryBridge, StreamBridge};
use antler_store::{Owner, RunListQuery, Thread, ThreadId};
use serde_json::{Map, json};

use crate::{Graphs, RunCreate, RunResult, Runtime, RuntimeConfig};

/// A runtime on SQLite in `dir` (its awaits really pend, unlike the memory store's).
async fn runtime(dir: &std::path::Path, exclusive: bool) -> Arc<Runtime> {
    runtime_with(dir, exclusive, |_| {}).await
}

/// [`runtime`] with its config adjusted by `configure`.
async fn runtime_with(
    dir: &std::path::Path,
    exclusive: bool,
    configure: impl FnOnce(&mut RuntimeConfig),
) -> Arc<Runtime> {
    let bridge: Arc<dyn StreamBridge> =
        Arc::new(MemoryBridge::new(Default::default()).expect("memory bridge"));
    let mut config = RuntimeConfig {
        exclusive,
        poll_interval: Duration::from_millis(50),
        ..RuntimeConfig::default()
    };
    configure(&mut config);
    let graphs = Graphs::new(antler_graph::examples::all());
    let stores = if exclusive {
        antler_store_sql::sqlite::open_sqlite_owned(dir).await
    } else {
        antler_store_sql::open_sqlite(dir).await
    };
    let rt = Runtime::new(stores.expect("sqlite"), graphs, bridge, config);
    rt.register_system_assistants().await.expect("assistants");
    rt.start_durability().await;
    rt
}

fn echo(text: &str) -> RunCreate {
    RunCreate::parse(&json!({
        "assistant_id": "echo",
        "input": {"messages": [{"type": "human", "content": text}]},
    }))
    .expect("request")
}

/// Polls `f` `polls` times (yielding to the runtime between polls so that its awaits make
/// progress), then drops it as a disconnecting client's request is dropped. True when it
/// finished within those polls.
async fn abandon_after<F: Future>(f: F, polls: usize) -> bool {
    let mut f = pin!(f);
    for _ in 0..polls {
        let done = std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
            Poll::Ready(_) => Poll::Ready(true),
            Poll::Pending => Poll::Ready(false),
        })
        .await;
        if done {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

/// Waits until no run of the thread is active (pending or running).
async fn settled(rt: &Runtime, tid: &str, polls: usize) {
    let query = RunListQuery {
        limit: 1000,
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let runs = rt
            .stores()
            .runs
            .list_by_thread(Owner("u"), ThreadId(tid), &query)
            .await;
        let runs = runs.expect("runs");
        let active: Vec<_> = runs.iter().filter(|r| r.status.is_active()).collect();
        if active.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "create dropped after {polls} polls: runs left active {active:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Abandons a create after every possible number of polls, each time with a run of the
/// thread still going and a second create racing it; the thread's next run must then start
/// and finish.
async fn abandoned_creates_never_block_the_thread(exclusive: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path(), exclusive).await;
    let tid = uuid::Uuid::now_v7().to_string();
    rt.stores()
        .threads
        .create(Owner("u"), Thread::new(&tid, Map::new()))
        .await
        .expect("thread");
    for polls in 0..40 {
        let busy = rt
            .create_run("u", Some(&tid), echo("before"))
            .await
            .expect("create before");
        let racing = rt.clone();
        let racing_tid = tid.clone();
        let race = tokio::spawn(async move {
            racing
                .create_run("u", Some(&racing_tid), echo("race"))
                .await
        });
        let finished = abandon_after(rt.create_run("u", Some(&tid), echo("dropped")), polls).await;
        let raced = race.await.expect("race task").expect("create race");
        let after = rt
            .create_run("u", Some(&tid), echo("after"))
            .await
            .expect("create after");
        for run in [&busy.run, &raced.run, &after.run] {
            let waited =
                tokio::time::timeout(Duration::from_secs(10), rt.wait_run("u", &run.run_id)).await;
            let Ok(result) = waited else {
                let q = RunListQuery {
                    limit: 100,
                    ..Default::default()
                };
                let runs = rt
                    .stores()
                    .runs
                    .list_by_thread(Owner("u"), ThreadId(&tid), &q)
                    .await
                    .expect("runs");
                let rows: Vec<_> = runs
                    .iter()
                    .map(|r| {
                        (
                            r.run_id.clone(),
                            r.status,
                            r.metadata.get("title").cloned(),
                            r.kwargs["input"]["messages"][0]["content"].clone(),
                            r.started_at,
                        )
                    })
                    .collect();
                panic!(
                    "run {} never finished (create dropped after {polls} polls, finished: {finished}); live {:?}; rows {rows:#?}",
                    run.run_id,
                    rt.is_live(&run.run_id)
                );
            };
            let result = result.expect("wait");
            assert!(matches!(result, RunResult::Values(_)), "{result:?}");
        }
        // the abandoned create went on without its caller: its run (if it got one) finishes too
        settled(&rt, &tid, polls).await;
        if finished {
            break;
        }
    }
    let thread = rt
        .stores()
        .threads
        .get(Owner("u"), ThreadId(&tid))
        .await
        .expect("get")
        .expect("thread");
    assert_eq!(thread.status, antler_store::ThreadStatus::Idle);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_creates_never_block_the_thread_alone_on_the_database() {
    abandoned_creates_never_block_the_thread(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_creates_never_block_the_thread_on_a_shared_database() {
    abandoned_creates_never_block_the_thread(false).await;
}

/// A stateless run can end, and leave nothing behind, before its creator starts waiting (the
/// `POST /runs/wait` handler waits right after the create returns): the create's `done`
/// watch still answers with the run's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stateless_run_gone_before_its_wait_still_answers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path(), true).await;
    let created = rt
        .create_run("u", None, echo("gone"))
        .await
        .expect("create");
    let run_id = created.run.run_id.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // once the run has ended, its temporary thread and run row are gone
    while rt.wait_run("u", &run_id).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never went away"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = rt.wait_created("u", &run_id, created.done).await;
    let Ok(RunResult::Values(values)) = result else {
        panic!("no values: {result:?}");
    };
    let messages = values.to_value()["messages"].clone();
    assert_eq!(messages[1]["content"], json!("echo: gone"), "{messages}");
}

/// `max_pending_runs`: with that many runs of this process waiting to start, one more create
/// is refused (`Overloaded`, a 429 at the edge) and writes no row; once they have run, creates
/// are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_past_max_pending_runs_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime_with(dir.path(), true, |c| c.max_pending_runs = Some(2)).await;
    let tid = uuid::Uuid::now_v7().to_string();
    rt.stores()
        .threads
        .create(Owner("u"), Thread::new(&tid, Map::new()))
        .await
        .expect("thread");
    let slow = || {
        RunCreate::parse(
            &json!({"assistant_id": "slow", "input": {"messages": [{"type": "human", "content": "go"}]}, "config": {"configurable": {"delay": 0.5}}}),
        )
        .expect("request")
    };
    let first = rt.create_run("u", Some(&tid), slow()).await.expect("first");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rt
        .counters()
        .pending
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiting = [
        rt.create_run("u", Some(&tid), slow())
            .await
            .expect("second"),
        rt.create_run("u", Some(&tid), slow()).await.expect("third"),
    ];
    let refused = rt.create_run("u", Some(&tid), slow()).await;
    assert!(
        matches!(&refused, Err(crate::RuntimeError::Overloaded(d)) if d.contains("max_pending_runs = 2")),
        "{:?}",
        refused.map(|c| c.run.run_id)
    );
    let query = RunListQuery {
        limit: 100,
        ..Default::default()
    };
    let rows = rt
        .stores()
        .runs
        .list_by_thread(Owner("u"), ThreadId(&tid), &query)
        .await;
    assert_eq!(rows.expect("runs").len(), 3, "the refused run left no row");
    for created in std::iter::once(&first).chain(&waiting) {
        let waited = tokio::time::timeout(
            Duration::from_secs(20),
            rt.wait_run("u", &created.run.run_id),
        );
        let result = waited.await.expect("finished in time").expect("wait");
        assert!(matches!(result, RunResult::Values(_)), "{result:?}");
    }
    settled(&rt, &tid, 0).await;
    rt.create_run("u", Some(&tid), echo("again"))
        .await
        .expect("accepted again");
    rt.shutdown().await;
}
