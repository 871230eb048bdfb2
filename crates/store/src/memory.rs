//! In-memory implementations of every repository trait (tests, `--memory` mode).
//!
//! Each store keeps its rows behind one `parking_lot::RwLock`; no lock is held across an
//! `.await` (the methods do not await while holding it), so they cannot deadlock.

use crate::ids::{Owner, RunId, ThreadId};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::error::{StoreError, StoreResult};
use crate::records::*;
use crate::time;
use crate::traits::*;
use crate::util;
use antler_graph::thread_key;

fn order(ord: Ordering, sort: SortOrder) -> Ordering {
    match sort {
        SortOrder::Asc => ord,
        SortOrder::Desc => ord.reverse(),
    }
}

fn page<T>(items: Vec<T>, offset: usize, limit: usize) -> Vec<T> {
    items.into_iter().skip(offset).take(limit).collect()
}

// ------------------------------------------------------------------------ assistants

struct AssistantEntry {
    current: Assistant,
    versions: BTreeMap<i64, AssistantVersion>,
}

/// In-memory [`AssistantStore`].
#[derive(Default)]
pub struct MemoryAssistantStore {
    /// owner -> assistant id -> assistant (ids are per owner; [`SYSTEM_OWNER`]'s are seen by
    /// everyone).
    rows: RwLock<HashMap<String, HashMap<String, AssistantEntry>>>,
}

type AssistantRows = HashMap<String, HashMap<String, AssistantEntry>>;

/// The caller's own assistant of that id, else a system one.
fn visible_entry<'a>(rows: &'a AssistantRows, owner: &str, id: &str) -> Option<&'a AssistantEntry> {
    [owner, SYSTEM_OWNER]
        .into_iter()
        .find_map(|o| rows.get(o).and_then(|own| own.get(id)))
}

fn own_entry<'a>(
    rows: &'a mut AssistantRows,
    owner: &str,
    id: &str,
) -> StoreResult<&'a mut AssistantEntry> {
    rows.get_mut(owner)
        .and_then(|own| own.get_mut(id))
        .ok_or(StoreError::NotFound)
}

fn assistant_matches(a: &Assistant, q: &AssistantSearch) -> bool {
    q.graph_id.as_ref().is_none_or(|g| &a.graph_id == g)
        && q.name
            .as_ref()
            .is_none_or(|n| a.name.to_lowercase().contains(&n.to_lowercase()))
        && util::contains_top_level(&a.metadata, &q.metadata)
}

