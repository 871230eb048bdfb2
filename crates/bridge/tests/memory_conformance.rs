//! Runs the public conformance suite against the memory bridge from outside the crate, as
//! `redis_bridge.rs` does for the Redis bridge.

use std::sync::Arc;

use antler_bridge::{MemoryBridge, MemoryBridgeConfig, StreamBridge, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bridge_passes_conformance() {
    let bridge: Arc<dyn StreamBridge> =
        Arc::new(MemoryBridge::new(MemoryBridgeConfig::default()).expect("bridge"));
    conformance::run_all(bridge).await;
}

#[tokio::test(start_paused = true)]
async fn memory_bridge_passes_conformance_with_minimum_retention() {
    let bridge: Arc<dyn StreamBridge> = Arc::new(
        MemoryBridge::new(MemoryBridgeConfig {
            queue_maxsize: 4,
            ..MemoryBridgeConfig::default()
        })
        .expect("bridge"),
    );
    conformance::run_all(bridge).await;
}
