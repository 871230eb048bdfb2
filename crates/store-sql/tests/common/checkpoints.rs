//! The delta-encoded checkpointer as stored: unchanged channels written once, list channels
//! as bounded delta chains, forks that reuse version numbers, rollback (`delete_run`) with
//! delta chains, copies; and the graph engine on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::{ChannelValue, Checkpoint, Checkpointer, ListOptions};
use serde_json::{Map, Value, json};

use super::{Backend, Blobs, uid};

pub fn msg(i: usize) -> Value {
    json!({"type": "ai", "content": format!("message {i}"), "id": format!("m{i}")})
}

fn meta(run_id: &str, step: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("run_id".into(), json!(run_id));
    m.insert("step".into(), json!(step));
    m
}

pub fn push(list: &ChannelValue, v: Value) -> ChannelValue {
    match list.clone() {
        ChannelValue::List(mut items) => {
            items.push_back(Arc::new(v));
            ChannelValue::List(items)
        }
        other => other,
    }
}

/// Puts one step: `messages` changed (version `v`), `step` changed (version `v`).
pub async fn step(
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

pub async fn messages_at(cp: &dyn Checkpointer, thread: &str, id: Option<&str>) -> Value {
    let t = cp.get_tuple(thread, "", id).await.unwrap().unwrap();
    t.checkpoint
        .channel_values
        .get("messages")
        .cloned()
        .unwrap_or(Value::Null)
}

/// `n` steps of run `run` on a fresh thread, each appending `msg(i)` to the messages; returns
/// the thread, the checkpoint ids and the list as last written.
async fn grow(cp: &dyn Checkpointer, n: usize, run: &str) -> (String, Vec<String>, ChannelValue) {
    let t = format!("t-{}", uid());
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut ids: Vec<String> = Vec::new();
    for i in 0..n {
        list = push(&list, msg(i));
        let id = step(
            cp,
            &t,
            ids.last().map(String::as_str),
            &list,
            i as u64 + 1,
            run,
        )
        .await;
        ids.push(id);
    }
    (t, ids, list)
}

/// 20 steps on a thread: `messages` (200 of them) written at the first only, `counter` at
/// every one; the messages channel is stored once.
pub async fn unchanged_channels_are_stored_once<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let t = format!("once-{}", uid());
    let big: Vec<Value> = (0..200)
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
        cp.put(&t, "", parent.as_deref(), &c, &md, &new_versions)
            .await
            .unwrap();
        parent = Some(c.id.clone());
    }
    assert_eq!(
        b.blobs(&t).await.rows(),
        1,
        "the unchanged messages channel is written once"
    );
    let latest = cp.get_tuple(&t, "", None).await.unwrap().unwrap();
    assert_eq!(latest.checkpoint.channel_values["messages"], json!(big));
    assert_eq!(latest.checkpoint.channel_values["counter"], json!(19));
    cp.delete_thread(&t).await.unwrap();
}

/// 100 steps appending one message each: mostly deltas, chains cut by full values within
/// the depth limit, linear (not quadratic) bytes.
pub async fn growing_lists_are_stored_as_bounded_delta_chains<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let (t, _, _) = grow(&*cp, 100, "r1").await;
    let Blobs {
        full: fulls,
        delta: deltas,
        max_depth,
        bytes,
    } = b.blobs(&t).await;
    assert!(
        deltas >= 90,
        "most steps write deltas ({fulls} full, {deltas} delta)"
    );
    assert!(fulls >= 3, "chains are cut with full values ({fulls} full)");
    assert!(max_depth <= B::MAX_DELTA_DEPTH);
    // the size written for the messages channel grows linearly, not quadratically
    let one = msg(99).to_string().len() as i64;
    assert!(
        bytes < one * 100 * 6,
        "stored {bytes} bytes for 100 messages of ~{one} bytes"
    );
    cp.delete_thread(&t).await.unwrap();
}

/// Every checkpoint of a 100-step chain reads back its own list, through `get_tuple` and
/// `list`, and through a second process without its cache; deleting the thread collects every
/// blob.
pub async fn delta_chains_read_back_at_every_checkpoint<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let (t, ids, _) = grow(&*cp, 100, "r1").await;
    let expected: Vec<Value> = (0..100).map(msg).collect();
    assert_eq!(
        messages_at(&*cp, &t, None).await,
        Value::Array(expected.clone())
    );
    for (i, id) in ids.iter().enumerate().step_by(7) {
        assert_eq!(
            messages_at(&*cp, &t, Some(id)).await,
            Value::Array(expected[..=i].to_vec()),
            "checkpoint {i}"
        );
    }
    let listed = cp
        .list(&t, Some(""), &ListOptions::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(
        listed[50].checkpoint.channel_values["messages"],
        Value::Array(expected[..50].to_vec())
    );
    // a second process (no cache) reads the same chains
    let cp2 = b.checkpointer().await;
    assert_eq!(
        messages_at(&*cp2, &t, Some(&ids[64])).await,
        Value::Array(expected[..=64].to_vec())
    );
    cp.delete_thread(&t).await.unwrap();
    assert_eq!(b.blobs(&t).await.rows(), 0);
}

