//! The shared conformance suites (stores + checkpointer) against a SQLite database in a temp
//! dir, plus SQLite-specific checks: persistence across reopen, two pools (as two processes)
//! writing the same file, and channel blobs stored once per version.

use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::{Checkpoint, Checkpointer};
use antler_store::{NewRunEvent, RunEventQuery, Thread, conformance};
use antler_store_sql::{SqliteCheckpointer, connect_pool, open_sqlite, open_sqlite_url};
use serde_json::{Map, json};

/// A root checkpoint whose one channel is `messages = [{"content": text}]`, with the versions
/// to store it under.
fn messages_checkpoint(text: &str) -> (Checkpoint, BTreeMap<String, u64>) {
    let mut c = Checkpoint {
        id: antler_graph::new_checkpoint_id(0),
        ts: antler_graph::now_ts(),
        ..Default::default()
    };
    c.channel_versions.insert("messages".into(), 1);
    c.channel_values
        .insert("messages".into(), json!([{"content": text}]));
    (c, [("messages".to_string(), 1)].into())
}

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
    antler_graph::conformance::run_all(stores.checkpoints.clone()).await;
    antler_graph::conformance::run_all(stores.checkpoints).await;
}

#[tokio::test]
async fn in_memory_url_works() {
    let stores = open_sqlite_url("sqlite::memory:").await.unwrap();
    conformance::run_all(&stores).await;
    antler_graph::conformance::run_all(stores.checkpoints).await;
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

#[tokio::test]
async fn huge_inputs_are_rejected_or_handled_not_500() {
    let stores = open_sqlite_url("sqlite::memory:").await.unwrap();
    stores
        .threads
        .create("alice", Thread::new("t1", Map::new()))
        .await
        .unwrap();
    // 40,000 ids: more than SQLite's bound-variable limit
    let mut ids: Vec<String> = (0..40_000).map(|i| format!("id-{i}")).collect();
    ids.push("t1".into());
    let q = antler_store::ThreadSearch {
        ids: Some(ids),
        ..Default::default()
    };
    assert_eq!(stores.threads.count("alice", &q).await.unwrap(), 1);
    // a filter with thousands of keys would exceed SQLite's expression depth
    let big: Map<String, serde_json::Value> =
        (0..5_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let q = antler_store::ThreadSearch {
        metadata: big,
        ..Default::default()
    };
    let err = stores.threads.search("alice", &q).await.unwrap_err();
    assert!(
        matches!(err, antler_store::StoreError::InvalidArgument(_)),
        "{err:?}"
    );
    // a key with a quote cannot be expressed as a JSON path
    let mut odd = Map::new();
    odd.insert("a\"b".into(), json!(1));
    let q = antler_store::ThreadSearch {
        metadata: odd,
        ..Default::default()
    };
    assert!(matches!(
        stores.threads.count("alice", &q).await,
        Err(antler_store::StoreError::InvalidArgument(_))
    ));
    // ... but such a key can still be written (read-modify-write fallback of update)
    let mut odd = Map::new();
    odd.insert("a\"b".into(), json!(1));
    let t = stores
        .threads
        .patch_metadata("alice", "t1", odd)
        .await
        .unwrap();
    assert_eq!(t.metadata.get("a\"b"), Some(&json!(1)));
    let t = stores.threads.get("alice", "t1").await.unwrap().unwrap();
    assert_eq!(t.metadata.get("a\"b"), Some(&json!(1)));
    // keys with spaces, dots and non-ASCII work
    let mut md = Map::new();
    md.insert("a.b c".into(), json!("x"));
    md.insert("ключ".into(), json!({"n": [1, {"z": null}]}));
    stores
        .threads
        .create("alice", Thread::new("t2", md.clone()))
        .await
        .unwrap();
    let q = antler_store::ThreadSearch {
        metadata: md,
        ..Default::default()
    };
    let found = stores.threads.search("alice", &q).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, "t2");
}

/// 32 concurrent "runs" (thread + run rows, status changes, events, checkpoints) on one file
/// through two pools: no busy/locked error may surface, every seq is unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_run_lifecycles_never_fail() {
    use antler_store::{Run, RunCompletion, RunStatus, ThreadStatus, ThreadUpdate};
    let dir = tempfile::tempdir().unwrap();
    let a = open_sqlite(dir.path()).await.unwrap();
    let b = open_sqlite(dir.path()).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let stores = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            for i in 0..8 {
                let tid = format!("t{w}-{i}");
                stores
                    .threads
                    .create("o", Thread::new(&tid, Map::new()))
                    .await?;
                let run = Run::new(format!("r{w}-{i}"), &tid, "a", "o");
                stores.runs.put(&run).await?;
                stores
                    .runs
                    .transition(&run.run_id, &[RunStatus::Pending], RunStatus::Running, None)
                    .await?;
                let busy = ThreadUpdate {
                    status: Some(ThreadStatus::Busy),
                    ..Default::default()
                };
                stores.threads.update("o", &tid, busy).await?;
                let (c, nv) = messages_checkpoint("hi");
                stores
                    .checkpoints
                    .put(&tid, "", None, &c, &Map::new(), &nv)
                    .await
                    .map_err(|e| antler_store::StoreError::Backend(e.to_string()))?;
                let events = (0..5)
                    .map(|j| NewRunEvent::new("shared-thread", &run.run_id, "x", "trace", json!(j)))
                    .collect();
                stores.events.append_batch("o", events).await?;
                let done = RunCompletion {
                    status: Some(RunStatus::Success),
                    ..Default::default()
                };
                stores.runs.update_completion(&run.run_id, &done).await?;
                let idle = ThreadUpdate {
                    status: Some(ThreadStatus::Idle),
                    ..Default::default()
                };
                stores.threads.update("o", &tid, idle).await?;
            }
            Ok::<(), antler_store::StoreError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let all = a
        .events
        .list("o", "shared-thread", &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=32 * 8 * 5).collect::<Vec<i64>>()
    );
    assert_eq!(
        a.threads
            .count("o", &antler_store::ThreadSearch::default())
            .await
            .unwrap(),
        256
    );
}

