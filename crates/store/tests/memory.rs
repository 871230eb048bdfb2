//! The shared conformance suite against the in-memory stores.

use antler_store::{Stores, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stores_pass_conformance() {
    let stores = Stores::memory();
    conformance::run_all(&stores).await;
    // twice on the same stores: the suite cleans up after itself and uses fresh ids
    conformance::run_all(&stores).await;
}

#[tokio::test]
async fn memory_checkpointer_passes_conformance() {
    antler_graph::conformance::run_all(Stores::memory().checkpoints).await;
}
