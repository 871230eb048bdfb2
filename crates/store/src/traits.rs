//! The repository traits (one per aggregate) and their query/patch types.
//!
//! Every method that reads or writes user data takes the caller's [`Owner`] and filters by it:
//! a row of another owner behaves exactly like a missing row (`None` /
//! [`StoreError::NotFound`]).
//! Methods used only by the runtime on rows it already owns (run status transitions, queue
//! queries, recovery scans) are keyed by id alone. Owners, thread ids and run ids are each their
//! own type ([`crate::ids`]): crossed arguments do not compile.
//!
//! Filters (`metadata`, `values`, item `filter`) are top-level containment: every key of the
//! filter must be present with an equal value, where equality is [`crate::util::json_eq`]
//! (numbers by value, objects regardless of key order, arrays element-wise).
//!
//! [`StoreError::NotFound`]: crate::StoreError::NotFound

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::StoreResult;
use crate::ids::{Owner, RunId, ThreadId};
use crate::records::*;

/// Default page size of searches (LangGraph's default).
pub const DEFAULT_LIMIT: usize = 10;

// ------------------------------------------------------------------------ assistants

/// Changes applied by [`AssistantStore::update`]; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssistantPatch {
    pub graph_id: Option<String>,
    /// Replaces the config.
    pub config: Option<Value>,
    /// Replaces the context.
    pub context: Option<Value>,
    /// Merged into the current metadata (top-level keys).
    pub metadata: Option<Map<String, Value>>,
    pub name: Option<String>,
    pub description: Option<String>,
}

string_enum!(
    /// Sort keys of [`AssistantStore::search`]; the spelling is also the column's name.
    #[derive(Default)]
    AssistantSortBy ("sort_by", expected "assistant_id, graph_id, name, created_at or updated_at") {
        AssistantId => "assistant_id",
        GraphId => "graph_id",
        Name => "name",
        #[default]
        CreatedAt => "created_at",
        UpdatedAt => "updated_at",
    }
);

/// Filters and paging of [`AssistantStore::search`] / [`AssistantStore::count`].
#[derive(Debug, Clone, PartialEq)]
pub struct AssistantSearch {
    pub graph_id: Option<String>,
    /// Case-insensitive substring of the name.
    pub name: Option<String>,
    /// Every top-level key must be equal in the assistant's metadata.
    pub metadata: Map<String, Value>,
    pub limit: usize,
    pub offset: usize,
    pub sort_by: AssistantSortBy,
    pub sort_order: SortOrder,
}

impl Default for AssistantSearch {
    fn default() -> Self {
        AssistantSearch {
            graph_id: None,
            name: None,
            metadata: Map::new(),
            limit: DEFAULT_LIMIT,
            offset: 0,
            sort_by: AssistantSortBy::CreatedAt,
            sort_order: SortOrder::Desc,
        }
    }
}

