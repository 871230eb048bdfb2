//! [`RedisBridge`]: the [`StreamBridge`] on Redis Streams, for several replicas sharing streams.
//!
//! # Layout in Redis
//! One Redis Stream per run, key `<key_prefix><stream_id>`. Each entry has the fields
//! `kind` (`event` | `end`), `event`, `data` (compact JSON) and `nonce` (see below), like
//! DeerFlow's bridge. Entry ids are the bridge's event ids `<unix_ms>-<seq>`, written explicitly
//! by `XADD`, so the Redis id *is* the SSE id and `seq` is the event's offset in the run. The end
//! marker is the entry after the last event (`kind = end`); nothing can follow it.
//!
//! # Writing
//! `publish`, `publish_end` and `publish_terminal` are one Lua script each call (`EVALSHA`, one
//! round trip, atomic): it reads the newest entry (`XREVRANGE .. COUNT 1`), refuses to write after
//! an end marker, computes the next id (`ms = max(now, last ms)`, `seq = last seq + 1`), `XADD`s
//! with an exact `MAXLEN queue_maxsize` (`+1` for the end marker, so it never evicts an event),
//! and renews the rolling `EXPIRE stream_ttl_seconds`, so a writer that dies leaves no key behind
//! for longer than the TTL. Because the seq comes from Redis, a run taken over by another replica
//! continues the same numbering. Every write carries a random `nonce`; a retried write whose
//! first attempt did land (the reply was lost) finds its own nonce on the newest entry and
//! returns that id instead of writing a duplicate.
//!
//! # Reading: one reader per bridge, local fan-out
//! SSE clients never hold a Redis connection. For each stream with at least one local
//! subscriber the bridge keeps a *hub*: a local mirror of the retained part of the stream (at most
//! `queue_maxsize` events, like Redis itself) plus a `Notify`. The hub is loaded with `XRANGE`
//! when its first subscriber arrives, and from then on **one reader task per bridge** keeps all
//! hubs up to date with a single blocking `XREAD BLOCK .. STREAMS k1 .. kn` on its own
//! **dedicated** connection (no response timeout on it: a shared multiplexed connection would
//! time out after 500 ms, or stall every other command behind the block). Subscribers read the
//! mirror with their own cursors exactly like the memory bridge's subscribers read its log, so a
//! slow subscriber only hurts itself and gets a `Gap` once it falls behind the trimmed part.
//! When the first subscriber of a new stream arrives, the reader is woken through a private
//! wake-up stream (`<key_prefix>__reader__:<bridge uuid>`) that is part of every `XREAD`, which
//! cannot lose a wake-up the way `CLIENT UNBLOCK` could. A hub is dropped with its last
//! subscriber.
//!
//! Between reads, at most every `block_ms`, the reader checks (`EXISTS`) that the watched
//! streams still exist: a stream deleted by `cleanup` on another replica, or expired because its
//! writer died, ends its local subscribers with `End`; a subscriber that waits for a stream which
//! never appears gets `End` after `wait_timeout_seconds`.
//!
//! # Failures
//! Commands on the shared connection (a `ConnectionManager`, which reconnects by itself) are
//! retried `max_retries` times on transient errors (I/O, timeouts, `LOADING`, `TRYAGAIN`, ...)
//! with exponential backoff; then the call fails with [`BridgeError::Backend`]. If the reader
//! cannot read for more than `max_retries` consecutive attempts, every live subscription ends
//! (without `End`, as on `close()`, so clients reconnect) and a later `subscribe` fails with
//! `Backend` while Redis stays down. Nothing hangs.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, RetryMethod, Script, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::contract::{BridgeStats, StreamBridge};
use crate::error::BridgeError;
use crate::event::{BridgeEvent, BridgeItem, GapInfo, parse_event_id};
use crate::payload::Payload;
use crate::subscription::Subscription;

/// How many events a subscriber copies out of a hub's mirror per lock acquisition.
const READ_BATCH: usize = 64;
/// Entries per stream asked for by one `XREAD`.
const XREAD_COUNT: usize = 512;
/// Extra time over `block_ms` before a blocking `XREAD` is considered lost (dead connection).
const BLOCK_MARGIN: Duration = Duration::from_secs(5);

/// The environment variables the Redis URL falls back to, in order (DeerFlow's names).
pub const REDIS_URL_ENV: [&str; 2] = ["DEER_FLOW_STREAM_BRIDGE_REDIS_URL", "REDIS_URL"];
/// The URL used when neither the config nor the environment names one.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Options of the Redis bridge (config section `stream_bridge` with `type: redis`); every key
/// is optional. The names follow DeerFlow where it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisBridgeConfig {
    /// `redis://[user:pass@]host:port/db`. `None`: env `DEER_FLOW_STREAM_BRIDGE_REDIS_URL`, then
    /// `REDIS_URL`, then [`DEFAULT_REDIS_URL`] (see [`RedisBridgeConfig::resolved_url`]).
    pub redis_url: Option<String>,
    /// Events retained per stream (`XADD MAXLEN`, exact).
    pub queue_maxsize: usize,
    /// Rolling TTL of a stream key, renewed by every write; 0 disables it.
    pub stream_ttl_seconds: u64,
    /// After `mark_awaiting_input` the key's TTL is raised to at least this (never lowered).
    pub awaiting_input_ttl_seconds: u64,
    /// Prefix of every key the bridge writes.
    pub key_prefix: String,
    /// How long the reader's `XREAD` blocks; also the period of the existence checks.
    pub block_ms: u64,
    /// Timeout of one command on the shared connection.
    pub response_timeout_ms: u64,
    /// Timeout of one connection attempt.
    pub connect_timeout_ms: u64,
    /// Retries of a transient Redis error before the call (or the reader) gives up.
    pub max_retries: u32,
    /// First retry delay; doubles per retry, capped at 2 s.
    pub retry_backoff_ms: u64,
    /// A subscriber waiting for a stream that never appears gets `End` after this.
    pub wait_timeout_seconds: u64,
}

