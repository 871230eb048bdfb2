//! SQLite checkpointer specifics: list channels stored as deltas, forks that reuse version
//! numbers, and rollback (delete_run) with delta chains.

use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::{ChannelValue, Checkpoint, Checkpointer};
use antler_store_sql::{SqliteCheckpointer, connect_pool};
use serde_json::{Map, Value, json};
use sqlx::SqlitePool;

async fn setup() -> (tempfile::TempDir, SqlitePool, Arc<dyn Checkpointer>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cp.db").display());
    let pool = connect_pool(&url).await.unwrap();
    let cp: Arc<dyn Checkpointer> = Arc::new(SqliteCheckpointer::new(pool.clone()));
    (dir, pool, cp)
}

fn msg(i: usize) -> Value {
    json!({"type": "ai", "content": format!("message {i}"), "id": format!("m{i}")})
}

fn meta(run_id: &str, step: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("run_id".into(), json!(run_id));
    m.insert("step".into(), json!(step));
    m
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

/// Puts one step: `messages` changed (version `v`), `step` changed (version `v`).
async fn step(
    cp: &dyn Checkpointer,
    thread: &str,
    parent: Option<&str>,
    list: &ChannelValue,
    v: u64,
    run: &str,
) -> String {
    let mut c = Checkpoint {
        id: antler_graph::new_checkpoint_id(v as i64),
        ts: antler_graph::now_ts(),
        ..Default::default()
    };
    c.channel_versions.insert("messages".into(), v);
    c.channel_versions.insert("step".into(), v);
    let mut values = BTreeMap::new();
    values.insert("messages".to_string(), list.clone());
    values.insert(
        "step".to_string(),
        ChannelValue::from_value(json!(v), false),
    );
    let mut nv = BTreeMap::new();
    nv.insert("messages".to_string(), v);
    nv.insert("step".to_string(), v);
    cp.put_shared(thread, "", parent, &c, &values, &meta(run, v as i64), &nv)
        .await
        .unwrap();
    c.id
}

async fn messages_at(cp: &dyn Checkpointer, thread: &str, id: Option<&str>) -> Value {
    let t = cp.get_tuple(thread, "", id).await.unwrap().unwrap();
    t.checkpoint
        .channel_values
        .get("messages")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn growing_lists_are_stored_as_bounded_delta_chains() {
    let (_dir, pool, cp) = setup().await;
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut parent: Option<String> = None;
    let mut ids = Vec::new();
    for i in 0..100 {
        list = push(&list, msg(i));
        let id = step(&*cp, "t", parent.as_deref(), &list, i as u64 + 1, "r1").await;
        parent = Some(id.clone());
        ids.push(id);
    }
    let (fulls, deltas, max_depth): (i64, i64, i64) = sqlx::query_as(
        "SELECT SUM(base_id IS NULL), SUM(base_id IS NOT NULL), MAX(depth) FROM checkpoint_blobs WHERE channel = 'messages'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        deltas >= 90,
        "most steps write deltas ({fulls} full, {deltas} delta)"
    );
    assert!(fulls >= 3, "chains are cut with full values ({fulls} full)");
    assert!(max_depth <= antler_store_sql::sqlite::MAX_DELTA_DEPTH);
    // the size written for the messages channel grows linearly, not quadratically
    let bytes: i64 = sqlx::query_scalar(
        "SELECT SUM(length(value)) FROM checkpoint_blobs WHERE channel = 'messages'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let one = msg(99).to_string().len() as i64;
    assert!(
        bytes < one * 100 * 6,
        "stored {bytes} bytes for 100 messages of ~{one} bytes"
    );

    let expected: Vec<Value> = (0..100).map(msg).collect();
    assert_eq!(
        messages_at(&*cp, "t", None).await,
        Value::Array(expected.clone())
    );
    for (i, id) in ids.iter().enumerate().step_by(7) {
        assert_eq!(
            messages_at(&*cp, "t", Some(id)).await,
            Value::Array(expected[..=i].to_vec()),
            "checkpoint {i}"
        );
    }
    let listed = cp
        .list("t", Some(""), &antler_graph::ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(
        listed[50].checkpoint.channel_values["messages"],
        Value::Array(expected[..50].to_vec())
    );
}

#[tokio::test]
async fn lists_rebuilt_from_json_still_extend() {
    // a new run reloads its state from the checkpoint: equal values, new allocations
    let (_dir, pool, cp) = setup().await;
    let list = ChannelValue::from_value(json!([msg(0), msg(1)]), true);
    let c1 = step(&*cp, "t", None, &list, 1, "r1").await;
    let reloaded = ChannelValue::from_value(messages_at(&*cp, "t", None).await, true);
    let c2 = step(&*cp, "t", Some(&c1), &push(&reloaded, msg(2)), 2, "r2").await;
    let deltas: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM checkpoint_blobs WHERE base_id IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(deltas, 1);
    assert_eq!(
        messages_at(&*cp, "t", Some(&c2)).await,
        json!([msg(0), msg(1), msg(2)])
    );
}

#[tokio::test]
async fn a_fork_reusing_a_version_does_not_overwrite_the_other_branch() {
    let (_dir, _pool, cp) = setup().await;
    let base = ChannelValue::from_value(json!([msg(0)]), true);
    let c1 = step(&*cp, "t", None, &base, 1, "r1").await;
    let c2 = step(&*cp, "t", Some(&c1), &push(&base, msg(1)), 2, "r1").await;
    // fork from c1: the engine computes the same next version (2) for a different value
    let c3 = step(&*cp, "t", Some(&c1), &push(&base, msg(7)), 2, "r2").await;
    assert_eq!(
        messages_at(&*cp, "t", Some(&c2)).await,
        json!([msg(0), msg(1)])
    );
    assert_eq!(
        messages_at(&*cp, "t", Some(&c3)).await,
        json!([msg(0), msg(7)])
    );
    assert_eq!(messages_at(&*cp, "t", Some(&c1)).await, json!([msg(0)]));
}

#[tokio::test]
async fn rollback_keeps_the_bases_other_checkpoints_need() {
    let (_dir, pool, cp) = setup().await;
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut parent: Option<String> = None;
    let mut ids = Vec::new();
    for i in 0..6 {
        list = push(&list, msg(i));
        let run = if i < 3 { "a" } else { "b" };
        let id = step(&*cp, "t", parent.as_deref(), &list, i as u64 + 1, run).await;
        parent = Some(id.clone());
        ids.push(id);
    }
    // rolling back run b keeps run a's chain
    cp.delete_run("t", "b").await.unwrap();
    assert_eq!(
        messages_at(&*cp, "t", None).await,
        json!([msg(0), msg(1), msg(2)])
    );
    let blobs: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM checkpoint_blobs WHERE channel = 'messages'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(blobs, 3, "run b's blobs are garbage-collected");

    // continue after the rollback (same version numbers as the deleted run)
    let reloaded = ChannelValue::from_value(messages_at(&*cp, "t", None).await, true);
    let next = push(&reloaded, msg(9));
    let c = step(&*cp, "t", Some(&ids[2]), &next, 4, "c").await;
    assert_eq!(
        messages_at(&*cp, "t", Some(&c)).await,
        json!([msg(0), msg(1), msg(2), msg(9)])
    );

    // rolling back the first run while the later one remains keeps what it reads
    cp.delete_run("t", "a").await.unwrap();
    assert_eq!(
        messages_at(&*cp, "t", Some(&c)).await,
        json!([msg(0), msg(1), msg(2), msg(9)])
    );
    assert!(
        cp.get_tuple("t", "", Some(&ids[0]))
            .await
            .unwrap()
            .is_none()
    );

    // run b2's deltas are based on run a2's blobs: rolling back a2 must keep them
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut parent: Option<String> = None;
    for i in 0..6 {
        list = push(&list, msg(i));
        let run = if i < 3 { "a2" } else { "b2" };
        parent = Some(step(&*cp, "t3", parent.as_deref(), &list, i as u64 + 1, run).await);
    }
    cp.delete_run("t3", "a2").await.unwrap();
    assert_eq!(
        messages_at(&*cp, "t3", None).await,
        Value::Array((0..6).map(msg).collect())
    );
    assert_eq!(
        cp.list("t3", None, &antler_graph::ListOptions::default())
            .await
            .unwrap()
            .len(),
        3
    );

    // copies keep delta chains intact
    cp.copy_thread("t", "t2").await.unwrap();
    assert_eq!(
        messages_at(&*cp, "t2", None).await,
        json!([msg(0), msg(1), msg(2), msg(9)])
    );
}

#[tokio::test]
async fn removing_messages_writes_a_full_value() {
    let (_dir, pool, cp) = setup().await;
    let list = ChannelValue::from_value(json!([msg(0), msg(1)]), true);
    let c1 = step(&*cp, "t", None, &list, 1, "r").await;
    let shorter = ChannelValue::from_value(json!([msg(1)]), true);
    let c2 = step(&*cp, "t", Some(&c1), &shorter, 2, "r").await;
    let fulls: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM checkpoint_blobs WHERE channel = 'messages' AND base_id IS NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(fulls, 2);
    assert_eq!(messages_at(&*cp, "t", Some(&c2)).await, json!([msg(1)]));
}

#[tokio::test]
async fn the_delta_cache_keeps_the_threads_in_use() {
    // more threads than the cache holds: the one being written is never the one evicted
    let (_dir, pool, cp) = setup().await;
    for t in 0..300 {
        let thread = format!("t{t}");
        let mut list = ChannelValue::from_value(json!([]), true);
        let mut parent: Option<String> = None;
        for i in 0..3 {
            list = push(&list, msg(i));
            parent = Some(step(&*cp, &thread, parent.as_deref(), &list, i as u64 + 1, "r").await);
        }
    }
    let deltas: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM checkpoint_blobs WHERE base_id IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(deltas, 600);
    assert_eq!(
        messages_at(&*cp, "t7", None).await,
        json!([msg(0), msg(1), msg(2)])
    );
}
