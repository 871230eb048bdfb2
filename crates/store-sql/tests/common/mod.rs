//! The SQL suite: what every SQL backend (SQLite, PostgreSQL, MySQL) checks beyond the shared
//! conformance suites of `antler-store` and `antler-graph`: the delta-encoded checkpointer as
//! stored (blob rows), the graph engine on it, a differential test against the in-memory
//! stores, and two pools on one database behaving as two processes.
//!
//! A test file implements [`Backend`] for its database and invokes [`sql_suite!`], which
//! expands to one test per case. Every case uses fresh ids and owners and cleans up, so the
//! cases run in parallel against one shared database.

pub mod checkpoints;
pub mod pools;

use std::sync::Arc;

use antler_graph::Checkpointer;
use antler_store::Stores;

pub use checkpoints::*;
pub use pools::*;

/// The `messages` blob rows of one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blobs {
    /// Rows holding a full value (`base_id IS NULL`).
    pub full: i64,
    /// Rows holding a delta on another row.
    pub delta: i64,
    /// The deepest delta chain (0 without rows).
    pub max_depth: i64,
    /// Bytes stored (`value`).
    pub bytes: i64,
}

impl Blobs {
    pub fn rows(&self) -> i64 {
        self.full + self.delta
    }
}

/// One SQL database under test.
#[allow(async_fn_in_trait)]
pub trait Backend {
    /// The longest delta chain the backend writes.
    const MAX_DELTA_DEPTH: i64;
    /// `(workers, runs each)` of [`concurrent_run_lifecycles_never_fail`].
    const LIFECYCLES: (usize, usize);
    /// The stores on a new pool of the database, as another process opens them.
    async fn open(&self) -> Stores;
    /// The checkpointer on a new pool of the database (no cache shared with earlier ones).
    async fn checkpointer(&self) -> Arc<dyn Checkpointer>;
    /// The `messages` blobs of `thread` (a checkpointer's own thread id).
    async fn blobs(&self, thread: &str) -> Blobs;
    /// Writes `json` verbatim into `thread`'s `metadata` column, past the stores (what a
    /// hand-made SQL fix, an old version or a bug could leave).
    async fn set_raw_thread_metadata(&self, thread: &str, json: &str);
}

/// One `#[tokio::test]` per case of the SQL suite; `$factory` is a future of
/// `Option<impl Backend>` evaluated in every test (`None` skips: a server unreachable outside
/// CI).
macro_rules! sql_suite {
    ($factory:expr) => {
        crate::common::sql_suite!(@cases $factory;
            unchanged_channels_are_stored_once,
            growing_lists_are_stored_as_bounded_delta_chains,
            delta_chains_read_back_at_every_checkpoint,
            a_reloaded_long_list_still_extends_as_a_delta,
            lists_rebuilt_from_json_still_extend,
            a_fork_reusing_a_version_does_not_overwrite_the_other_branch,
            rollback_collects_the_runs_blobs_and_continues,
            rollback_keeps_the_bases_later_deltas_need,
            copies_keep_delta_chains_intact,
            removing_messages_writes_a_full_value,
            a_delta_whose_base_vanished_is_written_in_full,
            echo_runs_match_the_memory_checkpointer_and_use_deltas,
            memory_and_backend_agree_on_filters,
            concurrent_run_lifecycles_never_fail,
            two_pools_race_claims_per_thread,
            two_pools_race_claims_on_one_thread,
            two_pools_claim_the_same_run,
            a_new_run_starts_with_its_row_when_its_thread_is_free,
            a_claim_vouches_only_for_the_checkpoint_it_read,
            a_run_claimed_and_completed_in_one_batch,
            runs_created_together_are_stored_and_a_duplicate_fails_alone,
            two_pools_share_event_sequences,
            batches_spanning_two_threads_do_not_deadlock,
            units_batched_or_one_by_one_store_the_same,
            a_retried_event_append_stores_each_event_once,
            a_thread_copy_commits_whole_or_not_at_all,
            a_row_that_does_not_decode_leaves_listings_working,
            hostile_json_reads_back_as_written_or_is_refused,
            data_survives_reconnect,
        );
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(backend) = $factory.await else { return };
                crate::common::$case(&backend).await;
            }
        )+
    };
}
pub(crate) use sql_suite;

/// Every shared suite against one backend: the store and checkpointer conformance suites
/// (on `$stores` and `$checkpointer`, async fns returning `Option<_>`) and the SQL suite (on
/// `$backend`), each in a module of its own so that a failure names suite and case.
macro_rules! backend_suites {
    (stores: $stores:expr, checkpointer: $checkpointer:expr, sql: $backend:expr $(,)?) => {
        mod stores {
            antler_store::store_conformance!(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $stores
            );
        }

        mod checkpointer {
            antler_graph::checkpointer_conformance!(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $checkpointer
            );
        }

        mod sql {
            $crate::common::sql_suite!($backend);
        }
    };
}
pub(crate) use backend_suites;

pub fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
