//! The shared contract suite of [`Checkpointer`]: every implementation runs it from its own
//! tests through [`checkpointer_conformance!`](crate::checkpointer_conformance), which expands
//! to one `#[tokio::test]` per case, so a failure names the case. The cases named
//! `owner_view_*` run a case through an [`OwnerCheckpointer`] (what the server uses).
//!
//! Every case uses thread ids of its own (`conformance-<what>-<uuid>`), so the cases run in
//! parallel against one database and alongside other data; they panic (assert) on the first
//! violation.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::checkpoint::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointTuple, Checkpointer, ListOptions,
    OwnerCheckpointer, new_checkpoint_id, now_ts,
};

/// One `#[tokio::test]` per case of the suite, in the module where it is invoked.
///
/// `$factory` is an expression evaluated afresh in every test, a future of `Option<F>` where
/// `F: Borrow<Arc<dyn Checkpointer>>` (the checkpointer itself, or a fixture that also keeps
/// e.g. a temp dir alive); `None` skips the test (a server unreachable outside CI). Attributes
/// before it replace the default `#[tokio::test]`:
///
/// ```ignore
/// antler_graph::checkpointer_conformance!(
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     async { Some(Arc::new(MemoryCheckpointer::new()) as Arc<dyn Checkpointer>) }
/// );
/// ```
#[macro_export]
macro_rules! checkpointer_conformance {
    (@case [$($attr:tt)*] $factory:expr, $case:ident) => {
        $($attr)*
        async fn $case() {
            let Some(fixture) = $factory.await else { return };
            $crate::conformance::$case(::std::borrow::Borrow::borrow(&fixture)).await;
        }
    };
    (@cases $attrs:tt $factory:expr; $($case:ident),+ $(,)?) => {
        $($crate::checkpointer_conformance!(@case $attrs $factory, $case);)+
    };
    ($(#[$attr:meta])+ $factory:expr) => {
        $crate::checkpointer_conformance!(@cases [$(#[$attr])+] $factory;
            round_trip,
            unchanged_channels_are_reloaded,
            a_channel_absent_from_values_is_stored_empty,
            list_is_newest_first_across_namespaces,
            list_limit_and_before,
            list_metadata_filter,
            pending_writes,
            copy_thread_copies_everything,
            delete_run_removes_only_that_run,
            delete_thread_removes_only_that_thread,
            shared_put,
            owners_do_not_meet,
            one_owners_rollback_and_delete_leave_the_other,
            owner_view_round_trip,
            owner_view_unchanged_channels_are_reloaded,
            owner_view_a_channel_absent_from_values_is_stored_empty,
            owner_view_copy_thread_copies_everything,
            owner_view_delete_run_removes_only_that_run,
            owner_view_delete_thread_removes_only_that_thread,
            owner_view_shared_put,
        );
    };
    ($factory:expr) => {
        $crate::checkpointer_conformance!(#[tokio::test] $factory);
    };
}

/// A thread id no other case (or earlier run of the suite) uses.
fn thread(what: &str) -> String {
    format!("conformance-{what}-{}", uuid::Uuid::new_v4().simple())
}

fn meta(source: &str, step: i64, run_id: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("source".into(), json!(source));
    m.insert("step".into(), json!(step));
    m.insert("parents".into(), json!({}));
    m.insert("run_id".into(), json!(run_id));
    m
}

fn cp(
    step: i64,
    values: Value,
    versions: &[(&str, u64)],
    seen: &[(&str, &str, u64)],
) -> Checkpoint {
    let mut versions_seen: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (node, ch, v) in seen {
        versions_seen
            .entry(node.to_string())
            .or_default()
            .insert(ch.to_string(), *v);
    }
    Checkpoint {
        id: new_checkpoint_id(step),
        ts: now_ts(),
        channel_values: values.as_object().cloned().unwrap_or_default(),
        channel_versions: versions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        versions_seen,
        updated_channels: versions.iter().map(|(k, _)| k.to_string()).collect(),
    }
}

fn versions(vs: &[(&str, u64)]) -> BTreeMap<String, ChannelVersion> {
    vs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn ids(tuples: &[CheckpointTuple]) -> Vec<String> {
    tuples.iter().map(|t| t.checkpoint.id.clone()).collect()
}

/// `owner`'s view of `store`, as the server reaches a user's threads.
fn view(store: &Arc<dyn Checkpointer>, owner: &str) -> Arc<dyn Checkpointer> {
    Arc::new(OwnerCheckpointer::new(store.clone(), owner))
}

// ------------------------------------------------------------------ round trip, channels

/// The first checkpoint of a thread: `step -1`, `messages = []`, run `run-1`.
async fn put_first(store: &dyn Checkpointer, t: &str) -> (Checkpoint, Map<String, Value>) {
    let c1 = cp(-1, json!({"messages": []}), &[("messages", 1)], &[]);
    let m1 = meta("input", -1, "run-1");
    store
        .put(t, "", None, &c1, &m1, &versions(&[("messages", 1)]))
        .await
        .unwrap();
    (c1, m1)
}

/// A put checkpoint reads back whole: values, metadata, no parent, the caller's thread id and
/// namespace, no writes; unknown ids and namespaces read as missing.
pub async fn round_trip(store: &Arc<dyn Checkpointer>) {
    let t = &thread("rt");
    assert!(store.get_tuple(t, "", None).await.unwrap().is_none());
    let (c1, m1) = put_first(store.as_ref(), t).await;
    let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
    assert_eq!(got.checkpoint, c1);
    assert_eq!(got.metadata, m1);
    assert_eq!(got.parent_checkpoint_id, None);
    assert_eq!(got.thread_id, *t);
    assert_eq!(got.checkpoint_ns, "");
    assert!(got.pending_writes.is_empty());
    assert!(
        store
            .get_tuple(t, "", Some("nope"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_tuple(t, "other-ns", None)
            .await
            .unwrap()
            .is_none()
    );
    store.delete_thread(t).await.unwrap();
}

/// Three steps: the first writes `messages = []`, step 0 writes messages (version 2), step 1
/// writes only `title` (version 3).
async fn put_three_steps(store: &dyn Checkpointer, t: &str) -> [Checkpoint; 3] {
    let (c1, _) = put_first(store, t).await;
    let c2 = cp(
        0,
        json!({"messages": [{"type": "human", "content": "hi", "id": "1"}]}),
        &[("messages", 2)],
        &[("__input__", "messages", 1)],
    );
    let m2 = meta("loop", 0, "run-1");
    store
        .put(t, "", Some(&c1.id), &c2, &m2, &versions(&[("messages", 2)]))
        .await
        .unwrap();
    let mut c3 = cp(
        1,
        json!({"title": "hello"}),
        &[("messages", 2), ("title", 3)],
        &[("echo", "messages", 2)],
    );
    c3.updated_channels = vec!["title".into()];
    let m3 = meta("loop", 1, "run-1");
    store
        .put(t, "", Some(&c2.id), &c3, &m3, &versions(&[("title", 3)]))
        .await
        .unwrap();
    [c1, c2, c3]
}

/// A channel a step did not write is reloaded from the version its checkpoint names; an older
/// checkpoint still sees its own values.
pub async fn unchanged_channels_are_reloaded(store: &Arc<dyn Checkpointer>) {
    let t = &thread("unchanged");
    let [c1, c2, c3] = put_three_steps(store.as_ref(), t).await;
    let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
    assert_eq!(got.checkpoint.id, c3.id);
    assert_eq!(got.parent_checkpoint_id.as_deref(), Some(c2.id.as_str()));
    assert_eq!(
        Value::Object(got.checkpoint.channel_values.clone()),
        json!({"messages": [{"type": "human", "content": "hi", "id": "1"}], "title": "hello"})
    );
    assert_eq!(got.checkpoint.channel_versions, c3.channel_versions);
    assert_eq!(got.checkpoint.versions_seen, c3.versions_seen);
    assert_eq!(got.checkpoint.updated_channels, vec!["title".to_string()]);
    assert_eq!(got.checkpoint.ts, c3.ts);
    // by id: the older checkpoint still sees its own values
    let old = store.get_tuple(t, "", Some(&c1.id)).await.unwrap().unwrap();
    assert_eq!(
        Value::Object(old.checkpoint.channel_values),
        json!({"messages": []})
    );
    store.delete_thread(t).await.unwrap();
}

/// A channel in `new_versions` but absent from the values is stored as empty.
pub async fn a_channel_absent_from_values_is_stored_empty(store: &Arc<dyn Checkpointer>) {
    let t = &thread("absent");
    let [_, _, c3] = put_three_steps(store.as_ref(), t).await;
    let c4 = cp(2, json!({}), &[("messages", 2), ("title", 4)], &[]);
    let m4 = meta("loop", 2, "run-1");
    store
        .put(t, "", Some(&c3.id), &c4, &m4, &versions(&[("title", 4)]))
        .await
        .unwrap();
    let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
    assert_eq!(
        Value::Object(got.checkpoint.channel_values),
        json!({"messages": [{"type": "human", "content": "hi", "id": "1"}]})
    );
    store.delete_thread(t).await.unwrap();
}

// ------------------------------------------------------------------ list

/// Five root checkpoints (steps -1..=3, `n = step`, the first from `input`) and one in the
/// namespace `child:abc`: the root ids oldest first, and the subgraph checkpoint.
async fn put_list_thread(store: &dyn Checkpointer, t: &str) -> (Vec<String>, Checkpoint) {
    let mut all = Vec::new();
    let mut parent: Option<String> = None;
    for step in -1..4i64 {
        let source = if step < 0 { "input" } else { "loop" };
        let v = (step + 2) as u64;
        let c = cp(step, json!({"n": step}), &[("n", v)], &[]);
        let m = meta(source, step, "run-l");
        store
            .put(t, "", parent.as_deref(), &c, &m, &versions(&[("n", v)]))
            .await
            .unwrap();
        parent = Some(c.id.clone());
        all.push(c.id.clone());
    }
    let sub = cp(0, json!({"n": 100}), &[("n", 1)], &[]);
    let m = meta("loop", 0, "run-l");
    store
        .put(t, "child:abc", None, &sub, &m, &versions(&[("n", 1)]))
        .await
        .unwrap();
    (all, sub)
}

/// `list` of one namespace is newest first with full values; without a namespace it spans
/// them all.
pub async fn list_is_newest_first_across_namespaces(store: &Arc<dyn Checkpointer>) {
    let t = &thread("list");
    let (all, sub) = put_list_thread(store.as_ref(), t).await;
    let mut newest_first = all.clone();
    newest_first.reverse();
    let root = store
        .list(t, Some(""), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(ids(&root), newest_first);
    assert_eq!(
        Value::Object(root[0].checkpoint.channel_values.clone()),
        json!({"n": 3})
    );
    let every = store.list(t, None, &ListOptions::default()).await.unwrap();
    assert_eq!(every.len(), 6);
    assert_eq!(every[0].checkpoint.id, sub.id);
    assert_eq!(every[0].checkpoint_ns, "child:abc");
    store.delete_thread(t).await.unwrap();
}

/// `limit` keeps the newest; `before` lists what is older than a checkpoint.
pub async fn list_limit_and_before(store: &Arc<dyn Checkpointer>) {
    let t = &thread("list-limit");
    let (all, _) = put_list_thread(store.as_ref(), t).await;
    let limit = ListOptions {
        limit: Some(2),
        ..Default::default()
    };
    let limited = store.list(t, Some(""), &limit).await.unwrap();
    assert_eq!(ids(&limited), vec![all[4].clone(), all[3].clone()]);
    let before = ListOptions {
        before: Some(all[2].clone()),
        ..Default::default()
    };
    let before = store.list(t, Some(""), &before).await.unwrap();
    assert_eq!(ids(&before), vec![all[1].clone(), all[0].clone()]);
    store.delete_thread(t).await.unwrap();
}

/// The metadata filter keeps the checkpoints whose metadata hold every key; an unknown thread
/// lists nothing.
pub async fn list_metadata_filter(store: &Arc<dyn Checkpointer>) {
    let t = &thread("list-filter");
    let (all, _) = put_list_thread(store.as_ref(), t).await;
    let filtered = |pairs: &[(&str, Value)]| ListOptions {
        filter: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let input = filtered(&[("source", json!("input"))]);
    let found = store.list(t, Some(""), &input).await.unwrap();
    assert_eq!(ids(&found), vec![all[0].clone()]);
    let step2 = filtered(&[("step", json!(2)), ("source", json!("loop"))]);
    let found = store.list(t, Some(""), &step2).await.unwrap();
    assert_eq!(ids(&found), vec![all[3].clone()]);
    assert!(
        store
            .list(&thread("none"), None, &ListOptions::default())
            .await
            .unwrap()
            .is_empty()
    );
    store.delete_thread(t).await.unwrap();
}

// ------------------------------------------------------------------ pending writes

/// Pending writes are idempotent per task, come back in order with the checkpoint, and in
/// `list` too.
pub async fn pending_writes(store: &Arc<dyn Checkpointer>) {
    let t = &thread("writes");
    let c = cp(0, json!({"messages": []}), &[("messages", 1)], &[]);
    let m = meta("loop", 0, "run-w");
    store
        .put(t, "", None, &c, &m, &versions(&[("messages", 1)]))
        .await
        .unwrap();
    let w1 = vec![
        (
            "messages".to_string(),
            json!([{"type": "ai", "content": "x", "id": "a"}]),
        ),
        ("title".to_string(), json!("t")),
    ];
    store.put_writes(t, "", &c.id, "task-1", &w1).await.unwrap();
    // idempotent
    store.put_writes(t, "", &c.id, "task-1", &w1).await.unwrap();
    let error = [("__error__".to_string(), json!({"kind": "ValueError"}))];
    store
        .put_writes(t, "", &c.id, "task-2", &error)
        .await
        .unwrap();
    let got = store.get_tuple(t, "", Some(&c.id)).await.unwrap().unwrap();
    assert_eq!(got.pending_writes.len(), 3, "{:?}", got.pending_writes);
    assert_eq!(got.pending_writes[0].task_id, "task-1");
    assert_eq!(got.pending_writes[0].channel, "messages");
    assert_eq!(got.pending_writes[1].channel, "title");
    assert_eq!(got.pending_writes[1].value, json!("t"));
    assert_eq!(got.pending_writes[2].task_id, "task-2");
    assert_eq!(got.pending_writes[2].channel, "__error__");
    let listed = store
        .list(t, Some(""), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed[0].pending_writes.len(), 3);
    store.delete_thread(t).await.unwrap();
}

// ------------------------------------------------------------------ copy, delete

/// `t`: c1 (run-a), c2 (run-a, a pending write), c3 (run-b) and a `child:1` checkpoint
/// (run-b), copied to `t2`. Returns `[c1, c2, c3]`.
async fn put_and_copy(store: &dyn Checkpointer, t: &str, t2: &str) -> [Checkpoint; 3] {
    let c1 = cp(-1, json!({"messages": []}), &[("messages", 1)], &[]);
    let m = meta("input", -1, "run-a");
    store
        .put(t, "", None, &c1, &m, &versions(&[("messages", 1)]))
        .await
        .unwrap();
    let c2 = cp(
        0,
        json!({"title": "a"}),
        &[("messages", 1), ("title", 2)],
        &[],
    );
    let m = meta("loop", 0, "run-a");
    store
        .put(t, "", Some(&c1.id), &c2, &m, &versions(&[("title", 2)]))
        .await
        .unwrap();
    let write = [("title".to_string(), json!("b"))];
    store
        .put_writes(t, "", &c2.id, "task-x", &write)
        .await
        .unwrap();
    let c3 = cp(
        1,
        json!({"title": "c"}),
        &[("messages", 1), ("title", 3)],
        &[],
    );
    let m = meta("loop", 1, "run-b");
    store
        .put(t, "", Some(&c2.id), &c3, &m, &versions(&[("title", 3)]))
        .await
        .unwrap();
    let sub = cp(0, json!({"n": 1}), &[("n", 1)], &[]);
    let m = meta("loop", 0, "run-b");
    store
        .put(t, "child:1", None, &sub, &m, &versions(&[("n", 1)]))
        .await
        .unwrap();
    store.copy_thread(t, t2).await.unwrap();
    [c1, c2, c3]
}

async fn count(store: &dyn Checkpointer, t: &str) -> usize {
    store
        .list(t, None, &ListOptions::default())
        .await
        .unwrap()
        .len()
}

/// `copy_thread` copies every checkpoint of every namespace with its writes, under the new
/// thread id.
pub async fn copy_thread_copies_everything(store: &Arc<dyn Checkpointer>) {
    let (t, t2) = (&thread("copy"), &thread("copy-2"));
    let [_, c2, c3] = put_and_copy(store.as_ref(), t, t2).await;
    let copied = store.list(t2, None, &ListOptions::default()).await.unwrap();
    assert_eq!(copied.len(), 4);
    assert!(copied.iter().all(|c| c.thread_id == *t2));
    let latest = store.get_tuple(t2, "", None).await.unwrap().unwrap();
    assert_eq!(latest.checkpoint.id, c3.id);
    assert_eq!(
        Value::Object(latest.checkpoint.channel_values),
        json!({"messages": [], "title": "c"})
    );
    let w = store
        .get_tuple(t2, "", Some(&c2.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.pending_writes.len(), 1);
    assert!(
        store
            .get_tuple(t2, "child:1", None)
            .await
            .unwrap()
            .is_some()
    );
    for t in [t, t2] {
        store.delete_thread(t).await.unwrap();
    }
}

/// `delete_run` removes only that run's checkpoints, on that thread only.
pub async fn delete_run_removes_only_that_run(store: &Arc<dyn Checkpointer>) {
    let (t, t2) = (&thread("delete-run"), &thread("delete-run-2"));
    let [c1, c2, _] = put_and_copy(store.as_ref(), t, t2).await;
    store.delete_run(t, "run-b").await.unwrap();
    let left = store.list(t, None, &ListOptions::default()).await.unwrap();
    assert_eq!(ids(&left), vec![c2.id.clone(), c1.id.clone()]);
    let latest = store.get_tuple(t, "", None).await.unwrap().unwrap();
    assert_eq!(latest.checkpoint.id, c2.id);
    assert_eq!(
        Value::Object(latest.checkpoint.channel_values),
        json!({"messages": [], "title": "a"})
    );
    assert_eq!(latest.pending_writes.len(), 1);
    assert_eq!(count(store.as_ref(), t2).await, 4);
    for t in [t, t2] {
        store.delete_thread(t).await.unwrap();
    }
}

/// `delete_thread` removes every checkpoint of the thread and nothing of its copy.
pub async fn delete_thread_removes_only_that_thread(store: &Arc<dyn Checkpointer>) {
    let (t, t2) = (&thread("delete"), &thread("delete-2"));
    put_and_copy(store.as_ref(), t, t2).await;
    store.delete_thread(t).await.unwrap();
    assert!(store.get_tuple(t, "", None).await.unwrap().is_none());
    assert_eq!(count(store.as_ref(), t).await, 0);
    assert_eq!(count(store.as_ref(), t2).await, 4);
    store.delete_thread(t2).await.unwrap();
}

// ------------------------------------------------------------------ shared values

/// `put_shared` stores shared channel values; `get_tuple` reads them as JSON, and
/// `get_tuple_shared` returns them beside a tuple without values.
pub async fn shared_put(store: &Arc<dyn Checkpointer>) {
    let t = &thread("shared");
    let mut c = cp(0, json!({}), &[("messages", 5), ("title", 6)], &[]);
    c.channel_values = Map::new();
    let mut values = BTreeMap::new();
    values.insert(
        "messages".to_string(),
        ChannelValue::from_value(json!([{"id": "1"}, {"id": "2"}]), true),
    );
    values.insert(
        "title".to_string(),
        ChannelValue::from_value(json!("x"), false),
    );
    let (m, nv) = (
        meta("loop", 0, "r"),
        versions(&[("messages", 5), ("title", 6)]),
    );
    store
        .put_shared(t, "", None, &c, &values, &m, &nv)
        .await
        .unwrap();
    let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
    assert_eq!(
        Value::Object(got.checkpoint.channel_values),
        json!({"messages": [{"id": "1"}, {"id": "2"}], "title": "x"})
    );
    let (tuple, shared) = store.get_tuple_shared(t, "", None).await.unwrap().unwrap();
    assert_eq!(tuple.checkpoint.id, c.id);
    assert_eq!(tuple.checkpoint.channel_versions, c.channel_versions);
    assert!(tuple.checkpoint.channel_values.is_empty());
    let as_json: Map<String, Value> = shared
        .iter()
        .map(|(k, v)| (k.clone(), v.to_value()))
        .collect();
    assert_eq!(
        Value::Object(as_json),
        json!({"messages": [{"id": "1"}, {"id": "2"}], "title": "x"})
    );
    store.delete_thread(t).await.unwrap();
}

// ------------------------------------------------------------------ owners

/// Owners a and b of `store`, each with a thread `t` (deleted first, which must succeed on an
/// empty thread) holding one checkpoint: `who = "a"` (run-a) and `who = "b"` (run-b). Asserts
/// that b does not see a's before b writes. Returns a's checkpoint.
async fn two_owners(
    store: &Arc<dyn Checkpointer>,
    t: &str,
) -> (Arc<dyn Checkpointer>, Arc<dyn Checkpointer>, Checkpoint) {
    let (a, b) = (view(store, "owner-a"), view(store, "owner-b"));
    for v in [&a, &b] {
        v.delete_thread(t).await.unwrap();
    }
    let nv = versions(&[("who", 1)]);
    let ca = cp(0, json!({"who": "a"}), &[("who", 1)], &[]);
    let m = meta("input", 0, "run-a");
    a.put(t, "", None, &ca, &m, &nv).await.unwrap();
    assert!(b.get_tuple(t, "", None).await.unwrap().is_none());
    assert!(
        b.list(t, None, &ListOptions::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(b.get_tuple(t, "", Some(&ca.id)).await.unwrap().is_none());
    let cb = cp(0, json!({"who": "b"}), &[("who", 1)], &[]);
    let m = meta("input", 0, "run-b");
    b.put(t, "", None, &cb, &m, &nv).await.unwrap();
    (a, b, ca)
}

/// Two owners' views of one store, both with a thread of the same id, never see each other's
/// checkpoints; tuples carry the caller's thread id, not the storage key.
pub async fn owners_do_not_meet(store: &Arc<dyn Checkpointer>) {
    let t = &thread("owners");
    let (a, b, ca) = two_owners(store, t).await;
    let got_a = a.get_tuple(t, "", None).await.unwrap().unwrap();
    assert_eq!(got_a.thread_id, *t);
    assert_eq!(got_a.checkpoint.id, ca.id);
    assert_eq!(got_a.checkpoint.channel_values["who"], json!("a"));
    let got_b = b.get_tuple(t, "", None).await.unwrap().unwrap();
    assert_eq!(got_b.checkpoint.channel_values["who"], json!("b"));
    let (shared, values) = b.get_tuple_shared(t, "", None).await.unwrap().unwrap();
    assert_eq!(shared.thread_id, *t);
    assert_eq!(values["who"].to_value(), json!("b"));
    let listed = a.list(t, None, &ListOptions::default()).await.unwrap();
    assert_eq!(ids(&listed), vec![ca.id.clone()]);
    assert!(listed.iter().all(|x| x.thread_id == *t));
    // Nothing is stored under the bare id.
    assert!(store.get_tuple(t, "", None).await.unwrap().is_none());
    for v in [&a, &b] {
        v.delete_thread(t).await.unwrap();
    }
}

/// One owner's rollback and delete leave the other's thread of the same id alone.
pub async fn one_owners_rollback_and_delete_leave_the_other(store: &Arc<dyn Checkpointer>) {
    let t = &thread("owners-delete");
    let (a, b, ca) = two_owners(store, t).await;
    b.delete_run(t, "run-a").await.unwrap();
    assert!(a.get_tuple(t, "", None).await.unwrap().is_some());
    b.delete_thread(t).await.unwrap();
    assert!(b.get_tuple(t, "", None).await.unwrap().is_none());
    assert_eq!(
        a.get_tuple(t, "", None)
            .await
            .unwrap()
            .unwrap()
            .checkpoint
            .id,
        ca.id
    );
    // Nothing is stored under the bare id.
    assert!(store.get_tuple(t, "", None).await.unwrap().is_none());
    a.delete_thread(t).await.unwrap();
}

// ------------------------------------------------------------------ through an owner's view

const VIEW_OWNER: &str = "conformance-owner";

/// [`round_trip`] through an owner's view.
pub async fn owner_view_round_trip(store: &Arc<dyn Checkpointer>) {
    round_trip(&view(store, VIEW_OWNER)).await;
}

/// [`unchanged_channels_are_reloaded`] through an owner's view.
pub async fn owner_view_unchanged_channels_are_reloaded(store: &Arc<dyn Checkpointer>) {
    unchanged_channels_are_reloaded(&view(store, VIEW_OWNER)).await;
}

/// [`a_channel_absent_from_values_is_stored_empty`] through an owner's view.
pub async fn owner_view_a_channel_absent_from_values_is_stored_empty(
    store: &Arc<dyn Checkpointer>,
) {
    a_channel_absent_from_values_is_stored_empty(&view(store, VIEW_OWNER)).await;
}

/// [`copy_thread_copies_everything`] through an owner's view.
pub async fn owner_view_copy_thread_copies_everything(store: &Arc<dyn Checkpointer>) {
    copy_thread_copies_everything(&view(store, VIEW_OWNER)).await;
}

/// [`delete_run_removes_only_that_run`] through an owner's view.
pub async fn owner_view_delete_run_removes_only_that_run(store: &Arc<dyn Checkpointer>) {
    delete_run_removes_only_that_run(&view(store, VIEW_OWNER)).await;
}

/// [`delete_thread_removes_only_that_thread`] through an owner's view.
pub async fn owner_view_delete_thread_removes_only_that_thread(store: &Arc<dyn Checkpointer>) {
    delete_thread_removes_only_that_thread(&view(store, VIEW_OWNER)).await;
}

/// [`shared_put`] through an owner's view.
pub async fn owner_view_shared_put(store: &Arc<dyn Checkpointer>) {
    shared_put(&view(store, VIEW_OWNER)).await;
}
