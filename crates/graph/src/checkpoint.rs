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

// ---------------------------------------------------------------- conformance suite

/// The shared contract test suite: every [`Checkpointer`] implementation runs
/// [`conformance::run_all`] from its own tests. It panics (assert) on the first violation.
pub mod conformance {
    use super::*;
    use serde_json::json;

    fn meta(source: &str, step: i64, run_id: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("source".into(), json!(source));
        m.insert("step".into(), json!(step));
        m.insert("parents".into(), json!({}));
        m.insert("run_id".into(), json!(run_id));
        m
    }

    fn cp(
        step: i64,
        values: Value,
        versions: &[(&str, u64)],
        seen: &[(&str, &str, u64)],
    ) -> Checkpoint {
        let mut versions_seen: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (node, ch, v) in seen {
            versions_seen
                .entry(node.to_string())
                .or_default()
                .insert(ch.to_string(), *v);
        }
        Checkpoint {
            id: new_checkpoint_id(step),
            ts: now_ts(),
            channel_values: values.as_object().cloned().unwrap_or_default(),
            channel_versions: versions.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            versions_seen,
            updated_channels: versions.iter().map(|(k, _)| k.to_string()).collect(),
        }
    }

    fn versions(vs: &[(&str, u64)]) -> BTreeMap<String, ChannelVersion> {
        vs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn ids(tuples: &[CheckpointTuple]) -> Vec<String> {
        tuples.iter().map(|t| t.checkpoint.id.clone()).collect()
    }

    /// Runs every contract check against `cp`. Uses thread ids prefixed `conformance-`.
    pub async fn run_all(store: Arc<dyn Checkpointer>) {
        round_trip_and_unchanged_channels(store.as_ref()).await;
        list_order_before_limit_filter(store.as_ref()).await;
        pending_writes(store.as_ref()).await;
        delete_copy_delete_run(store.as_ref()).await;
        shared_put(store.as_ref()).await;
        owners_do_not_meet(store.clone()).await;
        // The whole contract holds through an owner's view too (what the server uses).
        let view = OwnerCheckpointer::new(store, "conformance-owner");
        round_trip_and_unchanged_channels(&view).await;
        delete_copy_delete_run(&view).await;
        shared_put(&view).await;
        ids_are_time_ordered();
    }

    /// Two owners' views of one store, both with a thread of the same id, never see each
    /// other's checkpoints; tuples carry the caller's thread id, not the storage key.
    async fn owners_do_not_meet(store: Arc<dyn Checkpointer>) {
        let t = "conformance-owners";
        let a = OwnerCheckpointer::new(store.clone(), "owner-a");
        let b = OwnerCheckpointer::new(store.clone(), "owner-b");
        for v in [&a, &b] {
            v.delete_thread(t).await.unwrap();
        }
        let ca = cp(0, json!({"who": "a"}), &[("who", 1)], &[]);
        a.put(
            t,
            "",
            None,
            &ca,
            &meta("input", 0, "run-a"),
            &versions(&[("who", 1)]),
        )
        .await
        .unwrap();
        assert!(b.get_tuple(t, "", None).await.unwrap().is_none());
        assert!(
            b.list(t, None, &ListOptions::default())
                .await
                .unwrap()
                .is_empty()
        );
        assert!(b.get_tuple(t, "", Some(&ca.id)).await.unwrap().is_none());
        let cb = cp(0, json!({"who": "b"}), &[("who", 1)], &[]);
        b.put(
            t,
            "",
            None,
            &cb,
            &meta("input", 0, "run-b"),
            &versions(&[("who", 1)]),
        )
        .await
        .unwrap();
        let got_a = a.get_tuple(t, "", None).await.unwrap().unwrap();
        assert_eq!(got_a.thread_id, t);
        assert_eq!(got_a.checkpoint.id, ca.id);
        assert_eq!(got_a.checkpoint.channel_values["who"], json!("a"));
        let got_b = b.get_tuple(t, "", None).await.unwrap().unwrap();
        assert_eq!(got_b.checkpoint.channel_values["who"], json!("b"));
        let (shared, values) = b.get_tuple_shared(t, "", None).await.unwrap().unwrap();
        assert_eq!(shared.thread_id, t);
        assert_eq!(values["who"].to_value(), json!("b"));
        let listed = a.list(t, None, &ListOptions::default()).await.unwrap();
        assert_eq!(ids(&listed), vec![ca.id.clone()]);
        assert!(listed.iter().all(|x| x.thread_id == t));
        // One owner's rollback, delete and copy leave the other's thread alone.
        b.delete_run(t, "run-a").await.unwrap();
        assert!(a.get_tuple(t, "", None).await.unwrap().is_some());
        b.delete_thread(t).await.unwrap();
        assert!(b.get_tuple(t, "", None).await.unwrap().is_none());
        assert_eq!(
            a.get_tuple(t, "", None)
                .await
                .unwrap()
                .unwrap()
                .checkpoint
                .id,
            ca.id
        );
        // Nothing is stored under the bare id.
        assert!(store.get_tuple(t, "", None).await.unwrap().is_none());
        a.delete_thread(t).await.unwrap();
    }

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

    async fn round_trip_and_unchanged_channels(store: &dyn Checkpointer) {
        let t = "conformance-rt";
        store.delete_thread(t).await.ok();
        assert!(store.get_tuple(t, "", None).await.unwrap().is_none());

        let c1 = cp(-1, json!({"messages": []}), &[("messages", 1)], &[]);
        let m1 = meta("input", -1, "run-1");
        store
            .put(t, "", None, &c1, &m1, &versions(&[("messages", 1)]))
            .await
            .unwrap();
        let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
        assert_eq!(got.checkpoint, c1);
        assert_eq!(got.metadata, m1);
        assert_eq!(got.parent_checkpoint_id, None);
        assert_eq!(got.thread_id, t);
        assert_eq!(got.checkpoint_ns, "");
        assert!(got.pending_writes.is_empty());

        // step 0 writes messages; step 1 writes only title: messages reloaded from version 2
        let c2 = cp(
            0,
            json!({"messages": [{"type": "human", "content": "hi", "id": "1"}]}),
            &[("messages", 2)],
            &[("__input__", "messages", 1)],
        );
        store
            .put(
                t,
                "",
                Some(&c1.id),
                &c2,
                &meta("loop", 0, "run-1"),
                &versions(&[("messages", 2)]),
            )
            .await
            .unwrap();
        let mut c3 = cp(
            1,
            json!({"title": "hello"}),
            &[("messages", 2), ("title", 3)],
            &[("echo", "messages", 2)],
        );
        c3.updated_channels = vec!["title".into()];
        store
            .put(
                t,
                "",
                Some(&c2.id),
                &c3,
                &meta("loop", 1, "run-1"),
                &versions(&[("title", 3)]),
            )
            .await
            .unwrap();
        let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
        assert_eq!(got.checkpoint.id, c3.id);
        assert_eq!(got.parent_checkpoint_id.as_deref(), Some(c2.id.as_str()));
        assert_eq!(
            Value::Object(got.checkpoint.channel_values.clone()),
            json!({"messages": [{"type": "human", "content": "hi", "id": "1"}], "title": "hello"})
        );
        assert_eq!(got.checkpoint.channel_versions, c3.channel_versions);
        assert_eq!(got.checkpoint.versions_seen, c3.versions_seen);
        assert_eq!(got.checkpoint.updated_channels, vec!["title".to_string()]);
        assert_eq!(got.checkpoint.ts, c3.ts);

        // by id: the older checkpoint still sees its own values
        let old = store.get_tuple(t, "", Some(&c1.id)).await.unwrap().unwrap();
        assert_eq!(
            Value::Object(old.checkpoint.channel_values),
            json!({"messages": []})
        );
        assert!(
            store
                .get_tuple(t, "", Some("nope"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get_tuple(t, "other-ns", None)
                .await
                .unwrap()
                .is_none()
        );

        // a channel in new_versions but absent from values is stored as empty
        let c4 = cp(2, json!({}), &[("messages", 2), ("title", 4)], &[]);
        store
            .put(
                t,
                "",
                Some(&c3.id),
                &c4,
                &meta("loop", 2, "run-1"),
                &versions(&[("title", 4)]),
            )
            .await
            .unwrap();
        let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
        assert_eq!(
            Value::Object(got.checkpoint.channel_values),
            json!({"messages": [{"type": "human", "content": "hi", "id": "1"}]})
        );
        store.delete_thread(t).await.unwrap();
    }

    async fn list_order_before_limit_filter(store: &dyn Checkpointer) {
        let t = "conformance-list";
        store.delete_thread(t).await.ok();
        let mut all = Vec::new();
        let mut parent: Option<String> = None;
        for step in -1..4i64 {
            let source = if step < 0 { "input" } else { "loop" };
            let c = cp(step, json!({"n": step}), &[("n", (step + 2) as u64)], &[]);
            store
                .put(
                    t,
                    "",
                    parent.as_deref(),
                    &c,
                    &meta(source, step, "run-l"),
                    &versions(&[("n", (step + 2) as u64)]),
                )
                .await
                .unwrap();
            parent = Some(c.id.clone());
            all.push(c.id.clone());
        }
        // a subgraph namespace checkpoint
        let sub = cp(0, json!({"n": 100}), &[("n", 1)], &[]);
        store
            .put(
                t,
                "child:abc",
                None,
                &sub,
                &meta("loop", 0, "run-l"),
                &versions(&[("n", 1)]),
            )
            .await
            .unwrap();

        let mut newest_first = all.clone();
        newest_first.reverse();
        let root = store
            .list(t, Some(""), &ListOptions::default())
            .await
            .unwrap();
        assert_eq!(ids(&root), newest_first);
        assert_eq!(
            Value::Object(root[0].checkpoint.channel_values.clone()),
            json!({"n": 3})
        );

        let every = store.list(t, None, &ListOptions::default()).await.unwrap();
        assert_eq!(every.len(), 6);
        assert_eq!(every[0].checkpoint.id, sub.id);
        assert_eq!(every[0].checkpoint_ns, "child:abc");

        let limited = store
            .list(
                t,
                Some(""),
                &ListOptions {
                    limit: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&limited), newest_first[..2].to_vec());

        let before = store
            .list(
                t,
                Some(""),
                &ListOptions {
                    before: Some(all[2].clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&before), vec![all[1].clone(), all[0].clone()]);

        let mut filter = Map::new();
        filter.insert("source".into(), json!("input"));
        let filtered = store
            .list(
                t,
                Some(""),
                &ListOptions {
                    filter,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&filtered), vec![all[0].clone()]);

        let mut filter = Map::new();
        filter.insert("step".into(), json!(2));
        filter.insert("source".into(), json!("loop"));
        let filtered = store
            .list(
                t,
                Some(""),
                &ListOptions {
                    filter,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&filtered), vec![all[3].clone()]);

        assert!(
            store
                .list("conformance-none", None, &ListOptions::default())
                .await
                .unwrap()
                .is_empty()
        );
        store.delete_thread(t).await.unwrap();
    }

    async fn pending_writes(store: &dyn Checkpointer) {
        let t = "conformance-writes";
        store.delete_thread(t).await.ok();
        let c = cp(0, json!({"messages": []}), &[("messages", 1)], &[]);
        store
            .put(
                t,
                "",
                None,
                &c,
                &meta("loop", 0, "run-w"),
                &versions(&[("messages", 1)]),
            )
            .await
            .unwrap();
        let w1 = vec![
            (
                "messages".to_string(),
                json!([{"type": "ai", "content": "x", "id": "a"}]),
            ),
            ("title".to_string(), json!("t")),
        ];
        store.put_writes(t, "", &c.id, "task-1", &w1).await.unwrap();
        // idempotent
        store.put_writes(t, "", &c.id, "task-1", &w1).await.unwrap();
        store
            .put_writes(
                t,
                "",
                &c.id,
                "task-2",
                &[("__error__".to_string(), json!({"kind": "ValueError"}))],
            )
            .await
            .unwrap();
        let got = store.get_tuple(t, "", Some(&c.id)).await.unwrap().unwrap();
        assert_eq!(got.pending_writes.len(), 3, "{:?}", got.pending_writes);
        assert_eq!(got.pending_writes[0].task_id, "task-1");
        assert_eq!(got.pending_writes[0].channel, "messages");
        assert_eq!(got.pending_writes[1].channel, "title");
        assert_eq!(got.pending_writes[1].value, json!("t"));
        assert_eq!(got.pending_writes[2].task_id, "task-2");
        assert_eq!(got.pending_writes[2].channel, "__error__");
        let listed = store
            .list(t, Some(""), &ListOptions::default())
            .await
            .unwrap();
        assert_eq!(listed[0].pending_writes.len(), 3);
        store.delete_thread(t).await.unwrap();
    }

    async fn delete_copy_delete_run(store: &dyn Checkpointer) {
        let t = "conformance-copy";
        let t2 = "conformance-copy-2";
        store.delete_thread(t).await.ok();
        store.delete_thread(t2).await.ok();
        let c1 = cp(-1, json!({"messages": []}), &[("messages", 1)], &[]);
        store
            .put(
                t,
                "",
                None,
                &c1,
                &meta("input", -1, "run-a"),
                &versions(&[("messages", 1)]),
            )
            .await
            .unwrap();
        let c2 = cp(
            0,
            json!({"title": "a"}),
            &[("messages", 1), ("title", 2)],
            &[],
        );
        store
            .put(
                t,
                "",
                Some(&c1.id),
                &c2,
                &meta("loop", 0, "run-a"),
                &versions(&[("title", 2)]),
            )
            .await
            .unwrap();
        store
            .put_writes(
                t,
                "",
                &c2.id,
                "task-x",
                &[("title".to_string(), json!("b"))],
            )
            .await
            .unwrap();
        let c3 = cp(
            1,
            json!({"title": "c"}),
            &[("messages", 1), ("title", 3)],
            &[],
        );
        store
            .put(
                t,
                "",
                Some(&c2.id),
                &c3,
                &meta("loop", 1, "run-b"),
                &versions(&[("title", 3)]),
            )
            .await
            .unwrap();
        let sub = cp(0, json!({"n": 1}), &[("n", 1)], &[]);
        store
            .put(
                t,
                "child:1",
                None,
                &sub,
                &meta("loop", 0, "run-b"),
                &versions(&[("n", 1)]),
            )
            .await
            .unwrap();

        store.copy_thread(t, t2).await.unwrap();
        let copied = store.list(t2, None, &ListOptions::default()).await.unwrap();
        assert_eq!(copied.len(), 4);
        assert!(copied.iter().all(|c| c.thread_id == t2));
        let latest = store.get_tuple(t2, "", None).await.unwrap().unwrap();
        assert_eq!(latest.checkpoint.id, c3.id);
        assert_eq!(
            Value::Object(latest.checkpoint.channel_values),
            json!({"messages": [], "title": "c"})
        );
        let w = store
            .get_tuple(t2, "", Some(&c2.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(w.pending_writes.len(), 1);
        assert!(
            store
                .get_tuple(t2, "child:1", None)
                .await
                .unwrap()
                .is_some()
        );

        // delete_run removes only run-b's checkpoints, on t only
        store.delete_run(t, "run-b").await.unwrap();
        let left = store.list(t, None, &ListOptions::default()).await.unwrap();
        assert_eq!(ids(&left), vec![c2.id.clone(), c1.id.clone()]);
        let latest = store.get_tuple(t, "", None).await.unwrap().unwrap();
        assert_eq!(latest.checkpoint.id, c2.id);
        assert_eq!(
            Value::Object(latest.checkpoint.channel_values),
            json!({"messages": [], "title": "a"})
        );
        assert_eq!(latest.pending_writes.len(), 1);
        assert_eq!(
            store
                .list(t2, None, &ListOptions::default())
                .await
                .unwrap()
                .len(),
            4
        );

        store.delete_thread(t).await.unwrap();
        assert!(store.get_tuple(t, "", None).await.unwrap().is_none());
        assert!(
            store
                .list(t, None, &ListOptions::default())
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .list(t2, None, &ListOptions::default())
                .await
                .unwrap()
                .len(),
            4
        );
        store.delete_thread(t2).await.unwrap();
    }

    async fn shared_put(store: &dyn Checkpointer) {
        let t = "conformance-shared";
        store.delete_thread(t).await.ok();
        let mut c = cp(0, json!({}), &[("messages", 5), ("title", 6)], &[]);
        c.channel_values = Map::new();
        let mut values = BTreeMap::new();
        values.insert(
            "messages".to_string(),
            ChannelValue::from_value(json!([{"id": "1"}, {"id": "2"}]), true),
        );
        values.insert(
            "title".to_string(),
            ChannelValue::from_value(json!("x"), false),
        );
        store
            .put_shared(
                t,
                "",
                None,
                &c,
                &values,
                &meta("loop", 0, "r"),
                &versions(&[("messages", 5), ("title", 6)]),
            )
            .await
            .unwrap();
        let got = store.get_tuple(t, "", None).await.unwrap().unwrap();
        assert_eq!(
            Value::Object(got.checkpoint.channel_values),
            json!({"messages": [{"id": "1"}, {"id": "2"}], "title": "x"})
        );
        let (tuple, shared) = store.get_tuple_shared(t, "", None).await.unwrap().unwrap();
        assert_eq!(tuple.checkpoint.id, c.id);
        assert_eq!(tuple.checkpoint.channel_versions, c.channel_versions);
        assert!(tuple.checkpoint.channel_values.is_empty());
        let as_json: Map<String, Value> = shared
            .iter()
            .map(|(k, v)| (k.clone(), v.to_value()))
            .collect();
        assert_eq!(
            Value::Object(as_json),
            json!({"messages": [{"id": "1"}, {"id": "2"}], "title": "x"})
        );
        store.delete_thread(t).await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_checkpointer_passes_conformance() {
        conformance::run_all(Arc::new(MemoryCheckpointer::new())).await;
    }
}
