//! Property test: for random interleavings of publishes, ends and resumes on one stream, a
//! subscription resumed after any id yields exactly what a simple model predicts — the events
//! after it (no loss, no duplicate), `Gap` when that id was trimmed, `End` once ended.

use antler_bridge::{
    BridgeItem, MemoryBridge, MemoryBridgeConfig, Payload, StreamBridge, Subscription,
};
use futures::{FutureExt, StreamExt};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    /// Resume after the published event with this index (modulo the count), or from the start.
    Resume(Option<usize>),
    End,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..12).prop_map(Op::Publish),
        3 => proptest::option::of(0usize..1000).prop_map(Op::Resume),
        1 => Just(Op::End),
    ]
}

/// Everything the subscription can yield right now, without waiting.
fn ready_items(sub: &mut Subscription) -> Vec<BridgeItem> {
    let mut items = Vec::new();
    while let Some(Some(item)) = sub.next().now_or_never() {
        items.push(item);
    }
    items
}

fn check(queue: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rt.block_on(async {
        let bridge = MemoryBridge::new(MemoryBridgeConfig {
            queue_maxsize: queue,
            ..MemoryBridgeConfig::default()
        })
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut ids: Vec<String> = Vec::new();
        let mut ended = false;
        for op in ops {
            match op {
                Op::Publish(n) => {
                    for _ in 0..*n {
                        let i = ids.len();
                        let res = bridge
                            .publish("s", "custom", Payload::from(format!("{i}")))
                            .await;
                        if ended {
                            prop_assert!(res.is_err());
                        } else {
                            ids.push(res.map_err(|e| TestCaseError::fail(e.to_string()))?);
                        }
                    }
                }
                Op::End => {
                    bridge
                        .publish_end("s")
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    ended = true;
                }
                Op::Resume(after) => {
                    let after = after.and_then(|k| (!ids.is_empty()).then(|| k % ids.len()));
                    let last = after.map(|k| ids[k].clone());
                    let mut sub = bridge
                        .subscribe("s", last.as_deref())
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let items = ready_items(&mut sub);
                    let earliest = ids.len().saturating_sub(queue);
                    let first_wanted = after.map_or(earliest, |k| k + 1);
                    if first_wanted < earliest {
                        prop_assert_eq!(items.len(), 1);
                        match &items[0] {
                            BridgeItem::Gap(gap) => {
                                prop_assert_eq!(gap.requested_event_id.clone(), last);
                                prop_assert_eq!(&gap.earliest_available_event_id, &ids[earliest]);
                                prop_assert_eq!(
                                    &gap.latest_available_event_id,
                                    &ids[ids.len() - 1]
                                );
                            }
                            other => prop_assert!(false, "expected a gap, got {:?}", other),
                        }
                        continue;
                    }
                    let expected: Vec<usize> = (first_wanted..ids.len()).collect();
                    let mut got = Vec::new();
                    for item in &items {
                        if let BridgeItem::Event(e) = item {
                            prop_assert_eq!(&e.id, &ids[got.len() + first_wanted]);
                            prop_assert_eq!(e.seq as usize, got.len() + first_wanted);
                            got.push(e.seq as usize);
                        }
                    }
                    prop_assert_eq!(got, expected);
                    let ended_item = items.last() == Some(&BridgeItem::End);
                    prop_assert_eq!(ended_item, ended);
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn resume_matches_model(queue in 1usize..10, ops in proptest::collection::vec(op(), 1..40)) {
        check(queue, &ops)?;
    }
}
