//! Checkpoints: the persisted record of a graph's state after each superstep.
//!
//! Owns the [`Checkpoint`] data types, the async [`Checkpointer`] trait that storage backends
//! implement, the in-memory [`MemoryCheckpointer`], and the helpers that mint time-ordered
//! checkpoint ids and timestamps.
//!
//! Invariants every implementation keeps:
//! - a checkpoint stores channel values only for the channels listed in `new_versions` when it
//!   is put; on read, every channel's value is reloaded from the blob of the version the
//!   checkpoint's `channel_versions` names (possibly written by an older checkpoint), so the
//!   per-step cost does not grow with the thread;
//! - `list` returns newest first (checkpoint ids sort by time as text);
//! - pending writes are idempotent per `(task_id, index)`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Version of one channel; monotonically increasing per channel within a thread + namespace.
pub type ChannelVersion = u64;

/// One checkpoint of one thread + namespace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Checkpoint {
    /// Time-ordered id (uuid6 layout, clock sequence = step), sortable as text.
    pub id: String,
    /// RFC3339 UTC with microseconds and `+00:00`.
    pub ts: String,
    /// On put: only the channels listed in `new_versions` need to be present.
    /// On get: the full values of all non-empty channels.
    pub channel_values: Map<String, Value>,
    /// Current version of every channel.
    pub channel_versions: BTreeMap<String, ChannelVersion>,
    /// node -> channel -> version of that channel the node last saw.
    pub versions_seen: BTreeMap<String, BTreeMap<String, ChannelVersion>>,
    /// Channels updated by the step that produced this checkpoint.
    pub updated_channels: Vec<String>,
}

/// A write of one task against a checkpoint, saved before the step completed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PendingWrite {
    /// Id of the task that produced the write.
    pub task_id: String,
    /// Channel written (state key, or special channels such as `__error__`, `__interrupt__`).
    pub channel: String,
    /// Value written.
    pub value: Value,
}

/// A checkpoint with its location, metadata, parent and pending writes.
#[derive(Clone, Debug)]
pub struct CheckpointTuple {
    /// Thread the checkpoint belongs to.
    pub thread_id: String,
    /// Namespace ("" for the root graph, `node:<task_id>` for subgraphs).
    pub checkpoint_ns: String,
    /// The checkpoint with full channel values.
    pub checkpoint: Checkpoint,
    /// source, step, parents, + run metadata (run_id, graph_id, ...).
    pub metadata: Map<String, Value>,
    /// Id of the parent checkpoint in the same namespace.
    pub parent_checkpoint_id: Option<String>,
    /// Writes saved against this checkpoint, in insertion order.
    pub pending_writes: Vec<PendingWrite>,
}

/// Options of [`Checkpointer::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Only checkpoints whose id sorts strictly before this one.
    pub before: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Metadata equality on top-level keys.
    pub filter: Map<String, Value>,
}

/// Errors of a checkpointer.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The backend failed.
    #[error("checkpoint storage error: {0}")]
    Storage(String),
    /// Stored data could not be decoded.
    #[error("checkpoint serialization error: {0}")]
    Serde(String),
    /// A referenced checkpoint does not exist.
    #[error("checkpoint not found: {0}")]
    NotFound(String),
}

/// A channel value in the engine's shared, cheap-to-clone form.
///
/// List channels (append / add_messages) are persistent vectors of shared items so that
/// cloning the state of a thread with 1,000 messages costs O(1).
#[derive(Clone, Debug)]
pub enum ChannelValue {
    /// Any JSON value (last-value and custom reducers).
    Value(Arc<Value>),
    /// A list of items (append / add_messages).
    List(imbl::Vector<Arc<Value>>),
}

impl ChannelValue {
    /// Materializes the value as JSON (O(n) for lists).
    pub fn to_value(&self) -> Value {
        match self {
            ChannelValue::Value(v) => (**v).clone(),
            ChannelValue::List(items) => {
                Value::Array(items.iter().map(|v| (**v).clone()).collect())
            }
        }
    }

    /// Wraps a JSON value; arrays become lists when `list` is true.
    pub fn from_value(v: Value, list: bool) -> Self {
        match (v, list) {
            (Value::Array(items), true) => {
                ChannelValue::List(items.into_iter().map(Arc::new).collect())
            }
            (Value::Null, true) => ChannelValue::List(imbl::Vector::new()),
            (v, _) => ChannelValue::Value(Arc::new(v)),
        }
    }
}

