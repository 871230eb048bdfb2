//! Thread routes: create (`if_exists`), get, patch (metadata merge), delete, search, count,
//! copy, prune.
//!
//! Thread ids are any `[A-Za-z0-9_-]{1,64}` (UUIDs included). Deleting a thread also deletes
//! its runs, run events and checkpoints; copying copies its checkpoints and finished runs.

use std::collections::{BTreeMap, BTreeSet};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};

use antler_graph::ListOptions;
use antler_runtime::RuntimeError;
use antler_store::{
    Run, RunListQuery, StoreError, Thread, ThreadSearch, ThreadSortBy, ThreadStatus,
};

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

/// Maps a store error about `thread_id` (NotFound becomes `Thread with ID … not found`).
pub fn thread_err(thread_id: &str) -> impl Fn(StoreError) -> ApiError + '_ {
    move |err| match err {
        StoreError::NotFound => ApiError::thread_not_found(thread_id),
        other => other.into(),
    }
}

/// Loads a thread of the caller after validating its id (422 / 404 otherwise).
pub async fn load_thread(state: &AppState, owner: &str, thread_id: &str) -> ApiResult<Thread> {
    validate_thread_id(thread_id)?;
    state
        .stores
        .threads
        .get(owner, thread_id)
        .await
        .map_err(thread_err(thread_id))?
        .ok_or_else(|| ApiError::thread_not_found(thread_id))
}

/// A new thread id (UUIDv7, time-ordered).
pub fn new_thread_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum IfExists {
    #[default]
    Raise,
    DoNothing,
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
    let thread_id = match body.thread_id {
        Some(id) => {
            validate_thread_id(&id)?;
            id
        }
        None => new_thread_id(),
    };
    let if_exists = body.if_exists.unwrap_or_default();
    let thread = Thread::new(thread_id.clone(), body.metadata.unwrap_or_default());
    match state.stores.threads.create(owner, thread).await {
        Ok(created) if supersteps.is_empty() => Ok(Json(created).into_response()),
        Ok(_) => {
            if let Err(err) = apply_supersteps(&state, owner, &thread_id, supersteps).await {
                // Leave no half-initialized thread behind.
                let _ = delete_thread_fully(&state, owner, &thread_id).await;
                return Err(err);
            }
            Ok(Json(load_thread(&state, owner, &thread_id).await?).into_response())
        }
        Err(StoreError::Conflict(_)) => {
            let existing = state.stores.threads.get(owner, &thread_id).await?;
            match (if_exists, existing) {
                (IfExists::DoNothing, Some(existing)) => Ok(Json(existing).into_response()),
                _ => Err(ApiError::conflict(format!(
                    "Thread with ID {thread_id} already exists"
                ))),
            }
        }
        Err(other) => Err(other.into()),
    }
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
) -> ApiResult<Vec<Superstep>> {
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
        Some(g) if state.graphs.contains(g) => Ok(steps),
        Some(g) => Err(ApiError::unprocessable(format!(
            "Invalid 'metadata.graph_id': graph '{g}' is not registered"
        ))),
        None => Err(ApiError::unprocessable(
            "'supersteps' needs 'metadata.graph_id' naming the graph to apply them with",
        )),
    }
}

async fn apply_supersteps(
    state: &AppState,
    owner: &str,
    thread_id: &str,
    steps: Vec<Superstep>,
) -> ApiResult<()> {
    for step in steps {
        for update in step.updates {
            let values = match (update.values, update.command) {
                (Some(v), _) => v,
                (None, Some(cmd)) => cmd.get("update").cloned().unwrap_or(Value::Null),
                (None, None) => Value::Null,
            };
            state
                .runtime
                .update_state(owner, thread_id, values, Some(&update.as_node), None)
                .await
                .map_err(rt_err)?;
        }
    }
    Ok(())
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
        .stores
        .threads
        .patch_metadata(owner, &thread_id, body.metadata.unwrap_or_default())
        .await
        .map_err(thread_err(&thread_id))?;
    Ok(Json(updated))
}

/// Deletes a thread through the runtime: its live runs are cancelled (and awaited) first,
/// then the thread, its runs, run events and checkpoints are removed. Returns false when the
/// thread did not exist.
pub async fn delete_thread_fully(
    state: &AppState,
    owner: &str,
    thread_id: &str,
) -> ApiResult<bool> {
    if state.stores.threads.get(owner, thread_id).await?.is_none() {
        return Ok(false);
    }
    match state.runtime.delete_thread(owner, thread_id).await {
        Ok(()) => Ok(true),
        Err(RuntimeError::NotFound(_) | RuntimeError::Store(StoreError::NotFound)) => Ok(false),
        Err(other) => Err(rt_err(other)),
    }
}

