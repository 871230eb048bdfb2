//! Differential tests: random data and random filters give the same answers from the
//! in-memory stores and from SQLite (thread search/count by metadata, values and status;
//! store item search by value filter and namespace prefix).

use antler_store::{
    ItemSearch, SortOrder, Stores, Thread, ThreadSearch, ThreadSortBy, ThreadStatus, ThreadUpdate,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(1.5)),
        Just(json!("1")),
        Just(json!("a")),
        Just(json!(true)),
        Just(json!(false)),
        Just(Value::Null),
        Just(json!([1, 2])),
        Just(json!([1.0, 2])),
        Just(json!([2, 1])),
        Just(json!([])),
        Just(json!({"x": "y"})),
        Just(json!({"x": "y", "n": 1})),
        Just(json!({"n": 1.0, "x": "y"})),
        Just(json!({"n": {"deep": [true, null]}})),
        Just(json!({})),
    ]
}

fn object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        prop_oneof![Just("a"), Just("b"), Just("c d")],
        scalar(),
        0..3,
    )
    .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn status() -> impl Strategy<Value = ThreadStatus> {
    prop_oneof![
        Just(ThreadStatus::Idle),
        Just(ThreadStatus::Busy),
        Just(ThreadStatus::Error)
    ]
}

#[derive(Debug, Clone)]
struct Row {
    metadata: Map<String, Value>,
    values: Option<Map<String, Value>>,
    status: ThreadStatus,
}

fn row() -> impl Strategy<Value = Row> {
    (object(), proptest::option::of(object()), status()).prop_map(|(metadata, values, status)| {
        Row {
            metadata,
            values,
            status,
        }
    })
}

async fn load(stores: &Stores, owner: &str, rows: &[Row]) {
    for (i, r) in rows.iter().enumerate() {
        let id = format!("{owner}-{i:03}");
        stores
            .threads
            .create(owner, Thread::new(&id, r.metadata.clone()))
            .await
            .unwrap();
        let update = ThreadUpdate {
            status: Some(r.status),
            values: r.values.clone().map(|v| Some(Value::Object(v))),
            ..Default::default()
        };
        stores.threads.update(owner, &id, update).await.unwrap();
        let ns = vec!["ns".to_string(), format!("n{}", i % 3)];
        stores
            .items
            .put(
                owner,
                &ns,
                &format!("k{i}"),
                Value::Object(r.metadata.clone()),
            )
            .await
            .unwrap();
    }
}

async fn thread_ids(stores: &Stores, owner: &str, q: &ThreadSearch) -> (Vec<String>, u64) {
    let found = stores.threads.search(owner, q).await.unwrap();
    let count = stores.threads.count(owner, q).await.unwrap();
    (found.into_iter().map(|t| t.thread_id).collect(), count)
}

#[test]
fn memory_and_sqlite_agree_on_filters() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sqlite = rt
        .block_on(antler_store_sql::open_sqlite_url("sqlite::memory:"))
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(
            &(
                proptest::collection::vec(row(), 0..12),
                proptest::collection::vec(
                    (object(), object(), proptest::option::of(status())),
                    1..6,
                ),
            ),
            |(rows, queries)| {
                let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let owner = format!("o{n}");
                let memory = Stores::memory();
                rt.block_on(async {
                    load(&memory, &owner, &rows).await;
                    load(&sqlite, &owner, &rows).await;
                    for (metadata, values, status) in &queries {
                        let q = ThreadSearch {
                            metadata: metadata.clone(),
                            values: values.clone(),
                            status: *status,
                            sort_by: ThreadSortBy::ThreadId,
                            sort_order: SortOrder::Asc,
                            limit: 100,
                            ..Default::default()
                        };
                        let m = thread_ids(&memory, &owner, &q).await;
                        let s = thread_ids(&sqlite, &owner, &q).await;
                        assert_eq!(m, s, "thread search {q:?}");
                        for prefix in [
                            vec![],
                            vec!["ns".to_string()],
                            vec!["ns".to_string(), "n1".to_string()],
                        ] {
                            let q = ItemSearch {
                                namespace_prefix: prefix,
                                filter: metadata.clone(),
                                limit: 100,
                                offset: 0,
                            };
                            let key = |v: Vec<antler_store::SearchItem>| {
                                let mut k: Vec<String> =
                                    v.into_iter().map(|i| i.item.key).collect();
                                k.sort();
                                k
                            };
                            let m = key(memory.items.search(&owner, &q).await.unwrap());
                            let s = key(sqlite.items.search(&owner, &q).await.unwrap());
                            assert_eq!(m, s, "item search {q:?}");
                        }
                    }
                });
                Ok(())
            },
        )
        .unwrap();
}
