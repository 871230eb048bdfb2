//! The shared conformance suites (stores + checkpointer) and the SQL suite (`common`)
//! against SQLite databases in temp dirs (and `sqlite::memory:`), one database per test, plus
//! SQLite-specific checks: URL validation, huge inputs, the delta cache, an old database
//! upgraded.

mod common;

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::{ChannelValue, Checkpoint, Checkpointer};
use antler_store::{NewRunEvent, Owner, RunEventQuery, Stores, Thread, ThreadId};
use antler_store_sql::{SqliteCheckpointer, connect_pool, open_sqlite, open_sqlite_url};
use common::{Backend, Blobs, messages_at, msg, push, step};
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

/// A database `antler.db` in a temp dir of its own.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("antler.db").display())
    }
}

impl Backend for Sqlite {
    const MAX_DELTA_DEPTH: i64 = antler_store_sql::sqlite::MAX_DELTA_DEPTH;
    const LIFECYCLES: (usize, usize) = (32, 8);

    async fn open(&self) -> Stores {
        open_sqlite(self.dir.path()).await.unwrap()
    }

    async fn checkpointer(&self) -> Arc<dyn Checkpointer> {
        let pool = connect_pool(&self.url()).await.unwrap();
        Arc::new(SqliteCheckpointer::new(pool))
    }

    async fn set_raw_thread_metadata(&self, thread: &str, json: &str) {
        let pool = connect_pool(&self.url()).await.unwrap();
        sqlx::query("UPDATE threads SET metadata = ? WHERE thread_id = ?")
            .bind(json)
            .bind(thread)
            .execute(&pool)
            .await
            .unwrap();
    }

    async fn blobs(&self, thread: &str) -> Blobs {
        let pool = connect_pool(&self.url()).await.unwrap();
        let (full, delta, max_depth, bytes): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(base_id IS NULL), 0), COALESCE(SUM(base_id IS NOT NULL), 0), \
             COALESCE(MAX(depth), 0), COALESCE(SUM(length(value)), 0) \
             FROM checkpoint_blobs WHERE thread_id = ? AND channel = 'messages'",
        )
        .bind(thread)
        .fetch_one(&pool)
        .await
        .unwrap();
        Blobs {
            full,
            delta,
            max_depth,
            bytes,
        }
    }
}

/// The stores of a fresh [`Sqlite`] database, keeping its temp dir alive.
struct SqliteStores {
    stores: Stores,
    _db: Sqlite,
}

impl Borrow<Stores> for SqliteStores {
    fn borrow(&self) -> &Stores {
        &self.stores
    }
}

impl Borrow<Arc<dyn Checkpointer>> for SqliteStores {
    fn borrow(&self) -> &Arc<dyn Checkpointer> {
        &self.stores.checkpoints
    }
}

async fn on_disk() -> Option<SqliteStores> {
    let db = Sqlite::new();
    let stores = db.open().await;
    assert!(db.dir.path().join("antler.db").exists());
    Some(SqliteStores { stores, _db: db })
}

async fn in_memory() -> Option<Stores> {
    Some(open_sqlite_url("sqlite::memory:").await.unwrap())
}

async fn in_memory_checkpointer() -> Option<Arc<dyn Checkpointer>> {
    Some(in_memory().await?.checkpoints)
}

common::backend_suites!(
    stores: super::on_disk(),
    checkpointer: super::on_disk(),
    sql: async { Some(super::Sqlite::new()) },
);

mod in_memory_url_stores {
    antler_store::store_conformance!(super::in_memory());
}

mod in_memory_url_checkpointer {
    antler_graph::checkpointer_conformance!(super::in_memory_checkpointer());
}

