//! The durable writes of one run: the checkpointer the engine sees while the run executes,
//! and the units it hands to the database's commit queue (group commit, see
//! `antler_store::commit`).
//!
//! Every step becomes one unit holding its checkpoint, the pending writes before it and the
//! run events the journal recorded meanwhile; the run's start (claim, thread busy) folds into
//! the first unit where the database is this process's alone, and the run's end (row, thread,
//! last events) into the last one. When a unit is committed depends on the run's
//! `durability`:
//! - `sync`: each checkpoint and pending write is committed before the engine goes on;
//! - `async` (default): a step's unit commits while the next step runs; the run's answer
//!   waits for every unit, and a failed unit fails the run at its next step;
//! - `exit`: nothing is written until the run ends (or pauses): then the last checkpoint of
//!   each namespace (carrying every channel changed since the last stored one) and its
//!   pending writes. A crash loses the run's steps, as LangGraph documents.
//!
//! Reads see the run's own writes at once (its latest checkpoint per namespace is kept
//! here), so nothing waits for a commit to read what the run just wrote.

use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::{
    ChannelValue, ChannelVersion, Checkpoint, CheckpointError, CheckpointTuple, Checkpointer,
    ListOptions, PendingWrite,
};
use antler_store::commit::{CheckpointPut, EventsPut, WritesPut};
use antler_store::{Chain, Commit, CommitQueue, StoreError, WriteOp, WriteUnit};
use futures::FutureExt;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::durability::Lease;
use crate::journal::Journal;

/// When a run's writes are committed (the run-create `durability` option).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Sync,
    Async,
    Exit,
}

impl Durability {
    /// The mode of a request: `durability` when given; LangGraph's older
    /// `checkpoint_during: false` means `exit`.
    pub(crate) fn of(durability: &str, checkpoint_during: bool) -> Self {
        match durability {
            "sync" => Durability::Sync,
            "exit" => Durability::Exit,
            _ if !checkpoint_during => Durability::Exit,
            _ => Durability::Async,
        }
    }
}

/// The latest checkpoint this run wrote in one namespace (what reads see first).
struct Own {
    tuple: CheckpointTuple,
    values: BTreeMap<String, ChannelValue>,
}

/// `exit` mode: the checkpoint to write at the end, per namespace.
struct Held {
    put: CheckpointPut,
    writes: Vec<WritesPut>,
}

#[derive(Default)]
struct State {
    /// Ops waiting for the next unit (run start; `async` pending writes).
    pending: Vec<WriteOp>,
    /// Submitted units not known to be committed yet.
    inflight: Vec<Commit>,
    /// The first failure: every later write fails with it.
    failed: Option<String>,
    own: BTreeMap<String, Own>,
    held: BTreeMap<String, Held>,
}

/// See the module docs.
pub(crate) struct RunSession {
    owner: String,
    thread_id: String,
    thread_key: String,
    durability: Durability,
    commits: CommitQueue,
    /// The owner's checkpoints, for what this run did not write.
    reader: Arc<dyn Checkpointer>,
    journal: Arc<Mutex<Journal>>,
    lease: Arc<Lease>,
    /// Every unit of the run: once one fails, the later ones are not applied (the committed
    /// steps stay a prefix of the run's steps).
    chain: Arc<Chain>,
    state: Mutex<State>,
}

fn storage(msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Storage(msg.into())
}

