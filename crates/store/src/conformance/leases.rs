//! Run ownership: claim (one running run per thread), lease renewal, expiry scan, adoption.

use chrono::{DateTime, Utc};

use super::{at, base_time, names, ok};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, RunId, Stores, time};

/// Alice's runs lease1..3 on one thread, created at `base + 1..3`: lease1 pending without a
/// worker, lease2 and lease3 owned by `w-old-x` with a lease until `later` (`now + 30 s`).
/// Worker ids end in `x` too: `renew_leases` counts every run of a worker.
struct Leases {
    x: String,
    owner: String,
    base: DateTime<Utc>,
    now: DateTime<Utc>,
    later: DateTime<Utc>,
    r1: Run,
    r2: Run,
    r3: Run,
}

impl Leases {
    fn run(&self, i: i64) -> Run {
        lease_run(&self.x, &self.owner, self.base, i)
    }

    fn worker(&self, name: &str) -> String {
        format!("{name}-{}", self.x)
    }

    async fn put(s: &dyn RunStore) -> Leases {
        let (owner, _, x) = names();
        let (base, now) = (base_time(), time::now());
        let later = now + chrono::Duration::seconds(30);
        let r1 = lease_run(&x, &owner, base, 1);
        let (mut r2, mut r3) = (
            lease_run(&x, &owner, base, 2),
            lease_run(&x, &owner, base, 3),
        );
        for r in [&mut r2, &mut r3] {
            r.worker_id = Some(format!("w-old-{x}"));
            r.lease_expires_at = Some(later);
        }
        for r in [&r1, &r2, &r3] {
            ok(s.put(r).await, "put");
        }
        Leases {
            x,
            owner,
            base,
            now,
            later,
            r1,
            r2,
            r3,
        }
    }

    /// lease1 claimed by `w1-x`, then done.
    async fn r1_ran(&self, s: &dyn RunStore) {
        let claimed = ok(
            s.claim(RunId(&self.r1.run_id), &self.worker("w1"), self.later)
                .await,
            "claim",
        );
        assert_eq!(claimed, Claim::Claimed);
        ok(
            s.update_status(RunId(&self.r1.run_id), RunStatus::Success, None)
                .await,
            "r1 done",
        );
    }

    /// lease4 on the same thread, owned by a process that never renewed (no lease), and
    /// lease5 on another thread, claimed by `w-renew-x` and renewed until `now + 60 s`.
    /// Returns them and that time.
    async fn renewed(&self, s: &dyn RunStore) -> (Run, Run, DateTime<Utc>) {
        let mut r4 = self.run(4);
        r4.worker_id = Some(self.worker("w-gone"));
        let mut other = Run::new(
            format!("lease5-{}", self.x),
            format!("lease-t2-{}", self.x),
            "asst",
            &self.owner,
        );
        other.created_at = at(self.base, 5);
        ok(s.put(&r4).await, "put r4");
        ok(s.put(&other).await, "put r5");
        let renewer = self.worker("w-renew");
        let claim = s.claim(RunId(&other.run_id), &renewer, self.later).await;
        assert_eq!(ok(claim, "claim r5"), Claim::Claimed);
        let further = self.now + chrono::Duration::seconds(60);
        assert_eq!(ok(s.renew_leases(&renewer, further).await, "renew"), 1);
        (r4, other, further)
    }

    async fn delete(&self, s: &dyn RunStore, more: &[&Run]) {
        for r in [&self.r1, &self.r2, &self.r3]
            .into_iter()
            .chain(more.iter().copied())
        {
            ok(
                s.update_status(RunId(&r.run_id), RunStatus::Success, None)
                    .await,
                "finish",
            );
            ok(
                s.delete(Owner(&self.owner), RunId(&r.run_id)).await,
                "cleanup",
            );
        }
    }
}

fn lease_run(x: &str, owner: &str, base: DateTime<Utc>, i: i64) -> Run {
    let mut r = Run::new(
        format!("lease{i}-{x}"),
        format!("lease-thread-{x}"),
        "asst",
        owner,
    );
    r.created_at = at(base, i);
    r.updated_at = r.created_at;
    r
}

/// `put` keeps the worker and the lease of the run.
pub async fn lease_put_keeps_the_worker(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Leases::put(s).await;
    let got = ok(s.get(Owner(&f.owner), RunId(&f.r3.run_id)).await, "get r3").expect("r3");
    assert_eq!(
        got.worker_id,
        Some(f.worker("w-old")),
        "put keeps the worker"
    );
    assert_eq!(got.lease_expires_at, Some(time::truncate(f.later)));
    f.delete(s, &[]).await;
}

/// `claim`: pending -> running with a worker and a lease; a claimed or missing run is Gone,
/// a second run of the thread is Busy and changes nothing.
pub async fn lease_claim(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Leases::put(s).await;
    let (w1, w2, later) = (f.worker("w1"), f.worker("w2"), f.later);
    assert_eq!(
        ok(s.claim(RunId(&f.r1.run_id), &w1, later).await, "claim"),
        Claim::Claimed
    );
    let got = ok(s.get(Owner(&f.owner), RunId(&f.r1.run_id)).await, "get r1").expect("r1");
    assert_eq!(got.status, RunStatus::Running);
    assert_eq!(got.worker_id, Some(w1.clone()));
    assert_eq!(got.lease_expires_at, Some(time::truncate(later)));
    assert!(got.started_at.is_some());
    assert_eq!(
        ok(s.claim(RunId(&f.r1.run_id), &w2, later).await, "again"),
        Claim::Gone
    );
    assert_eq!(
        ok(s.claim(RunId(&f.r2.run_id), &w2, later).await, "busy"),
        Claim::Busy
    );
    assert_eq!(
        ok(s.get(Owner(&f.owner), RunId(&f.r2.run_id)).await, "r2")
            .expect("r2")
            .status,
        RunStatus::Pending,
        "a busy claim changes nothing"
    );
    assert_eq!(
        ok(s.claim(RunId("missing"), &w1, later).await, "missing"),
        Claim::Gone
    );
    f.delete(s, &[]).await;
}

