//! Thread contract: create/conflict, owner isolation, metadata merge, state updates, search,
//! count, copy, delete.

use serde_json::{Map, Value, json};

use super::{at, base_time, is_conflict, is_not_found, names, obj, ok};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, Stores, ThreadId, time};

/// Alice's threads t1 (`{"owner": "alice", "n": 1}`), t2 (`{"n": 2, "tag": ...}`) and t3
/// (`{"n": 3}`), created at `base + 1..3` and last updated at `base + 99..97`, and bob's tb
/// (`{"owner": "alice"}`, at `base + 4`).
struct Threads {
    alice: String,
    bob: String,
    x: String,
    t1: Thread,
    t2: Thread,
    t3: Thread,
    tb: Thread,
}

fn thread_at(i: i64, x: &str, md: Value) -> Thread {
    let base = base_time();
    let mut t = Thread::new(format!("t{i}-{x}"), obj(md));
    t.created_at = at(base, i);
    t.updated_at = at(base, 100 - i);
    t.state_updated_at = t.created_at;
    t
}

impl Threads {
    async fn create(s: &dyn ThreadStore) -> Threads {
        let (alice, bob, x) = names();
        let t1 = thread_at(1, &x, json!({"owner": "alice", "n": 1}));
        let t1 = ok(s.create(Owner(&alice), t1).await, "create t1");
        let t2 = thread_at(2, &x, json!({"n": 2, "tag": {"a": [1, 2]}}));
        let t2 = ok(s.create(Owner(&alice), t2).await, "create t2");
        let t3 = ok(
            s.create(Owner(&alice), thread_at(3, &x, json!({"n": 3})))
                .await,
            "create t3",
        );
        let tb = thread_at(4, &x, json!({"owner": "alice"}));
        let tb = ok(s.create(Owner(&bob), tb).await, "create bob's");
        Threads {
            alice,
            bob,
            x,
            t1,
            t2,
            t3,
            tb,
        }
    }

    /// Deletes the four threads and the `extra` ones of alice's.
    async fn delete(self, s: &dyn ThreadStore, extra: &[&str]) {
        for id in [&self.t1.thread_id, &self.t2.thread_id, &self.t3.thread_id] {
            ok(s.delete(Owner(&self.alice), ThreadId(id)).await, "cleanup");
        }
        for id in extra {
            ok(s.delete(Owner(&self.alice), ThreadId(id)).await, "cleanup");
        }
        ok(
            s.delete(Owner(&self.bob), ThreadId(&self.tb.thread_id))
                .await,
            "cleanup bob",
        );
    }
}

/// The values t1 gets in [`interrupt_t1`].
fn t1_values() -> Value {
    json!({"messages": [{"type": "human", "content": "hi"}], "title": "hi"})
}

/// t1 interrupted with values [`t1_values`], an interrupt and an error of `null`.
async fn interrupt_t1(s: &dyn ThreadStore, f: &Threads) -> Thread {
    let update = ThreadUpdate {
        status: Some(ThreadStatus::Interrupted),
        values: Some(Some(t1_values())),
        error: Some(Some(Value::Null)),
        interrupts: Some(Some(json!({"task": [{"id": "i1", "value": "approve?"}]}))),
        config: Some(json!({"configurable": {}})),
        metadata: None,
    };
    ok(
        s.update(Owner(&f.alice), ThreadId(&f.t1.thread_id), update)
            .await,
        "set state",
    )
}

/// A created thread is idle with `values: null` and no error, its owner's only.
pub async fn thread_create_and_get(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let t1 = &f.t1;
    assert_eq!(t1.owner, f.alice);
    assert_eq!(t1.status, ThreadStatus::Idle);
    assert_eq!(t1.values, Some(Value::Null));
    assert_eq!(t1.error, None);
    assert!(is_conflict(
        s.create(Owner(&f.alice), thread_at(1, &f.x, json!({})))
            .await
    ));
    let got = ok(s.get(Owner(&f.alice), ThreadId(&t1.thread_id)).await, "get").expect("own thread");
    assert_eq!(got, *t1);
    let wire = serde_json::to_value(&got).unwrap_or(Value::Null);
    assert_eq!(wire["values"], Value::Null);
    assert!(wire.get("error").is_none());
    assert!(
        ok(
            s.get(Owner(&f.bob), ThreadId(&t1.thread_id)).await,
            "get other"
        )
        .is_none()
    );
    assert!(
        ok(
            s.get(Owner(&f.alice), ThreadId("missing")).await,
            "get missing"
        )
        .is_none()
    );
    f.delete(s, &[]).await;
}

