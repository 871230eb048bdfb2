//! [`Payload`]: an event's data, compact JSON serialized once — by the publisher, or, for a
//! value that may never be read, by its first reader.
//!
//! A run publishes a `values` event (its whole state) at every step, for clients that join or
//! resume its stream; mostly nobody does (a `/wait` client reads the run's result, not its
//! stream). [`Payload::lazy`] holds such a value in the form its publisher already has (the
//! engine's shared lists, O(1) to keep) and serializes it when a subscriber first asks for the
//! text; every later reader of any stream it was published to shares that text.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

/// Compact JSON text, ready or serialized on first use (see the module docs).
#[derive(Clone)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    Text(Arc<str>),
    Lazy(Arc<Lazy>),
}

struct Lazy {
    value: Box<dyn ToJson>,
    text: OnceLock<Arc<str>>,
}

/// A value that can be written as compact JSON (every `Serialize` type).
trait ToJson: Send + Sync {
    fn to_json(&self) -> String;
}

impl<T: Serialize + Send + Sync> ToJson for T {
    fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stream bridge: an event's value did not serialize");
            "null".to_owned()
        })
    }
}

impl Payload {
    /// Text serialized already.
    pub fn text(text: impl Into<Arc<str>>) -> Self {
        Payload(Repr::Text(text.into()))
    }

    /// A value serialized to compact JSON when its text is first asked for. The value must not
    /// change afterwards (hold an immutable snapshot), so every reader sees the same bytes.
    pub fn lazy(value: impl Serialize + Send + Sync + 'static) -> Self {
        Payload(Repr::Lazy(Arc::new(Lazy {
            value: Box::new(value),
            text: OnceLock::new(),
        })))
    }

    /// The JSON text (serializes a lazy value the first time).
    pub fn as_arc(&self) -> &Arc<str> {
        match &self.0 {
            Repr::Text(t) => t,
            Repr::Lazy(l) => l.text.get_or_init(|| l.value.to_json().into()),
        }
    }

    /// The text's length when it exists already (never serializes).
    pub fn ready_len(&self) -> Option<usize> {
        match &self.0 {
            Repr::Text(t) => Some(t.len()),
            Repr::Lazy(l) => l.text.get().map(|t| t.len()),
        }
    }
}

impl Deref for Payload {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_arc()
    }
}

impl AsRef<str> for Payload {
    fn as_ref(&self) -> &str {
        self
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl From<Arc<str>> for Payload {
    fn from(text: Arc<str>) -> Self {
        Payload::text(text)
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Payload::text(text)
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Payload::text(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted(Arc<AtomicUsize>);

    impl Serialize for Counted {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            s.serialize_str("v")
        }
    }

    #[test]
    fn a_lazy_value_is_serialized_once_on_first_read_and_shared_by_clones() {
        let calls = Arc::new(AtomicUsize::new(0));
        let p = Payload::lazy(Counted(calls.clone()));
        let copy = p.clone();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(p.ready_len(), None);
        assert_eq!(&*copy, "\"v\"");
        assert_eq!(&*p, "\"v\"");
        assert_eq!(p.ready_len(), Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn lazy_and_ready_payloads_of_the_same_json_are_equal() {
        let lazy = Payload::lazy(serde_json::json!({"a": [1, "x"]}));
        assert_eq!(lazy, Payload::from(r#"{"a":[1,"x"]}"#));
        assert_eq!(Payload::from("1").ready_len(), Some(1));
    }
}
