//! Thread routes: create (`if_exists`), get, patch (metadata merge), delete, search, count,
//! copy, prune.
//!
//! Thread ids are any `[A-Za-z0-9_-]{1,64}` (UUIDs included). Deleting a thread also deletes
//! its runs, run events and checkpoints; copying copies its checkpoints and finished runs.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};

use antler_runtime::{IfExists, NewThread, PruneStrategy, StateUpdate};
use antler_store::{StoreError, Thread, ThreadSearch, ThreadSortBy, ThreadStatus};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json, LenientJson, Path, validate_thread_id};
use crate::routes::assistants::parse_sort_order;
use crate::routes::runs::rt_err;
use crate::routes::{RouteDoc, pagination_headers, project, to_values, validate_select};
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new("POST", "/threads", "Create a thread", "Threads"),
    RouteDoc::new("POST", "/threads/search", "Search threads", "Threads"),
    RouteDoc::new("POST", "/threads/count", "Count threads", "Threads"),
    RouteDoc::new("POST", "/threads/prune", "Prune threads", "Threads"),
    RouteDoc::new("GET", "/threads/{thread_id}", "Get a thread", "Threads"),
    RouteDoc::new(
        "PATCH",
        "/threads/{thread_id}",
        "Update a thread's metadata",
        "Threads",
    ),
    RouteDoc::new(
        "DELETE",
        "/threads/{thread_id}",
        "Delete a thread",
        "Threads",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/copy",
        "Copy a thread",
        "Threads",
    ),
];

/// The thread routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/threads", post(create))
        .route("/threads/search", post(search))
        .route("/threads/count", post(count))
        .route("/threads/prune", post(prune))
        .route(
            "/threads/{thread_id}",
            get(get_one).patch(patch).delete(delete),
        )
        .route("/threads/{thread_id}/copy", post(copy))
}

/// Loads a thread of the caller after validating its id (422 / 404 otherwise).
pub async fn load_thread(state: &AppState, owner: &str, thread_id: &str) -> ApiResult<Thread> {
    validate_thread_id(thread_id)?;
    state
        .runtime
        .get_thread(owner, thread_id)
        .await
        .map_err(rt_err)
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    thread_id: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    if_exists: Option<IfExists>,
    #[serde(default)]
    ttl: Option<Value>,
    #[serde(default)]
    supersteps: Option<Vec<Value>>,
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Json(mut body): Json<CreateBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    crate::auth::strip_stored_secrets(None, None, body.metadata.as_mut());
    if body
        .ttl
        .as_ref()
        .is_some_and(|t| !t.is_object() && !t.is_null())
    {
        return Err(ApiError::unprocessable(
            "Invalid value for 'ttl': expected an object {\"strategy\", \"ttl\"}",
        ));
    }
    let supersteps = parse_supersteps(&state, body.supersteps, body.metadata.as_ref())?;
    if let Some(id) = &body.thread_id {
        validate_thread_id(id)?;
    }
    let new = NewThread {
        thread_id: body.thread_id,
        metadata: body.metadata.unwrap_or_default(),
        if_exists: body.if_exists.unwrap_or_default(),
        supersteps,
    };
    let thread = state
        .runtime
        .create_thread(owner, new)
        .await
        .map_err(rt_err)?;
    Ok(Json(thread).into_response())
}

/// One update of a `supersteps` entry: `values` written as if `as_node` ran.
#[derive(Debug, Deserialize)]
struct SuperstepUpdate {
    #[serde(default)]
    values: Option<Value>,
    #[serde(default)]
    command: Option<Value>,
    as_node: String,
}

#[derive(Debug, Deserialize)]
struct Superstep {
    updates: Vec<SuperstepUpdate>,
}

/// Validates `supersteps` of a thread create: the thread's `metadata.graph_id` must name a
/// registered graph (it is the graph the updates are applied with).
fn parse_supersteps(
    state: &AppState,
    raw: Option<Vec<Value>>,
    metadata: Option<&Map<String, Value>>,
) -> ApiResult<Vec<Vec<StateUpdate>>> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let steps: Vec<Superstep> = crate::error::from_value(Value::Array(raw))
        .map_err(|e| ApiError::unprocessable(format!("Invalid 'supersteps': {}", e.detail)))?;
    let graph_id = metadata
        .and_then(|m| m.get("graph_id"))
        .and_then(Value::as_str);
    match graph_id {
        Some(g) if state.graphs.contains(g) => {
            Ok(steps.into_iter().map(Superstep::updates).collect())
        }
        Some(g) => Err(ApiError::unprocessable(format!(
            "Invalid 'metadata.graph_id': graph '{g}' is not registered"
        ))),
        None => Err(ApiError::unprocessable(
            "'supersteps' needs 'metadata.graph_id' naming the graph to apply them with",
        )),
    }
}

