//! Thread state routes: current state, state at a checkpoint, `update_state`, history.

use antler_runtime::HistoryQuery;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::error::{
    ApiError, ApiResult, Json, LenientJson, Path, Query, de_flag, validate_thread_id,
};
use crate::routes::RouteDoc;
use crate::routes::runs::rt_err;
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/state",
        "Get the state of a thread",
        "Threads",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/state",
        "Update the state of a thread",
        "Threads",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/state/{checkpoint_id}",
        "Get the state at a checkpoint",
        "Threads",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/state/checkpoint",
        "Get the state at a checkpoint (body)",
        "Threads",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/history",
        "Get the history of a thread",
        "Threads",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/history",
        "Get the history of a thread",
        "Threads",
    ),
];

/// The state routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/threads/{thread_id}/state",
            get(get_state).post(update_state),
        )
        .route(
            "/threads/{thread_id}/state/checkpoint",
            post(state_at_checkpoint_body),
        )
        .route(
            "/threads/{thread_id}/state/{checkpoint_id}",
            get(state_at_checkpoint),
        )
        .route(
            "/threads/{thread_id}/history",
            post(history_post).get(history_get),
        )
}

#[derive(Debug, Deserialize)]
struct StateParams {
    #[serde(default, deserialize_with = "de_flag")]
    subgraphs: Option<bool>,
}

async fn get_state(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Query(p): Query<StateParams>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let v = st
        .runtime
        .get_state(owner, &thread_id, None, p.subgraphs.unwrap_or(false))
        .await
        .map_err(rt_err)?;
    Ok(Json(v).into_response())
}

async fn state_at_checkpoint(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, checkpoint_id)): Path<(String, String)>,
    Query(p): Query<StateParams>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let v = st
        .runtime
        .get_state(
            owner,
            &thread_id,
            Some(&checkpoint_id),
            p.subgraphs.unwrap_or(false),
        )
        .await
        .map_err(rt_err)?;
    Ok(Json(strip_ns(snapshot_json(&v)?)).into_response())
}

fn snapshot_json(s: &antler_graph::StateSnapshot) -> ApiResult<Value> {
    serde_json::to_value(s).map_err(|e| ApiError::internal(e.to_string()))
}

/// GET /state/{checkpoint_id} leaves `checkpoint_ns` out of `checkpoint` (as the reference does).
fn strip_ns(mut v: Value) -> Value {
    if let Some(Value::Object(cp)) = v.get_mut("checkpoint") {
        cp.remove("checkpoint_ns");
    }
    v
}

#[derive(Debug, Deserialize)]
struct CheckpointBody {
    checkpoint: Option<Map<String, Value>>,
    checkpoint_id: Option<String>,
    #[serde(default)]
    subgraphs: Option<bool>,
}

async fn state_at_checkpoint_body(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Json(body): Json<CheckpointBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let id = body
        .checkpoint
        .as_ref()
        .and_then(|c| c.get("checkpoint_id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(body.checkpoint_id)
        .ok_or_else(|| ApiError::unprocessable("\"checkpoint.checkpoint_id\" is required"))?;
    let v = st
        .runtime
        .get_state(
            owner,
            &thread_id,
            Some(&id),
            body.subgraphs.unwrap_or(false),
        )
        .await
        .map_err(rt_err)?;
    Ok(Json(strip_ns(snapshot_json(&v)?)).into_response())
}

#[derive(Debug, Deserialize)]
struct UpdateBody {
    values: Option<Value>,
    as_node: Option<String>,
    checkpoint_id: Option<String>,
    checkpoint: Option<Map<String, Value>>,
}

async fn update_state(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let checkpoint_id = body.checkpoint_id.or_else(|| {
        body.checkpoint
            .as_ref()
            .and_then(|c| c.get("checkpoint_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let values = body.values.unwrap_or(Value::Null);
    if !(values.is_object() || values.is_null() || values.is_array()) {
        return Err(ApiError::unprocessable(
            "\"values\" must be an object, a list or null",
        ));
    }
    let v = st
        .runtime
        .update_state(
            owner,
            &thread_id,
            values,
            body.as_node.as_deref(),
            checkpoint_id.as_deref(),
        )
        .await
        .map_err(rt_err)?;
    Ok(Json(v).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct HistoryBody {
    limit: Option<i64>,
    before: Option<Value>,
    metadata: Option<Map<String, Value>>,
    checkpoint: Option<Map<String, Value>>,
}

fn checkpoint_ref(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => m
            .get("checkpoint_id")
            .or_else(|| m.get("configurable").and_then(|c| c.get("checkpoint_id")))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

async fn history(
    st: &AppState,
    owner: &str,
    thread_id: &str,
    body: HistoryBody,
) -> ApiResult<Response> {
    validate_thread_id(thread_id)?;
    let limit = match body.limit {
        None => 10,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::unprocessable(format!(
                "\"limit\" must be between 1 and 1000, got {n}"
            )));
        }
    };
    let q = HistoryQuery {
        limit: Some(limit),
        before: checkpoint_ref(body.before.as_ref()),
        metadata: body.metadata.unwrap_or_default(),
        checkpoint_id: body
            .checkpoint
            .as_ref()
            .and_then(|c| c.get("checkpoint_id"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let items = st
        .runtime
        .history(owner, thread_id, &q)
        .await
        .map_err(rt_err)?;
    Ok(Json(items).into_response())
}

async fn history_post(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    LenientJson(body): LenientJson<HistoryBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    history(&st, owner, &thread_id, body).await
}

#[derive(Debug, Deserialize)]
struct HistoryParams {
    #[serde(default, deserialize_with = "crate::error::de_opt_i64")]
    limit: Option<i64>,
    before: Option<String>,
}

async fn history_get(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Query(p): Query<HistoryParams>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let body = HistoryBody {
        limit: p.limit,
        before: p.before.map(Value::String),
        ..Default::default()
    };
    history(&st, owner, &thread_id, body).await
}
