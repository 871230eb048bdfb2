//! The shared contract suite: every implementation of the repository traits runs
//! [`run_all`] from its own tests (in-memory here, SQLite in `antler-store-sql`, ...).
//!
//! It panics (assert) on the first violation. Every run uses fresh ids and owners, so it can
//! run several times against the same database and alongside other data.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::records::*;
use crate::traits::*;
use crate::{StoreError, StoreResult, Stores, time};

/// Runs every contract check against `stores` (the checkpointer has its own suite in
/// `antler_graph::conformance`).
pub async fn run_all(stores: &Stores) {
    assistants(stores).await;
    threads(stores).await;
    runs(stores).await;
    run_leases(stores).await;
    run_queue(stores).await;
    run_queue_not_before(stores).await;
    run_cancel_requests(stores).await;
    run_put_if_idle(stores).await;
    run_threads_are_per_owner(stores).await;
    replicas(stores).await;
    run_events(stores).await;
    feedback(stores).await;
    items(stores).await;
}

fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("expected an object, got {other}"),
    }
}

fn sfx() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Distinct, increasing timestamps (the stores keep what the caller gives them).
fn at(base: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    base + chrono::Duration::seconds(secs)
}

fn base_time() -> DateTime<Utc> {
    time::now() - chrono::Duration::days(1)
}

fn is_not_found<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::NotFound))
}

fn is_conflict<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

fn is_invalid<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::InvalidArgument(_)))
}

// ------------------------------------------------------------------------ assistants

/// Assistant contract: create/conflict, visibility of system assistants, versions, search.
pub async fn assistants(stores: &Stores) {
    let s = &stores.assistants;
    let x = sfx();
    let alice = format!("alice-{x}");
    let bob = format!("bob-{x}");
    let graph = format!("graph-{x}");
    let other_graph = format!("other-{x}");
    let base = base_time();

    // a system assistant: visible to everyone, writable only by the system owner
    let mut sys = Assistant::system(&graph);
    sys.created_at = at(base, 0);
    sys.updated_at = sys.created_at;
    let created = ok(s.create(SYSTEM_OWNER, sys.clone()).await, "create system");
    assert_eq!(created.assistant_id, system_assistant_id(&graph));
    assert_eq!(created.owner, SYSTEM_OWNER);
    let got =
        ok(s.get(&alice, &sys.assistant_id).await, "get system").expect("system visible to alice");
    assert_eq!(got, created);
    assert!(ok(s.get(&bob, &sys.assistant_id).await, "get").is_some());
    assert!(
        is_conflict(s.create(&alice, sys.clone()).await),
        "duplicate id must conflict"
    );
    assert!(
        is_not_found(s.delete(&alice, &sys.assistant_id).await),
        "users cannot delete system assistants"
    );
    assert!(is_not_found(
        s.update(&alice, &sys.assistant_id, AssistantPatch::default())
            .await
    ));

    // alice's own assistant
    let id = uuid::Uuid::new_v4().to_string();
    let mut a = Assistant::new(&id, &graph, format!("Fast One {x}"));
    a.config = json!({"configurable": {"delay": 0.05}});
    a.context = json!({"delay": 0.05});
    a.metadata = obj(json!({"k": "v", "team": "red"}));
    a.created_at = at(base, 10);
    a.updated_at = a.created_at;
    let created = ok(s.create(&alice, a.clone()).await, "create");
    assert_eq!(created.owner, alice);
    assert_eq!(created.version, 1);
    let got = ok(s.get(&alice, &id).await, "get").expect("own assistant");
    assert_eq!(got, created);
    assert_eq!(got.config, a.config);
    assert_eq!(got.description, None);
    assert!(
        ok(s.get(&bob, &id).await, "get other").is_none(),
        "bob must not see alice's assistant"
    );
    assert!(ok(s.get(&alice, "no-such-assistant").await, "get missing").is_none());

    // ids are per owner: bob's assistant of the same id is another assistant, with its own
    // versions; nothing bob does to it reaches alice's
    let mut bobs = Assistant::new(&id, &other_graph, format!("Bob's {x}"));
    bobs.created_at = at(base, 11);
    bobs.updated_at = bobs.created_at;
    let bobs = ok(s.create(&bob, bobs).await, "bob, same id");
    assert_eq!(bobs.owner, bob);
    assert!(
        is_conflict(s.create(&bob, bobs.clone()).await),
        "bob's own id"
    );
    ok(
        s.update(
            &bob,
            &id,
            AssistantPatch {
                name: Some("renamed by bob".into()),
                ..Default::default()
            },
        )
        .await,
        "bob updates his",
    );
    assert_eq!(
        ok(
            s.versions(&bob, &id, &VersionQuery::default()).await,
            "bob's versions"
        )
        .len(),
        2
    );
    assert_eq!(
        ok(
            s.versions(&alice, &id, &VersionQuery::default()).await,
            "alice's"
        )
        .len(),
        1
    );
    assert_eq!(
        ok(s.get(&alice, &id).await, "alice's").expect("alice's"),
        created
    );
    ok(s.delete(&bob, &id).await, "bob deletes his");
    assert_eq!(
        ok(s.get(&alice, &id).await, "alice's stays").expect("alice's"),
        created
    );
    assert!(ok(s.get(&bob, &id).await, "bob's gone").is_none());

    // update = new version; metadata merges, config replaces
    let patched = ok(
        s.update(
            &alice,
            &id,
            AssistantPatch {
                metadata: Some(obj(json!({"k": "v2"}))),
                description: Some("patched".into()),
                ..Default::default()
            },
        )
        .await,
        "update",
    );
    assert_eq!(patched.version, 2);
    assert_eq!(patched.metadata, obj(json!({"k": "v2", "team": "red"})));
    assert_eq!(patched.description.as_deref(), Some("patched"));
    assert_eq!(patched.config, a.config);
    assert_eq!(patched.created_at, a.created_at);
    assert!(patched.updated_at > a.updated_at);
    assert_eq!(
        ok(s.get(&alice, &id).await, "get").expect("exists"),
        patched
    );
    assert!(is_not_found(
        s.update(&bob, &id, AssistantPatch::default()).await
    ));
    assert!(is_not_found(
        s.update(&alice, "missing", AssistantPatch::default()).await
    ));

    let p3 = ok(
        s.update(
            &alice,
            &id,
            AssistantPatch {
                config: Some(json!({"configurable": {"delay": 1}})),
                ..Default::default()
            },
        )
        .await,
        "update 3",
    );
    assert_eq!(p3.version, 3);
    assert_eq!(p3.config, json!({"configurable": {"delay": 1}}));
    assert_eq!(p3.description.as_deref(), Some("patched"));

    // versions newest first, filter and paging
    let versions = ok(
        s.versions(&alice, &id, &VersionQuery::default()).await,
        "versions",
    );
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(versions[2].metadata, obj(json!({"k": "v", "team": "red"})));
    assert_eq!(versions[2].created_at, a.created_at);
    assert_eq!(versions[0].config, json!({"configurable": {"delay": 1}}));
    let v1 = ok(
        s.versions(
            &alice,
            &id,
            &VersionQuery {
                metadata: obj(json!({"k": "v"})),
                ..Default::default()
            },
        )
        .await,
        "versions filtered",
    );
    assert_eq!(v1.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1]);
    let paged = ok(
        s.versions(
            &alice,
            &id,
            &VersionQuery {
                limit: 1,
                offset: 1,
                ..Default::default()
            },
        )
        .await,
        "versions paged",
    );
    assert_eq!(paged.iter().map(|v| v.version).collect::<Vec<_>>(), vec![2]);
    assert!(is_not_found(
        s.versions(&bob, &id, &VersionQuery::default()).await
    ));
    let sys_versions = ok(
        s.versions(&bob, &sys.assistant_id, &VersionQuery::default())
            .await,
        "sys versions",
    );
    assert_eq!(sys_versions.len(), 1);

    // set_latest
    let back = ok(s.set_latest(&alice, &id, 1).await, "set_latest");
    assert_eq!(back.version, 1);
    assert_eq!(back.metadata, obj(json!({"k": "v", "team": "red"})));
    assert_eq!(back.description, None);
    assert_eq!(back.config, a.config);
    assert_eq!(
        ok(s.get(&alice, &id).await, "get").expect("exists").version,
        1
    );
    assert!(is_not_found(s.set_latest(&alice, &id, 42).await));
    assert!(is_not_found(s.set_latest(&bob, &id, 1).await));
    // the next update still takes max(version) + 1
    let p4 = ok(
        s.update(
            &alice,
            &id,
            AssistantPatch {
                name: Some(format!("Renamed {x}")),
                ..Default::default()
            },
        )
        .await,
        "update 4",
    );
    assert_eq!(p4.version, 4);
    assert_eq!(p4.metadata, obj(json!({"k": "v", "team": "red"})));

    // a second assistant of alice on another graph, and one of bob
    let mut b = Assistant::new(
        uuid::Uuid::new_v4().to_string(),
        &other_graph,
        format!("beta {x}"),
    );
    b.metadata = obj(json!({"team": "blue"}));
    b.created_at = at(base, 20);
    b.updated_at = b.created_at;
    ok(s.create(&alice, b.clone()).await, "create b");
    let mut c = Assistant::new(
        uuid::Uuid::new_v4().to_string(),
        &graph,
        format!("bob's {x}"),
    );
    c.created_at = at(base, 30);
    c.updated_at = c.created_at;
    ok(s.create(&bob, c.clone()).await, "create c");

    // search: graph filter, visibility, totals, sort, paging
    let q = AssistantSearch {
        graph_id: Some(graph.clone()),
        ..Default::default()
    };
    let (found, total) = ok(s.search(&alice, &q).await, "search graph");
    assert_eq!(total, 2);
    let ids: Vec<&str> = found.iter().map(|a| a.assistant_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![id.as_str(), sys.assistant_id.as_str()],
        "created_at desc by default"
    );
    assert_eq!(ok(s.count(&alice, &q).await, "count"), 2);
    assert_eq!(ok(s.count(&bob, &q).await, "count bob"), 2);
    let (found, _) = ok(
        s.search(
            &alice,
            &AssistantSearch {
                sort_order: SortOrder::Asc,
                ..q.clone()
            },
        )
        .await,
        "search asc",
    );
    assert_eq!(found[0].assistant_id, sys.assistant_id);
    let (found, total) = ok(
        s.search(
            &alice,
            &AssistantSearch {
                limit: 1,
                offset: 1,
                ..q.clone()
            },
        )
        .await,
        "paged",
    );
    assert_eq!(total, 2);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].assistant_id, sys.assistant_id);

    let q = AssistantSearch {
        metadata: obj(json!({"team": "blue"})),
        ..Default::default()
    };
    let (found, total) = ok(s.search(&alice, &q).await, "search metadata");
    assert_eq!((found.len(), total), (1, 1));
    assert_eq!(found[0].assistant_id, b.assistant_id);
    assert_eq!(ok(s.count(&bob, &q).await, "count bob blue"), 0);

    let q = AssistantSearch {
        name: Some(format!("BETA {x}")),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "count by name"), 1);
    let q = AssistantSearch {
        name: Some(x.clone()),
        sort_by: AssistantSortBy::Name,
        sort_order: SortOrder::Asc,
        ..Default::default()
    };
    let (found, _) = ok(s.search(&alice, &q).await, "search by name");
    let names: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        vec![format!("Renamed {x}"), format!("beta {x}"), graph.clone()],
        "bob's is hidden"
    );

    // delete removes the assistant and its versions
    assert!(is_not_found(s.delete(&bob, &id).await));
    ok(s.delete(&alice, &id).await, "delete");
    assert!(ok(s.get(&alice, &id).await, "get deleted").is_none());
    assert!(is_not_found(s.delete(&alice, &id).await));
    assert!(is_not_found(
        s.versions(&alice, &id, &VersionQuery::default()).await
    ));
    // the id can be reused after delete
    ok(s.create(&alice, a.clone()).await, "re-create");
    let versions = ok(
        s.versions(&alice, &id, &VersionQuery::default()).await,
        "versions after re-create",
    );
    assert_eq!(versions.len(), 1);
    ok(s.delete(&alice, &id).await, "cleanup");
    ok(s.delete(&alice, &b.assistant_id).await, "cleanup b");
    ok(s.delete(&bob, &c.assistant_id).await, "cleanup c");
    ok(
        s.delete(SYSTEM_OWNER, &sys.assistant_id).await,
        "cleanup system",
    );
}

