//! Engine benchmarks (memory checkpointer, no stream modes unless named):
//! - `one_node_run`: a whole run of a one-node graph (input checkpoint, start step, node step);
//! - `superstep`: a 100-step loop of a one-node graph, reported per run (divide by 100);
//! - `send_fan_out_10`: a run with a 10-way `Send` fan-out;
//! - `grow/{msgs}msgs/{steps}steps`: runs of `steps` supersteps, each appending one message,
//!   forked from a thread that already holds `msgs` messages. Per-step cost at a thread length =
//!   (t(60 steps) - t(10 steps)) / 50, which excludes the one-off load of the thread.
//!
//! Run: `cargo bench -p antler-graph --bench engine`. The bench uses mimalloc as the global
//! allocator (the engine's persistent vectors/maps allocate 0.5–1 KiB nodes, which glibc's
//! malloc handles 3–4x slower; the server binary should use mimalloc too).

use std::hint::black_box;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use antler_graph::*;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn one_node() -> CompiledGraph {
    StateGraph::new("one")
        .channel("n", Reducer::LastValue)
        .node("a", |_i, _c| async {
            Ok(NodeOutput::Update(json!({"n": 1})))
        })
        .edge(START, "a")
        .edge("a", END)
        .compile()
        .expect("graph")
}

fn looping(steps: i64) -> CompiledGraph {
    StateGraph::new("loop")
        .channel("messages", Reducer::AddMessages)
        .channel("steps", Reducer::LastValue)
        .node("add", |i: NodeInput, _c| async move {
            let done = i.get_ref("steps").and_then(Value::as_i64).unwrap_or(0);
            let seen = i.len_of("messages");
            Ok(NodeOutput::Update(json!({
                "messages": [messages::ai_message(format!("step {done} saw {seen}"))],
                "steps": done + 1,
            })))
        })
        .edge(START, "add")
        .conditional_edges(
            "add",
            move |i: &NodeInput| {
                let done = i.get_ref("steps").and_then(Value::as_i64).unwrap_or(0);
                vec![Route::to(if done >= steps { END } else { "add" })]
            },
            Some(&["add", END]),
        )
        .compile()
        .expect("graph")
}

fn fan_out() -> CompiledGraph {
    StateGraph::new("fan")
        .channel("results", Reducer::Append)
        .node("split", |_i, _c| async {
            Ok(NodeOutput::Update(Value::Null))
        })
        .node("work", |i: NodeInput, _c| async move {
            let n = i
                .arg()
                .and_then(|a| a.get("n"))
                .cloned()
                .unwrap_or(Value::Null);
            Ok(NodeOutput::Update(json!({"results": [n]})))
        })
        .edge(START, "split")
        .conditional_edges(
            "split",
            |_i: &NodeInput| {
                (0..10)
                    .map(|n| Route::Send {
                        node: "work".into(),
                        arg: json!({"n": n}),
                    })
                    .collect()
            },
            Some(&["work"]),
        )
        .edge("work", END)
        .compile()
        .expect("graph")
}

fn noop_sink() -> StreamSink {
    Arc::new(|p| {
        black_box(p);
    })
}

fn benches(c: &mut Criterion) {
    let rt = rt();
    let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());

    let g = one_node();
    c.bench_function("one_node_run", |b| {
        b.to_async(&rt).iter(|| async {
            let out = g
                .run(
                    cp.clone(),
                    RunInput::Values(json!({"n": 0})),
                    RunConfig::new("one", "r"),
                    noop_sink(),
                    CancellationToken::new(),
                )
                .await;
            black_box(out.is_ok())
        })
    });

    let lp = StateGraph::new("spin")
        .channel("n", Reducer::LastValue)
        .node("a", |i: NodeInput, _c| async move {
            let n = i.get_ref("n").and_then(Value::as_i64).unwrap_or(0);
            Ok(NodeOutput::Update(json!({"n": n + 1})))
        })
        .edge(START, "a")
        .conditional_edges(
            "a",
            |i: &NodeInput| {
                vec![Route::to(
                    if i.get_ref("n").and_then(Value::as_i64).unwrap_or(0) >= 100 {
                        END
                    } else {
                        "a"
                    },
                )]
            },
            Some(&["a", END]),
        )
        .compile()
        .expect("graph");
    c.bench_function("superstep_x100", |b| {
        b.to_async(&rt).iter(|| async {
            let mut cfg = RunConfig::new("spin", "r");
            cfg.recursion_limit = 1000;
            let out = lp
                .run(
                    cp.clone(),
                    RunInput::Values(json!({"n": 0})),
                    cfg,
                    noop_sink(),
                    CancellationToken::new(),
                )
                .await;
            black_box(out.is_ok())
        })
    });

    let fan = fan_out();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    c.bench_function("send_fan_out_10", |b| {
        b.to_async(&rt).iter(|| async {
            // a fresh thread each time: the `results` list would grow otherwise
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let out = fan
                .run(
                    cp.clone(),
                    RunInput::Values(json!({})),
                    RunConfig::new(format!("fan-{n}"), "r"),
                    noop_sink(),
                    CancellationToken::new(),
                )
                .await;
            black_box(out.is_ok())
        })
    });

    for msgs in [10usize, 1000] {
        // a thread holding `msgs` messages
        let thread = format!("grow-{msgs}");
        let seed: Vec<Value> = (0..msgs)
            .map(|i| json!({"type": if i % 2 == 0 { "human" } else { "ai" }, "content": format!("message number {i} with some text in it"), "id": format!("seed-{i}")}))
            .collect();
        let base = rt
            .block_on(looping(0).run(
                cp.clone(),
                RunInput::Values(json!({"messages": seed, "steps": 0})),
                RunConfig::new(thread.clone(), "seed"),
                noop_sink(),
                CancellationToken::new(),
            ))
            .expect("seed run");
        let base_id = base.checkpoint.map(|c| c.checkpoint_id);
        for steps in [10i64, 60] {
            let g = looping(steps);
            c.bench_function(&format!("grow/{msgs}msgs/{steps}steps"), |b| {
                b.to_async(&rt).iter(|| async {
                    let mut cfg = RunConfig::new(thread.clone(), "r");
                    cfg.checkpoint_id = base_id.clone();
                    cfg.recursion_limit = 1000;
                    let out = g
                        .run(
                            cp.clone(),
                            RunInput::Values(json!({"steps": 0})),
                            cfg,
                            noop_sink(),
                            CancellationToken::new(),
                        )
                        .await;
                    black_box(out.is_ok())
                })
            });
        }
    }
}

criterion_group!(engine, benches);
criterion_main!(engine);
