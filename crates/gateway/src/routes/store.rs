//! LangGraph store routes: `PUT/GET/DELETE /store/items`, `POST /store/items/search`,
//! `POST /store/namespaces`.
//!
//! `GET /store/items` takes `namespace` as a dotted string (`users.u1`, what the Python SDK
//! sends) or as repeated `namespace=` parameters, plus `key`. A missing item is `200 null`,
//! as in the reference.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::routing::{post, put};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use antler_store::{ItemSearch, NamespaceQuery, StoreItem};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json, LenientJson, parse_flag};
use crate::routes::RouteDoc;
use crate::routes::runs::rt_err;
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new("PUT", "/store/items", "Store or update an item", "Store"),
    RouteDoc::new("GET", "/store/items", "Get an item", "Store"),
    RouteDoc::new("DELETE", "/store/items", "Delete an item", "Store"),
    RouteDoc::new("POST", "/store/items/search", "Search items", "Store"),
    RouteDoc::new("POST", "/store/namespaces", "List namespaces", "Store"),
];

/// The store routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/store/items",
            put(put_item).get(get_item).delete(delete_item),
        )
        .route("/store/items/search", post(search))
        .route("/store/namespaces", post(namespaces))
}

/// Validates a namespace: non-empty labels without `.`; `allow_empty` for prefixes.
fn validate_namespace(ns: &[String], allow_empty: bool) -> ApiResult<()> {
    if ns.is_empty() && !allow_empty {
        return Err(ApiError::unprocessable("Namespace cannot be empty."));
    }
    for label in ns {
        if label.is_empty() {
            return Err(ApiError::unprocessable(format!(
                "Namespace labels cannot be empty strings. Got {ns:?}"
            )));
        }
        if label.contains('.') {
            return Err(ApiError::unprocessable(format!(
                "Invalid namespace label '{label}'. Namespace labels cannot contain periods ('.')."
            )));
        }
    }
    Ok(())
}

fn validate_key(key: &str) -> ApiResult<()> {
    if key.is_empty() {
        Err(ApiError::unprocessable("Key cannot be empty."))
    } else {
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct PutBody {
    namespace: Vec<String>,
    key: String,
    value: Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    index: Option<Value>,
    #[serde(default)]
    ttl: Option<f64>,
}

async fn put_item(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<PutBody>,
) -> ApiResult<StatusCode> {
    let owner = caller.owner();
    validate_namespace(&body.namespace, false)?;
    validate_key(&body.key)?;
    if body.ttl.is_some_and(|t| !t.is_finite() || t < 0.0) {
        return Err(ApiError::unprocessable(
            "Invalid value for 'ttl': expected a non-negative number of minutes",
        ));
    }
    state
        .runtime
        .put_item(owner, &body.namespace, &body.key, Value::Object(body.value))
        .await
        .map_err(rt_err)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `namespace` / `key` of `GET /store/items`.
fn parse_get_query(query: &str) -> ApiResult<(Vec<String>, String)> {
    let mut namespace = Vec::new();
    let mut key = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "namespace" if !value.is_empty() => {
                namespace.extend(value.split('.').map(str::to_owned));
            }
            "key" => key = Some(value.into_owned()),
            "refresh_ttl" if parse_flag(&value).is_none() => {
                return Err(ApiError::unprocessable(format!(
                    "Invalid query parameter 'refresh_ttl': expected a boolean, got '{value}'"
                )));
            }
            _ => {}
        }
    }
    let key = key.ok_or_else(|| ApiError::unprocessable("Missing query parameter 'key'"))?;
    Ok((namespace, key))
}

async fn get_item(
    caller: Caller,
    State(state): State<AppState>,
    uri: Uri,
) -> ApiResult<Json<Option<StoreItem>>> {
    let owner = caller.owner();
    let (namespace, key) = parse_get_query(uri.query().unwrap_or_default())?;
    validate_namespace(&namespace, true)?;
    validate_key(&key)?;
    let item = state
        .runtime
        .get_item(owner, &namespace, &key)
        .await
        .map_err(rt_err)?;
    Ok(Json(item))
}

#[derive(Debug, Deserialize)]
struct DeleteBody {
    #[serde(default)]
    namespace: Option<Vec<String>>,
    key: String,
}

async fn delete_item(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<DeleteBody>,
) -> ApiResult<StatusCode> {
    let owner = caller.owner();
    let namespace = body.namespace.unwrap_or_default();
    validate_namespace(&namespace, true)?;
    validate_key(&body.key)?;
    state
        .runtime
        .delete_item(owner, &namespace, &body.key)
        .await
        .map_err(rt_err)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
struct SearchBody {
    #[serde(default)]
    namespace_prefix: Option<Vec<String>>,
    #[serde(default)]
    filter: Option<Map<String, Value>>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    #[allow(dead_code)]
    query: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    refresh_ttl: Option<bool>,
}

async fn search(
    caller: Caller,
    State(state): State<AppState>,
    LenientJson(body): LenientJson<SearchBody>,
) -> ApiResult<Json<Value>> {
    let owner = caller.owner();
    let (limit, offset) = crate::error::page(body.limit, body.offset, 10)?;
    let prefix = body.namespace_prefix.unwrap_or_default();
    validate_namespace(&prefix, true)?;
    let query = ItemSearch {
        namespace_prefix: prefix,
        filter: body.filter.unwrap_or_default(),
        limit,
        offset,
    };
    let items = state
        .runtime
        .search_items(owner, &query)
        .await
        .map_err(rt_err)?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Default, Deserialize)]
struct NamespacesBody {
    #[serde(default)]
    prefix: Option<Vec<String>>,
    #[serde(default)]
    suffix: Option<Vec<String>>,
    #[serde(default)]
    max_depth: Option<i64>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

async fn namespaces(
    caller: Caller,
    State(state): State<AppState>,
    LenientJson(body): LenientJson<NamespacesBody>,
) -> ApiResult<Json<Value>> {
    let owner = caller.owner();
    let (limit, offset) = crate::error::page(body.limit, body.offset, 100)?;
    let max_depth = match body.max_depth {
        None => None,
        Some(d) if d >= 1 => usize::try_from(d).ok(),
        Some(d) => {
            return Err(ApiError::unprocessable(format!(
                "Invalid value for 'max_depth': {d} is less than the minimum of 1"
            )));
        }
    };
    let query = NamespaceQuery {
        prefix: body.prefix.filter(|p| !p.is_empty()),
        suffix: body.suffix.filter(|s| !s.is_empty()),
        max_depth,
        limit,
        offset,
    };
    let namespaces = state
        .runtime
        .list_namespaces(owner, &query)
        .await
        .map_err(rt_err)?;
    Ok(Json(json!({ "namespaces": namespaces })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_query_accepts_dotted_and_repeated_namespaces() {
        let (ns, key) = parse_get_query("namespace=users.u1&key=prefs").unwrap();
        assert_eq!(ns, vec!["users", "u1"]);
        assert_eq!(key, "prefs");
        let (ns, _) = parse_get_query("namespace=users&namespace=u1&key=k").unwrap();
        assert_eq!(ns, vec!["users", "u1"]);
        assert!(parse_get_query("namespace=a").is_err());
    }

    #[test]
    fn namespace_rules() {
        assert!(validate_namespace(&[], false).is_err());
        assert!(validate_namespace(&[], true).is_ok());
        assert!(validate_namespace(&["a.b".to_owned()], false).is_err());
        assert!(validate_namespace(&[String::new()], false).is_err());
        assert!(validate_namespace(&["a".to_owned(), "b".to_owned()], false).is_ok());
    }
}