// ------------------------------------------------------------------------ threads

/// Thread contract: create/conflict, owner isolation, metadata merge, state updates, search,
/// count, copy, delete.
pub async fn threads(stores: &Stores) {
    let s = &stores.threads;
    let x = sfx();
    let alice = format!("alice-{x}");
    let bob = format!("bob-{x}");
    let base = base_time();

    let mk = |i: i64, md: Value| {
        let mut t = Thread::new(format!("t{i}-{x}"), obj(md));
        t.created_at = at(base, i);
        t.updated_at = at(base, 100 - i);
        t.state_updated_at = t.created_at;
        t
    };
    let t1 = ok(
        s.create(&alice, mk(1, json!({"owner": "alice", "n": 1})))
            .await,
        "create t1",
    );
    assert_eq!(t1.owner, alice);
    assert_eq!(t1.status, ThreadStatus::Idle);
    assert_eq!(t1.values, Some(Value::Null));
    assert_eq!(t1.error, None);
    let t2 = ok(
        s.create(&alice, mk(2, json!({"n": 2, "tag": {"a": [1, 2]}})))
            .await,
        "create t2",
    );
    let t3 = ok(s.create(&alice, mk(3, json!({"n": 3}))).await, "create t3");
    let tb = ok(
        s.create(&bob, mk(4, json!({"owner": "alice"}))).await,
        "create bob's",
    );
    assert!(is_conflict(s.create(&alice, mk(1, json!({}))).await));
    // ids are per owner: bob's thread of the same id is another thread
    let bobs_t1 = ok(
        s.create(&bob, mk(1, json!({"mine": "bob"}))).await,
        "bob, same id",
    );
    assert_eq!(bobs_t1.owner, bob);
    let mut both = vec![alice.clone(), bob.clone()];
    both.sort();
    assert_eq!(ok(s.owners_of(&t1.thread_id).await, "owners"), both);
    assert!(ok(s.owners_of("no-such-thread").await, "none").is_empty());
    assert_eq!(
        ok(s.get(&alice, &t1.thread_id).await, "alice's t1").map(|t| t.metadata),
        Some(t1.metadata.clone())
    );
    ok(s.delete(&bob, &bobs_t1.thread_id).await, "bob deletes his");
    assert!(ok(s.get(&alice, &t1.thread_id).await, "alice's stays").is_some());

    let got = ok(s.get(&alice, &t1.thread_id).await, "get").expect("own thread");
    assert_eq!(got, t1);
    let wire = serde_json::to_value(&got).unwrap_or(Value::Null);
    assert_eq!(wire["values"], Value::Null);
    assert!(wire.get("error").is_none());
    assert!(ok(s.get(&bob, &t1.thread_id).await, "get other").is_none());
    assert!(ok(s.get(&alice, "missing").await, "get missing").is_none());

    // metadata merge
    let p = ok(
        s.patch_metadata(
            &alice,
            &t1.thread_id,
            obj(json!({"title": "renamed", "n": 10})),
        )
        .await,
        "patch",
    );
    assert_eq!(
        p.metadata,
        obj(json!({"owner": "alice", "n": 10, "title": "renamed"}))
    );
    assert!(
        p.updated_at > t1.updated_at || p.updated_at >= time::now() - chrono::Duration::minutes(1)
    );
    assert_eq!(p.state_updated_at, t1.state_updated_at);
    assert_eq!(p.created_at, t1.created_at);
    assert!(is_not_found(
        s.patch_metadata(&bob, &t1.thread_id, Map::new()).await
    ));
    assert!(is_not_found(
        s.patch_metadata(&alice, "missing", Map::new()).await
    ));

    // state updates
    let u = ok(
        s.update(
            &alice,
            &t1.thread_id,
            ThreadUpdate {
                status: Some(ThreadStatus::Busy),
                metadata: Some(obj(json!({"graph_id": "echo"}))),
                ..Default::default()
            },
        )
        .await,
        "set busy",
    );
    assert_eq!(u.status, ThreadStatus::Busy);
    assert_eq!(u.metadata.get("graph_id"), Some(&json!("echo")));
    assert_eq!(
        u.state_updated_at, t1.state_updated_at,
        "status alone does not move state_updated_at"
    );
    let values = json!({"messages": [{"type": "human", "content": "hi"}], "title": "hi"});
    let u = ok(
        s.update(
            &alice,
            &t1.thread_id,
            ThreadUpdate {
                status: Some(ThreadStatus::Interrupted),
                values: Some(Some(values.clone())),
                error: Some(Some(Value::Null)),
                interrupts: Some(Some(json!({"task": [{"id": "i1", "value": "approve?"}]}))),
                config: Some(json!({"configurable": {}})),
                metadata: None,
            },
        )
        .await,
        "set state",
    );
    assert_eq!(u.status, ThreadStatus::Interrupted);
    assert_eq!(u.values, Some(values.clone()));
    assert_eq!(u.error, Some(Value::Null));
    assert!(u.state_updated_at > t1.state_updated_at);
    let got = ok(s.get(&alice, &t1.thread_id).await, "get").expect("exists");
    assert_eq!(got, u);
    let wire = serde_json::to_value(&got).unwrap_or(Value::Null);
    assert_eq!(wire["error"], Value::Null);
    assert_eq!(wire["interrupts"]["task"][0]["id"], json!("i1"));
    // remove interrupts key
    let u = ok(
        s.update(
            &alice,
            &t1.thread_id,
            ThreadUpdate {
                interrupts: Some(None),
                ..Default::default()
            },
        )
        .await,
        "clear interrupts",
    );
    assert_eq!(u.interrupts, None);
    assert_eq!(u.values, Some(values.clone()));
    assert!(is_not_found(
        s.update(&bob, &t1.thread_id, ThreadUpdate::default()).await
    ));

    // search
    let all = ok(
        s.search(&alice, &ThreadSearch::default()).await,
        "search all",
    );
    let ids: Vec<&str> = all.iter().map(|t| t.thread_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            t3.thread_id.as_str(),
            t2.thread_id.as_str(),
            t1.thread_id.as_str()
        ],
        "created_at desc"
    );
    assert_eq!(
        ok(s.count(&alice, &ThreadSearch::default()).await, "count"),
        3
    );
    assert_eq!(
        ok(s.count(&bob, &ThreadSearch::default()).await, "count bob"),
        1
    );

    let q = ThreadSearch {
        metadata: obj(json!({"owner": "alice"})),
        ..Default::default()
    };
    let found = ok(s.search(&alice, &q).await, "search metadata");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, t1.thread_id);
    let found = ok(s.search(&bob, &q).await, "search metadata bob");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, tb.thread_id);

    let q = ThreadSearch {
        metadata: obj(json!({"tag": {"a": [1, 2]}})),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "count nested"), 1);
    let q = ThreadSearch {
        metadata: obj(json!({"n": 2})),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "count number"), 1);
    let q = ThreadSearch {
        metadata: obj(json!({"n": "2"})),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "string is not number"), 0);
    let q = ThreadSearch {
        metadata: obj(json!({"n": 2, "missing": 1})),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "all keys must match"), 0);

    let q = ThreadSearch {
        values: obj(json!({"title": "hi"})),
        ..Default::default()
    };
    let found = ok(s.search(&alice, &q).await, "search values");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, t1.thread_id);

    let q = ThreadSearch {
        status: Some(ThreadStatus::Idle),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "count idle"), 2);
    let q = ThreadSearch {
        status: Some(ThreadStatus::Interrupted),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "count interrupted"), 1);

    let q = ThreadSearch {
        ids: Some(vec![t2.thread_id.clone(), tb.thread_id.clone()]),
        ..Default::default()
    };
    let found = ok(s.search(&alice, &q).await, "search ids");
    assert_eq!(found.len(), 1, "bob's thread is not alice's");
    assert_eq!(found[0].thread_id, t2.thread_id);
    let q = ThreadSearch {
        ids: Some(vec![]),
        ..Default::default()
    };
    assert_eq!(ok(s.count(&alice, &q).await, "empty id list"), 0);

    let q = ThreadSearch {
        sort_by: ThreadSortBy::ThreadId,
        sort_order: SortOrder::Asc,
        ..Default::default()
    };
    let found = ok(s.search(&alice, &q).await, "sort thread_id");
    let ids: Vec<&str> = found.iter().map(|t| t.thread_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            t1.thread_id.as_str(),
            t2.thread_id.as_str(),
            t3.thread_id.as_str()
        ]
    );
    let q = ThreadSearch {
        sort_by: ThreadSortBy::UpdatedAt,
        sort_order: SortOrder::Asc,
        limit: 2,
        ..Default::default()
    };
    let found = ok(s.search(&alice, &q).await, "sort updated_at");
    let ids: Vec<&str> = found.iter().map(|t| t.thread_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![t3.thread_id.as_str(), t2.thread_id.as_str()],
        "t1 was updated last"
    );
    let q = ThreadSearch {
        sort_by: ThreadSortBy::StateUpdatedAt,
        sort_order: SortOrder::Desc,
        limit: 1,
        ..Default::default()
    };
    assert_eq!(
        ok(s.search(&alice, &q).await, "sort state_updated_at")[0].thread_id,
        t1.thread_id
    );
    let q = ThreadSearch {
        sort_by: ThreadSortBy::Status,
        sort_order: SortOrder::Desc,
        limit: 1,
        ..Default::default()
    };
    assert_eq!(
        ok(s.search(&alice, &q).await, "sort status")[0].thread_id,
        t1.thread_id,
        "interrupted > idle"
    );
    let q = ThreadSearch {
        limit: 1,
        offset: 2,
        ..Default::default()
    };
    let found = ok(s.search(&alice, &q).await, "paging");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, t1.thread_id);
    let q = ThreadSearch {
        limit: 5,
        offset: 10,
        ..Default::default()
    };
    assert!(ok(s.search(&alice, &q).await, "past the end").is_empty());

    // copy
    let new_id = format!("copy-{x}");
    let c = ok(s.copy(&alice, &t1.thread_id, &new_id).await, "copy");
    assert_eq!(c.thread_id, new_id);
    assert_eq!(c.owner, alice);
    assert_eq!(c.metadata, u.metadata);
    assert_eq!(c.values, u.values);
    assert_eq!(c.status, ThreadStatus::Interrupted);
    assert_eq!(
        ok(s.get(&alice, &new_id).await, "get copy").expect("copy exists"),
        c
    );
    assert!(is_conflict(s.copy(&alice, &t1.thread_id, &new_id).await));
    assert!(is_not_found(
        s.copy(&bob, &t1.thread_id, &format!("bobcopy-{x}")).await
    ));
    assert!(is_not_found(
        s.copy(&alice, "missing", &format!("nocopy-{x}")).await
    ));
    ok(
        s.update(
            &alice,
            &t2.thread_id,
            ThreadUpdate {
                status: Some(ThreadStatus::Busy),
                ..Default::default()
            },
        )
        .await,
        "busy",
    );
    let c2 = ok(
        s.copy(&alice, &t2.thread_id, &format!("copy2-{x}")).await,
        "copy busy",
    );
    assert_eq!(c2.status, ThreadStatus::Idle, "a copy is never busy");

    // delete
    assert!(is_not_found(s.delete(&bob, &t1.thread_id).await));
    ok(s.delete(&alice, &t1.thread_id).await, "delete");
    assert!(ok(s.get(&alice, &t1.thread_id).await, "get deleted").is_none());
    assert!(is_not_found(s.delete(&alice, &t1.thread_id).await));
    for id in [&t2.thread_id, &t3.thread_id, &new_id, &c2.thread_id] {
        ok(s.delete(&alice, id).await, "cleanup");
    }
    ok(s.delete(&bob, &tb.thread_id).await, "cleanup bob");
    assert_eq!(
        ok(
            s.count(&alice, &ThreadSearch::default()).await,
            "count after"
        ),
        0
    );
}

