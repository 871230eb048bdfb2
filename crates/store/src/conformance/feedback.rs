//! FeedbackStore contract: create/conflict, get and list per owner, delete, upsert.

use serde_json::{Value, json};

use super::{at, base_time, is_conflict, is_not_found, names, obj, ok};
use crate::records::*;
use crate::traits::*;
use crate::{Owner, RunId, Stores, ThreadId};

/// Feedback `fb{i}-x` on run `run-x` of thread `thread-x`, created at `base + i`.
fn fb(x: &str, i: i64, rating: i64) -> Feedback {
    Feedback {
        feedback_id: format!("fb{i}-{x}"),
        run_id: format!("run-{x}"),
        thread_id: format!("thread-{x}"),
        owner: String::new(),
        message_id: Some("m1".into()),
        rating,
        comment: Some(format!("c{i}")),
        metadata: obj(json!({"i": i})),
        created_at: at(base_time(), i),
    }
}

/// Alice's fb1 (+1) and fb2 (-1) and bob's fb3 (+1), on the same run.
async fn three(s: &dyn FeedbackStore) -> (String, String, String, [Feedback; 3]) {
    let (alice, bob, x) = names();
    let f1 = ok(s.create(Owner(&alice), fb(&x, 1, 1)).await, "create");
    assert_eq!(f1.owner, alice);
    let f2 = ok(s.create(Owner(&alice), fb(&x, 2, -1)).await, "create 2");
    let f3 = ok(s.create(Owner(&bob), fb(&x, 3, 1)).await, "create bob");
    (alice, bob, x, [f1, f2, f3])
}

/// Feedback ids are unique; feedback is its owner's, listed per run in creation order.
pub async fn feedback_create_get_list(stores: &Stores) {
    let s = stores.feedback.as_ref();
    let (alice, bob, x, [f1, f2, fb]) = three(s).await;
    assert!(is_conflict(
        s.create(Owner(&alice), self::fb(&x, 1, 1)).await
    ));
    assert_eq!(
        ok(s.get(Owner(&alice), &f1.feedback_id).await, "get").expect("f1"),
        f1
    );
    assert!(ok(s.get(Owner(&bob), &f1.feedback_id).await, "get other").is_none());
    let wire = serde_json::to_value(&f1).unwrap_or(Value::Null);
    assert_eq!(wire["user_id"], json!(alice));
    let (thread, run) = (&f1.thread_id, &f1.run_id);
    let listed = ok(
        s.list_by_run(Owner(&alice), ThreadId(thread), RunId(run))
            .await,
        "list",
    );
    assert_eq!(listed, vec![f1.clone(), f2.clone()]);
    assert_eq!(
        ok(
            s.list_by_run(Owner(&bob), ThreadId(thread), RunId(run))
                .await,
            "list bob"
        ),
        vec![fb.clone()]
    );
    assert!(
        ok(
            s.list_by_run(Owner(&alice), ThreadId(thread), RunId("other-run"))
                .await,
            "other run"
        )
        .is_empty()
    );
    for (owner, f) in [(&alice, &f1), (&alice, &f2), (&bob, &fb)] {
        ok(s.delete(Owner(owner), &f.feedback_id).await, "cleanup");
    }
}

/// Delete: the owner's feedback only, once; by run, the owner's feedback of the run only.
pub async fn feedback_delete(stores: &Stores) {
    let s = stores.feedback.as_ref();
    let (alice, bob, _, [f1, f2, fb]) = three(s).await;
    assert!(is_not_found(s.delete(Owner(&bob), &f1.feedback_id).await));
    ok(s.delete(Owner(&alice), &f2.feedback_id).await, "delete");
    assert!(is_not_found(s.delete(Owner(&alice), &f2.feedback_id).await));
    let (thread, run) = (&f1.thread_id, &f1.run_id);
    assert_eq!(
        ok(
            s.delete_by_run(Owner(&alice), ThreadId(thread), RunId(run))
                .await,
            "delete by run"
        ),
        1
    );
    assert_eq!(
        ok(
            s.list_by_run(Owner(&bob), ThreadId(thread), RunId(run))
                .await,
            "bob kept"
        )
        .len(),
        1
    );
    ok(s.delete(Owner(&bob), &fb.feedback_id).await, "cleanup bob");
}

/// Upsert keeps one row per (thread, run, owner) and its id; on another run it inserts.
pub async fn feedback_upsert(stores: &Stores) {
    let s = stores.feedback.as_ref();
    let (alice, bob, x, [f1, f2, fb]) = three(s).await;
    ok(s.delete(Owner(&alice), &f2.feedback_id).await, "one left");
    let mut u = self::fb(&x, 4, -1);
    u.comment = Some("changed".into());
    let up = ok(s.upsert(Owner(&alice), u).await, "upsert");
    assert_eq!(up.feedback_id, f1.feedback_id);
    let listed = ok(
        s.list_by_run(Owner(&alice), ThreadId(&f1.thread_id), RunId(&f1.run_id))
            .await,
        "list after upsert",
    );
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].rating, -1);
    assert_eq!(listed[0].comment.as_deref(), Some("changed"));
    let mut other = self::fb(&x, 5, 1);
    other.run_id = format!("run2-{x}");
    let inserted = ok(
        s.upsert(Owner(&alice), other.clone()).await,
        "upsert insert",
    );
    assert_eq!(inserted.feedback_id, other.feedback_id);
    for f in [&f1, &other] {
        let deleted = s
            .delete_by_run(Owner(&alice), ThreadId(&f.thread_id), RunId(&f.run_id))
            .await;
        assert_eq!(ok(deleted, "cleanup"), 1);
    }
    ok(s.delete(Owner(&bob), &fb.feedback_id).await, "cleanup bob");
}
