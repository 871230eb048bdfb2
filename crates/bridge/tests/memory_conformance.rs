//! Runs the public conformance suite against the memory bridge from outside the crate, as
//! `redis_bridge.rs` does for the Redis bridge: one test per case and configuration.

use std::sync::Arc;

use antler_bridge::{MemoryBridge, MemoryBridgeConfig, StreamBridge};

async fn bridge(config: MemoryBridgeConfig) -> Option<Arc<dyn StreamBridge>> {
    Some(Arc::new(MemoryBridge::new(config).expect("bridge")))
}

mod default_config {
    antler_bridge::bridge_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        super::bridge(super::MemoryBridgeConfig::default())
    );
}

mod minimum_retention {
    antler_bridge::bridge_conformance!(
        #[tokio::test(start_paused = true)]
        super::bridge(super::MemoryBridgeConfig {
            queue_maxsize: 4,
            ..super::MemoryBridgeConfig::default()
        })
    );
}
