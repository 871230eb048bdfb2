//! The durable queue: `claim_next` takes the oldest queued runs (pending, no worker) whose
//! thread is idle and has no older pending run, never the same run twice; `claim` respects
//! creation order too; queued runs are not abandoned runs; a not-before time holds a run back.
//! Every case holds [`queue_lock`] from before it puts its first run.

use chrono::{DateTime, Utc};

use super::{ancient_base, at, claim_mine, claim_one_mine, finish, ok, queue_lock, run_ids, sfx};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, RunId, Stores, time};

fn queued(x: &str, owner: &str, base: DateTime<Utc>, name: &str, thread: &str, secs: i64) -> Run {
    let mut r = Run::new(
        format!("{name}-{x}"),
        format!("{thread}-{x}"),
        "asst",
        owner,
    );
    r.created_at = at(base, secs);
    r.updated_at = r.created_at;
    r
}

/// Three threads of queued runs, from 1971: qa (a1, a2 queued), qb (b1 owned by a live worker,
/// b2 queued), qc (c1 running, c2 queued); then the first `claim_next` of worker `w`, which
/// must take a1.
struct Queue {
    x: String,
    owner: String,
    base: DateTime<Utc>,
    w: String,
    runs: [Run; 6],
}

impl Queue {
    async fn put(s: &dyn RunStore) -> Queue {
        let x = sfx();
        let (owner, base, w) = (format!("queue-{x}"), ancient_base(), format!("qw-{x}"));
        let mk = |name: &str, thread: &str, secs| queued(&x, &owner, base, name, thread, secs);
        let (a1, a2, b2, c2) = (
            mk("a1", "qa", 1),
            mk("a2", "qa", 2),
            mk("b2", "qb", 4),
            mk("c2", "qc", 5),
        );
        let mut b1 = mk("b1", "qb", 3);
        b1.worker_id = Some(format!("w-live-{x}"));
        b1.lease_expires_at = Some(time::now() + chrono::Duration::seconds(600));
        let mut c1 = mk("c1", "qc", 0);
        c1.status = RunStatus::Running;
        c1.worker_id = b1.worker_id.clone();
        c1.lease_expires_at = b1.lease_expires_at;
        let runs = [a1, a2, b1, b2, c1, c2];
        for r in &runs {
            ok(s.put(r).await, "put queued");
        }
        let pending = ok(s.count_pending().await, "count_pending");
        assert!(
            pending >= 5,
            "count_pending counts every pending run: {pending}"
        );
        // only a1: a2 waits for a1, b2 for the older (owned) b1, c2 for the running c1
        let got = claim_mine(s, &x, &w, 1).await;
        assert_eq!(
            run_ids(&got),
            [runs[0].run_id.as_str()],
            "the oldest eligible queued run"
        );
        assert_eq!(got[0].status, RunStatus::Running);
        assert_eq!(got[0].worker_id.as_deref(), Some(w.as_str()));
        assert!(got[0].started_at.is_some() && got[0].lease_expires_at.is_some());
        Queue {
            x,
            owner,
            base,
            w,
            runs,
        }
    }

    async fn finish(&self, s: &dyn RunStore, more: &[&Run]) {
        let all = self.runs.iter().chain(more.iter().copied());
        finish(s, all.map(|r| &r.run_id)).await;
    }
}

/// `claim_next` takes the oldest eligible queued run; the others stay queued, and queued runs
/// are neither listed as abandoned nor adoptable.
pub async fn queue_claims_the_oldest_eligible_run(stores: &Stores) {
    let _queue = queue_lock().await;
    let s = stores.runs.as_ref();
    let q = Queue::put(s).await;
    let [_, a2, _, b2, _, c2] = &q.runs;
    for r in [a2, b2, c2] {
        let row = ok(s.get(Owner(&q.owner), RunId(&r.run_id)).await, "get").expect("row");
        assert_eq!(row.status, RunStatus::Pending, "{} stays queued", r.run_id);
        assert!(row.worker_id.is_none());
    }
    let far = time::now() + chrono::Duration::days(36_500);
    let expired = ok(s.list_expired(far, 1_000_000).await, "list_expired");
    assert!(
        !expired
            .iter()
            .any(|r| r.run_id == a2.run_id || r.run_id == c2.run_id),
        "queued runs are never listed as abandoned"
    );
    assert!(
        !ok(
            s.adopt(RunId(&a2.run_id), "thief", far, far).await,
            "adopt queued"
        ),
        "a queued run cannot be adopted"
    );
    q.finish(s, &[]).await;
}