impl Default for RedisBridgeConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            queue_maxsize: 256,
            stream_ttl_seconds: 86_400,
            awaiting_input_ttl_seconds: 7_200,
            key_prefix: "antler:stream:".to_owned(),
            block_ms: 5_000,
            response_timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            max_retries: 3,
            retry_backoff_ms: 100,
            wait_timeout_seconds: 600,
        }
    }
}

impl RedisBridgeConfig {
    /// Checks that the limits are usable.
    pub fn validate(&self) -> Result<(), BridgeError> {
        let bad = |m: &str| Err(BridgeError::InvalidConfig(m.to_owned()));
        if self.queue_maxsize == 0 {
            return bad("queue_maxsize must be at least 1");
        }
        if self.key_prefix.is_empty() {
            return bad("key_prefix must not be empty");
        }
        if self.block_ms == 0 || self.response_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return bad("block_ms, response_timeout_ms and connect_timeout_ms must be at least 1");
        }
        Ok(())
    }

    /// The URL to connect to: `redis_url`, else the first set variable of [`REDIS_URL_ENV`],
    /// else [`DEFAULT_REDIS_URL`].
    pub fn resolved_url(&self) -> String {
        if let Some(url) = self.redis_url.as_deref().filter(|u| !u.trim().is_empty()) {
            return url.to_owned();
        }
        REDIS_URL_ENV
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
    }
}

/// The write script: see the module docs. `KEYS[1]` = stream key; `ARGV` = now_ms, maxlen, ttl,
/// mode (`event` | `end` | `terminal`), nonce, event, data. Returns `{status, id}` with status
/// `ok`, `dup` (this nonce already landed), `ended` (the stream has its end marker) or `noop`
/// (`end` on an ended stream).
const WRITE_SCRIPT: &str = r"
local key = KEYS[1]
local ms = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local mode = ARGV[4]
local nonce = ARGV[5]
local seq = 0
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
if #last > 0 then
  local lid = last[1][1]
  local f = last[1][2]
  local kind, lnonce = nil, nil
  for i = 1, #f, 2 do
    if f[i] == 'kind' then kind = f[i + 1] elseif f[i] == 'nonce' then lnonce = f[i + 1] end
  end
  local lms, lseq = string.match(lid, '^(%d+)-(%d+)$')
  lms = tonumber(lms)
  lseq = tonumber(lseq)
  if lnonce == nonce then
    if mode == 'terminal' then lseq = lseq - 1 end
    return {'dup', string.format('%.0f-%.0f', lms, lseq)}
  end
  if kind == 'end' then
    if mode == 'end' then return {'noop', ''} end
    return {'ended', ''}
  end
  if lms > ms then ms = lms end
  seq = lseq + 1
end
local id = string.format('%.0f-%.0f', ms, seq)
if mode == 'end' then
  redis.call('XADD', key, 'MAXLEN', maxlen + 1, id, 'kind', 'end', 'nonce', nonce)
else
  redis.call('XADD', key, 'MAXLEN', maxlen, id,
    'kind', 'event', 'event', ARGV[6], 'data', ARGV[7], 'nonce', nonce)
  if mode == 'terminal' then
    redis.call('XADD', key, 'MAXLEN', maxlen + 1, string.format('%.0f-%.0f', ms, seq + 1),
      'kind', 'end', 'nonce', nonce)
  end
end
if ttl > 0 then redis.call('EXPIRE', key, ttl) end
return {'ok', id}
";

/// The Redis Streams stream bridge. Create it with [`RedisBridge::connect`] inside a Tokio
/// runtime; share it as `Arc<dyn StreamBridge>`.
#[derive(Debug)]
pub struct RedisBridge {
    inner: Arc<Inner>,
    /// Owns the reader task.
    tracker: TaskTracker,
}

struct Inner {
    config: RedisBridgeConfig,
    client: Client,
    /// Shared, auto-reconnecting connection for every non-blocking command.
    conn: ConnectionManager,
    script: Script,
    /// Private wake-up stream of the reader (see the module docs).
    wake_key: String,
    /// Stream id -> hub, for streams with local subscribers. A hub is inserted and its subscriber
    /// count changed only under this lock, so "last subscriber left" and "a subscriber joined"
    /// cannot interleave (the guard removes the hub only if its count is still zero).
    hubs: Mutex<HashMap<String, Arc<Hub>>>,
    /// Wakes the reader when it idles with nothing to watch.
    reader_idle_wake: Notify,
    closed: AtomicBool,
    /// Cancelled by `close()`/drop: stops the reader and ends every subscription.
    shutdown: CancellationToken,
    published_total: AtomicU64,
    gaps_total: Arc<AtomicU64>,
    nonce_seq: AtomicU64,
    /// Random per bridge: makes nonces and the wake key unique across replicas.
    instance: String,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBridgeInner")
            .field("config", &self.config)
            .field("wake_key", &self.wake_key)
            .finish_non_exhaustive()
    }
}

/// The local mirror of one stream, shared by this bridge's subscribers of it.
#[derive(Debug)]
struct Hub {
    stream_id: String,
    key: String,
    state: Mutex<HubState>,
    /// Woken after every change of `state` a subscriber may wait for.
    notify: Notify,
    /// Set once the initial `XRANGE` is applied; only then does the reader watch the hub.
    loaded: OnceCell<()>,
    /// Local subscriptions; changed only under `Inner::hubs`.
    subscribers: AtomicUsize,
    created: Instant,
}