/// A reloaded (equal, newly allocated) list at the end of a long chain still extends as a
/// delta.
pub async fn a_reloaded_long_list_still_extends_as_a_delta<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let (t, ids, _) = grow(&*cp, 100, "r1").await;
    let reloaded = ChannelValue::from_value(messages_at(&*cp, &t, None).await, true);
    let before = b.blobs(&t).await.delta;
    let next = push(&reloaded, msg(100));
    step(&*cp, &t, ids.last().map(String::as_str), &next, 101, "r2").await;
    assert_eq!(
        b.blobs(&t).await.delta,
        before + 1,
        "the reloaded list was written as a delta"
    );
    cp.delete_thread(&t).await.unwrap();
}

/// A new run reloads its state from the checkpoint (equal values, new allocations): the list
/// still extends as a delta.
pub async fn lists_rebuilt_from_json_still_extend<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let t = format!("t-{}", uid());
    let list = ChannelValue::from_value(json!([msg(0), msg(1)]), true);
    let c1 = step(&*cp, &t, None, &list, 1, "r1").await;
    let reloaded = ChannelValue::from_value(messages_at(&*cp, &t, None).await, true);
    let c2 = step(&*cp, &t, Some(&c1), &push(&reloaded, msg(2)), 2, "r2").await;
    assert_eq!(b.blobs(&t).await.delta, 1);
    assert_eq!(
        messages_at(&*cp, &t, Some(&c2)).await,
        json!([msg(0), msg(1), msg(2)])
    );
    cp.delete_thread(&t).await.unwrap();
}

/// A fork from c1 computes the same next version (2) for a different value: neither branch
/// overwrites the other.
pub async fn a_fork_reusing_a_version_does_not_overwrite_the_other_branch<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let t = format!("fork-{}", uid());
    let base = ChannelValue::from_value(json!([msg(0)]), true);
    let c1 = step(&*cp, &t, None, &base, 1, "r1").await;
    let c2 = step(&*cp, &t, Some(&c1), &push(&base, msg(1)), 2, "r1").await;
    let c3 = step(&*cp, &t, Some(&c1), &push(&base, msg(7)), 2, "r2").await;
    assert_eq!(
        messages_at(&*cp, &t, Some(&c2)).await,
        json!([msg(0), msg(1)])
    );
    assert_eq!(
        messages_at(&*cp, &t, Some(&c3)).await,
        json!([msg(0), msg(7)])
    );
    assert_eq!(messages_at(&*cp, &t, Some(&c1)).await, json!([msg(0)]));
    cp.delete_thread(&t).await.unwrap();
}

/// Six steps on a fresh thread, appending `msg(0..6)`: the first three of run `first`, the
/// others of run `second`. Returns the thread and the checkpoint ids.
async fn two_runs(cp: &dyn Checkpointer, first: &str, second: &str) -> (String, Vec<String>) {
    let t = format!("rb-{}", uid());
    let mut list = ChannelValue::from_value(json!([]), true);
    let mut ids: Vec<String> = Vec::new();
    for i in 0..6 {
        list = push(&list, msg(i));
        let run = if i < 3 { first } else { second };
        let id = step(
            cp,
            &t,
            ids.last().map(String::as_str),
            &list,
            i as u64 + 1,
            run,
        )
        .await;
        ids.push(id);
    }
    (t, ids)
}

/// After [`two_runs`]: run b rolled back, c continued from a's last checkpoint with
/// `msg(9)`, then run a rolled back. Returns c's checkpoint.
async fn roll_back_b_continue_roll_back_a(
    cp: &dyn Checkpointer,
    t: &str,
    ids: &[String],
) -> String {
    cp.delete_run(t, "b").await.unwrap();
    let reloaded = ChannelValue::from_value(messages_at(cp, t, None).await, true);
    let c = step(cp, t, Some(&ids[2]), &push(&reloaded, msg(9)), 4, "c").await;
    cp.delete_run(t, "a").await.unwrap();
    c
}

