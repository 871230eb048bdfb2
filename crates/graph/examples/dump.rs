//! Prints the stream of an example graph: `cargo run -p antler-graph --example dump -- echo values,updates`.
use std::sync::Arc;

use antler_graph::*;
use parking_lot::Mutex;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).cloned().unwrap_or_else(|| "echo".into());
    let modes: Vec<StreamMode> = args
        .get(2)
        .map(|s| s.split(',').filter_map(StreamMode::parse).collect())
        .unwrap_or_else(|| vec![StreamMode::Values]);
    let subgraphs = args.iter().any(|a| a == "--subgraphs");
    let graph = examples::all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, g)| g)
        .ok_or("unknown graph")?;
    let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let out = Arc::new(Mutex::new(Vec::new()));
    let o2 = out.clone();
    let sink: StreamSink = Arc::new(move |p: StreamPart| o2.lock().push(p));
    let mut cfg = RunConfig::new("thread-1", "run-1");
    cfg.stream_modes = modes;
    cfg.subgraphs = subgraphs;
    cfg.configurable.insert("delay".into(), json!(0.01));
    cfg.metadata.insert("graph_id".into(), json!(name));
    let input = RunInput::Values(
        json!({"messages": [{"role": "human", "content": "hello there, this is a long first message"}]}),
    );
    let r = graph
        .run(
            cp.clone(),
            input,
            cfg.clone(),
            sink.clone(),
            CancellationToken::new(),
        )
        .await;
    for p in out.lock().drain(..) {
        println!("event: {}\ndata: {}", p.event_name(), p.data);
    }
    println!("=> {:?}", r.as_ref().map(|o| (&o.interrupts, &o.next)));
    if args.iter().any(|a| a == "--resume") {
        let r = graph
            .run(
                cp.clone(),
                RunInput::Command(Command {
                    resume: Some(json!({"approved": true})),
                    ..Default::default()
                }),
                cfg.clone(),
                sink,
                CancellationToken::new(),
            )
            .await;
        for p in out.lock().drain(..) {
            println!("event: {}\ndata: {}", p.event_name(), p.data);
        }
        println!("=> {:?}", r.as_ref().map(|o| (&o.interrupts, &o.next)));
    }
    let st = graph.get_state(cp.as_ref(), "thread-1", None, true).await?;
    println!("state: {}", st.to_value());
    Ok(())
}
