//! The registry of graphs this server can run, keyed by graph id, in registration order.
//! Immutable after startup, shared by the runtime and the HTTP layer.

use std::collections::BTreeMap;

use antler_graph::CompiledGraph;

/// Graph id -> compiled graph.
#[derive(Clone, Default)]
pub struct Graphs {
    order: Vec<String>,
    by_id: BTreeMap<String, CompiledGraph>,
}

impl Graphs {
    /// A registry from `(graph_id, graph)` pairs (later duplicates replace earlier ones).
    pub fn new<I, K>(graphs: I) -> Self
    where
        I: IntoIterator<Item = (K, CompiledGraph)>,
        K: Into<String>,
    {
        let mut this = Self::default();
        for (id, graph) in graphs {
            this.insert(id, graph);
        }
        this
    }

    /// Registers (or replaces) one graph.
    pub fn insert(&mut self, graph_id: impl Into<String>, graph: CompiledGraph) {
        let graph_id = graph_id.into();
        if !self.by_id.contains_key(&graph_id) {
            self.order.push(graph_id.clone());
        }
        self.by_id.insert(graph_id, graph);
    }

    /// The graph registered under `graph_id`.
    pub fn get(&self, graph_id: &str) -> Option<&CompiledGraph> {
        self.by_id.get(graph_id)
    }

    /// Whether `graph_id` is registered.
    pub fn contains(&self, graph_id: &str) -> bool {
        self.by_id.contains_key(graph_id)
    }

    /// Graph ids in registration order.
    pub fn ids(&self) -> &[String] {
        &self.order
    }

    /// Graph ids sorted by name.
    pub fn sorted_ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }

    /// Number of registered graphs.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when no graph is registered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