/// Storage of checkpoints, channel blobs and pending writes.
#[async_trait::async_trait]
pub trait Checkpointer: Send + Sync + 'static {
    /// The checkpoint `checkpoint_id`, or the latest one of the thread + namespace.
    async fn get_tuple(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError>;

    /// Newest first; `checkpoint_ns` None = all namespaces.
    async fn list(
        &self,
        thread_id: &str,
        checkpoint_ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Vec<CheckpointTuple>, CheckpointError>;

    /// Stores the checkpoint; blobs only for channels in `new_versions` (unchanged channels are
    /// not stored again). A channel listed in `new_versions` but absent from
    /// `checkpoint.channel_values` is stored as empty.
    async fn put(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        metadata: &Map<String, Value>,
        new_versions: &BTreeMap<String, ChannelVersion>,
    ) -> Result<(), CheckpointError>;

    /// Pending writes of one task against checkpoint `checkpoint_id` (idempotent per
    /// `(task_id, index)`).
    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: &str,
        task_id: &str,
        writes: &[(String, Value)],
    ) -> Result<(), CheckpointError>;

    /// Deletes every checkpoint, blob and write of the thread (all namespaces).
    async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError>;

    /// Copies every checkpoint/blob/write of `from` to thread `to`.
    async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError>;

    /// Deletes the checkpoints of `thread_id` whose `metadata.run_id == run_id` (used by
    /// multitask/cancel "rollback").
    async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError>;

    /// Like [`Checkpointer::get_tuple`], with the channel values in the engine's shared form
    /// (the engine calls this one when it loads a thread). The returned tuple's
    /// `checkpoint.channel_values` is empty; the values are in the map. The default wraps
    /// `get_tuple`'s values (moving them, no copy); in-memory implementations override it to
    /// hand out their shared values, so loading a long thread costs no deep copy.
    async fn get_tuple_shared(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<(CheckpointTuple, BTreeMap<String, ChannelValue>)>, CheckpointError> {
        Ok(self
            .get_tuple(thread_id, checkpoint_ns, checkpoint_id)
            .await?
            .map(|mut t| {
                let values = std::mem::take(&mut t.checkpoint.channel_values)
                    .into_iter()
                    .map(|(k, v)| (k, ChannelValue::Value(Arc::new(v))))
                    .collect();
                (t, values)
            }))
    }

    /// Like [`Checkpointer::put`], with the channel values in the engine's shared form (the
    /// engine calls this one). `checkpoint.channel_values` is empty; `values` holds every
    /// non-empty channel. The default materializes the changed channels and calls `put`;
    /// in-memory implementations override it to keep the shared form and skip the copy.
    #[allow(clippy::too_many_arguments)]
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
        let mut cp = checkpoint.clone();
        for key in new_versions.keys() {
            if let Some(v) = values.get(key) {
                cp.channel_values.insert(key.clone(), v.to_value());
            }
        }
        self.put(
            thread_id,
            checkpoint_ns,
            parent_id,
            &cp,
            metadata,
            new_versions,
        )
        .await
    }
}

// ---------------------------------------------------------------- owners

/// The key a thread's checkpoints are stored under: thread ids are chosen by clients, so two
/// users may both have a thread `X`; storage keys them by owner + id. The separator (U+001F)
/// cannot occur in an owner (owners are user ids, API-key user names and HTTP header values,
/// none of which may hold control characters), so the key names exactly one (owner, thread).
/// The SQL migrations that moved existing checkpoints under these keys spell the same format.
pub fn thread_key(owner: &str, thread_id: &str) -> String {
    format!("{owner}\u{1f}{thread_id}")
}

/// The checkpoints of one owner: a view of a shared [`Checkpointer`] that stores every thread
/// under [`thread_key`]`(owner, thread_id)` and hands tuples back with the caller's thread id.
/// The runtime and the gateway only ever see checkpoints through this view, so one user's
/// thread `X` and another's never meet, whatever the backend.
pub struct OwnerCheckpointer {
    inner: Arc<dyn Checkpointer>,
    owner: String,
}

impl OwnerCheckpointer {
    /// The view of `owner`'s checkpoints in `inner`.
    pub fn new(inner: Arc<dyn Checkpointer>, owner: &str) -> Self {
        Self {
            inner,
            owner: owner.to_string(),
        }
    }

    fn key(&self, thread_id: &str) -> String {
        thread_key(&self.owner, thread_id)
    }
}