async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
) -> ApiResult<StatusCode> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    if delete_thread_fully(&state, owner, &thread_id).await? {
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
    let threads = state.stores.threads.search(owner, &query).await?;
    let total = state.stores.threads.count(owner, &query).await?;
    let headers = pagination_headers(total, offset, threads.len());
    let mut items = to_values(&threads)?;
    if let Some(extract) = body.extract.as_ref().filter(|e| !e.is_empty()) {
        for item in &mut items {
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
    Ok(Json(state.stores.threads.count(owner, &query).await?))
}

/// All runs of a thread (newest first), paging through the store.
async fn all_runs(state: &AppState, owner: &str, thread_id: &str) -> ApiResult<Vec<Run>> {
    let mut out = Vec::new();
    let limit = 500;
    loop {
        let query = RunListQuery {
            limit,
            offset: out.len(),
            status: None,
        };
        let page = state
            .stores
            .runs
            .list_by_thread(owner, thread_id, &query)
            .await?;
        let done = page.len() < limit;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

fn retarget_kwargs(kwargs: &mut Value, new_thread_id: &str) {
    if let Some(Value::Object(configurable)) = kwargs
        .get_mut("config")
        .and_then(|c| c.get_mut("configurable"))
        && configurable.contains_key("thread_id")
    {
        configurable.insert("thread_id".into(), Value::String(new_thread_id.to_owned()));
    }
}

async fn copy(
    caller: Caller,
    State(state): State<AppState>,
    Path(thread_id): Path<String>,
) -> ApiResult<Json<Thread>> {
    let owner = caller.owner();
    let source = load_thread(&state, owner, &thread_id).await?;
    let new_id = new_thread_id();
    let copied = state
        .stores
        .threads
        .copy(owner, &source.thread_id, &new_id)
        .await
        .map_err(thread_err(&thread_id))?;
    state
        .stores
        .checkpointer(owner)
        .copy_thread(&source.thread_id, &new_id)
        .await?;
    let mut runs = all_runs(&state, owner, &source.thread_id).await?;
    runs.reverse(); // oldest first, so the copies keep their relative order
    for run in runs.into_iter().filter(|r| r.status.is_terminal()) {
        let mut copy = run;
        copy.run_id = uuid::Uuid::now_v7().to_string();
        copy.thread_id = new_id.clone();
        copy.owner = owner.to_owned();
        retarget_kwargs(&mut copy.kwargs, &new_id);
        state.stores.runs.put(&copy).await?;
    }
    Ok(Json(copied))
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum PruneStrategy {
    #[default]
    Delete,
    KeepLatest,
}

#[derive(Debug, Deserialize)]
struct PruneBody {
    thread_ids: Vec<String>,
    #[serde(default)]
    strategy: Option<PruneStrategy>,
}

/// Keeps only the newest checkpoint of every namespace of a thread (with its pending writes).
async fn keep_latest_checkpoints(state: &AppState, owner: &str, thread_id: &str) -> ApiResult<()> {
    let cp = state.stores.checkpointer(owner);
    let all = cp.list(thread_id, None, &ListOptions::default()).await?;
    let namespaces: BTreeSet<String> = all.into_iter().map(|t| t.checkpoint_ns).collect();
    let mut latest = Vec::new();
    for ns in namespaces {
        if let Some(tuple) = cp.get_tuple(thread_id, &ns, None).await? {
            latest.push(tuple);
        }
    }
    cp.delete_thread(thread_id).await?;
    for tuple in latest {
        let versions = tuple.checkpoint.channel_versions.clone();
        cp.put(
            thread_id,
            &tuple.checkpoint_ns,
            None,
            &tuple.checkpoint,
            &tuple.metadata,
            &versions,
        )
        .await?;
        let mut by_task: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
        for w in tuple.pending_writes {
            by_task
                .entry(w.task_id)
                .or_default()
                .push((w.channel, w.value));
        }
        for (task_id, writes) in by_task {
            cp.put_writes(
                thread_id,
                &tuple.checkpoint_ns,
                &tuple.checkpoint.id,
                &task_id,
                &writes,
            )
            .await?;
        }
    }
    Ok(())
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
    let mut pruned = 0u64;
    let unique: BTreeSet<&String> = body.thread_ids.iter().collect();
    for id in unique {
        match strategy {
            PruneStrategy::Delete => {
                if delete_thread_fully(&state, owner, id).await? {
                    pruned += 1;
                }
            }
            PruneStrategy::KeepLatest => {
                // A busy thread is writing checkpoints right now: leave it alone.
                let thread = state.stores.threads.get(owner, id).await?;
                if thread.is_some_and(|t| t.status != ThreadStatus::Busy) {
                    keep_latest_checkpoints(&state, owner, id).await?;
                    pruned += 1;
                }
            }
        }
    }
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
    fn kwargs_are_retargeted() {
        let mut kwargs = json!({"config": {"configurable": {"thread_id": "old", "x": 1}}});
        retarget_kwargs(&mut kwargs, "new");
        assert_eq!(kwargs["config"]["configurable"]["thread_id"], "new");
        assert_eq!(kwargs["config"]["configurable"]["x"], 1);
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