impl MemoryAssistantStore {
    fn matching(&self, owner: &str, q: &AssistantSearch) -> Vec<Assistant> {
        let rows = self.rows.read();
        let owners: &[&str] = if owner == SYSTEM_OWNER {
            &[SYSTEM_OWNER]
        } else {
            &[owner, SYSTEM_OWNER]
        };
        owners
            .iter()
            .filter_map(|o| rows.get(*o))
            .flat_map(HashMap::values)
            .filter(|e| assistant_matches(&e.current, q))
            .map(|e| e.current.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl AssistantStore for MemoryAssistantStore {
    async fn create(&self, owner: Owner<'_>, assistant: Assistant) -> StoreResult<Assistant> {
        let assistant = assistant.stored_for(owner.as_str());
        let mut rows = self.rows.write();
        // ids are per owner; the system assistants' ids (seen by everyone) are taken
        let taken = [owner, Owner(SYSTEM_OWNER)].into_iter().any(|o| {
            rows.get(o.as_str())
                .is_some_and(|own| own.contains_key(&assistant.assistant_id))
        });
        if taken {
            return Err(StoreError::Conflict(format!(
                "assistant {} already exists",
                assistant.assistant_id
            )));
        }
        let mut versions = BTreeMap::new();
        let mut v = assistant.to_version();
        v.created_at = assistant.created_at;
        versions.insert(assistant.version, v);
        rows.entry(owner.to_string()).or_default().insert(
            assistant.assistant_id.clone(),
            AssistantEntry {
                current: assistant.clone(),
                versions,
            },
        );
        Ok(assistant)
    }

    async fn get(&self, owner: Owner<'_>, assistant_id: &str) -> StoreResult<Option<Assistant>> {
        Ok(
            visible_entry(&self.rows.read(), owner.as_str(), assistant_id)
                .map(|e| e.current.clone()),
        )
    }

    async fn update(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        patch: AssistantPatch,
    ) -> StoreResult<Assistant> {
        let mut rows = self.rows.write();
        let entry = own_entry(&mut rows, owner.as_str(), assistant_id)?;
        let mut next = entry.current.clone();
        if let Some(g) = patch.graph_id {
            next.graph_id = g;
        }
        if let Some(c) = patch.config {
            next.config = c;
        }
        if let Some(c) = patch.context {
            next.context = c;
        }
        if let Some(m) = patch.metadata {
            util::merge_metadata(&mut next.metadata, m);
        }
        if let Some(n) = patch.name {
            next.name = n;
        }
        if let Some(d) = patch.description {
            next.description = Some(d);
        }
        next.version = entry.versions.keys().next_back().copied().unwrap_or(0) + 1;
        next.updated_at = time::now();
        entry.versions.insert(next.version, next.to_version());
        entry.current = next.clone();
        Ok(next)
    }

    async fn delete(&self, owner: Owner<'_>, assistant_id: &str) -> StoreResult<()> {
        let mut rows = self.rows.write();
        let own = rows.get_mut(owner.as_str()).ok_or(StoreError::NotFound)?;
        own.remove(assistant_id).ok_or(StoreError::NotFound)?;
        if own.is_empty() {
            rows.remove(owner.as_str());
        }
        Ok(())
    }

    async fn search(
        &self,
        owner: Owner<'_>,
        q: &AssistantSearch,
    ) -> StoreResult<(Vec<Assistant>, u64)> {
        let mut all = self.matching(owner.as_str(), q);
        all.sort_by(|a, b| {
            let ord = match q.sort_by {
                AssistantSortBy::AssistantId => a.assistant_id.cmp(&b.assistant_id),
                AssistantSortBy::GraphId => a.graph_id.cmp(&b.graph_id),
                AssistantSortBy::Name => a.name.cmp(&b.name),
                AssistantSortBy::CreatedAt => a.created_at.cmp(&b.created_at),
                AssistantSortBy::UpdatedAt => a.updated_at.cmp(&b.updated_at),
            }
            .then_with(|| a.assistant_id.cmp(&b.assistant_id));
            order(ord, q.sort_order)
        });
        let total = all.len() as u64;
        Ok((page(all, q.offset, q.limit), total))
    }

    async fn count(&self, owner: Owner<'_>, q: &AssistantSearch) -> StoreResult<u64> {
        Ok(self.matching(owner.as_str(), q).len() as u64)
    }

    async fn versions(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        q: &VersionQuery,
    ) -> StoreResult<Vec<AssistantVersion>> {
        let rows = self.rows.read();
        let entry =
            visible_entry(&rows, owner.as_str(), assistant_id).ok_or(StoreError::NotFound)?;
        let all: Vec<AssistantVersion> = entry
            .versions
            .values()
            .rev()
            .filter(|v| util::contains_top_level(&v.metadata, &q.metadata))
            .cloned()
            .collect();
        Ok(page(all, q.offset, q.limit))
    }

    async fn set_latest(
        &self,
        owner: Owner<'_>,
        assistant_id: &str,
        version: i64,
    ) -> StoreResult<Assistant> {
        let mut rows = self.rows.write();
        let entry = own_entry(&mut rows, owner.as_str(), assistant_id)?;
        let v = entry
            .versions
            .get(&version)
            .cloned()
            .ok_or(StoreError::NotFound)?;
        let cur = &mut entry.current;
        cur.version = v.version;
        cur.graph_id = v.graph_id;
        cur.config = v.config;
        cur.context = v.context;
        cur.metadata = v.metadata;
        cur.name = v.name;
        cur.description = v.description;
        cur.updated_at = time::now();
        Ok(cur.clone())
    }
}

// ------------------------------------------------------------------------ threads

/// In-memory [`ThreadStore`].
#[derive(Default)]
pub struct MemoryThreadStore {
    /// owner -> thread id -> thread (ids are per owner).
    rows: RwLock<HashMap<String, HashMap<String, Thread>>>,
}

fn thread_matches(t: &Thread, q: &ThreadSearch) -> bool {
    q.ids
        .as_ref()
        .is_none_or(|ids| ids.iter().any(|i| i == &t.thread_id))
        && q.status.is_none_or(|s| t.status == s)
        && util::contains_top_level(&t.metadata, &q.metadata)
        && util::value_contains_top_level(t.values.as_ref(), &q.values)
}

impl MemoryThreadStore {
    fn matching(&self, owner: &str, q: &ThreadSearch) -> Vec<Thread> {
        self.rows
            .read()
            .get(owner)
            .into_iter()
            .flat_map(HashMap::values)
            .filter(|t| thread_matches(t, q))
            .cloned()
            .collect()
    }
}

#[async_trait::async_trait]
impl ThreadStore for MemoryThreadStore {
    async fn create(&self, owner: Owner<'_>, thread: Thread) -> StoreResult<Thread> {
        let thread = thread.stored_for(owner.as_str());
        let mut rows = self.rows.write();
        let own = rows.entry(owner.to_string()).or_default();
        if own.contains_key(&thread.thread_id) {
            return Err(StoreError::Conflict(format!(
                "thread {} already exists",
                thread.thread_id
            )));
        }
        own.insert(thread.thread_id.clone(), thread.clone());
        Ok(thread)
    }

    async fn get(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<Option<Thread>> {
        Ok(self
            .rows
            .read()
            .get(owner.as_str())
            .and_then(|own| own.get(thread_id.as_str()))
            .cloned())
    }

    async fn patch_metadata(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        metadata: Map<String, Value>,
    ) -> StoreResult<Thread> {
        self.update(
            owner,
            thread_id,
            ThreadUpdate {
                metadata: Some(metadata),
                ..Default::default()
            },
        )
        .await
    }

    async fn update(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        update: ThreadUpdate,
    ) -> StoreResult<Thread> {
        let mut rows = self.rows.write();
        let t = rows
            .get_mut(owner.as_str())
            .and_then(|own| own.get_mut(thread_id.as_str()))
            .ok_or(StoreError::NotFound)?;
        update.apply(t, time::now());
        Ok(t.clone())
    }

    async fn delete(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<()> {
        let mut rows = self.rows.write();
        let own = rows.get_mut(owner.as_str()).ok_or(StoreError::NotFound)?;
        own.remove(thread_id.as_str()).ok_or(StoreError::NotFound)?;
        if own.is_empty() {
            rows.remove(owner.as_str());
        }
        Ok(())
    }

    async fn search(&self, owner: Owner<'_>, q: &ThreadSearch) -> StoreResult<Vec<Thread>> {
        let mut all = self.matching(owner.as_str(), q);
        all.sort_by(|a, b| {
            let ord = match q.sort_by {
                ThreadSortBy::ThreadId => a.thread_id.cmp(&b.thread_id),
                ThreadSortBy::Status => a.status.as_str().cmp(b.status.as_str()),
                ThreadSortBy::CreatedAt => a.created_at.cmp(&b.created_at),
                ThreadSortBy::UpdatedAt => a.updated_at.cmp(&b.updated_at),
                ThreadSortBy::StateUpdatedAt => a.state_updated_at.cmp(&b.state_updated_at),
            }
            .then_with(|| a.thread_id.cmp(&b.thread_id));
            order(ord, q.sort_order)
        });
        Ok(page(all, q.offset, q.limit))
    }

    async fn count(&self, owner: Owner<'_>, q: &ThreadSearch) -> StoreResult<u64> {
        Ok(self.matching(owner.as_str(), q).len() as u64)
    }

    async fn copy(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        new_id: ThreadId<'_>,
    ) -> StoreResult<Thread> {
        let mut rows = self.rows.write();
        let own = rows.get_mut(owner.as_str()).ok_or(StoreError::NotFound)?;
        let src = own
            .get(thread_id.as_str())
            .cloned()
            .ok_or(StoreError::NotFound)?;
        if own.contains_key(new_id.as_str()) {
            return Err(StoreError::Conflict(format!(
                "thread {new_id} already exists"
            )));
        }
        let copy = copy_of(&src, new_id.as_str(), time::now());
        own.insert(new_id.to_string(), copy.clone());
        Ok(copy)
    }

    async fn owners_of(&self, thread_id: ThreadId<'_>) -> StoreResult<Vec<String>> {
        let mut owners: Vec<String> = self
            .rows
            .read()
            .iter()
            .filter(|(_, own)| own.contains_key(thread_id.as_str()))
            .map(|(o, _)| o.clone())
            .collect();
        owners.sort();
        Ok(owners)
    }
}

/// The copy of a thread as [`ThreadStore::copy`] defines it.
pub(crate) fn copy_of(src: &Thread, new_id: &str, now: DateTime<Utc>) -> Thread {
    Thread {
        thread_id: new_id.to_string(),
        created_at: now,
        updated_at: now,
        state_updated_at: now,
        metadata: src.metadata.clone(),
        status: if src.status == ThreadStatus::Busy {
            ThreadStatus::Idle
        } else {
            src.status
        },
        config: src.config.clone(),
        values: src.values.clone(),
        error: src.error.clone(),
        interrupts: src.interrupts.clone(),
        owner: src.owner.clone(),
    }
}

// ------------------------------------------------------------------------ runs

/// Rows of [`MemoryRunStore`] with a per-thread index (queue queries stay O(runs of the thread)).
#[derive(Default)]
struct RunRows {
    by_id: HashMap<String, Run>,
    /// [`thread_key`]`(owner, thread_id)` -> run ids (thread ids are per owner).
    by_thread: HashMap<String, std::collections::BTreeSet<String>>,
}

impl RunRows {
    fn remove(&mut self, run_id: &str) -> Option<Run> {
        let run = self.by_id.remove(run_id)?;
        let key = thread_key(&run.owner, &run.thread_id);
        if let Some(ids) = self.by_thread.get_mut(&key) {
            ids.remove(run_id);
            if ids.is_empty() {
                self.by_thread.remove(&key);
            }
        }
        Some(run)
    }

    /// Whether a run of `run`'s thread other than `run` is running (the SQL backends' unique
    /// index on running runs).
    fn other_running(&self, run: &Run) -> bool {
        self.of_thread(&run.owner, &run.thread_id)
            .any(|r| r.status == RunStatus::Running && r.run_id != run.run_id)
    }

    /// Whether a run of `run`'s thread created before it is pending.
    fn older_pending(&self, run: &Run) -> bool {
        self.of_thread(&run.owner, &run.thread_id).any(|r| {
            r.status == RunStatus::Pending
                && (r.created_at, r.run_id.as_str()) < (run.created_at, run.run_id.as_str())
        })
    }

    fn of_thread(&self, owner: &str, thread_id: &str) -> impl Iterator<Item = &Run> {
        self.by_thread
            .get(&thread_key(owner, thread_id))
            .into_iter()
            .flat_map(|ids| ids.iter().filter_map(|id| self.by_id.get(id)))
    }
}

/// In-memory [`RunStore`].
#[derive(Default)]
pub struct MemoryRunStore {
    rows: RwLock<RunRows>,
    /// The replica registry (one process: only ever itself).
    replicas: RwLock<HashMap<String, ReplicaInfo>>,
}

/// Whether a run is queued: pending and owned by no process (the durable queue).
fn queued(r: &Run) -> bool {
    r.status == RunStatus::Pending && r.worker_id.is_none()
}

fn running_conflict(thread_id: &str) -> StoreError {
    StoreError::Conflict(format!("thread {thread_id} already has a running run"))
}

fn oldest_first(runs: &mut [Run]) {
    runs.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.run_id.cmp(&b.run_id))
    });
}

impl MemoryRunStore {
    fn collect(&self, f: impl Fn(&Run) -> bool) -> Vec<Run> {
        let mut v: Vec<Run> = self
            .rows
            .read()
            .by_id
            .values()
            .filter(|r| f(r))
            .cloned()
            .collect();
        oldest_first(&mut v);
        v
    }

    fn collect_thread(&self, owner: &str, thread_id: &str, f: impl Fn(&Run) -> bool) -> Vec<Run> {
        let mut v: Vec<Run> = self
            .rows
            .read()
            .of_thread(owner, thread_id)
            .filter(|r| f(r))
            .cloned()
            .collect();
        oldest_first(&mut v);
        v
    }

    fn insert_locked(rows: &mut RunRows, run: &Run) -> StoreResult<()> {
        if rows.by_id.contains_key(&run.run_id) {
            return Err(StoreError::Conflict(format!(
                "run {} already exists",
                run.run_id
            )));
        }
        if run.status == RunStatus::Running && rows.other_running(run) {
            return Err(running_conflict(&run.thread_id));
        }
        let run = run.as_stored();
        rows.by_thread
            .entry(thread_key(&run.owner, &run.thread_id))
            .or_default()
            .insert(run.run_id.clone());
        rows.by_id.insert(run.run_id.clone(), run);
        Ok(())
    }

    fn modify(&self, run_id: &str, f: impl FnOnce(&mut Run) -> bool) -> bool {
        self.rows.write().by_id.get_mut(run_id).is_some_and(f)
    }
}

#[async_trait::async_trait]
impl RunStore for MemoryRunStore {
    async fn put(&self, run: &Run) -> StoreResult<()> {
        let mut rows = self.rows.write();
        Self::insert_locked(&mut rows, run)
    }
    async fn put_if_idle(&self, run: &Run) -> StoreResult<bool> {
        let mut rows = self.rows.write();
        let busy = rows.of_thread(&run.owner, &run.thread_id).any(|r| {
            r.run_id != run.run_id && r.status.is_active() && r.cancel_requested.is_none()
        });
        if busy {
            return Ok(false);
        }
        Self::insert_locked(&mut rows, run).map(|()| true)
    }
    async fn get(&self, owner: Owner<'_>, run_id: RunId<'_>) -> StoreResult<Option<Run>> {
        Ok(self
            .rows
            .read()
            .by_id
            .get(run_id.as_str())
            .filter(|r| r.owner == owner)
            .cloned())
    }
    async fn list_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        q: &RunListQuery,
    ) -> StoreResult<Vec<Run>> {
        let mut v = self.collect_thread(owner.as_str(), thread_id.as_str(), |r| {
            q.status.is_none_or(|s| r.status == s)
        });
        v.reverse();
        Ok(page(v, q.offset, q.limit))
    }
    async fn update_status(
        &self,
        run_id: RunId<'_>,
        status: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        self.transition(run_id, RunStatus::ALL, status, error).await
    }
    async fn transition(
        &self,
        run_id: RunId<'_>,
        from: &[RunStatus],
        to: RunStatus,
        error: Option<&str>,
    ) -> StoreResult<bool> {
        let mut rows = self.rows.write();
        let Some(run) = rows.by_id.get(run_id.as_str()) else {
            return Ok(false);
        };
        if to == RunStatus::Running && rows.other_running(run) {
            return Err(running_conflict(&run.thread_id));
        }
        Ok(rows.by_id.get_mut(run_id.as_str()).is_some_and(|r| {
            if from.contains(&r.status) {
                util::apply_status(r, to, error, time::now());
                true
            } else {
                false
            }
        }))
    }
    async fn delete(&self, owner: Owner<'_>, run_id: RunId<'_>) -> StoreResult<()> {
        let mut rows = self.rows.write();
        match rows.by_id.get(run_id.as_str()) {
            Some(r) if r.owner == owner => {
                rows.remove(run_id.as_str());
                Ok(())
            }
            _ => Err(StoreError::NotFound),
        }
    }
    async fn delete_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<u64> {
        let mut rows = self.rows.write();
        let doomed: Vec<String> = rows
            .of_thread(owner.as_str(), thread_id.as_str())
            .map(|r| r.run_id.clone())
            .collect();
        for id in &doomed {
            rows.remove(id);
        }
        Ok(doomed.len() as u64)
    }
    async fn update_model_name(
        &self,
        run_id: RunId<'_>,
        model_name: Option<&str>,
    ) -> StoreResult<bool> {
        Ok(self.modify(run_id.as_str(), |r| {
            r.model_name = model_name.map(str::to_string);
            r.updated_at = time::now();
            true
        }))
    }
    async fn update_completion(
        &self,
        run_id: RunId<'_>,
        completion: &RunCompletion,
    ) -> StoreResult<bool> {
        Ok(self.modify(run_id.as_str(), |r| {
            util::apply_completion(r, completion, time::now());
            true
        }))
    }
    async fn update_progress(&self, run_id: RunId<'_>, progress: &RunProgress) -> StoreResult<()> {
        self.modify(run_id.as_str(), |r| {
            util::apply_progress(r, progress, time::now());
            true
        });
        Ok(())
    }
    async fn aggregate_tokens_by_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        include_active: bool,
    ) -> StoreResult<TokenAggregate> {
        let runs = self.collect_thread(owner.as_str(), thread_id.as_str(), |r| {
            util::counts_for_tokens(r.status, include_active)
        });
        Ok(util::aggregate(&runs))
    }
    async fn active_for_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<Option<Run>> {
        let runs =
            self.collect_thread(owner.as_str(), thread_id.as_str(), |r| r.status.is_active());
        Ok(runs
            .iter()
            .find(|r| r.status == RunStatus::Running)
            .or_else(|| runs.first())
            .cloned())
    }
}

