//! The graph engine on the SQLite checkpointer: many runs of the `echo` example on one thread
//! give the same state as on the in-memory checkpointer, and the messages channel is stored
//! as deltas.

use std::sync::Arc;

use antler_graph::{
    CancellationToken, Checkpointer, MemoryCheckpointer, RunConfig, RunInput, StreamSink,
};
use antler_store_sql::{connect_pool, stores_from_pool};
use serde_json::{Value, json};

fn contents(values: &Value) -> Vec<(String, String)> {
    values["messages"]
        .as_array()
        .map(|msgs| {
            msgs.iter()
                .map(|m| {
                    (
                        m["type"].as_str().unwrap_or("").to_string(),
                        m["content"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_runs_match_the_memory_checkpointer_and_use_deltas() {
    let graphs = antler_graph::examples::all();
    let (_, echo) = graphs
        .iter()
        .find(|(name, _)| *name == "echo")
        .expect("echo example graph");
    let dir = tempfile::tempdir().unwrap();
    let pool = connect_pool(&format!("sqlite://{}", dir.path().join("e.db").display()))
        .await
        .unwrap();
    let sqlite = stores_from_pool(pool.clone()).checkpoints;
    let memory: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let sink: StreamSink = Arc::new(|_| {});

    for i in 0..40 {
        let input = json!({"messages": [{"type": "human", "content": format!("hello {i}"), "id": format!("h{i}")}]});
        for cp in [&sqlite, &memory] {
            let config = RunConfig::new("thread-1", format!("run-{i}"));
            echo.run(
                cp.clone(),
                RunInput::Values(input.clone()),
                config,
                sink.clone(),
                CancellationToken::new(),
            )
            .await
            .unwrap();
        }
    }
    let s = echo
        .get_state(&*sqlite, "thread-1", None, false)
        .await
        .unwrap();
    let m = echo
        .get_state(&*memory, "thread-1", None, false)
        .await
        .unwrap();
    let sv = serde_json::to_value(&s).unwrap();
    let mv = serde_json::to_value(&m).unwrap();
    assert_eq!(contents(&sv["values"]), contents(&mv["values"]));
    assert_eq!(sv["values"]["title"], mv["values"]["title"]);
    let msgs = contents(&sv["values"]);
    assert_eq!(msgs.len(), 80);
    assert_eq!(msgs[79], ("ai".to_string(), "echo: hello 39".to_string()));

    // history agrees too
    let opts = antler_graph::ListOptions::default();
    let sh = echo.get_history(&*sqlite, "thread-1", &opts).await.unwrap();
    let mh = echo.get_history(&*memory, "thread-1", &opts).await.unwrap();
    assert_eq!(sh.len(), mh.len());
    for (a, b) in sh.iter().zip(&mh) {
        let (a, b) = (
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap(),
        );
        assert_eq!(contents(&a["values"]), contents(&b["values"]));
        assert_eq!(a["next"], b["next"]);
        assert_eq!(a["metadata"]["step"], b["metadata"]["step"]);
    }

    let (deltas, fulls): (i64, i64) = sqlx::query_as(
        "SELECT SUM(base_id IS NOT NULL), SUM(base_id IS NULL) FROM checkpoint_blobs WHERE channel = 'messages'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        deltas > fulls * 4,
        "messages mostly stored as deltas ({deltas} deltas, {fulls} full)"
    );
}
