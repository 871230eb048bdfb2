//! The writes of a node's output: its state writes (coerced by the reducers) and the writes
//! its edges, branches and `goto` make to trigger channels.

use serde_json::{Map, Value, json};

use super::channels::Channels;
use super::exec::{Exec, Normalized, TaskResult};
use super::{TASKS, branch};
use crate::messages;
use crate::types::{END, GraphError, NodeOutput, PARENT, Reducer, Route, START, StreamMode};

/// A value written to an `add_messages` channel, coerced to messages (one or a list).
fn coerce_messages(v: &Value) -> Result<Value, TaskResult> {
    match v {
        Value::Array(_) => messages::coerce_messages(v).map(Value::Array),
        Value::Null => Ok(Value::Null),
        single => messages::coerce_message(single),
    }
    .map_err(|e| TaskResult::Failed {
        kind: "ValueError".into(),
        message: e.0,
    })
}

impl Exec {
    /// Writes produced by `node` for edges, given its state writes.
    pub(super) fn edge_writes(
        &self,
        ch: &Channels,
        node: &str,
        state_writes: &[(String, Value)],
        goto: &[Route],
    ) -> Result<Vec<(String, Value)>, GraphError> {
        let g = self.g();
        let spec = g.node(node).ok_or_else(|| {
            GraphError::new("InvalidUpdateError", format!("Node {node} does not exist"))
        })?;
        let mut out = Vec::new();
        let route = |r: &Route, out: &mut Vec<(String, Value)>| -> Result<(), GraphError> {
            match r {
                Route::To(n) if n == END => Ok(()),
                Route::To(n) => {
                    if g.node(n).is_none() || n == START {
                        return Err(GraphError::new(
                            "InvalidUpdateError",
                            format!("At '{node}' node, branch found unknown target '{n}'"),
                        ));
                    }
                    out.push((branch(n), Value::Null));
                    Ok(())
                }
                Route::Send { node: target, arg } => {
                    if g.node(target).is_none() || target == START {
                        return Err(GraphError::new(
                            "InvalidUpdateError",
                            format!("Invalid node name {target}"),
                        ));
                    }
                    out.push((TASKS.to_string(), json!({"node": target, "arg": arg})));
                    Ok(())
                }
            }
        };
        for r in goto {
            route(r, &mut out)?;
        }
        for t in &spec.static_out {
            if t != END {
                out.push((branch(t), Value::Null));
            }
        }
        for j in &spec.join_out {
            out.push((g.joins[*j].channel.clone(), json!(node)));
        }
        if !spec.branches.is_empty() {
            let mut local = ch.clone();
            let w: &[(String, Value)] = state_writes;
            local.apply(g, &[w], false, 0)?;
            let input = local.input(g);
            for b in &spec.branches {
                let routes = (g.branches[*b].router)(&input);
                for r in &routes {
                    route(r, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    /// Normalizes a node's output into (update for streams, state writes, goto).
    pub(super) fn output_writes(&self, output: NodeOutput) -> Result<Normalized, TaskResult> {
        let g = self.g();
        let (update, goto) = match output {
            NodeOutput::Update(v) => (v, Vec::new()),
            NodeOutput::Command(cmd) => {
                if cmd.graph.as_deref() == Some(PARENT) {
                    return Err(TaskResult::Parent(cmd));
                }
                (cmd.update.unwrap_or(Value::Null), cmd.goto)
            }
        };
        let mut writes = Vec::new();
        // the update as streams show it: built only when a mode will show it
        let keep = self.emitter.modes
            & (StreamMode::Updates.bit()
                | StreamMode::Tasks.bit()
                | StreamMode::Debug.bit()
                | StreamMode::Events.bit()
                | StreamMode::Messages.bit())
            != 0;
        let update = match update {
            Value::Null => Value::Null,
            Value::Object(o) if !keep => {
                for (k, v) in o {
                    let v = match g.reducer(&k) {
                        None => continue,
                        Some(Reducer::AddMessages) => coerce_messages(&v)?,
                        Some(_) => v,
                    };
                    writes.push((k, v));
                }
                Value::Object(Map::new())
            }
            Value::Object(o) => {
                let mut coerced = Map::new();
                for (k, v) in o {
                    let v = match g.reducer(&k) {
                        Some(Reducer::AddMessages) => coerce_messages(&v)?,
                        _ => v,
                    };
                    if g.reducer(&k).is_some() {
                        writes.push((k.clone(), v.clone()));
                    }
                    coerced.insert(k, v);
                }
                Value::Object(coerced)
            }
            Value::Array(pairs) => {
                // [[key, value], ...]
                let mut coerced = Map::new();
                for p in pairs {
                    if let Some([Value::String(k), v]) = p.as_array().map(Vec::as_slice) {
                        if g.reducer(k).is_some() {
                            writes.push((k.clone(), v.clone()));
                        }
                        coerced.insert(k.clone(), v.clone());
                    }
                }
                Value::Object(coerced)
            }
            other => {
                return Err(TaskResult::Failed {
                    kind: "InvalidUpdateError".into(),
                    message: format!("Expected dict, got {other}"),
                });
            }
        };
        Ok((update, writes, goto))
    }
}