#[async_trait::async_trait]
impl RunQueue for MemoryRunStore {
    async fn list_pending(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>> {
        Ok(self
            .collect(|r| r.status == RunStatus::Pending && before.is_none_or(|b| r.created_at < b)))
    }
    async fn list_inflight(&self, before: Option<DateTime<Utc>>) -> StoreResult<Vec<Run>> {
        Ok(self.collect(|r| r.status.is_active() && before.is_none_or(|b| r.created_at < b)))
    }
    async fn claim(
        &self,
        run_id: RunId<'_>,
        worker_id: &str,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim> {
        let mut rows = self.rows.write();
        let Some(run) = rows.by_id.get(run_id.as_str()) else {
            return Ok(Claim::Gone);
        };
        if run.status != RunStatus::Pending {
            return Ok(Claim::Gone);
        }
        if rows.other_running(run) || rows.older_pending(run) {
            return Ok(Claim::Busy);
        }
        if let Some(r) = rows.by_id.get_mut(run_id.as_str()) {
            util::apply_status(r, RunStatus::Running, None, time::now());
            r.worker_id = Some(worker_id.to_string());
            r.lease_expires_at = Some(time::truncate(lease_until));
        }
        Ok(Claim::Claimed)
    }
    async fn renew_leases(&self, worker_id: &str, lease_until: DateTime<Utc>) -> StoreResult<u64> {
        let mut rows = self.rows.write();
        let until = time::truncate(lease_until);
        let mut n = 0;
        for r in rows.by_id.values_mut() {
            if r.status.is_active() && r.worker_id.as_deref() == Some(worker_id) {
                r.lease_expires_at = Some(until);
                n += 1;
            }
        }
        Ok(n)
    }
    async fn list_expired(&self, now: DateTime<Utc>, limit: usize) -> StoreResult<Vec<Run>> {
        let mut runs: Vec<Run> = self
            .rows
            .read()
            .by_id
            .values()
            .filter(|r| {
                r.status.is_active() && !queued(r) && r.lease_expires_at.is_none_or(|t| t < now)
            })
            .cloned()
            .collect();
        oldest_first(&mut runs);
        runs.truncate(limit);
        Ok(runs)
    }
    async fn adopt(
        &self,
        run_id: RunId<'_>,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<bool> {
        Ok(self.modify(run_id.as_str(), |r| {
            if r.status.is_active() && !queued(r) && r.lease_expires_at.is_none_or(|t| t < now) {
                r.worker_id = Some(worker_id.to_string());
                r.lease_expires_at = Some(time::truncate(lease_until));
                true
            } else {
                false
            }
        }))
    }
    async fn next_pending_for_thread(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
    ) -> StoreResult<Option<Run>> {
        Ok(self
            .collect_thread(owner.as_str(), thread_id.as_str(), |r| {
                r.status == RunStatus::Pending
            })
            .into_iter()
            .next())
    }
    async fn claim_next(
        &self,
        worker_id: &str,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<Run>> {
        let now = time::now();
        let mut rows = self.rows.write();
        // Candidates: the oldest pending run of each thread, if queued, due and the thread is
        // idle.
        let mut candidates: Vec<(DateTime<Utc>, String)> = Vec::new();
        for ids in rows.by_thread.values() {
            let mut oldest: Option<&Run> = None;
            let mut running = false;
            for r in ids.iter().filter_map(|id| rows.by_id.get(id)) {
                match r.status {
                    RunStatus::Running => running = true,
                    RunStatus::Pending
                        if oldest.is_none_or(|o| {
                            (r.created_at, &r.run_id) < (o.created_at, &o.run_id)
                        }) =>
                    {
                        oldest = Some(r);
                    }
                    _ => {}
                }
            }
            if let Some(r) = oldest
                .filter(|r| !running && queued(r) && r.lease_expires_at.is_none_or(|t| t <= now))
            {
                candidates.push((r.created_at, r.run_id.clone()));
            }
        }
        candidates.sort();
        candidates.truncate(limit);
        let now = time::now();
        let until = time::truncate(lease_until);
        let mut out = Vec::with_capacity(candidates.len());
        for (_, id) in candidates {
            if let Some(r) = rows.by_id.get_mut(&id) {
                util::apply_status(r, RunStatus::Running, None, now);
                r.worker_id = Some(worker_id.to_string());
                r.lease_expires_at = Some(until);
                out.push(r.clone());
            }
        }
        Ok(out)
    }
    async fn count_pending(&self) -> StoreResult<u64> {
        Ok(self
            .rows
            .read()
            .by_id
            .values()
            .filter(|r| r.status == RunStatus::Pending)
            .count() as u64)
    }
    async fn request_cancel(&self, run_id: RunId<'_>, action: CancelAction) -> StoreResult<bool> {
        Ok(self.modify(run_id.as_str(), |r| {
            if !r.status.is_active() {
                return false;
            }
            if r.cancel_requested.is_none() {
                r.cancel_requested = Some(action);
            }
            true
        }))
    }
    async fn cancel_requests(&self, worker_id: &str) -> StoreResult<Vec<(String, CancelAction)>> {
        Ok(self
            .rows
            .read()
            .by_id
            .values()
            .filter(|r| r.status.is_active() && r.worker_id.as_deref() == Some(worker_id))
            .filter_map(|r| Some((r.run_id.clone(), r.cancel_requested?)))
            .collect())
    }
}

#[async_trait::async_trait]
impl ReplicaRegistry for MemoryRunStore {
    async fn heartbeat_replica(&self, replica: &ReplicaInfo) -> StoreResult<()> {
        let mut map = self.replicas.write();
        let mut rec = replica.clone();
        rec.started_at = time::truncate(rec.started_at);
        rec.heartbeat_at = time::truncate(rec.heartbeat_at);
        if let Some(old) = map.get(&rec.replica_id) {
            rec.started_at = old.started_at;
        }
        map.insert(rec.replica_id.clone(), rec);
        Ok(())
    }
    async fn list_replicas(&self, since: DateTime<Utc>) -> StoreResult<Vec<ReplicaInfo>> {
        let mut v: Vec<ReplicaInfo> = self
            .replicas
            .read()
            .values()
            .filter(|r| r.heartbeat_at >= since)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.started_at, &a.replica_id).cmp(&(b.started_at, &b.replica_id)));
        Ok(v)
    }
    async fn remove_replica(
        &self,
        replica_id: &str,
        stale_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let mut map = self.replicas.write();
        let before = map.len();
        map.retain(|id, r| id != replica_id && r.heartbeat_at >= stale_before);
        Ok((before - map.len()) as u64)
    }
}

// ------------------------------------------------------------------------ run events

/// Events of one owner's thread.
#[derive(Default)]
struct ThreadEvents {
    next_seq: i64,
    events: Vec<RunEvent>,
}

/// In-memory [`RunEventStore`].
#[derive(Default)]
pub struct MemoryRunEventStore {
    /// [`thread_key`]`(owner, thread_id)` -> events (thread ids are per owner).
    threads: RwLock<HashMap<String, ThreadEvents>>,
}

fn event_matches(e: &RunEvent, q: &RunEventQuery) -> bool {
    q.run_id.as_ref().is_none_or(|r| &e.run_id == r)
        && q.category.as_ref().is_none_or(|c| &e.category == c)
        && (q.event_types.is_empty() || q.event_types.iter().any(|t| t == &e.event_type))
}

/// Applies the cursor/limit rules of [`RunEventQuery`] to events sorted by seq.
pub(crate) fn window(events: Vec<RunEvent>, q: &RunEventQuery) -> Vec<RunEvent> {
    let limit = q.limit.unwrap_or(usize::MAX);
    match q.before_seq {
        Some(before) => {
            let below: Vec<RunEvent> = events.into_iter().filter(|e| e.seq < before).collect();
            let skip = below.len().saturating_sub(limit);
            below.into_iter().skip(skip).collect()
        }
        None => {
            let after = q.after_seq.unwrap_or(0);
            events
                .into_iter()
                .filter(|e| e.seq > after)
                .take(limit)
                .collect()
        }
    }
}

#[async_trait::async_trait]
impl RunEventStore for MemoryRunEventStore {
    async fn append_batch(
        &self,
        owner: Owner<'_>,
        events: Vec<NewRunEvent>,
    ) -> StoreResult<Vec<RunEvent>> {
        let mut threads = self.threads.write();
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let t = threads
                .entry(thread_key(owner.as_str(), &e.thread_id))
                .or_default();
            t.next_seq += 1;
            let ev = RunEvent {
                thread_id: e.thread_id,
                run_id: e.run_id,
                seq: t.next_seq,
                event_type: e.event_type,
                category: e.category,
                content: e.content,
                metadata: e.metadata,
                created_at: time::truncate(e.created_at),
            };
            t.events.push(ev.clone());
            out.push(ev);
        }
        Ok(out)
    }

