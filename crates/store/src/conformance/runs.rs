//! RunStore contract: put/get, listing, status transitions, one running run per thread,
//! scans, progress, completion, token aggregation, delete.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{at, base_time, is_conflict, is_not_found, names, obj, ok, run_ids};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, RunId, Stores, ThreadId};

/// Alice's runs r1 (every field set, model `gpt-x`), r2 and r3 (temporary) on `thread`, r4 on
/// `other_thread`, and bob's rb on `thread` (same id, his thread): created at `base + 1..5`,
/// all pending without a worker.
struct Runs {
    alice: String,
    bob: String,
    x: String,
    thread: String,
    other_thread: String,
    base: DateTime<Utc>,
    r1: Run,
    r2: Run,
    r3: Run,
    r4: Run,
    rb: Run,
}

fn run_at(x: &str, base: DateTime<Utc>, i: i64, thread: &str, owner: &str) -> Run {
    let mut r = Run::new(format!("r{i}-{x}"), thread, "asst", owner);
    r.created_at = at(base, i);
    r.updated_at = r.created_at;
    r
}

impl Runs {
    fn run(&self, i: i64, thread: &str, owner: &str) -> Run {
        run_at(&self.x, self.base, i, thread, owner)
    }

    async fn put(s: &dyn RunStore) -> Runs {
        let (alice, bob, x) = names();
        let (thread, other_thread, base) =
            (format!("thread-{x}"), format!("thread2-{x}"), base_time());
        let mut r1 = run_at(&x, base, 1, &thread, &alice);
        r1.metadata = obj(json!({"graph_id": "echo"}));
        r1.kwargs = json!({"input": {"messages": []}, "temporary": false});
        r1.multitask_strategy = crate::MultitaskStrategy::Reject;
        r1.model_name = Some("gpt-x".into());
        let r2 = run_at(&x, base, 2, &thread, &alice);
        let mut r3 = run_at(&x, base, 3, &thread, &alice);
        r3.temporary = true;
        let r4 = run_at(&x, base, 4, &other_thread, &alice);
        let rb = run_at(&x, base, 5, &thread, &bob);
        for r in [&r1, &r2, &r3, &r4, &rb] {
            ok(s.put(r).await, "put");
        }
        Runs {
            alice,
            bob,
            x,
            thread,
            other_thread,
            base,
            r1,
            r2,
            r3,
            r4,
            rb,
        }
    }

    /// Finishes and deletes every run of the fixture.
    async fn delete(self, s: &dyn RunStore) {
        let all = [&self.r1, &self.r2, &self.r3, &self.r4, &self.rb];
        super::finish(s, all.map(|r| &r.run_id)).await;
        for (owner, thread) in [
            (&self.alice, &self.thread),
            (&self.alice, &self.other_thread),
            (&self.bob, &self.thread),
        ] {
            ok(
                s.delete_by_thread(Owner(owner), ThreadId(thread)).await,
                "cleanup",
            );
        }
    }

    /// r1 ran and succeeded; r3 is running.
    async fn r3_running(&self, s: &dyn RunStore) {
        let (r1, r3) = (&self.r1.run_id, &self.r3.run_id);
        let pending = [RunStatus::Pending];
        ok(
            s.transition(RunId(r1), &pending, RunStatus::Running, None)
                .await,
            "r1 claim",
        );
        ok(
            s.update_status(RunId(r1), RunStatus::Success, None).await,
            "r1 success",
        );
        ok(
            s.update_status(RunId(r3), RunStatus::Running, None).await,
            "r3 running",
        );
    }
}

/// What r3 completes with.
fn done() -> RunCompletion {
    RunCompletion {
        status: Some(RunStatus::Success),
        total_input_tokens: 10,
        total_output_tokens: 5,
        total_tokens: 15,
        llm_call_count: 2,
        lead_agent_tokens: 9,
        subagent_tokens: 4,
        middleware_tokens: 2,
        message_count: 3,
        last_ai_message: Some("bye".into()),
        first_human_message: Some("hi".into()),
        error: None,
    }
}

/// What r1 completes with (no status: kept).
fn r1_done() -> RunCompletion {
    RunCompletion {
        total_tokens: 100,
        total_input_tokens: 60,
        total_output_tokens: 40,
        lead_agent_tokens: 100,
        ..Default::default()
    }
}

/// A put run reads back with every field; ids are unique; runs are their owner's.
pub async fn run_put_and_get(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    assert!(is_conflict(s.put(&f.r1).await), "duplicate run id");
    let got = ok(s.get(Owner(&f.alice), RunId(&f.r1.run_id)).await, "get").expect("own run");
    assert_eq!(got, f.r1, "round trip keeps every field");
    assert!(ok(s.get(Owner(&f.bob), RunId(&f.r1.run_id)).await, "get other").is_none());
    assert!(
        ok(
            s.get(Owner(&f.alice), RunId("missing")).await,
            "get missing"
        )
        .is_none()
    );
    assert!(
        ok(s.get(Owner(&f.alice), RunId(&f.r3.run_id)).await, "get r3")
            .expect("r3")
            .temporary
    );
    f.delete(s).await;
}

