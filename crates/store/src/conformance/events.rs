//! RunEventStore contract: per-thread seq, cursors, filters, owner isolation, deletes.

use serde_json::{Value, json};

use super::{names, ok};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, RunId, Stores, ThreadId};

fn ev(thread: &str, run: &str, ty: &str, cat: &str, content: Value) -> NewRunEvent {
    let mut e = NewRunEvent::new(thread, run, ty, cat, content);
    e.metadata = json!({"caller": "lead_agent"});
    e
}

/// Alice's events on thread `t`: r1 (trace, message, message) and r2 (trace, message), seqs
/// 1..=5, with one event of r9 on `t2` in between (its seq 1).
struct Events {
    alice: String,
    bob: String,
    t: String,
    t2: String,
    /// The first batch as stored: seqs 1, 2, 1 (on t2), 3.
    stored: Vec<RunEvent>,
    /// The second batch as stored: seqs 4, 5.
    more: Vec<RunEvent>,
}

impl Events {
    async fn append(s: &dyn RunEventStore) -> Events {
        let (alice, bob, x) = names();
        let (t, t2) = (format!("thread-{x}"), format!("thread2-{x}"));
        let first = vec![
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
        ];
        let stored = ok(s.append_batch(Owner(&alice), first).await, "append");
        let second = vec![
            ev(&t, "r2", "run.start", "trace", json!(1)),
            ev(&t, "r2", "llm.ai.response", "message", json!([1, "x"])),
        ];
        let more = ok(s.append_batch(Owner(&alice), second).await, "append 2");
        Events {
            alice,
            bob,
            t,
            t2,
            stored,
            more,
        }
    }

    async fn delete(self, s: &dyn RunEventStore) {
        ok(
            s.delete_thread(Owner(&self.alice), ThreadId(&self.t)).await,
            "cleanup",
        );
        ok(
            s.delete_thread(Owner(&self.alice), ThreadId(&self.t2))
                .await,
            "cleanup t2",
        );
    }

    async fn seqs(&self, s: &dyn RunEventStore, q: RunEventQuery, what: &str) -> Vec<i64> {
        let found = ok(
            s.list(Owner(&self.alice), ThreadId(&self.t), &q).await,
            what,
        );
        found.iter().map(|e| e.seq).collect()
    }
}

/// Appends get the next seqs of their thread, in batch order; an empty batch is a no-op.
pub async fn events_append_per_thread_seqs(stores: &Stores) {
    let s = stores.events.as_ref();
    let f = Events::append(s).await;
    assert_eq!(
        f.stored.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 1, 3]
    );
    assert_eq!(f.stored[1].content, json!("hello"));
    assert_eq!(f.stored[0].metadata, json!({"caller": "lead_agent"}));
    assert_eq!(f.more.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert!(ok(s.append_batch(Owner(&f.alice), vec![]).await, "empty batch").is_empty());
    f.delete(s).await;
}