#[derive(Debug, Default)]
struct HubState {
    /// Retained events; `events[i].seq == start + i`.
    events: VecDeque<BridgeEvent>,
    /// Seq of the oldest retained event (== `next` when empty).
    start: u64,
    /// Seq after the newest event seen.
    next: u64,
    /// Redis id of the last entry read (`0-0` before any): where the reader's `XREAD` resumes.
    cursor: String,
    /// The key was seen (it had entries); only such hubs are checked with `EXISTS`.
    existed: bool,
    /// End marker seen, or the stream was removed: subscribers drain, then get `End`.
    ended: bool,
    /// Redis failed for good or the bridge closed: subscribers end without `End`.
    failed: bool,
    /// Approximate bytes retained (stats only).
    bytes: usize,
}

impl Hub {
    fn new(stream_id: &str, key: String) -> Self {
        Self {
            stream_id: stream_id.to_owned(),
            key,
            state: Mutex::new(HubState {
                cursor: "0-0".to_owned(),
                ..HubState::default()
            }),
            notify: Notify::new(),
            loaded: OnceCell::new(),
            subscribers: AtomicUsize::new(0),
            created: Instant::now(),
        }
    }

    /// Applies entries read from Redis (in id order) and wakes the subscribers.
    fn apply(&self, entries: Vec<Entry>, maxlen: usize) {
        if entries.is_empty() {
            return;
        }
        {
            let mut st = self.state.lock();
            for entry in entries {
                let Some((_, seq)) = parse_event_id(&entry.id) else {
                    continue;
                };
                if st.cursor != "0-0" && !id_after(&entry.id, &st.cursor) {
                    continue;
                }
                st.cursor.clone_from(&entry.id);
                st.existed = true;
                match entry.body {
                    EntryBody::End => st.ended = true,
                    EntryBody::Event { event, data } => {
                        if st.ended {
                            continue;
                        }
                        if seq < st.next {
                            // A newer id with an older seq: the stream was deleted and re-created
                            // under the same id (e.g. a thread stream whose TTL ran out). This
                            // mirror is over; subscribers end and a new subscribe starts afresh.
                            st.ended = true;
                            continue;
                        }
                        if seq > st.next || st.events.is_empty() {
                            // A hole (the reader fell behind Redis' trimming) or the first
                            // event: what came before is not available here.
                            st.events.clear();
                            st.bytes = 0;
                            st.start = seq;
                        }
                        st.bytes += entry.id.len() + event.len() + data.len();
                        st.events.push_back(BridgeEvent {
                            id: entry.id,
                            seq,
                            event,
                            data: data.into(),
                        });
                        st.next = seq + 1;
                        while st.events.len() > maxlen.max(1) {
                            if let Some(old) = st.events.pop_front() {
                                st.bytes = st.bytes.saturating_sub(
                                    old.id.len() + old.event.len() + old.data.len(),
                                );
                                st.start += 1;
                            }
                        }
                    }
                }
            }
        }
        self.notify.notify_waiters();
    }

    fn end(&self) {
        self.state.lock().ended = true;
        self.notify.notify_waiters();
    }

    fn fail(&self) {
        self.state.lock().failed = true;
        self.notify.notify_waiters();
    }

    fn watchable(&self) -> Option<String> {
        self.loaded.get()?;
        let st = self.state.lock();
        (!st.ended && !st.failed).then(|| st.cursor.clone())
    }
}

/// `a > b` for Redis stream ids `<ms>-<seq>`.
fn id_after(a: &str, b: &str) -> bool {
    match (parse_event_id(a), parse_event_id(b)) {
        (Some(a), Some(b)) => a > b,
        _ => true,
    }
}

/// One stream entry as read from Redis.
#[derive(Debug)]
struct Entry {
    id: String,
    body: EntryBody,
}

#[derive(Debug)]
enum EntryBody {
    Event { event: String, data: String },
    End,
}

fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Parses an `XRANGE` reply (an array of `[id, [field, value, ...]]`).
fn parse_entries(v: &Value) -> Result<Vec<Entry>, BridgeError> {
    let bad = || BridgeError::Backend("unexpected reply shape for stream entries".into());
    let items = match v {
        Value::Array(items) | Value::Set(items) => items,
        Value::Nil => return Ok(Vec::new()),
        _ => return Err(bad()),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(bad());
        };
        let (Some(id), Some(fields)) = (pair.first().and_then(value_str), pair.get(1)) else {
            return Err(bad());
        };
        let mut kind = None;
        let mut event = None;
        let mut data = None;
        let mut put = |k: Option<String>, val: Option<String>| match k.as_deref() {
            Some("kind") => kind = val,
            Some("event") => event = val,
            Some("data") => data = val,
            _ => {}
        };
        match fields {
            Value::Array(flat) => {
                for kv in flat.chunks(2) {
                    put(
                        kv.first().and_then(value_str),
                        kv.get(1).and_then(value_str),
                    );
                }
            }
            Value::Map(pairs) => {
                for (k, val) in pairs {
                    put(value_str(k), value_str(val));
                }
            }
            _ => return Err(bad()),
        }
        let body = match kind.as_deref() {
            Some("end") => EntryBody::End,
            _ => EntryBody::Event {
                event: event.unwrap_or_default(),
                data: data.unwrap_or_else(|| "null".to_owned()),
            },
        };
        out.push(Entry { id, body });
    }
    Ok(out)
}

