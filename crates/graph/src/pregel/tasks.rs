//! The tasks of a superstep: which nodes a checkpoint triggers, and their ids.

use serde_json::{Value, json};

use super::channels::Channels;
use super::{TASKS, branch};
use crate::checkpoint::ChannelValue;
use crate::graph::GraphInner;
use crate::types::START;

#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) path: Value,
    pub(super) triggers: Vec<String>,
    pub(super) trigger_channels: Vec<String>,
    pub(super) arg: Option<Value>,
    pub(super) ns: String,
}

impl Task {
    /// Sort key of LangGraph's `task_path_str`: `__pregel_pull` before `__pregel_push`.
    pub(super) fn order_key(&self) -> (u8, String, u64) {
        match self.path.get(1) {
            Some(Value::Number(n)) => (1, String::new(), n.as_u64().unwrap_or(0)),
            _ => (0, self.name.clone(), 0),
        }
    }
}

fn task_id(checkpoint_id: &str, ns: &str, step: i64, name: &str, path: &str) -> String {
    let key = format!("{checkpoint_id}|{ns}|{step}|{name}|{path}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).to_string()
}

pub(crate) fn interrupt_id(task_ns: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, task_ns.as_bytes())
        .simple()
        .to_string()
}

fn task_ns(parent_ns: &str, name: &str, id: &str) -> String {
    if parent_ns.is_empty() {
        format!("{name}:{id}")
    } else {
        format!("{parent_ns}|{name}:{id}")
    }
}

/// Tasks triggered at the checkpoint `checkpoint_id`, to run at `step`.
pub(super) fn prepare(
    g: &GraphInner,
    ch: &Channels,
    checkpoint_id: &str,
    step: i64,
    ns: &str,
) -> Vec<Task> {
    let mut tasks = Vec::new();
    if let Some(ChannelValue::List(items)) = ch.values.get(TASKS) {
        for (i, item) in items.iter().enumerate() {
            let name = item.get("node").and_then(Value::as_str).unwrap_or_default();
            if g.node(name).is_none() {
                continue;
            }
            let id = task_id(checkpoint_id, ns, step, name, &format!("push:{i}"));
            tasks.push(Task {
                ns: task_ns(ns, name, &id),
                id,
                name: name.to_string(),
                path: json!(["__pregel_push", i, false]),
                triggers: vec!["__pregel_push".to_string()],
                trigger_channels: vec![TASKS.to_string()],
                arg: Some(item.get("arg").cloned().unwrap_or(Value::Null)),
            });
        }
    }
    for node in &g.nodes {
        let seen = ch.seen.get(&node.name);
        let fresh = |c: &str| -> bool {
            match ch.versions.get(c) {
                Some(v) => *v > seen.and_then(|s| s.get(c)).copied().unwrap_or(0),
                None => false,
            }
        };
        let mut triggers = Vec::new();
        let own = if node.name == START {
            START.to_string()
        } else {
            branch(&node.name)
        };
        if fresh(&own) {
            triggers.push(own);
        }
        for j in &node.join_in {
            let join = &g.joins[*j];
            if fresh(&join.channel) {
                let complete = match ch.values.get(&join.channel) {
                    Some(ChannelValue::Value(v)) => join.sources.iter().all(|s| {
                        v.as_array()
                            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(s)))
                    }),
                    _ => false,
                };
                if complete {
                    triggers.push(join.channel.clone());
                }
            }
        }
        if triggers.is_empty() {
            continue;
        }
        let id = task_id(checkpoint_id, ns, step, &node.name, "pull");
        tasks.push(Task {
            ns: task_ns(ns, &node.name, &id),
            id,
            name: node.name.clone(),
            path: json!(["__pregel_pull", node.name]),
            triggers: triggers.clone(),
            trigger_channels: triggers,
            arg: None,
        });
    }
    tasks
}