    async fn list(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        q: &RunEventQuery,
    ) -> StoreResult<Vec<RunEvent>> {
        let threads = self.threads.read();
        let Some(t) = threads.get(&thread_key(owner.as_str(), thread_id.as_str())) else {
            return Ok(Vec::new());
        };
        let matching: Vec<RunEvent> = t
            .events
            .iter()
            .filter(|e| event_matches(e, q))
            .cloned()
            .collect();
        Ok(window(matching, q))
    }

    async fn count(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: Option<RunId<'_>>,
        category: Option<&str>,
    ) -> StoreResult<u64> {
        let threads = self.threads.read();
        Ok(threads
            .get(&thread_key(owner.as_str(), thread_id.as_str()))
            .map(|t| {
                t.events
                    .iter()
                    .filter(|e| {
                        run_id.is_none_or(|r| e.run_id == r)
                            && category.is_none_or(|c| e.category == c)
                    })
                    .count() as u64
            })
            .unwrap_or(0))
    }

    async fn delete_thread(&self, owner: Owner<'_>, thread_id: ThreadId<'_>) -> StoreResult<u64> {
        let mut threads = self.threads.write();
        let Some(t) = threads.get_mut(&thread_key(owner.as_str(), thread_id.as_str())) else {
            return Ok(0);
        };
        // next_seq is kept: a later append on the same thread id still gets fresh seqs.
        Ok(std::mem::take(&mut t.events).len() as u64)
    }