/// Parses an `XREAD` reply into `(key, entries)` pairs (RESP2 array or RESP3 map).
fn parse_xread(v: &Value) -> Result<Vec<(String, Vec<Entry>)>, BridgeError> {
    let bad = || BridgeError::Backend("unexpected XREAD reply shape".into());
    let mut out = Vec::new();
    match v {
        Value::Nil => {}
        Value::Array(streams) => {
            for s in streams {
                let Value::Array(pair) = s else {
                    return Err(bad());
                };
                let key = pair.first().and_then(value_str).ok_or_else(bad)?;
                let entries = parse_entries(pair.get(1).ok_or_else(bad)?)?;
                out.push((key, entries));
            }
        }
        Value::Map(pairs) => {
            for (k, entries) in pairs {
                out.push((value_str(k).ok_or_else(bad)?, parse_entries(entries)?));
            }
        }
        _ => return Err(bad()),
    }
    Ok(out)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// True for errors worth retrying: connection trouble, timeouts, a loading or busy server.
fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.retry_method(),
            RetryMethod::Reconnect | RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry
        )
}

fn backend(e: &RedisError) -> BridgeError {
    BridgeError::Backend(format!("redis: {e}"))
}

impl RedisBridge {
    /// Connects (failing fast with [`BridgeError::Backend`] if Redis is unreachable), loads the
    /// write script and starts the reader task. Must be called inside a Tokio runtime.
    pub async fn connect(config: RedisBridgeConfig) -> Result<Self, BridgeError> {
        config.validate()?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(BridgeError::NoRuntime);
        }
        let url = config.resolved_url();
        let client = Client::open(url.as_str())
            .map_err(|e| BridgeError::InvalidConfig(format!("redis_url: {e}")))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(config.response_timeout_ms)))
            .set_connection_timeout(Some(Duration::from_millis(config.connect_timeout_ms)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let mut conn = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(|e| BridgeError::Backend(format!("cannot connect to redis: {e}")))?;
        let script = Script::new(WRITE_SCRIPT);
        script
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(|e| backend(&e))?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let inner = Arc::new(Inner {
            wake_key: format!("{}__reader__:{instance}", config.key_prefix),
            config,
            client,
            conn,
            script,
            hubs: Mutex::new(HashMap::new()),
            reader_idle_wake: Notify::new(),
            closed: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            published_total: AtomicU64::new(0),
            gaps_total: Arc::new(AtomicU64::new(0)),
            nonce_seq: AtomicU64::new(0),
            instance,
        });
        let tracker = TaskTracker::new();
        tracker.spawn(reader_loop(Arc::downgrade(&inner), inner.shutdown.clone()));
        Ok(Self { inner, tracker })
    }

    /// The configuration in force.
    pub fn config(&self) -> &RedisBridgeConfig {
        &self.inner.config
    }

    /// The Redis key of a stream.
    pub fn key_of(&self, stream_id: &str) -> String {
        self.inner.key(stream_id)
    }
}

impl Drop for RedisBridge {
    fn drop(&mut self) {
        // No detached work outlives the bridge: stop the reader and end subscriptions.
        self.inner.shutdown.cancel();
        self.tracker.close();
    }
}

/// What a write script call asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteMode {
    Event,
    End,
    Terminal,
}

impl WriteMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::End => "end",
            Self::Terminal => "terminal",
        }
    }
}

impl Inner {
    fn key(&self, stream_id: &str) -> String {
        format!("{}{stream_id}", self.config.key_prefix)
    }

    /// The pub/sub channel of replica `target`'s wake-ups (`None`: the broadcast channel).
    fn wakeup_channel(&self, target: Option<&str>) -> String {
        format!(
            "{}__wake__:{}",
            self.config.key_prefix,
            target.unwrap_or("*all*")
        )
    }

    fn check_open(&self) -> Result<(), BridgeError> {
        if self.closed.load(Ordering::Acquire) {
            Err(BridgeError::Closed)
        } else {
            Ok(())
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.retry_backoff_ms.max(1);
        Duration::from_millis(base.saturating_mul(1u64 << attempt.min(16)).min(2_000))
    }

    /// Runs `cmd` on the shared connection, retrying transient errors (bounded).
    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, BridgeError> {
        let mut attempt = 0u32;
        loop {
            let mut conn = self.conn.clone();
            match cmd.query_async::<Value>(&mut conn).await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && attempt < self.config.max_retries => {
                    tracing::warn!(error = %e, attempt, "stream bridge: transient redis error, retrying");
                    self.sleep_or_closed(self.backoff(attempt)).await?;
                    attempt += 1;
                }
                Err(e) => return Err(backend(&e)),
            }
        }
    }

    async fn sleep_or_closed(&self, d: Duration) -> Result<(), BridgeError> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(BridgeError::Closed),
            () = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Runs the write script (bounded retries; idempotent thanks to the nonce).
    async fn write(
        &self,
        stream_id: &str,
        mode: WriteMode,
        event: &str,
        data: &str,
    ) -> Result<Option<String>, BridgeError> {
        self.check_open()?;
        let nonce = format!(
            "{}-{}",
            self.instance,
            self.nonce_seq.fetch_add(1, Ordering::Relaxed)
        );
        let key = self.key(stream_id);
        let mut attempt = 0u32;
        let reply: Vec<String> = loop {
            let mut invocation = self.script.key(&key);
            invocation
                .arg(unix_ms())
                .arg(self.config.queue_maxsize)
                .arg(self.config.stream_ttl_seconds)
                .arg(mode.as_str())
                .arg(&nonce)
                .arg(event)
                .arg(data);
            let mut conn = self.conn.clone();
            match invocation.invoke_async::<Vec<String>>(&mut conn).await {
                Ok(v) => break v,
                Err(e) if is_transient(&e) && attempt < self.config.max_retries => {
                    tracing::warn!(stream_id, error = %e, attempt, "stream bridge: transient redis error on write, retrying");
                    self.sleep_or_closed(self.backoff(attempt)).await?;
                    attempt += 1;
                }
                Err(e) => return Err(backend(&e)),
            }
        };
        match reply.first().map(String::as_str) {
            Some("ok" | "dup") => {
                if mode != WriteMode::End {
                    self.published_total.fetch_add(1, Ordering::Relaxed);
                }
                Ok(reply.get(1).filter(|id| !id.is_empty()).cloned())
            }
            Some("noop") => Ok(None),
            Some("ended") => Err(BridgeError::StreamEnded {
                stream_id: stream_id.to_owned(),
            }),
            other => Err(BridgeError::Backend(format!(
                "unexpected write script reply {other:?}"
            ))),
        }
    }

