//! A run's final values, materialized only when a response needs them: building the JSON of
//! a long thread's state is O(state), and a streamed run's client never reads it.

use std::collections::BTreeMap;
use std::sync::Arc;

use antler_graph::ChannelValue;
use serde_json::{Map, Value};

/// The state a run ended with (`/wait`, `/join`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct FinalValues(Arc<Inner>);

#[derive(Debug)]
enum Inner {
    Json(Value),
    Shared {
        state: BTreeMap<String, ChannelValue>,
        /// `__interrupt__` (a run paused by `interrupt()`).
        interrupts: Option<Value>,
    },
}

impl FinalValues {
    /// Values already in JSON.
    pub fn json(v: Value) -> Self {
        FinalValues(Arc::new(Inner::Json(v)))
    }

    /// The engine's shared state, plus `__interrupt__` when the run paused.
    pub fn shared(state: BTreeMap<String, ChannelValue>, interrupts: Option<Value>) -> Self {
        FinalValues(Arc::new(Inner::Shared { state, interrupts }))
    }

    /// The values as JSON (O(state)).
    pub fn to_value(&self) -> Value {
        match &*self.0 {
            Inner::Json(v) => v.clone(),
            Inner::Shared { state, interrupts } => {
                let mut m: Map<String, Value> = state
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_value()))
                    .collect();
                if let Some(i) = interrupts {
                    m.insert("__interrupt__".into(), i.clone());
                }
                Value::Object(m)
            }
        }
    }

    /// One top-level value, without materializing the rest.
    pub fn get_str(&self, key: &str) -> Option<String> {
        match &*self.0 {
            Inner::Json(v) => v.get(key).and_then(Value::as_str).map(str::to_string),
            Inner::Shared { state, .. } => match state.get(key)? {
                ChannelValue::Value(v) => v.as_str().map(str::to_string),
                ChannelValue::List(_) => None,
            },
        }
    }

    /// Whether there is no state at all (an empty object).
    pub fn is_empty(&self) -> bool {
        match &*self.0 {
            Inner::Json(v) => v.as_object().is_none_or(|m| m.is_empty()),
            Inner::Shared { state, interrupts } => state.is_empty() && interrupts.is_none(),
        }
    }
}
