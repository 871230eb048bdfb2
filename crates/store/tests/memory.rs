//! The shared conformance suites against the in-memory stores: one test per case.

use std::sync::Arc;

use antler_graph::Checkpointer;
use antler_store::Stores;

mod stores {
    antler_store::store_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async {
            Some(antler_store::Stores::memory())
        }
    );
}

mod checkpointer {
    use super::*;
    antler_graph::checkpointer_conformance!(async {
        Some::<Arc<dyn Checkpointer>>(Stores::memory().checkpoints)
    });
}