impl Superstep {
    /// The updates of the step, `command.update` standing in for absent `values`.
    fn updates(self) -> Vec<StateUpdate> {
        self.updates
            .into_iter()
            .map(|u| StateUpdate {
                values: match (u.values, u.command) {
                    (Some(v), _) => v,
                    (None, Some(cmd)) => cmd.get("update").cloned().unwrap_or(Value::Null),
                    (None, None) => Value::Null,
                },
                as_node: u.as_node,
            })
            .collect()
    }
}

async fn get_one(
    caller: Caller,
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
) -> ApiResult<Json<Thread>> {
    let owner = caller.owner();
    load_thread(&state, owner, &thread_id).await.map(Json)
}

#[derive(Debug, Default, Deserialize)]
struct PatchBody {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    ttl: Option<Value>,
}

async fn patch(
    caller: Caller,
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
    LenientJson(mut body): LenientJson<PatchBody>,
) -> ApiResult<Json<Thread>> {
    let owner = caller.owner();
    crate::auth::strip_stored_secrets(None, None, body.metadata.as_mut());
    validate_thread_id(&thread_id)?;
    if body
        .ttl
        .as_ref()
        .is_some_and(|t| !t.is_object() && !t.is_null())
    {
        return Err(ApiError::unprocessable(
            "Invalid value for 'ttl': expected an object {\"strategy\", \"ttl\"}",
        ));
    }
    let updated = state
        .runtime
        .patch_thread(owner, &thread_id, body.metadata.unwrap_or_default())
        .await
        .map_err(rt_err)?;
    Ok(Json(updated))
}

async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
) -> ApiResult<StatusCode> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let deleted = state
        .runtime
        .delete_thread_if_exists(owner, &thread_id)
        .await
        .map_err(rt_err)?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::thread_not_found(&thread_id))
    }
}

#[derive(Debug, Default, Deserialize)]
struct SearchBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    values: Option<Map<String, Value>>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    sort_by: Option<String>,
    #[serde(default)]
    sort_order: Option<String>,
    #[serde(default)]
    select: Option<Vec<String>>,
    #[serde(default)]
    extract: Option<Map<String, Value>>,
}

/// Fields `select` may name on thread searches.
const THREAD_FIELDS: &[&str] = &[
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "config",
    "status",
    "values",
    "interrupts",
    "error",
];

fn parse_status(raw: Option<&str>) -> ApiResult<Option<ThreadStatus>> {
    raw.map(|s| {
        s.parse::<ThreadStatus>().map_err(|_| {
            ApiError::unprocessable(format!(
                "Invalid value for 'status': '{s}' (expected idle, busy, interrupted or error)"
            ))
        })
    })
    .transpose()
}