/// Ids are per owner: bob's thread of the same id is another thread.
pub async fn thread_ids_are_per_owner(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let t1 = &f.t1;
    let bobs_t1 = thread_at(1, &f.x, json!({"mine": "bob"}));
    let bobs_t1 = ok(s.create(Owner(&f.bob), bobs_t1).await, "bob, same id");
    assert_eq!(bobs_t1.owner, f.bob);
    let mut both = vec![f.alice.clone(), f.bob.clone()];
    both.sort();
    assert_eq!(
        ok(s.owners_of(ThreadId(&t1.thread_id)).await, "owners"),
        both
    );
    assert!(ok(s.owners_of(ThreadId("no-such-thread")).await, "none").is_empty());
    assert_eq!(
        ok(
            s.get(Owner(&f.alice), ThreadId(&t1.thread_id)).await,
            "alice's t1"
        )
        .map(|t| t.metadata),
        Some(t1.metadata.clone())
    );
    ok(
        s.delete(Owner(&f.bob), ThreadId(&bobs_t1.thread_id)).await,
        "bob deletes his",
    );
    assert!(
        ok(
            s.get(Owner(&f.alice), ThreadId(&t1.thread_id)).await,
            "alice's stays"
        )
        .is_some()
    );
    f.delete(s, &[]).await;
}

/// `patch_metadata` merges into the owner's thread and moves only `updated_at`.
pub async fn thread_patch_metadata_merges(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let t1 = &f.t1;
    let patch = obj(json!({"title": "renamed", "n": 10}));
    let p = ok(
        s.patch_metadata(Owner(&f.alice), ThreadId(&t1.thread_id), patch)
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
        s.patch_metadata(Owner(&f.bob), ThreadId(&t1.thread_id), Map::new())
            .await
    ));
    assert!(is_not_found(
        s.patch_metadata(Owner(&f.alice), ThreadId("missing"), Map::new())
            .await
    ));
    f.delete(s, &[]).await;
}

/// A status update merges metadata and does not move `state_updated_at`.
pub async fn thread_status_update_keeps_the_state_time(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let t1 = &f.t1;
    let busy = ThreadUpdate {
        status: Some(ThreadStatus::Busy),
        metadata: Some(obj(json!({"graph_id": "echo"}))),
        ..Default::default()
    };
    let u = ok(
        s.update(Owner(&f.alice), ThreadId(&t1.thread_id), busy)
            .await,
        "set busy",
    );
    assert_eq!(u.status, ThreadStatus::Busy);
    assert_eq!(u.metadata.get("graph_id"), Some(&json!("echo")));
    assert_eq!(
        u.state_updated_at, t1.state_updated_at,
        "status alone does not move state_updated_at"
    );
    assert!(is_not_found(
        s.update(
            Owner(&f.bob),
            ThreadId(&t1.thread_id),
            ThreadUpdate::default()
        )
        .await
    ));
    f.delete(s, &[]).await;
}

/// A state update stores values, error and interrupts and moves `state_updated_at`.
pub async fn thread_state_update(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let u = interrupt_t1(s, &f).await;
    assert_eq!(u.status, ThreadStatus::Interrupted);
    assert_eq!(u.values, Some(t1_values()));
    assert_eq!(u.error, Some(Value::Null));
    assert!(u.state_updated_at > f.t1.state_updated_at);
    let got = ok(
        s.get(Owner(&f.alice), ThreadId(&f.t1.thread_id)).await,
        "get",
    )
    .expect("exists");
    assert_eq!(got, u);
    let wire = serde_json::to_value(&got).unwrap_or(Value::Null);
    assert_eq!(wire["error"], Value::Null);
    assert_eq!(wire["interrupts"]["task"][0]["id"], json!("i1"));
    f.delete(s, &[]).await;
}

