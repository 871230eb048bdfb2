//! The graph builder ([`StateGraph`]) and its validated, immutable form ([`CompiledGraph`]):
//! channels with reducers, nodes (async functions or subgraphs), static / fan-in / conditional
//! edges, and the drawable JSON of the graph.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::context::{NodeContext, NodeInput};
use crate::types::{BuildError, END, NodeError, NodeOutput, Reducer, Route, START};

pub(crate) type NodeFn = Arc<
    dyn Fn(NodeInput, NodeContext) -> BoxFuture<'static, Result<NodeOutput, NodeError>>
        + Send
        + Sync,
>;
pub(crate) type RouterFn = Arc<dyn Fn(&NodeInput) -> Vec<Route> + Send + Sync>;

#[derive(Clone)]
pub(crate) enum NodeKind {
    Func(NodeFn),
    Subgraph(CompiledGraph),
}

pub(crate) struct Join {
    pub sources: Vec<String>,
    pub target: String,
    pub channel: String,
}

pub(crate) struct Branch {
    pub from: String,
    pub router: RouterFn,
    pub path_map: Option<Vec<String>>,
}

pub(crate) struct NodeSpec {
    pub name: String,
    pub kind: NodeKind,
    /// Static successors (may include END).
    pub static_out: Vec<String>,
    /// Joins this node feeds.
    pub join_out: Vec<usize>,
    /// Joins that trigger this node.
    pub join_in: Vec<usize>,
    /// Conditional edges out of this node.
    pub branches: Vec<usize>,
}

pub(crate) struct GraphInner {
    pub name: String,
    pub channels: Vec<(String, Reducer)>,
    pub channel_index: HashMap<String, usize>,
    pub state_keys: Arc<Vec<String>>,
    /// Index 0 is START (a pseudo node); the others in declaration order.
    pub nodes: Vec<NodeSpec>,
    pub node_index: HashMap<String, usize>,
    pub edges: Vec<(String, String)>,
    pub joins: Vec<Join>,
    pub branches: Vec<Branch>,
}

impl GraphInner {
    pub fn reducer(&self, channel: &str) -> Option<&Reducer> {
        self.channel_index
            .get(channel)
            .map(|i| &self.channels[*i].1)
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.node_index.get(name).map(|i| &self.nodes[*i])
    }
}

/// A compiled graph: cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct CompiledGraph {
    pub(crate) inner: Arc<GraphInner>,
}

impl std::fmt::Debug for CompiledGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledGraph")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// Builder of a state graph.
pub struct StateGraph {
    name: String,
    channels: Vec<(String, Reducer)>,
    nodes: Vec<(String, NodeKind)>,
    edges: Vec<(String, String)>,
    joins: Vec<(Vec<String>, String)>,
    branches: Vec<(String, RouterFn, Option<Vec<String>>)>,
}