/// `list_by_thread`: newest first, the owner's only, paged, by status.
pub async fn run_list_by_thread(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    let listed = ok(
        s.list_by_thread(
            Owner(&f.alice),
            ThreadId(&f.thread),
            &RunListQuery::default(),
        )
        .await,
        "list",
    );
    assert_eq!(
        run_ids(&listed),
        vec![
            f.r3.run_id.as_str(),
            f.r2.run_id.as_str(),
            f.r1.run_id.as_str()
        ]
    );
    let page = RunListQuery {
        limit: 1,
        offset: 1,
        status: None,
    };
    let listed = ok(
        s.list_by_thread(Owner(&f.alice), ThreadId(&f.thread), &page)
            .await,
        "page",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].run_id, f.r2.run_id);
    let bobs = RunListQuery::default();
    assert_eq!(
        ok(
            s.list_by_thread(Owner(&f.bob), ThreadId(&f.thread), &bobs)
                .await,
            "bob"
        )
        .len(),
        1
    );
    f.delete(s).await;
}

/// Pending runs are active, the oldest first; `next_pending_for_thread` is the oldest.
pub async fn run_active_and_next_pending(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    let active = ok(
        s.active_for_thread(Owner(&f.alice), ThreadId(&f.thread))
            .await,
        "active",
    )
    .expect("pending runs are active");
    assert_eq!(active.run_id, f.r1.run_id, "oldest first");
    assert_eq!(
        ok(
            s.next_pending_for_thread(Owner(&f.alice), ThreadId(&f.thread))
                .await,
            "next"
        )
        .expect("pending")
        .run_id,
        f.r1.run_id
    );
    assert!(
        ok(
            s.active_for_thread(Owner(&f.bob), ThreadId(&f.thread))
                .await,
            "bob's"
        )
        .is_some_and(|r| r.run_id == f.rb.run_id)
    );
    assert!(
        ok(
            s.active_for_thread(Owner(&f.alice), ThreadId("no-thread"))
                .await,
            "none"
        )
        .is_none()
    );
    f.delete(s).await;
}