    /// Wakes the reader so it starts watching a newly loaded hub.
    async fn wake_reader(&self) -> Result<(), BridgeError> {
        self.reader_idle_wake.notify_one();
        let ttl_ms = self
            .config
            .block_ms
            .saturating_mul(2)
            .saturating_add(60_000);
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(&self.wake_key)
            .arg("MAXLEN")
            .arg(1)
            .arg("*")
            .arg("w")
            .arg(1)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&self.wake_key)
            .arg(ttl_ms)
            .ignore();
        let mut attempt = 0u32;
        loop {
            let mut conn = self.conn.clone();
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) && attempt < self.config.max_retries => {
                    self.sleep_or_closed(self.backoff(attempt)).await?;
                    attempt += 1;
                }
                Err(e) => return Err(backend(&e)),
            }
        }
    }

    /// Newest retained event (not the end marker) as `(id, seq)`, read from Redis.
    async fn redis_latest(&self, stream_id: &str) -> Result<Option<(String, u64)>, BridgeError> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.key(stream_id))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(2);
        let entries = parse_entries(&self.query(&cmd).await?)?;
        Ok(entries.into_iter().find_map(|e| match e.body {
            EntryBody::Event { .. } => parse_event_id(&e.id).map(|(_, seq)| (e.id, seq)),
            EntryBody::End => None,
        }))
    }

    /// Gets (or creates) the hub of `stream_id` and counts a subscriber on it, atomically.
    fn join_hub(self: &Arc<Self>, stream_id: &str) -> SubscriberGuard {
        let mut hubs = self.hubs.lock();
        let reusable = hubs
            .get(stream_id)
            .filter(|h| {
                // An ended or failed mirror is complete or dead: a new subscriber gets a fresh
                // load, which also sees a stream re-created under the same id.
                let st = h.state.lock();
                !st.ended && !st.failed
            })
            .cloned();
        let hub = match reusable {
            Some(hub) => hub,
            None => {
                let hub = Arc::new(Hub::new(stream_id, self.key(stream_id)));
                hubs.insert(stream_id.to_owned(), Arc::clone(&hub));
                hub
            }
        };
        hub.subscribers.fetch_add(1, Ordering::SeqCst);
        SubscriberGuard {
            hub,
            bridge: Arc::downgrade(self),
        }
    }

    /// Brings a hub up to date with Redis before a subscription is positioned on it: the first
    /// subscriber loads the retained entries (`XRANGE - +`) and lets the reader watch the hub;
    /// later ones catch up from the hub's cursor (`XRANGE (cursor +`), so a subscription always
    /// sees at least everything published before `subscribe` was called, whatever the reader's
    /// lag (`Hub::apply` skips what it already has).
    async fn sync_hub(&self, hub: &Arc<Hub>) -> Result<(), BridgeError> {
        let count = self.config.queue_maxsize + 2;
        if hub.loaded.get().is_some() {
            let cursor = hub.state.lock().cursor.clone();
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&hub.key)
                .arg(format!("({cursor}"))
                .arg("+")
                .arg("COUNT")
                .arg(count);
            let entries = parse_entries(&self.query(&cmd).await?)?;
            hub.apply(entries, self.config.queue_maxsize);
            return Ok(());
        }
        let mut loaded_here = false;
        hub.loaded
            .get_or_try_init(|| async {
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(&hub.key).arg("-").arg("+").arg("COUNT").arg(count);
                let entries = parse_entries(&self.query(&cmd).await?)?;
                hub.apply(entries, self.config.queue_maxsize);
                loaded_here = true;
                Ok::<(), BridgeError>(())
            })
            .await?;
        if loaded_here {
            // Only now is the hub watchable: wake the reader so it adds the key to its XREAD.
            self.wake_reader().await?;
        }
        Ok(())
    }

    /// Builds a subscription on a joined, loaded hub, positioned per `last_event_id`.
    fn subscription(&self, guard: SubscriberGuard, last_event_id: Option<&str>) -> Subscription {
        let hub = Arc::clone(&guard.hub);
        let (start, next) = {
            let st = hub.state.lock();
            (st.start, st.next)
        };
        let (cursor, last_id) = match last_event_id {
            None | Some("-1") => (start, None),
            Some(id) => match parse_event_id(id) {
                Some((_, seq)) if seq < next => (seq + 1, Some(id.to_owned())),
                _ => {
                    warn_unknown(&hub.stream_id, id);
                    (start, None)
                }
            },
        };
        let reader = Reader {
            hub,
            pos: Position {
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

    fn hubs_snapshot(&self) -> Vec<Arc<Hub>> {
        self.hubs.lock().values().cloned().collect()
    }

    /// Ends or fails the local hub of `stream_id` (if any) and forgets it.
    fn drop_hub(&self, stream_id: &str) -> Option<Arc<Hub>> {
        self.hubs.lock().remove(stream_id)
    }
}

fn warn_unknown(stream_id: &str, id: &str) {
    tracing::warn!(
        stream_id,
        last_event_id = id,
        "stream bridge: unknown Last-Event-ID, replaying from the earliest retained event"
    );
}

/// Counts a subscription on its hub; the last one out removes the hub from the bridge.
#[derive(Debug)]
struct SubscriberGuard {
    hub: Arc<Hub>,
    bridge: Weak<Inner>,
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        match self.bridge.upgrade() {
            Some(bridge) => {
                let mut hubs = bridge.hubs.lock();
                if self.hub.subscribers.fetch_sub(1, Ordering::SeqCst) == 1 {
                    let same = hubs
                        .get(&self.hub.stream_id)
                        .is_some_and(|h| Arc::ptr_eq(h, &self.hub));
                    if same {
                        hubs.remove(&self.hub.stream_id);
                    }
                }
            }
            None => {
                self.hub.subscribers.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// One subscriber's private read state over a shared hub (same logic as the memory bridge's).
struct Reader {
    hub: Arc<Hub>,
    pos: Position,
    shutdown: CancellationToken,
    done: bool,
    _guard: SubscriberGuard,
}

struct Position {
    /// Seq of the next event to copy out of the mirror.
    cursor: u64,
    /// Id of the last event handed out (or the requested Last-Event-ID): reported in a gap.
    last_id: Option<String>,
    buf: VecDeque<BridgeEvent>,
    gaps_total: Arc<AtomicU64>,
}

enum Step {
    Terminal(Option<BridgeItem>),
    Refilled,
    Idle,
}

impl Position {
    fn read(&mut self, hub: &Hub) -> Step {
        let st = hub.state.lock();
        if st.failed {
            return Step::Terminal(None);
        }
        if self.cursor < st.start {
            self.gaps_total.fetch_add(1, Ordering::Relaxed);
            let id_of = |e: Option<&BridgeEvent>| e.map(|e| e.id.clone()).unwrap_or_default();
            return Step::Terminal(Some(BridgeItem::Gap(GapInfo {
                stream_id: hub.stream_id.clone(),
                requested_event_id: self.last_id.take(),
                earliest_available_event_id: id_of(st.events.front()),
                latest_available_event_id: id_of(st.events.back()),
            })));
        }
        if self.cursor < st.next {
            let from = usize::try_from(self.cursor - st.start).unwrap_or(usize::MAX);
            let to = st.events.len().min(from.saturating_add(READ_BATCH));
            if from < to {
                self.buf.extend(st.events.range(from..to).cloned());
                self.cursor += (to - from) as u64;
                if let Some(last) = self.buf.back() {
                    self.last_id = Some(last.id.clone());
                }
                return Step::Refilled;
            }
        }
        if st.ended {
            return Step::Terminal(Some(BridgeItem::End));
        }
        Step::Idle
    }
}

impl Reader {
    async fn next_item(&mut self) -> Option<BridgeItem> {
        loop {
            if self.done || self.shutdown.is_cancelled() {
                self.done = true;
                return None;
            }
            if let Some(event) = self.pos.buf.pop_front() {
                return Some(BridgeItem::Event(event));
            }
            let notified = self.hub.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.pos.read(&self.hub) {
                Step::Terminal(item) => {
                    self.done = true;
                    if item.is_none() {
                        tracing::warn!(stream_id = %self.hub.stream_id, "stream bridge: redis unavailable, ending subscription without end");
                    }
                    return item;
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

/// The reader task: one blocking `XREAD` over every watched hub, on a dedicated connection.
/// Holds only a `Weak` to the bridge between rounds, so dropping the bridge ends it.
async fn reader_loop(weak: Weak<Inner>, shutdown: CancellationToken) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut wake_cursor = "0-0".to_owned();
    let mut failures = 0u32;
    let mut last_probe = Instant::now();
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let watched: Vec<(Arc<Hub>, String)> = inner
            .hubs_snapshot()
            .into_iter()
            .filter_map(|h| h.watchable().map(|c| (h, c)))
            .collect();
        let block = Duration::from_millis(inner.config.block_ms);
        if last_probe.elapsed() >= block {
            last_probe = Instant::now();
            if let Err(e) = probe(&inner).await {
                tracing::debug!(error = %e, "stream bridge: existence check failed");
            }
        }
        if watched.is_empty() {
            let idle = inner.reader_idle_wake.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = &mut idle => {}
                () = tokio::time::sleep(block) => {}
            }
            continue;
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(XREAD_COUNT)
            .arg("BLOCK")
            .arg(inner.config.block_ms)
            .arg("STREAMS")
            .arg(&inner.wake_key);
        for (hub, _) in &watched {
            cmd.arg(&hub.key);
        }
        cmd.arg(&wake_cursor);
        for (_, cursor) in &watched {
            cmd.arg(cursor);
        }
        let result = match conn.as_mut() {
            Some(c) => Ok(c),
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_response_timeout(None)
                    .set_connection_timeout(Some(Duration::from_millis(
                        inner.config.connect_timeout_ms,
                    )));
                match inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(c) => Ok(conn.insert(c)),
                    Err(e) => Err(backend(&e)),
                }
            }
        };
        let reply = match result {
            Ok(c) => {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = tokio::time::timeout(block + BLOCK_MARGIN, cmd.query_async::<Value>(c)) => match r {
                        Ok(Ok(v)) => parse_xread(&v),
                        Ok(Err(e)) => Err(backend(&e)),
                        Err(_) => Err(BridgeError::Backend("blocking XREAD got no reply".into())),
                    },
                }
            }
            Err(e) => Err(e),
        };
        match reply {
            Ok(streams) => {
                failures = 0;
                let maxlen = inner.config.queue_maxsize;
                for (key, entries) in streams {
                    if key == inner.wake_key {
                        if let Some(last) = entries.last() {
                            wake_cursor.clone_from(&last.id);
                        }
                        continue;
                    }
                    if let Some((hub, _)) = watched.iter().find(|(h, _)| h.key == key) {
                        hub.apply(entries, maxlen);
                    }
                }
            }
            Err(e) => {
                conn = None;
                failures += 1;
                if failures > inner.config.max_retries {
                    tracing::error!(error = %e, "stream bridge: redis unavailable, failing live subscriptions");
                    for (hub, _) in &watched {
                        hub.fail();
                        inner.drop_hub(&hub.stream_id);
                    }
                    failures = 0;
                } else {
                    tracing::warn!(error = %e, failures, "stream bridge: reader error, retrying");
                }
                let pause = inner.backoff(failures);
                drop(inner);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Subscribes to a replica's wake-up channels on a dedicated pub/sub connection and turns each
/// message into a `notify`. Reconnects with backoff (notifying once after each reconnect:
/// messages sent while disconnected are lost) until `shutdown`.
async fn wakeup_loop(
    client: Client,
    channels: Vec<String>,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
    connect_timeout: Duration,
    backoff_ms: u64,
) {
    use futures::StreamExt;
    let mut failures = 0u32;
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(connect_timeout, client.get_async_pubsub()) => r,
        };
        match connected {
            Ok(Ok(mut pubsub)) => match pubsub.subscribe(&channels[..]).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!("stream bridge: replica wake-up channel reconnected");
                        notify.notify_one();
                    }
                    failures = 0;
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            m = messages.next() => match m {
                                Some(_) => notify.notify_one(),
                                None => break,
                            },
                        }
                    }
                    tracing::warn!("stream bridge: replica wake-up channel lost, reconnecting");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stream bridge: cannot subscribe to replica wake-ups")
                }
            },
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "stream bridge: cannot connect for replica wake-ups")
            }
            Err(_) => tracing::warn!("stream bridge: connecting for replica wake-ups timed out"),
        }
        failures = failures.saturating_add(1);
        let pause = Duration::from_millis(
            backoff_ms
                .saturating_mul(1u64 << failures.min(6))
                .min(5_000),
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Ends hubs whose stream disappeared (cleanup elsewhere, TTL expiry of a dead writer) and
/// hubs that waited too long for a stream that never appeared.
async fn probe(inner: &Inner) -> Result<(), BridgeError> {
    let wait_limit = Duration::from_secs(inner.config.wait_timeout_seconds);
    let mut existed = Vec::new();
    for hub in inner.hubs_snapshot() {
        if hub.loaded.get().is_none() {
            continue;
        }
        let (seen, done) = {
            let st = hub.state.lock();
            (st.existed, st.ended || st.failed)
        };
        if done {
            continue;
        }
        if seen {
            existed.push(hub);
        } else if hub.created.elapsed() >= wait_limit {
            tracing::debug!(stream_id = %hub.stream_id, "stream bridge: waited too long for a stream that never appeared");
            hub.end();
            inner.drop_hub(&hub.stream_id);
        }
    }
    if existed.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for hub in &existed {
        pipe.cmd("EXISTS").arg(&hub.key);
    }
    let mut conn = inner.conn.clone();
    let found: Vec<i64> = pipe.query_async(&mut conn).await.map_err(|e| backend(&e))?;
    for (hub, n) in existed.iter().zip(found) {
        if n == 0 {
            tracing::info!(stream_id = %hub.stream_id, "stream bridge: stream removed or expired in redis, ending subscribers");
            hub.end();
        }
    }
    Ok(())
}

#[async_trait]
impl StreamBridge for RedisBridge {
    async fn publish(
        &self,
        stream_id: &str,
        event: &str,
        data: Payload,
    ) -> Result<String, BridgeError> {
        self.inner
            .write(stream_id, WriteMode::Event, event, &data)
            .await?
            .ok_or_else(|| BridgeError::Backend("publish produced no event id".into()))
    }

    async fn publish_end(&self, stream_id: &str) -> Result<(), BridgeError> {
        self.inner
            .write(stream_id, WriteMode::End, "", "")
            .await
            .map(|_| ())
    }

    async fn publish_terminal(
        &self,
        stream_id: &str,
        event: &str,
        data: Payload,
    ) -> Result<String, BridgeError> {
        self.inner
            .write(stream_id, WriteMode::Terminal, event, &data)
            .await?
            .ok_or_else(|| BridgeError::Backend("publish produced no event id".into()))
    }

    async fn subscribe(
        &self,
        stream_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, BridgeError> {
        self.inner.check_open()?;
        let guard = self.inner.join_hub(stream_id);
        let hub = Arc::clone(&guard.hub);
        self.inner.sync_hub(&hub).await?;
        Ok(self.inner.subscription(guard, last_event_id))
    }

    async fn latest_event_id(&self, stream_id: &str) -> Option<String> {
        match self.inner.redis_latest(stream_id).await {
            Ok(latest) => latest.map(|(id, _)| id),
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "stream bridge: latest_event_id failed");
                None
            }
        }
    }

    async fn ready(&self) -> Result<(), BridgeError> {
        self.inner.query(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn exists(&self, stream_id: &str) -> bool {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.inner.key(stream_id));
        match self.inner.query(&cmd).await {
            Ok(Value::Int(n)) => n > 0,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(stream_id, error = %e, "stream bridge: exists failed");
                false
            }
        }
    }

    async fn cleanup(&self, stream_id: &str, delay: Duration) {
        let key = self.inner.key(stream_id);
        let mut cmd;
        if delay.is_zero() {
            cmd = redis::cmd("DEL");
            cmd.arg(&key);
        } else {
            cmd = redis::cmd("PEXPIRE");
            cmd.arg(&key)
                .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        }
        if let Err(e) = self.inner.query(&cmd).await {
            tracing::warn!(stream_id, error = %e, "stream bridge: cleanup failed; the key's TTL still bounds it");
        }
        if delay.is_zero()
            && let Some(hub) = self.inner.drop_hub(stream_id)
        {
            hub.end();
        }
    }

    async fn mark_awaiting_input(&self, stream_id: &str) {
        if self.inner.config.stream_ttl_seconds == 0 {
            return;
        }
        let mut cmd = redis::cmd("EXPIRE");
        cmd.arg(self.inner.key(stream_id))
            .arg(self.inner.config.awaiting_input_ttl_seconds)
            .arg("GT");
        if let Err(e) = self.inner.query(&cmd).await {
            tracing::warn!(stream_id, error = %e, "stream bridge: mark_awaiting_input failed");
        }
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        for hub in self.inner.hubs_snapshot() {
            hub.notify.notify_waiters();
        }
    }

    async fn wake_replica(&self, target: Option<&str>) {
        if self.inner.check_open().is_err() {
            return;
        }
        let channel = self.inner.wakeup_channel(target);
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&channel).arg(1);
        if let Err(e) = self.inner.query(&cmd).await {
            tracing::debug!(channel, error = %e, "stream bridge: replica wake-up not sent");
        }
    }

    fn listen_wakeups(&self, replica_id: &str, notify: Arc<Notify>) {
        let channels = vec![
            self.inner.wakeup_channel(Some(replica_id)),
            self.inner.wakeup_channel(None),
        ];
        self.tracker.spawn(wakeup_loop(
            self.inner.client.clone(),
            channels,
            notify,
            self.inner.shutdown.clone(),
            Duration::from_millis(self.inner.config.connect_timeout_ms),
            self.inner.config.retry_backoff_ms.max(1),
        ));
    }

    fn stats(&self) -> BridgeStats {
        let mut stats = BridgeStats {
            published_total: self.inner.published_total.load(Ordering::Relaxed),
            gaps_total: self.inner.gaps_total.load(Ordering::Relaxed),
            closed: self.inner.closed.load(Ordering::Acquire),
            ..BridgeStats::default()
        };
        for hub in self.inner.hubs_snapshot() {
            let st = hub.state.lock();
            stats.total_streams += 1;
            if st.ended {
                stats.ended_streams += 1;
            } else {
                stats.active_streams += 1;
            }
            stats.retained_events += st.events.len() as u64;
            stats.retained_bytes += st.bytes as u64;
            stats.subscribers += hub.subscribers.load(Ordering::Relaxed) as u64;
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c = RedisBridgeConfig::default();
        assert_eq!(c.queue_maxsize, 256);
        assert_eq!(c.stream_ttl_seconds, 86_400);
        assert!(c.validate().is_ok());
        let bad = RedisBridgeConfig {
            queue_maxsize: 0,
            ..RedisBridgeConfig::default()
        };
        assert!(matches!(bad.validate(), Err(BridgeError::InvalidConfig(_))));
        let parsed: RedisBridgeConfig =
            serde_json::from_str(r#"{"redis_url":"redis://h:1/2","key_prefix":"x:"}"#)
                .expect("config");
        assert_eq!(parsed.resolved_url(), "redis://h:1/2");
        assert_eq!(parsed.key_prefix, "x:");
        assert_eq!(parsed.queue_maxsize, 256);
    }

    #[test]
    fn parses_stream_entries_and_xread_replies() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = |id: &str, fields: &[&str]| {
            Value::Array(vec![
                bulk(id),
                Value::Array(fields.iter().map(|f| bulk(f)).collect()),
            ])
        };
        let entries = Value::Array(vec![
            entry(
                "5-0",
                &[
                    "kind", "event", "event", "custom", "data", "{}", "nonce", "n",
                ],
            ),
            entry("5-1", &["kind", "end", "nonce", "n"]),
        ]);
        let reply = Value::Array(vec![Value::Array(vec![bulk("k"), entries])]);
        let parsed = parse_xread(&reply).expect("parse");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "k");
        let e = &parsed[0].1;
        assert_eq!(e[0].id, "5-0");
        assert!(
            matches!(&e[0].body, EntryBody::Event { event, data } if event == "custom" && data == "{}")
        );
        assert!(matches!(e[1].body, EntryBody::End));
        assert!(parse_xread(&Value::Nil).expect("nil").is_empty());
        assert!(parse_xread(&Value::Int(3)).is_err());
    }

    #[test]
    fn hub_applies_in_order_detects_holes_and_trims() {
        let hub = Hub::new("s", "k".into());
        let ev = |id: &str| Entry {
            id: id.into(),
            body: EntryBody::Event {
                event: "custom".into(),
                data: "{}".into(),
            },
        };
        hub.apply(vec![ev("1-0"), ev("1-1"), ev("1-1"), ev("2-2")], 2);
        {
            let st = hub.state.lock();
            assert_eq!((st.start, st.next, st.events.len()), (1, 3, 2));
            assert_eq!(st.cursor, "2-2");
        }
        // A hole: seq 5 after 2 -> earlier events are not available any more.
        hub.apply(vec![ev("3-5")], 2);
        {
            let st = hub.state.lock();
            assert_eq!((st.start, st.next, st.events.len()), (5, 6, 1));
        }
        // A newer id with an older seq: the stream was re-created; the mirror ends.
        let recreated = Hub::new("s", "k".into());
        recreated.apply(vec![ev("1-0"), ev("1-1")], 4);
        recreated.apply(vec![ev("9-0")], 4);
        assert!(recreated.state.lock().ended);
        hub.apply(
            vec![Entry {
                id: "3-6".into(),
                body: EntryBody::End,
            }],
            2,
        );
        assert!(hub.state.lock().ended);
    }

    #[test]
    fn ids_compare_numerically() {
        assert!(id_after("10-0", "9-5"));
        assert!(id_after("9-10", "9-9"));
        assert!(!id_after("9-9", "9-9"));
    }
}