    async fn delete_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<u64> {
        let mut threads = self.threads.write();
        let Some(t) = threads.get_mut(&thread_key(owner.as_str(), thread_id.as_str())) else {
            return Ok(0);
        };
        let before = t.events.len();
        t.events.retain(|e| e.run_id != run_id);
        Ok((before - t.events.len()) as u64)
    }
}

// ------------------------------------------------------------------------ feedback

/// In-memory [`FeedbackStore`].
#[derive(Default)]
pub struct MemoryFeedbackStore {
    rows: RwLock<HashMap<String, Feedback>>,
}

#[async_trait::async_trait]
impl FeedbackStore for MemoryFeedbackStore {
    async fn create(&self, owner: Owner<'_>, mut feedback: Feedback) -> StoreResult<Feedback> {
        feedback.owner = owner.to_string();
        feedback.created_at = time::truncate(feedback.created_at);
        let mut rows = self.rows.write();
        if rows.contains_key(&feedback.feedback_id) {
            return Err(StoreError::Conflict(format!(
                "feedback {} already exists",
                feedback.feedback_id
            )));
        }
        rows.insert(feedback.feedback_id.clone(), feedback.clone());
        Ok(feedback)
    }

    async fn upsert(&self, owner: Owner<'_>, mut feedback: Feedback) -> StoreResult<Feedback> {
        feedback.owner = owner.to_string();
        feedback.created_at = time::truncate(feedback.created_at);
        let mut rows = self.rows.write();
        let existing = rows
            .values()
            .find(|f| {
                f.owner == owner && f.thread_id == feedback.thread_id && f.run_id == feedback.run_id
            })
            .map(|f| f.feedback_id.clone());
        if let Some(id) = existing {
            rows.remove(&id);
            feedback.feedback_id = id;
        } else if rows.contains_key(&feedback.feedback_id) {
            return Err(StoreError::Conflict(format!(
                "feedback {} already exists",
                feedback.feedback_id
            )));
        }
        rows.insert(feedback.feedback_id.clone(), feedback.clone());
        Ok(feedback)
    }