/// `claim` by id honours creation order: a newer owned run waits for the queued older ones of
/// its thread; once the blockers are gone, `claim_next` takes the rest.
pub async fn queue_claim_by_id_honours_creation_order(stores: &Stores) {
    let _queue = queue_lock().await;
    let s = stores.runs.as_ref();
    let q = Queue::put(s).await;
    let [a1, a2, b1, b2, c1, c2] = &q.runs;
    let far = time::now() + chrono::Duration::days(36_500);
    let mut a3 = queued(&q.x, &q.owner, q.base, "a3", "qa", 6);
    a3.worker_id = Some(q.w.clone());
    ok(s.put(&a3).await, "put a3");
    ok(
        s.update_status(RunId(&a1.run_id), RunStatus::Success, None)
            .await,
        "a1 done",
    );
    assert_eq!(
        ok(s.claim(RunId(&a3.run_id), &q.w, far).await, "claim a3"),
        Claim::Busy,
        "an older run of the thread is pending"
    );
    // a1 done: a2 next; b1 gone and c1 done: b2 and c2 too
    let pending = [RunStatus::Pending];
    ok(
        s.transition(RunId(&b1.run_id), &pending, RunStatus::Interrupted, None)
            .await,
        "b1",
    );
    ok(
        s.update_status(RunId(&c1.run_id), RunStatus::Success, None)
            .await,
        "c1 done",
    );
    let mut got: Vec<String> = claim_mine(s, &q.x, &q.w, 3)
        .await
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    got.sort();
    let mut want = vec![a2.run_id.clone(), b2.run_id.clone(), c2.run_id.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(
        ok(
            s.claim(RunId(&a3.run_id), &q.w, far).await,
            "claim a3 while a2 runs"
        ),
        Claim::Busy
    );
    ok(
        s.update_status(RunId(&a2.run_id), RunStatus::Success, None)
            .await,
        "a2 done",
    );
    assert_eq!(
        ok(s.claim(RunId(&a3.run_id), &q.w, far).await, "claim a3"),
        Claim::Claimed
    );
    q.finish(s, &[&a3]).await;
}

/// Racing workers: every queued run is claimed exactly once.
pub async fn queue_racing_workers_claim_each_run_once(stores: &Stores) {
    let _queue = queue_lock().await;
    let s = stores.runs.as_ref();
    let x = sfx();
    let (owner, base) = (format!("queue-{x}"), ancient_base());
    let racers: Vec<Run> = (0..4)
        .map(|i| {
            queued(
                &x,
                &owner,
                base,
                &format!("r{i}"),
                &format!("qr{i}"),
                10 + i,
            )
        })
        .collect();
    for r in &racers {
        ok(s.put(r).await, "put racer");
    }
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (runs, x) = (stores.runs.clone(), x.clone());
        tasks.push(tokio::spawn(async move {
            claim_mine(runs.as_ref(), &x, &format!("racer{i}-{x}"), 1).await
        }));
    }
    let mut claimed: Vec<String> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(v) => claimed.extend(v.into_iter().map(|r| r.run_id)),
            Err(e) => panic!("claim_next task failed: {e}"),
        }
    }
    // a racer that found every candidate locked may come back empty: claim the rest now
    let rest = claim_mine(s, &x, &format!("qw-{x}"), 4 - claimed.len().min(4)).await;
    claimed.extend(rest.into_iter().map(|r| r.run_id));
    claimed.sort();
    let before = claimed.len();
    claimed.dedup();
    assert_eq!(before, claimed.len(), "no run claimed twice");
    assert_eq!(claimed.len(), 4, "every queued run claimed: {claimed:?}");
    finish(s, racers.iter().map(|r| &r.run_id)).await;
}

/// A queued run whose `lease_expires_at` is set is not claimed before that time (its
/// `after_seconds`), and later runs of its thread wait behind it.
pub async fn queue_not_before(stores: &Stores) {
    let _queue = queue_lock().await;
    let s = stores.runs.as_ref();
    let x = sfx();
    let (owner, base) = (format!("qnb-{x}"), ancient_base());
    let mk = |name: &str, thread: &str, secs| queued(&x, &owner, base, name, thread, secs);
    let mut d1 = mk("d1", "qd", 1);
    d1.lease_expires_at = Some(time::now() + chrono::Duration::milliseconds(1200));
    let d2 = mk("d2", "qd", 2);
    let mut e1 = mk("e1", "qe", 3);
    e1.lease_expires_at = Some(time::now() - chrono::Duration::seconds(1));
    for r in [&d1, &d2, &e1] {
        ok(s.put(r).await, "put queued");
    }
    let w = format!("qnbw-{x}");
    // one at a time (the oldest first): queued runs of other cases sharing the database are
    // younger than these, or ancient and finished by `claim_mine`
    let got = claim_one_mine(s, &x, &w).await;
    assert_eq!(run_ids(&got), [e1.run_id.as_str()], "only the due run");
    for r in [&d1, &d2] {
        let row = ok(s.get(Owner(&owner), RunId(&r.run_id)).await, "get").expect("row");
        assert_eq!(row.status, RunStatus::Pending, "{} waits", r.run_id);
        assert!(row.worker_id.is_none());
    }
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let got = claim_one_mine(s, &x, &w).await;
    assert_eq!(
        run_ids(&got),
        [d1.run_id.as_str()],
        "due now; d2 still waits behind it"
    );
    finish(s, [&d1.run_id, &d2.run_id, &e1.run_id]).await;
}