impl RunSession {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        owner: &str,
        thread_id: &str,
        durability: Durability,
        commits: CommitQueue,
        reader: Arc<dyn Checkpointer>,
        journal: Arc<Mutex<Journal>>,
        lease: Arc<Lease>,
        start: Vec<WriteOp>,
    ) -> Self {
        let session = RunSession {
            owner: owner.to_string(),
            thread_id: thread_id.to_string(),
            thread_key: antler_graph::thread_key(owner, thread_id),
            durability,
            commits,
            reader,
            journal,
            lease,
            chain: Arc::default(),
            state: Mutex::new(State {
                pending: start,
                ..State::default()
            }),
        };
        if durability == Durability::Exit {
            // The run's start is not a step: its row says `running` while it runs, even when
            // its steps are committed only at the end.
            let mut st = session.state.lock();
            let mut unit =
                WriteUnit::new(&session.owner, &session.thread_key).in_chain(&session.chain);
            unit.ops.append(&mut st.pending);
            let commit = session.commits.submit(unit);
            st.inflight.push(commit);
        }
        session
    }

    /// The storage key of one of the run's threads (the engine passes the thread id).
    fn key(&self, thread_id: &str) -> String {
        if thread_id == self.thread_id {
            self.thread_key.clone()
        } else {
            antler_graph::thread_key(&self.owner, thread_id)
        }
    }

    /// Fails when an earlier unit failed or this process lost its lease (fencing: after
    /// that another process may own the run, and nothing of ours may be committed).
    fn check(&self, st: &mut State) -> Result<(), CheckpointError> {
        st.inflight.retain_mut(|c| match c.now_or_never() {
            Some(Ok(())) => false,
            Some(Err(e)) => {
                st.failed.get_or_insert_with(|| e.to_string());
                false
            }
            None => true,
        });
        if let Some(msg) = &st.failed {
            return Err(storage(msg.clone()));
        }
        if !self.lease.valid() {
            return Err(storage(
                "this server lost its run lease (database unreachable?); another server may resume the run",
            ));
        }
        Ok(())
    }

    /// A unit of everything pending plus `ops` and the journal's new records.
    fn unit(&self, st: &mut State, ops: Vec<WriteOp>) -> WriteUnit {
        let mut unit = WriteUnit::new(&self.owner, &self.thread_key).in_chain(&self.chain);
        unit.ops.append(&mut st.pending);
        unit.ops.extend(ops);
        let (events, run_ops) = self.journal.lock().drain();
        if !events.is_empty() {
            unit.ops.push(WriteOp::Events(EventsPut::new(events)));
        }
        unit.ops.extend(run_ops);
        unit
    }

    /// Commits `ops` per the run's durability (`sync`: waits; `async`: queues).
    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), CheckpointError> {
        let commit = {
            let mut st = self.state.lock();
            self.check(&mut st)?;
            let unit = self.unit(&mut st, ops);
            let commit = self.commits.submit(unit);
            if self.durability != Durability::Sync {
                st.inflight.push(commit);
                return Ok(());
            }
            commit
        };
        commit.await.map_err(|e| {
            self.state
                .lock()
                .failed
                .get_or_insert_with(|| e.to_string());
            storage(e.to_string())
        })
    }

    /// The run's end: everything not yet written plus `end` (run row, thread, last events),
    /// in one unit; waits until every unit of the run is committed.
    pub(crate) async fn finish(&self, end: Vec<WriteOp>) -> Result<(), StoreError> {
        let (commit, inflight) = {
            let mut st = self.state.lock();
            let held = std::mem::take(&mut st.held);
            let mut ops = Vec::new();
            for (_, h) in held {
                ops.push(WriteOp::Checkpoint(Box::new(h.put)));
                ops.extend(h.writes.into_iter().map(WriteOp::Writes));
            }
            ops.extend(end);
            let failed = st.failed.clone();
            let unit = self.unit(&mut st, ops);
            let commit = match failed {
                Some(msg) => Commit::ready(Err(StoreError::Backend(msg))),
                None if !self.lease.valid() => Commit::ready(Err(StoreError::Backend(
                    "this server lost its run lease".into(),
                ))),
                None => self.commits.submit(unit),
            };
            (commit, std::mem::take(&mut st.inflight))
        };
        let mut first_err = None;
        for c in inflight {
            if let Err(e) = c.await {
                first_err.get_or_insert(e);
            }
        }
        let last = commit.await;
        match first_err {
            Some(e) => Err(e),
            None => last,
        }
    }

    /// Waits for every unit submitted so far (before a rollback deletes what they wrote);
    /// held and pending writes are dropped.
    pub(crate) async fn discard(&self) {
        let inflight = {
            let mut st = self.state.lock();
            st.pending.clear();
            st.held.clear();
            std::mem::take(&mut st.inflight)
        };
        for c in inflight {
            let _ = c.await;
        }
    }

    fn own_hit(
        &self,
        thread_id: &str,
        ns: &str,
        id: Option<&str>,
    ) -> Option<(CheckpointTuple, BTreeMap<String, ChannelValue>)> {
        if thread_id != self.thread_id {
            return None;
        }
        let st = self.state.lock();
        let own = st.own.get(ns)?;
        if id.is_some_and(|id| id != own.tuple.checkpoint.id) {
            return None;
        }
        Some((own.tuple.clone(), own.values.clone()))
    }

    #[allow(clippy::too_many_arguments)]
    fn remember(
        &self,
        thread_id: &str,
        ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        values: &BTreeMap<String, ChannelValue>,
        metadata: &Map<String, Value>,
    ) {
        if thread_id != self.thread_id {
            return;
        }
        let mut head = checkpoint.clone();
        head.channel_values = Map::new();
        let tuple = CheckpointTuple {
            thread_id: thread_id.to_string(),
            checkpoint_ns: ns.to_string(),
            checkpoint: head,
            metadata: metadata.clone(),
            parent_checkpoint_id: parent_id.map(str::to_string),
            pending_writes: Vec::new(),
        };
        let values = values.clone();
        self.state
            .lock()
            .own
            .insert(ns.to_string(), Own { tuple, values });
    }

    fn remember_writes(
        &self,
        thread_id: &str,
        ns: &str,
        id: &str,
        task: &str,
        w: &[(String, Value)],
    ) {
        if thread_id != self.thread_id {
            return;
        }
        let mut st = self.state.lock();
        let Some(own) = st.own.get_mut(ns).filter(|o| o.tuple.checkpoint.id == id) else {
            return;
        };
        let pending = &mut own.tuple.pending_writes;
        pending.retain(|p| p.task_id != task);
        pending.extend(w.iter().map(|(channel, value)| PendingWrite {
            task_id: task.to_string(),
            channel: channel.clone(),
            value: value.clone(),
        }));
    }

    /// `exit` mode: the new checkpoint replaces the held one of its namespace, carrying every
    /// channel changed since the last stored checkpoint (whose id stays the parent).
    fn hold(&self, mut put: CheckpointPut) {
        let mut st = self.state.lock();
        if let Some(prev) = st.held.remove(&put.checkpoint_ns) {
            put.parent_id = prev.put.parent_id;
            let mut versions = prev.put.new_versions;
            versions.append(&mut put.new_versions);
            for (channel, v) in put.checkpoint.channel_versions.iter() {
                if let Some(slot) = versions.get_mut(channel) {
                    *slot = *v;
                }
            }
            put.new_versions = versions;
        }
        let ns = put.checkpoint_ns.clone();
        st.held.insert(
            ns,
            Held {
                put,
                writes: Vec::new(),
            },
        );
    }

    fn hold_writes(&self, w: WritesPut) {
        let mut st = self.state.lock();
        if let Some(h) = st.held.get_mut(&w.checkpoint_ns)
            && h.put.checkpoint.id == w.checkpoint_id
        {
            h.writes.retain(|x| x.task_id != w.task_id);
            h.writes.push(w);
        }
    }
}

