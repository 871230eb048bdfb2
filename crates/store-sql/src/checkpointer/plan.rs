//! What a checkpoint write stores, decided before any SQL runs: the stored head's JSON shape,
//! blob ids, list-delta planning and the per-process write caches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use antler_graph::{ChannelValue, ChannelVersion, Checkpoint, CheckpointError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A full value is written after this many consecutive deltas of a channel.
pub const MAX_DELTA_DEPTH: i64 = 32;

/// Bound on the delta-base cache (entries of (thread, ns, channel)); beyond it an arbitrary
/// entry is evicted. The cache only makes writes smaller; losing an entry costs one full write.
pub(crate) const LIST_CACHE_CAP: usize = 256;
/// Bound on the last-head cache (entries of (thread, ns)).
pub(crate) const HEAD_CACHE_CAP: usize = 1024;

#[derive(Clone)]
pub(crate) struct ListEntry {
    pub(crate) blob_id: i64,
    pub(crate) depth: i64,
    /// The list stored (in full or reconstructed) under `blob_id`; always `ChannelValue::List`.
    pub(crate) items: ChannelValue,
}

pub(crate) type HeadKey = (String, String);
pub(crate) type ListKey = (String, String, String);

/// A small map that evicts its least recently used entry beyond `cap` (O(cap) scan on
/// eviction: caps are small and an eviction is cheap next to the database write it follows).
pub(crate) struct Lru<K, V> {
    pub(crate) map: HashMap<K, (u64, V)>,
    pub(crate) tick: u64,
    pub(crate) cap: usize,
}

impl<K: Clone + std::hash::Hash + Eq, V> Lru<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            tick: 0,
            cap,
        }
    }

    pub(crate) fn get(&mut self, k: &K) -> Option<&V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(k).map(|e| {
            e.0 = tick;
            &e.1
        })
    }

    pub(crate) fn insert(&mut self, k: K, v: V) {
        self.tick += 1;
        self.map.insert(k, (self.tick, v));
        if self.map.len() > self.cap
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
    }

    pub(crate) fn retain(&mut self, mut f: impl FnMut(&K) -> bool) {
        self.map.retain(|k, _| f(k));
    }
}

pub(crate) struct Caches {
    /// (thread, ns) -> (id, channel -> blob id) of the last checkpoint this process wrote:
    /// saves reading the parent's head on the next step.
    pub(crate) heads: Lru<HeadKey, (String, BTreeMap<String, i64>)>,
    /// (thread, ns, channel) -> the list most recently written, usable as a delta base.
    pub(crate) lists: Lru<ListKey, ListEntry>,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            heads: Lru::new(HEAD_CACHE_CAP),
            lists: Lru::new(LIST_CACHE_CAP),
        }
    }
}

impl Caches {
    pub(crate) fn forget_thread(&mut self, thread_id: &str) {
        self.heads.retain(|(t, _)| t != thread_id);
        self.lists.retain(|(t, _, _)| t != thread_id);
    }
}

/// The stored head of a checkpoint (everything but the channel values).
#[derive(Serialize)]
pub(crate) struct HeadRef<'a> {
    pub(crate) id: &'a str,
    pub(crate) ts: &'a str,
    pub(crate) channel_versions: &'a BTreeMap<String, ChannelVersion>,
    pub(crate) versions_seen: &'a BTreeMap<String, BTreeMap<String, ChannelVersion>>,
    pub(crate) updated_channels: &'a [String],
    pub(crate) blobs: &'a BTreeMap<String, i64>,
}

#[derive(Deserialize)]
pub(crate) struct Head {
    pub(crate) id: String,
    pub(crate) ts: String,
    #[serde(default)]
    pub(crate) channel_versions: BTreeMap<String, ChannelVersion>,
    #[serde(default)]
    pub(crate) versions_seen: BTreeMap<String, BTreeMap<String, ChannelVersion>>,
    #[serde(default)]
    pub(crate) updated_channels: Vec<String>,
    #[serde(default)]
    pub(crate) blobs: BTreeMap<String, i64>,
}

pub(crate) fn serde_err(e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Serde(e.to_string())
}

pub(crate) fn new_blob_id() -> i64 {
    // positive, non-zero, random: unique in practice within a thread + namespace
    (rand::random::<u64>() >> 1).max(1) as i64
}

