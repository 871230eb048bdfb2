//! [`Subscription`]: the backend-neutral stream of [`BridgeItem`]s a subscriber reads, plus the
//! [`Subscription::with_heartbeat`] adapter the SSE layer uses to emit `: heartbeat` comments.
//!
//! A subscription is a boxed `futures::Stream`, so every implementation (memory, Redis) builds
//! one from its own reading loop with [`Subscription::new`]. It ends (yields `None`) right after
//! an [`BridgeItem::End`] or [`BridgeItem::Gap`], or when the bridge is closed.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::event::BridgeItem;

/// A live read position in one stream. `Send + Unpin`; drop it to unsubscribe.
pub struct Subscription {
    inner: BoxStream<'static, BridgeItem>,
}

impl Subscription {
    /// Wraps an implementation's item stream. The stream must end after `End`/`Gap`.
    pub fn new<S>(stream: S) -> Self
    where
        S: Stream<Item = BridgeItem> + Send + 'static,
    {
        // Fused so that polling after the end keeps returning `None` instead of panicking.
        Self {
            inner: stream.fuse().boxed(),
        }
    }

    /// Adapts the subscription for SSE: yields [`Tick::Heartbeat`] whenever no item arrived
    /// within `interval` since the previous item (or heartbeat). Ends when the subscription ends.
    pub fn with_heartbeat(self, interval: Duration) -> HeartbeatStream {
        let stream = futures::stream::unfold(Some(self), move |state| async move {
            let mut sub = state?;
            match tokio::time::timeout(interval, sub.next()).await {
                Ok(Some(item)) => Some((Tick::Item(item), Some(sub))),
                Ok(None) => None,
                Err(_elapsed) => Some((Tick::Heartbeat, Some(sub))),
            }
        });
        HeartbeatStream {
            inner: stream.fuse().boxed(),
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = BridgeItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<BridgeItem>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// An item of a [`HeartbeatStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// An item of the underlying subscription.
    Item(BridgeItem),
    /// Nothing arrived for one heartbeat interval: send `: heartbeat`.
    Heartbeat,
}

/// A [`Subscription`] interleaved with heartbeats; see [`Subscription::with_heartbeat`].
pub struct HeartbeatStream {
    inner: BoxStream<'static, Tick>,
}

impl fmt::Debug for HeartbeatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatStream").finish_non_exhaustive()
    }
}

impl Stream for HeartbeatStream {
    type Item = Tick;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Tick>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_send_and_unpin() {
        fn assert_send_unpin<T: Send + Unpin + 'static>() {}
        assert_send_unpin::<Subscription>();
        assert_send_unpin::<HeartbeatStream>();
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_fires_when_idle_and_stream_ends_after_inner() {
        let (tx, rx) = tokio::sync::mpsc::channel::<BridgeItem>(4);
        let sub = Subscription::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut hb = sub.with_heartbeat(Duration::from_secs(15));
        // Idle for one interval -> heartbeat.
        assert_eq!(hb.next().await, Some(Tick::Heartbeat));
        tx.send(BridgeItem::End).await.ok();
        assert_eq!(hb.next().await, Some(Tick::Item(BridgeItem::End)));
        drop(tx);
        assert_eq!(hb.next().await, None);
        assert_eq!(hb.next().await, None);
    }
}