// ------------------------------------------------------------------------ runs

/// RunStore contract (the seeds' in full + queue helpers).
pub async fn runs(stores: &Stores) {
    let s = &stores.runs;
    let x = sfx();
    let alice = format!("alice-{x}");
    let bob = format!("bob-{x}");
    let thread = format!("thread-{x}");
    let other_thread = format!("thread2-{x}");
    let base = base_time();

    let mk = |i: i64, thread: &str, owner: &str| {
        let mut r = Run::new(format!("r{i}-{x}"), thread, "asst", owner);
        r.created_at = at(base, i);
        r.updated_at = r.created_at;
        r
    };
    let mut r1 = mk(1, &thread, &alice);
    r1.metadata = obj(json!({"graph_id": "echo"}));
    r1.kwargs = json!({"input": {"messages": []}, "temporary": false});
    r1.multitask_strategy = MultitaskStrategy::Reject;
    r1.model_name = Some("gpt-x".into());
    ok(s.put(&r1).await, "put r1");
    assert!(is_conflict(s.put(&r1).await), "duplicate run id");
    let got = ok(s.get(&alice, &r1.run_id).await, "get").expect("own run");
    assert_eq!(got, r1, "round trip keeps every field");
    assert!(ok(s.get(&bob, &r1.run_id).await, "get other").is_none());
    assert!(ok(s.get(&alice, "missing").await, "get missing").is_none());

    let r2 = mk(2, &thread, &alice);
    let mut r3 = mk(3, &thread, &alice);
    r3.temporary = true;
    let r4 = mk(4, &other_thread, &alice);
    let rb = mk(5, &thread, &bob);
    for r in [&r2, &r3, &r4, &rb] {
        ok(s.put(r).await, "put");
    }
    assert!(
        ok(s.get(&alice, &r3.run_id).await, "get r3")
            .expect("r3")
            .temporary
    );

    // list by thread: newest first, owner-filtered, paging, status
    let listed = ok(
        s.list_by_thread(&alice, &thread, &RunListQuery::default())
            .await,
        "list",
    );
    let ids: Vec<&str> = listed.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(
        ids,
        vec![r3.run_id.as_str(), r2.run_id.as_str(), r1.run_id.as_str()]
    );
    let listed = ok(
        s.list_by_thread(
            &alice,
            &thread,
            &RunListQuery {
                limit: 1,
                offset: 1,
                status: None,
            },
        )
        .await,
        "page",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].run_id, r2.run_id);
    assert_eq!(
        ok(
            s.list_by_thread(&bob, &thread, &RunListQuery::default())
                .await,
            "bob"
        )
        .len(),
        1
    );

    // queue helpers
    let active =
        ok(s.active_for_thread(&alice, &thread).await, "active").expect("pending runs are active");
    assert_eq!(active.run_id, r1.run_id, "oldest first");
    assert_eq!(
        ok(s.next_pending_for_thread(&alice, &thread).await, "next")
            .expect("pending")
            .run_id,
        r1.run_id
    );

    // update_status: running sets started_at; CAS transition
    assert!(ok(
        s.transition(&r1.run_id, &[RunStatus::Pending], RunStatus::Running, None)
            .await,
        "claim"
    ));
    assert!(!ok(
        s.transition(&r1.run_id, &[RunStatus::Pending], RunStatus::Running, None)
            .await,
        "second claim fails"
    ));
    assert!(!ok(
        s.transition("missing", &[RunStatus::Pending], RunStatus::Running, None)
            .await,
        "missing"
    ));
    let running = ok(s.get(&alice, &r1.run_id).await, "get").expect("r1");
    assert_eq!(running.status, RunStatus::Running);
    assert!(running.started_at.is_some());
    assert!(running.finished_at.is_none());
    assert!(running.updated_at > r1.updated_at);
    let listed = ok(
        s.list_by_thread(
            &alice,
            &thread,
            &RunListQuery {
                status: Some(RunStatus::Running),
                ..Default::default()
            },
        )
        .await,
        "list running",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(
        ok(s.next_pending_for_thread(&alice, &thread).await, "next")
            .expect("r2")
            .run_id,
        r2.run_id
    );
    // one running run per thread, enforced by the store
    assert!(
        is_conflict(s.update_status(&r3.run_id, RunStatus::Running, None).await),
        "a second running run on a thread is refused"
    );
    // a newer running run is preferred over older pending ones
    assert!(ok(
        s.update_status(&r1.run_id, RunStatus::Success, None).await,
        "r1 success"
    ));
    assert!(ok(
        s.update_status(&r3.run_id, RunStatus::Running, None).await,
        "r3 running"
    ));
    let active = ok(s.active_for_thread(&alice, &thread).await, "active").expect("r3 running");
    assert_eq!(active.run_id, r3.run_id);
    assert!(!ok(
        s.update_status("missing", RunStatus::Error, None).await,
        "update missing"
    ));

    // concurrent claims: exactly one caller moves a pending run to running
    let contested = mk(6, &other_thread, &alice);
    ok(s.put(&contested).await, "put contested");
    let mut claims = Vec::new();
    for _ in 0..8 {
        let runs = stores.runs.clone();
        let id = contested.run_id.clone();
        claims.push(tokio::spawn(async move {
            runs.transition(&id, &[RunStatus::Pending], RunStatus::Running, None)
                .await
        }));
    }
    let mut won = 0;
    for c in claims {
        match c.await {
            Ok(r) => won += usize::from(ok(r, "concurrent claim")),
            Err(e) => panic!("claim task failed: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one concurrent claim succeeds");
    ok(
        s.delete(&alice, &contested.run_id).await,
        "delete contested",
    );

    // inflight / pending scans
    let pending = ok(s.list_pending(None).await, "pending");
    let mine: Vec<&str> = pending
        .iter()
        .filter(|r| r.run_id.ends_with(&x))
        .map(|r| r.run_id.as_str())
        .collect();
    assert_eq!(
        mine,
        vec![r2.run_id.as_str(), r4.run_id.as_str(), rb.run_id.as_str()]
    );
    let pending = ok(s.list_pending(Some(at(base, 3))).await, "pending before");
    let mine: Vec<&str> = pending
        .iter()
        .filter(|r| r.run_id.ends_with(&x))
        .map(|r| r.run_id.as_str())
        .collect();
    assert_eq!(mine, vec![r2.run_id.as_str()]);
    let inflight = ok(s.list_inflight(None).await, "inflight");
    let mine: Vec<&str> = inflight
        .iter()
        .filter(|r| r.run_id.ends_with(&x))
        .map(|r| r.run_id.as_str())
        .collect();
    assert_eq!(
        mine,
        vec![
            r2.run_id.as_str(),
            r3.run_id.as_str(),
            r4.run_id.as_str(),
            rb.run_id.as_str()
        ]
    );

    // terminal status sets finished_at and error
    assert!(ok(
        s.update_status(&r2.run_id, RunStatus::Error, Some("boom"))
            .await,
        "r2 error"
    ));
    let r2g = ok(s.get(&alice, &r2.run_id).await, "get r2").expect("r2");
    assert_eq!(r2g.status, RunStatus::Error);
    assert_eq!(r2g.error.as_deref(), Some("boom"));
    assert!(r2g.finished_at.is_some());

    // model name, progress, completion
    assert!(ok(
        s.update_model_name(&r3.run_id, Some("model-b")).await,
        "model"
    ));
    assert!(!ok(
        s.update_model_name("missing", Some("m")).await,
        "model missing"
    ));
    ok(
        s.update_progress(
            &r3.run_id,
            &RunProgress {
                total_tokens: Some(7),
                llm_call_count: Some(1),
                last_ai_message: Some("partial".into()),
                ..Default::default()
            },
        )
        .await,
        "progress",
    );
    ok(
        s.update_progress("missing", &RunProgress::default()).await,
        "progress on a missing run is a no-op",
    );
    let r3g = ok(s.get(&alice, &r3.run_id).await, "get r3").expect("r3");
    assert_eq!(
        r3g.status,
        RunStatus::Running,
        "progress never changes status"
    );
    assert_eq!((r3g.total_tokens, r3g.llm_call_count), (7, 1));
    assert_eq!(r3g.last_ai_message.as_deref(), Some("partial"));
    assert_eq!(r3g.model_name.as_deref(), Some("model-b"));

    let done = RunCompletion {
        status: Some(RunStatus::Success),
        total_input_tokens: 10,
        total_output_tokens: 5,
        total_tokens: 15,
        llm_call_count: 2,
        lead_agent_tokens: 9,
        subagent_tokens: 4,
        middleware_tokens: 2,
        message_count: 3,
        last_ai_message: Some("bye".into()),
        first_human_message: Some("hi".into()),
        error: None,
    };
    assert!(ok(
        s.update_completion(&r3.run_id, &done).await,
        "completion"
    ));
    assert!(!ok(
        s.update_completion("missing", &done).await,
        "completion missing"
    ));
    let r3g = ok(s.get(&alice, &r3.run_id).await, "get r3").expect("r3");
    assert_eq!(r3g.status, RunStatus::Success);
    assert_eq!(
        (
            r3g.total_input_tokens,
            r3g.total_output_tokens,
            r3g.total_tokens,
            r3g.llm_call_count
        ),
        (10, 5, 15, 2)
    );
    assert_eq!(
        (
            r3g.lead_agent_tokens,
            r3g.subagent_tokens,
            r3g.middleware_tokens,
            r3g.message_count
        ),
        (9, 4, 2, 3)
    );
    assert_eq!(r3g.last_ai_message.as_deref(), Some("bye"));
    assert_eq!(r3g.first_human_message.as_deref(), Some("hi"));
    assert!(r3g.finished_at.is_some());
    let r1_done = RunCompletion {
        total_tokens: 100,
        total_input_tokens: 60,
        total_output_tokens: 40,
        lead_agent_tokens: 100,
        ..Default::default()
    };
    assert!(ok(
        s.update_completion(&r1.run_id, &r1_done).await,
        "r1 completion"
    ));
    assert_eq!(
        ok(s.get(&alice, &r1.run_id).await, "r1")
            .expect("r1")
            .status,
        RunStatus::Success,
        "status kept when None"
    );

    // aggregation: r1 (gpt-x, 100, success), r2 (error, 0 tokens, unknown), r3 (model-b, 15)
    let agg = ok(
        s.aggregate_tokens_by_thread(&alice, &thread, false).await,
        "aggregate",
    );
    assert_eq!(agg.total_runs, 3);
    assert_eq!(agg.total_tokens, 115);
    assert_eq!(agg.total_input_tokens, 70);
    assert_eq!(agg.total_output_tokens, 45);
    assert_eq!(
        agg.by_model.get("gpt-x"),
        Some(&ModelTokens {
            tokens: 100,
            runs: 1
        })
    );
    assert_eq!(
        agg.by_model.get("model-b"),
        Some(&ModelTokens {
            tokens: 15,
            runs: 1
        })
    );
    assert_eq!(
        agg.by_model.get("unknown"),
        Some(&ModelTokens { tokens: 0, runs: 1 })
    );
    assert_eq!(
        agg.by_caller,
        CallerTokens {
            lead_agent: 109,
            subagent: 4,
            middleware: 2
        }
    );
    assert_eq!(
        ok(
            s.aggregate_tokens_by_thread(&bob, &thread, false).await,
            "bob agg"
        )
        .total_runs,
        0
    );
    assert_eq!(
        ok(
            s.aggregate_tokens_by_thread(&bob, &thread, true).await,
            "bob agg active"
        )
        .total_runs,
        1
    );
    let empty = ok(
        s.aggregate_tokens_by_thread(&alice, "no-thread", true)
            .await,
        "empty agg",
    );
    assert_eq!(empty, TokenAggregate::default());

    assert!(
        ok(s.active_for_thread(&bob, &thread).await, "bob's")
            .is_some_and(|r| r.run_id == rb.run_id)
    );
    assert!(ok(s.active_for_thread(&alice, "no-thread").await, "none").is_none());

    // delete
    assert!(is_not_found(s.delete(&bob, &r1.run_id).await));
    ok(s.delete(&alice, &r1.run_id).await, "delete");
    assert!(ok(s.get(&alice, &r1.run_id).await, "deleted").is_none());
    assert!(is_not_found(s.delete(&alice, &r1.run_id).await));
    assert_eq!(
        ok(
            s.delete_by_thread(&alice, &thread).await,
            "delete by thread"
        ),
        2
    );
    assert_eq!(
        ok(
            s.list_by_thread(&bob, &thread, &RunListQuery::default())
                .await,
            "bob kept"
        )
        .len(),
        1
    );
    assert_eq!(
        ok(
            s.delete_by_thread(&alice, &other_thread).await,
            "delete other"
        ),
        1
    );
    assert_eq!(ok(s.delete_by_thread(&bob, &thread).await, "delete bob"), 1);
}

/// A creation time in 1971, older than every real run, so the queue hands a suite's runs out
/// first; random per call, so suites sharing a database do not tie.
fn ancient_base() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(
        86_400 * 365 + (uuid::Uuid::new_v4().as_u128() % 1_000_000) as i64 * 10,
        0,
    )
    .unwrap_or_default()
}

/// Claims `limit` queued runs, keeping the ones this test made (suffix `x`). Other queued
/// runs could only be leftovers of an earlier, interrupted run of this test: their
/// timestamps are in 1971 too, so they are older than any real run; they are finished.
async fn claim_mine(s: &dyn RunStore, x: &str, worker: &str, limit: usize) -> Vec<Run> {
    let later = time::now() + chrono::Duration::seconds(60);
    let got = ok(s.claim_next(worker, later, limit).await, "claim_next");
    let (mine, foreign): (Vec<Run>, Vec<Run>) =
        got.into_iter().partition(|r| r.run_id.ends_with(x));
    for r in foreign {
        assert!(
            r.created_at < DateTime::<Utc>::from_timestamp(86_400 * 731, 0).unwrap_or_default(),
            "claim_next took a run that is not the oldest queued one: {}",
            r.run_id
        );
        ok(
            s.update_status(&r.run_id, RunStatus::Success, None).await,
            "finish leftover",
        );
    }
    mine
}

/// A queued run whose `lease_expires_at` is set is not claimed before that time (its
/// `after_seconds`), and later runs of its thread wait behind it.
pub async fn run_queue_not_before(stores: &Stores) {
    let s = stores.runs.as_ref();
    let x = sfx();
    let owner = format!("qnb-{x}");
    let base = ancient_base();
    let mk = |name: &str, thread: &str, secs: i64| {
        let mut r = Run::new(
            format!("{name}-{x}"),
            format!("{thread}-{x}"),
            "asst",
            &owner,
        );
        r.created_at = at(base, secs);
        r.updated_at = r.created_at;
        r
    };
    let mut d1 = mk("d1", "qd", 1);
    d1.lease_expires_at = Some(time::now() + chrono::Duration::milliseconds(1200));
    let d2 = mk("d2", "qd", 2);
    let mut e1 = mk("e1", "qe", 3);
    e1.lease_expires_at = Some(time::now() - chrono::Duration::seconds(1));
    for r in [&d1, &d2, &e1] {
        ok(s.put(r).await, "put queued");
    }
    let w = format!("qnbw-{x}");
    // one at a time (the oldest first): queued runs of other suites sharing the database are
    // younger than these, or ancient and finished by `claim_mine`
    let claim_one = || async {
        for _ in 0..20 {
            let got = claim_mine(s, &x, &w, 1).await;
            if !got.is_empty() {
                return got;
            }
        }
        Vec::new()
    };
    let got = claim_one().await;
    let ids: Vec<&str> = got.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [e1.run_id.as_str()], "only the due run");
    for r in [&d1, &d2] {
        let row = ok(s.get(&owner, &r.run_id).await, "get").expect("row");
        assert_eq!(row.status, RunStatus::Pending, "{} waits", r.run_id);
        assert!(row.worker_id.is_none());
    }
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let got = claim_one().await;
    let ids: Vec<&str> = got.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(
        ids,
        [d1.run_id.as_str()],
        "due now; d2 still waits behind it"
    );
}

