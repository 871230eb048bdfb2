//! The shared conformance suite every [`StreamBridge`] implementation runs (memory and Redis):
//! [`bridge_conformance!`](crate::bridge_conformance) expands to one `#[tokio::test]` per case,
//! each on a bridge of its own, so a failure names the case.
//!
//! Requirements on the bridge under test: it retains at least 4 events per stream, trims below
//! 20,000 events, and it is used by nobody else ([`close_ends_subscriptions`] calls `close()`).
//! Every wait is bounded (10 s), so a broken implementation fails instead of hanging; the suite
//! works under a paused Tokio clock, a current-thread runtime and a multi-thread runtime.
//!
//! These functions are test code: they panic (assert) on any violation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::watch;

use crate::contract::StreamBridge;
use crate::error::BridgeError;
use crate::event::{BridgeEvent, BridgeItem, parse_event_id};
use crate::payload::Payload;
use crate::subscription::Subscription;

/// Upper bound for any single wait in the suite.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Publishers in the concurrent tests stay at most this many events ahead of the readers they
/// wait for (so a bridge retaining >= 4 events never has to report a gap to them).
const WINDOW: u64 = 3;

/// One `#[tokio::test]` per case of the suite, in the module where it is invoked.
///
/// `$factory` is an expression evaluated afresh in every test, a future of
/// `Option<Arc<dyn StreamBridge>>`; `None` skips the test (e.g. Redis unreachable outside CI).
/// Attributes before it replace the default `#[tokio::test]` (runtime flavour, paused clock):
///
/// ```ignore
/// mod paused_clock {
///     antler_bridge::bridge_conformance!(#[tokio::test(start_paused = true)] super::bridge());
/// }
/// ```
#[macro_export]
macro_rules! bridge_conformance {
    (@case [$($attr:tt)*] $factory:expr, $case:ident) => {
        $($attr)*
        async fn $case() {
            let Some(bridge) = $factory.await else { return };
            $crate::conformance::$case(&bridge).await;
        }
    };
    (@cases $attrs:tt $factory:expr; $($case:ident),+ $(,)?) => {
        $($crate::bridge_conformance!(@case $attrs $factory, $case);)+
    };
    ($(#[$attr:meta])+ $factory:expr) => {
        $crate::bridge_conformance!(@cases [$(#[$attr])+] $factory;
            ordering_and_ids,
            publish_after_end_is_an_error,
            exact_resume_after_every_id,
            resume_while_live,
            unknown_ids_replay_from_earliest,
            concurrent_publish_during_resume,
            end_reaches_a_live_subscriber,
            end_of_a_stream_nobody_published_to,
            terminal_event_then_end,
            exists_semantics,
            gap_for_trimmed_ids,
            gap_for_a_live_subscriber_behind_the_trim,
            many_subscribers_one_never_reads,
            awaiting_input_keeps_stream_usable,
            cleanup_drops_an_ended_stream_now,
            cleanup_ends_an_active_stream,
            cleanup_with_a_delay_drops_later,
            close_ends_subscriptions,
        );
    };
    ($factory:expr) => {
        $crate::bridge_conformance!(#[tokio::test] $factory);
    };
}

/// A stream id no other check (or earlier run of the suite) uses.
fn fresh_stream(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "conformance-{name}-{nanos}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn payload(i: u64) -> Payload {
    format!(r#"{{"i":{i}}}"#).into()
}

async fn publish_n(bridge: &Arc<dyn StreamBridge>, stream: &str, from: u64, n: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + n {
        ids.push(
            bridge
                .publish(stream, "custom", payload(i))
                .await
                .expect("publish"),
        );
    }
    ids
}

async fn subscribe(
    bridge: &Arc<dyn StreamBridge>,
    stream: &str,
    last: Option<&str>,
) -> Subscription {
    tokio::time::timeout(STEP_TIMEOUT, bridge.subscribe(stream, last))
        .await
        .expect("subscribe timed out")
        .expect("subscribe")
}

async fn next(sub: &mut Subscription) -> Option<BridgeItem> {
    tokio::time::timeout(STEP_TIMEOUT, sub.next())
        .await
        .expect("timed out waiting for the next bridge item")
}

async fn next_event(sub: &mut Subscription) -> BridgeEvent {
    match next(sub).await {
        Some(BridgeItem::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Reads until the subscription ends.
async fn drain(mut sub: Subscription) -> Vec<BridgeItem> {
    let mut items = Vec::new();
    while let Some(item) = next(&mut sub).await {
        items.push(item);
    }
    items
}

/// Asserts `items` is exactly the events with seqs `seqs` (data `{"i":seq}`) followed by `End`.
fn assert_events_then_end(items: &[BridgeItem], seqs: std::ops::Range<u64>, ids: &[String]) {
    let expected = usize::try_from(seqs.end - seqs.start).unwrap_or(usize::MAX);
    assert_eq!(items.len(), expected + 1, "items: {items:?}");
    for (item, seq) in items.iter().zip(seqs) {
        match item {
            BridgeItem::Event(e) => {
                assert_eq!(e.seq, seq);
                assert_eq!(&*e.data, &*payload(seq));
                assert_eq!(e.event, "custom");
                if let Some(id) = ids.get(usize::try_from(seq).unwrap_or(usize::MAX)) {
                    assert_eq!(&e.id, id);
                }
            }
            other => panic!("expected event seq {seq}, got {other:?}"),
        }
    }
    assert_eq!(items.last(), Some(&BridgeItem::End));
}

/// Ids are `<ms>-<seq>` with seq = offset from 0; events arrive in order with their data.
pub async fn ordering_and_ids(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("ordering");
    let ids = publish_n(bridge, &s, 0, 4).await;
    let mut last_ms = 0;
    for (i, id) in ids.iter().enumerate() {
        let (ms, seq) = parse_event_id(id).expect("id is <ms>-<seq>");
        assert_eq!(seq, i as u64);
        assert!(ms >= last_ms, "ms part never goes backwards");
        last_ms = ms;
    }
    bridge.publish_end(&s).await.expect("end");
    let items = drain(subscribe(bridge, &s, None).await).await;
    assert_events_then_end(&items, 0..4, &ids);
}

/// `publish` after `publish_end` fails; `publish_end` is idempotent.
pub async fn publish_after_end_is_an_error(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("after-end");
    publish_n(bridge, &s, 0, 1).await;
    bridge.publish_end(&s).await.expect("end");
    bridge.publish_end(&s).await.expect("second end is a no-op");
    match bridge.publish(&s, "custom", payload(1)).await {
        Err(BridgeError::StreamEnded { stream_id }) => assert_eq!(stream_id, s),
        other => panic!("expected StreamEnded, got {other:?}"),
    }
    let items = drain(subscribe(bridge, &s, None).await).await;
    assert_events_then_end(&items, 0..1, &[]);
}

/// Resuming after the k-th id yields exactly k+1.. then End, for every k; `-1` and `None`
/// replay everything retained.
pub async fn exact_resume_after_every_id(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("resume");
    let n = 4;
    let ids = publish_n(bridge, &s, 0, n).await;
    bridge.publish_end(&s).await.expect("end");
    for (k, id) in ids.iter().enumerate() {
        let items = drain(subscribe(bridge, &s, Some(id)).await).await;
        assert_events_then_end(&items, (k as u64 + 1)..n, &ids);
    }
    for last in [None, Some("-1")] {
        let items = drain(subscribe(bridge, &s, last).await).await;
        assert_events_then_end(&items, 0..n, &ids);
    }
}

/// A resumed subscription on an active stream continues with live events.
pub async fn resume_while_live(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("resume-live");
    let ids = publish_n(bridge, &s, 0, 3).await;
    let mut sub = subscribe(bridge, &s, Some(&ids[1])).await;
    assert_eq!(next_event(&mut sub).await.seq, 2);
    let publisher = Arc::clone(bridge);
    let stream = s.clone();
    let task = tokio::spawn(async move {
        publish_n(&publisher, &stream, 3, 2).await;
        publisher.publish_end(&stream).await.expect("end");
    });
    assert_eq!(next_event(&mut sub).await.seq, 3);
    assert_eq!(next_event(&mut sub).await.seq, 4);
    assert_eq!(next(&mut sub).await, Some(BridgeItem::End));
    assert_eq!(next(&mut sub).await, None);
    task.await.expect("publisher task");
}

/// Malformed ids and ids ahead of the stream replay from the earliest retained event.
pub async fn unknown_ids_replay_from_earliest(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("unknown-id");
    let ids = publish_n(bridge, &s, 0, 3).await;
    bridge.publish_end(&s).await.expect("end");
    for bad in ["garbage", "1-x", "", "99999999999999-999999"] {
        let items = drain(subscribe(bridge, &s, Some(bad)).await).await;
        assert_events_then_end(&items, 0..3, &ids);
    }
}

/// A consumer that disconnects every few events and resumes with its last id while the
/// publisher keeps publishing sees every event exactly once, in order.
pub async fn concurrent_publish_during_resume(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("concurrent-resume");
    let total: u64 = 300;
    let (consumed_tx, mut consumed_rx) = watch::channel(0u64);
    let publisher = Arc::clone(bridge);
    let stream = s.clone();
    let task = tokio::spawn(async move {
        for i in 0..total {
            tokio::time::timeout(STEP_TIMEOUT, consumed_rx.wait_for(|c| i < c + WINDOW))
                .await
                .expect("consumer stalled")
                .expect("consumer gone");
            publisher
                .publish(&stream, "custom", payload(i))
                .await
                .expect("publish");
            tokio::task::yield_now().await;
        }
        publisher.publish_end(&stream).await.expect("end");
    });

    let mut seen: Vec<u64> = Vec::new();
    let mut last_id: Option<String> = None;
    let mut reconnects = 0u32;
    'outer: loop {
        let mut sub = subscribe(bridge, &s, last_id.as_deref()).await;
        reconnects += 1;
        // Read a varying small number of events, then drop the subscription.
        let budget = 1 + (reconnects % 4);
        for _ in 0..budget {
            match next(&mut sub).await {
                Some(BridgeItem::Event(e)) => {
                    seen.push(e.seq);
                    last_id = Some(e.id);
                    consumed_tx.send_replace(seen.len() as u64);
                }
                Some(BridgeItem::End) => break 'outer,
                other => panic!("unexpected {other:?} after {} events", seen.len()),
            }
        }
    }
    task.await.expect("publisher task");
    let expected: Vec<u64> = (0..total).collect();
    assert_eq!(
        seen, expected,
        "no loss, no duplicate across {reconnects} resumes"
    );
}

/// End reaches a live subscriber waiting for it.
pub async fn end_reaches_a_live_subscriber(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("end-live");
    publish_n(bridge, &s, 0, 1).await;
    let mut sub = subscribe(bridge, &s, None).await;
    assert_eq!(next_event(&mut sub).await.seq, 0);
    let ender = Arc::clone(bridge);
    let stream = s.clone();
    let task = tokio::spawn(async move {
        tokio::task::yield_now().await;
        ender.publish_end(&stream).await.expect("end");
    });
    assert_eq!(next(&mut sub).await, Some(BridgeItem::End));
    assert_eq!(next(&mut sub).await, None);
    task.await.expect("end task");
}

/// Ending a stream nobody published to creates it; a late subscriber gets just End.
pub async fn end_of_a_stream_nobody_published_to(bridge: &Arc<dyn StreamBridge>) {
    let empty = fresh_stream("end-empty");
    bridge.publish_end(&empty).await.expect("end");
    assert!(bridge.exists(&empty).await);
    assert_eq!(
        drain(subscribe(bridge, &empty, None).await).await,
        vec![BridgeItem::End]
    );
}

/// A terminal event is followed by End, atomically; publishing after it fails.
pub async fn terminal_event_then_end(bridge: &Arc<dyn StreamBridge>) {
    let t = fresh_stream("terminal");
    publish_n(bridge, &t, 0, 1).await;
    let id = bridge
        .publish_terminal(
            &t,
            "error",
            r#"{"error":"ValueError","message":"boom"}"#.into(),
        )
        .await
        .expect("terminal");
    let items = drain(subscribe(bridge, &t, None).await).await;
    assert_eq!(items.len(), 3, "{items:?}");
    match &items[1] {
        BridgeItem::Event(e) => {
            assert_eq!((e.event.as_str(), e.seq, &e.id), ("error", 1, &id));
        }
        other => panic!("expected the error event, got {other:?}"),
    }
    assert_eq!(items[2], BridgeItem::End);
    assert!(matches!(
        bridge.publish(&t, "custom", payload(9)).await,
        Err(BridgeError::StreamEnded { .. })
    ));
}

/// `exists` is false for unknown streams and for streams that only have waiting subscribers;
/// a waiting subscriber receives the first publish; `subscribe_existing` does not wait.
pub async fn exists_semantics(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("exists");
    assert!(!bridge.exists(&s).await);
    match bridge.subscribe_existing(&s, None).await {
        Err(BridgeError::StreamNotFound { stream_id }) => assert_eq!(stream_id, s),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
    let mut waiting = subscribe(bridge, &s, None).await;
    assert!(
        !bridge.exists(&s).await,
        "a waiting subscriber does not create the stream"
    );
    let publisher = Arc::clone(bridge);
    let stream = s.clone();
    let task = tokio::spawn(async move {
        tokio::task::yield_now().await;
        publish_n(&publisher, &stream, 0, 1).await;
    });
    assert_eq!(next_event(&mut waiting).await.seq, 0);
    task.await.expect("publisher task");
    assert!(bridge.exists(&s).await);
    let mut existing = bridge
        .subscribe_existing(&s, None)
        .await
        .expect("subscribe_existing");
    assert_eq!(next_event(&mut existing).await.seq, 0);
    let stats = bridge.stats();
    assert!(stats.subscribers >= 2, "{stats:?}");
    assert!(stats.published_total >= 1, "{stats:?}");
    bridge.publish_end(&s).await.expect("end");
}

/// Publishes to `s` until the bridge trims its log: every id published, and the seq of the
/// earliest event still retained (> 1).
async fn publish_until_trimmed(bridge: &Arc<dyn StreamBridge>, s: &str) -> (Vec<String>, u64) {
    let mut ids: Vec<String> = Vec::new();
    loop {
        let n = ids.len() as u64;
        assert!(n < 20_000, "the bridge never trimmed its log");
        ids.extend(publish_n(bridge, s, n, 64).await);
        let mut probe = subscribe(bridge, s, None).await;
        let first = next_event(&mut probe).await;
        if first.seq > 1 {
            return (ids, first.seq);
        }
    }
}

fn idx(seq: u64) -> usize {
    usize::try_from(seq).unwrap_or(usize::MAX)
}

/// An id older than the retained window yields a Gap (then the end of the subscription); the
/// id just before the window resumes without a gap.
pub async fn gap_for_trimmed_ids(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("gap");
    let (ids, earliest) = publish_until_trimmed(bridge, &s).await;
    let latest = ids.len() as u64 - 1;

    // Resume from a trimmed id.
    let items = drain(subscribe(bridge, &s, Some(&ids[0])).await).await;
    match items.as_slice() {
        [BridgeItem::Gap(gap)] => {
            assert_eq!(gap.stream_id, s);
            assert_eq!(gap.requested_event_id.as_deref(), Some(ids[0].as_str()));
            assert_eq!(gap.earliest_available_event_id, ids[idx(earliest)]);
            assert_eq!(gap.latest_available_event_id, ids[idx(latest)]);
            let json = gap.to_json();
            assert_eq!(json["code"], "stream_replay_gap");
            assert_eq!(json["recovery"], "reload_durable_state");
        }
        other => panic!("expected exactly one Gap, got {other:?}"),
    }
    assert!(bridge.stats().gaps_total >= 1);

    // The id just before the window loses nothing: no gap.
    let mut sub = subscribe(bridge, &s, Some(&ids[idx(earliest - 1)])).await;
    assert_eq!(next_event(&mut sub).await.seq, earliest);
    drop(sub);
    bridge.publish_end(&s).await.expect("end");
}

/// A live subscriber that falls behind the trim point gets the contiguous events it could
/// still read from 0, then a Gap naming its last event, then the end of the subscription.
pub async fn gap_for_a_live_subscriber_behind_the_trim(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("gap-live");
    let mut slow = subscribe(bridge, &s, None).await;
    let (ids, earliest) = publish_until_trimmed(bridge, &s).await;
    let mut expected = 0u64;
    loop {
        match next(&mut slow).await {
            Some(BridgeItem::Event(e)) => {
                assert_eq!(e.seq, expected);
                expected += 1;
            }
            Some(BridgeItem::Gap(gap)) => {
                assert!(
                    expected < earliest,
                    "gap reported although nothing was lost"
                );
                let requested = expected.checked_sub(1).map(|seq| ids[idx(seq)].clone());
                assert_eq!(gap.requested_event_id, requested);
                assert!(
                    next(&mut slow).await.is_none(),
                    "subscription ends after a gap"
                );
                break;
            }
            other => panic!("expected events then a gap, got {other:?}"),
        }
    }
    bridge.publish_end(&s).await.expect("end");
}

/// A reader task that collects the seqs of `sub` until End, reporting how many it has read.
fn spawn_reader(
    mut sub: Subscription,
) -> (watch::Receiver<u64>, tokio::task::JoinHandle<Vec<u64>>) {
    let (tx, rx) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            match next(&mut sub).await {
                Some(BridgeItem::Event(e)) => {
                    seqs.push(e.seq);
                    tx.send_replace(seqs.len() as u64);
                }
                Some(BridgeItem::End) => break,
                other => panic!("reader got {other:?}"),
            }
        }
        seqs
    });
    (rx, task)
}

/// Publishes `total` events then End, never more than [`WINDOW`] ahead of any reader.
async fn publish_paced(
    bridge: Arc<dyn StreamBridge>,
    stream: String,
    total: u64,
    mut progress: Vec<watch::Receiver<u64>>,
) {
    for i in 0..total {
        for rx in &mut progress {
            tokio::time::timeout(STEP_TIMEOUT, rx.wait_for(|c| i < c + WINDOW))
                .await
                .expect("publisher held back")
                .expect("reader gone");
        }
        bridge
            .publish(&stream, "custom", payload(i))
            .await
            .expect("publish");
    }
    bridge.publish_end(&stream).await.expect("end");
}

/// Many readers and one subscriber that never reads: the publisher and the readers are not
/// held back by it, every reader gets every event once and in order; the idle one later gets a
/// contiguous prefix and then End or Gap.
pub async fn many_subscribers_one_never_reads(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("fanout");
    let readers = 32usize;
    let total: u64 = 200;
    let idle = subscribe(bridge, &s, None).await;
    let mut progress = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let (rx, task) = spawn_reader(subscribe(bridge, &s, None).await);
        progress.push(rx);
        tasks.push(task);
    }
    let publish_task = tokio::spawn(publish_paced(
        Arc::clone(bridge),
        s.clone(),
        total,
        progress,
    ));
    tokio::time::timeout(STEP_TIMEOUT * 3, publish_task)
        .await
        .expect("publisher blocked by the idle subscriber")
        .expect("publisher task");
    let expected: Vec<u64> = (0..total).collect();
    for task in tasks {
        assert_eq!(task.await.expect("reader task"), expected);
    }
    let items = drain(idle).await;
    let (last, events) = items
        .split_last()
        .expect("idle subscriber yields something");
    for (i, item) in events.iter().enumerate() {
        assert!(
            matches!(item, BridgeItem::Event(e) if e.seq == i as u64),
            "{item:?}"
        );
    }
    match last {
        BridgeItem::End => assert_eq!(events.len() as u64, total),
        BridgeItem::Gap(_) => assert!((events.len() as u64) < total),
        BridgeItem::Event(e) => panic!("idle subscription ended without End/Gap after {e:?}"),
    }
}

/// `mark_awaiting_input` does not end or disturb a stream.
pub async fn awaiting_input_keeps_stream_usable(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("awaiting");
    publish_n(bridge, &s, 0, 1).await;
    bridge.mark_awaiting_input(&s).await;
    bridge
        .mark_awaiting_input(&fresh_stream("awaiting-unknown"))
        .await;
    publish_n(bridge, &s, 1, 1).await;
    bridge.publish_end(&s).await.expect("end");
    let items = drain(subscribe(bridge, &s, None).await).await;
    assert_events_then_end(&items, 0..2, &[]);
}

/// `cleanup` with no delay drops an ended stream at once; attached subscribers still finish.
pub async fn cleanup_drops_an_ended_stream_now(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("cleanup-now");
    let ids = publish_n(bridge, &s, 0, 2).await;
    bridge.publish_end(&s).await.expect("end");
    let attached = subscribe(bridge, &s, None).await;
    bridge.cleanup(&s, Duration::ZERO).await;
    assert!(!bridge.exists(&s).await);
    assert!(matches!(
        bridge.subscribe_existing(&s, None).await,
        Err(BridgeError::StreamNotFound { .. })
    ));
    assert_events_then_end(&drain(attached).await, 0..2, &ids);
}

/// Cleanup of an active stream ends its subscribers instead of leaving them hanging.
pub async fn cleanup_ends_an_active_stream(bridge: &Arc<dyn StreamBridge>) {
    let active = fresh_stream("cleanup-active");
    publish_n(bridge, &active, 0, 1).await;
    let mut sub = subscribe(bridge, &active, None).await;
    assert_eq!(next_event(&mut sub).await.seq, 0);
    bridge.cleanup(&active, Duration::ZERO).await;
    assert_eq!(next(&mut sub).await, Some(BridgeItem::End));
}

/// `cleanup` with a delay drops the stream later, not at once; cleaning up an unknown stream
/// is a no-op.
pub async fn cleanup_with_a_delay_drops_later(bridge: &Arc<dyn StreamBridge>) {
    let later = fresh_stream("cleanup-later");
    publish_n(bridge, &later, 0, 1).await;
    bridge.publish_end(&later).await.expect("end");
    bridge.cleanup(&later, Duration::from_millis(500)).await;
    assert!(
        bridge.exists(&later).await,
        "cleanup with a delay does not drop at once"
    );
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !bridge.exists(&later).await {
            gone = true;
            break;
        }
    }
    assert!(gone, "stream still present 4 s after cleanup(500 ms)");
    bridge
        .cleanup(&fresh_stream("cleanup-unknown"), Duration::ZERO)
        .await;
}

/// `close()` ends live subscriptions without End; afterwards publish/subscribe fail with
/// `Closed`.
pub async fn close_ends_subscriptions(bridge: &Arc<dyn StreamBridge>) {
    let s = fresh_stream("close");
    publish_n(bridge, &s, 0, 1).await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut sub = subscribe(bridge, &s, None).await;
        assert_eq!(next_event(&mut sub).await.seq, 0);
        subs.push(sub);
    }
    let waiting = subscribe(bridge, &fresh_stream("close-waiting"), None).await;
    subs.push(waiting);
    let readers: Vec<_> = subs
        .into_iter()
        .map(|sub| tokio::spawn(drain(sub)))
        .collect();
    tokio::task::yield_now().await;
    tokio::time::timeout(STEP_TIMEOUT, bridge.close())
        .await
        .expect("close() returns");
    for reader in readers {
        let items = reader.await.expect("reader task");
        assert!(
            !items.contains(&BridgeItem::End),
            "close is not a run end: {items:?}"
        );
    }
    assert!(matches!(
        bridge.publish(&s, "custom", payload(1)).await,
        Err(BridgeError::Closed)
    ));
    assert!(matches!(
        bridge.subscribe(&s, None).await,
        Err(BridgeError::Closed)
    ));
    assert!(bridge.stats().closed);
}
