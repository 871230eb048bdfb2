//! Channel values, versions and `versions_seen` of one checkpoint, and how writes apply to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::tasks::Task;
use super::{NO_WRITES, TASKS, conflict_message};
use crate::checkpoint::{ChannelValue, ChannelVersion, CheckpointTuple};
use crate::context::NodeInput;
use crate::graph::GraphInner;
use crate::messages::MessageList;
use crate::types::{GraphError, Reducer};

#[derive(Clone, Default)]
pub(crate) struct Channels {
    pub(super) values: BTreeMap<String, ChannelValue>,
    pub(super) versions: BTreeMap<String, ChannelVersion>,
    pub(super) seen: BTreeMap<String, BTreeMap<String, ChannelVersion>>,
    msgs: HashMap<String, MessageList>,
}

impl Channels {
    pub(super) fn load(
        g: &GraphInner,
        tuple: Option<&CheckpointTuple>,
        values: BTreeMap<String, ChannelValue>,
    ) -> Self {
        fn into_list(cv: ChannelValue) -> imbl::Vector<Arc<Value>> {
            match cv {
                ChannelValue::List(items) => items,
                ChannelValue::Value(v) => match Arc::try_unwrap(v).unwrap_or_else(|a| (*a).clone())
                {
                    Value::Array(items) => items.into_iter().map(Arc::new).collect(),
                    _ => imbl::Vector::new(),
                },
            }
        }
        let mut ch = Channels::default();
        for (k, v) in values {
            match g.reducer(&k) {
                Some(Reducer::AddMessages) => {
                    let list = MessageList::shared(into_list(v));
                    ch.values
                        .insert(k.clone(), ChannelValue::List(list.items.clone()));
                    ch.msgs.insert(k, list);
                }
                Some(Reducer::Append) => {
                    ch.values.insert(k, ChannelValue::List(into_list(v)));
                }
                _ if k == TASKS => {
                    ch.values.insert(k, ChannelValue::List(into_list(v)));
                }
                _ => {
                    let v = match v {
                        ChannelValue::List(_) => ChannelValue::Value(Arc::new(v.to_value())),
                        other => other,
                    };
                    ch.values.insert(k, v);
                }
            }
        }
        if let Some(t) = tuple {
            ch.versions = t.checkpoint.channel_versions.clone();
            ch.seen = t.checkpoint.versions_seen.clone();
        }
        for (k, r) in &g.channels {
            if r.is_list() && !ch.values.contains_key(k) {
                ch.values
                    .insert(k.clone(), ChannelValue::List(imbl::Vector::new()));
                if matches!(r, Reducer::AddMessages) {
                    ch.msgs.insert(k.clone(), MessageList::default());
                }
            }
        }
        ch
    }

    /// Keeps the message lists of the run's final checkpoint for the next run's load (their index).
    pub(super) fn remember_messages(&self) {
        for list in self.msgs.values() {
            list.remember();
        }
    }

    pub(super) fn state_values(&self, g: &GraphInner) -> Value {
        let mut m = Map::new();
        for k in g.state_keys.iter() {
            if let Some(v) = self.values.get(k) {
                m.insert(k.clone(), v.to_value());
            }
        }
        Value::Object(m)
    }