/// Filters and paging of [`AssistantStore::versions`] (newest version first).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionQuery {
    pub metadata: Map<String, Value>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for VersionQuery {
    fn default() -> Self {
        VersionQuery {
            metadata: Map::new(),
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// Assistants and their versions.
///
/// Visibility: an owner sees its own assistants and the [`SYSTEM_OWNER`]'s (one per graph).
/// Writes (update, delete, set_latest) need the exact owner, so a user cannot change a system
/// assistant; pass [`SYSTEM_OWNER`] to manage those.
#[async_trait::async_trait]
pub trait AssistantStore: Send + Sync {
    /// Inserts version 1 (or `assistant.version`) owned by `owner`. Conflict if the id exists
    /// (for any owner); `if_exists: do_nothing` is the caller's business.
    async fn create(&self, owner: Owner<'_>, assistant: Assistant) -> StoreResult<Assistant>;
    /// The current version.
    async fn get(&self, owner: Owner<'_>, assistant_id: &str) -> StoreResult<Option<Assistant>>;
    /// Writes a new version (max version + 1) and makes it current; returns it.
    async fn update(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        patch: AssistantPatch,
    ) -> StoreResult<Assistant>;
    /// Deletes the assistant and all its versions.
    async fn delete(&self, owner: Owner<'_>, assistant_id: &str) -> StoreResult<()>;
    /// One page, plus the total number of matches.
    async fn search(
        &self,
        owner: Owner<'_>,
        query: &AssistantSearch,
    ) -> StoreResult<(Vec<Assistant>, u64)>;
    /// Number of matches (limit/offset/sort ignored).
    async fn count(&self, owner: Owner<'_>, query: &AssistantSearch) -> StoreResult<u64>;
    /// Versions, newest first.
    async fn versions(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        query: &VersionQuery,
    ) -> StoreResult<Vec<AssistantVersion>>;
    /// Makes an existing version current again (updated_at = now); returns the assistant.
    async fn set_latest(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        version: i64,
    ) -> StoreResult<Assistant>;
}

// ------------------------------------------------------------------------ threads

string_enum!(
    /// Sort keys of [`ThreadStore::search`]; the spelling is also the column's name.
    #[derive(Default)]
    ThreadSortBy ("sort_by", expected "thread_id, status, created_at, updated_at or state_updated_at") {
        ThreadId => "thread_id",
        Status => "status",
        #[default]
        CreatedAt => "created_at",
        UpdatedAt => "updated_at",
        StateUpdatedAt => "state_updated_at",
    }
);

/// Filters and paging of [`ThreadStore::search`] / [`ThreadStore::count`].
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadSearch {
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Every top-level key must be equal in the thread's metadata.
    pub metadata: Map<String, Value>,
    /// Every top-level key must be equal in the thread's values.
    pub values: Map<String, Value>,
    pub status: Option<ThreadStatus>,
    pub sort_by: ThreadSortBy,
    pub sort_order: SortOrder,
    pub limit: usize,
    pub offset: usize,
}

impl Default for ThreadSearch {
    fn default() -> Self {
        ThreadSearch {
            ids: None,
            metadata: Map::new(),
            values: Map::new(),
            status: None,
            sort_by: ThreadSortBy::CreatedAt,
            sort_order: SortOrder::Desc,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// State changes applied by [`ThreadStore::update`]; `None` keeps the current value.
///
/// For `values`, `error`, `interrupts`: `Some(None)` removes the key from the wire shape,
/// `Some(Some(v))` sets it (`v` may be `null`). Changing `values` or `interrupts` also moves
/// `state_updated_at`; every update moves `updated_at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadUpdate {
    pub status: Option<ThreadStatus>,
    pub values: Option<Option<Value>>,
    pub error: Option<Option<Value>>,
    pub interrupts: Option<Option<Value>>,
    pub config: Option<Value>,
    /// Merged into the current metadata (top-level keys).
    pub metadata: Option<Map<String, Value>>,
}

impl ThreadUpdate {
    /// Applies the changes to `t` at `now` (the one definition every store uses).
    pub fn apply(self, t: &mut Thread, now: DateTime<Utc>) {
        let mut state_changed = false;
        if let Some(s) = self.status {
            t.status = s;
        }
        if let Some(v) = self.values {
            t.values = v;
            state_changed = true;
        }
        if let Some(e) = self.error {
            t.error = e;
        }
        if let Some(i) = self.interrupts {
            t.interrupts = i;
            state_changed = true;
        }
        if let Some(c) = self.config {
            t.config = c;
        }
        if let Some(m) = self.metadata {
            crate::util::merge_metadata(&mut t.metadata, m);
        }
        t.updated_at = now;
        if state_changed {
            t.state_updated_at = now;
        }
    }
}

/// Threads.
#[async_trait::async_trait]
pub trait ThreadStore: Send + Sync {
    /// Inserts the thread owned by `owner`. Conflict if `owner` already has a thread of that
    /// id. Thread ids are per owner: another owner's thread of the same id is another thread,
    /// and nothing of it shows through this owner's calls.
    async fn create(&self, owner: Owner<'_>, thread: Thread) -> StoreResult<Thread>;
    async fn get(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<Option<Thread>>;
    /// Merges `metadata` into the thread's metadata (PATCH /threads/{id}); returns the thread.
    async fn patch_metadata(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        metadata: Map<String, Value>,
    ) -> StoreResult<Thread>;
    /// Applies state changes (status, values, error, interrupts, config, metadata merge).
    async fn update(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        update: ThreadUpdate,
    ) -> StoreResult<Thread>;
    async fn delete(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<()>;
    async fn search(&self, owner: Owner<'_>, query: &ThreadSearch) -> StoreResult<Vec<Thread>>;
    /// Number of matches (limit/offset/sort ignored).
    async fn count(&self, owner: Owner<'_>, query: &ThreadSearch) -> StoreResult<u64>;
    /// A new thread `new_id` with the source's metadata, config, values, error and interrupts;
    /// status copied except `busy`, which becomes `idle`. Conflict if `new_id` exists.
    async fn copy(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        new_id: ThreadId<'_>,
    ) -> StoreResult<Thread>;
    /// The owners that have a thread of this id, sorted. For operations only (moving an
    /// earlier version's per-thread files under their owner at startup), never on a user's
    /// behalf.
    async fn owners_of(&self, thread_id: ThreadId<'_>) -> StoreResult<Vec<String>>;
}

// ------------------------------------------------------------------------ runs

/// Paging of [`RunStore::list_by_thread`] (newest first).
#[derive(Debug, Clone, PartialEq)]
pub struct RunListQuery {
    pub limit: usize,
    pub offset: usize,
    pub status: Option<RunStatus>,
}

impl Default for RunListQuery {
    fn default() -> Self {
        RunListQuery {
            limit: DEFAULT_LIMIT,
            offset: 0,
            status: None,
        }
    }
}

/// Answer of [`RunStore::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The run is now running, owned by the claiming worker.
    Claimed,
    /// Another run of the thread is running: try again later.
    Busy,
    /// The run is not pending any more (cancelled, deleted, claimed by someone else).
    Gone,
}

/// Runs: their rows and lifecycle writes (the seeds' RunStore contract). A run store is also
/// its database's [`RunQueue`] and [`ReplicaRegistry`] (split by concern, one object).
///
/// Status transitions set `updated_at`; the first move to `running` sets `started_at`, a
/// terminal status sets `finished_at`.
#[async_trait::async_trait]
pub trait RunStore: RunQueue + ReplicaRegistry + Send + Sync {
    /// Inserts a run (owner = `run.owner`). Conflict if the id exists.
    async fn put(&self, run: &Run) -> StoreResult<()>;
    /// [`put`](Self::put), only if no other run of the thread is active (pending or running)
    /// without a cancel request; returns whether the run was inserted. Atomic with respect to
    /// concurrent calls from any process sharing the database (the thread's row is locked for
    /// the check): multitask `reject` across replicas.
    async fn put_if_idle(&self, run: &Run) -> StoreResult<bool>;
    async fn get(&self, owner: Owner<'_>, run_id: RunId<'_>) -> StoreResult<Option<Run>>;
    /// Runs of a thread, newest first.
    async fn list_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        query: &RunListQuery,
    ) -> StoreResult<Vec<Run>>;
    /// Sets the status (and `error` when given). Returns whether a row changed.
    async fn update_status(
        &self,
        run_id: RunId<'_>,
        status: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool>;
    /// Compare-and-set: moves the run to `to` only if its status is one of `from` (e.g. the
    /// pending -> running claim). Returns whether it moved.
    async fn transition(
        &self,
        run_id: RunId<'_>,
        from: &[RunStatus],
        to: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool>;
    async fn delete(&self, owner: Owner<'_>, run_id: RunId<'_>) -> StoreResult<()>;
    /// Deletes every run of a thread; returns how many.
    async fn delete_by_thread(&self, owner: Owner<'_>, thread_id: ThreadId<'_>)
    -> StoreResult<u64>;
    async fn update_model_name(
        &self,
        run_id: RunId<'_>,
        model_name: Option<&str>,
    ) -> StoreResult<bool>;
    /// Final figures (+ status when given, + error). Returns whether a row changed.
    async fn update_completion(
        &self,
        run_id: RunId<'_>,
        completion: &RunCompletion,
    ) -> StoreResult<bool>;
    /// Best-effort snapshot while running; never changes status.
    async fn update_progress(&self, run_id: RunId<'_>, progress: &RunProgress) -> StoreResult<()>;
    /// Token usage of the thread's finished runs (success, error, interrupted, timeout), plus
    /// pending/running ones when `include_active`. Runs without a model count as `unknown`.
    async fn aggregate_tokens_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        include_active: bool,
    ) -> StoreResult<TokenAggregate>;
    /// The oldest active run of `owner`'s thread (running preferred over pending).
    async fn active_for_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<Option<Run>>;
}

/// The run queue across processes: claims, leases, adoption of dead processes' runs and
/// cancel requests (every [`RunStore`] is one).
#[async_trait::async_trait]
pub trait RunQueue: Send + Sync {
    /// Pending runs created before `before` (all when None), oldest first.
    async fn list_pending(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>>;
    /// Pending or running runs created before `before` (all when None), oldest first.
    async fn list_inflight(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>>;
    /// Claims a pending run for execution: pending -> running, owned by `worker_id` until
    /// `lease_until` (sets `started_at`). At most one run of a thread is running at a time,
    /// across processes: the database enforces it (a unique index on running runs), so a
    /// claim while another run of the thread is running answers [`Claim::Busy`]. Runs of a
    /// thread start in creation order: while an older run of the thread is still pending the
    /// claim is [`Claim::Busy`] too.
    async fn claim(
        &self,
        run_id: RunId<'_>,
        worker_id: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim>;
    /// Extends the lease of every pending or running run owned by `worker_id` to
    /// `lease_until` (the process heartbeat); returns how many runs it holds.
    async fn renew_leases(&self, worker_id: &str, lease_until: DateTime<Utc>) -> StoreResult<u64>;
    /// Pending or running runs whose lease expired before `now` (or that have no lease),
    /// oldest first, at most `limit`. Queued runs (pending, no `worker_id`) are not abandoned:
    /// they wait for [`claim_next`](Self::claim_next) and are never listed.
    async fn list_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Run>>;
    /// Takes over an abandoned run: it becomes `worker_id`'s until `lease_until`, only if it
    /// is still pending or running and its lease is still expired at `now` (compare-and-set:
    /// of several processes adopting the same run, exactly one wins). Status is unchanged.
    async fn adopt(
        &self,
        run_id: RunId<'_>,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The durable run queue: claims up to `limit` queued runs (pending, no `worker_id`) for
    /// `worker_id` until `lease_until`, moving them to `running` (as [`claim`](Self::claim)).
    /// A queued run's `lease_expires_at`, when set, is the time it may start (`after_seconds`):
    /// it is not claimed before (and later runs of its thread wait behind it).
    /// Oldest first, and only a run whose thread has no running run and no older pending run
    /// (one run per thread, in creation order). Concurrent callers never claim the same run
    /// (PostgreSQL / MySQL: `FOR UPDATE SKIP LOCKED`). Returns the claimed runs as stored.
    async fn claim_next(
        &self,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Run>>;
    /// Number of pending runs (the queue depth reported by `/info`).
    async fn count_pending(&self) -> StoreResult<u64>;
    /// Records a cancel asked for on a replica that does not execute the run; the first
    /// request wins. Only pending or running runs;
    /// returns whether the run is active (the request, or an earlier one, is recorded).
    async fn request_cancel(&self, run_id: RunId<'_>, action: CancelAction) -> StoreResult<bool>;
    /// Cancel requests on the active runs owned by `worker_id`: `(run_id, action)` pairs.
    /// One statement, polled by the owner about every second.
    async fn cancel_requests(&self, worker_id: &str) -> StoreResult<Vec<(String, CancelAction)>>;
    /// The oldest pending run of `owner`'s thread.
    async fn next_pending_for_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<Option<Run>>;
}

/// The registry of live replicas sharing the database (every [`RunStore`] is one).
#[async_trait::async_trait]
pub trait ReplicaRegistry: Send + Sync {
    /// Inserts or refreshes a replica of the registry (every field is overwritten except
    /// `started_at`, kept from the first insert).
    async fn heartbeat_replica(&self, replica: &ReplicaInfo) -> StoreResult<()>;
    /// Replicas whose heartbeat is not older than `since`, oldest start first.
    async fn list_replicas(&self, since: DateTime<Utc>) -> StoreResult<Vec<ReplicaInfo>>;
    /// Removes a replica from the registry (clean shutdown); also drops entries whose
    /// heartbeat is older than `stale_before`. Returns how many rows went.
    async fn remove_replica(
        &self,
        replica_id: &str,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<u64>;
}

// ------------------------------------------------------------------------ run events

/// Query of [`RunEventStore::list`], results always in ascending `seq`.
///
/// With `before_seq`: the LAST `limit` events with seq < cursor. Otherwise: the FIRST `limit`
/// events with seq > `after_seq` (0 when None). `limit: None` = no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunEventQuery {
    pub run_id: Option<String>,
    pub category: Option<String>,
    /// Only these event types (all when empty).
    pub event_types: Vec<String>,
    pub after_seq: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: Option<usize>,
}

/// Persisted run events with a per-thread sequence.
#[async_trait::async_trait]
pub trait RunEventStore: Send + Sync {
    /// Appends in order, assigning strictly increasing `seq` per thread atomically (unique
    /// `(thread_id, seq)`); returns the stored events.
    async fn append_batch(
        &self,
        owner: Owner<'_>,
        events: Vec<NewRunEvent>,
    ) -> StoreResult<Vec<RunEvent>>;
    async fn list(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        query: &RunEventQuery,
    ) -> StoreResult<Vec<RunEvent>>;
    /// Number of events of the thread (optionally of one run / category).
    async fn count(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: Option<RunId<'_>>,
        category: Option<&str>,
    ) -> StoreResult<u64>;
    /// Deletes all events of the thread; returns how many.
    async fn delete_thread(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<u64>;
    /// Deletes all events of one run; returns how many.
    async fn delete_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<u64>;
}

// ------------------------------------------------------------------------ feedback

/// Feedback on runs.
#[async_trait::async_trait]
pub trait FeedbackStore: Send + Sync {
    /// Inserts (owner = `owner`, overriding `feedback.owner`). Conflict if the id exists.
    async fn create(&self, owner: Owner<'_>, feedback: Feedback) -> StoreResult<Feedback>;
    /// Replaces the owner's feedback on (thread, run) if any (keeping its id), else inserts.
    async fn upsert(&self, owner: Owner<'_>, feedback: Feedback) -> StoreResult<Feedback>;
    async fn get(&self, owner: Owner<'_>, feedback_id: &str) -> StoreResult<Option<Feedback>>;
    /// Feedback of the owner on a run, oldest first.
    async fn list_by_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<Vec<Feedback>>;
    async fn delete(&self, owner: Owner<'_>, feedback_id: &str) -> StoreResult<()>;
    /// Deletes the owner's feedback on a run; returns how many.
    async fn delete_by_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<u64>;
}

// ------------------------------------------------------------------------ store items

/// Query of [`ItemStore::search`]: newest `updated_at` first.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemSearch {
    pub namespace_prefix: Vec<String>,
    /// Every top-level key must be equal in the item's value.
    pub filter: Map<String, Value>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for ItemSearch {
    fn default() -> Self {
        ItemSearch {
            namespace_prefix: Vec::new(),
            filter: Map::new(),
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// Query of [`ItemStore::list_namespaces`]. Labels `"*"` in prefix/suffix match any label.
/// Results are sorted, truncated to `max_depth` labels and deduplicated before paging.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceQuery {
    pub prefix: Option<Vec<String>>,
    pub suffix: Option<Vec<String>>,
    pub max_depth: Option<usize>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for NamespaceQuery {
    fn default() -> Self {
        NamespaceQuery {
            prefix: None,
            suffix: None,
            max_depth: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// The LangGraph store API (namespaced JSON documents), per owner.
///
/// Namespaces are non-empty lists of non-empty labels without `.`; values are JSON objects.
#[async_trait::async_trait]
pub trait ItemStore: Send + Sync {
    /// Creates or replaces (keeping `created_at`).
    async fn put(
        &self,
        owner: Owner<'_>,
        namespace: &[String],
        key: &str,
        value: Value,
    ) -> StoreResult<StoreItem>;
    async fn get(
        &self,
        owner: Owner<'_>,
        namespace: &[String],
        key: &str,
    ) -> StoreResult<Option<StoreItem>>;
    /// Returns whether an item was deleted (deleting a missing item is not an error).
    async fn delete(&self, owner: Owner<'_>, namespace: &[String], key: &str) -> StoreResult<bool>;
    async fn search(&self, owner: Owner<'_>, query: &ItemSearch) -> StoreResult<Vec<SearchItem>>;
    async fn list_namespaces(
        &self,
        owner: Owner<'_>,
        query: &NamespaceQuery,
    ) -> StoreResult<Vec<Vec<String>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_parse_their_column_names_and_name_the_field_on_error() {
        for k in ThreadSortBy::ALL {
            assert_eq!(k.as_str().parse::<ThreadSortBy>().ok(), Some(*k));
        }
        for k in AssistantSortBy::ALL {
            assert_eq!(k.as_str().parse::<AssistantSortBy>().ok(), Some(*k));
        }
        assert_eq!(ThreadSortBy::default(), ThreadSortBy::CreatedAt);
        match "x".parse::<AssistantSortBy>() {
            Err(crate::StoreError::InvalidArgument(m)) => assert_eq!(
                m,
                "invalid sort_by 'x' (expected assistant_id, graph_id, name, created_at or updated_at)"
            ),
            other => panic!("{other:?}"),
        }
    }
}