/// `interrupts: Some(None)` removes the interrupts and keeps the values.
pub async fn thread_interrupts_can_be_cleared(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    interrupt_t1(s, &f).await;
    let clear = ThreadUpdate {
        interrupts: Some(None),
        ..Default::default()
    };
    let u = ok(
        s.update(Owner(&f.alice), ThreadId(&f.t1.thread_id), clear)
            .await,
        "clear interrupts",
    );
    assert_eq!(u.interrupts, None);
    assert_eq!(u.values, Some(t1_values()));
    f.delete(s, &[]).await;
}

fn thread_ids(found: &[Thread]) -> Vec<&str> {
    found.iter().map(|t| t.thread_id.as_str()).collect()
}

/// Search without filters: created_at desc, per owner; counts per owner.
pub async fn thread_search_default_order_and_count(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let all = ok(
        s.search(Owner(&f.alice), &ThreadSearch::default()).await,
        "search all",
    );
    assert_eq!(
        thread_ids(&all),
        vec![
            f.t3.thread_id.as_str(),
            f.t2.thread_id.as_str(),
            f.t1.thread_id.as_str()
        ],
        "created_at desc"
    );
    let every = ThreadSearch::default();
    assert_eq!(ok(s.count(Owner(&f.alice), &every).await, "count"), 3);
    assert_eq!(ok(s.count(Owner(&f.bob), &every).await, "count bob"), 1);
    f.delete(s, &[]).await;
}

/// Metadata keys that need escaping in a JSON path (backslash, quote, dot, space, non-ASCII,
/// control characters) are stored, read back and matched by filters like any other key.
pub async fn thread_search_by_metadata_keys_that_need_escaping(stores: &Stores) {
    let s = stores.threads.as_ref();
    let (alice, _, x) = names();
    let keys = [
        "b\\\u{fa}",
        "q\"x",
        "a.b",
        "sp ace",
        "tab\t",
        "$[0]",
        "\\\"",
    ];
    let mut meta = Map::new();
    for (i, k) in keys.iter().enumerate() {
        meta.insert(format!("{k}{x}"), json!({"n": i, "s": format!("v\\{i}\"")}));
    }
    let t = thread_at(1, &x, Value::Object(meta.clone()));
    let t = ok(s.create(Owner(&alice), t).await, "create");
    let back = ok(s.get(Owner(&alice), ThreadId(&t.thread_id)).await, "get");
    assert_eq!(
        back.map(|t| t.metadata),
        Some(meta.clone()),
        "read back as written"
    );
    for (k, v) in &meta {
        let q = ThreadSearch {
            metadata: obj(json!({ k.as_str(): v })),
            ..Default::default()
        };
        let found = ok(s.search(Owner(&alice), &q).await, "search");
        assert_eq!(
            thread_ids(&found),
            vec![t.thread_id.as_str()],
            "filter on {k:?}"
        );
        let q = ThreadSearch {
            metadata: obj(json!({ k.as_str(): {"n": -1} })),
            ..Default::default()
        };
        assert_eq!(ok(s.count(Owner(&alice), &q).await, "count"), 0, "{k:?}");
    }
    ok(
        s.delete(Owner(&alice), ThreadId(&t.thread_id)).await,
        "cleanup",
    );
}

/// Numbers at the edges of JSON's range (the largest and smallest doubles, 17-digit mantissas,
/// 64-bit integers) read back exactly after a create, a metadata merge and in a listing; a
/// database that prints them in full (PostgreSQL's `jsonb` writes 1.8e308 as 309 digits) must
/// not leave a row its reader rejects.
pub async fn thread_metadata_numbers_read_back_exactly(stores: &Stores) {
    let s = stores.threads.as_ref();
    let (alice, _, x) = names();
    let numbers = json!({
        "max": f64::MAX, "min": f64::MIN, "tiny": 5e-324, "sub": 1e-320,
        "long": -1.172_269_068_506_250_9e263, "third": 1.0 / 3.0,
        "u64": u64::MAX, "i64": i64::MIN,
    });
    let t = thread_at(1, &x, json!({ "made": numbers }));
    let t = ok(s.create(Owner(&alice), t).await, "create");
    let patch = obj(json!({ "patched": numbers }));
    ok(
        s.patch_metadata(Owner(&alice), ThreadId(&t.thread_id), patch)
            .await,
        "patch",
    );
    let back = ok(s.get(Owner(&alice), ThreadId(&t.thread_id)).await, "get");
    let meta = back.map(|t| t.metadata).unwrap_or_default();
    assert_eq!(meta.get("made"), Some(&numbers), "created");
    assert_eq!(meta.get("patched"), Some(&numbers), "merged");
    let q = ThreadSearch {
        ids: Some(vec![t.thread_id.clone()]),
        ..Default::default()
    };
    let found = ok(s.search(Owner(&alice), &q).await, "search");
    assert_eq!(thread_ids(&found), vec![t.thread_id.as_str()]);
    ok(
        s.delete(Owner(&alice), ThreadId(&t.thread_id)).await,
        "cleanup",
    );
}

