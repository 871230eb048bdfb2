//! Thread service: create (with `if_exists` and initial `supersteps`), get, patch, search,
//! count, copy, prune and delete.
//!
//! Deleting a thread also deletes its runs, run events and checkpoints (after its live runs
//! were cancelled and have stopped); copying copies its checkpoints and finished runs.

use std::collections::{BTreeMap, BTreeSet};

use antler_graph::{CheckpointTuple, Checkpointer, ListOptions};
use antler_store::{
    Owner, Run, RunListQuery, StoreError, Thread, ThreadId, ThreadSearch, ThreadStatus, WriteOp,
    WriteUnit, util,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{IfExists, new_id};
use crate::{CancelAction, Runtime, RuntimeError};

/// A thread create (`POST /threads`).
#[derive(Debug, Clone, Default)]
pub struct NewThread {
    /// The client's id (already validated); `None`: the service mints one.
    pub thread_id: Option<String>,
    pub metadata: Map<String, Value>,
    pub if_exists: IfExists,
    /// State updates applied, superstep by superstep, right after the create, with the graph
    /// `metadata.graph_id` names. A failing update deletes the thread again.
    pub supersteps: Vec<Vec<StateUpdate>>,
}

/// One update of a superstep: `values` written as if `as_node` ran.
#[derive(Debug, Clone)]
pub struct StateUpdate {
    pub values: Value,
    pub as_node: String,
}

/// What `POST /threads/prune` does to each thread.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PruneStrategy {
    /// Delete the thread with everything it owns.
    #[default]
    Delete,
    /// Keep only the newest checkpoint of each namespace (with its pending writes).
    KeepLatest,
}

/// 404 `Thread with ID … not found` (the reference's words).
fn thread_not_found(thread_id: &str) -> RuntimeError {
    RuntimeError::NotFound(format!("Thread with ID {thread_id} not found"))
}

/// A store error about `thread_id`: NotFound names the thread.
fn thread_err(thread_id: &str) -> impl Fn(StoreError) -> RuntimeError + '_ {
    move |err| match err {
        StoreError::NotFound => thread_not_found(thread_id),
        other => other.into(),
    }
}

