//! Durable cancel requests, `put_if_idle`, and the replica registry.

use chrono::{DateTime, Utc};
use serde_json::Map;

use super::{finish, ok, sfx};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, RunId, Stores, time};

/// Runs c1 and c2 owned by worker `cw-x`, c3 by another worker, each on a thread of its own;
/// c1 has a rollback request, then an interrupt one; c3 an interrupt; c2 is claimed and asked
/// to interrupt while running.
struct Cancels {
    x: String,
    owner: String,
    worker: String,
    runs: [Run; 3],
}

impl Cancels {
    async fn put(s: &dyn RunStore) -> Cancels {
        let x = sfx();
        let (owner, worker) = (format!("cancel-{x}"), format!("cw-{x}"));
        let mk = |i: usize, worker: String| {
            let mut r = Run::new(format!("c{i}-{x}"), format!("ct{i}-{x}"), "asst", &owner);
            r.worker_id = Some(worker);
            r
        };
        let runs = [
            mk(1, worker.clone()),
            mk(2, worker.clone()),
            mk(3, format!("other-{x}")),
        ];
        for r in &runs {
            ok(s.put(r).await, "put");
        }
        Cancels {
            x,
            owner,
            worker,
            runs,
        }
    }

    async fn request(&self, s: &dyn RunStore) {
        let [r1, r2, r3] = &self.runs;
        assert!(ok(
            s.request_cancel(RunId(&r1.run_id), CancelAction::Rollback)
                .await,
            "request"
        ));
        assert!(
            ok(
                s.request_cancel(RunId(&r1.run_id), CancelAction::Interrupt)
                    .await,
                "again"
            ),
            "still active"
        );
        assert!(ok(
            s.request_cancel(RunId(&r3.run_id), CancelAction::Interrupt)
                .await,
            "other worker"
        ));
        let until = time::now() + chrono::Duration::seconds(60);
        assert_eq!(
            ok(
                s.claim(RunId(&r2.run_id), &self.worker, until).await,
                "claim"
            ),
            Claim::Claimed
        );
        assert!(ok(
            s.request_cancel(RunId(&r2.run_id), CancelAction::Interrupt)
                .await,
            "running"
        ));
    }

    async fn stop(&self, s: &dyn RunStore) {
        for r in &self.runs {
            ok(
                s.update_status(RunId(&r.run_id), RunStatus::Interrupted, None)
                    .await,
                "stop",
            );
        }
    }
}

/// Requests are recorded on active runs only, the first action wins, and the owning worker
/// lists its runs' requests in one query.
pub async fn cancel_requests_first_action_wins(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Cancels::put(s).await;
    assert!(ok(s.cancel_requests(&f.worker).await, "none yet").is_empty());
    f.request(s).await;
    let [r1, r2, _] = &f.runs;
    let mut got = ok(s.cancel_requests(&f.worker).await, "requests");
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (r1.run_id.clone(), CancelAction::Rollback),
            (r2.run_id.clone(), CancelAction::Interrupt)
        ],
        "the first request wins; only this worker's runs"
    );
    let row = ok(s.get(Owner(&f.owner), RunId(&r1.run_id)).await, "get").expect("r1");
    assert_eq!(row.cancel_requested, Some(CancelAction::Rollback));
    f.stop(s).await;
}

/// A finished run drops out of the requests and cannot be cancelled; neither can a missing one.
pub async fn cancel_requests_end_with_the_run(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Cancels::put(s).await;
    f.request(s).await;
    let r2 = &f.runs[1];
    ok(
        s.update_status(RunId(&r2.run_id), RunStatus::Interrupted, None)
            .await,
        "r2 stopped",
    );
    assert_eq!(
        ok(s.cancel_requests(&f.worker).await, "after").len(),
        1,
        "finished runs drop out"
    );
    assert!(
        !ok(
            s.request_cancel(RunId(&r2.run_id), CancelAction::Interrupt)
                .await,
            "finished"
        ),
        "a finished run cannot be cancelled"
    );
    assert!(!ok(
        s.request_cancel(RunId(&format!("missing-{}", f.x)), CancelAction::Interrupt)
            .await,
        "missing"
    ));
    f.stop(s).await;
}