    async fn get(&self, owner: Owner<'_>, feedback_id: &str) -> StoreResult<Option<Feedback>> {
        Ok(self
            .rows
            .read()
            .get(feedback_id)
            .filter(|f| f.owner == owner)
            .cloned())
    }

    async fn list_by_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<Vec<Feedback>> {
        let mut v: Vec<Feedback> = self
            .rows
            .read()
            .values()
            .filter(|f| f.owner == owner && f.thread_id == thread_id && f.run_id == run_id)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.feedback_id.cmp(&b.feedback_id))
        });
        Ok(v)
    }

    async fn delete(&self, owner: Owner<'_>, feedback_id: &str) -> StoreResult<()> {
        let mut rows = self.rows.write();
        match rows.get(feedback_id) {
            Some(f) if f.owner == owner => {
                rows.remove(feedback_id);
                Ok(())
            }
            _ => Err(StoreError::NotFound),
        }
    }

    async fn delete_by_run(
        &self,
        owner: Owner<'_>,
        thread_id: ThreadId<'_>,
        run_id: RunId<'_>,
    ) -> StoreResult<u64> {
        let mut rows = self.rows.write();
        let before = rows.len();
        rows.retain(|_, f| !(f.owner == owner && f.thread_id == thread_id && f.run_id == run_id));
        Ok((before - rows.len()) as u64)
    }
}