#[async_trait::async_trait]
impl Checkpointer for RunSession {
    async fn get_tuple(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError> {
        if let Some((mut t, values)) = self.own_hit(thread_id, checkpoint_ns, checkpoint_id) {
            t.checkpoint.channel_values = values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_value()))
                .collect();
            return Ok(Some(t));
        }
        self.reader
            .get_tuple(thread_id, checkpoint_ns, checkpoint_id)
            .await
    }

    async fn get_tuple_shared(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<(CheckpointTuple, BTreeMap<String, ChannelValue>)>, CheckpointError> {
        if let Some(hit) = self.own_hit(thread_id, checkpoint_ns, checkpoint_id) {
            return Ok(Some(hit));
        }
        self.reader
            .get_tuple_shared(thread_id, checkpoint_ns, checkpoint_id)
            .await
    }

    async fn list(
        &self,
        thread_id: &str,
        checkpoint_ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Vec<CheckpointTuple>, CheckpointError> {
        self.reader.list(thread_id, checkpoint_ns, opts).await
    }

    async fn put(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        metadata: &Map<String, Value>,
        new_versions: &BTreeMap<String, ChannelVersion>,
    ) -> Result<(), CheckpointError> {
        // A plain put carries only the changed channels: complete them from the parent.
        let mut values: BTreeMap<String, ChannelValue> = match parent_id {
            Some(pid) => self
                .get_tuple_shared(thread_id, checkpoint_ns, Some(pid))
                .await?
                .map(|(_, v)| v)
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        for (k, v) in &checkpoint.channel_values {
            values.insert(k.clone(), ChannelValue::Value(Arc::new(v.clone())));
        }
        let mut head = checkpoint.clone();
        head.channel_values = Map::new();
        self.put_shared(
            thread_id,
            checkpoint_ns,
            parent_id,
            &head,
            &values,
            metadata,
            new_versions,
        )
        .await
    }

    async fn put_shared(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        values: &BTreeMap<String, ChannelValue>,
        metadata: &Map<String, Value>,
        new_versions: &BTreeMap<String, ChannelVersion>,
    ) -> Result<(), CheckpointError> {
        self.remember(
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            values,
            metadata,
        );
        let put = CheckpointPut {
            thread_key: self.key(thread_id),
            checkpoint_ns: checkpoint_ns.to_string(),
            parent_id: parent_id.map(str::to_string),
            checkpoint: checkpoint.clone(),
            values: values.clone(),
            metadata: metadata.clone(),
            new_versions: new_versions.clone(),
        };
        if self.durability == Durability::Exit {
            self.check(&mut self.state.lock())?;
            self.hold(put);
            return Ok(());
        }
        self.write(vec![WriteOp::Checkpoint(Box::new(put))]).await
    }

    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: &str,
        task_id: &str,
        writes: &[(String, Value)],
    ) -> Result<(), CheckpointError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.remember_writes(thread_id, checkpoint_ns, checkpoint_id, task_id, writes);
        let w = WritesPut {
            thread_key: self.key(thread_id),
            checkpoint_ns: checkpoint_ns.to_string(),
            checkpoint_id: checkpoint_id.to_string(),
            task_id: task_id.to_string(),
            writes: writes.to_vec(),
        };
        match self.durability {
            Durability::Sync => self.write(vec![WriteOp::Writes(w)]).await,
            Durability::Async => {
                let mut st = self.state.lock();
                self.check(&mut st)?;
                st.pending.push(WriteOp::Writes(w));
                Ok(())
            }
            Durability::Exit => {
                self.check(&mut self.state.lock())?;
                self.hold_writes(w);
                Ok(())
            }
        }
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError> {
        self.reader.delete_thread(thread_id).await
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError> {
        self.reader.copy_thread(from, to).await
    }

    async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError> {
        self.discard().await;
        self.state.lock().own.clear();
        self.reader.delete_run(thread_id, run_id).await
    }
}