/// A database written before thread ids were per owner (migrations 0001-0004) keeps
/// everything after the upgrade: its threads, their checkpoints (moved under the owner's
/// thread key) and their event sequences (no seq handed out twice); and another user may now
/// create a thread of the same id, which starts empty with its own sequence.
#[tokio::test]
async fn an_old_database_keeps_its_threads_checkpoints_and_event_seqs() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old-migrations");
    std::fs::create_dir_all(&old).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if ["0001", "0002", "0003", "0004"]
            .iter()
            .any(|v| name.starts_with(v))
        {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}?mode=rwc", data.join("antler.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    // the old layout: a thread of alice's, its checkpoint under the bare id, 5 events handed out
    // (the first 4 deleted since)
    let legacy = antler_store_sql::stores_from_pool(pool.clone());
    legacy
        .threads
        .create("alice", Thread::new("t1", Map::new()))
        .await
        .unwrap();
    let (c, nv) = messages_checkpoint("old");
    legacy
        .checkpoints
        .put("t1", "", None, &c, &Map::new(), &nv)
        .await
        .unwrap();
    sqlx::query("INSERT INTO run_event_seqs (thread_id, last_seq) VALUES ('t1', 5)")
        .execute(&pool)
        .await
        .unwrap();
    // and an assistant of hers with two versions (the old schema's statements)
    let at = "2026-11-01T10:00:00.000000+00:00";
    sqlx::query(
        "INSERT INTO assistants (assistant_id, owner, graph_id, name, config, context, metadata, \
         version, created_at, updated_at) VALUES ('a1', 'alice', 'echo', 'hers', '{}', '{}', '{}', 2, ?, ?)",
    )
    .bind(at)
    .bind(at)
    .execute(&pool)
    .await
    .unwrap();
    for v in [1, 2] {
        sqlx::query(
            "INSERT INTO assistant_versions (assistant_id, version, graph_id, name, config, context, \
             metadata, created_at) VALUES ('a1', ?, 'echo', 'hers', '{}', '{}', '{}', ?)",
        )
        .bind(v)
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let stores = open_sqlite(&data).await.unwrap();
    assert!(stores.threads.get("alice", "t1").await.unwrap().is_some());
    let tuple = stores
        .checkpointer("alice")
        .get_tuple("t1", "", None)
        .await
        .unwrap()
        .expect("alice's checkpoint moved under her key");
    assert_eq!(tuple.thread_id, "t1");
    assert_eq!(tuple.checkpoint.id, c.id);
    assert_eq!(
        tuple.checkpoint.channel_values["messages"],
        json!([{"content": "old"}])
    );
    assert!(
        stores
            .checkpointer("bob")
            .get_tuple("t1", "", None)
            .await
            .unwrap()
            .is_none()
    );
    let ev = |n: i64| NewRunEvent::new("t1", "r", "x", "trace", json!(n));
    let got = stores
        .events
        .append_batch("alice", vec![ev(6)])
        .await
        .unwrap();
    assert_eq!(got[0].seq, 6, "alice's sequence continues");
    stores
        .threads
        .create("bob", Thread::new("t1", Map::new()))
        .await
        .expect("bob may have a thread t1 too");
    let got = stores
        .events
        .append_batch("bob", vec![ev(1)])
        .await
        .unwrap();
    assert_eq!(got[0].seq, 1, "bob's thread has its own sequence");
    let alice_events = stores
        .events
        .list("alice", "t1", &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(alice_events.len(), 1);
    assert_eq!(alice_events[0].content, json!(6));

    // assistants: hers keeps both versions; bob may use the id; deleting hers cascades
    let q = antler_store::VersionQuery::default();
    assert_eq!(
        stores
            .assistants
            .versions("alice", "a1", &q)
            .await
            .unwrap()
            .len(),
        2
    );
    stores
        .assistants
        .create("bob", antler_store::Assistant::new("a1", "echo", "his"))
        .await
        .expect("bob may have an assistant a1 too");
    stores.assistants.delete("alice", "a1").await.unwrap();
    assert_eq!(
        stores
            .assistants
            .versions("bob", "a1", &q)
            .await
            .unwrap()
            .len(),
        1
    );
    let pool = antler_store_sql::connect_pool(&url).await.unwrap();
    let orphans: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM assistant_versions WHERE owner = 'alice'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        orphans, 0,
        "the versions' foreign key cascades after the table rebuild"
    );
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(broken.is_empty());
}
