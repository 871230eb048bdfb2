//! The crate's one public error type, [`BridgeError`].
//!
//! Every bridge implementation (memory and Redis) reports failures through this enum so
//! the runtime and the gateway can map them without knowing the backend.

/// Errors returned by a [`crate::StreamBridge`] implementation.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The bridge was shut down with `close()`; no more publishes or subscriptions.
    #[error("stream bridge is closed")]
    Closed,
    /// `publish` after `publish_end`: the stream is terminal.
    #[error("stream {stream_id} has already ended")]
    StreamEnded {
        /// The stream that was published to.
        stream_id: String,
    },
    /// `subscribe_existing` on a stream the bridge does not hold (never published, or cleaned up).
    #[error("stream {stream_id} not found")]
    StreamNotFound {
        /// The stream that was asked for.
        stream_id: String,
    },
    /// The configuration is unusable (e.g. a zero limit).
    #[error("invalid stream bridge config: {0}")]
    InvalidConfig(String),
    /// The bridge needs a Tokio runtime (for its cleanup task) and none is running.
    #[error("the stream bridge must be created inside a Tokio runtime")]
    NoRuntime,
    /// Serializing an event payload failed.
    #[error("cannot serialize event data: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A failure of the backing store (used by networked implementations such as Redis).
    #[error("stream bridge backend error: {0}")]
    Backend(String),
}