// ------------------------------------------------------------------------ store items

/// Items of one owner keyed by (namespace, key).
type OwnerItems = BTreeMap<(Vec<String>, String), StoreItem>;

/// In-memory [`ItemStore`]: owner -> (namespace, key) -> item.
#[derive(Default)]
pub struct MemoryItemStore {
    rows: RwLock<HashMap<String, OwnerItems>>,
}

#[async_trait::async_trait]
impl ItemStore for MemoryItemStore {
    async fn put(
        &self,
        owner: Owner<'_>,
        namespace: &[String],
        key: &str,
        value: Value,
    ) -> StoreResult<StoreItem> {
        util::validate_namespace(namespace)?;
        util::validate_key(key)?;
        util::validate_item_value(&value)?;
        let now = time::now();
        let mut rows = self.rows.write();
        let items = rows.entry(owner.to_string()).or_default();
        let k = (namespace.to_vec(), key.to_string());
        let created_at = items.get(&k).map(|i| i.created_at).unwrap_or(now);
        let item = StoreItem {
            namespace: namespace.to_vec(),
            key: key.to_string(),
            value,
            created_at,
            updated_at: now,
        };
        items.insert(k, item.clone());
        Ok(item)
    }

    async fn get(
        &self,
        owner: Owner<'_>,
        namespace: &[String],
        key: &str,
    ) -> StoreResult<Option<StoreItem>> {
        util::validate_namespace(namespace)?;
        Ok(self
            .rows
            .read()
            .get(owner.as_str())
            .and_then(|items| items.get(&(namespace.to_vec(), key.to_string())))
            .cloned())
    }

