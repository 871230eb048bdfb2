#![cfg(feature = "mysql")]
//! The MySQL / MariaDB backend against a real server: the shared conformance suites (stores +
//! checkpointer) and the SQL suite (`common`), one test per case, plus URL validation, a
//! clear error for an unreachable server, the statement timeout and JSON filters with tricky
//! keys and values.
//!
//! URL: env `ANTLER_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). When the
//! server is unreachable the tests print a notice and return, except with `CI=true`, where
//! they fail. The database is shared with other runs: every test uses fresh ids, never drops
//! or truncates anything.

mod common;

use std::sync::Arc;
use std::time::Duration;

use antler_graph::Checkpointer;
use antler_store::{
    ItemSearch, Owner, StoreError, Stores, Thread, ThreadId, ThreadSearch, ThreadUpdate,
};
use antler_store_sql::mysql::{
    MySqlCheckpointer, MySqlDb, PoolOptions, connect_pool, open_mysql, stores_from_pool,
};
use common::{Backend, Blobs};
use serde_json::{Map, Value, json};

fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The test server URL, or `None` (skip) when it is unreachable outside CI.
async fn mysql_url() -> Option<String> {
    let url = std::env::var("ANTLER_TEST_MYSQL_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "mysql://root@127.0.0.1:3306/test".to_owned());
    let probe = async {
        use sqlx::ConnectOptions;
        let opts: sqlx::mysql::MySqlConnectOptions = url.parse().ok()?;
        let mut conn = opts.connect().await.ok()?;
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .ok()
    };
    if let Ok(Some(1)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "MySQL is unreachable at {url} and CI=true: the MySQL backend tests must run in CI"
    );
    eprintln!("NOTICE: MySQL unreachable at {url}; skipping this MySQL backend test");
    None
}

async fn pool(url: &str) -> MySqlDb {
    connect_pool(url, PoolOptions::default()).await.unwrap()
}

/// The test server (a pool for the SQL suite's own queries), or `None` (skip).
struct MySql {
    url: String,
    db: MySqlDb,
}

async fn mysql() -> Option<MySql> {
    let url = mysql_url().await?;
    let db = pool(&url).await;
    Some(MySql { url, db })
}

impl Backend for MySql {
    const MAX_DELTA_DEPTH: i64 = antler_store_sql::MAX_DELTA_DEPTH;
    const LIFECYCLES: (usize, usize) = (16, 4);

    async fn open(&self) -> Stores {
        open_mysql(&self.url, PoolOptions::default()).await.unwrap()
    }

    async fn checkpointer(&self) -> Arc<dyn Checkpointer> {
        Arc::new(MySqlCheckpointer::new(pool(&self.url).await))
    }

    async fn set_raw_thread_metadata(&self, thread: &str, json: &str) {
        sqlx::query("UPDATE threads SET metadata = ? WHERE thread_id = ?")
            .bind(json)
            .bind(thread)
            .execute(&self.db.pool)
            .await
            .unwrap();
    }

    async fn blobs(&self, thread: &str) -> Blobs {
        let (full, delta, max_depth, bytes): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(base_id IS NULL), 0) AS SIGNED), \
             CAST(COALESCE(SUM(base_id IS NOT NULL), 0) AS SIGNED), \
             CAST(COALESCE(MAX(depth), 0) AS SIGNED), CAST(COALESCE(SUM(LENGTH(value)), 0) AS SIGNED) \
             FROM checkpoint_blobs WHERE thread_id = ? AND channel = 'messages'",
        )
        .bind(thread)
        .fetch_one(&self.db.pool)
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

async fn stores() -> Option<Stores> {
    Some(
        open_mysql(&mysql_url().await?, PoolOptions::default())
            .await
            .unwrap(),
    )
}

async fn stores_checkpointer() -> Option<Arc<dyn Checkpointer>> {
    Some(stores().await?.checkpoints)
}

common::backend_suites!(
    stores: super::stores(),
    checkpointer: super::stores_checkpointer(),
    sql: super::mysql(),
);

#[tokio::test]
async fn bad_urls_are_invalid_arguments() {
    // no server needed: validation happens before connecting
    for url in [
        "postgres://root@127.0.0.1/test",
        "sqlite::memory:",
        "mysql://root@127.0.0.1:notaport/test",
        "mysql://root@127.0.0.1:3306",
        "not a url",
    ] {
        let err = open_mysql(url, PoolOptions::default()).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidArgument(m) if m.contains("invalid MySQL URL")),
            "{url}: {err:?}"
        );
    }
    // the password never shows in the message
    let err = open_mysql("postgres://u:hunter2@h/db", PoolOptions::default())
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let opts = PoolOptions {
        acquire_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    // port 1 on loopback: nothing listens there
    let err = open_mysql("mysql://root@127.0.0.1:1/test", opts)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Transient(m) | StoreError::Backend(m) if m.contains("cannot connect to MySQL")),
        "{err:?}"
    );
}

