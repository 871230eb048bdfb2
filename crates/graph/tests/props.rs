//! Property tests: reducer laws of `add_messages`, checkpoint round trips through the memory
//! checkpointer, and "interrupt at any step, resume, same final state as an uninterrupted run".

use std::sync::Arc;

use antler_graph::messages::{add_messages, remove_message};
use antler_graph::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn msg(id: u8, content: &str, kind: &str) -> Value {
    json!({"type": kind, "content": content, "id": format!("m{id}")})
}

fn arb_msgs() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(
        (
            0u8..12,
            "[a-z]{0,6}",
            prop::sample::select(vec!["human", "ai", "system"]),
        ),
        0..10,
    )
    .prop_map(|v| v.into_iter().map(|(i, c, k)| msg(i, &c, k)).collect())
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[ -~]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A chain of `n` nodes; node i appends a message with a fixed id and bumps a counter.
fn chain(n: usize) -> CompiledGraph {
    let mut g = StateGraph::new("chain")
        .channel("messages", Reducer::AddMessages)
        .channel(
            "count",
            Reducer::Custom(Arc::new(|a, b| {
                Ok(json!(a.as_i64().unwrap_or(0) + b.as_i64().unwrap_or(0)))
            })),
        )
        .channel("last", Reducer::LastValue);
    for i in 0..n {
        let name = format!("n{i}");
        g = g.node(&name, move |input: NodeInput, _c| async move {
            let seen = input.messages().count();
            Ok(NodeOutput::Update(json!({
                "messages": [{"type": "ai", "content": format!("node {i} saw {seen}"), "id": format!("ai-{i}")}],
                "count": 1,
                "last": i,
            })))
        });
    }
    g = g.edge(START, "n0");
    for i in 1..n {
        g = g.edge(&format!("n{}", i - 1), &format!("n{i}"));
    }
    g.edge(&format!("n{}", n - 1), END).compile().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn add_messages_is_idempotent(left in arb_msgs(), right in arb_msgs()) {
        let once = add_messages(&json!(left), &json!(right)).unwrap();
        let twice = add_messages(&once, &json!(right)).unwrap();
        prop_assert_eq!(&once, &twice);
    }

    #[test]
    fn add_messages_ids_unique_and_last_write_wins(left in arb_msgs(), right in arb_msgs()) {
        // a state built by the reducer itself
        let out = add_messages(&add_messages(&json!([]), &json!(left)).unwrap(), &json!(right)).unwrap();
        let got = ids(&out);
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        prop_assert_eq!(uniq.len(), got.len());
        // every id of left or right is present; content is that of the last write
        for m in left.iter().chain(right.iter()) {
            let id = m["id"].as_str().unwrap();
            prop_assert!(got.iter().any(|g| g == id));
        }
        for m in out.as_array().unwrap() {
            let id = m["id"].as_str().unwrap();
            let last = left.iter().chain(right.iter()).rev().find(|x| x["id"] == id).unwrap();
            prop_assert_eq!(&m["content"], &last["content"]);
        }
    }

    #[test]
    fn add_messages_remove_then_absent(left in arb_msgs(), pick in 0usize..10) {
        let base = add_messages(&json!([]), &json!(left)).unwrap();
        let present = ids(&base);
        prop_assume!(!present.is_empty());
        let victim = present[pick % present.len()].clone();
        let out = add_messages(&base, &remove_message(&victim)).unwrap();
        prop_assert!(!ids(&out).contains(&victim));
        prop_assert_eq!(ids(&out).len(), present.len() - 1);
        let cleared = add_messages(&out, &remove_message(messages::REMOVE_ALL_MESSAGES)).unwrap();
        prop_assert_eq!(cleared, json!([]));
    }

    #[test]
    fn checkpoint_round_trip(values in prop::collection::btree_map("[a-z]{1,6}", arb_json(), 0..6)) {
        rt().block_on(async {
            let cp = MemoryCheckpointer::new();
            let versions: std::collections::BTreeMap<String, u64> =
                values.keys().enumerate().map(|(i, k)| (k.clone(), i as u64 + 1)).collect();
            let checkpoint = Checkpoint {
                id: new_checkpoint_id(0),
                ts: now_ts(),
                channel_values: values.clone().into_iter().collect(),
                channel_versions: versions.clone(),
                versions_seen: Default::default(),
                updated_channels: values.keys().cloned().collect(),
            };
            let mut meta = Map::new();
            meta.insert("source".into(), json!("loop"));
            cp.put("t", "", None, &checkpoint, &meta, &versions).await.unwrap();
            let got = cp.get_tuple("t", "", None).await.unwrap().unwrap();
            assert_eq!(got.checkpoint, checkpoint);
            assert_eq!(got.metadata, meta);
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn interrupt_at_any_step_then_resume_gives_same_final_state(
        n in 1usize..6,
        at in 0usize..6,
        before in any::<bool>(),
        extra_pauses in 0usize..3,
    ) {
        let at = at % n;
        rt().block_on(async move {
            let g = chain(n);
            let sink: StreamSink = Arc::new(|_| {});
            let input = RunInput::Values(json!({"messages": [{"type": "human", "content": "go", "id": "h"}]}));

            let plain: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
            let reference = g
                .run(plain, input.clone(), RunConfig::new("t", "r0"), sink.clone(), CancellationToken::new())
                .await
                .unwrap();

            let cp: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
            let mut cfg = RunConfig::new("t", "r1");
            let mut nodes = vec![format!("n{at}")];
            for k in 0..extra_pauses {
                nodes.push(format!("n{}", (at + k + 1) % n));
            }
            if before {
                cfg.interrupt_before = Interrupts::Nodes(nodes);
            } else {
                cfg.interrupt_after = Interrupts::Nodes(nodes);
            }
            let mut out = g.run(cp.clone(), input, cfg.clone(), sink.clone(), CancellationToken::new()).await.unwrap();
            let mut pauses = 0;
            while !out.next.is_empty() {
                pauses += 1;
                assert!(pauses <= 10, "too many pauses");
                out = g.run(cp.clone(), RunInput::Null, cfg.clone(), sink.clone(), CancellationToken::new()).await.unwrap();
            }
            assert!(pauses >= 1 || (!before && at == n - 1));
            assert_eq!(out.values, reference.values);
            let st = g.get_state(cp.as_ref(), "t", None, false).await.unwrap();
            assert_eq!(st.values, reference.values);
            assert!(st.next.is_empty());
        });
    }
}