/// A run of `owner` on `thread` owned by a (live) worker, so never in the durable queue.
fn owned(name: String, thread: &str, owner: &str, worker: &str) -> Run {
    let mut r = Run::new(name, thread, "asst", owner);
    r.worker_id = Some(worker.to_string());
    r.lease_expires_at = Some(time::now() + chrono::Duration::seconds(600));
    r
}

/// A fresh suffix, its owner `idle-x` and worker `iw-x`, and a thread `tid-x` of the owner's.
async fn idle_thread(stores: &Stores, tid: &str) -> (String, String, String, String) {
    let x = sfx();
    let (owner, worker, tid) = (format!("idle-{x}"), format!("iw-{x}"), format!("{tid}-{x}"));
    let thread = Thread::new(&tid, Map::new());
    ok(stores.threads.create(Owner(&owner), thread).await, "thread");
    (x, owner, worker, tid)
}

/// `put_if_idle` inserts only while no other run of the thread is active without a cancel
/// request; a refused put writes nothing.
pub async fn put_if_idle_only_on_an_idle_thread(stores: &Stores) {
    let s = stores.runs.as_ref();
    let (x, owner, w, tid) = idle_thread(stores, "it").await;
    let a = owned(format!("ia-{x}"), &tid, &owner, &w);
    assert!(ok(s.put_if_idle(&a).await, "idle thread"));
    let b = owned(format!("ib-{x}"), &tid, &owner, &w);
    assert!(!ok(s.put_if_idle(&b).await, "busy"), "a is pending");
    assert!(
        ok(s.get(Owner(&owner), RunId(&b.run_id)).await, "get").is_none(),
        "a refused put writes nothing"
    );
    // a run being cancelled does not hold the thread
    assert!(ok(
        s.request_cancel(RunId(&a.run_id), CancelAction::Interrupt)
            .await,
        "cancel a"
    ));
    assert!(ok(s.put_if_idle(&b).await, "a is being cancelled"));
    let pending = [RunStatus::Pending];
    assert!(ok(
        s.transition(RunId(&b.run_id), &pending, RunStatus::Success, None)
            .await,
        "b done"
    ));
    // finished runs do not hold it either
    let c = owned(format!("ic-{x}"), &tid, &owner, &w);
    assert!(ok(
        s.put_if_idle(&c).await,
        "only finished / cancelled runs"
    ));
    finish(s, [&a.run_id, &c.run_id]).await;
}

/// Of concurrent `put_if_idle` callers on an idle thread, exactly one inserts.
pub async fn put_if_idle_concurrent_callers_one_inserts(stores: &Stores) {
    let s = stores.runs.as_ref();
    let (x, owner, w, tid2) = idle_thread(stores, "it2").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let runs = stores.runs.clone();
        let run = owned(format!("ir{i}-{x}"), &tid2, &owner, &w);
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
    let ids: Vec<String> = (0..8).map(|i| format!("ir{i}-{x}")).collect();
    finish(s, &ids).await;
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
    let day = now - chrono::Duration::days(1);
    let all = ok(s.list_replicas(day).await, "list all");
    assert_eq!(all.iter().filter(|r| r.replica_id.ends_with(&x)).count(), 2);
    let gone = ok(
        s.remove_replica(&a.replica_id, now - chrono::Duration::seconds(600))
            .await,
        "remove",
    );
    assert!(gone >= 2, "a and the stale entry are removed: {gone}");
    let all = ok(s.list_replicas(day).await, "list after");
    assert!(!all.iter().any(|r| r.replica_id.ends_with(&x)));
}
