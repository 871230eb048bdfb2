//! The shared conformance suites (stores + checkpointer) against a SQLite database in a temp
//! dir, plus SQLite-specific checks: persistence across reopen, two pools (as two processes)
//! writing the same file, and channel blobs stored once per version.

use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::{Checkpoint, Checkpointer};
use antler_store::{NewRunEvent, RunEventQuery, Thread, conformance};
use antler_store_sql::{SqliteCheckpointer, connect_pool, open_sqlite, open_sqlite_url};
use serde_json::{Map, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stores_pass_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let stores = open_sqlite(dir.path()).await.unwrap();
    assert!(dir.path().join("antler.db").exists());
    conformance::run_all(&stores).await;
    // again on the same database: fresh ids, cleaned up after itself
    conformance::run_all(&stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpointer_passes_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let stores = open_sqlite(dir.path()).await.unwrap();
    antler_graph::conformance::run_all(stores.checkpointer.clone()).await;
    antler_graph::conformance::run_all(stores.checkpointer).await;
}

#[tokio::test]
async fn in_memory_url_works() {
    let stores = open_sqlite_url("sqlite::memory:").await.unwrap();
    conformance::run_all(&stores).await;
    antler_graph::conformance::run_all(stores.checkpointer).await;
}

#[tokio::test]
async fn bad_url_is_invalid_argument() {
    let err = open_sqlite_url("postgres://nope").await.unwrap_err();
    assert!(
        matches!(err, antler_store::StoreError::InvalidArgument(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let stores = open_sqlite(dir.path()).await.unwrap();
        let mut md = Map::new();
        md.insert("k".into(), json!("v"));
        stores
            .threads
            .create("alice", Thread::new("t-persist", md))
            .await
            .unwrap();
    }
    let stores = open_sqlite(dir.path()).await.unwrap();
    let t = stores
        .threads
        .get("alice", "t-persist")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.metadata.get("k"), Some(&json!("v")));
    assert_eq!(t.values, Some(serde_json::Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_share_one_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let a = open_sqlite(dir.path()).await.unwrap();
    let b = open_sqlite(dir.path()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let events = if i % 2 == 0 {
            a.events.clone()
        } else {
            b.events.clone()
        };
        tasks.push(tokio::spawn(async move {
            let batch = (0..5)
                .map(|j| NewRunEvent::new("shared", format!("r{i}"), "x", "trace", json!(j)))
                .collect();
            events.append_batch("alice", batch).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = a
        .events
        .list("alice", "shared", &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<i64>>()
    );
}

#[tokio::test]
async fn unchanged_channels_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cp.db").display());
    let pool = connect_pool(&url).await.unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(SqliteCheckpointer::new(pool.clone()));
    let big: Vec<serde_json::Value> = (0..200)
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
        cp.put("t", "", parent.as_deref(), &c, &md, &new_versions)
            .await
            .unwrap();
        parent = Some(c.id.clone());
    }
    let blobs: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM checkpoint_blobs WHERE channel = 'messages'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(blobs, 1, "the unchanged messages channel is written once");
    let latest = cp.get_tuple("t", "", None).await.unwrap().unwrap();
    assert_eq!(latest.checkpoint.channel_values["messages"], json!(big));
    assert_eq!(latest.checkpoint.channel_values["counter"], json!(19));
}
