//! The registry of graphs this server can run, keyed by graph id, in registration order.
//! Immutable after startup, shared by the runtime and the HTTP layer.

use std::collections::{BTreeMap, BTreeSet};

use antler_graph::CompiledGraph;

/// Graph id -> compiled graph.
#[derive(Clone, Default)]
pub struct Graphs {
    order: Vec<String>,
    by_id: BTreeMap<String, CompiledGraph>,
    /// What a graph does (declared agents' `description`), shown on its system assistant.
    descriptions: BTreeMap<String, String>,
    /// Graphs that are agents (`lead_agent` and the declared agents): a run of one of them may
    /// name another with `context.agent_name`.
    agents: BTreeSet<String>,
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

    /// Sets the description of a registered graph (its system assistant's `description`).
    pub fn describe(&mut self, graph_id: &str, description: impl Into<String>) {
        if self.by_id.contains_key(graph_id) {
            self.descriptions
                .insert(graph_id.to_string(), description.into());
        }
    }

    /// Marks a registered graph as an agent (see [`agent_named`](Self::agent_named)).
    pub fn mark_agent(&mut self, graph_id: &str) {
        if self.by_id.contains_key(graph_id) {
            self.agents.insert(graph_id.to_string());
        }
    }

    /// Whether `graph_id` is an agent graph.
    pub fn is_agent(&self, graph_id: &str) -> bool {
        self.agents.contains(graph_id)
    }

    /// The agent graph a client's `agent_name` names, normalized as DeerFlow does (trimmed,
    /// lower case, `_` as `-`).
    pub fn agent_named(&self, name: &str) -> Option<&str> {
        let wanted = name.trim().to_lowercase().replace('_', "-");
        self.agents
            .iter()
            .find(|a| **a == wanted)
            .map(String::as_str)
    }

    /// The agent graphs, sorted.
    pub fn agent_ids(&self) -> Vec<&str> {
        self.agents.iter().map(String::as_str).collect()
    }

    /// The description of `graph_id`, if one was set.
    pub fn description(&self, graph_id: &str) -> Option<&str> {
        self.descriptions.get(graph_id).map(String::as_str)
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
