//! The store benchmarks shared by the PostgreSQL and MySQL benches: per-step checkpoint write
//! cost at 10 and 1,000 messages (delta writes via `put_shared`, full writes via `put`),
//! single-row writes, and the store writes of one run's lifecycle. Every row written belongs to
//! a fresh owner / thread and is deleted afterwards (the databases are shared).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_graph::{ChannelValue, Checkpoint, Checkpointer};
use antler_store::{
    NewRunEvent, Owner, Run, RunCompletion, RunId, RunStatus, Stores, Thread, ThreadId,
    ThreadStatus, ThreadUpdate,
};
use criterion::Criterion;
use serde_json::{Map, Value, json};
use tokio::runtime::Runtime;

/// Runs every benchmark on `stores`, group names prefixed with `prefix`.
pub fn all(c: &mut Criterion, rt: &Runtime, stores: &Stores, prefix: &str) {
    checkpoints(c, rt, stores, prefix);
    single_writes(c, rt, stores, prefix);
    run_lifecycle(c, rt, stores, prefix);
}

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

fn sfx() -> String {
    uuid::Uuid::new_v4().simple().to_string()
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

/// Steps measured on one chain before it is rebuilt, so the thread length stays near `n`.
const STEPS_PER_CHAIN: u64 = 64;

fn checkpoints(c: &mut Criterion, rt: &Runtime, stores: &Stores, prefix: &str) {
    let mut group = c.benchmark_group(format!("{prefix}checkpoint_step"));
    group.measurement_time(Duration::from_secs(5));
    for n in [10usize, 1000] {
        for (label, shared) in [("delta", true), ("full", false)] {
            group.bench_function(format!("{label}/{n}_msgs"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    rt.block_on(async {
                        let mut done = 0;
                        while done < iters {
                            let list = ChannelValue::from_value(
                                Value::Array((0..n).map(msg).collect()),
                                true,
                            );
                            let mut ch = Chain {
                                cp: stores.checkpoints.clone(),
                                thread: format!("bench-{label}-{n}-{}", sfx()),
                                list,
                                parent: None,
                                version: n as u64,
                            };
                            ch.step(true).await;
                            for _ in 0..STEPS_PER_CHAIN.min(iters - done) {
                                let start = Instant::now();
                                ch.step(shared).await;
                                total += start.elapsed();
                                done += 1;
                            }
                            stores.checkpoints.delete_thread(&ch.thread).await.unwrap();
                        }
                    });
                    total
                })
            });
        }
    }
    group.finish();
}

fn single_writes(c: &mut Criterion, rt: &Runtime, stores: &Stores, prefix: &str) {
    let x = sfx();
    let owner = format!("bench-{x}");
    let run = Run::new(
        format!("r-single-{x}"),
        format!("t-single-{x}"),
        "a",
        &owner,
    );
    rt.block_on(stores.runs.put(&run)).unwrap();
    let mut group = c.benchmark_group(format!("{prefix}single_write"));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("runs.update_status", |b| {
        b.to_async(rt).iter(|| async {
            stores
                .runs
                .update_status(RunId(&run.run_id), RunStatus::Running, None)
                .await
                .unwrap();
        })
    });
    group.bench_function("runs.get", |b| {
        b.to_async(rt).iter(|| async {
            stores
                .runs
                .get(Owner(&owner), RunId(&run.run_id))
                .await
                .unwrap();
        })
    });
    group.finish();
    rt.block_on(stores.runs.delete(Owner(&owner), RunId(&run.run_id)))
        .unwrap();
}

fn run_lifecycle(c: &mut Criterion, rt: &Runtime, stores: &Stores, prefix: &str) {
    let owner = format!("bench-{}", sfx());
    let mut group = c.benchmark_group(format!("{prefix}run_lifecycle"));
    group.measurement_time(Duration::from_secs(5));
    let mut threads: Vec<String> = Vec::new();
    group.bench_function("create_thread_run_claim_events_complete", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let tid = format!("t-{}", sfx());
                    stores
                        .threads
                        .create(Owner(&owner), Thread::new(&tid, Map::new()))
                        .await
                        .unwrap();
                    let run = Run::new(format!("r-{}", sfx()), &tid, "a", &owner);
                    stores.runs.put(&run).await.unwrap();
                    let until = antler_store::time::now() + chrono::Duration::seconds(30);
                    stores
                        .runs
                        .claim(RunId(&run.run_id), "w", until)
                        .await
                        .unwrap();
                    let busy = ThreadUpdate {
                        status: Some(ThreadStatus::Busy),
                        ..Default::default()
                    };
                    stores
                        .threads
                        .update(Owner(&owner), ThreadId(&tid), busy)
                        .await
                        .unwrap();
                    let events = (0..5)
                        .map(|j| NewRunEvent::new(&tid, &run.run_id, "x", "trace", json!(j)))
                        .collect();
                    stores
                        .events
                        .append_batch(Owner(&owner), events)
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
                        .update(Owner(&owner), ThreadId(&tid), idle)
                        .await
                        .unwrap();
                    threads.push(tid);
                }
            });
            start.elapsed()
        })
    });
    group.finish();
    rt.block_on(async {
        for tid in &threads {
            stores
                .runs
                .delete_by_thread(Owner(&owner), ThreadId(tid))
                .await
                .unwrap();
            stores
                .events
                .delete_thread(Owner(&owner), ThreadId(tid))
                .await
                .unwrap();
            stores
                .threads
                .delete(Owner(&owner), ThreadId(tid))
                .await
                .unwrap();
        }
    });
}
