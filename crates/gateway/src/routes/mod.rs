//! HTTP routes, one module per resource. Each module exposes `router()` (its axum routes,
//! relative to the API root) and `DOCS` (the same routes as data, from which `/openapi.json`
//! is generated; a test checks that every documented route is actually served).

pub mod assistants;
pub mod auth;
pub mod frontend;
pub mod journal;
pub mod meta;
pub mod models;
pub mod runs;
pub mod state;
pub mod store;
pub mod threads;

use axum::http::{HeaderMap, HeaderValue};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// One documented route: used to generate the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDoc {
    /// HTTP method, upper case (`GET`, `POST` ...).
    pub method: &'static str,
    /// Path template relative to the API root, axum syntax (`/threads/{thread_id}`).
    pub path: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// OpenAPI tag (`Assistants`, `Threads`, `Thread Runs`, `Store`, `System` ...).
    pub tag: &'static str,
}

impl RouteDoc {
    /// Shorthand constructor usable in `const` tables.
    pub const fn new(
        method: &'static str,
        path: &'static str,
        summary: &'static str,
        tag: &'static str,
    ) -> Self {
        Self {
            method,
            path,
            summary,
            tag,
        }
    }
}

/// Every documented route of the server, in a stable order.
pub fn all_docs() -> Vec<RouteDoc> {
    let mut docs = Vec::new();
    for table in [
        assistants::DOCS,
        threads::DOCS,
        state::DOCS,
        runs::DOCS,
        journal::DOCS,
        store::DOCS,
        meta::DOCS,
        auth::DOCS,
        models::DOCS,
        frontend::DOCS,
    ] {
        docs.extend_from_slice(table);
    }
    docs
}

/// Builds `x-pagination-total` (a real total) and, when a next page exists,
/// `x-pagination-next`.
pub fn pagination_headers(total: u64, offset: usize, page_len: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-pagination-total", HeaderValue::from(total));
    let next = offset as u64 + page_len as u64;
    if page_len > 0 && next < total {
        headers.insert("x-pagination-next", HeaderValue::from(next));
    }
    headers
}

/// Keeps only the `select`ed keys of each object (all when `select` is empty/absent).
pub fn project(items: Vec<Value>, select: Option<&[String]>) -> Vec<Value> {
    match select {
        Some(keys) if !keys.is_empty() => items
            .into_iter()
            .map(|item| match item {
                Value::Object(map) => Value::Object(
                    map.into_iter()
                        .filter(|(k, _)| keys.iter().any(|s| s == k))
                        .collect(),
                ),
                other => other,
            })
            .collect(),
        _ => items,
    }
}

/// Checks that every `select`ed field is one of `allowed` (422 naming the bad one otherwise).
pub fn validate_select(select: Option<&[String]>, allowed: &[&str]) -> ApiResult<()> {
    for field in select.unwrap_or_default() {
        if !allowed.contains(&field.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "Invalid value for 'select': '{field}' is not one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// Serializes records to JSON values (for projection).
pub(crate) fn to_values<T: serde::Serialize>(items: &[T]) -> ApiResult<Vec<Value>> {
    items
        .iter()
        .map(|i| serde_json::to_value(i).map_err(|e| ApiError::internal(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pagination_total_is_real() {
        let h = pagination_headers(6, 0, 2);
        assert_eq!(h["x-pagination-total"], "6");
        assert_eq!(h["x-pagination-next"], "2");
        let h = pagination_headers(6, 4, 2);
        assert_eq!(h["x-pagination-total"], "6");
        assert!(h.get("x-pagination-next").is_none());
    }

    #[test]
    fn projection_keeps_selected_keys() {
        let items = vec![json!({"a": 1, "b": 2, "c": 3})];
        let keys = vec!["a".to_owned(), "c".to_owned()];
        assert_eq!(
            project(items.clone(), Some(&keys)),
            vec![json!({"a": 1, "c": 3})]
        );
        assert_eq!(project(items.clone(), None), items);
    }
}
