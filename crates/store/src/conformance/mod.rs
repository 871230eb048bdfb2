//! The shared contract suite of the repository traits: every implementation (in-memory here,
//! SQLite / PostgreSQL / MySQL in `antler-store-sql`, ...) runs it from its own tests through
//! [`store_conformance!`](crate::store_conformance), which expands to one `#[tokio::test]` per
//! case, so a failure names the case. The checkpointer has its own suite
//! (`antler_graph::checkpointer_conformance!`).
//!
//! Every case uses fresh ids and owners, so the cases run in parallel against one database,
//! again and again, and alongside other data. The one thing shared by a whole database is the
//! durable queue (`claim_next` hands out the oldest queued run of any owner): the cases that
//! call it hold a file lock while they run ([`queue_lock`]). The cases panic (assert) on the
//! first violation.

mod assistants;
mod cancel;
mod events;
mod feedback;
mod items;
mod leases;
mod per_owner;
mod queue;
mod runs;
mod threads;

pub use assistants::*;
pub use cancel::*;
pub use events::*;
pub use feedback::*;
pub use items::*;
pub use leases::*;
pub use per_owner::*;
pub use queue::*;
pub use runs::*;
pub use threads::*;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::traits::RunStore;
use crate::{RunId, RunStatus, StoreError, StoreResult, time};

/// One `#[tokio::test]` per case of the suite, in the module where it is invoked.
///
/// `$factory` is an expression evaluated afresh in every test, a future of `Option<F>` where
/// `F: Borrow<Stores>` (the stores, or a fixture that also keeps e.g. a temp dir alive);
/// `None` skips the test (a server unreachable outside CI). Attributes before it replace the
/// default `#[tokio::test]`; a `; case, case, ...` list after it runs only those cases:
///
/// ```ignore
/// antler_store::store_conformance!(
///     #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
///     async { Some(Stores::memory()) }
/// );
/// ```
#[macro_export]
macro_rules! store_conformance {
    (@case [$($attr:tt)*] $factory:expr, $case:ident) => {
        $($attr)*
        async fn $case() {
            let Some(fixture) = $factory.await else { return };
            $crate::conformance::$case(::std::borrow::Borrow::borrow(&fixture)).await;
        }
    };
    (@cases $attrs:tt $factory:expr; $($case:ident),+ $(,)?) => {
        $($crate::store_conformance!(@case $attrs $factory, $case);)+
    };
    ($(#[$attr:meta])+ $factory:expr; $($case:ident),+ $(,)?) => {
        $crate::store_conformance!(@cases [$(#[$attr])+] $factory; $($case),+);
    };
    ($factory:expr; $($case:ident),+ $(,)?) => {
        $crate::store_conformance!(#[tokio::test] $factory; $($case),+);
    };
    ($(#[$attr:meta])+ $factory:expr) => {
        $crate::store_conformance!(@cases [$(#[$attr])+] $factory;
            // assistants
            assistant_system_is_visible_to_all_and_writable_by_none,
            assistant_create_and_get,
            assistant_ids_are_per_owner,
            assistant_update_is_a_new_version,
            assistant_versions_newest_first_filter_and_paging,
            assistant_set_latest,
            assistant_search_by_graph_sort_and_paging,
            assistant_search_by_metadata_and_name,
            assistant_delete_removes_the_versions,
            // threads
            thread_create_and_get,
            thread_ids_are_per_owner,
            thread_patch_metadata_merges,
            thread_status_update_keeps_the_state_time,
            thread_state_update,
            thread_interrupts_can_be_cleared,
            thread_search_default_order_and_count,
            thread_search_by_metadata,
            thread_search_by_metadata_keys_that_need_escaping,
            thread_metadata_numbers_read_back_exactly,
            thread_search_by_values_status_and_ids,
            thread_search_sort_and_paging,
            thread_copy,
            thread_copy_of_a_busy_thread_is_idle,
            thread_delete,
            // runs
            run_put_and_get,
            run_list_by_thread,
            run_active_and_next_pending,
            run_transition_is_compare_and_set,
            run_one_running_run_per_thread,
            run_concurrent_claims_one_wins,
            run_pending_and_inflight_scans,
            run_terminal_status_sets_finished_at,
            run_model_name_and_progress,
            run_completion,
            run_token_aggregation,
            run_delete,
            // leases
            lease_put_keeps_the_worker,
            lease_claim,
            lease_racing_claims_on_one_thread,
            lease_renew,
            lease_expiry_scan,
            lease_adopt,
            // the durable queue
            queue_claims_the_oldest_eligible_run,
            queue_claim_by_id_honours_creation_order,
            queue_racing_workers_claim_each_run_once,
            queue_not_before,
            // cancel requests, put_if_idle, replicas
            cancel_requests_first_action_wins,
            cancel_requests_end_with_the_run,
            put_if_idle_only_on_an_idle_thread,
            put_if_idle_concurrent_callers_one_inserts,
            replicas,
            // thread ids are per owner
            per_owner_run_rules,
            per_owner_queue,
            per_owner_event_sequences,
            // run events
            events_append_per_thread_seqs,
            events_concurrent_appends_never_reuse_a_seq,
            events_list_round_trip,
            events_filters,
            events_cursors,
            events_count,
            events_delete,
            // feedback
            feedback_create_get_list,
            feedback_delete,
            feedback_upsert,
            // store items
            items_put_get_replace,
            items_invalid_input,
            items_search,
            items_namespaces,
            items_delete,
        );
    };
    ($factory:expr) => {
        $crate::store_conformance!(#[tokio::test] $factory);
    };
}

fn ok<T>(r: StoreResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e:?}"),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("expected an object, got {other}"),
    }
}

fn sfx() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Distinct, increasing timestamps (the stores keep what the caller gives them).
fn at(base: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    base + chrono::Duration::seconds(secs)
}

fn base_time() -> DateTime<Utc> {
    time::now() - chrono::Duration::days(1)
}

fn is_not_found<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::NotFound))
}

fn is_conflict<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::Conflict(_)))
}

fn is_invalid<T: std::fmt::Debug>(r: StoreResult<T>) -> bool {
    matches!(r, Err(StoreError::InvalidArgument(_)))
}

/// A fresh suffix `x` and the owners `alice-x` and `bob-x`.
fn names() -> (String, String, String) {
    let x = sfx();
    (format!("alice-{x}"), format!("bob-{x}"), x)
}

/// Moves every run of `ids` to success, whatever its state (what a case leaves behind must
/// not be active or queued).
async fn finish<'a>(s: &dyn RunStore, ids: impl IntoIterator<Item = &'a String>) {
    for id in ids {
        ok(
            s.update_status(RunId(id), RunStatus::Success, None).await,
            "finish",
        );
    }
}