fn with_thread_id(mut t: CheckpointTuple, thread_id: &str) -> CheckpointTuple {
    t.thread_id = thread_id.to_string();
    t
}

#[async_trait::async_trait]
impl Checkpointer for OwnerCheckpointer {
    async fn get_tuple(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError> {
        Ok(self
            .inner
            .get_tuple(&self.key(thread_id), checkpoint_ns, checkpoint_id)
            .await?
            .map(|t| with_thread_id(t, thread_id)))
    }

    async fn list(
        &self,
        thread_id: &str,
        checkpoint_ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Vec<CheckpointTuple>, CheckpointError> {
        Ok(self
            .inner
            .list(&self.key(thread_id), checkpoint_ns, opts)
            .await?
            .into_iter()
            .map(|t| with_thread_id(t, thread_id))
            .collect())
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
        self.inner
            .put(
                &self.key(thread_id),
                checkpoint_ns,
                parent_id,
                checkpoint,
                metadata,
                new_versions,
            )
            .await
    }

    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: &str,
        task_id: &str,
        writes: &[(String, Value)],
    ) -> Result<(), CheckpointError> {
        self.inner
            .put_writes(
                &self.key(thread_id),
                checkpoint_ns,
                checkpoint_id,
                task_id,
                writes,
            )
            .await
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError> {
        self.inner.delete_thread(&self.key(thread_id)).await
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError> {
        self.inner.copy_thread(&self.key(from), &self.key(to)).await
    }

    async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError> {
        self.inner.delete_run(&self.key(thread_id), run_id).await
    }

    async fn get_tuple_shared(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<(CheckpointTuple, BTreeMap<String, ChannelValue>)>, CheckpointError> {
        Ok(self
            .inner
            .get_tuple_shared(&self.key(thread_id), checkpoint_ns, checkpoint_id)
            .await?
            .map(|(t, values)| (with_thread_id(t, thread_id), values)))
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
        self.inner
            .put_shared(
                &self.key(thread_id),
                checkpoint_ns,
                parent_id,
                checkpoint,
                values,
                metadata,
                new_versions,
            )
            .await
    }
}

// ---------------------------------------------------------------- ids and timestamps

/// 100-ns intervals between 1582-10-15 (UUID epoch) and 1970-01-01.
const UUID_EPOCH_OFFSET: u64 = 0x01B2_1DD2_1381_4000;

/// Last timestamp handed out, so ids are strictly increasing within the process.
static LAST_TICKS: AtomicU64 = AtomicU64::new(0);

fn next_ticks() -> u64 {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
    let ticks = nanos / 100 + UUID_EPOCH_OFFSET;
    let mut prev = LAST_TICKS.load(Ordering::Relaxed);
    loop {
        let candidate = if ticks > prev { ticks } else { prev + 1 };
        match LAST_TICKS.compare_exchange_weak(prev, candidate, Ordering::SeqCst, Ordering::Relaxed)
        {
            Ok(_) => return candidate,
            Err(actual) => prev = actual,
        }
    }
}

/// A new time-ordered checkpoint id: LangGraph's uuid6 layout with clock sequence = `step`
/// (14 bits; -1 becomes `bfff`). Strictly increasing within the process.
pub fn new_checkpoint_id(step: i64) -> String {
    let ticks = next_ticks();
    let time_high = ((ticks >> 28) & 0xFFFF_FFFF) as u32;
    let time_mid = ((ticks >> 12) & 0xFFFF) as u16;
    let time_low = (ticks & 0x0FFF) as u16 | 0x6000;
    let clock_seq = ((step as u64) & 0x3FFF) as u16 | 0x8000;
    let node: u64 = rand::random::<u64>() & 0xFFFF_FFFF_FFFF;
    format!("{time_high:08x}-{time_mid:04x}-{time_low:04x}-{clock_seq:04x}-{node:012x}")
}

/// Current time as RFC3339 UTC with microseconds and `+00:00`.
pub fn now_ts() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

// ---------------------------------------------------------------- in-memory implementation

#[derive(Clone)]
struct StoredCheckpoint {
    /// The checkpoint without channel values.
    checkpoint: Checkpoint,
    metadata: Map<String, Value>,
    parent_id: Option<String>,
}

#[derive(Clone, Default)]
struct NsData {
    checkpoints: BTreeMap<String, StoredCheckpoint>,
    /// (channel, version) -> value (None = empty channel).
    blobs: HashMap<(String, ChannelVersion), Option<ChannelValue>>,
    /// checkpoint id -> writes (task_id, index, channel, value) in insertion order.
    writes: HashMap<String, Vec<(String, usize, String, Value)>>,
}

type ThreadData = HashMap<String, NsData>;

/// In-memory [`Checkpointer`]: keeps channel values in the shared form, so storing a step of a
/// long thread is O(changed channels), not O(thread length).
#[derive(Clone, Default)]
pub struct MemoryCheckpointer {
    /// thread id -> namespace -> data. One lock: operations are short and never await inside.
    inner: Arc<Mutex<HashMap<String, ThreadData>>>,
}

impl MemoryCheckpointer {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn store(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        parent_id: Option<&str>,
        checkpoint: &Checkpoint,
        values: BTreeMap<String, Option<ChannelValue>>,
        metadata: &Map<String, Value>,
    ) {
        let mut inner = self.inner.lock();
        let ns = inner
            .entry(thread_id.to_string())
            .or_default()
            .entry(checkpoint_ns.to_string())
            .or_default();
        for (channel, value) in values {
            let version = checkpoint
                .channel_versions
                .get(&channel)
                .copied()
                .unwrap_or(0);
            ns.blobs.insert((channel, version), value);
        }
        let mut bare = checkpoint.clone();
        bare.channel_values = Map::new();
        ns.checkpoints.insert(
            checkpoint.id.clone(),
            StoredCheckpoint {
                checkpoint: bare,
                metadata: metadata.clone(),
                parent_id: parent_id.map(str::to_string),
            },
        );
    }

    fn tuple(
        thread_id: &str,
        ns_name: &str,
        ns: &NsData,
        stored: &StoredCheckpoint,
        with_values: bool,
    ) -> CheckpointTuple {
        let mut checkpoint = stored.checkpoint.clone();
        for (channel, version) in stored
            .checkpoint
            .channel_versions
            .iter()
            .filter(|_| with_values)
        {
            if let Some(Some(v)) = ns.blobs.get(&(channel.clone(), *version)) {
                checkpoint
                    .channel_values
                    .insert(channel.clone(), v.to_value());
            }
        }
        let pending_writes = ns
            .writes
            .get(&stored.checkpoint.id)
            .map(|ws| {
                ws.iter()
                    .map(|(task_id, _, channel, value)| PendingWrite {
                        task_id: task_id.clone(),
                        channel: channel.clone(),
                        value: value.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        CheckpointTuple {
            thread_id: thread_id.to_string(),
            checkpoint_ns: ns_name.to_string(),
            checkpoint,
            metadata: stored.metadata.clone(),
            parent_checkpoint_id: stored.parent_id.clone(),
            pending_writes,
        }
    }
}

fn metadata_matches(metadata: &Map<String, Value>, filter: &Map<String, Value>) -> bool {
    filter.iter().all(|(k, v)| metadata.get(k) == Some(v))
}

#[async_trait::async_trait]
impl Checkpointer for MemoryCheckpointer {
    async fn get_tuple(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<CheckpointTuple>, CheckpointError> {
        let inner = self.inner.lock();
        let Some(ns) = inner.get(thread_id).and_then(|t| t.get(checkpoint_ns)) else {
            return Ok(None);
        };
        let stored = match checkpoint_id {
            Some(id) => ns.checkpoints.get(id),
            None => ns.checkpoints.values().next_back(),
        };
        Ok(stored.map(|s| Self::tuple(thread_id, checkpoint_ns, ns, s, true)))
    }

    async fn get_tuple_shared(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: Option<&str>,
    ) -> Result<Option<(CheckpointTuple, BTreeMap<String, ChannelValue>)>, CheckpointError> {
        let inner = self.inner.lock();
        let Some(ns) = inner.get(thread_id).and_then(|t| t.get(checkpoint_ns)) else {
            return Ok(None);
        };
        let stored = match checkpoint_id {
            Some(id) => ns.checkpoints.get(id),
            None => ns.checkpoints.values().next_back(),
        };
        Ok(stored.map(|s| {
            let mut values = BTreeMap::new();
            for (channel, version) in &s.checkpoint.channel_versions {
                if let Some(Some(v)) = ns.blobs.get(&(channel.clone(), *version)) {
                    values.insert(channel.clone(), v.clone());
                }
            }
            (Self::tuple(thread_id, checkpoint_ns, ns, s, false), values)
        }))
    }

    async fn list(
        &self,
        thread_id: &str,
        checkpoint_ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Vec<CheckpointTuple>, CheckpointError> {
        let inner = self.inner.lock();
        let Some(thread) = inner.get(thread_id) else {
            return Ok(Vec::new());
        };
        let mut all: Vec<(&String, &NsData, &StoredCheckpoint)> = Vec::new();
        for (ns_name, ns) in thread {
            if checkpoint_ns.is_some_and(|want| want != ns_name) {
                continue;
            }
            for stored in ns.checkpoints.values() {
                if opts
                    .before
                    .as_deref()
                    .is_some_and(|before| stored.checkpoint.id.as_str() >= before)
                {
                    continue;
                }
                if !metadata_matches(&stored.metadata, &opts.filter) {
                    continue;
                }
                all.push((ns_name, ns, stored));
            }
        }
        all.sort_by(|a, b| b.2.checkpoint.id.cmp(&a.2.checkpoint.id));
        if let Some(limit) = opts.limit {
            all.truncate(limit);
        }
        Ok(all
            .into_iter()
            .map(|(ns_name, ns, stored)| Self::tuple(thread_id, ns_name, ns, stored, true))
            .collect())
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
        let values = new_versions
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    checkpoint
                        .channel_values
                        .get(k)
                        .map(|v| ChannelValue::Value(Arc::new(v.clone()))),
                )
            })
            .collect();
        self.store(
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            values,
            metadata,
        );
        Ok(())
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
        let values = new_versions
            .keys()
            .map(|k| (k.clone(), values.get(k).cloned()))
            .collect();
        self.store(
            thread_id,
            checkpoint_ns,
            parent_id,
            checkpoint,
            values,
            metadata,
        );
        Ok(())
    }

    async fn put_writes(
        &self,
        thread_id: &str,
        checkpoint_ns: &str,
        checkpoint_id: &str,
        task_id: &str,
        writes: &[(String, Value)],
    ) -> Result<(), CheckpointError> {
        let mut inner = self.inner.lock();
        let ns = inner
            .entry(thread_id.to_string())
            .or_default()
            .entry(checkpoint_ns.to_string())
            .or_default();
        let list = ns.writes.entry(checkpoint_id.to_string()).or_default();
        for (idx, (channel, value)) in writes.iter().enumerate() {
            if let Some(existing) = list
                .iter_mut()
                .find(|(t, i, _, _)| t == task_id && *i == idx)
            {
                existing.2 = channel.clone();
                existing.3 = value.clone();
            } else {
                list.push((task_id.to_string(), idx, channel.clone(), value.clone()));
            }
        }
        Ok(())
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), CheckpointError> {
        self.inner.lock().remove(thread_id);
        Ok(())
    }

    async fn copy_thread(&self, from: &str, to: &str) -> Result<(), CheckpointError> {
        let mut inner = self.inner.lock();
        if let Some(data) = inner.get(from).cloned() {
            inner.insert(to.to_string(), data);
        }
        Ok(())
    }

    async fn delete_run(&self, thread_id: &str, run_id: &str) -> Result<(), CheckpointError> {
        let mut inner = self.inner.lock();
        if let Some(thread) = inner.get_mut(thread_id) {
            for ns in thread.values_mut() {
                let doomed: Vec<String> = ns
                    .checkpoints
                    .values()
                    .filter(|s| s.metadata.get("run_id").and_then(Value::as_str) == Some(run_id))
                    .map(|s| s.checkpoint.id.clone())
                    .collect();
                for id in doomed {
                    ns.checkpoints.remove(&id);
                    ns.writes.remove(&id);
                }
            }
            thread.retain(|_, ns| !ns.checkpoints.is_empty() || !ns.writes.is_empty());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod memory_checkpointer_conformance {
        use super::*;
        crate::checkpointer_conformance!(async {
            Some(Arc::new(MemoryCheckpointer::new()) as Arc<dyn Checkpointer>)
        });
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = new_checkpoint_id(-1);
        let b = new_checkpoint_id(0);
        let c = new_checkpoint_id(1);
        assert!(a < b && b < c, "ids must sort by time: {a} {b} {c}");
        assert_eq!(&a[19..23], "bfff");
        assert_eq!(&b[19..23], "8000");
        assert_eq!(&c[19..23], "8001");
        assert_eq!(a.len(), 36);
        assert!(now_ts().ends_with("+00:00"));
    }
}
