//! Thread state API: current state, state at a checkpoint, history, and `update_state`, each
//! resolved through the graph that last ran on the thread (`metadata.graph_id`).

use antler_graph::{CompiledGraph, ListOptions, StateSnapshot};
use serde_json::{Map, Value, json};

use crate::{Runtime, RuntimeError};

/// Query of [`Runtime::history`].
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    /// Newest first, at most this many (default 10).
    pub limit: Option<usize>,
    /// Only checkpoints older than this id.
    pub before: Option<String>,
    /// Metadata equality filter.
    pub metadata: Map<String, Value>,
    /// Start from this checkpoint (inclusive).
    pub checkpoint_id: Option<String>,
}

fn graph_error(e: antler_graph::GraphError) -> RuntimeError {
    if e.kind == "NotFound" || e.kind == "EmptyChannelError" {
        RuntimeError::NotFound(e.message)
    } else if e.kind == "InvalidUpdateError" || e.kind == "ValueError" {
        RuntimeError::BadRequest(format!("{}: {}", e.kind, e.message))
    } else {
        RuntimeError::Internal(format!("{}: {}", e.kind, e.message))
    }
}

impl Runtime {
    async fn thread_graph(
        &self,
        owner: &str,
        thread_id: &str,
    ) -> Result<Option<CompiledGraph>, RuntimeError> {
        let thread = self.require_thread(owner, thread_id).await?;
        Ok(thread
            .metadata
            .get("graph_id")
            .and_then(Value::as_str)
            .and_then(|g| self.graphs.get(g))
            .cloned())
    }

    /// `GET /threads/{id}/state[/{checkpoint_id}]`.
    pub async fn get_state(
        &self,
        owner: &str,
        thread_id: &str,
        checkpoint_id: Option<&str>,
        subgraphs: bool,
    ) -> Result<StateSnapshot, RuntimeError> {
        let Some(graph) = self.thread_graph(owner, thread_id).await? else {
            return Ok(StateSnapshot::empty());
        };
        let snap = graph
            .get_state(
                self.stores.checkpointer(owner).as_ref(),
                thread_id,
                checkpoint_id,
                subgraphs,
            )
            .await
            .map_err(graph_error)?;
        if checkpoint_id.is_some() && snap.checkpoint.is_none() {
            return Err(RuntimeError::NotFound(format!(
                "Checkpoint {} not found",
                checkpoint_id.unwrap_or_default()
            )));
        }
        Ok(snap)
    }

    /// `POST /threads/{id}/history`.
    pub async fn history(
        &self,
        owner: &str,
        thread_id: &str,
        q: &HistoryQuery,
    ) -> Result<Vec<Value>, RuntimeError> {
        let Some(graph) = self.thread_graph(owner, thread_id).await? else {
            return Ok(Vec::new());
        };
        let limit = q.limit.unwrap_or(10);
        // `checkpoint_id`: history starting at that checkpoint (inclusive). Ids sort by time, so
        // the newer ones are skipped; the limit applies after that.
        let opts = ListOptions {
            before: q.before.clone(),
            limit: q.checkpoint_id.is_none().then_some(limit),
            filter: q.metadata.clone(),
        };
        let snaps = graph
            .get_history(self.stores.checkpointer(owner).as_ref(), thread_id, &opts)
            .await
            .map_err(graph_error)?;
        snaps
            .into_iter()
            .filter(|s| match (&q.checkpoint_id, &s.checkpoint_id) {
                (Some(start), Some(id)) => id.as_str() <= start.as_str(),
                _ => true,
            })
            .take(limit)
            .map(|s| serde_json::to_value(&s).map_err(|e| RuntimeError::Internal(e.to_string())))
            .collect()
    }

    /// `POST /threads/{id}/state`: writes `values` as if `as_node` ran (source `update`).
    pub async fn update_state(
        &self,
        owner: &str,
        thread_id: &str,
        values: Value,
        as_node: Option<&str>,
        checkpoint_id: Option<&str>,
    ) -> Result<Value, RuntimeError> {
        let thread = self.require_thread(owner, thread_id).await?;
        if !self.live_runs_of_thread(owner, thread_id).is_empty() {
            return Err(RuntimeError::Conflict(
                "Thread is busy: a run is active. Wait for it to finish or cancel it.".into(),
            ));
        }
        let graph_id = thread
            .metadata
            .get("graph_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(graph) = graph_id
            .as_deref()
            .and_then(|g| self.graphs.get(g))
            .cloned()
        else {
            return Err(RuntimeError::BadRequest(
                "Thread has no graph yet: run it once before updating its state".into(),
            ));
        };
        if let Some(node) = as_node
            && !graph.node_names().iter().any(|n| n == node)
        {
            return Err(RuntimeError::Invalid(format!(
                "Node '{node}' does not exist in graph '{}'",
                graph.name()
            )));
        }
        let mut metadata = Map::new();
        if let Some(g) = graph_id {
            metadata.insert("graph_id".into(), json!(g));
        }
        metadata.insert("thread_id".into(), json!(thread_id));
        let cp = graph
            .update_state(
                self.stores.checkpointer(owner).as_ref(),
                thread_id,
                checkpoint_id,
                values,
                as_node,
                metadata,
            )
            .await
            .map_err(graph_error)?;
        let cp = serde_json::to_value(&cp).map_err(|e| RuntimeError::Internal(e.to_string()))?;
        Ok(json!({
            "checkpoint": cp,
            "configurable": cp,
            "checkpoint_id": cp.get("checkpoint_id").cloned().unwrap_or(Value::Null),
        }))
    }
}