/// Rolling back run b keeps run a's chain and collects b's blobs; a run continuing after the
/// rollback (same version numbers as the deleted run) reads right, also once the first run
/// is rolled back.
pub async fn rollback_collects_the_runs_blobs_and_continues<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let (t, ids) = two_runs(&*cp, "a", "b").await;
    cp.delete_run(&t, "b").await.unwrap();
    assert_eq!(
        messages_at(&*cp, &t, None).await,
        json!([msg(0), msg(1), msg(2)])
    );
    assert_eq!(b.blobs(&t).await.rows(), 3, "run b's blobs are collected");
    let reloaded = ChannelValue::from_value(messages_at(&*cp, &t, None).await, true);
    let c = step(&*cp, &t, Some(&ids[2]), &push(&reloaded, msg(9)), 4, "c").await;
    let continued = json!([msg(0), msg(1), msg(2), msg(9)]);
    assert_eq!(messages_at(&*cp, &t, Some(&c)).await, continued);
    // rolling back the first run while the later one remains keeps what it reads
    cp.delete_run(&t, "a").await.unwrap();
    assert_eq!(messages_at(&*cp, &t, Some(&c)).await, continued);
    assert!(cp.get_tuple(&t, "", Some(&ids[0])).await.unwrap().is_none());
    cp.delete_thread(&t).await.unwrap();
}

/// Run b2's deltas are based on run a2's blobs: rolling back a2 must keep them.
pub async fn rollback_keeps_the_bases_later_deltas_need<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let (t3, _) = two_runs(&*cp, "a2", "b2").await;
    cp.delete_run(&t3, "a2").await.unwrap();
    assert_eq!(
        messages_at(&*cp, &t3, None).await,
        Value::Array((0..6).map(msg).collect())
    );
    let listed = cp.list(&t3, None, &ListOptions::default()).await.unwrap();
    assert_eq!(listed.len(), 3);
    cp.delete_thread(&t3).await.unwrap();
}

/// A copy of a thread whose chains went through rollbacks reads the same.
pub async fn copies_keep_delta_chains_intact<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let (t, ids) = two_runs(&*cp, "a", "b").await;
    roll_back_b_continue_roll_back_a(&*cp, &t, &ids).await;
    let t2 = format!("copy-{}", uid());
    cp.copy_thread(&t, &t2).await.unwrap();
    assert_eq!(
        messages_at(&*cp, &t2, None).await,
        json!([msg(0), msg(1), msg(2), msg(9)])
    );
    for thread in [&t, &t2] {
        cp.delete_thread(thread).await.unwrap();
    }
}

/// A list that lost an element is written in full, not as a delta.
pub async fn removing_messages_writes_a_full_value<B: Backend>(b: &B) {
    let cp = b.checkpointer().await;
    let t = format!("rm-{}", uid());
    let list = ChannelValue::from_value(json!([msg(0), msg(1)]), true);
    let c1 = step(&*cp, &t, None, &list, 1, "r").await;
    let shorter = ChannelValue::from_value(json!([msg(1)]), true);
    let c2 = step(&*cp, &t, Some(&c1), &shorter, 2, "r").await;
    assert_eq!(b.blobs(&t).await.full, 2);
    assert_eq!(messages_at(&*cp, &t, Some(&c2)).await, json!([msg(1)]));
    cp.delete_thread(&t).await.unwrap();
}

/// Another process rolled back the base this process would extend: the next value is written
/// in full.
pub async fn a_delta_whose_base_vanished_is_written_in_full<B: Backend>(b: &B) {
    let (cp, other) = (b.checkpointer().await, b.checkpointer().await);
    let t = format!("vanish-{}", uid());
    let list = ChannelValue::from_value(json!([msg(0)]), true);
    let c1 = step(&*cp, &t, None, &list, 1, "gone").await;
    other.delete_run(&t, "gone").await.unwrap();
    assert!(cp.get_tuple(&t, "", Some(&c1)).await.unwrap().is_none());
    let c2 = step(&*cp, &t, None, &push(&list, msg(1)), 2, "next").await;
    assert_eq!(b.blobs(&t).await.delta, 0);
    assert_eq!(
        messages_at(&*cp, &t, Some(&c2)).await,
        json!([msg(0), msg(1)])
    );
    cp.delete_thread(&t).await.unwrap();
}

fn contents(values: &Value) -> Vec<(String, String)> {
    let Some(msgs) = values["messages"].as_array() else {
        return Vec::new();
    };
    msgs.iter()
        .map(|m| {
            let field = |k: &str| m[k].as_str().unwrap_or("").to_string();
            (field("type"), field("content"))
        })
        .collect()
}