    /// The state of a `values` part (keys in the graph's order), `interrupts` last.
    pub(super) fn state_in_order(
        &self,
        g: &GraphInner,
        interrupts: Option<Value>,
    ) -> crate::SharedValues {
        let state = g
            .state_keys
            .iter()
            .filter_map(|k| self.values.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        crate::SharedValues { state, interrupts }
    }

    pub(super) fn state_shared(&self, g: &GraphInner) -> BTreeMap<String, ChannelValue> {
        g.state_keys
            .iter()
            .filter_map(|k| self.values.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }

    pub(super) fn input(&self, g: &GraphInner) -> NodeInput {
        NodeInput::state(self.state_shared(g), g.state_keys.clone())
    }

    /// A version greater than every version of this branch, and (with its random low bits)
    /// distinct from the versions another branch forked from the same parent picks: a fork never
    /// reuses a version number that an older branch's checkpoints still point at.
    pub(super) fn next_version(&self) -> ChannelVersion {
        let max = self.versions.values().copied().max().unwrap_or(0);
        (((max >> VERSION_RANDOM_BITS) + 1) << VERSION_RANDOM_BITS)
            | (rand::random::<u64>() & ((1 << VERSION_RANDOM_BITS) - 1))
    }

    pub(super) fn message_known(&self, channel: &str, id: &str) -> bool {
        self.msgs.get(channel).is_some_and(|l| l.contains(id))
    }

    /// Applies `writes` (grouped per task, in task order). Returns the updated channels.
    pub(super) fn apply(
        &mut self,
        g: &GraphInner,
        writes: &[&[(String, Value)]],
        check_conflicts: bool,
        version: ChannelVersion,
    ) -> Result<Vec<String>, GraphError> {
        let mut updated: Vec<String> = Vec::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for task_writes in writes {
            for (k, _) in task_writes.iter() {
                *counts.entry(k.as_str()).or_default() += 1;
            }
        }
        if check_conflicts {
            for (k, n) in &counts {
                if *n > 1 && matches!(g.reducer(k), Some(Reducer::LastValue)) {
                    return Err(GraphError::new("InvalidUpdateError", conflict_message(k)));
                }
            }
        }
        for task_writes in writes {
            for (k, v) in task_writes.iter() {
                if k == NO_WRITES {
                    continue;
                }
                match g.reducer(k) {
                    Some(Reducer::LastValue) => {
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(v.clone())));
                    }
                    Some(Reducer::Append) => {
                        // take the list out so it is not shared while we push (no copy)
                        let mut items = match self.values.remove(k.as_str()) {
                            Some(ChannelValue::List(items)) => items,
                            _ => imbl::Vector::new(),
                        };
                        match v {
                            Value::Array(a) => items.extend(a.iter().cloned().map(Arc::new)),
                            other => items.push_back(Arc::new(other.clone())),
                        }
                        self.values.insert(k.clone(), ChannelValue::List(items));
                    }
                    Some(Reducer::AddMessages) => {
                        // drop the second reference to the list so the push is in place
                        self.values.remove(k.as_str());
                        let list = self.msgs.entry(k.clone()).or_default();
                        list.add(v)
                            .map_err(|e| GraphError::new("ValueError", e.0))?;
                        self.values
                            .insert(k.clone(), ChannelValue::List(list.items.clone()));
                    }
                    Some(Reducer::Custom(f)) => {
                        let cur = self
                            .values
                            .get(k)
                            .map(ChannelValue::to_value)
                            .unwrap_or(Value::Null);
                        let new =
                            f(&cur, v).map_err(|e| GraphError::new("InvalidUpdateError", e))?;
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(new)));
                    }
                    None if k == TASKS => {
                        let mut items = match self.values.get(k) {
                            Some(ChannelValue::List(items)) => items.clone(),
                            _ => imbl::Vector::new(),
                        };
                        items.push_back(Arc::new(v.clone()));
                        self.values.insert(k.clone(), ChannelValue::List(items));
                    }
                    None if k.starts_with("join:") => {
                        let mut arr = match self.values.get(k) {
                            Some(ChannelValue::Value(a)) => {
                                a.as_array().cloned().unwrap_or_default()
                            }
                            _ => Vec::new(),
                        };
                        if !arr.contains(v) {
                            arr.push(v.clone());
                        }
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(Value::Array(arr))));
                    }
                    None => {
                        // trigger channels (`__start__`, `branch:to:*`) and unknown keys
                        self.values
                            .insert(k.clone(), ChannelValue::Value(Arc::new(v.clone())));
                    }
                }
                if !updated.contains(k) {
                    updated.push(k.clone());
                }
            }
        }
        for k in &updated {
            self.versions.insert(k.clone(), version);
        }
        Ok(updated)
    }

    /// Marks the triggers of `tasks` as seen and consumes sends and completed joins.
    pub(super) fn consume(
        &mut self,
        g: &GraphInner,
        tasks: &[Task],
        version: ChannelVersion,
    ) -> Vec<String> {
        let mut reset = Vec::new();
        for t in tasks {
            let seen = self.seen.entry(t.name.clone()).or_default();
            for c in &t.trigger_channels {
                if let Some(v) = self.versions.get(c) {
                    seen.insert(c.clone(), *v);
                }
            }
            if t.arg.is_some() && !reset.iter().any(|r| r == TASKS) {
                reset.push(TASKS.to_string());
            }
            if let Some(node) = g.node(&t.name) {
                for j in &node.join_in {
                    let c = g.joins[*j].channel.clone();
                    if t.trigger_channels.contains(&c) && !reset.contains(&c) {
                        reset.push(c);
                    }
                }
            }
        }
        for c in &reset {
            let empty = if c == TASKS {
                ChannelValue::List(imbl::Vector::new())
            } else {
                ChannelValue::Value(Arc::new(json!([])))
            };
            self.values.insert(c.clone(), empty);
            self.versions.insert(c.clone(), version);
        }
        reset
    }
}

/// Low bits of a channel version that are random (see `next_version`).
const VERSION_RANDOM_BITS: u32 = 20;