/// `transition` is compare-and-set; running sets `started_at` and `updated_at`.
pub async fn run_transition_is_compare_and_set(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    let (r1, pending) = (&f.r1.run_id, [RunStatus::Pending]);
    assert!(ok(
        s.transition(RunId(r1), &pending, RunStatus::Running, None)
            .await,
        "claim"
    ));
    assert!(!ok(
        s.transition(RunId(r1), &pending, RunStatus::Running, None)
            .await,
        "second claim fails"
    ));
    assert!(!ok(
        s.transition(RunId("missing"), &pending, RunStatus::Running, None)
            .await,
        "missing"
    ));
    let running = ok(s.get(Owner(&f.alice), RunId(r1)).await, "get").expect("r1");
    assert_eq!(running.status, RunStatus::Running);
    assert!(running.started_at.is_some());
    assert!(running.finished_at.is_none());
    assert!(running.updated_at > f.r1.updated_at);
    let q = RunListQuery {
        status: Some(RunStatus::Running),
        ..Default::default()
    };
    let listed = ok(
        s.list_by_thread(Owner(&f.alice), ThreadId(&f.thread), &q)
            .await,
        "list running",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(
        ok(
            s.next_pending_for_thread(Owner(&f.alice), ThreadId(&f.thread))
                .await,
            "next"
        )
        .expect("r2")
        .run_id,
        f.r2.run_id
    );
    f.delete(s).await;
}

/// One running run per thread, enforced by the store; a newer running run is preferred over
/// older pending ones.
pub async fn run_one_running_run_per_thread(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    let (r1, r3, pending) = (&f.r1.run_id, &f.r3.run_id, [RunStatus::Pending]);
    ok(
        s.transition(RunId(r1), &pending, RunStatus::Running, None)
            .await,
        "claim",
    );
    assert!(
        is_conflict(s.update_status(RunId(r3), RunStatus::Running, None).await),
        "a second running run on a thread is refused"
    );
    assert!(ok(
        s.update_status(RunId(r1), RunStatus::Success, None).await,
        "r1 success"
    ));
    assert!(ok(
        s.update_status(RunId(r3), RunStatus::Running, None).await,
        "r3 running"
    ));
    let active = ok(
        s.active_for_thread(Owner(&f.alice), ThreadId(&f.thread))
            .await,
        "active",
    )
    .expect("r3 running");
    assert_eq!(active.run_id, *r3);
    assert!(!ok(
        s.update_status(RunId("missing"), RunStatus::Error, None)
            .await,
        "update missing"
    ));
    f.delete(s).await;
}

/// Of concurrent claims, exactly one caller moves a pending run to running.
pub async fn run_concurrent_claims_one_wins(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    let contested = f.run(6, &f.other_thread, &f.alice);
    ok(s.put(&contested).await, "put contested");
    let mut claims = Vec::new();
    for _ in 0..8 {
        let runs = stores.runs.clone();
        let id = contested.run_id.clone();
        claims.push(tokio::spawn(async move {
            runs.transition(RunId(&id), &[RunStatus::Pending], RunStatus::Running, None)
                .await
        }));
    }
    let mut won = 0;
    for c in claims {
        match c.await {
            Ok(r) => won += usize::from(ok(r, "concurrent claim")),
            Err(e) => panic!("claim task failed: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one concurrent claim succeeds");
    ok(
        s.delete(Owner(&f.alice), RunId(&contested.run_id)).await,
        "delete contested",
    );
    f.delete(s).await;
}

/// The scans of every owner's pending runs (optionally created before a time) and of the
/// in-flight ones, oldest first.
pub async fn run_pending_and_inflight_scans(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    f.r3_running(s).await;
    let mine = |runs: Vec<Run>| -> Vec<String> {
        runs.into_iter()
            .filter(|r| r.run_id.ends_with(&f.x))
            .map(|r| r.run_id)
            .collect()
    };
    let pending = ok(s.list_pending(None).await, "pending");
    assert_eq!(
        mine(pending),
        vec![
            f.r2.run_id.clone(),
            f.r4.run_id.clone(),
            f.rb.run_id.clone()
        ]
    );
    let pending = ok(s.list_pending(Some(at(f.base, 3))).await, "pending before");
    assert_eq!(mine(pending), vec![f.r2.run_id.clone()]);
    let inflight = ok(s.list_inflight(None).await, "inflight");
    assert_eq!(
        mine(inflight),
        vec![
            f.r2.run_id.clone(),
            f.r3.run_id.clone(),
            f.r4.run_id.clone(),
            f.rb.run_id.clone()
        ]
    );
    f.delete(s).await;
}

/// A terminal status sets `finished_at` and the error.
pub async fn run_terminal_status_sets_finished_at(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    assert!(ok(
        s.update_status(RunId(&f.r2.run_id), RunStatus::Error, Some("boom"))
            .await,
        "r2 error"
    ));
    let r2g = ok(s.get(Owner(&f.alice), RunId(&f.r2.run_id)).await, "get r2").expect("r2");
    assert_eq!(r2g.status, RunStatus::Error);
    assert_eq!(r2g.error.as_deref(), Some("boom"));
    assert!(r2g.finished_at.is_some());
    f.delete(s).await;
}

/// The model name and progress of a running run; progress never changes its status, and on
/// a missing run it is a no-op.
pub async fn run_model_name_and_progress(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    f.r3_running(s).await;
    let r3 = &f.r3.run_id;
    assert!(ok(
        s.update_model_name(RunId(r3), Some("model-b")).await,
        "model"
    ));
    assert!(!ok(
        s.update_model_name(RunId("missing"), Some("m")).await,
        "model missing"
    ));
    let progress = RunProgress {
        total_tokens: Some(7),
        llm_call_count: Some(1),
        last_ai_message: Some("partial".into()),
        ..Default::default()
    };
    ok(s.update_progress(RunId(r3), &progress).await, "progress");
    ok(
        s.update_progress(RunId("missing"), &RunProgress::default())
            .await,
        "progress on a missing run is a no-op",
    );
    let r3g = ok(s.get(Owner(&f.alice), RunId(r3)).await, "get r3").expect("r3");
    assert_eq!(
        r3g.status,
        RunStatus::Running,
        "progress never changes status"
    );
    assert_eq!((r3g.total_tokens, r3g.llm_call_count), (7, 1));
    assert_eq!(r3g.last_ai_message.as_deref(), Some("partial"));
    assert_eq!(r3g.model_name.as_deref(), Some("model-b"));
    f.delete(s).await;
}

/// `update_completion` stores the totals and the status when given; without one the status
/// is kept.
pub async fn run_completion(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    f.r3_running(s).await;
    let r3 = &f.r3.run_id;
    assert!(ok(
        s.update_completion(RunId(r3), &done()).await,
        "completion"
    ));
    assert!(!ok(
        s.update_completion(RunId("missing"), &done()).await,
        "completion missing"
    ));
    let r3g = ok(s.get(Owner(&f.alice), RunId(r3)).await, "get r3").expect("r3");
    assert_eq!(r3g.status, RunStatus::Success);
    let totals = (r3g.total_input_tokens, r3g.total_output_tokens);
    assert_eq!(
        (totals.0, totals.1, r3g.total_tokens, r3g.llm_call_count),
        (10, 5, 15, 2)
    );
    let callers = (
        r3g.lead_agent_tokens,
        r3g.subagent_tokens,
        r3g.middleware_tokens,
    );
    assert_eq!(
        (callers.0, callers.1, callers.2, r3g.message_count),
        (9, 4, 2, 3)
    );
    assert_eq!(r3g.last_ai_message.as_deref(), Some("bye"));
    assert_eq!(r3g.first_human_message.as_deref(), Some("hi"));
    assert!(r3g.finished_at.is_some());
    assert!(ok(
        s.update_completion(RunId(&f.r1.run_id), &r1_done()).await,
        "r1 completion"
    ));
    assert_eq!(
        ok(s.get(Owner(&f.alice), RunId(&f.r1.run_id)).await, "r1")
            .expect("r1")
            .status,
        RunStatus::Success,
        "status kept when None"
    );
    f.delete(s).await;
}

/// Tokens per thread: totals, per model (`unknown` without one), per caller; only finished
/// runs unless asked, the owner's only.
pub async fn run_token_aggregation(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    // r1 (gpt-x, 100, success), r2 (error, 0 tokens, unknown), r3 (model-b, 15)
    f.r3_running(s).await;
    let (r1, r2, r3) = (&f.r1.run_id, &f.r2.run_id, &f.r3.run_id);
    ok(
        s.update_status(RunId(r2), RunStatus::Error, Some("boom"))
            .await,
        "r2 error",
    );
    ok(
        s.update_model_name(RunId(r3), Some("model-b")).await,
        "model",
    );
    ok(
        s.update_completion(RunId(r3), &done()).await,
        "r3 completion",
    );
    ok(
        s.update_completion(RunId(r1), &r1_done()).await,
        "r1 completion",
    );
    let agg = ok(
        s.aggregate_tokens_by_thread(Owner(&f.alice), ThreadId(&f.thread), false)
            .await,
        "aggregate",
    );
    assert_eq!(agg.total_runs, 3);
    assert_eq!(agg.total_tokens, 115);
    assert_eq!(agg.total_input_tokens, 70);
    assert_eq!(agg.total_output_tokens, 45);
    let model = |tokens, runs| ModelTokens { tokens, runs };
    assert_eq!(agg.by_model.get("gpt-x"), Some(&model(100, 1)));
    assert_eq!(agg.by_model.get("model-b"), Some(&model(15, 1)));
    assert_eq!(agg.by_model.get("unknown"), Some(&model(0, 1)));
    let callers = CallerTokens {
        lead_agent: 109,
        subagent: 4,
        middleware: 2,
    };
    assert_eq!(agg.by_caller, callers);
    let bob = |active| s.aggregate_tokens_by_thread(Owner(&f.bob), ThreadId(&f.thread), active);
    assert_eq!(ok(bob(false).await, "bob agg").total_runs, 0);
    assert_eq!(ok(bob(true).await, "bob agg active").total_runs, 1);
    let empty = ok(
        s.aggregate_tokens_by_thread(Owner(&f.alice), ThreadId("no-thread"), true)
            .await,
        "empty agg",
    );
    assert_eq!(empty, TokenAggregate::default());
    f.delete(s).await;
}

/// Delete: the owner's run only; by thread, the owner's runs of that thread only.
pub async fn run_delete(stores: &Stores) {
    let s = stores.runs.as_ref();
    let f = Runs::put(s).await;
    let r1 = &f.r1.run_id;
    assert!(is_not_found(s.delete(Owner(&f.bob), RunId(r1)).await));
    ok(s.delete(Owner(&f.alice), RunId(r1)).await, "delete");
    assert!(ok(s.get(Owner(&f.alice), RunId(r1)).await, "deleted").is_none());
    assert!(is_not_found(s.delete(Owner(&f.alice), RunId(r1)).await));
    let by_thread = |owner, thread| s.delete_by_thread(owner, thread);
    assert_eq!(
        ok(
            by_thread(Owner(&f.alice), ThreadId(&f.thread)).await,
            "delete by thread"
        ),
        2
    );
    let bobs = RunListQuery::default();
    assert_eq!(
        ok(
            s.list_by_thread(Owner(&f.bob), ThreadId(&f.thread), &bobs)
                .await,
            "bob kept"
        )
        .len(),
        1
    );
    assert_eq!(
        ok(
            by_thread(Owner(&f.alice), ThreadId(&f.other_thread)).await,
            "delete other"
        ),
        1
    );
    assert_eq!(
        ok(
            by_thread(Owner(&f.bob), ThreadId(&f.thread)).await,
            "delete bob"
        ),
        1
    );
}