/// On a database this process owns a run claimed and completed in one batch takes one
/// statement: the same outcomes as the claim and the completion one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owned_database_claims_and_completes_a_run_in_one_statement() {
    let dir = tempfile::tempdir().unwrap();
    let stores = antler_store_sql::sqlite::open_sqlite_owned(dir.path())
        .await
        .unwrap();
    common::claimed_and_completed_in_one_batch(&stores).await;
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
async fn huge_inputs_are_rejected_or_handled_not_500() {
    let stores = open_sqlite_url("sqlite::memory:").await.unwrap();
    stores
        .threads
        .create(Owner("alice"), Thread::new("t1", Map::new()))
        .await
        .unwrap();
    // 40,000 ids: more than SQLite's bound-variable limit
    let mut ids: Vec<String> = (0..40_000).map(|i| format!("id-{i}")).collect();
    ids.push("t1".into());
    let q = antler_store::ThreadSearch {
        ids: Some(ids),
        ..Default::default()
    };
    assert_eq!(stores.threads.count(Owner("alice"), &q).await.unwrap(), 1);
    // a filter with thousands of keys would exceed SQLite's expression depth
    let big: Map<String, serde_json::Value> =
        (0..5_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let q = antler_store::ThreadSearch {
        metadata: big,
        ..Default::default()
    };
    let err = stores.threads.search(Owner("alice"), &q).await.unwrap_err();
    assert!(
        matches!(err, antler_store::StoreError::InvalidArgument(_)),
        "{err:?}"
    );
    // a key with a quote is a filter like any other (written as a JSON string in the path)
    let mut odd = Map::new();
    odd.insert("a\"b".into(), json!(1));
    let q = antler_store::ThreadSearch {
        metadata: odd,
        ..Default::default()
    };
    assert_eq!(stores.threads.count(Owner("alice"), &q).await.unwrap(), 0);
    // ... and such a key can be written, read back and then matched
    let mut odd = Map::new();
    odd.insert("a\"b".into(), json!(1));
    let t = stores
        .threads
        .patch_metadata(Owner("alice"), ThreadId("t1"), odd)
        .await
        .unwrap();
    assert_eq!(t.metadata.get("a\"b"), Some(&json!(1)));
    let t = stores
        .threads
        .get(Owner("alice"), ThreadId("t1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.metadata.get("a\"b"), Some(&json!(1)));
    assert_eq!(stores.threads.count(Owner("alice"), &q).await.unwrap(), 1);
    // keys with spaces, dots and non-ASCII work
    let mut md = Map::new();
    md.insert("a.b c".into(), json!("x"));
    md.insert("ключ".into(), json!({"n": [1, {"z": null}]}));
    stores
        .threads
        .create(Owner("alice"), Thread::new("t2", md.clone()))
        .await
        .unwrap();
    let q = antler_store::ThreadSearch {
        metadata: md,
        ..Default::default()
    };
    let found = stores.threads.search(Owner("alice"), &q).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, "t2");
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
        .create(Owner("alice"), Thread::new("t1", Map::new()))
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
    assert!(
        stores
            .threads
            .get(Owner("alice"), ThreadId("t1"))
            .await
            .unwrap()
            .is_some()
    );
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
        .append_batch(Owner("alice"), vec![ev(6)])
        .await
        .unwrap();
    assert_eq!(got[0].seq, 6, "alice's sequence continues");
    stores
        .threads
        .create(Owner("bob"), Thread::new("t1", Map::new()))
        .await
        .expect("bob may have a thread t1 too");
    let got = stores
        .events
        .append_batch(Owner("bob"), vec![ev(1)])
        .await
        .unwrap();
    assert_eq!(got[0].seq, 1, "bob's thread has its own sequence");
    let alice_events = stores
        .events
        .list(Owner("alice"), ThreadId("t1"), &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(alice_events.len(), 1);
    assert_eq!(alice_events[0].content, json!(6));

    // assistants: hers keeps both versions; bob may use the id; deleting hers cascades
    let q = antler_store::VersionQuery::default();
    assert_eq!(
        stores
            .assistants
            .versions(Owner("alice"), "a1", &q)
            .await
            .unwrap()
            .len(),
        2
    );
    stores
        .assistants
        .create(
            Owner("bob"),
            antler_store::Assistant::new("a1", "echo", "his"),
        )
        .await
        .expect("bob may have an assistant a1 too");
    stores
        .assistants
        .delete(Owner("alice"), "a1")
        .await
        .unwrap();
    assert_eq!(
        stores
            .assistants
            .versions(Owner("bob"), "a1", &q)
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

/// More threads than the delta cache holds: the one being written is never the one evicted.
#[tokio::test]
async fn the_delta_cache_keeps_the_threads_in_use() {
    let db = Sqlite::new();
    let cp = db.checkpointer().await;
    for t in 0..300 {
        let thread = format!("t{t}");
        let mut list = ChannelValue::from_value(json!([]), true);
        let mut parent: Option<String> = None;
        for i in 0..3 {
            list = push(&list, msg(i));
            parent = Some(step(&*cp, &thread, parent.as_deref(), &list, i as u64 + 1, "r").await);
        }
    }
    let pool = connect_pool(&db.url()).await.unwrap();
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