/// Metadata filters: per owner, nested values, numbers are not strings, every key must match.
pub async fn thread_search_by_metadata(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let q = |md: Value| ThreadSearch {
        metadata: obj(md),
        ..Default::default()
    };
    let found = ok(
        s.search(Owner(&f.alice), &q(json!({"owner": "alice"})))
            .await,
        "search metadata",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, f.t1.thread_id);
    let found = ok(
        s.search(Owner(&f.bob), &q(json!({"owner": "alice"}))).await,
        "search metadata bob",
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, f.tb.thread_id);
    let count = |md: Value, what: &'static str| {
        let (s, alice) = (s, f.alice.clone());
        async move { ok(s.count(Owner(&alice), &q(md)).await, what) }
    };
    assert_eq!(
        count(json!({"tag": {"a": [1, 2]}}), "count nested").await,
        1
    );
    assert_eq!(count(json!({"n": 2}), "count number").await, 1);
    assert_eq!(count(json!({"n": "2"}), "string is not number").await, 0);
    assert_eq!(
        count(json!({"n": 2, "missing": 1}), "all keys must match").await,
        0
    );
    f.delete(s, &[]).await;
}

/// Filters on values, status and a list of ids (another owner's ids match nothing).
pub async fn thread_search_by_values_status_and_ids(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    interrupt_t1(s, &f).await;
    let q = ThreadSearch {
        values: obj(json!({"title": "hi"})),
        ..Default::default()
    };
    let found = ok(s.search(Owner(&f.alice), &q).await, "search values");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, f.t1.thread_id);
    let status = |status| ThreadSearch {
        status: Some(status),
        ..Default::default()
    };
    assert_eq!(
        ok(
            s.count(Owner(&f.alice), &status(ThreadStatus::Idle)).await,
            "count idle"
        ),
        2
    );
    let interrupted = status(ThreadStatus::Interrupted);
    assert_eq!(
        ok(
            s.count(Owner(&f.alice), &interrupted).await,
            "count interrupted"
        ),
        1
    );
    let q = ThreadSearch {
        ids: Some(vec![f.t2.thread_id.clone(), f.tb.thread_id.clone()]),
        ..Default::default()
    };
    let found = ok(s.search(Owner(&f.alice), &q).await, "search ids");
    assert_eq!(found.len(), 1, "bob's thread is not alice's");
    assert_eq!(found[0].thread_id, f.t2.thread_id);
    let q = ThreadSearch {
        ids: Some(vec![]),
        ..Default::default()
    };
    assert_eq!(ok(s.count(Owner(&f.alice), &q).await, "empty id list"), 0);
    f.delete(s, &[]).await;
}