/// A creation time in 1971, older than every real run, so the queue hands a case's runs out
/// first; random per call, so cases sharing a database do not tie.
fn ancient_base() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(
        86_400 * 365 + (uuid::Uuid::new_v4().as_u128() % 1_000_000) as i64 * 10,
        0,
    )
    .unwrap_or_default()
}

/// Held by the cases that call `claim_next` while they run. The queue is database-wide and
/// hands out the oldest queued runs (the cases' runs are from 1971 for that): two such cases
/// at once would take each other's runs. A file lock, because nextest runs every test in a
/// process of its own; it is released when the returned file is dropped (or the process ends).
pub async fn queue_lock() -> std::fs::File {
    let path = std::env::temp_dir().join("antler-store-conformance-queue.lock");
    let locked = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await;
    match locked {
        Ok(Ok(file)) => file,
        Ok(Err(e)) => panic!("queue lock: {e}"),
        Err(e) => panic!("queue lock task: {e}"),
    }
}

/// Claims `limit` queued runs, keeping the ones this case made (suffix `x`). Other queued
/// runs could only be leftovers of an earlier, interrupted run of a queue case: their
/// timestamps are in 1971 too, so they are older than any real run; they are finished.
async fn claim_mine(s: &dyn RunStore, x: &str, worker: &str, limit: usize) -> Vec<crate::Run> {
    let later = time::now() + chrono::Duration::seconds(60);
    let got = ok(s.claim_next(worker, later, limit).await, "claim_next");
    let (mine, foreign): (Vec<_>, Vec<_>) = got.into_iter().partition(|r| r.run_id.ends_with(x));
    for r in foreign {
        assert!(
            r.created_at < DateTime::<Utc>::from_timestamp(86_400 * 731, 0).unwrap_or_default(),
            "claim_next took a run that is not the oldest queued one: {}",
            r.run_id
        );
        ok(
            s.update_status(RunId(&r.run_id), RunStatus::Success, None)
                .await,
            "finish leftover",
        );
    }
    mine
}

/// [`claim_mine`] with `limit` 1, retried (up to 20 times) until it claims a run of this case.
async fn claim_one_mine(s: &dyn RunStore, x: &str, worker: &str) -> Vec<crate::Run> {
    for _ in 0..20 {
        let got = claim_mine(s, x, worker, 1).await;
        if !got.is_empty() {
            return got;
        }
    }
    Vec::new()
}

fn run_ids(runs: &[crate::Run]) -> Vec<&str> {
    runs.iter().map(|r| r.run_id.as_str()).collect()
}