/// Concurrent appends on one thread never reuse a seq.
pub async fn events_concurrent_appends_never_reuse_a_seq(stores: &Stores) {
    let f = Events::append(stores.events.as_ref()).await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let (events, owner, thread) = (stores.events.clone(), f.alice.clone(), f.t2.clone());
        handles.push(tokio::spawn(async move {
            let batch = vec![NewRunEvent::new(&thread, format!("c{i}"), "x", "trace", json!(i)); 3];
            events.append_batch(Owner(&owner), batch).await
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
    f.delete(stores.events.as_ref()).await;
}

/// Listing returns the thread's events in seq order, as stored; another owner sees none.
pub async fn events_list_round_trip(stores: &Stores) {
    let s = stores.events.as_ref();
    let f = Events::append(s).await;
    let all = ok(
        s.list(Owner(&f.alice), ThreadId(&f.t), &RunEventQuery::default())
            .await,
        "list",
    );
    assert_eq!(all.len(), 5);
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[2], f.stored[3], "round trip");
    assert_eq!(all[4].content, json!([1, "x"]));
    assert!(
        ok(
            s.list(Owner(&f.bob), ThreadId(&f.t), &RunEventQuery::default())
                .await,
            "bob"
        )
        .is_empty()
    );
    f.delete(s).await;
}

/// Filters by run, category and event types.
pub async fn events_filters(stores: &Stores) {
    let s = stores.events.as_ref();
    let f = Events::append(s).await;
    let by_run = RunEventQuery {
        run_id: Some("r1".into()),
        ..Default::default()
    };
    assert_eq!(f.seqs(s, by_run, "by run").await.len(), 3);
    let by_category = RunEventQuery {
        category: Some("message".into()),
        ..Default::default()
    };
    assert_eq!(f.seqs(s, by_category, "by category").await, vec![2, 3, 5]);
    let by_types = RunEventQuery {
        event_types: vec!["run.start".into(), "llm.human.input".into()],
        ..Default::default()
    };
    assert_eq!(f.seqs(s, by_types, "by types").await, vec![1, 2, 4]);
    f.delete(s).await;
}

/// Cursors: after a seq (oldest first), before a seq (the latest ones, in seq order), limits.
pub async fn events_cursors(stores: &Stores) {
    let s = stores.events.as_ref();
    let f = Events::append(s).await;
    let q = |after_seq, before_seq, category: Option<&str>| RunEventQuery {
        after_seq,
        before_seq,
        limit: Some(2),
        category: category.map(str::to_string),
        ..Default::default()
    };
    assert_eq!(f.seqs(s, q(Some(2), None, None), "after").await, vec![3, 4]);
    assert_eq!(
        f.seqs(s, q(None, Some(5), None), "before").await,
        vec![3, 4]
    );
    let latest = q(None, Some(i64::MAX), Some("message"));
    assert_eq!(f.seqs(s, latest, "latest").await, vec![3, 5]);
    let first = RunEventQuery {
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(f.seqs(s, first, "first").await, vec![1]);
    f.delete(s).await;
}

/// Counts, filtered by run and category, per owner.
pub async fn events_count(stores: &Stores) {
    let s = stores.events.as_ref();
    let f = Events::append(s).await;
    assert_eq!(
        ok(
            s.count(Owner(&f.alice), ThreadId(&f.t), None, None).await,
            "count"
        ),
        5
    );
    assert_eq!(
        ok(
            s.count(
                Owner(&f.alice),
                ThreadId(&f.t),
                Some(RunId("r1")),
                Some("message")
            )
            .await,
            "count filtered"
        ),
        2
    );
    assert_eq!(
        ok(
            s.count(Owner(&f.bob), ThreadId(&f.t), None, None).await,
            "count bob"
        ),
        0
    );
    f.delete(s).await;
}

/// Deletes by run and by thread (the owner's only); seqs never go backwards past what is
/// stored.
pub async fn events_delete(stores: &Stores) {
    let s = stores.events.as_ref();
    let f = Events::append(s).await;
    let (alice, t) = (&f.alice, &f.t);
    assert_eq!(
        ok(
            s.delete_run(Owner(&f.bob), ThreadId(t), RunId("r1")).await,
            "bob cannot delete"
        ),
        0
    );
    assert_eq!(
        ok(
            s.delete_run(Owner(alice), ThreadId(t), RunId("r1")).await,
            "delete run"
        ),
        3
    );
    assert_eq!(
        ok(
            s.count(Owner(alice), ThreadId(t), None, None).await,
            "count after"
        ),
        2
    );
    assert_eq!(
        ok(
            s.delete_thread(Owner(alice), ThreadId(t)).await,
            "delete thread"
        ),
        2
    );
    assert!(
        ok(
            s.list(Owner(alice), ThreadId(t), &RunEventQuery::default())
                .await,
            "gone"
        )
        .is_empty()
    );
    let again = vec![ev(t, "r3", "run.start", "trace", json!(null))];
    let again = ok(
        s.append_batch(Owner(alice), again).await,
        "append after delete",
    );
    assert!(again[0].seq >= 1);
    f.delete(s).await;
}
