//! [`MemoryBridge`]: the in-process [`StreamBridge`] (the zero-config default).
//!
//! Per stream it keeps a bounded log (at most `queue_maxsize` events and about `max_bytes`
//! bytes; the oldest are trimmed, the newest is always kept) behind a `parking_lot::RwLock`,
//! plus a `tokio::sync::Notify`. Publishing appends under the write lock and then wakes every
//! waiting subscriber; it never waits for a subscriber. Each subscriber has its own cursor (the
//! next seq it wants) and copies events out of the shared log in small batches under the read
//! lock, so any number of subscribers read at their own pace. A subscriber whose cursor falls
//! behind the trimmed part gets a `Gap` and ends.
//!
//! One janitor task (owned by the bridge: `TaskTracker` + `CancellationToken`, stopped by
//! `close()` or drop) runs the delayed `cleanup(stream, delay)` removals from a deadline heap
//! (no task per stream), evicts the oldest ended streams when more than `max_streams` are held,
//! and sweeps every `cleanup_interval_seconds`:
//! - ended streams with no subscriber are removed `terminal_ttl_seconds` after they ended;
//! - streams with no publish for `abandoned_ttl_seconds` (`awaiting_input_ttl_seconds` after
//!   `mark_awaiting_input`) are ended (subscribers get `End`), so a run that died silently cannot
//!   hold its subscribers forever;
//! - streams created by a waiting subscriber and never published to are removed after the same
//!   abandoned TTL and their subscribers get `End`: this bounds the wait of `subscribe` on an
//!   unknown stream.
//!
//! Lock order: the stream map before a stream's log; no lock is held across an `.await`.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::contract::{BridgeStats, StreamBridge};
use crate::error::BridgeError;
use crate::event::{BridgeEvent, BridgeItem, GapInfo, format_event_id, parse_event_id};
use crate::payload::Payload;
use crate::subscription::Subscription;

/// How many events a subscriber copies out of the shared log per lock acquisition.
const READ_BATCH: usize = 64;
/// Fixed per-event overhead added to the payload length when accounting bytes.
const EVENT_OVERHEAD_BYTES: usize = 64;

/// Options of the memory bridge (config section `stream_bridge`). Unknown keys are ignored here;
/// the binary warns about them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryBridgeConfig {
    /// Max events retained per stream (DeerFlow's `queue_maxsize`).
    pub queue_maxsize: usize,
    /// Max approximate bytes retained per stream.
    pub max_bytes: usize,
    /// Ended streams with no subscriber are removed this long after they ended.
    pub terminal_ttl_seconds: u64,
    /// Active streams with no publish for this long are ended.
    pub abandoned_ttl_seconds: u64,
    /// Replaces `abandoned_ttl_seconds` for a stream marked awaiting input (human in the loop).
    pub awaiting_input_ttl_seconds: u64,
    /// Period of the cleanup sweep.
    pub cleanup_interval_seconds: u64,
    /// Streams held at most (soft): above it the oldest *ended* streams are evicted early, down
    /// to 90% of it. Active streams are never evicted.
    pub max_streams: usize,
}

impl Default for MemoryBridgeConfig {
    fn default() -> Self {
        Self {
            queue_maxsize: 256,
            max_bytes: 10 * 1024 * 1024,
            terminal_ttl_seconds: 300,
            abandoned_ttl_seconds: 600,
            awaiting_input_ttl_seconds: 7200,
            cleanup_interval_seconds: 30,
            max_streams: 10_000,
        }
    }
}