/// Sorting by thread id, updated_at, state_updated_at and status; paging.
pub async fn thread_search_sort_and_paging(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    interrupt_t1(s, &f).await;
    let (t1, t2, t3) = (&f.t1.thread_id, &f.t2.thread_id, &f.t3.thread_id);
    let sorted = |sort_by, sort_order, limit| ThreadSearch {
        sort_by,
        sort_order,
        limit,
        ..Default::default()
    };
    let q = sorted(ThreadSortBy::ThreadId, SortOrder::Asc, DEFAULT_LIMIT);
    let found = ok(s.search(Owner(&f.alice), &q).await, "sort thread_id");
    assert_eq!(
        thread_ids(&found),
        vec![t1.as_str(), t2.as_str(), t3.as_str()]
    );
    let q = sorted(ThreadSortBy::UpdatedAt, SortOrder::Asc, 2);
    let found = ok(s.search(Owner(&f.alice), &q).await, "sort updated_at");
    assert_eq!(
        thread_ids(&found),
        vec![t3.as_str(), t2.as_str()],
        "t1 was updated last"
    );
    let q = sorted(ThreadSortBy::StateUpdatedAt, SortOrder::Desc, 1);
    assert_eq!(
        ok(s.search(Owner(&f.alice), &q).await, "sort state_updated_at")[0].thread_id,
        *t1
    );
    let q = sorted(ThreadSortBy::Status, SortOrder::Desc, 1);
    assert_eq!(
        ok(s.search(Owner(&f.alice), &q).await, "sort status")[0].thread_id,
        *t1,
        "interrupted > idle"
    );
    let page = |limit, offset| ThreadSearch {
        limit,
        offset,
        ..Default::default()
    };
    let found = ok(s.search(Owner(&f.alice), &page(1, 2)).await, "paging");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].thread_id, *t1);
    assert!(
        ok(
            s.search(Owner(&f.alice), &page(5, 10)).await,
            "past the end"
        )
        .is_empty()
    );
    f.delete(s, &[]).await;
}

/// A copy has the source's metadata, values and status under the new id; the new id must be
/// free and the source the caller's.
pub async fn thread_copy(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let u = interrupt_t1(s, &f).await;
    let (x, t1) = (&f.x, &f.t1.thread_id);
    let new_id = format!("copy-{x}");
    let c = ok(
        s.copy(Owner(&f.alice), ThreadId(t1), ThreadId(&new_id))
            .await,
        "copy",
    );
    assert_eq!(c.thread_id, new_id);
    assert_eq!(c.owner, f.alice);
    assert_eq!(c.metadata, u.metadata);
    assert_eq!(c.values, u.values);
    assert_eq!(c.status, ThreadStatus::Interrupted);
    assert_eq!(
        ok(s.get(Owner(&f.alice), ThreadId(&new_id)).await, "get copy").expect("copy exists"),
        c
    );
    assert!(is_conflict(
        s.copy(Owner(&f.alice), ThreadId(t1), ThreadId(&new_id))
            .await
    ));
    assert!(is_not_found(
        s.copy(
            Owner(&f.bob),
            ThreadId(t1),
            ThreadId(&format!("bobcopy-{x}"))
        )
        .await
    ));
    assert!(is_not_found(
        s.copy(
            Owner(&f.alice),
            ThreadId("missing"),
            ThreadId(&format!("nocopy-{x}"))
        )
        .await
    ));
    f.delete(s, &[&new_id]).await;
}

/// A copy is never busy.
pub async fn thread_copy_of_a_busy_thread_is_idle(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let busy = ThreadUpdate {
        status: Some(ThreadStatus::Busy),
        ..Default::default()
    };
    ok(
        s.update(Owner(&f.alice), ThreadId(&f.t2.thread_id), busy)
            .await,
        "busy",
    );
    let c2 = ok(
        s.copy(
            Owner(&f.alice),
            ThreadId(&f.t2.thread_id),
            ThreadId(&format!("copy2-{}", f.x)),
        )
        .await,
        "copy busy",
    );
    assert_eq!(c2.status, ThreadStatus::Idle, "a copy is never busy");
    f.delete(s, &[&c2.thread_id]).await;
}

/// Delete removes the owner's thread only.
pub async fn thread_delete(stores: &Stores) {
    let s = stores.threads.as_ref();
    let f = Threads::create(s).await;
    let t1 = f.t1.thread_id.clone();
    assert!(is_not_found(s.delete(Owner(&f.bob), ThreadId(&t1)).await));
    ok(s.delete(Owner(&f.alice), ThreadId(&t1)).await, "delete");
    assert!(ok(s.get(Owner(&f.alice), ThreadId(&t1)).await, "get deleted").is_none());
    assert!(is_not_found(s.delete(Owner(&f.alice), ThreadId(&t1)).await));
    for id in [&f.t2.thread_id, &f.t3.thread_id] {
        ok(s.delete(Owner(&f.alice), ThreadId(id)).await, "cleanup");
    }
    ok(
        s.delete(Owner(&f.bob), ThreadId(&f.tb.thread_id)).await,
        "cleanup bob",
    );
    assert_eq!(
        ok(
            s.count(Owner(&f.alice), &ThreadSearch::default()).await,
            "count after"
        ),
        0
    );
}
