//! The run-event conformance suite against the JSONL store, plus what files add: events and
//! seqs survive a reopen, a torn last line (crash mid-write) is ignored, and ids that could
//! escape the directory are refused.

use std::borrow::Borrow;
use std::sync::Arc;

use antler_store::{
    JsonlRunEventStore, NewRunEvent, Owner, RunEventQuery, RunEventStore, RunId, StoreError,
    Stores, ThreadId,
};
use serde_json::json;

/// The in-memory stores with the JSONL run event store in a temp dir of their own.
struct JsonlStores {
    stores: Stores,
    _dir: tempfile::TempDir,
}

impl Borrow<Stores> for JsonlStores {
    fn borrow(&self) -> &Stores {
        &self.stores
    }
}

async fn jsonl_stores() -> Option<JsonlStores> {
    let dir = tempfile::tempdir().unwrap();
    let mut stores = Stores::memory();
    stores.set_events(Arc::new(JsonlRunEventStore::open(dir.path()).unwrap()));
    Some(JsonlStores { stores, _dir: dir })
}

/// The run event cases, and the per-owner ones (their events part is the JSONL store's).
mod conformance {
    antler_store::store_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        super::jsonl_stores();
        events_append_per_thread_seqs,
        events_concurrent_appends_never_reuse_a_seq,
        events_list_round_trip,
        events_filters,
        events_cursors,
        events_count,
        events_delete,
        per_owner_run_rules,
        per_owner_queue,
        per_owner_event_sequences,
    );
}

fn ev(thread: &str, run: &str, n: i64) -> NewRunEvent {
    let mut e = NewRunEvent::new(thread, run, "llm.ai.response", "message", json!({"n": n}));
    e.metadata = json!({"caller": "lead_agent"});
    e
}

#[tokio::test]
async fn seqs_and_events_survive_a_reopen_and_a_torn_line() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = JsonlRunEventStore::open(dir.path()).unwrap();
        let got = s
            .append_batch(Owner("alice"), vec![ev("t1", "r1", 1), ev("t1", "r1", 2)])
            .await
            .unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            s.delete_run(Owner("alice"), ThreadId("t1"), RunId("r1"))
                .await
                .unwrap(),
            2
        );
    }
    // a crash mid-append leaves half a line behind
    let file = dir.path().join("threads/t1/@alice/events.jsonl");
    std::fs::write(&file, "{\"owner\":\"alice\",\"run_id\":\"r").unwrap();
    let s = JsonlRunEventStore::open(dir.path()).unwrap();
    let got = s
        .append_batch(Owner("alice"), vec![ev("t1", "r2", 3)])
        .await
        .unwrap();
    assert_eq!(
        got[0].seq, 3,
        "seqs never repeat, even after deletes and a restart"
    );
    let listed = s
        .list(Owner("alice"), ThreadId("t1"), &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "the torn line is ignored: {listed:?}");
    assert_eq!(listed[0].content, json!({"n": 3}));
    assert_eq!(listed[0].metadata, json!({"caller": "lead_agent"}));
    assert!(
        s.list(Owner("bob"), ThreadId("t1"), &RunEventQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ids_that_could_escape_the_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = JsonlRunEventStore::open(dir.path()).unwrap();
    for bad in ["../x", "a/b", ".hidden", "", "a\\b"] {
        let r = s.append_batch(Owner("alice"), vec![ev(bad, "r", 1)]).await;
        assert!(
            matches!(r, Err(StoreError::InvalidArgument(_))),
            "{bad:?}: {r:?}"
        );
        let r = s
            .list(Owner("alice"), ThreadId(bad), &RunEventQuery::default())
            .await;
        assert!(matches!(r, Err(StoreError::InvalidArgument(_))), "{bad:?}");
    }
    for bad_owner in ["../x", "a/b", ""] {
        let r = s
            .append_batch(Owner(bad_owner), vec![ev("t1", "r", 1)])
            .await;
        assert!(
            matches!(r, Err(StoreError::InvalidArgument(_))),
            "{bad_owner:?}: {r:?}"
        );
    }
}

/// An earlier version kept one file per thread id, every owner's lines in it: opening the
/// store splits it into one directory per owner, each keeping the thread's last seq.
#[tokio::test]
async fn an_earlier_versions_thread_file_is_split_by_owner() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("threads/t1");
    std::fs::create_dir_all(&old).unwrap();
    let line = |owner: &str, seq: i64| {
        json!({"owner": owner, "run_id": "r1", "seq": seq, "event_type": "x",
               "category": "trace", "content": {"n": seq}, "metadata": {},
               "created_at": "2026-11-01T10:00:00.000000+00:00"})
        .to_string()
    };
    std::fs::write(
        old.join("events.jsonl"),
        format!(
            "{}\n{}\n{}\n",
            line("alice", 1),
            line("bob", 2),
            line("alice", 3)
        ),
    )
    .unwrap();
    std::fs::write(old.join("seq"), "7").unwrap();
    let s = JsonlRunEventStore::open(dir.path()).unwrap();
    assert!(!old.join("events.jsonl").exists() && !old.join("seq").exists());
    let alice = s
        .list(Owner("alice"), ThreadId("t1"), &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(alice.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
    let bob = s
        .list(Owner("bob"), ThreadId("t1"), &RunEventQuery::default())
        .await
        .unwrap();
    assert_eq!(bob.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
    for owner in ["alice", "bob"] {
        let got = s
            .append_batch(Owner(owner), vec![ev("t1", "r2", 9)])
            .await
            .unwrap();
        assert_eq!(got[0].seq, 8, "{owner}: no seq is handed out twice");
    }
    // and once more: nothing left to split
    drop(s);
    let s = JsonlRunEventStore::open(dir.path()).unwrap();
    assert_eq!(
        s.count(Owner("alice"), ThreadId("t1"), None, None)
            .await
            .unwrap(),
        3
    );
}
