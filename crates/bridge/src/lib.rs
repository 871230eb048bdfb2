//! `antler-bridge`: the stream bridge between run executors and SSE subscribers.
//!
//! A run's executor publishes events (`metadata`, `values`, `messages`, ...) to the stream named
//! by its run id; any number of HTTP clients subscribe to it, each reading at its own pace, and
//! may resume exactly after a `Last-Event-ID`. This crate owns:
//! - [`StreamBridge`], the backend-neutral contract ([`contract`]), with [`Subscription`] and
//!   the item types [`BridgeEvent`], [`BridgeItem`], [`GapInfo`];
//! - [`MemoryBridge`], the in-process implementation, and its [`MemoryBridgeConfig`];
//! - [`Payload`], an event's JSON text, serialized by the publisher or on first read;
//! - `RedisBridge`, the Redis Streams implementation for several replicas, and its
//!   `RedisBridgeConfig` (feature `redis`, which the binary enables; the runtime and the
//!   gateway build without it);
//! - [`sse`], the SSE frame encoder used by the gateway;
//! - `conformance` (feature `testing`), the test suite every implementation runs, one test per
//!   case through `bridge_conformance!` (test crates enable the
//!   feature through their `[dev-dependencies]`).
//!
//! Event ids are `"<unix_ms>-<seq>"`, `seq` = the event's offset in the run from 0, strictly
//! increasing; a stream ends with [`BridgeItem::End`]; a resume older than what is retained
//! gets [`BridgeItem::Gap`].

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod contract;
pub mod error;
pub mod event;
pub mod memory;
pub mod payload;
#[cfg(feature = "redis")]
pub mod redis_bridge;
pub mod sse;
pub mod subscription;

pub use contract::{BridgeStats, StreamBridge};
pub use error::BridgeError;
pub use event::{BridgeEvent, BridgeItem, GapInfo, format_event_id, parse_event_id};
pub use memory::{MemoryBridge, MemoryBridgeConfig};
pub use payload::Payload;
#[cfg(feature = "redis")]
pub use redis_bridge::{RedisBridge, RedisBridgeConfig};
pub use subscription::{HeartbeatStream, Subscription, Tick};