impl StateGraph {
    /// A new, empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            channels: Vec::new(),
            nodes: Vec::new(),
            edges: Vec::new(),
            joins: Vec::new(),
            branches: Vec::new(),
        }
    }

    /// Declares a state key with its reducer.
    pub fn channel(mut self, name: &str, reducer: Reducer) -> Self {
        self.channels.push((name.to_string(), reducer));
        self
    }

    /// Adds a node.
    pub fn node<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(NodeInput, NodeContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<NodeOutput, NodeError>> + Send + 'static,
    {
        let f: NodeFn = Arc::new(move |input, ctx| Box::pin(f(input, ctx)));
        self.nodes.push((name.to_string(), NodeKind::Func(f)));
        self
    }

    /// Adds a compiled graph as a node (its own checkpoint namespace `name:<task_id>`).
    pub fn subgraph(mut self, name: &str, graph: CompiledGraph) -> Self {
        self.nodes
            .push((name.to_string(), NodeKind::Subgraph(graph)));
        self
    }

    /// Static edge.
    pub fn edge(mut self, from: &str, to: &str) -> Self {
        self.edges.push((from.to_string(), to.to_string()));
        self
    }

    /// Fan-in: `to` runs once all of `from` have run.
    pub fn join(mut self, from: &[&str], to: &str) -> Self {
        self.joins
            .push((from.iter().map(|s| s.to_string()).collect(), to.to_string()));
        self
    }

    /// Conditional edge: `router` sees the state after `from`'s writes and returns routes.
    pub fn conditional_edges<R>(mut self, from: &str, router: R, path_map: Option<&[&str]>) -> Self
    where
        R: Fn(&NodeInput) -> Vec<Route> + Send + Sync + 'static,
    {
        self.branches.push((
            from.to_string(),
            Arc::new(router),
            path_map.map(|p| p.iter().map(|s| s.to_string()).collect()),
        ));
        self
    }

    /// Validates and freezes the graph.
    pub fn compile(self) -> Result<CompiledGraph, BuildError> {
        let mut nodes = vec![NodeSpec {
            name: START.to_string(),
            kind: NodeKind::Func(Arc::new(|_, _| {
                Box::pin(async { Ok(NodeOutput::Update(Value::Null)) })
            })),
            static_out: Vec::new(),
            join_out: Vec::new(),
            join_in: Vec::new(),
            branches: Vec::new(),
        }];
        let mut node_index = HashMap::new();
        node_index.insert(START.to_string(), 0usize);
        let mut channel_index = HashMap::new();
        for (i, (name, _)) in self.channels.iter().enumerate() {
            if channel_index.insert(name.clone(), i).is_some() {
                return Err(BuildError::Invalid(format!(
                    "Channel `{name}` already present."
                )));
            }
        }
        for (name, kind) in self.nodes {
            if name.is_empty()
                || name == START
                || name == END
                || name.contains('|')
                || name.contains(':')
            {
                return Err(BuildError::InvalidName(name));
            }
            if node_index.contains_key(&name) {
                return Err(BuildError::DuplicateNode(name));
            }
            node_index.insert(name.clone(), nodes.len());
            nodes.push(NodeSpec {
                name,
                kind,
                static_out: Vec::new(),
                join_out: Vec::new(),
                join_in: Vec::new(),
                branches: Vec::new(),
            });
        }
        let check_src = |n: &str| -> Result<usize, BuildError> {
            if n == END {
                return Err(BuildError::Invalid("END cannot be a start node".into()));
            }
            node_index
                .get(n)
                .copied()
                .ok_or_else(|| BuildError::UnknownNode(n.to_string()))
        };
        let check_dst = |n: &str| -> Result<(), BuildError> {
            if n == START {
                return Err(BuildError::Invalid("START cannot be an end node".into()));
            }
            if n == END || node_index.contains_key(n) {
                Ok(())
            } else {
                Err(BuildError::UnknownNode(n.to_string()))
            }
        };
        for (from, to) in &self.edges {
            let src = check_src(from)?;
            check_dst(to)?;
            if !nodes[src].static_out.contains(to) {
                nodes[src].static_out.push(to.clone());
            }
        }
        let mut joins = Vec::new();
        for (sources, target) in self.joins {
            if sources.is_empty() {
                return Err(BuildError::Invalid("join needs at least one source".into()));
            }
            check_dst(&target)?;
            if target == END {
                return Err(BuildError::Invalid("cannot join into END".into()));
            }
            let idx = joins.len();
            for s in &sources {
                let src = check_src(s)?;
                nodes[src].join_out.push(idx);
            }
            let t = node_index[&target];
            nodes[t].join_in.push(idx);
            joins.push(Join {
                channel: format!("join:{}:{}", sources.join("+"), target),
                sources,
                target,
            });
        }
        let mut branches = Vec::new();
        for (from, router, path_map) in self.branches {
            let src = check_src(&from)?;
            if let Some(pm) = &path_map {
                for p in pm {
                    check_dst(p)?;
                }
            }
            nodes[src].branches.push(branches.len());
            branches.push(Branch {
                from,
                router,
                path_map,
            });
        }
        if nodes[0].static_out.is_empty()
            && nodes[0].branches.is_empty()
            && nodes[0].join_out.is_empty()
        {
            return Err(BuildError::NoEntryPoint);
        }
        let state_keys = Arc::new(self.channels.iter().map(|(k, _)| k.clone()).collect());
        Ok(CompiledGraph {
            inner: Arc::new(GraphInner {
                name: self.name,
                channels: self.channels,
                channel_index,
                state_keys,
                nodes,
                node_index,
                edges: self.edges,
                joins,
                branches,
            }),
        })
    }
}

impl CompiledGraph {
    /// Graph name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// State keys in declaration order.
    pub fn state_keys(&self) -> Vec<String> {
        self.inner.state_keys.to_vec()
    }

    /// Node names (without START) in declaration order.
    pub fn node_names(&self) -> Vec<String> {
        self.inner.nodes[1..]
            .iter()
            .map(|n| n.name.clone())
            .collect()
    }