/// Concurrent claims of different runs of one thread: exactly one wins.
pub async fn lease_racing_claims_on_one_thread(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Leases::put(s).await;
    f.r1_ran(s).await;
    let mut tasks = Vec::new();
    for (i, id) in [&f.r2.run_id, &f.r3.run_id].into_iter().enumerate() {
        let (runs, id, later) = (stores.runs.clone(), id.clone(), f.later);
        let racer = f.worker(&format!("racer{i}"));
        tasks.push(tokio::spawn(async move {
            runs.claim(RunId(&id), &racer, later).await
        }));
    }
    let mut claimed = 0;
    for t in tasks {
        match t.await {
            Ok(r) => claimed += usize::from(ok(r, "racing claim") == Claim::Claimed),
            Err(e) => panic!("claim task failed: {e}"),
        }
    }
    assert_eq!(claimed, 1, "one running run per thread under racing claims");
    f.delete(s, &[]).await;
}

/// `renew_leases` extends every active run of the worker, nothing else.
pub async fn lease_renew(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Leases::put(s).await;
    let (r4, other, further) = f.renewed(s).await;
    assert_eq!(
        ok(s.get(Owner(&f.owner), RunId(&other.run_id)).await, "r5")
            .expect("r5")
            .lease_expires_at,
        Some(time::truncate(further))
    );
    assert_eq!(
        ok(s.renew_leases(&f.worker("nobody"), further).await, "none"),
        0
    );
    f.delete(s, &[&r4, &other]).await;
}

/// Runs whose lease passed (or that have none) are listed as expired, oldest first.
pub async fn lease_expiry_scan(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Leases::put(s).await;
    f.r1_ran(s).await;
    let claim = s
        .claim(RunId(&f.r2.run_id), &f.worker("racer0"), f.later)
        .await;
    assert_eq!(ok(claim, "claim r2"), Claim::Claimed);
    let (r4, other, _) = f.renewed(s).await;
    let expired = ok(
        s.list_expired(f.later + chrono::Duration::seconds(1), 100_000)
            .await,
        "expired",
    );
    let mine: Vec<&str> = expired
        .iter()
        .filter(|r| r.run_id.ends_with(&f.x))
        .map(|r| r.run_id.as_str())
        .collect();
    // r1 finished; r2/r3 (one running, one pending) lease `later`; r4 has no lease; r5 renewed
    let mut want = vec![
        f.r2.run_id.as_str(),
        f.r3.run_id.as_str(),
        r4.run_id.as_str(),
    ];
    want.sort();
    let mut mine_sorted = mine.clone();
    mine_sorted.sort();
    assert_eq!(mine_sorted, want);
    assert_eq!(
        mine.last().copied(),
        Some(r4.run_id.as_str()),
        "oldest first"
    );
    let fresh = ok(s.list_expired(f.now, 100_000).await, "expired now");
    assert!(
        fresh
            .iter()
            .filter(|r| r.run_id.ends_with(&f.x))
            .all(|r| r.run_id == r4.run_id),
        "leases in the future are not expired"
    );
    f.delete(s, &[&r4, &other]).await;
}

/// `adopt`: compare-and-set on an expired lease (exactly one of racing adopters wins), status
/// unchanged; never a live lease, a finished or a missing run.
pub async fn lease_adopt(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Leases::put(s).await;
    let (r4, other, further) = f.renewed(s).await;
    let (w_new, w_late) = (f.worker("w-new"), f.worker("w-late"));
    assert!(!ok(
        s.adopt(RunId(&other.run_id), &w_new, further, f.now).await,
        "live lease"
    ));
    let after = further + chrono::Duration::seconds(1);
    let until = after + chrono::Duration::seconds(30);
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (runs, id, adopter) = (
            stores.runs.clone(),
            other.run_id.clone(),
            f.worker(&format!("adopter{i}")),
        );
        tasks.push(tokio::spawn(async move {
            runs.adopt(RunId(&id), &adopter, until, after).await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await {
            Ok(r) => won += usize::from(ok(r, "adopt")),
            Err(e) => panic!("adopt task failed: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one adopter wins");
    let adopted = ok(s.get(Owner(&f.owner), RunId(&other.run_id)).await, "r5").expect("r5");
    assert_eq!(adopted.status, RunStatus::Running);
    assert!(
        adopted
            .worker_id
            .as_deref()
            .is_some_and(|w| w.starts_with("adopter"))
    );
    assert_eq!(adopted.lease_expires_at, Some(time::truncate(until)));
    ok(
        s.update_status(RunId(&other.run_id), RunStatus::Success, None)
            .await,
        "r5 done",
    );
    let late = until + chrono::Duration::seconds(1);
    assert!(!ok(
        s.adopt(RunId(&other.run_id), &w_late, until, late).await,
        "finished"
    ));
    assert!(!ok(
        s.adopt(RunId("missing"), "w", until, after).await,
        "missing"
    ));
    f.delete(s, &[&r4, &other]).await;
}