#[tokio::test]
async fn statement_timeout_is_applied() {
    let Some(url) = mysql_url().await else { return };
    let db = connect_pool(
        &url,
        PoolOptions {
            max_connections: 2,
            statement_timeout: Some(Duration::from_millis(500)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let stores = stores_from_pool(db.clone());
    // ordinary work is unaffected
    let tid = uid();
    stores
        .threads
        .create(Owner("o"), Thread::new(&tid, Map::new()))
        .await
        .unwrap();
    // a statement running longer than the limit is stopped by the server
    let slow = sqlx::query_scalar::<_, i64>("SELECT SLEEP(3)")
        .fetch_one(&db.pool)
        .await;
    match slow {
        // MariaDB aborts the statement (error 1969)
        Err(_) => {}
        // MySQL's max_execution_time interrupts SLEEP, which then returns 1
        Ok(v) => assert_eq!(v, 1, "SLEEP was not interrupted"),
    }
    stores
        .threads
        .delete(Owner("o"), ThreadId(&tid))
        .await
        .unwrap();
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("expected an object, got {other}"),
    }
}

#[tokio::test]
async fn filters_with_tricky_keys_and_values() {
    let Some(url) = mysql_url().await else { return };
    let stores = open_mysql(&url, PoolOptions::default()).await.unwrap();
    let owner = format!("o-{}", uid());
    let md = obj(json!({
        "quote\"key": "it's \"quoted\"",
        "back\\slash": "a\\b",
        "a.b c": "dots and spaces",
        "ключ": "значение ✓",
        "": "empty key",
        "*": "star",
        "$.x": "path-like",
        "n": 1,
        "f": 1.5,
        "big": 9_007_199_254_740_993_i64,
        "nested": {"b": [1, {"z": null, "y": true}], "a": "x"},
        "graph_id": "g-1",
        "user_id": "U",
        "nul": null,
        "t": true,
        "s1": "1",
        "emoji": "🦀",
        "line\nbreak\ttab": "ctl\u{1}",
        "'; DROP TABLE threads; --": "x"
    }));
    let tid = format!("t-{}", uid());
    stores
        .threads
        .create(Owner(&owner), Thread::new(&tid, md.clone()))
        .await
        .unwrap();
    // a decoy that differs in every value
    let decoy = format!("t-{}", uid());
    stores
        .threads
        .create(
            Owner(&owner),
            Thread::new(
                &decoy,
                obj(json!({"n": 2, "graph_id": "G-1", "user_id": "u", "s1": 1, "nested": {"a": "x"}})),
            ),
        )
        .await
        .unwrap();
    let count = |filter: Value| {
        let stores = stores.clone();
        let owner = owner.clone();
        async move {
            let q = ThreadSearch {
                metadata: obj(filter),
                ..Default::default()
            };
            let found = stores.threads.search(Owner(&owner), &q).await.unwrap();
            let n = stores.threads.count(Owner(&owner), &q).await.unwrap();
            assert_eq!(found.len() as u64, n);
            n
        }
    };
    // the whole metadata matches itself
    assert_eq!(count(Value::Object(md.clone())).await, 1);
    // each key alone
    for (k, v) in &md {
        let mut f = Map::new();
        f.insert(k.clone(), v.clone());
        assert_eq!(count(Value::Object(f)).await, 1, "key {k:?}");
    }
    // numbers compare by value
    assert_eq!(count(json!({"n": 1.0})).await, 1);
    assert_eq!(count(json!({"n": 1})).await, 1);
    assert_eq!(count(json!({"f": 1.50})).await, 1);
    // ... but big integers are not rounded through doubles
    assert_eq!(count(json!({"big": 9_007_199_254_740_992_i64})).await, 0);
    // strings are not numbers, and compare case-sensitively
    assert_eq!(count(json!({"s1": 1})).await, 1, "the decoy has s1 = 1");
    assert_eq!(count(json!({"n": "1"})).await, 0);
    assert_eq!(count(json!({"graph_id": "G-1"})).await, 1, "only the decoy");
    assert_eq!(
        count(json!({"graph_id": "g-1"})).await,
        1,
        "only the thread"
    );
    assert_eq!(count(json!({"user_id": "u"})).await, 1);
    assert_eq!(count(json!({"emoji": "🦀"})).await, 1);
    assert_eq!(count(json!({"emoji": "🦐"})).await, 0);
    // nested objects regardless of key order, arrays element-wise, numbers by value inside
    assert_eq!(
        count(json!({"nested": {"a": "x", "b": [1.0, {"y": true, "z": null}]}})).await,
        1
    );
    assert_eq!(
        count(json!({"nested": {"a": "x", "b": [{"y": true, "z": null}, 1]}})).await,
        0
    );
    assert_eq!(count(json!({"nested": {"a": "x"}})).await, 1, "the decoy");
    // null matches an explicit null only, never a missing key
    assert_eq!(count(json!({"nul": null})).await, 1);
    assert_eq!(count(json!({"missing": null})).await, 0);
    assert_eq!(count(json!({"t": 1})).await, 0, "true is not 1");
    // SQL-looking values are data
    assert_eq!(count(json!({"n": "1' OR '1'='1"})).await, 0);
    assert_eq!(count(json!({"x') OR 1=1 -- ": 1})).await, 0);

    // values filter: only threads whose values are an object holding the keys
    let values_filter = ThreadSearch {
        values: obj(json!({"messages": [{"content": "hé \"x\""}], "k": {"b": 2, "a": 1}})),
        ..Default::default()
    };
    assert_eq!(
        stores
            .threads
            .count(Owner(&owner), &values_filter)
            .await
            .unwrap(),
        0
    );
    stores
        .threads
        .update(
            Owner(&owner),
            ThreadId(&tid),
            ThreadUpdate {
                values: Some(Some(
                    json!({"k": {"a": 1.0, "b": 2}, "messages": [{"content": "hé \"x\""}]}),
                )),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stores
        .threads
        .update(
            Owner(&owner),
            ThreadId(&decoy),
            ThreadUpdate {
                values: Some(Some(json!(["not", "an", "object"]))),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        stores
            .threads
            .count(Owner(&owner), &values_filter)
            .await
            .unwrap(),
        1
    );

    // metadata patches with odd keys merge and read back
    let t = stores
        .threads
        .patch_metadata(
            Owner(&owner),
            ThreadId(&tid),
            obj(json!({"new\"key": {"ü": [1]}, "n": 3})),
        )
        .await
        .unwrap();
    assert_eq!(t.metadata.get("new\"key"), Some(&json!({"ü": [1]})));
    assert_eq!(t.metadata.get("n"), Some(&json!(3)));
    assert_eq!(t.metadata.get("ключ"), Some(&json!("значение ✓")));
    assert_eq!(count(json!({"new\"key": {"ü": [1.0]}, "n": 3})).await, 1);

    // store items use the same comparison
    let ns = vec!["tricky".to_string(), uid()];
    stores
        .items
        .put(Owner(&owner), &ns, "k1", Value::Object(md.clone()))
        .await
        .unwrap();
    let search = |filter: Value| {
        let stores = stores.clone();
        let (owner, ns) = (owner.clone(), ns.clone());
        async move {
            let q = ItemSearch {
                namespace_prefix: ns,
                filter: obj(filter),
                limit: 10,
                offset: 0,
            };
            stores.items.search(Owner(&owner), &q).await.unwrap().len()
        }
    };
    assert_eq!(search(Value::Object(md.clone())).await, 1);
    assert_eq!(
        search(json!({"quote\"key": "it's \"quoted\"", "n": 1.0})).await,
        1
    );
    assert_eq!(search(json!({"back\\slash": "a\\\\b"})).await, 0);
    assert_eq!(
        search(json!({"nested": {"b": [1, {"z": null, "y": true}]}})).await,
        0
    );

    // huge inputs: an id list longer than the placeholder budget, a filter with too many keys
    let mut ids: Vec<String> = (0..70_000).map(|i| format!("id-{i}")).collect();
    ids.push(tid.clone());
    let q = ThreadSearch {
        ids: Some(ids),
        ..Default::default()
    };
    assert_eq!(stores.threads.count(Owner(&owner), &q).await.unwrap(), 1);
    let q = ThreadSearch {
        ids: Some(
            (0..5_000)
                .map(|i| format!("id-{i}"))
                .chain([decoy.clone()])
                .collect(),
        ),
        ..Default::default()
    };
    assert_eq!(stores.threads.count(Owner(&owner), &q).await.unwrap(), 1);
    let big: Map<String, Value> = (0..5_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let q = ThreadSearch {
        metadata: big,
        ..Default::default()
    };
    assert!(matches!(
        stores.threads.search(Owner(&owner), &q).await,
        Err(StoreError::InvalidArgument(_))
    ));
    // an id longer than the column is refused, not truncated
    let long = "x".repeat(300);
    assert!(matches!(
        stores
            .threads
            .create(Owner(&owner), Thread::new(&long, Map::new()))
            .await,
        Err(StoreError::InvalidArgument(_))
    ));

    stores.items.delete(Owner(&owner), &ns, "k1").await.unwrap();
    stores
        .threads
        .delete(Owner(&owner), ThreadId(&tid))
        .await
        .unwrap();
    stores
        .threads
        .delete(Owner(&owner), ThreadId(&decoy))
        .await
        .unwrap();
}