    /// Direct subgraph nodes: (node name, graph).
    pub fn subgraphs(&self) -> Vec<(String, CompiledGraph)> {
        self.inner
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Subgraph(g) => Some((n.name.clone(), g.clone())),
                NodeKind::Func(_) => None,
            })
            .collect()
    }

    /// `{"nodes":[...],"edges":[...]}` as the LangGraph API's `/assistants/{id}/graph`.
    /// With `xray`, subgraph nodes are replaced by their inner nodes (`parent:child`).
    pub fn drawable(&self, xray: bool) -> Value {
        let (nodes, edges) = self.draw(xray);
        json!({"nodes": nodes, "edges": edges})
    }

    fn draw(&self, xray: bool) -> (Vec<Value>, Vec<Value>) {
        let g = &self.inner;
        let runnable = |id: &str| json!({"id": id, "type": "runnable", "data": {"name": id}});
        let mut nodes = vec![runnable(START)];
        let mut edges: Vec<Value> = Vec::new();
        // entry/exit names of each node after xray expansion
        let mut entry: HashMap<String, Vec<String>> = HashMap::new();
        let mut exit: HashMap<String, Vec<String>> = HashMap::new();
        let mut sub_nodes: Vec<Value> = Vec::new();
        let mut sub_edges: Vec<Value> = Vec::new();
        for n in &g.nodes[1..] {
            match (&n.kind, xray) {
                (NodeKind::Subgraph(sub), true) => {
                    let (snodes, sedges) = sub.draw(true);
                    let mut starts = Vec::new();
                    let mut ends = Vec::new();
                    let prefix = |id: &str| format!("{}:{}", n.name, id);
                    for sn in snodes {
                        let id = sn
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        if id == START || id == END {
                            continue;
                        }
                        sub_nodes.push(runnable(&prefix(&id)));
                    }
                    for se in sedges {
                        let s = se
                            .get("source")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        let t = se
                            .get("target")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        if s == START {
                            starts.push(prefix(&t));
                        } else if t == END {
                            ends.push(prefix(&s));
                        } else {
                            let mut e = json!({"source": prefix(&s), "target": prefix(&t)});
                            if se.get("conditional") == Some(&Value::Bool(true)) {
                                e["conditional"] = json!(true);
                            }
                            sub_edges.push(e);
                        }
                    }
                    entry.insert(n.name.clone(), starts);
                    exit.insert(n.name.clone(), ends);
                }
                _ => {
                    nodes.push(runnable(&n.name));
                    entry.insert(n.name.clone(), vec![n.name.clone()]);
                    exit.insert(n.name.clone(), vec![n.name.clone()]);
                }
            }
        }
        let ends_of = |n: &str| -> Vec<String> {
            if n == START || n == END {
                vec![n.to_string()]
            } else {
                exit.get(n).cloned().unwrap_or_default()
            }
        };
        let starts_of = |n: &str| -> Vec<String> {
            if n == START || n == END {
                vec![n.to_string()]
            } else {
                entry.get(n).cloned().unwrap_or_default()
            }
        };
        let mut push_edge = |s: &str, t: &str, conditional: bool| {
            for a in ends_of(s) {
                for b in starts_of(t) {
                    let mut e = json!({"source": a, "target": b});
                    if conditional {
                        e["conditional"] = json!(true);
                    }
                    if !edges.contains(&e) {
                        edges.push(e);
                    }
                }
            }
        };
        for (from, to) in &g.edges {
            push_edge(from, to, false);
        }
        for j in &g.joins {
            for s in &j.sources {
                push_edge(s, &j.target, false);
            }
        }
        for b in &g.branches {
            let targets: Vec<String> = match &b.path_map {
                Some(pm) => pm.clone(),
                None => g.nodes[1..]
                    .iter()
                    .map(|n| n.name.clone())
                    .chain(std::iter::once(END.to_string()))
                    .collect(),
            };
            for t in targets {
                push_edge(&b.from, &t, true);
            }
        }
        let uses_end = edges
            .iter()
            .chain(sub_edges.iter())
            .any(|e| e.get("target").and_then(Value::as_str) == Some(END));
        if xray && !sub_nodes.is_empty() {
            if uses_end {
                nodes.push(json!({"id": END}));
            }
            nodes.extend(sub_nodes);
        } else {
            nodes.extend(sub_nodes);
            if uses_end {
                nodes.push(json!({"id": END}));
            }
        }
        edges.extend(sub_edges);
        (nodes, edges)
    }
}
