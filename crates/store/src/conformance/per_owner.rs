//! Thread ids are per owner: two owners' threads of the same id are two threads for every
//! per-thread rule of the run store (one running run, creation order, `put_if_idle`, the
//! queue), and for run events (each thread has its own sequence).

use serde_json::{Map, json};

use super::{ancient_base, claim_one_mine, ok, queue_lock, run_ids, sfx};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, RunId, Stores, ThreadId, time};

/// Alice (`pa-x`) and bob (`pb-x`), each with a thread `same-x`.
struct Owners {
    x: String,
    alice: String,
    bob: String,
    tid: String,
    worker: String,
}

impl Owners {
    async fn create(stores: &Stores) -> Owners {
        let x = sfx();
        let (alice, bob) = (format!("pa-{x}"), format!("pb-{x}"));
        let (tid, worker) = (format!("same-{x}"), format!("pw-{x}"));
        for o in [&alice, &bob] {
            let thread = Thread::new(&tid, Map::new());
            ok(
                stores.threads.create(Owner(o), thread).await,
                "thread of the same id",
            );
        }
        Owners {
            x,
            alice,
            bob,
            tid,
            worker,
        }
    }

    /// A run of `owner` on the thread, owned by the (live) worker: never in the queue.
    fn owned(&self, name: &str, owner: &str) -> Run {
        let mut r = Run::new(format!("{name}-{}", self.x), &self.tid, "asst", owner);
        r.worker_id = Some(self.worker.clone());
        r.lease_expires_at = Some(time::now() + chrono::Duration::seconds(600));
        r
    }

    async fn claim(&self, s: &dyn RunStore, run: &Run) -> Claim {
        let until = time::now() + chrono::Duration::seconds(60);
        ok(
            s.claim(RunId(&run.run_id), &self.worker, until).await,
            "claim",
        )
    }

    /// Finishes `runs`, deletes both owners' runs of the thread and the threads.
    async fn delete(self, stores: &Stores, runs: &[&Run]) {
        super::finish(stores.runs.as_ref(), runs.iter().map(|r| &r.run_id)).await;
        for o in [&self.alice, &self.bob] {
            ok(
                stores
                    .runs
                    .delete_by_thread(Owner(o), ThreadId(&self.tid))
                    .await,
                "cleanup",
            );
            ok(
                stores.threads.delete(Owner(o), ThreadId(&self.tid)).await,
                "cleanup thread",
            );
        }
    }
}

/// One running run per thread, creation order and `put_if_idle` hold per owner's thread.
pub async fn per_owner_run_rules(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Owners::create(stores).await;
    // alice's thread is busy: bob's is still idle
    let a1 = f.owned("a1", &f.alice);
    assert!(ok(s.put_if_idle(&a1).await, "alice idle"));
    let b1 = f.owned("b1", &f.bob);
    assert!(ok(
        s.put_if_idle(&b1).await,
        "bob's thread is another thread"
    ));
    // both run at once; an older pending run of alice's does not hold bob's back
    let a2 = f.owned("a2", &f.alice);
    ok(s.put(&a2).await, "a2 pending behind a1");
    assert_eq!(f.claim(s, &b1).await, Claim::Claimed);
    assert_eq!(
        f.claim(s, &a1).await,
        Claim::Claimed,
        "bob's running run is not on alice's thread"
    );
    assert_eq!(
        f.claim(s, &a2).await,
        Claim::Busy,
        "alice's own thread still runs one at a time"
    );
    let active = |owner| s.active_for_thread(owner, ThreadId(&f.tid));
    assert_eq!(
        ok(active(Owner(&f.alice)).await, "alice active").map(|r| r.run_id),
        Some(a1.run_id.clone())
    );
    assert_eq!(
        ok(active(Owner(&f.bob)).await, "bob active").map(|r| r.run_id),
        Some(b1.run_id.clone())
    );
    let next = |owner| s.next_pending_for_thread(owner, ThreadId(&f.tid));
    assert_eq!(
        ok(next(Owner(&f.alice)).await, "alice next").map(|r| r.run_id),
        Some(a2.run_id.clone())
    );
    assert!(ok(next(Owner(&f.bob)).await, "bob next").is_none());
    f.delete(stores, &[&a1, &a2, &b1]).await;
}

/// The queue: bob's queued run starts while alice's thread of the same id is running;
/// deleting one owner's runs of the thread leaves the other's.
pub async fn per_owner_queue(stores: &Stores) {
    let _queue = queue_lock().await;
    let s = stores.runs.as_ref();
    let f = Owners::create(stores).await;
    let (a1, a2, b1) = (
        f.owned("a1", &f.alice),
        f.owned("a2", &f.alice),
        f.owned("b1", &f.bob),
    );
    for r in [&a1, &b1] {
        assert!(ok(s.put_if_idle(r).await, "idle"));
        assert_eq!(f.claim(s, r).await, Claim::Claimed);
    }
    ok(s.put(&a2).await, "a2 pending behind a1");
    let mut bq = Run::new(format!("bq-{}", f.x), &f.tid, "asst", &f.bob);
    bq.created_at = ancient_base();
    ok(s.put(&bq).await, "bob queued");
    assert!(ok(
        s.update_status(RunId(&b1.run_id), RunStatus::Success, None)
            .await,
        "b1 done"
    ));
    let claimed = claim_one_mine(s, &f.x, &f.worker).await;
    assert_eq!(
        run_ids(&claimed),
        [bq.run_id.as_str()],
        "alice's running run does not block it"
    );
    assert_eq!(
        ok(
            s.delete_by_thread(Owner(&f.bob), ThreadId(&f.tid)).await,
            "bob's runs"
        ),
        2
    );
    assert!(ok(s.get(Owner(&f.alice), RunId(&a1.run_id)).await, "a1 stays").is_some());
    f.delete(stores, &[&a1, &a2]).await;
}

/// Run events: one sequence per owner's thread, each sees only its own.
pub async fn per_owner_event_sequences(stores: &Stores) {
    let f = Owners::create(stores).await;
    let (e, tid) = (stores.events.as_ref(), &f.tid);
    let ev = |run: &str, n: i64| NewRunEvent::new(tid, run, "x", "trace", json!(n));
    let a_events = ok(
        e.append_batch(Owner(&f.alice), vec![ev("ra", 1), ev("ra", 2)])
            .await,
        "a",
    );
    let b_events = ok(e.append_batch(Owner(&f.bob), vec![ev("rb", 1)]).await, "b");
    assert_eq!(a_events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(b_events[0].seq, 1, "bob's thread has its own sequence");
    let a_more = ok(
        e.append_batch(Owner(&f.alice), vec![ev("ra", 3)]).await,
        "a more",
    );
    assert_eq!(a_more[0].seq, 3, "bob's appends leave no gap in alice's");
    let listed = ok(
        e.list(Owner(&f.bob), ThreadId(tid), &RunEventQuery::default())
            .await,
        "bob lists",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].content, json!(1));
    assert_eq!(
        ok(
            e.count(Owner(&f.alice), ThreadId(tid), None, None).await,
            "alice count"
        ),
        3
    );
    assert_eq!(
        ok(
            e.delete_thread(Owner(&f.bob), ThreadId(tid)).await,
            "bob deletes"
        ),
        1
    );
    assert_eq!(
        ok(
            e.count(Owner(&f.alice), ThreadId(tid), None, None).await,
            "alice keeps"
        ),
        3
    );
    assert_eq!(
        ok(
            e.delete_run(Owner(&f.alice), ThreadId(tid), RunId("ra"))
                .await,
            "cleanup"
        ),
        3
    );
    f.delete(stores, &[]).await;
}