impl MemoryBridgeConfig {
    /// Checks that the limits are usable.
    pub fn validate(&self) -> Result<(), BridgeError> {
        if self.queue_maxsize == 0 {
            return Err(BridgeError::InvalidConfig(
                "queue_maxsize must be at least 1".into(),
            ));
        }
        if self.max_bytes == 0 {
            return Err(BridgeError::InvalidConfig(
                "max_bytes must be at least 1".into(),
            ));
        }
        if self.max_streams == 0 {
            return Err(BridgeError::InvalidConfig(
                "max_streams must be at least 1".into(),
            ));
        }
        if self.cleanup_interval_seconds == 0 {
            return Err(BridgeError::InvalidConfig(
                "cleanup_interval_seconds must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// The in-memory stream bridge. Create it inside a Tokio runtime; share it as
/// `Arc<dyn StreamBridge>`.
#[derive(Debug)]
pub struct MemoryBridge {
    inner: Arc<Inner>,
    /// Owns the cleanup sweep and delayed `cleanup` tasks.
    tracker: TaskTracker,
}

#[derive(Debug)]
struct Inner {
    config: MemoryBridgeConfig,
    /// Stream id -> stream. Entries are only removed by `remove_if_same`, which also marks the
    /// stream removed so publishers holding a stale `Arc` retry on a fresh entry.
    streams: RwLock<HashMap<String, Arc<StreamState>>>,
    /// Set by `close()`; checked by publish/subscribe.
    closed: AtomicBool,
    /// Cancelled by `close()`/drop: stops the sweep, delayed cleanups and every subscription.
    shutdown: CancellationToken,
    published_total: AtomicU64,
    gaps_total: Arc<AtomicU64>,
    evicted_total: AtomicU64,
    /// Delayed `cleanup` removals, earliest first, run by the janitor task.
    removals: Mutex<BinaryHeap<Reverse<Scheduled>>>,
    /// Tie-breaker keeping heap entries with equal deadlines in insertion order.
    removal_seq: AtomicU64,
    /// Wakes the janitor: a new removal was scheduled or the stream count exceeded the limit.
    janitor_wake: Notify,
    /// Set while over `max_streams` without enough ended streams to evict (warn once).
    capacity_warned: AtomicBool,
}

/// A delayed removal. Holds a `Weak` so a pending cleanup never keeps a stream's memory alive.
#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    stream_id: String,
    stream: Weak<StreamState>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Debug)]
struct StreamState {
    log: RwLock<Log>,
    /// Woken (`notify_waiters`, see [`StreamState::wake`]) after every change of `log` that a
    /// subscriber may wait for.
    notify: Notify,
    /// Live subscriptions; an ended stream is only swept when this is zero.
    subscribers: AtomicUsize,
}

#[derive(Debug)]
struct Log {
    /// Retained events; `events[i].seq == start + i`.
    events: VecDeque<BridgeEvent>,
    /// The bytes `bytes` counts for each of `events` (same index): a lazy payload counts its
    /// overhead only until a reader serializes it ([`Log::account`]).
    sizes: VecDeque<usize>,
    /// Seq of the oldest retained event (== `next` when empty).
    start: u64,
    /// Seq the next published event gets.
    next: u64,
    /// Approximate bytes of `events`.
    bytes: usize,
    /// Largest unix-ms used in an id so far: ids never go backwards if the wall clock does.
    last_ms: u64,
    ended: bool,
    ended_at: Option<Instant>,
    /// Taken out of the stream map; publishers must re-resolve the stream.
    removed: bool,
    awaiting_input: bool,
    /// Creation or last publish / `mark_awaiting_input`.
    last_activity: Instant,
}

impl Log {
    fn new(now: Instant) -> Self {
        Self {
            events: VecDeque::new(),
            sizes: VecDeque::new(),
            start: 0,
            next: 0,
            bytes: 0,
            last_ms: 0,
            ended: false,
            ended_at: None,
            removed: false,
            awaiting_input: false,
            last_activity: now,
        }
    }

    /// Published to or ended: what `exists()` reports.
    fn materialized(&self) -> bool {
        self.next > 0 || self.ended
    }

    fn end(&mut self, now: Instant) {
        if !self.ended {
            self.ended = true;
            self.ended_at = Some(now);
        }
    }

    fn push(&mut self, event: &str, data: Payload, config: &MemoryBridgeConfig) -> String {
        let ms = unix_ms().max(self.last_ms);
        self.last_ms = ms;
        let seq = self.next;
        let id = format_event_id(ms, seq);
        let size = event_size(&id, event, data.ready_len().unwrap_or(0));
        self.bytes += size;
        self.sizes.push_back(size);
        self.events.push_back(BridgeEvent {
            id: id.clone(),
            seq,
            event: event.to_owned(),
            data,
        });
        self.next += 1;
        self.trim(config);
        id
    }

    /// Trims the oldest events, but always keeps the newest so a gap can name it.
    fn trim(&mut self, config: &MemoryBridgeConfig) {
        while self.events.len() > 1
            && (self.events.len() > config.queue_maxsize || self.bytes > config.max_bytes)
        {
            self.events.pop_front();
            let size = self.sizes.pop_front().unwrap_or(0);
            self.bytes = self.bytes.saturating_sub(size);
            self.start += 1;
        }
    }

    /// Counts the text of event `seq`, serialized by a reader after it was published, in
    /// `bytes` (once), and trims to the limits again.
    fn account(&mut self, seq: u64, text_len: usize, config: &MemoryBridgeConfig) {
        let Some(i) = seq
            .checked_sub(self.start)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        let (Some(event), Some(size)) = (self.events.get(i), self.sizes.get_mut(i)) else {
            return;
        };
        let full = event_size(&event.id, &event.event, text_len);
        if full > *size {
            self.bytes += full - *size;
            *size = full;
            self.trim(config);
        }
    }
}

fn event_size(id: &str, event: &str, data_len: usize) -> usize {
    id.len() + event.len() + data_len + EVENT_OVERHEAD_BYTES
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl StreamState {
    fn new(now: Instant) -> Self {
        Self {
            log: RwLock::new(Log::new(now)),
            notify: Notify::new(),
            subscribers: AtomicUsize::new(0),
        }
    }

    /// Wakes waiting subscribers; call after releasing the log lock. Skipped when nobody is
    /// subscribed (the common publish-before-anyone-joins case): a subscriber counts itself
    /// before its first read of the log, and that read is ordered after this change by the log
    /// lock, so it cannot miss it.
    fn wake(&self) {
        if self.subscribers.load(Ordering::SeqCst) > 0 {
            self.notify.notify_waiters();
        }
    }
}

impl MemoryBridge {
    /// Creates the bridge and starts its cleanup task. Must be called inside a Tokio runtime.
    pub fn new(config: MemoryBridgeConfig) -> Result<Self, BridgeError> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BridgeError::NoRuntime);
        }
        let inner = Arc::new(Inner {
            config,
            streams: RwLock::new(HashMap::new()),
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            published_total: AtomicU64::new(0),
            gaps_total: Arc::new(AtomicU64::new(0)),
            evicted_total: AtomicU64::new(0),
            removals: Mutex::new(BinaryHeap::new()),
            removal_seq: AtomicU64::new(0),
            janitor_wake: Notify::new(),
            capacity_warned: AtomicBool::new(false),
        });
        let tracker = TaskTracker::new();
        tracker.spawn(Arc::clone(&inner).janitor());
        Ok(Self { inner, tracker })
    }

    /// The configuration in force.
    pub fn config(&self) -> &MemoryBridgeConfig {
        &self.inner.config
    }

    /// Runs one cleanup sweep now (the task does this every `cleanup_interval_seconds`).
    pub fn sweep_now(&self) {
        self.inner.sweep(Instant::now());
    }
}

impl Drop for MemoryBridge {
    fn drop(&mut self) {
        // No detached work outlives the bridge: stop the sweep and end subscriptions.
        self.inner.shutdown.cancel();
        self.tracker.close();
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), BridgeError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BridgeError::Closed)
        } else {
            Ok(())
        }
    }

    fn get(&self, stream_id: &str) -> Option<Arc<StreamState>> {
        self.streams.read().get(stream_id).cloned()
    }

    fn get_or_create(&self, stream_id: &str) -> Arc<StreamState> {
        if let Some(stream) = self.get(stream_id) {
            return stream;
        }
        let mut map = self.streams.write();
        let stream = Arc::clone(
            map.entry(stream_id.to_owned())
                .or_insert_with(|| Arc::new(StreamState::new(Instant::now()))),
        );
        if map.len() > self.config.max_streams {
            self.janitor_wake.notify_one();
        }
        stream
    }

    /// The background task: delayed removals, capacity eviction, periodic sweep.
    async fn janitor(self: Arc<Self>) {
        let interval = Duration::from_secs(self.config.cleanup_interval_seconds);
        let mut next_sweep = Instant::now() + interval;
        loop {
            let woken = self.janitor_wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + interval;
            }
            let next_removal = self.run_due_removals(now);
            self.evict_if_over_capacity();
            let deadline = next_removal.map_or(next_sweep, |at| at.min(next_sweep));
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = &mut woken => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Performs the removals due at `now`; returns the next deadline.
    fn run_due_removals(&self, now: Instant) -> Option<Instant> {
        let mut due = Vec::new();
        let next = {
            let mut heap = self.removals.lock();
            while heap.peek().is_some_and(|Reverse(s)| s.at <= now) {
                if let Some(Reverse(s)) = heap.pop() {
                    due.push(s);
                }
            }
            heap.peek().map(|Reverse(s)| s.at)
        };
        for s in due {
            if let Some(stream) = s.stream.upgrade() {
                self.remove_if_same(&s.stream_id, &stream);
            }
        }
        next
    }

    /// Above `max_streams`, removes the oldest ended streams down to 90% of it.
    fn evict_if_over_capacity(&self) {
        let max = self.config.max_streams;
        let mut ended: Vec<(Instant, String, Arc<StreamState>)> = {
            let map = self.streams.read();
            if map.len() <= max {
                return;
            }
            map.iter()
                .filter_map(|(id, s)| {
                    let at = s.log.read().ended_at?;
                    Some((at, id.clone(), Arc::clone(s)))
                })
                .collect()
        };
        let target = max - max / 10;
        let excess = self.streams.read().len().saturating_sub(target);
        ended.sort_by_key(|(at, _, _)| *at);
        let evicted = ended.len().min(excess);
        for (_, id, stream) in ended.into_iter().take(evicted) {
            self.remove_if_same(&id, &stream);
        }
        self.evicted_total
            .fetch_add(evicted as u64, Ordering::Relaxed);
        let short = evicted < excess;
        if short && !self.capacity_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                streams = self.streams.read().len(),
                max_streams = max,
                "stream bridge: over max_streams with too few ended streams to evict"
            );
        } else if !short {
            self.capacity_warned.store(false, Ordering::Relaxed);
        }
    }

    /// Appends `event` (if any) and/or ends the stream, atomically. Returns the event's id.
    fn append(
        &self,
        stream_id: &str,
        event: Option<(&str, Payload)>,
        end: bool,
    ) -> Result<Option<String>, BridgeError> {
        self.check_open()?;
        loop {
            let stream = self.get_or_create(stream_id);
            let mut log = stream.log.write();
            if log.removed {
                // Lost a race with cleanup: the next lookup creates a fresh stream.
                continue;
            }
            let mut id = None;
            if let Some((name, data)) = &event {
                if log.ended {
                    return Err(BridgeError::StreamEnded {
                        stream_id: stream_id.to_owned(),
                    });
                }
                id = Some(log.push(name, data.clone(), &self.config));
                log.awaiting_input = false;
                self.published_total.fetch_add(1, Ordering::Relaxed);
            }
            let now = Instant::now();
            log.last_activity = now;
            if end {
                log.end(now);
            }
            drop(log);
            stream.wake();
            return Ok(id);
        }
    }

    /// Removes `stream_id` from the map if it still maps to `stream`, then ends it for its
    /// subscribers (they drain what is retained, then get `End`).
    fn remove_if_same(&self, stream_id: &str, stream: &Arc<StreamState>) {
        {
            let mut map = self.streams.write();
            match map.get(stream_id) {
                Some(current) if Arc::ptr_eq(current, stream) => {
                    map.remove(stream_id);
                }
                _ => return,
            }
        }
        {
            let mut log = stream.log.write();
            log.removed = true;
            log.end(Instant::now());
        }
        stream.wake();
    }

    /// Builds a subscription on `stream`, positioned per `last_event_id` (see the trait docs).
    fn subscription(
        &self,
        stream_id: &str,
        stream: Arc<StreamState>,
        last_event_id: Option<&str>,
    ) -> Subscription {
        let guard = SubscriberGuard::new(Arc::clone(&stream));
        let (cursor, last_id) = {
            let log = stream.log.read();
            match last_event_id {
                None | Some("-1") => (log.start, None),
                Some(id) => match parse_event_id(id) {
                    Some((_, seq)) if seq < log.next => (seq + 1, Some(id.to_owned())),
                    _ => {
                        tracing::warn!(
                            stream_id,
                            last_event_id = id,
                            "stream bridge: unknown Last-Event-ID, replaying from the earliest retained event"
                        );
                        (log.start, None)
                    }
                },
            }
        };
        let reader = Reader {
            stream,
            config: self.config.clone(),
            pos: Position {
                stream_id: stream_id.to_owned(),
                cursor,
                last_id,
                buf: VecDeque::new(),
                gaps_total: Arc::clone(&self.gaps_total),
            },
            shutdown: self.shutdown.clone(),
            done: false,
            _guard: guard,
        };
        Subscription::new(futures::stream::unfold(reader, |mut reader| async move {
            let item = reader.next_item().await?;
            Some((item, reader))
        }))
    }

    fn sweep(&self, now: Instant) {
        let snapshot: Vec<(String, Arc<StreamState>)> = self
            .streams
            .read()
            .iter()
            .map(|(id, s)| (id.clone(), Arc::clone(s)))
            .collect();
        let terminal_ttl = Duration::from_secs(self.config.terminal_ttl_seconds);
        let mut to_remove = Vec::new();
        for (id, stream) in snapshot {
            let mut log = stream.log.write();
            if log.ended {
                let idle = stream.subscribers.load(Ordering::Acquire) == 0;
                let expired = log
                    .ended_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= terminal_ttl);
                if idle && expired {
                    drop(log);
                    to_remove.push((id, stream));
                }
                continue;
            }
            let ttl = Duration::from_secs(if log.awaiting_input {
                self.config.awaiting_input_ttl_seconds
            } else {
                self.config.abandoned_ttl_seconds
            });
            if now.saturating_duration_since(log.last_activity) < ttl {
                continue;
            }
            if log.materialized() {
                tracing::warn!(stream_id = %id, "stream bridge: no publish within TTL, ending abandoned stream");
                log.end(now);
                drop(log);
                stream.wake();
            } else {
                tracing::debug!(stream_id = %id, "stream bridge: nothing was ever published, dropping waiting stream");
                drop(log);
                to_remove.push((id, stream));
            }
        }
        for (id, stream) in to_remove {
            self.remove_if_same(&id, &stream);
        }
    }
}

