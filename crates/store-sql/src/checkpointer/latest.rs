//! The write-through cache of each thread's latest checkpoint, in the engine's shared form.
//!
//! A run starts by loading its thread's latest checkpoint; rebuilding it from the database
//! costs a read of every channel (a long chat's whole history) and a parse of all of it. This
//! cache keeps what the last committed write (or read) of a (thread, namespace) left: the head,
//! the channel values as shared lists (the same `Arc`s the engine holds, so an entry of a
//! 2,000-message thread costs pointers, not copies), and the pending writes against it.
//!
//! It is filled after a commit (never with uncommitted data), updated by pending writes of
//! the cached checkpoint, and dropped for a thread by every other write path (plain puts that
//! carry only the changed channels, deletes, copies onto it, rollbacks). On a database other
//! processes write too, an entry is trusted only after one cheap query confirms it is still
//! the latest checkpoint with the same number of pending writes (see
//! [`super::SqlCheckpointer::get_tuple_shared`]).
//!
//! Bounded by entries and by weight (one unit per channel plus one per list item), evicting
//! the least recently used: memory per idle thread is bounded by the cap, not by the number
//! of threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_graph::{ChannelValue, CheckpointTuple, PendingWrite};

use super::plan::HeadKey;

/// Most threads (namespaces) cached.
pub(crate) const LATEST_CAP: usize = 2048;
/// Most list items plus channels held across all entries (about 200k messages).
pub(crate) const LATEST_WEIGHT_CAP: usize = 200_000;
/// How long a confirmation from inside a committed transaction (a run's claim) stands in for
/// the version query of the next read (see [`Latest::confirm`]).
pub(crate) const CONFIRM_FRESH: Duration = Duration::from_secs(1);

/// One cached latest checkpoint.
pub(crate) struct Entry {
    /// The tuple with empty `checkpoint.channel_values` (the values are in `values`).
    pub tuple: CheckpointTuple,
    pub values: BTreeMap<String, ChannelValue>,
}

impl Entry {
    fn weight(&self) -> usize {
        self.values
            .values()
            .map(|v| match v {
                ChannelValue::List(items) => 1 + items.len(),
                ChannelValue::Value(_) => 1,
            })
            .sum::<usize>()
            + 1
    }
}

struct Slot {
    tick: u64,
    weight: usize,
    entry: Arc<Entry>,
    /// When a committed transaction last saw this entry as the database's latest (unused).
    confirmed: Option<Instant>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Latest {
    map: HashMap<HeadKey, Slot>,
    tick: u64,
    weight: usize,
}

impl Latest {
    pub(crate) fn get(&mut self, key: &HeadKey) -> Option<Arc<Entry>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|s| {
            s.tick = tick;
            s.entry.clone()
        })
    }

    /// Caches `entry` as the latest checkpoint of `key`, unless a newer one is cached.
    pub(crate) fn put(&mut self, key: HeadKey, entry: Entry) {
        if let Some(cur) = self.map.get(&key)
            && cur.entry.tuple.checkpoint.id > entry.tuple.checkpoint.id
        {
            return;
        }
        self.insert(key, entry);
    }

    fn insert(&mut self, key: HeadKey, entry: Entry) {
        self.tick += 1;
        let weight = entry.weight();
        if weight > LATEST_WEIGHT_CAP {
            self.remove(&key);
            return;
        }
        let slot = Slot {
            tick: self.tick,
            weight,
            entry: Arc::new(entry),
            confirmed: None,
        };
        if let Some(old) = self.map.insert(key, slot) {
            self.weight -= old.weight;
        }
        self.weight += weight;
        self.evict();
    }

    fn evict(&mut self) {
        while self.map.len() > LATEST_CAP || self.weight > LATEST_WEIGHT_CAP {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, s)| s.tick)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.remove(&oldest);
        }
    }

    /// Records that a committed transaction read `(checkpoint_id, pending)` as the latest
    /// version of `key` (a run's claim does, in its own transaction): when the entry is that
    /// version, the next read within [`CONFIRM_FRESH`] trusts it without a query of its own.
    pub(crate) fn confirm(&mut self, key: &HeadKey, checkpoint_id: &str, pending: usize) {
        if let Some(slot) = self.map.get_mut(key)
            && slot.entry.tuple.checkpoint.id == checkpoint_id
            && slot.entry.tuple.pending_writes.len() == pending
        {
            slot.confirmed = Some(Instant::now());
        }
    }

    /// Uses up a fresh confirmation of `key`'s entry (see [`Latest::confirm`]).
    pub(crate) fn take_confirmed(&mut self, key: &HeadKey) -> bool {
        self.map
            .get_mut(key)
            .and_then(|s| s.confirmed.take())
            .is_some_and(|at| at.elapsed() < CONFIRM_FRESH)
    }

    pub(crate) fn remove(&mut self, key: &HeadKey) {
        if let Some(old) = self.map.remove(key) {
            self.weight -= old.weight;
        }
    }

    /// Adds one task's pending writes to the cached checkpoint `checkpoint_id` (replacing
    /// that task's earlier ones, as the store's upsert does); other checkpoints are ignored.
    pub(crate) fn add_writes(
        &mut self,
        key: &HeadKey,
        checkpoint_id: &str,
        task_id: &str,
        writes: Vec<PendingWrite>,
    ) {
        let Some(slot) = self.map.get(key) else {
            return;
        };
        if slot.entry.tuple.checkpoint.id != checkpoint_id {
            return;
        }
        let mut tuple = slot.entry.tuple.clone();
        let values = slot.entry.values.clone();
        let pending = &mut tuple.pending_writes;
        match pending.iter().position(|w| w.task_id == task_id) {
            Some(first) => {
                pending.retain(|w| w.task_id != task_id);
                let at = first.min(pending.len());
                pending.splice(at..at, writes);
            }
            None => pending.extend(writes),
        }
        self.insert(key.clone(), Entry { tuple, values });
    }

    pub(crate) fn forget_thread(&mut self, thread_id: &str) {
        let doomed: Vec<HeadKey> = self
            .map
            .keys()
            .filter(|(t, _)| t == thread_id)
            .cloned()
            .collect();
        for k in doomed {
            self.remove(&k);
        }
    }
}