/// Reads a dotted path (`values.title`, `metadata.owner`) out of a JSON document.
fn extract_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |cur, seg| match cur {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// `extract`: at most 10 aliases, each naming a dotted path.
fn validate_extract(extract: &Map<String, Value>) -> ApiResult<()> {
    if extract.len() > 10 {
        return Err(ApiError::unprocessable(
            "Invalid value for 'extract': at most 10 entries",
        ));
    }
    if extract.values().any(|v| !v.is_string()) {
        return Err(ApiError::unprocessable(
            "Invalid value for 'extract': every entry must be a dotted path string",
        ));
    }
    Ok(())
}

/// Adds `extracted` to a serialized thread: alias -> the value at its path (or null).
fn add_extracted(item: &mut Value, extract: &Map<String, Value>) {
    let mut extracted = Map::new();
    for (alias, path) in extract {
        let value = path
            .as_str()
            .and_then(|p| extract_path(item, p))
            .cloned()
            .unwrap_or(Value::Null);
        extracted.insert(alias.clone(), value);
    }
    if let Value::Object(map) = item {
        map.insert("extracted".into(), Value::Object(extracted));
    }
}

async fn search(
    caller: Caller,
    State(state): State<AppState>,
    LenientJson(body): LenientJson<SearchBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let (limit, offset) = crate::error::page(body.limit, body.offset, 10)?;
    validate_select(body.select.as_deref(), THREAD_FIELDS)?;
    if let Some(ids) = &body.ids {
        for id in ids {
            validate_thread_id(id)?;
        }
    }
    let sort_by = match body.sort_by.as_deref() {
        None => ThreadSortBy::default(),
        Some(s) => s
            .parse()
            .map_err(|e: StoreError| ApiError::unprocessable(e.to_string()))?,
    };
    if let Some(extract) = &body.extract {
        validate_extract(extract)?;
    }
    let query = ThreadSearch {
        ids: body.ids.clone(),
        metadata: body.metadata.clone().unwrap_or_default(),
        values: body.values.clone().unwrap_or_default(),
        status: parse_status(body.status.as_deref())?,
        sort_by,
        sort_order: parse_sort_order(body.sort_order.as_deref())?,
        limit,
        offset,
    };
    let (threads, total) = state
        .runtime
        .search_threads(owner, &query)
        .await
        .map_err(rt_err)?;
    let headers = pagination_headers(total, offset, threads.len());
    let mut items = to_values(&threads)?;
    if let Some(extract) = body.extract.as_ref().filter(|e| !e.is_empty()) {
        for item in &mut items {
            add_extracted(item, extract);
        }
    }
    let mut select = body.select.clone();
    if let Some(sel) = select.as_mut()
        && body.extract.as_ref().is_some_and(|e| !e.is_empty())
        && !sel.is_empty()
    {
        sel.push("extracted".into());
    }
    let items = project(items, select.as_deref());
    Ok((headers, Json(items)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct CountBody {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    values: Option<Map<String, Value>>,
    #[serde(default)]
    status: Option<String>,
}

async fn count(
    caller: Caller,
    State(state): State<AppState>,
    LenientJson(body): LenientJson<CountBody>,
) -> ApiResult<Json<u64>> {
    let owner = caller.owner();
    let query = ThreadSearch {
        metadata: body.metadata.unwrap_or_default(),
        values: body.values.unwrap_or_default(),
        status: parse_status(body.status.as_deref())?,
        ..ThreadSearch::default()
    };
    let total = state
        .runtime
        .count_threads(owner, &query)
        .await
        .map_err(rt_err)?;
    Ok(Json(total))
}

async fn copy(
    caller: Caller,
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
) -> ApiResult<Json<Thread>> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let copied = state
        .runtime
        .copy_thread(owner, &thread_id)
        .await
        .map_err(rt_err)?;
    Ok(Json(copied))
}

#[derive(Debug, Deserialize)]
struct PruneBody {
    thread_ids: Vec<String>,
    #[serde(default)]
    strategy: Option<PruneStrategy>,
}

async fn prune(
    caller: Caller,
    State(state): State<AppState>,
    Json(body): Json<PruneBody>,
) -> ApiResult<Json<Value>> {
    let owner = caller.owner();
    for id in &body.thread_ids {
        validate_thread_id(id)?;
    }
    let strategy = body.strategy.unwrap_or_default();
    let pruned = state
        .runtime
        .prune_threads(owner, &body.thread_ids, strategy)
        .await
        .map_err(rt_err)?;
    Ok(Json(serde_json::json!({ "pruned_count": pruned })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extract_reads_dotted_paths() {
        let doc = json!({"values": {"messages": [{"content": "hi"}], "title": "t"}});
        assert_eq!(extract_path(&doc, "values.title"), Some(&json!("t")));
        assert_eq!(
            extract_path(&doc, "values.messages.0.content"),
            Some(&json!("hi"))
        );
        assert_eq!(extract_path(&doc, "values.nope"), None);
    }

    #[test]
    fn statuses_parse() {
        assert_eq!(
            parse_status(Some("idle")).unwrap(),
            Some(ThreadStatus::Idle)
        );
        assert!(parse_status(Some("bogus")).is_err());
        assert_eq!(parse_status(None).unwrap(), None);
    }
}
