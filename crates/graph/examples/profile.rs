//! Quick timing loop (release): `cargo run --release -p antler-graph --example profile`.
//! Prints the per-step cost of a looping graph that appends one message per step, starting
//! from threads holding 10 and 1,000 messages.
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use antler_graph::*;
use serde_json::{Value, json};

fn looping(steps: i64) -> Result<CompiledGraph, BuildError> {
    StateGraph::new("loop")
        .channel("messages", Reducer::AddMessages)
        .channel("steps", Reducer::LastValue)
        .node("add", |i: NodeInput, _c| async move {
            let done = i.get_ref("steps").and_then(Value::as_i64).unwrap_or(0);
            Ok(NodeOutput::Update(json!({
                "messages": [messages::ai_message(format!("step {done}"))],
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
}

fn fan_out() -> Result<CompiledGraph, BuildError> {
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sink: StreamSink = Arc::new(|_| {});
    if std::env::var("FAN").is_ok() {
        let g = fan_out()?;
        let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
        for round in 0..3 {
            let t = Instant::now();
            for i in 0..300 {
                g.run(
                    cp.clone(),
                    RunInput::Values(json!({})),
                    RunConfig::new(format!("f{round}-{i}"), "r"),
                    sink.clone(),
                    CancellationToken::new(),
                )
                .await?;
            }
            println!("fan-out run: {:?}", t.elapsed() / 300);
        }
        return Ok(());
    }
    for round in 0..3 {
        for msgs in [10usize, 1000] {
            let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
            let seed: Vec<Value> = (0..msgs)
                .map(|i| json!({"type": "human", "content": format!("message {i}"), "id": format!("seed-{i}")}))
                .collect();
            let base = looping(0)?
                .run(
                    cp.clone(),
                    RunInput::Values(json!({"messages": seed, "steps": 0})),
                    RunConfig::new("t", "seed"),
                    sink.clone(),
                    CancellationToken::new(),
                )
                .await?;
            let mut per = Vec::new();
            for steps in [20i64, 220] {
                let g = looping(steps)?;
                let runs = 20;
                let t = Instant::now();
                for _ in 0..runs {
                    let mut cfg = RunConfig::new("t", "r");
                    cfg.checkpoint_id = base.checkpoint.as_ref().map(|c| c.checkpoint_id.clone());
                    cfg.recursion_limit = 10_000;
                    g.run(
                        cp.clone(),
                        RunInput::Values(json!({"steps": 0})),
                        cfg,
                        sink.clone(),
                        CancellationToken::new(),
                    )
                    .await?;
                }
                per.push(t.elapsed().as_secs_f64() * 1e6 / runs as f64);
            }
            println!(
                "round {round} msgs {msgs}: run(20)={:.0}us run(220)={:.0}us per-step={:.2}us",
                per[0],
                per[1],
                (per[1] - per[0]) / 200.0
            );
        }
    }
    Ok(())
}
