//! SQLite store benchmarks: per-step checkpoint write cost at 10 and 1,000 messages (delta
//! writes via `put_shared`, and full writes via `put` for comparison), and the store writes
//! of one run's lifecycle.
//!
//! `cargo bench -p antler-store-sql --bench sqlite`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_graph::{ChannelValue, Checkpoint, Checkpointer};
use antler_store::{
    NewRunEvent, Owner, Run, RunCompletion, RunId, RunStatus, Stores, Thread, ThreadId,
    ThreadStatus, ThreadUpdate,
};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};

fn msg(i: usize) -> Value {
    json!({
        "type": "ai", "content": format!("this is message number {i} of a long conversation"),
        "id": format!("msg-{i}"), "additional_kwargs": {}, "response_metadata": {}, "tool_calls": [],
        "invalid_tool_calls": [], "usage_metadata": null, "name": null
    })
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

struct Chain {
    cp: Arc<dyn Checkpointer>,
    thread: String,
    list: ChannelValue,
    parent: Option<String>,
    version: u64,
}

impl Chain {
    async fn step(&mut self, shared: bool) {
        self.version += 1;
        self.list = push(&self.list, msg(self.version as usize));
        let mut c = Checkpoint {
            id: antler_graph::new_checkpoint_id(self.version as i64),
            ts: antler_graph::now_ts(),
            ..Default::default()
        };
        c.channel_versions.insert("messages".into(), self.version);
        c.channel_versions.insert("title".into(), 1);
        let mut nv = BTreeMap::new();
        nv.insert("messages".to_string(), self.version);
        let mut meta = Map::new();
        meta.insert("source".into(), json!("loop"));
        meta.insert("step".into(), json!(self.version));
        meta.insert("run_id".into(), json!("bench-run"));
        if shared {
            let mut values = BTreeMap::new();
            values.insert("messages".to_string(), self.list.clone());
            self.cp
                .put_shared(
                    &self.thread,
                    "",
                    self.parent.as_deref(),
                    &c,
                    &values,
                    &meta,
                    &nv,
                )
                .await
                .unwrap();
        } else {
            c.channel_values
                .insert("messages".into(), self.list.to_value());
            self.cp
                .put(&self.thread, "", self.parent.as_deref(), &c, &meta, &nv)
                .await
                .unwrap();
        }
        self.parent = Some(c.id);
    }
}

async fn chain(stores: &Stores, thread: &str, n: usize) -> Chain {
    let list = ChannelValue::from_value(Value::Array((0..n).map(msg).collect()), true);
    let mut ch = Chain {
        cp: stores.checkpoints.clone(),
        thread: thread.into(),
        list,
        parent: None,
        version: n as u64,
    };
    ch.step(true).await;
    ch
}

/// Steps measured on one chain before it is rebuilt, so the thread length stays near `n`.
const STEPS_PER_CHAIN: u64 = 64;

fn checkpoints(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stores = rt
        .block_on(antler_store_sql::open_sqlite(dir.path()))
        .unwrap();
    let mut group = c.benchmark_group("checkpoint_step");
    group.measurement_time(Duration::from_secs(5));
    let mut chains = 0u64;
    for n in [10usize, 1000] {
        for (label, shared) in [("delta", true), ("full", false)] {
            group.bench_function(format!("{label}/{n}_msgs"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    rt.block_on(async {
                        let mut done = 0;
                        while done < iters {
                            chains += 1;
                            let mut ch = chain(&stores, &format!("{label}-{n}-{chains}"), n).await;
                            for _ in 0..STEPS_PER_CHAIN.min(iters - done) {
                                let start = Instant::now();
                                ch.step(shared).await;
                                total += start.elapsed();
                                done += 1;
                            }
                        }
                    });
                    total
                })
            });
        }
    }
    group.finish();
}

fn single_writes(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stores = rt
        .block_on(antler_store_sql::open_sqlite(dir.path()))
        .unwrap();
    let run = Run::new("r-single", "t-single", "a", "bench");
    rt.block_on(stores.runs.put(&run)).unwrap();
    let mut group = c.benchmark_group("single_write");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("runs.update_status", |b| {
        b.to_async(&rt).iter(|| async {
            stores
                .runs
                .update_status(RunId("r-single"), RunStatus::Running, None)
                .await
                .unwrap();
        })
    });
    group.bench_function("runs.get", |b| {
        b.to_async(&rt).iter(|| async {
            stores
                .runs
                .get(Owner("bench"), RunId("r-single"))
                .await
                .unwrap();
        })
    });
    group.finish();
}

fn run_lifecycle(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stores = rt
        .block_on(antler_store_sql::open_sqlite(dir.path()))
        .unwrap();
    let mut group = c.benchmark_group("run_lifecycle");
    group.measurement_time(Duration::from_secs(5));
    let mut i = 0u64;
    group.bench_function("create_thread_run_events_complete", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    i += 1;
                    let tid = format!("t{i}");
                    stores
                        .threads
                        .create(Owner("bench"), Thread::new(&tid, Map::new()))
                        .await
                        .unwrap();
                    let run = Run::new(format!("r{i}"), &tid, "a", "bench");
                    stores.runs.put(&run).await.unwrap();
                    stores
                        .runs
                        .transition(
                            RunId(&run.run_id),
                            &[RunStatus::Pending],
                            RunStatus::Running,
                            None,
                        )
                        .await
                        .unwrap();
                    let busy = ThreadUpdate {
                        status: Some(ThreadStatus::Busy),
                        ..Default::default()
                    };
                    stores
                        .threads
                        .update(Owner("bench"), ThreadId(&tid), busy)
                        .await
                        .unwrap();
                    let events = (0..5)
                        .map(|j| NewRunEvent::new(&tid, &run.run_id, "x", "trace", json!(j)))
                        .collect();
                    stores
                        .events
                        .append_batch(Owner("bench"), events)
                        .await
                        .unwrap();
                    let done = RunCompletion {
                        status: Some(RunStatus::Success),
                        total_tokens: 3,
                        ..Default::default()
                    };
                    stores
                        .runs
                        .update_completion(RunId(&run.run_id), &done)
                        .await
                        .unwrap();
                    let idle = ThreadUpdate {
                        status: Some(ThreadStatus::Idle),
                        values: Some(Some(json!({"messages": [msg(1)]}))),
                        ..Default::default()
                    };
                    stores
                        .threads
                        .update(Owner("bench"), ThreadId(&tid), idle)
                        .await
                        .unwrap();
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, checkpoints, single_writes, run_lifecycle);
criterion_main!(benches);
