//! The [`StreamBridge`] trait — the boundary between a run's executor (publisher) and the HTTP
//! layer's SSE streams (subscribers) — and [`BridgeStats`].
//!
//! Semantics every implementation must honour (checked by the `conformance` suite, feature
//! `testing`):
//! - a stream is identified by its run id; events get ids `"<unix_ms>-<seq>"` with `seq` the
//!   event's offset in the stream, from 0, strictly increasing;
//! - `publish_end` is terminal: publishing afterwards is [`BridgeError::StreamEnded`]; calling
//!   `publish_end` again is a no-op;
//! - subscribers read at their own pace from a bounded retained log; one slow subscriber never
//!   blocks the publisher or other subscribers — if it falls behind the trimmed part it gets
//!   [`BridgeItem::Gap`](crate::BridgeItem::Gap) and its subscription ends;
//! - `close()` is bridge shutdown, not a run cancel: subscriptions end *without* `End` (so an
//!   SSE client reconnects instead of believing the run finished).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::BridgeError;
use crate::payload::Payload;
use crate::subscription::Subscription;

/// A snapshot of bridge-wide counters, for `/metrics` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BridgeStats {
    /// Streams currently held (active + ended + waiting-for-first-publish).
    pub total_streams: u64,
    /// Streams not yet ended.
    pub active_streams: u64,
    /// Streams ended and awaiting cleanup.
    pub ended_streams: u64,
    /// Events currently retained over all streams.
    pub retained_events: u64,
    /// Approximate bytes retained over all streams.
    pub retained_bytes: u64,
    /// Live subscriptions over all streams.
    pub subscribers: u64,
    /// Events published since the bridge started.
    pub published_total: u64,
    /// Gaps reported to subscribers since the bridge started.
    pub gaps_total: u64,
    /// Ended streams removed early because the bridge held too many streams.
    pub evicted_total: u64,
    /// Delayed `cleanup` calls not yet carried out.
    pub pending_cleanups: u64,
    /// True once `close()` was called.
    pub closed: bool,
}

/// A per-run, replayable, multi-subscriber event channel. Keep it backend-neutral: the Redis
/// Streams implementation maps `publish` to `XADD` (explicit id), `subscribe` to `XRANGE`/`XREAD`,
/// `exists` to `EXISTS`, `cleanup` to `DEL`/`EXPIRE`.
#[async_trait]
pub trait StreamBridge: Send + Sync + 'static {
    /// Appends an event to `stream_id` (creating the stream on first publish) and wakes its
    /// subscribers. `data` must be compact JSON (or a [`Payload::lazy`] value); it is shared,
    /// never re-serialized. Returns the
    /// event id. Errors: [`BridgeError::StreamEnded`] after `publish_end`,
    /// [`BridgeError::Closed`] after `close`.
    async fn publish(
        &self,
        stream_id: &str,
        event: &str,
        data: Payload,
    ) -> Result<String, BridgeError>;

    /// Marks the stream finished: subscribers receive `End` after the retained events. Creates an
    /// (empty, ended) stream if none exists. Idempotent.
    async fn publish_end(&self, stream_id: &str) -> Result<(), BridgeError>;

    /// Subscribes to `stream_id`.
    ///
    /// `last_event_id`: `None` = from the earliest retained event; `Some("-1")` = all retained
    /// (the same thing); `Some(id)` = exactly after that event, no loss and no duplicate; an id
    /// older than what is retained yields a `Gap` then ends. An id that does not parse, or that is
    /// ahead of the stream, replays from the earliest retained event (logged as a warning).
    ///
    /// If the stream does not exist yet, the subscription waits for it to appear (the run may not
    /// have published yet). Callers that must not wait for a stream that is gone (a finished run
    /// whose stream was cleaned up) check [`exists`](Self::exists) first or use
    /// [`subscribe_existing`](Self::subscribe_existing). Implementations bound that wait (the
    /// memory bridge ends a never-published stream after `abandoned_ttl_seconds`).
    async fn subscribe(
        &self,
        stream_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, BridgeError>;

    /// Like [`subscribe`](Self::subscribe) but fails with [`BridgeError::StreamNotFound`] instead
    /// of waiting when the stream does not exist (is not [`exists`](Self::exists)).
    async fn subscribe_existing(
        &self,
        stream_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<Subscription, BridgeError> {
        if !self.exists(stream_id).await {
            return Err(BridgeError::StreamNotFound {
                stream_id: stream_id.to_owned(),
            });
        }
        self.subscribe(stream_id, last_event_id).await
    }

    /// Id of the newest event of the stream (None when it has none or does not exist). A
    /// subscriber that wants only what comes next (live tail) subscribes after this id.
    async fn latest_event_id(&self, stream_id: &str) -> Option<String>;

    /// True if the stream has been published to (or ended) and not cleaned up yet. A stream that
    /// only has waiting subscribers does not exist.
    async fn exists(&self, stream_id: &str) -> bool;

    /// Drops the stream after `delay` (zero = now) without blocking the caller. Subscribers still
    /// reading get the retained events and then `End`. A stream re-created under the same id in
    /// the meantime is not affected.
    async fn cleanup(&self, stream_id: &str, delay: Duration);

    /// The run is paused for human input: extends the abandoned-stream TTL until the next publish.
    async fn mark_awaiting_input(&self, stream_id: &str);

    /// Bridge shutdown (not a run cancel): stops background tasks; every subscription ends
    /// without `End`; later publishes/subscribes fail with [`BridgeError::Closed`].
    async fn close(&self);

    /// Current counters.
    fn stats(&self) -> BridgeStats;

    /// Whether the bridge can carry a new stream now (the Redis bridge asks its server): a
    /// streamed run is refused before it is created, not after, when it cannot.
    async fn ready(&self) -> Result<(), BridgeError> {
        Ok(())
    }

    /// Nudges the control loop of replica `target` (`None`: of every replica): a best-effort,
    /// non-durable wake-up over the bridge's transport (Redis pub/sub). What it is about (a
    /// cancel request, a queued run) is recorded durably first, so a lost nudge only costs the
    /// receiver's poll interval. The in-process bridge has no other process to wake: no-op.
    async fn wake_replica(&self, _target: Option<&str>) {}

    /// Delivers the nudges sent to `replica_id` (and the broadcast ones) to `notify` until the
    /// bridge closes; after a lost connection it reconnects and notifies once, since nudges
    /// may have been missed meanwhile. No-op for the in-process bridge.
    fn listen_wakeups(&self, _replica_id: &str, _notify: Arc<tokio::sync::Notify>) {}

    /// Serializes `value` to compact JSON once and publishes it.
    async fn publish_json(
        &self,
        stream_id: &str,
        event: &str,
        value: &serde_json::Value,
    ) -> Result<String, BridgeError> {
        let data = serde_json::to_string(value)?;
        self.publish(stream_id, event, data.into()).await
    }

    /// Publishes a final event (e.g. `error`) and ends the stream. The memory bridge does both
    /// atomically, so no subscriber can observe the event without the end.
    async fn publish_terminal(
        &self,
        stream_id: &str,
        event: &str,
        data: Payload,
    ) -> Result<String, BridgeError> {
        let id = self.publish(stream_id, event, data).await?;
        self.publish_end(stream_id).await?;
        Ok(id)
    }
}