/// Thread ids are per owner: two owners' threads of the same id are two threads for every
/// per-thread rule of the run store (one running run, creation order, `put_if_idle`, the
/// queue), and for run events (each thread has its own sequence).
pub async fn run_threads_are_per_owner(stores: &Stores) {
    let s = stores.runs.as_ref();
    let x = sfx();
    let (alice, bob) = (format!("pa-{x}"), format!("pb-{x}"));
    let tid = format!("same-{x}");
    for o in [&alice, &bob] {
        ok(
            stores
                .threads
                .create(o, Thread::new(&tid, Map::new()))
                .await,
            "thread of the same id",
        );
    }
    let w = format!("pw-{x}");
    let owned = |name: &str, owner: &str| {
        let mut r = Run::new(format!("{name}-{x}"), &tid, "asst", owner);
        r.worker_id = Some(w.clone());
        r.lease_expires_at = Some(time::now() + chrono::Duration::seconds(600));
        r
    };
    // alice's thread is busy: bob's is still idle
    let a1 = owned("a1", &alice);
    assert!(ok(s.put_if_idle(&a1).await, "alice idle"));
    let b1 = owned("b1", &bob);
    assert!(ok(
        s.put_if_idle(&b1).await,
        "bob's thread is another thread"
    ));
    // both run at once; an older pending run of alice's does not hold bob's back
    let a2 = owned("a2", &alice);
    ok(s.put(&a2).await, "a2 pending behind a1");
    assert_eq!(
        ok(
            s.claim(&b1.run_id, &w, time::now() + chrono::Duration::seconds(60))
                .await,
            "b1"
        ),
        Claim::Claimed
    );
    assert_eq!(
        ok(
            s.claim(&a1.run_id, &w, time::now() + chrono::Duration::seconds(60))
                .await,
            "a1"
        ),
        Claim::Claimed,
        "bob's running run is not on alice's thread"
    );
    assert_eq!(
        ok(
            s.claim(&a2.run_id, &w, time::now() + chrono::Duration::seconds(60))
                .await,
            "a2"
        ),
        Claim::Busy,
        "alice's own thread still runs one at a time"
    );
    assert_eq!(
        ok(s.active_for_thread(&alice, &tid).await, "alice active").map(|r| r.run_id),
        Some(a1.run_id.clone())
    );
    assert_eq!(
        ok(s.active_for_thread(&bob, &tid).await, "bob active").map(|r| r.run_id),
        Some(b1.run_id.clone())
    );
    assert_eq!(
        ok(s.next_pending_for_thread(&alice, &tid).await, "alice next").map(|r| r.run_id),
        Some(a2.run_id.clone())
    );
    assert!(ok(s.next_pending_for_thread(&bob, &tid).await, "bob next").is_none());
    // the queue: bob's queued run starts while alice's thread is running
    let mut bq = Run::new(format!("bq-{x}"), &tid, "asst", &bob);
    bq.created_at = ancient_base();
    ok(s.put(&bq).await, "bob queued");
    assert!(ok(
        s.update_status(&b1.run_id, RunStatus::Success, None).await,
        "b1 done"
    ));
    let mut claimed = Vec::new();
    for _ in 0..20 {
        claimed = claim_mine(s, &x, &w, 1).await;
        if !claimed.is_empty() {
            break;
        }
    }
    let ids: Vec<&str> = claimed.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(
        ids,
        [bq.run_id.as_str()],
        "alice's running run does not block it"
    );
    // deleting one owner's runs of the thread leaves the other's
    assert_eq!(ok(s.delete_by_thread(&bob, &tid).await, "bob's runs"), 2);
    assert!(ok(s.get(&alice, &a1.run_id).await, "a1 stays").is_some());
    for r in [&a1, &a2] {
        ok(
            s.update_status(&r.run_id, RunStatus::Success, None).await,
            "finish",
        );
    }
    ok(s.delete_by_thread(&alice, &tid).await, "cleanup");

    // run events: one sequence per owner's thread, each sees only its own
    let e = stores.events.as_ref();
    let ev = |run: &str, n: i64| NewRunEvent::new(&tid, run, "x", "trace", json!(n));
    let a_events = ok(
        e.append_batch(&alice, vec![ev("ra", 1), ev("ra", 2)]).await,
        "a",
    );
    let b_events = ok(e.append_batch(&bob, vec![ev("rb", 1)]).await, "b");
    assert_eq!(a_events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(b_events[0].seq, 1, "bob's thread has its own sequence");
    let a_more = ok(e.append_batch(&alice, vec![ev("ra", 3)]).await, "a more");
    assert_eq!(a_more[0].seq, 3, "bob's appends leave no gap in alice's");
    let listed = ok(
        e.list(&bob, &tid, &RunEventQuery::default()).await,
        "bob lists",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].content, json!(1));
    assert_eq!(
        ok(e.count(&alice, &tid, None, None).await, "alice count"),
        3
    );
    assert_eq!(ok(e.delete_thread(&bob, &tid).await, "bob deletes"), 1);
    assert_eq!(
        ok(e.count(&alice, &tid, None, None).await, "alice keeps"),
        3
    );
    assert_eq!(ok(e.delete_run(&alice, &tid, "ra").await, "cleanup"), 3);
    for o in [&alice, &bob] {
        ok(stores.threads.delete(o, &tid).await, "cleanup thread");
    }
}

