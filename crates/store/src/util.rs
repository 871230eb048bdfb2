//! Helpers shared by every implementation, so the semantics cannot drift between backends:
//! filter matching, namespace rules, run status bookkeeping and token aggregation.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::{StoreError, StoreResult};
use crate::records::*;

/// True when every top-level `(key, value)` of `filter` is present and equal in `target`.
pub fn contains_top_level(target: &Map<String, Value>, filter: &Map<String, Value>) -> bool {
    filter
        .iter()
        .all(|(k, v)| target.get(k).is_some_and(|t| json_eq(t, v)))
}

/// Like [`contains_top_level`] for an arbitrary JSON value (non-objects match only an empty filter).
pub fn value_contains_top_level(target: Option<&Value>, filter: &Map<String, Value>) -> bool {
    if filter.is_empty() {
        return true;
    }
    match target {
        Some(Value::Object(m)) => contains_top_level(m, filter),
        _ => false,
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`), as SQL backends do.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Merges `patch` into `base` (top-level keys replace).
pub fn merge_metadata(base: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        base.insert(k, v);
    }
}

/// Checks a store namespace: non-empty, labels non-empty and without `.`.
pub fn validate_namespace(namespace: &[String]) -> StoreResult<()> {
    if namespace.is_empty() {
        return Err(StoreError::InvalidArgument(
            "namespace must not be empty".into(),
        ));
    }
    for label in namespace {
        if label.is_empty() {
            return Err(StoreError::InvalidArgument(
                "namespace labels must not be empty".into(),
            ));
        }
        if label.contains('.') {
            return Err(StoreError::InvalidArgument(format!(
                "namespace label '{label}' must not contain periods"
            )));
        }
    }
    Ok(())
}

/// Checks a namespace prefix used for searching (may be empty = everything).
pub fn validate_prefix(prefix: &[String]) -> StoreResult<()> {
    if prefix.is_empty() {
        Ok(())
    } else {
        validate_namespace(prefix)
    }
}

/// Checks a store key.
pub fn validate_key(key: &str) -> StoreResult<()> {
    if key.is_empty() {
        Err(StoreError::InvalidArgument("key must not be empty".into()))
    } else {
        Ok(())
    }
}

/// Store values must be JSON objects.
pub fn validate_item_value(value: &Value) -> StoreResult<()> {
    if value.is_object() {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(
            "store item value must be a JSON object".into(),
        ))
    }
}

/// Joins namespace labels with `.` (the stored form; labels never contain `.`).
pub fn join_namespace(namespace: &[String]) -> String {
    namespace.join(".")
}

/// Splits a stored namespace.
pub fn split_namespace(s: &str) -> Vec<String> {
    s.split('.').map(str::to_string).collect()
}

/// Whether `namespace` starts with `prefix` (label-wise).
pub fn has_prefix(namespace: &[String], prefix: &[String]) -> bool {
    namespace.len() >= prefix.len() && namespace.iter().zip(prefix).all(|(a, b)| a == b)
}

fn labels_match(labels: &[String], pattern: &[String]) -> bool {
    labels.len() == pattern.len() && labels.iter().zip(pattern).all(|(l, p)| p == "*" || l == p)
}

/// Applies a [`crate::NamespaceQuery`] to a list of stored namespaces.
pub fn filter_namespaces<I: IntoIterator<Item = Vec<String>>>(
    all: I,
    query: &crate::NamespaceQuery,
) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = all
        .into_iter()
        .filter(|ns| {
            query
                .prefix
                .as_ref()
                .is_none_or(|p| ns.len() >= p.len() && labels_match(&ns[..p.len()], p))
                && query.suffix.as_ref().is_none_or(|s| {
                    ns.len() >= s.len() && labels_match(&ns[ns.len() - s.len()..], s)
                })
        })
        .map(|mut ns| {
            if let Some(d) = query.max_depth {
                ns.truncate(d);
            }
            ns
        })
        .collect();
    out.sort();
    out.dedup();
    out.into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect()
}

/// Applies a status change to a run record (timestamps included).
pub fn apply_status(run: &mut Run, status: RunStatus, error: Option<&str>, now: DateTime<Utc>) {
    run.status = status;
    if let Some(e) = error {
        run.error = Some(e.to_string());
    }
    if status == RunStatus::Running && run.started_at.is_none() {
        run.started_at = Some(now);
    }
    if status.is_terminal() {
        run.finished_at = Some(now);
    }
    run.updated_at = now;
}

/// Applies final figures to a run record.
pub fn apply_completion(run: &mut Run, c: &RunCompletion, now: DateTime<Utc>) {
    if let Some(status) = c.status {
        apply_status(run, status, None, now);
    }
    run.total_input_tokens = c.total_input_tokens;
    run.total_output_tokens = c.total_output_tokens;
    run.total_tokens = c.total_tokens;
    run.llm_call_count = c.llm_call_count;
    run.lead_agent_tokens = c.lead_agent_tokens;
    run.subagent_tokens = c.subagent_tokens;
    run.middleware_tokens = c.middleware_tokens;
    run.message_count = c.message_count;
    run.last_ai_message = c.last_ai_message.clone();
    run.first_human_message = c.first_human_message.clone();
    if c.error.is_some() {
        run.error = c.error.clone();
    }
    run.updated_at = now;
}

/// Applies a progress snapshot to a run record.
pub fn apply_progress(run: &mut Run, p: &RunProgress, now: DateTime<Utc>) {
    fn set(dst: &mut i64, src: Option<i64>) {
        if let Some(v) = src {
            *dst = v;
        }
    }
    set(&mut run.total_input_tokens, p.total_input_tokens);
    set(&mut run.total_output_tokens, p.total_output_tokens);
    set(&mut run.total_tokens, p.total_tokens);
    set(&mut run.llm_call_count, p.llm_call_count);
    set(&mut run.lead_agent_tokens, p.lead_agent_tokens);
    set(&mut run.subagent_tokens, p.subagent_tokens);
    set(&mut run.middleware_tokens, p.middleware_tokens);
    set(&mut run.message_count, p.message_count);
    if p.last_ai_message.is_some() {
        run.last_ai_message = p.last_ai_message.clone();
    }
    if p.first_human_message.is_some() {
        run.first_human_message = p.first_human_message.clone();
    }
    run.updated_at = now;
}

/// Whether a run of this status counts in [`crate::RunStore::aggregate_tokens_by_thread`].
pub fn counts_for_tokens(status: RunStatus, include_active: bool) -> bool {
    include_active || status.is_terminal()
}

/// The model bucket name of a run.
pub fn model_bucket(model_name: Option<&str>) -> String {
    match model_name {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => "unknown".to_string(),
    }
}

/// Sums runs into a [`TokenAggregate`] (already filtered by status).
pub fn aggregate<'a, I: IntoIterator<Item = &'a Run>>(runs: I) -> TokenAggregate {
    let mut agg = TokenAggregate::default();
    for r in runs {
        agg.total_tokens += r.total_tokens;
        agg.total_input_tokens += r.total_input_tokens;
        agg.total_output_tokens += r.total_output_tokens;
        agg.total_runs += 1;
        let bucket = agg
            .by_model
            .entry(model_bucket(r.model_name.as_deref()))
            .or_default();
        bucket.tokens += r.total_tokens;
        bucket.runs += 1;
        agg.by_caller.lead_agent += r.lead_agent_tokens;
        agg.by_caller.subagent += r.subagent_tokens;
        agg.by_caller.middleware += r.middleware_tokens;
    }
    agg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NamespaceQuery;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn containment_is_top_level_equality() {
        let t = m(json!({"a": 1, "b": {"c": [1, 2]}, "n": null}));
        assert!(contains_top_level(&t, &m(json!({}))));
        assert!(contains_top_level(&t, &m(json!({"a": 1.0}))));
        assert!(contains_top_level(
            &t,
            &m(json!({"b": {"c": [1, 2]}, "n": null}))
        ));
        assert!(!contains_top_level(&t, &m(json!({"b": {"c": [1]}}))));
        assert!(!contains_top_level(&t, &m(json!({"missing": null}))));
        assert!(!value_contains_top_level(None, &m(json!({"a": 1}))));
        assert!(value_contains_top_level(None, &m(json!({}))));
    }

    #[test]
    fn namespaces() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(validate_namespace(&s(&["a", "b"])).is_ok());
        assert!(validate_namespace(&[]).is_err());
        assert!(validate_namespace(&s(&["a.b"])).is_err());
        assert!(validate_namespace(&s(&[""])).is_err());
        assert_eq!(
            split_namespace(&join_namespace(&s(&["x", "y"]))),
            s(&["x", "y"])
        );
        let all = vec![
            s(&["a", "b", "c"]),
            s(&["a", "b", "d"]),
            s(&["a", "x"]),
            s(&["z"]),
        ];
        let q = NamespaceQuery {
            prefix: Some(s(&["a"])),
            max_depth: Some(2),
            ..Default::default()
        };
        assert_eq!(
            filter_namespaces(all.clone(), &q),
            vec![s(&["a", "b"]), s(&["a", "x"])]
        );
        let q = NamespaceQuery {
            suffix: Some(s(&["*", "d"])),
            ..Default::default()
        };
        assert_eq!(
            filter_namespaces(all.clone(), &q),
            vec![s(&["a", "b", "d"])]
        );
        let q = NamespaceQuery {
            limit: 1,
            offset: 1,
            ..Default::default()
        };
        assert_eq!(filter_namespaces(all, &q), vec![s(&["a", "b", "d"])]);
    }
}