    async fn delete(&self, owner: Owner<'_>, namespace: &[String], key: &str) -> StoreResult<bool> {
        util::validate_namespace(namespace)?;
        Ok(self
            .rows
            .write()
            .get_mut(owner.as_str())
            .and_then(|items| items.remove(&(namespace.to_vec(), key.to_string())))
            .is_some())
    }

    async fn search(&self, owner: Owner<'_>, q: &ItemSearch) -> StoreResult<Vec<SearchItem>> {
        util::validate_prefix(&q.namespace_prefix)?;
        let rows = self.rows.read();
        let Some(items) = rows.get(owner.as_str()) else {
            return Ok(Vec::new());
        };
        let mut hits: Vec<&StoreItem> = items
            .values()
            .filter(|i| {
                util::has_prefix(&i.namespace, &q.namespace_prefix)
                    && util::value_contains_top_level(Some(&i.value), &q.filter)
            })
            .collect();
        hits.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| a.namespace.cmp(&b.namespace))
                .then_with(|| a.key.cmp(&b.key))
        });
        Ok(hits
            .into_iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|i| SearchItem {
                item: i.clone(),
                score: None,
            })
            .collect())
    }

    async fn list_namespaces(
        &self,
        owner: Owner<'_>,
        q: &NamespaceQuery,
    ) -> StoreResult<Vec<Vec<String>>> {
        let rows = self.rows.read();
        let all: Vec<Vec<String>> = rows
            .get(owner.as_str())
            .map(|items| items.keys().map(|(ns, _)| ns.clone()).collect())
            .unwrap_or_default();
        Ok(util::filter_namespaces(all, q))
    }
}