/// The graph engine: 40 runs of the `echo` example on one thread give the same state and
/// history as on the in-memory checkpointer, and the messages are mostly stored as deltas.
pub async fn echo_runs_match_the_memory_checkpointer_and_use_deltas<B: Backend>(b: &B) {
    use antler_graph::{CancellationToken, MemoryCheckpointer, RunConfig, RunInput, StreamSink};
    let graphs = antler_graph::examples::all();
    let (_, echo) = graphs
        .iter()
        .find(|(name, _)| *name == "echo")
        .expect("echo example graph");
    let (sql, memory) = (
        b.checkpointer().await,
        Arc::new(MemoryCheckpointer::new()) as Arc<dyn Checkpointer>,
    );
    let sink: StreamSink = Arc::new(|_| {});
    let thread = format!("thread-{}", uid());
    for i in 0..40 {
        let input = json!({"messages": [{"type": "human", "content": format!("hello {i}"), "id": format!("h{i}")}]});
        for cp in [&sql, &memory] {
            let (config, input) = (
                RunConfig::new(&thread, format!("run-{i}")),
                RunInput::Values(input.clone()),
            );
            let run = echo.run(
                cp.clone(),
                input,
                config,
                sink.clone(),
                CancellationToken::new(),
            );
            run.await.unwrap();
        }
    }
    let thread = thread.as_str();
    let state = |cp: Arc<dyn Checkpointer>| async move {
        let s = echo.get_state(&*cp, thread, None, false).await.unwrap();
        serde_json::to_value(&s).unwrap()
    };
    let (sv, mv) = (state(sql.clone()).await, state(memory.clone()).await);
    assert_eq!(contents(&sv["values"]), contents(&mv["values"]));
    assert_eq!(sv["values"]["title"], mv["values"]["title"]);
    let msgs = contents(&sv["values"]);
    assert_eq!(msgs.len(), 80);
    assert_eq!(msgs[79], ("ai".to_string(), "echo: hello 39".to_string()));
    // history agrees too
    let opts = ListOptions::default();
    let sh = echo.get_history(&*sql, thread, &opts).await.unwrap();
    let mh = echo.get_history(&*memory, thread, &opts).await.unwrap();
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
    let Blobs { full, delta, .. } = b.blobs(thread).await;
    assert!(
        delta > full * 4,
        "messages mostly stored as deltas ({delta} deltas, {full} full)"
    );
    sql.delete_thread(thread).await.unwrap();
}

// ------------------------------------------------------------------------ hostile values

/// Any JSON: strings of any characters (escapes, control characters, astral planes, NUL),
/// doubles at the edges of their range, 64-bit integers, nesting.
fn hostile_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just(f64::MAX),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(-0.0)
        ]
        .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\\\\"\\u{0}-\\u{1f}\\u{7f}\u{2028}\u{fffd}\u{1f600}ab]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(any::<String>(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The stored-JSON readers on hostile values: a list of any JSON values written as a
/// checkpoint channel, and as a thread's metadata, reads back equal, or the write is refused
/// as invalid input (PostgreSQL's `jsonb` has no NUL in strings); never a storage error, never
/// a row that does not read back (64 proptest cases).
pub async fn hostile_json_reads_back_as_written_or_is_refused<B: Backend>(b: &B) {
    use antler_store::{Owner, StoreError, Thread, ThreadId};
    use proptest::test_runner::{Config, TestRunner};
    let cp = b.checkpointer().await;
    let stores = b.open().await;
    let handle = tokio::runtime::Handle::current();
    let owner = format!("o-{}", uid());
    let outcome = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases: 64,
            ..Config::default()
        });
        let input = proptest::collection::vec(hostile_json(), 0..4);
        runner.run(&input, |values| {
            handle.block_on(async {
                let t = format!("t-{}", uid());
                let list = ChannelValue::from_value(Value::Array(values.clone()), true);
                let mut c = Checkpoint {
                    id: antler_graph::new_checkpoint_id(1),
                    ts: antler_graph::now_ts(),
                    ..Default::default()
                };
                c.channel_versions.insert("messages".into(), 1);
                let channels = BTreeMap::from([("messages".to_string(), list)]);
                let versions = BTreeMap::from([("messages".to_string(), 1)]);
                let put = cp
                    .put_shared(&t, "", None, &c, &channels, &meta("r", 0), &versions)
                    .await;
                match put {
                    Ok(_) => assert_eq!(
                        messages_at(cp.as_ref(), &t, None).await,
                        Value::Array(values.clone())
                    ),
                    Err(e) => assert!(e.to_string().contains("refused"), "checkpoint write: {e}"),
                }
                let metadata: Map<String, Value> = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("k{i}"), v.clone()))
                    .collect();
                let thread = Thread::new(t.clone(), metadata.clone());
                match stores.threads.create(Owner(&owner), thread).await {
                    Ok(_) => {
                        let back = stores.threads.get(Owner(&owner), ThreadId(&t)).await;
                        let back = back.expect("get").expect("thread");
                        assert_eq!(back.metadata, metadata);
                        stores
                            .threads
                            .delete(Owner(&owner), ThreadId(&t))
                            .await
                            .expect("delete");
                    }
                    Err(StoreError::InvalidArgument(_)) => {}
                    Err(e) => panic!("thread create: {e}"),
                }
            });
            Ok(())
        })
    })
    .await;
    match outcome {
        Ok(result) => result.unwrap(),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