/// The durable queue: `claim_next` takes the oldest queued runs (pending, no worker) whose
/// thread is idle and has no older pending run, never the same run twice; `claim` respects
/// creation order too; queued runs are not abandoned runs.
pub async fn run_queue(stores: &Stores) {
    let s = stores.runs.as_ref();
    let x = sfx();
    let owner = format!("queue-{x}");
    let base = ancient_base();
    let mk = |name: &str, thread: &str, secs: i64| {
        let mut r = Run::new(
            format!("{name}-{x}"),
            format!("{thread}-{x}"),
            "asst",
            &owner,
        );
        r.created_at = at(base, secs);
        r.updated_at = r.created_at;
        r
    };
    let a1 = mk("a1", "qa", 1);
    let a2 = mk("a2", "qa", 2);
    let mut b1 = mk("b1", "qb", 3);
    b1.worker_id = Some(format!("w-live-{x}"));
    b1.lease_expires_at = Some(time::now() + chrono::Duration::seconds(600));
    let b2 = mk("b2", "qb", 4);
    let mut c1 = mk("c1", "qc", 0);
    c1.status = RunStatus::Running;
    c1.worker_id = b1.worker_id.clone();
    c1.lease_expires_at = b1.lease_expires_at;
    let c2 = mk("c2", "qc", 5);
    for r in [&a1, &a2, &b1, &b2, &c1, &c2] {
        ok(s.put(r).await, "put queued");
    }
    let pending = ok(s.count_pending().await, "count_pending");
    assert!(
        pending >= 5,
        "count_pending counts every pending run: {pending}"
    );
    let w = format!("qw-{x}");

    // only a1: a2 waits for a1, b2 for the older (owned) b1, c2 for the running c1
    let got = claim_mine(s, &x, &w, 1).await;
    let ids: Vec<&str> = got.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, [a1.run_id.as_str()], "the oldest eligible queued run");
    assert_eq!(got[0].status, RunStatus::Running);
    assert_eq!(got[0].worker_id.as_deref(), Some(w.as_str()));
    assert!(got[0].started_at.is_some() && got[0].lease_expires_at.is_some());
    for r in [&a2, &b2, &c2] {
        let row = ok(s.get(&owner, &r.run_id).await, "get").expect("row");
        assert_eq!(row.status, RunStatus::Pending, "{} stays queued", r.run_id);
        assert!(row.worker_id.is_none());
    }
    // queued runs are the queue's, not abandoned runs
    let far = time::now() + chrono::Duration::days(36_500);
    let expired = ok(s.list_expired(far, 1_000_000).await, "list_expired");
    assert!(
        !expired
            .iter()
            .any(|r| r.run_id == a2.run_id || r.run_id == c2.run_id),
        "queued runs are never listed as abandoned"
    );
    assert!(
        !ok(s.adopt(&a2.run_id, "thief", far, far).await, "adopt queued"),
        "a queued run cannot be adopted"
    );
    // claim by id honours creation order: a newer owned run waits for the queued older one
    let mut a3 = mk("a3", "qa", 6);
    a3.worker_id = Some(w.clone());
    ok(s.put(&a3).await, "put a3");
    ok(
        s.update_status(&a1.run_id, RunStatus::Success, None).await,
        "a1 done",
    );
    assert_eq!(
        ok(s.claim(&a3.run_id, &w, far).await, "claim a3"),
        Claim::Busy,
        "an older run of the thread is pending"
    );

    // a1 done: a2 next; b1 gone and c1 done: b2 and c2 too
    ok(
        s.transition(
            &b1.run_id,
            &[RunStatus::Pending],
            RunStatus::Interrupted,
            None,
        )
        .await,
        "b1",
    );
    ok(
        s.update_status(&c1.run_id, RunStatus::Success, None).await,
        "c1 done",
    );
    let mut got: Vec<String> = claim_mine(s, &x, &w, 3)
        .await
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    got.sort();
    let mut want = vec![a2.run_id.clone(), b2.run_id.clone(), c2.run_id.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        ok(s.claim(&a3.run_id, &w, far).await, "claim a3 while a2 runs"),
        Claim::Busy
    );
    ok(
        s.update_status(&a2.run_id, RunStatus::Success, None).await,
        "a2 done",
    );
    assert_eq!(
        ok(s.claim(&a3.run_id, &w, far).await, "claim a3"),
        Claim::Claimed
    );

    // racing workers: every queued run claimed exactly once
    let racers: Vec<Run> = (0..4)
        .map(|i| mk(&format!("r{i}"), &format!("qr{i}"), 10 + i))
        .collect();
    for r in &racers {
        ok(s.put(r).await, "put racer");
    }
    let mut tasks = Vec::new();
    for i in 0..4 {
        let runs = stores.runs.clone();
        let x = x.clone();
        tasks.push(tokio::spawn(async move {
            claim_mine(runs.as_ref(), &x, &format!("racer{i}-{x}"), 1).await
        }));
    }
    let mut claimed: Vec<String> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(v) => claimed.extend(v.into_iter().map(|r| r.run_id)),
            Err(e) => panic!("claim_next task failed: {e}"),
        }
    }
    // a racer that found every candidate locked may come back empty: claim the rest now
    claimed.extend(
        claim_mine(s, &x, &w, 4 - claimed.len().min(4))
            .await
            .into_iter()
            .map(|r| r.run_id),
    );
    claimed.sort();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!(before, claimed.len(), "no run claimed twice");
    assert_eq!(claimed.len(), 4, "every queued run claimed: {claimed:?}");
    for r in racers.iter().chain([&a3, &b2, &c2]) {
        ok(
            s.update_status(&r.run_id, RunStatus::Success, None).await,
            "finish",
        );
    }
}