#[async_trait]
impl StreamBridge for MemoryBridge {
    async fn publish(
        &self,
        stream_id: &str,
        event: &str,
        data: Payload,
    ) -> Result<String, BridgeError> {
        let id = self.inner.append(stream_id, Some((event, data)), false)?;
        id.ok_or_else(|| BridgeError::Backend("publish produced no event id".into()))
    }

    async fn publish_end(&self, stream_id: &str) -> Result<(), BridgeError> {
        self.inner.append(stream_id, None, true).map(|_| ())
    }

    async fn publish_terminal(
        &self,
        stream_id: &str,
        event: &str,
        data: Payload,
    ) -> Result<String, BridgeError> {
        let id = self.inner.append(stream_id, Some((event, data)), true)?;
        id.ok_or_else(|| BridgeError::Backend("publish produced no event id".into()))
    }

    async fn subscribe(
        &self,
        stream_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, BridgeError> {
        self.inner.check_open()?;
        let stream = self.inner.get_or_create(stream_id);
        Ok(self.inner.subscription(stream_id, stream, last_event_id))
    }

    /// Atomic version of the default: resolves the stream once, so a concurrent cleanup cannot
    /// turn it into a wait on a placeholder.
    async fn subscribe_existing(
        &self,
        stream_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, BridgeError> {
        self.inner.check_open()?;
        match self.inner.get(stream_id) {
            Some(stream) if stream.log.read().materialized() => {
                Ok(self.inner.subscription(stream_id, stream, last_event_id))
            }
            _ => Err(BridgeError::StreamNotFound {
                stream_id: stream_id.to_owned(),
            }),
        }
    }

    async fn latest_event_id(&self, stream_id: &str) -> Option<String> {
        let stream = self.inner.get(stream_id)?;
        let log = stream.log.read();
        log.events.back().map(|e| e.id.clone())
    }

    async fn exists(&self, stream_id: &str) -> bool {
        self.inner
            .get(stream_id)
            .is_some_and(|stream| stream.log.read().materialized())
    }

    async fn cleanup(&self, stream_id: &str, delay: Duration) {
        let Some(stream) = self.inner.get(stream_id) else {
            return;
        };
        if delay.is_zero() {
            self.inner.remove_if_same(stream_id, &stream);
            return;
        }
        let scheduled = Scheduled {
            at: Instant::now() + delay,
            seq: self.inner.removal_seq.fetch_add(1, Ordering::Relaxed),
            stream_id: stream_id.to_owned(),
            stream: Arc::downgrade(&stream),
        };
        self.inner.removals.lock().push(Reverse(scheduled));
        self.inner.janitor_wake.notify_one();
    }

    async fn mark_awaiting_input(&self, stream_id: &str) {
        if let Some(stream) = self.inner.get(stream_id) {
            let mut log = stream.log.write();
            log.awaiting_input = true;
            log.last_activity = Instant::now();
        }
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn stats(&self) -> BridgeStats {
        let mut stats = BridgeStats {
            published_total: self.inner.published_total.load(Ordering::Relaxed),
            gaps_total: self.inner.gaps_total.load(Ordering::Relaxed),
            evicted_total: self.inner.evicted_total.load(Ordering::Relaxed),
            pending_cleanups: self.inner.removals.lock().len() as u64,
            closed: self.inner.closed.load(Ordering::Acquire),
            ..BridgeStats::default()
        };
        for stream in self.inner.streams.read().values() {
            let log = stream.log.read();
            stats.total_streams += 1;
            if log.ended {
                stats.ended_streams += 1;
            } else {
                stats.active_streams += 1;
            }
            stats.retained_events += log.events.len() as u64;
            stats.retained_bytes += log.bytes as u64;
            stats.subscribers += stream.subscribers.load(Ordering::Relaxed) as u64;
        }
        stats
    }
}

/// Counts a live subscription on its stream for as long as the subscription exists.
#[derive(Debug)]
struct SubscriberGuard(Arc<StreamState>);

impl SubscriberGuard {
    fn new(stream: Arc<StreamState>) -> Self {
        stream.subscribers.fetch_add(1, Ordering::SeqCst);
        Self(stream)
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One subscriber's private read state over a shared stream log.
struct Reader {
    stream: Arc<StreamState>,
    /// The limits a lazy payload's text is counted against once this reader serializes it.
    config: MemoryBridgeConfig,
    pos: Position,
    shutdown: CancellationToken,
    done: bool,
    _guard: SubscriberGuard,
}

/// The cursor half of a [`Reader`], split out so it can be updated while a `Notified` future
/// borrows the stream.
struct Position {
    stream_id: String,
    /// Seq of the next event to copy out of the log.
    cursor: u64,
    /// Id of the last event handed out (or the requested Last-Event-ID): reported in a gap.
    /// Updated once per batch, not per event: a gap is only detected with `buf` empty.
    last_id: Option<String>,
    buf: VecDeque<BridgeEvent>,
    gaps_total: Arc<AtomicU64>,
}

/// What one look at the log found.
enum Step {
    /// A terminal item (`Gap` or `End`).
    Terminal(BridgeItem),
    /// Events were copied into the buffer.
    Refilled,
    /// Nothing new: wait for a publish.
    Idle,
}

impl Position {
    fn read_log(&mut self, stream: &StreamState) -> Step {
        let log = stream.log.read();
        if self.cursor < log.start {
            self.gaps_total.fetch_add(1, Ordering::Relaxed);
            let id_of = |e: Option<&BridgeEvent>| e.map(|e| e.id.clone()).unwrap_or_default();
            return Step::Terminal(BridgeItem::Gap(GapInfo {
                stream_id: self.stream_id.clone(),
                requested_event_id: self.last_id.take(),
                earliest_available_event_id: id_of(log.events.front()),
                latest_available_event_id: id_of(log.events.back()),
            }));
        }
        if self.cursor < log.next {
            let from = usize::try_from(self.cursor - log.start).unwrap_or(usize::MAX);
            let to = log.events.len().min(from.saturating_add(READ_BATCH));
            self.buf.extend(log.events.range(from..to).cloned());
            self.cursor += (to - from) as u64;
            if let Some(last) = self.buf.back() {
                self.last_id = Some(last.id.clone());
            }
            return Step::Refilled;
        }
        if log.ended {
            return Step::Terminal(BridgeItem::End);
        }
        Step::Idle
    }
}

impl Reader {
    /// Serializes a lazy payload (outside the log's lock) and counts its text in the log.
    fn serialize(&self, event: &BridgeEvent) {
        if event.data.ready_len().is_some() {
            return;
        }
        let len = event.data.len();
        self.stream
            .log
            .write()
            .account(event.seq, len, &self.config);
    }

    async fn next_item(&mut self) -> Option<BridgeItem> {
        loop {
            if self.done || self.shutdown.is_cancelled() {
                self.done = true;
                return None;
            }
            if let Some(event) = self.pos.buf.pop_front() {
                self.serialize(&event);
                return Some(BridgeItem::Event(event));
            }
            // Fast path: look without registering for a wake-up (after a wake-up there usually
            // is something to read).
            match self.pos.read_log(&self.stream) {
                Step::Terminal(item) => {
                    self.done = true;
                    return Some(item);
                }
                Step::Refilled => continue,
                Step::Idle => {}
            }
            // Register for a wake-up, then look again, so a publish between the look and the
            // await is not missed.
            let notified = self.stream.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pos.read_log(&self.stream) {
                Step::Terminal(item) => {
                    self.done = true;
                    return Some(item);
                }
                Step::Refilled => continue,
                Step::Idle => {}
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    self.done = true;
                    return None;
                }
                () = &mut notified => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn bridge(config: MemoryBridgeConfig) -> Arc<MemoryBridge> {
        Arc::new(MemoryBridge::new(config).expect("bridge"))
    }

    fn small() -> MemoryBridgeConfig {
        MemoryBridgeConfig {
            queue_maxsize: 4,
            terminal_ttl_seconds: 10,
            abandoned_ttl_seconds: 60,
            awaiting_input_ttl_seconds: 600,
            cleanup_interval_seconds: 1,
            ..MemoryBridgeConfig::default()
        }
    }

    async fn collect(sub: Subscription) -> Vec<BridgeItem> {
        sub.collect().await
    }

    /// A memory bridge as the conformance suite takes it.
    async fn suite_bridge(config: MemoryBridgeConfig) -> Option<Arc<dyn StreamBridge>> {
        Some(bridge(config))
    }

    mod conformance_on_default_config {
        crate::bridge_conformance!(super::suite_bridge(super::MemoryBridgeConfig::default()));
    }

    mod conformance_multi_threaded_small_log {
        crate::bridge_conformance!(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            super::suite_bridge(super::MemoryBridgeConfig {
                queue_maxsize: 16,
                ..super::MemoryBridgeConfig::default()
            })
        );
    }

    mod conformance_with_paused_clock {
        crate::bridge_conformance!(
            #[tokio::test(start_paused = true)]
            super::suite_bridge(super::small())
        );
    }

    #[test]
    fn config_defaults_and_partial_deserialize() {
        let c: MemoryBridgeConfig =
            serde_json::from_str(r#"{"queue_maxsize": 8, "extra": 1}"#).expect("parse");
        assert_eq!(c.queue_maxsize, 8);
        assert_eq!(c.max_bytes, 10 * 1024 * 1024);
        assert_eq!(c.terminal_ttl_seconds, 300);
        assert_eq!(c.abandoned_ttl_seconds, 600);
        assert_eq!(c.awaiting_input_ttl_seconds, 7200);
        assert_eq!(c.cleanup_interval_seconds, 30);
        assert_eq!(c.max_streams, 10_000);
        let bad = MemoryBridgeConfig {
            queue_maxsize: 0,
            ..MemoryBridgeConfig::default()
        };
        assert!(matches!(bad.validate(), Err(BridgeError::InvalidConfig(_))));
    }

    #[test]
    fn new_outside_runtime_is_an_error() {
        assert!(matches!(
            MemoryBridge::new(MemoryBridgeConfig::default()),
            Err(BridgeError::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn byte_limit_trims_but_keeps_newest() {
        let b = bridge(MemoryBridgeConfig {
            max_bytes: 300,
            ..MemoryBridgeConfig::default()
        });
        let big: Arc<str> = format!("\"{}\"", "x".repeat(200)).into();
        for _ in 0..5 {
            b.publish("s", "values", Arc::clone(&big).into())
                .await
                .expect("publish");
        }
        let stats = b.stats();
        assert_eq!(stats.retained_events, 1);
        assert!(stats.retained_bytes > 200);
        let huge: Arc<str> = format!("\"{}\"", "y".repeat(1000)).into();
        let id = b
            .publish("s", "values", huge.into())
            .await
            .expect("publish");
        b.publish_end("s").await.expect("end");
        let items = collect(b.subscribe("s", None).await.expect("sub")).await;
        assert_eq!(items.len(), 2);
        assert!(matches!(&items[0], BridgeItem::Event(e) if e.id == id && e.seq == 5));
        assert_eq!(items[1], BridgeItem::End);
    }

    /// A value that counts how often it is serialized.
    struct Counted(Arc<std::sync::atomic::AtomicUsize>, usize);

    impl serde::Serialize for Counted {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            s.serialize_str(&"z".repeat(self.1))
        }
    }

    #[tokio::test]
    async fn lazy_payloads_are_serialized_once_when_read_and_then_count_against_max_bytes() {
        let b = bridge(MemoryBridgeConfig {
            max_bytes: 1000,
            ..MemoryBridgeConfig::default()
        });
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..5 {
            let data = Payload::lazy(Counted(calls.clone(), 400));
            b.publish("s", "values", data.clone())
                .await
                .expect("publish");
            b.publish("t", "values", data).await.expect("publish");
        }
        // nobody read them: none serialized, all five kept at their overhead
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(b.stats().retained_events, 10);
        b.publish_end("s").await.expect("end");
        let items = collect(b.subscribe("s", None).await.expect("sub")).await;
        // read: serialized once each (shared with stream `t`), and trimmed to ~1000 bytes as
        // the texts were counted, always keeping the newest
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let texts: Vec<usize> = (items.iter())
            .filter_map(|i| match i {
                BridgeItem::Event(e) => Some(e.data.len()),
                _ => None,
            })
            .collect();
        assert_eq!(
            texts,
            vec![402; 5],
            "every event read before it was trimmed"
        );
        let retained = b.subscribe("s", None).await.expect("sub");
        let again = collect(retained).await;
        assert_eq!(
            again.len(),
            3,
            "two events of ~487 bytes left, then End: {again:?}"
        );
        // (plus stream `t`'s five unread events at their overhead, ~85 bytes each)
        assert!(b.stats().retained_bytes <= 1000 + 500);
        b.publish_end("t").await.expect("end");
        let _ = collect(b.subscribe("t", None).await.expect("sub")).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            5,
            "stream `t` shares the texts"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ended_stream_removed_after_terminal_ttl_once_unsubscribed() {
        let b = bridge(small());
        b.publish("s", "values", "1".into()).await.expect("publish");
        b.publish_end("s").await.expect("end");
        let sub = b.subscribe("s", None).await.expect("sub");
        tokio::time::sleep(Duration::from_secs(30)).await;
        // Still held: a subscriber is attached.
        assert!(b.exists("s").await);
        assert_eq!(b.stats().subscribers, 1);
        drop(sub);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!b.exists("s").await);
        assert_eq!(b.stats().total_streams, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ended_stream_kept_until_terminal_ttl() {
        let b = bridge(small());
        b.publish_end("s").await.expect("end");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(b.exists("s").await);
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(!b.exists("s").await);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_stream_is_ended() {
        let b = bridge(small());
        b.publish("s", "values", "1".into()).await.expect("publish");
        let mut sub = b.subscribe("s", None).await.expect("sub");
        assert!(matches!(sub.next().await, Some(BridgeItem::Event(_))));
        let started = Instant::now();
        assert_eq!(sub.next().await, Some(BridgeItem::End));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(59) && waited <= Duration::from_secs(62),
            "{waited:?}"
        );
        assert!(matches!(
            b.publish("s", "values", "2".into()).await,
            Err(BridgeError::StreamEnded { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn awaiting_input_extends_abandoned_ttl_until_next_publish() {
        let b = bridge(small());
        b.publish("s", "values", "1".into()).await.expect("publish");
        b.mark_awaiting_input("s").await;
        tokio::time::sleep(Duration::from_secs(300)).await;
        b.publish("s", "values", "2".into())
            .await
            .expect("still active after 300 s while awaiting input");
        // The publish cleared the flag: the normal 60 s TTL applies again.
        tokio::time::sleep(Duration::from_secs(62)).await;
        assert!(matches!(
            b.publish("s", "values", "3".into()).await,
            Err(BridgeError::StreamEnded { .. })
        ));

        b.publish("t", "values", "1".into()).await.expect("publish");
        b.mark_awaiting_input("t").await;
        tokio::time::sleep(Duration::from_secs(602)).await;
        assert!(matches!(
            b.publish("t", "values", "2".into()).await,
            Err(BridgeError::StreamEnded { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_subscriber_on_unknown_stream_is_bounded() {
        let b = bridge(small());
        let mut sub = b.subscribe("never", None).await.expect("sub");
        assert!(!b.exists("never").await);
        let started = Instant::now();
        assert_eq!(sub.next().await, Some(BridgeItem::End));
        assert!(started.elapsed() <= Duration::from_secs(62));
        assert_eq!(sub.next().await, None);
        // The placeholder is gone; a later publish starts a fresh stream.
        assert_eq!(b.stats().total_streams, 0);
        let id = b
            .publish("never", "values", "1".into())
            .await
            .expect("publish");
        assert!(id.ends_with("-0"));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_subscriber_sees_first_publish() {
        let b = bridge(small());
        let mut sub = b.subscribe("later", None).await.expect("sub");
        let publisher = Arc::clone(&b);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            publisher
                .publish("later", "metadata", "{}".into())
                .await
                .expect("publish");
        });
        match sub.next().await {
            Some(BridgeItem::Event(e)) => assert_eq!((e.seq, e.event.as_str()), (0, "metadata")),
            other => panic!("expected the first event, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_cleanups_run_in_deadline_order_without_tasks() {
        let b = bridge(small());
        for s in ["a", "b"] {
            b.publish(s, "values", "1".into()).await.expect("publish");
        }
        b.cleanup("a", Duration::from_secs(5)).await;
        b.cleanup("b", Duration::from_secs(3)).await;
        b.cleanup("unknown", Duration::from_secs(3)).await;
        assert_eq!(b.stats().pending_cleanups, 2);
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert!(!b.exists("b").await);
        assert!(b.exists("a").await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!b.exists("a").await);
        assert_eq!(b.stats().pending_cleanups, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_cleanup_spares_a_recreated_stream() {
        let b = bridge(small());
        b.publish("s", "values", "1".into()).await.expect("publish");
        b.publish_end("s").await.expect("end");
        b.cleanup("s", Duration::from_secs(5)).await;
        b.cleanup("s", Duration::ZERO).await;
        assert!(!b.exists("s").await);
        let id = b.publish("s", "values", "2".into()).await.expect("publish");
        assert!(id.ends_with("-0"), "a fresh stream starts at seq 0: {id}");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(
            b.exists("s").await,
            "the old cleanup must not drop the new stream"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn over_max_streams_evicts_oldest_ended_streams_only() {
        let b = bridge(MemoryBridgeConfig {
            max_streams: 10,
            ..small()
        });
        for i in 0..8 {
            let s = format!("ended-{i}");
            b.publish(&s, "values", "1".into()).await.expect("publish");
            b.publish_end(&s).await.expect("end");
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        for i in 0..5 {
            b.publish(&format!("active-{i}"), "values", "1".into())
                .await
                .expect("publish");
        }
        // 13 > 10: the janitor evicts down to 9, oldest ended first.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let stats = b.stats();
        assert_eq!(stats.total_streams, 9, "{stats:?}");
        assert_eq!(stats.evicted_total, 4);
        for i in 0..4 {
            assert!(!b.exists(&format!("ended-{i}")).await);
        }
        for i in 4..8 {
            assert!(b.exists(&format!("ended-{i}")).await);
        }
        for i in 0..5 {
            assert!(b.exists(&format!("active-{i}")).await);
        }
        // Only active streams over the limit: nothing to evict, nothing breaks.
        for i in 5..20 {
            b.publish(&format!("active-{i}"), "values", "1".into())
                .await
                .expect("publishing over the limit still works");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(b.stats().active_streams, 20);
    }

    #[tokio::test]
    async fn drop_stops_subscriptions() {
        let b = bridge(MemoryBridgeConfig::default());
        let sub = b.subscribe("s", None).await.expect("sub");
        drop(b);
        let items = tokio::time::timeout(Duration::from_secs(5), collect(sub))
            .await
            .expect("subscription ends when the bridge is dropped");
        assert!(items.is_empty());
    }
}
