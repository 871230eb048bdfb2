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

/// Serializes straight from the engine's shared lists (no JSON tree of the state is built):
/// the same bytes as [`FinalValues::to_value`] (keys in order, `__interrupt__` last).
impl serde::Serialize for FinalValues {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match &*self.0 {
            Inner::Json(v) => v.serialize(s),
            Inner::Shared { state, interrupts } => {
                let len = state.len() + usize::from(interrupts.is_some());
                let mut m = s.serialize_map(Some(len))?;
                for (k, v) in state {
                    m.serialize_entry(k, &antler_graph::ChannelJson(v))?;
                }
                if let Some(i) = interrupts {
                    m.serialize_entry("__interrupt__", i)?;
                }
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializing_shared_values_gives_the_bytes_of_their_json() {
        let list = ChannelValue::from_value(json!([{"b": 1, "a": "x"}, "two"]), true);
        let mut state = BTreeMap::new();
        state.insert("messages".to_string(), list);
        state.insert(
            "title".to_string(),
            ChannelValue::Value(Arc::new(json!("t"))),
        );
        state.insert(
            "__z".to_string(),
            ChannelValue::Value(Arc::new(json!(null))),
        );
        for interrupts in [None, Some(json!([{"id": "i", "value": 1}]))] {
            let v = FinalValues::shared(state.clone(), interrupts);
            let direct = serde_json::to_vec(&v).unwrap();
            let via_tree = serde_json::to_vec(&v.to_value()).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(via_tree).unwrap()
            );
        }
    }
}