/// Durable cancel requests: recorded on active runs only, first action wins, listed for the
/// owning worker in one query.
/// `put_if_idle`: inserts only while no other run of the thread is active without a cancel
/// request, and of concurrent callers on an idle thread exactly one inserts.
pub async fn run_put_if_idle(stores: &Stores) {
    let s = &stores.runs;
    let x = sfx();
    let owner = format!("idle-{x}");
    let tid = format!("it-{x}");
    ok(
        stores
            .threads
            .create(&owner, Thread::new(&tid, Map::new()))
            .await,
        "thread",
    );
    // owned by a (live) worker, so none of these runs is ever in the durable queue
    let w = format!("iw-{x}");
    let mk = |name: String, thread: &str| {
        let mut r = Run::new(name, thread, "asst", &owner);
        r.worker_id = Some(w.clone());
        r.lease_expires_at = Some(time::now() + chrono::Duration::seconds(600));
        r
    };
    let a = mk(format!("ia-{x}"), &tid);
    assert!(ok(s.put_if_idle(&a).await, "idle thread"));
    let b = mk(format!("ib-{x}"), &tid);
    assert!(!ok(s.put_if_idle(&b).await, "busy"), "a is pending");
    assert!(
        ok(s.get(&owner, &b.run_id).await, "get").is_none(),
        "a refused put writes nothing"
    );
    // a run being cancelled does not hold the thread
    assert!(ok(
        s.request_cancel(&a.run_id, "interrupt").await,
        "cancel a"
    ));
    assert!(ok(s.put_if_idle(&b).await, "a is being cancelled"));
    assert!(ok(
        s.transition(&b.run_id, &[RunStatus::Pending], RunStatus::Success, None)
            .await,
        "b done"
    ));
    // finished runs do not hold it either
    let c = mk(format!("ic-{x}"), &tid);
    assert!(ok(
        s.put_if_idle(&c).await,
        "only finished / cancelled runs"
    ));
    // another thread is unaffected
    let tid2 = format!("it2-{x}");
    ok(
        stores
            .threads
            .create(&owner, Thread::new(&tid2, Map::new()))
            .await,
        "thread 2",
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        let runs = stores.runs.clone();
        let run = mk(format!("ir{i}-{x}"), &tid2);
        tasks.push(tokio::spawn(async move { runs.put_if_idle(&run).await }));
    }
    let mut inserted = 0;
    for t in tasks {
        if ok(t.await.expect("task"), "concurrent put_if_idle") {
            inserted += 1;
        }
    }
    assert_eq!(inserted, 1, "exactly one of concurrent callers inserts");
    // leave nothing active behind
    for id in [a.run_id.clone(), c.run_id.clone()]
        .into_iter()
        .chain((0..8).map(|i| format!("ir{i}-{x}")))
    {
        ok(
            s.transition(&id, &[RunStatus::Pending], RunStatus::Success, None)
                .await,
            "finish",
        );
    }
}

pub async fn run_cancel_requests(stores: &Stores) {
    let s = &stores.runs;
    let x = sfx();
    let owner = format!("cancel-{x}");
    let w = format!("cw-{x}");
    let mut r1 = Run::new(format!("c1-{x}"), format!("ct1-{x}"), "asst", &owner);
    r1.worker_id = Some(w.clone());
    let mut r2 = Run::new(format!("c2-{x}"), format!("ct2-{x}"), "asst", &owner);
    r2.worker_id = Some(w.clone());
    let mut r3 = Run::new(format!("c3-{x}"), format!("ct3-{x}"), "asst", &owner);
    r3.worker_id = Some(format!("other-{x}"));
    for r in [&r1, &r2, &r3] {
        ok(s.put(r).await, "put");
    }
    assert!(ok(s.cancel_requests(&w).await, "none yet").is_empty());
    assert!(ok(
        s.request_cancel(&r1.run_id, "rollback").await,
        "request"
    ));
    assert!(
        ok(s.request_cancel(&r1.run_id, "interrupt").await, "again"),
        "still active"
    );
    assert!(ok(
        s.request_cancel(&r3.run_id, "interrupt").await,
        "other worker"
    ));
    assert_eq!(
        ok(
            s.claim(&r2.run_id, &w, time::now() + chrono::Duration::seconds(60))
                .await,
            "claim"
        ),
        Claim::Claimed
    );
    assert!(ok(
        s.request_cancel(&r2.run_id, "interrupt").await,
        "running"
    ));
    let mut got = ok(s.cancel_requests(&w).await, "requests");
    got.sort();
    assert_eq!(
        got,
        vec![
            (r1.run_id.clone(), "rollback".to_string()),
            (r2.run_id.clone(), "interrupt".to_string())
        ],
        "the first request wins; only this worker's runs"
    );
    let row = ok(s.get(&owner, &r1.run_id).await, "get").expect("r1");
    assert_eq!(row.cancel_requested.as_deref(), Some("rollback"));
    ok(
        s.update_status(&r2.run_id, RunStatus::Interrupted, None)
            .await,
        "r2 stopped",
    );
    assert_eq!(
        ok(s.cancel_requests(&w).await, "after").len(),
        1,
        "finished runs drop out"
    );
    assert!(
        !ok(s.request_cancel(&r2.run_id, "interrupt").await, "finished"),
        "a finished run cannot be cancelled"
    );
    assert!(!ok(
        s.request_cancel(&format!("missing-{x}"), "interrupt").await,
        "missing"
    ));
    for r in [&r1, &r3] {
        ok(
            s.update_status(&r.run_id, RunStatus::Interrupted, None)
                .await,
            "stop",
        );
    }
}

/// The replica registry: upsert keeps `started_at`, listing by heartbeat freshness, removal.
pub async fn replicas(stores: &Stores) {
    let s = &stores.runs;
    let x = sfx();
    let now = time::now();
    let rep = |id: &str, beat: DateTime<Utc>| ReplicaInfo {
        replica_id: format!("{id}-{x}"),
        started_at: beat,
        heartbeat_at: beat,
        host: "host-a".into(),
        pid: 42,
        database: "postgres".into(),
        bridge: "redis".into(),
    };
    let a = rep("a", now - chrono::Duration::seconds(5));
    let stale = rep("stale", now - chrono::Duration::seconds(3600));
    ok(s.heartbeat_replica(&a).await, "register a");
    ok(s.heartbeat_replica(&stale).await, "register stale");
    let mut a2 = a.clone();
    a2.heartbeat_at = now;
    a2.started_at = now; // ignored: the first start is kept
    a2.pid = 43;
    ok(s.heartbeat_replica(&a2).await, "heartbeat a");
    let live = ok(
        s.list_replicas(now - chrono::Duration::seconds(60)).await,
        "list",
    );
    let mine: Vec<&ReplicaInfo> = live.iter().filter(|r| r.replica_id.ends_with(&x)).collect();
    assert_eq!(mine.len(), 1, "the stale replica is not live: {mine:?}");
    assert_eq!(mine[0].replica_id, a.replica_id);
    assert_eq!(mine[0].started_at, time::truncate(a.started_at));
    assert_eq!(mine[0].heartbeat_at, time::truncate(now));
    assert_eq!(mine[0].pid, 43);
    assert_eq!(
        (mine[0].database.as_str(), mine[0].bridge.as_str()),
        ("postgres", "redis")
    );
    let all = ok(
        s.list_replicas(now - chrono::Duration::days(1)).await,
        "list all",
    );
    assert_eq!(all.iter().filter(|r| r.replica_id.ends_with(&x)).count(), 2);
    let gone = ok(
        s.remove_replica(&a.replica_id, now - chrono::Duration::seconds(600))
            .await,
        "remove",
    );
    assert!(gone >= 2, "a and the stale entry are removed: {gone}");
    let all = ok(
        s.list_replicas(now - chrono::Duration::days(1)).await,
        "list after",
    );
    assert!(!all.iter().any(|r| r.replica_id.ends_with(&x)));
}