impl Runtime {
    /// Creates a thread; a taken id answers the existing thread with `if_exists: do_nothing`,
    /// 409 otherwise.
    pub async fn create_thread(&self, owner: &str, new: NewThread) -> Result<Thread, RuntimeError> {
        let thread_id = new.thread_id.unwrap_or_else(new_id);
        let thread = Thread::new(thread_id.clone(), new.metadata);
        match self.stores.threads.create(Owner(owner), thread).await {
            Ok(created) if new.supersteps.is_empty() => Ok(created),
            Ok(_) => {
                if let Err(err) = self
                    .apply_supersteps(owner, &thread_id, new.supersteps)
                    .await
                {
                    // Leave no half-initialized thread behind.
                    let _ = self.delete_thread_if_exists(owner, &thread_id).await;
                    return Err(err);
                }
                self.get_thread(owner, &thread_id).await
            }
            Err(StoreError::Conflict(_)) => {
                let existing = self
                    .stores
                    .threads
                    .get(Owner(owner), ThreadId(&thread_id))
                    .await?;
                match (new.if_exists, existing) {
                    (IfExists::DoNothing, Some(existing)) => {
                        Ok(self.with_values(owner, existing).await)
                    }
                    _ => Err(RuntimeError::Conflict(format!(
                        "Thread with ID {thread_id} already exists"
                    ))),
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn apply_supersteps(
        &self,
        owner: &str,
        thread_id: &str,
        steps: Vec<Vec<StateUpdate>>,
    ) -> Result<(), RuntimeError> {
        for update in steps.into_iter().flatten() {
            self.update_state(owner, thread_id, update.values, Some(&update.as_node), None)
                .await?;
        }
        Ok(())
    }

    /// The thread (404 `Thread with ID … not found`), its values as of its latest checkpoint.
    pub async fn get_thread(&self, owner: &str, thread_id: &str) -> Result<Thread, RuntimeError> {
        let thread = self
            .stores
            .threads
            .get(Owner(owner), ThreadId(thread_id))
            .await
            .map_err(thread_err(thread_id))?
            .ok_or_else(|| thread_not_found(thread_id))?;
        Ok(self.with_values(owner, thread).await)
    }

    /// The thread with its `values` read from its latest checkpoint. A run does not rewrite
    /// the row's snapshot of the state (that would cost O(state) on every run of a long chat);
    /// the checkpointer's cache of each thread's latest checkpoint makes this read cheap. A
    /// thread without checkpoints (or of an unknown graph) keeps the row's value.
    pub(crate) async fn with_values(&self, owner: &str, mut thread: Thread) -> Thread {
        let graph = thread
            .metadata
            .get("graph_id")
            .and_then(Value::as_str)
            .and_then(|g| self.graphs.get(g));
        let Some(graph) = graph else {
            return thread;
        };
        let cp = self.stores.checkpointer(owner);
        let snap = graph
            .get_state(cp.as_ref(), &thread.thread_id, None, false)
            .await;
        if let Ok(snap) = snap
            && snap.checkpoint.is_some()
        {
            let empty = snap.values.as_object().is_none_or(|m| m.is_empty());
            thread.values = Some(if empty { Value::Null } else { snap.values });
        }
        thread
    }

    async fn all_with_values(&self, owner: &str, threads: Vec<Thread>) -> Vec<Thread> {
        let mut out = Vec::with_capacity(threads.len());
        for t in threads {
            out.push(self.with_values(owner, t).await);
        }
        out
    }

    /// The thread, or 404 with the reference's message.
    pub async fn require_thread(
        &self,
        owner: &str,
        thread_id: &str,
    ) -> Result<Thread, RuntimeError> {
        self.stores
            .threads
            .get(Owner(owner), ThreadId(thread_id))
            .await?
            .ok_or_else(|| thread_not_found(thread_id))
    }

    /// Merges `metadata` into the thread's metadata (`PATCH /threads/{id}`).
    pub async fn patch_thread(
        &self,
        owner: &str,
        thread_id: &str,
        metadata: Map<String, Value>,
    ) -> Result<Thread, RuntimeError> {
        let thread = self
            .stores
            .threads
            .patch_metadata(Owner(owner), ThreadId(thread_id), metadata)
            .await
            .map_err(thread_err(thread_id))?;
        Ok(self.with_values(owner, thread).await)
    }

    /// One page of matching threads and the number of all matches.
    pub async fn search_threads(
        &self,
        owner: &str,
        query: &ThreadSearch,
    ) -> Result<(Vec<Thread>, u64), RuntimeError> {
        if !query.values.is_empty() {
            let matches = self.matching_values(owner, query).await?;
            let total = matches.len() as u64;
            let page = matches.into_iter().skip(query.offset).take(query.limit);
            return Ok((page.collect(), total));
        }
        let threads = self.stores.threads.search(Owner(owner), query).await?;
        let total = self.stores.threads.count(Owner(owner), query).await?;
        Ok((self.all_with_values(owner, threads).await, total))
    }

    /// The number of matching threads (paging ignored).
    pub async fn count_threads(
        &self,
        owner: &str,
        query: &ThreadSearch,
    ) -> Result<u64, RuntimeError> {
        if !query.values.is_empty() {
            return Ok(self.matching_values(owner, query).await?.len() as u64);
        }
        Ok(self.stores.threads.count(Owner(owner), query).await?)
    }

    /// Every thread matching `query`, in its order, with a `values` filter applied to the
    /// values as of each thread's latest checkpoint (the row holds no current snapshot).
    async fn matching_values(
        &self,
        owner: &str,
        query: &ThreadSearch,
    ) -> Result<Vec<Thread>, RuntimeError> {
        const PAGE: usize = 500;
        let mut q = query.clone();
        q.values = Map::new();
        q.limit = PAGE;
        q.offset = 0;
        let mut out = Vec::new();
        loop {
            let page = self.stores.threads.search(Owner(owner), &q).await?;
            let last = page.len() < PAGE;
            for t in self.all_with_values(owner, page).await {
                let values = t.values.as_ref().and_then(Value::as_object);
                if values.is_some_and(|v| util::contains_top_level(v, &query.values)) {
                    out.push(t);
                }
            }
            if last {
                return Ok(out);
            }
            q.offset += PAGE;
        }
    }

    /// Deletes a thread: cancels its live runs (and waits for them), then removes the thread,
    /// its runs, run events and checkpoints.
    pub async fn delete_thread(&self, owner: &str, thread_id: &str) -> Result<(), RuntimeError> {
        self.require_thread(owner, thread_id).await?;
        for h in self.live_runs_of_thread(owner, thread_id) {
            h.request_cancel(CancelAction::Interrupt);
            let mut rx = h.done.subscribe();
            let _ = rx.wait_for(Option::is_some).await;
        }
        self.stores
            .threads
            .delete(Owner(owner), ThreadId(thread_id))
            .await?;
        self.stores
            .runs
            .delete_by_thread(Owner(owner), ThreadId(thread_id))
            .await?;
        self.stores
            .events
            .delete_thread(Owner(owner), ThreadId(thread_id))
            .await?;
        self.stores
            .checkpointer(owner)
            .delete_thread(thread_id)
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?;
        self.remove_thread_files(owner, thread_id).await;
        Ok(())
    }

    /// [`Runtime::delete_thread`] that answers `false` instead of 404 when the thread does
    /// not exist (or went away meanwhile).
    pub async fn delete_thread_if_exists(
        &self,
        owner: &str,
        thread_id: &str,
    ) -> Result<bool, RuntimeError> {
        if self
            .stores
            .threads
            .get(Owner(owner), ThreadId(thread_id))
            .await?
            .is_none()
        {
            return Ok(false);
        }
        match self.delete_thread(owner, thread_id).await {
            Ok(()) => Ok(true),
            Err(RuntimeError::NotFound(_) | RuntimeError::Store(StoreError::NotFound)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Copies a thread under a new id: its row, its checkpoints and its finished runs (under
    /// new run ids, in their order).
    pub async fn copy_thread(&self, owner: &str, thread_id: &str) -> Result<Thread, RuntimeError> {
        let source = self.get_thread(owner, thread_id).await?;
        let new_id = new_id();
        let mut runs = self.all_runs(owner, &source.thread_id).await?;
        runs.reverse(); // oldest first, so the copies keep their relative order
        let runs: Vec<Run> = runs
            .into_iter()
            .filter(|r| r.status.is_terminal())
            .map(|run| run_copy(run, owner, &new_id))
            .collect();
        self.write_thread_copy(owner, &source.thread_id, &new_id, &runs)
            .await
    }

    /// The writes of a thread copy (the thread row, its checkpoints, its runs), in one unit
    /// of the commit queue: one transaction, all or nothing.
    async fn write_thread_copy(
        &self,
        owner: &str,
        thread_id: &str,
        new_id: &str,
        runs: &[Run],
    ) -> Result<Thread, RuntimeError> {
        let mut unit = WriteUnit::new(owner, antler_graph::thread_key(owner, thread_id));
        unit.ops.push(WriteOp::CopyThread {
            thread_id: thread_id.to_string(),
            new_id: new_id.to_string(),
        });
        unit.ops
            .extend(runs.iter().map(|r| WriteOp::PutRun(Box::new(r.clone()))));
        self.stores
            .commits
            .submit(unit)
            .await
            .map_err(thread_err(thread_id))?;
        let copied = self.get_thread(owner, new_id).await?;
        Ok(copied)
    }

    /// All runs of a thread (newest first), paging through the store.
    async fn all_runs(&self, owner: &str, thread_id: &str) -> Result<Vec<Run>, RuntimeError> {
        let mut out = Vec::new();
        let limit = 500;
        loop {
            let query = RunListQuery {
                limit,
                offset: out.len(),
                status: None,
            };
            let page = self
                .stores
                .runs
                .list_by_thread(Owner(owner), ThreadId(thread_id), &query)
                .await?;
            let done = page.len() < limit;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Prunes threads (each id once); returns how many were pruned. `keep_latest` leaves a
    /// busy thread alone (it is writing checkpoints right now) and does not count it.
    pub async fn prune_threads(
        &self,
        owner: &str,
        thread_ids: &[String],
        strategy: PruneStrategy,
    ) -> Result<u64, RuntimeError> {
        let mut pruned = 0u64;
        let unique: BTreeSet<&String> = thread_ids.iter().collect();
        for id in unique {
            let done = match strategy {
                PruneStrategy::Delete => self.delete_thread_if_exists(owner, id).await?,
                PruneStrategy::KeepLatest => {
                    let thread = self.stores.threads.get(Owner(owner), ThreadId(id)).await?;
                    let idle = thread.is_some_and(|t| t.status != ThreadStatus::Busy);
                    if idle {
                        keep_latest_checkpoints(self.stores.checkpointer(owner).as_ref(), id)
                            .await?;
                    }
                    idle
                }
            };
            pruned += u64::from(done);
        }
        Ok(pruned)
    }
}

/// A finished run of a copied thread, as a run of the copy (new id, owner, thread).
fn run_copy(mut run: Run, owner: &str, new_thread_id: &str) -> Run {
    run.run_id = new_id();
    run.thread_id = new_thread_id.to_owned();
    run.owner = owner.to_owned();
    retarget_kwargs(&mut run.kwargs, new_thread_id);
    run
}

fn retarget_kwargs(kwargs: &mut Value, new_thread_id: &str) {
    if let Some(Value::Object(configurable)) = kwargs
        .get_mut("config")
        .and_then(|c| c.get_mut("configurable"))
        && configurable.contains_key("thread_id")
    {
        configurable.insert("thread_id".into(), Value::String(new_thread_id.to_owned()));
    }
}

/// Keeps only the newest checkpoint of every namespace of a thread (with its pending writes).
///
/// Nothing is deleted before the kept data is written: the newest checkpoints are written to
/// a staging thread first (a failure there leaves the thread as it was), then copied over
/// the thread, which replaces its checkpoints in one checkpointer call.
pub(crate) async fn keep_latest_checkpoints(
    cp: &dyn Checkpointer,
    thread_id: &str,
) -> Result<(), RuntimeError> {
    let all = cp.list(thread_id, None, &ListOptions::default()).await?;
    let namespaces: BTreeSet<String> = all.into_iter().map(|t| t.checkpoint_ns).collect();
    let mut latest = Vec::new();
    for ns in namespaces {
        if let Some(tuple) = cp.get_tuple(thread_id, &ns, None).await? {
            latest.push(tuple);
        }
    }
    if latest.is_empty() {
        // nothing to keep
        cp.delete_thread(thread_id).await?;
        return Ok(());
    }
    // `~` is no thread-id character: the staging id names no client's thread.
    let staging = format!("~prune~{}", new_id());
    let copied = match write_checkpoints(cp, &staging, latest).await {
        Ok(()) => cp.copy_thread(&staging, thread_id).await,
        Err(e) => Err(e),
    };
    let cleaned = cp.delete_thread(&staging).await;
    copied?;
    Ok(cleaned?)
}

/// Writes the tuples (checkpoint, every channel blob, pending writes) as the checkpoints of
/// `thread_id`, each without a parent.
async fn write_checkpoints(
    cp: &dyn Checkpointer,
    thread_id: &str,
    tuples: Vec<CheckpointTuple>,
) -> Result<(), antler_graph::CheckpointError> {
    for tuple in tuples {
        let versions = tuple.checkpoint.channel_versions.clone();
        cp.put(
            thread_id,
            &tuple.checkpoint_ns,
            None,
            &tuple.checkpoint,
            &tuple.metadata,
            &versions,
        )
        .await?;
        let mut by_task: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
        for w in tuple.pending_writes {
            by_task
                .entry(w.task_id)
                .or_default()
                .push((w.channel, w.value));
        }
        for (task_id, writes) in by_task {
            cp.put_writes(
                thread_id,
                &tuple.checkpoint_ns,
                &tuple.checkpoint.id,
                &task_id,
                &writes,
            )
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use antler_graph::{Checkpoint, CheckpointError, MemoryCheckpointer, new_checkpoint_id};
    use serde_json::json;

    /// A checkpointer whose checkpoint writes fail (reads, copies and deletes work).
    struct FailingPuts(MemoryCheckpointer);

    #[async_trait::async_trait]
    impl Checkpointer for FailingPuts {
        async fn get_tuple(
            &self,
            thread_id: &str,
            checkpoint_ns: &str,
            checkpoint_id: Option<&str>,
        ) -> Result<Option<CheckpointTuple>, CheckpointError> {
            self.0
                .get_tuple(thread_id, checkpoint_ns, checkpoint_id)
                .await
        }
        async fn list(
            &self,
            thread_id: &str,
            checkpoint_ns: Option<&str>,
            opts: &ListOptions,
        ) -> Result<Vec<CheckpointTuple>, CheckpointError> {
            self.0.list(thread_id, checkpoint_ns, opts).await
        }
        async fn put(
            &self,
            _: &str,
            _: &str,
            _: Option<&str>,
            _: &Checkpoint,
            _: &Map<String, Value>,
            _: &BTreeMap<String, u64>,
        ) -> Result<(), CheckpointError> {
            Err(CheckpointError::Storage("disk full".into()))
        }
        async fn put_writes(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            _: &[(String, Value)],
        ) -> Result<(), CheckpointError> {
            Err(CheckpointError::Storage("disk full".into()))
        }
        async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError> {
            self.0.delete_thread(thread_id).await
        }
        async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError> {
            self.0.copy_thread(from, to).await
        }
        async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError> {
            self.0.delete_run(thread_id, run_id).await
        }
    }

    /// Three checkpoints in the root namespace and two in `child:1`, a pending write on the
    /// newest root one; returns the newest id of each namespace.
    async fn history(cp: &dyn Checkpointer, thread_id: &str) -> (String, String) {
        let mut newest = Vec::new();
        for (ns, steps) in [("", 3), ("child:1", 2)] {
            let mut parent: Option<String> = None;
            for step in 0..steps {
                let checkpoint = Checkpoint {
                    id: new_checkpoint_id(step),
                    ts: antler_graph::now_ts(),
                    channel_values: json!({"x": step}).as_object().cloned().unwrap_or_default(),
                    channel_versions: BTreeMap::from([("x".to_string(), step as u64 + 1)]),
                    ..Default::default()
                };
                let versions = checkpoint.channel_versions.clone();
                let meta = json!({"step": step})
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                cp.put(
                    thread_id,
                    ns,
                    parent.as_deref(),
                    &checkpoint,
                    &meta,
                    &versions,
                )
                .await
                .unwrap();
                parent = Some(checkpoint.id);
            }
            newest.push(parent.unwrap());
        }
        let writes = [("x".to_string(), json!(9))];
        cp.put_writes(thread_id, "", &newest[0], "task-1", &writes)
            .await
            .unwrap();
        (newest[0].clone(), newest[1].clone())
    }

    fn ids(tuples: &[CheckpointTuple]) -> Vec<&str> {
        tuples.iter().map(|t| t.checkpoint.id.as_str()).collect()
    }

    #[tokio::test]
    async fn keep_latest_keeps_the_newest_checkpoint_of_each_namespace() {
        let cp = MemoryCheckpointer::new();
        let (root, child) = history(&cp, "t").await;
        keep_latest_checkpoints(&cp, "t").await.unwrap();
        let left = cp.list("t", None, &ListOptions::default()).await.unwrap();
        let mut kept = ids(&left);
        kept.sort_unstable();
        let mut want = vec![root.as_str(), child.as_str()];
        want.sort_unstable();
        assert_eq!(kept, want);
        let head = cp.get_tuple("t", "", None).await.unwrap().unwrap();
        assert_eq!(head.checkpoint.channel_values["x"], json!(2));
        assert_eq!(head.parent_checkpoint_id, None);
        assert_eq!(head.pending_writes.len(), 1);
        assert_eq!(head.pending_writes[0].value, json!(9));
    }

    #[tokio::test]
    async fn keep_latest_deletes_nothing_when_writing_fails() {
        let cp = FailingPuts(MemoryCheckpointer::new());
        history(&cp.0, "t").await;
        let before = cp.list("t", None, &ListOptions::default()).await.unwrap();
        assert_eq!(before.len(), 5);
        let err = keep_latest_checkpoints(&cp, "t").await.unwrap_err();
        assert!(matches!(err, RuntimeError::Checkpoint(_)), "{err:?}");
        let after = cp.list("t", None, &ListOptions::default()).await.unwrap();
        assert_eq!(
            ids(&after),
            ids(&before),
            "the old checkpoints are all still there"
        );
    }

    #[test]
    fn kwargs_are_retargeted() {
        let mut kwargs = json!({"config": {"configurable": {"thread_id": "old", "x": 1}}});
        retarget_kwargs(&mut kwargs, "new");
        assert_eq!(kwargs["config"]["configurable"]["thread_id"], "new");
        assert_eq!(kwargs["config"]["configurable"]["x"], 1);
    }
}