pub(crate) fn version_i64(v: ChannelVersion) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `[a,b,...]` from shared items, without materializing a copy of the list.
pub(crate) fn items_json<'a>(
    items: impl Iterator<Item = &'a Arc<Value>>,
) -> Result<String, CheckpointError> {
    let mut out = String::from("[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&**item).map_err(serde_err)?);
    }
    out.push(']');
    Ok(out)
}

pub(crate) fn channel_json(v: &ChannelValue) -> Result<String, CheckpointError> {
    match v {
        ChannelValue::Value(v) => serde_json::to_string(&**v).map_err(serde_err),
        ChannelValue::List(items) => items_json(items.iter()),
    }
}

/// If `new` extends `old` (same leading items), the number of leading items shared.
pub(crate) fn extends(old: &ChannelValue, new: &ChannelValue) -> Option<usize> {
    match (old, new) {
        (ChannelValue::List(o), ChannelValue::List(n)) if o.len() <= n.len() => o
            .iter()
            .zip(n.iter())
            .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
            .then_some(o.len()),
        _ => None,
    }
}

pub(crate) fn run_id_of(metadata: &Map<String, Value>) -> Option<&str> {
    metadata.get("run_id").and_then(Value::as_str)
}

#[derive(Clone)]
pub(crate) enum Payload {
    /// The whole value (`None` = empty channel).
    Full(Option<String>),
    /// Items appended to blob `base_id`.
    Delta {
        base_id: i64,
        depth: i64,
        suffix: String,
    },
}

/// One blob to write.
#[derive(Clone)]
pub(crate) struct BlobPlan {
    pub(crate) channel: String,
    pub(crate) version: ChannelVersion,
    pub(crate) blob_id: i64,
    pub(crate) payload: Payload,
    /// The list value, for the delta cache and for the full-write fallback.
    pub(crate) list: Option<ChannelValue>,
}

/// Where the values of the changed channels come from.
pub(crate) enum Values<'a> {
    Plain(&'a Map<String, Value>),
    Shared(&'a BTreeMap<String, ChannelValue>),
}

/// Decides, per changed channel, the blob to write: a delta when the new list extends the
/// list this process last wrote for the channel (bounded chains), else the full value.
pub(crate) fn plan(
    cache: &Mutex<Caches>,
    thread_id: &str,
    checkpoint_ns: &str,
    checkpoint: &Checkpoint,
    values: &Values<'_>,
    new_versions: &BTreeMap<String, ChannelVersion>,
) -> Result<Vec<BlobPlan>, CheckpointError> {
    let mut plans = Vec::with_capacity(new_versions.len());
    for (channel, nv) in new_versions {
        let version = checkpoint
            .channel_versions
            .get(channel)
            .copied()
            .unwrap_or(*nv);
        let blob_id = new_blob_id();
        let (payload, list) = match values {
            Values::Plain(m) => match m.get(channel) {
                Some(v) => (
                    Payload::Full(Some(serde_json::to_string(v).map_err(serde_err)?)),
                    None,
                ),
                None => (Payload::Full(None), None),
            },
            Values::Shared(m) => match m.get(channel) {
                Some(cv @ ChannelValue::List(items)) => {
                    let key = (
                        thread_id.to_string(),
                        checkpoint_ns.to_string(),
                        channel.clone(),
                    );
                    let base = cache.lock().lists.get(&key).cloned();
                    let delta = base.and_then(|b| {
                        if b.depth >= MAX_DELTA_DEPTH {
                            return None;
                        }
                        extends(&b.items, cv).map(|shared| (b, shared))
                    });
                    let payload = match delta {
                        Some((b, shared)) => Payload::Delta {
                            base_id: b.blob_id,
                            depth: b.depth + 1,
                            suffix: items_json(items.iter().skip(shared))?,
                        },
                        None => Payload::Full(Some(channel_json(cv)?)),
                    };
                    (payload, Some(cv.clone()))
                }
                Some(cv) => (Payload::Full(Some(channel_json(cv)?)), None),
                None => (Payload::Full(None), None),
            },
        };
        plans.push(BlobPlan {
            channel: channel.clone(),
            version,
            blob_id,
            payload,
            list,
        });
    }
    Ok(plans)
}