/// Run ownership: claim (one running run per thread), lease renewal, expiry scan, adoption.
pub async fn run_leases(stores: &Stores) {
    let s = &stores.runs;
    let x = sfx();
    let owner = format!("alice-{x}");
    let thread = format!("lease-thread-{x}");
    let base = base_time();
    let mk = |i: i64| {
        let mut r = Run::new(format!("lease{i}-{x}"), &thread, "asst", &owner);
        r.created_at = at(base, i);
        r.updated_at = r.created_at;
        r
    };
    let now = time::now();
    let later = now + chrono::Duration::seconds(30);
    let r1 = mk(1);
    let (mut r2, mut r3) = (mk(2), mk(3));
    for r in [&mut r2, &mut r3] {
        r.worker_id = Some("w-old".into());
        r.lease_expires_at = Some(later);
    }
    for r in [&r1, &r2, &r3] {
        ok(s.put(r).await, "put");
    }
    let got = ok(s.get(&owner, &r3.run_id).await, "get r3").expect("r3");
    assert_eq!(
        got.worker_id.as_deref(),
        Some("w-old"),
        "put keeps the worker"
    );
    assert_eq!(got.lease_expires_at, Some(time::truncate(later)));

    // claim: pending -> running with a lease; a second run of the thread is Busy
    assert_eq!(
        ok(s.claim(&r1.run_id, "w1", later).await, "claim"),
        Claim::Claimed
    );
    let got = ok(s.get(&owner, &r1.run_id).await, "get r1").expect("r1");
    assert_eq!(got.status, RunStatus::Running);
    assert_eq!(got.worker_id.as_deref(), Some("w1"));
    assert_eq!(got.lease_expires_at, Some(time::truncate(later)));
    assert!(got.started_at.is_some());
    assert_eq!(
        ok(s.claim(&r1.run_id, "w2", later).await, "again"),
        Claim::Gone
    );
    assert_eq!(
        ok(s.claim(&r2.run_id, "w2", later).await, "busy"),
        Claim::Busy
    );
    assert_eq!(
        ok(s.get(&owner, &r2.run_id).await, "r2")
            .expect("r2")
            .status,
        RunStatus::Pending,
        "a busy claim changes nothing"
    );
    assert_eq!(
        ok(s.claim("missing", "w1", later).await, "missing"),
        Claim::Gone
    );

    // concurrent claims of different runs of one thread: exactly one wins
    ok(
        s.update_status(&r1.run_id, RunStatus::Success, None).await,
        "r1 done",
    );
    let mut tasks = Vec::new();
    for (i, id) in [&r2.run_id, &r3.run_id].into_iter().enumerate() {
        let runs = stores.runs.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            runs.claim(&id, &format!("racer{i}"), later).await
        }));
    }
    let mut claimed = 0;
    for t in tasks {
        match t.await {
            Ok(r) => claimed += usize::from(ok(r, "racing claim") == Claim::Claimed),
            Err(e) => panic!("claim task failed: {e}"),
        }
    }
    assert_eq!(claimed, 1, "one running run per thread under racing claims");

    // renew: every active run of the worker, nothing else
    // owned by a process that never renewed (no lease): abandoned. (Without a worker it
    // would be queued, which recovery never lists.)
    let mut w1_run = mk(4);
    w1_run.worker_id = Some(format!("w-gone-{x}"));
    let mut other = Run::new(
        format!("lease5-{x}"),
        format!("lease-t2-{x}"),
        "asst",
        &owner,
    );
    other.created_at = at(base, 5);
    ok(s.put(&w1_run).await, "put r4");
    ok(s.put(&other).await, "put r5");
    let other_thread_claim = ok(s.claim(&other.run_id, "w-renew", later).await, "claim r5");
    assert_eq!(other_thread_claim, Claim::Claimed);
    let further = now + chrono::Duration::seconds(60);
    assert_eq!(ok(s.renew_leases("w-renew", further).await, "renew"), 1);
    assert_eq!(
        ok(s.get(&owner, &other.run_id).await, "r5")
            .expect("r5")
            .lease_expires_at,
        Some(time::truncate(further))
    );
    assert_eq!(
        ok(
            s.renew_leases(&format!("nobody-{x}"), further).await,
            "none"
        ),
        0
    );

    // expiry: runs whose lease passed (or that have none) are listed, oldest first
    let expired = ok(
        s.list_expired(later + chrono::Duration::seconds(1), 100_000)
            .await,
        "expired",
    );
    let mine: Vec<&str> = expired
        .iter()
        .filter(|r| r.run_id.ends_with(&x))
        .map(|r| r.run_id.as_str())
        .collect();
    // r1 finished; r2/r3 (one running, one pending) lease `later`; r4 has no lease; r5 renewed
    let mut want: Vec<&str> = vec![
        r2.run_id.as_str(),
        r3.run_id.as_str(),
        w1_run.run_id.as_str(),
    ];
    want.sort();
    let mut mine_sorted = mine.clone();
    mine_sorted.sort();
    assert_eq!(mine_sorted, want);
    assert_eq!(
        mine.last().copied(),
        Some(w1_run.run_id.as_str()),
        "oldest first"
    );
    let fresh = ok(s.list_expired(now, 100_000).await, "expired now");
    assert!(
        fresh
            .iter()
            .filter(|r| r.run_id.ends_with(&x))
            .all(|r| r.run_id == w1_run.run_id),
        "leases in the future are not expired"
    );

    // adopt: compare-and-set on the expired lease, status unchanged
    assert!(!ok(
        s.adopt(&other.run_id, "w-new", further, now).await,
        "live lease"
    ));
    let after = further + chrono::Duration::seconds(1);
    let until = after + chrono::Duration::seconds(30);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let runs = stores.runs.clone();
        let id = other.run_id.clone();
        tasks.push(tokio::spawn(async move {
            runs.adopt(&id, &format!("adopter{i}"), until, after).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await {
            Ok(r) => won += usize::from(ok(r, "adopt")),
            Err(e) => panic!("adopt task failed: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one adopter wins");
    let adopted = ok(s.get(&owner, &other.run_id).await, "r5").expect("r5");
    assert_eq!(adopted.status, RunStatus::Running);
    assert!(
        adopted
            .worker_id
            .as_deref()
            .is_some_and(|w| w.starts_with("adopter"))
    );
    assert_eq!(adopted.lease_expires_at, Some(time::truncate(until)));
    ok(
        s.update_status(&other.run_id, RunStatus::Success, None)
            .await,
        "r5 done",
    );
    assert!(!ok(
        s.adopt(
            &other.run_id,
            "w-late",
            until,
            until + chrono::Duration::seconds(1)
        )
        .await,
        "finished"
    ));
    assert!(!ok(s.adopt("missing", "w", until, after).await, "missing"));

    for r in [&r1, &r2, &r3, &w1_run, &other] {
        ok(s.delete(&owner, &r.run_id).await, "cleanup");
    }
}

// ------------------------------------------------------------------------ run events

/// RunEventStore contract: per-thread seq, cursors, filters, owner isolation, deletes.
pub async fn run_events(stores: &Stores) {
    let s = &stores.events;
    let x = sfx();
    let alice = format!("alice-{x}");
    let bob = format!("bob-{x}");
    let t = format!("thread-{x}");
    let t2 = format!("thread2-{x}");

    let ev = |thread: &str, run: &str, ty: &str, cat: &str, content: Value| {
        let mut e = NewRunEvent::new(thread, run, ty, cat, content);
        e.metadata = json!({"caller": "lead_agent"});
        e
    };
    let stored = ok(
        s.append_batch(
            &alice,
            vec![
                ev(&t, "r1", "run.start", "trace", json!({"a": 1})),
                ev(&t, "r1", "llm.human.input", "message", json!("hello")),
                ev(&t2, "r9", "run.start", "trace", Value::Null),
                ev(
                    &t,
                    "r1",
                    "llm.ai.response",
                    "message",
                    json!({"content": "hi", "n": [1, 2]}),
                ),
            ],
        )
        .await,
        "append",
    );
    assert_eq!(
        stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 1, 3]
    );
    assert_eq!(stored[1].content, json!("hello"));
    assert_eq!(stored[0].metadata, json!({"caller": "lead_agent"}));
    let more = ok(
        s.append_batch(
            &alice,
            vec![
                ev(&t, "r2", "run.start", "trace", json!(1)),
                ev(&t, "r2", "llm.ai.response", "message", json!([1, "x"])),
            ],
        )
        .await,
        "append 2",
    );
    assert_eq!(more.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert!(ok(s.append_batch(&alice, vec![]).await, "empty batch").is_empty());

    // concurrent appends on one thread never reuse a seq
    let mut handles = Vec::new();
    for i in 0..8 {
        let events = stores.events.clone();
        let owner = alice.clone();
        let thread = t2.clone();
        handles.push(tokio::spawn(async move {
            events
                .append_batch(
                    &owner,
                    vec![NewRunEvent::new(&thread, format!("c{i}"), "x", "trace", json!(i)); 3],
                )
                .await
        }));
    }
    let mut seqs = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => seqs.extend(ok(r, "concurrent append").into_iter().map(|e| e.seq)),
            Err(e) => panic!("append task failed: {e}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (2..=25).collect::<Vec<i64>>());

    let all = ok(s.list(&alice, &t, &RunEventQuery::default()).await, "list");
    assert_eq!(all.len(), 5);
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[2], stored[3], "round trip");
    assert_eq!(all[4].content, json!([1, "x"]));
    assert!(ok(s.list(&bob, &t, &RunEventQuery::default()).await, "bob").is_empty());

    let q = RunEventQuery {
        run_id: Some("r1".into()),
        ..Default::default()
    };
    assert_eq!(ok(s.list(&alice, &t, &q).await, "by run").len(), 3);
    let q = RunEventQuery {
        category: Some("message".into()),
        ..Default::default()
    };
    let msgs = ok(s.list(&alice, &t, &q).await, "by category");
    assert_eq!(
        msgs.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3, 5]
    );
    let q = RunEventQuery {
        event_types: vec!["run.start".into(), "llm.human.input".into()],
        ..Default::default()
    };
    assert_eq!(
        ok(s.list(&alice, &t, &q).await, "by types")
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    let q = RunEventQuery {
        after_seq: Some(2),
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ok(s.list(&alice, &t, &q).await, "after")
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    let q = RunEventQuery {
        before_seq: Some(5),
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ok(s.list(&alice, &t, &q).await, "before")
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    let q = RunEventQuery {
        before_seq: Some(i64::MAX),
        limit: Some(2),
        category: Some("message".into()),
        ..Default::default()
    };
    assert_eq!(
        ok(s.list(&alice, &t, &q).await, "latest")
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![3, 5]
    );
    let q = RunEventQuery {
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(
        ok(s.list(&alice, &t, &q).await, "first")
            .iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>(),
        vec![1]
    );

    assert_eq!(ok(s.count(&alice, &t, None, None).await, "count"), 5);
    assert_eq!(
        ok(
            s.count(&alice, &t, Some("r1"), Some("message")).await,
            "count filtered"
        ),
        2
    );
    assert_eq!(ok(s.count(&bob, &t, None, None).await, "count bob"), 0);

    // delete
    assert_eq!(
        ok(s.delete_run(&bob, &t, "r1").await, "bob cannot delete"),
        0
    );
    assert_eq!(ok(s.delete_run(&alice, &t, "r1").await, "delete run"), 3);
    assert_eq!(ok(s.count(&alice, &t, None, None).await, "count after"), 2);
    assert_eq!(ok(s.delete_thread(&alice, &t).await, "delete thread"), 2);
    assert!(ok(s.list(&alice, &t, &RunEventQuery::default()).await, "gone").is_empty());
    // seqs never go backwards past what is stored
    let again = ok(
        s.append_batch(
            &alice,
            vec![ev(&t, "r3", "run.start", "trace", json!(null))],
        )
        .await,
        "append after delete",
    );
    assert!(again[0].seq >= 1);
    ok(s.delete_thread(&alice, &t).await, "cleanup");
    ok(s.delete_thread(&alice, &t2).await, "cleanup t2");
}

// ------------------------------------------------------------------------ feedback

/// FeedbackStore contract.
pub async fn feedback(stores: &Stores) {
    let s = &stores.feedback;
    let x = sfx();
    let alice = format!("alice-{x}");
    let bob = format!("bob-{x}");
    let base = base_time();
    let mk = |i: i64, rating: i64| Feedback {
        feedback_id: format!("fb{i}-{x}"),
        run_id: format!("run-{x}"),
        thread_id: format!("thread-{x}"),
        owner: String::new(),
        message_id: Some("m1".into()),
        rating,
        comment: Some(format!("c{i}")),
        metadata: obj(json!({"i": i})),
        created_at: at(base, i),
    };
    let f1 = ok(s.create(&alice, mk(1, 1)).await, "create");
    assert_eq!(f1.owner, alice);
    assert!(is_conflict(s.create(&alice, mk(1, 1)).await));
    let f2 = ok(s.create(&alice, mk(2, -1)).await, "create 2");
    let fb = ok(s.create(&bob, mk(3, 1)).await, "create bob");
    assert_eq!(
        ok(s.get(&alice, &f1.feedback_id).await, "get").expect("f1"),
        f1
    );
    assert!(ok(s.get(&bob, &f1.feedback_id).await, "get other").is_none());
    let wire = serde_json::to_value(&f1).unwrap_or(Value::Null);
    assert_eq!(wire["user_id"], json!(alice));

    let listed = ok(
        s.list_by_run(&alice, &f1.thread_id, &f1.run_id).await,
        "list",
    );
    assert_eq!(listed, vec![f1.clone(), f2.clone()]);
    assert_eq!(
        ok(
            s.list_by_run(&bob, &f1.thread_id, &f1.run_id).await,
            "list bob"
        ),
        vec![fb.clone()]
    );
    assert!(
        ok(
            s.list_by_run(&alice, &f1.thread_id, "other-run").await,
            "other run"
        )
        .is_empty()
    );

    assert!(is_not_found(s.delete(&bob, &f1.feedback_id).await));
    ok(s.delete(&alice, &f2.feedback_id).await, "delete");
    assert!(is_not_found(s.delete(&alice, &f2.feedback_id).await));

    // upsert keeps one row per (thread, run, owner) and its id
    let mut u = mk(4, -1);
    u.comment = Some("changed".into());
    let up = ok(s.upsert(&alice, u).await, "upsert");
    assert_eq!(up.feedback_id, f1.feedback_id);
    let listed = ok(
        s.list_by_run(&alice, &f1.thread_id, &f1.run_id).await,
        "list after upsert",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].rating, -1);
    assert_eq!(listed[0].comment.as_deref(), Some("changed"));
    let mut other = mk(5, 1);
    other.run_id = format!("run2-{x}");
    let inserted = ok(s.upsert(&alice, other.clone()).await, "upsert insert");
    assert_eq!(inserted.feedback_id, other.feedback_id);

    assert_eq!(
        ok(
            s.delete_by_run(&alice, &f1.thread_id, &f1.run_id).await,
            "delete by run"
        ),
        1
    );
    assert_eq!(
        ok(
            s.list_by_run(&bob, &f1.thread_id, &f1.run_id).await,
            "bob kept"
        )
        .len(),
        1
    );
    assert_eq!(
        ok(
            s.delete_by_run(&alice, &other.thread_id, &other.run_id)
                .await,
            "cleanup"
        ),
        1
    );
    ok(s.delete(&bob, &fb.feedback_id).await, "cleanup bob");
}

// ------------------------------------------------------------------------ store items

/// ItemStore contract.
pub async fn items(stores: &Stores) {
    let s = &stores.items;
    let x = sfx();
    let alice = format!("alice-{x}");
    let bob = format!("bob-{x}");
    let ns = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let u1 = ns(&["users", "u1"]);
    let u2 = ns(&["users", "u2", "prefs"]);
    let docs = ns(&["docs"]);

    let p = ok(
        s.put(&alice, &u1, "prefs", json!({"lang": "en", "n": 1}))
            .await,
        "put",
    );
    assert_eq!(p.namespace, u1);
    assert_eq!(p.created_at, p.updated_at);
    let got = ok(s.get(&alice, &u1, "prefs").await, "get").expect("item");
    assert_eq!(got, p);
    assert!(
        ok(s.get(&bob, &u1, "prefs").await, "get other").is_none(),
        "items are per owner"
    );
    assert!(ok(s.get(&alice, &u1, "missing").await, "missing").is_none());
    tokio::time::sleep(Duration::from_millis(2)).await;
    let p2 = ok(
        s.put(&alice, &u1, "prefs", json!({"lang": "fr", "n": 2}))
            .await,
        "replace",
    );
    assert_eq!(p2.created_at, p.created_at, "created_at kept on replace");
    assert!(p2.updated_at > p.updated_at);
    assert_eq!(
        ok(s.get(&alice, &u1, "prefs").await, "get")
            .expect("item")
            .value,
        json!({"lang": "fr", "n": 2})
    );

    tokio::time::sleep(Duration::from_millis(2)).await;
    ok(
        s.put(&alice, &u2, "theme", json!({"lang": "en", "dark": true}))
            .await,
        "put u2",
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    ok(
        s.put(&alice, &docs, "d1", json!({"lang": "en"})).await,
        "put docs",
    );
    ok(
        s.put(&bob, &u1, "prefs", json!({"lang": "en"})).await,
        "put bob",
    );

    // invalid input
    assert!(is_invalid(s.put(&alice, &[], "k", json!({})).await));
    assert!(is_invalid(
        s.put(&alice, &ns(&["a.b"]), "k", json!({})).await
    ));
    assert!(is_invalid(s.put(&alice, &ns(&[""]), "k", json!({})).await));
    assert!(
        is_invalid(s.put(&alice, &u1, "k", json!([1])).await),
        "values must be objects"
    );
    assert!(is_invalid(s.put(&alice, &u1, "", json!({})).await));

    // search: prefix, filter, order (newest first), paging
    let q = ItemSearch {
        namespace_prefix: ns(&["users"]),
        ..Default::default()
    };
    let hits = ok(s.search(&alice, &q).await, "search");
    let keys: Vec<&str> = hits.iter().map(|h| h.item.key.as_str()).collect();
    assert_eq!(keys, vec!["theme", "prefs"]);
    assert!(hits.iter().all(|h| h.score.is_none()));
    let q = ItemSearch {
        namespace_prefix: ns(&["user"]),
        ..Default::default()
    };
    assert!(
        ok(
            s.search(&alice, &q).await,
            "label prefix is not string prefix"
        )
        .is_empty()
    );
    let q = ItemSearch {
        namespace_prefix: u1.clone(),
        ..Default::default()
    };
    assert_eq!(ok(s.search(&alice, &q).await, "exact ns").len(), 1);
    let q = ItemSearch {
        filter: obj(json!({"lang": "en"})),
        ..Default::default()
    };
    let keys: Vec<String> = ok(s.search(&alice, &q).await, "filter")
        .into_iter()
        .map(|h| h.item.key)
        .collect();
    assert_eq!(keys, vec!["d1", "theme"]);
    let q = ItemSearch {
        filter: obj(json!({"dark": true})),
        ..Default::default()
    };
    assert_eq!(ok(s.search(&alice, &q).await, "bool filter").len(), 1);
    let q = ItemSearch {
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    let hits = ok(s.search(&alice, &q).await, "paging");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].item.key, "theme");
    assert_eq!(
        ok(s.search(&bob, &ItemSearch::default()).await, "bob search").len(),
        1
    );

    // namespaces
    let all = ok(
        s.list_namespaces(&alice, &NamespaceQuery::default()).await,
        "namespaces",
    );
    assert_eq!(all, vec![docs.clone(), u1.clone(), u2.clone()]);
    let q = NamespaceQuery {
        prefix: Some(ns(&["users"])),
        max_depth: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ok(s.list_namespaces(&alice, &q).await, "prefix depth"),
        vec![u1.clone(), ns(&["users", "u2"])]
    );
    let q = NamespaceQuery {
        suffix: Some(ns(&["prefs"])),
        ..Default::default()
    };
    assert_eq!(
        ok(s.list_namespaces(&alice, &q).await, "suffix"),
        vec![u2.clone()]
    );
    let q = NamespaceQuery {
        prefix: Some(ns(&["users", "*"])),
        limit: 1,
        offset: 1,
        ..Default::default()
    };
    assert_eq!(
        ok(s.list_namespaces(&alice, &q).await, "wildcard paging"),
        vec![u2.clone()]
    );
    assert_eq!(
        ok(
            s.list_namespaces(&bob, &NamespaceQuery::default()).await,
            "bob ns"
        ),
        vec![u1.clone()]
    );

    // delete
    assert!(ok(s.delete(&alice, &u1, "prefs").await, "delete"));
    assert!(!ok(s.delete(&alice, &u1, "prefs").await, "delete again"));
    assert!(ok(s.get(&alice, &u1, "prefs").await, "deleted").is_none());
    assert!(ok(s.get(&bob, &u1, "prefs").await, "bob's kept").is_some());
    ok(s.delete(&alice, &u2, "theme").await, "cleanup");
    ok(s.delete(&alice, &docs, "d1").await, "cleanup");
    ok(s.delete(&bob, &u1, "prefs").await, "cleanup");
    assert!(
        ok(
            s.list_namespaces(&alice, &NamespaceQuery::default()).await,
            "empty"
        )
        .is_empty()
    );
}
