//! Run routes: create (background / stream / wait), list, get, delete, cancel (one or many),
//! join, join stream, stateless runs, batch, and the thread stream.
//!
//! SSE framing comes from `antler_bridge::sse`: every event carries its id `<ms>-<seq>`, a run
//! stream ends with `event: end`, failures are `event: error`, heartbeats are `: heartbeat`
//! comments. Errors that happen before the stream starts (404, 409, 422) are plain JSON.

use std::sync::Arc;
use std::time::Duration;

use antler_bridge::{BridgeItem, Tick, sse};
use antler_runtime::{CancelAction, OnDisconnect, RunCreate, Runtime, RuntimeError, StreamMode};
use antler_store::{RunListQuery, RunStatus};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{
    ApiError, ApiResult, Json, LenientJson, Path, Query, de_flag, parse_run_id, validate_thread_id,
};
use crate::routes::{RouteDoc, project, to_values};
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/runs",
        "Create a background run",
        "Thread Runs",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs",
        "List runs of a thread",
        "Thread Runs",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/runs/stream",
        "Create a run and stream its output (SSE)",
        "Thread Runs",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/runs/wait",
        "Create a run and wait for its result",
        "Thread Runs",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}",
        "Get a run",
        "Thread Runs",
    ),
    RouteDoc::new(
        "DELETE",
        "/threads/{thread_id}/runs/{run_id}",
        "Delete a finished run",
        "Thread Runs",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/runs/{run_id}/cancel",
        "Cancel a run (interrupt or rollback)",
        "Thread Runs",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}/join",
        "Wait for a run and return its result",
        "Thread Runs",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}/stream",
        "Join a run's stream (SSE, Last-Event-ID)",
        "Thread Runs",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/stream",
        "Stream every run of a thread (SSE)",
        "Thread Runs",
    ),
    RouteDoc::new(
        "POST",
        "/runs",
        "Create a stateless background run",
        "Stateless Runs",
    ),
    RouteDoc::new(
        "POST",
        "/runs/stream",
        "Create a stateless run and stream it (SSE)",
        "Stateless Runs",
    ),
    RouteDoc::new(
        "POST",
        "/runs/wait",
        "Create a stateless run and wait for it",
        "Stateless Runs",
    ),
    RouteDoc::new(
        "POST",
        "/runs/batch",
        "Create several stateless runs",
        "Stateless Runs",
    ),
    RouteDoc::new("POST", "/runs/cancel", "Cancel several runs", "Thread Runs"),
];

/// The run routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/threads/{thread_id}/runs",
            post(create_background).get(list_runs),
        )
        .route("/threads/{thread_id}/runs/stream", post(create_stream))
        .route("/threads/{thread_id}/runs/wait", post(create_wait))
        .route(
            "/threads/{thread_id}/runs/{run_id}",
            get(get_run).delete(delete_run),
        )
        .route(
            "/threads/{thread_id}/runs/{run_id}/cancel",
            post(cancel_run),
        )
        .route("/threads/{thread_id}/runs/{run_id}/join", get(join_run))
        .route(
            "/threads/{thread_id}/runs/{run_id}/stream",
            get(join_stream),
        )
        .route("/threads/{thread_id}/stream", get(thread_stream))
        .route("/runs", post(stateless_background))
        .route("/runs/stream", post(stateless_stream))
        .route("/runs/wait", post(stateless_wait))
        .route("/runs/batch", post(stateless_batch))
        .route("/runs/cancel", post(cancel_many))
}

/// Maps kernel errors onto HTTP errors.
pub(crate) fn rt_err(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::NotFound(d) => ApiError::not_found(d),
        RuntimeError::Forbidden(d) => ApiError::new(StatusCode::FORBIDDEN, d),
        RuntimeError::Conflict(d) => ApiError::conflict(d),
        RuntimeError::Invalid(d) => ApiError::unprocessable(d),
        RuntimeError::BadRequest(d) => ApiError::bad_request(d),
        RuntimeError::Overloaded(d) => ApiError::too_many_requests(d),
        RuntimeError::ShuttingDown => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Server is shutting down")
        }
        RuntimeError::Store(e) => ApiError::from(e),
        RuntimeError::Checkpoint(e) => ApiError::from(e),
        RuntimeError::Internal(d) => ApiError::internal(d),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

async fn create(
    st: &AppState,
    owner: &str,
    thread_id: Option<&str>,
    mut body: Value,
) -> ApiResult<antler_runtime::CreatedRun> {
    // a model that is not configured: 400 before anything else (DeerFlow's allowlist)
    crate::routes::models::check_run_body(st, &body)?;
    if let Some(t) = thread_id {
        validate_thread_id(t)?;
    }
    // Secrets a client put in config / context / metadata never reach run kwargs.
    crate::auth::strip_secrets(&mut body);
    let req = RunCreate::parse(&body).map_err(rt_err)?;
    st.runtime
        .create_run(owner, thread_id, req)
        .await
        .map_err(rt_err)
}

fn run_paths(thread_id: Option<&str>, run_id: &str) -> (String, String) {
    match thread_id {
        Some(t) => (
            format!("/threads/{t}/runs/{run_id}"),
            format!("/threads/{t}/runs/{run_id}/stream"),
        ),
        None => (format!("/runs/{run_id}"), format!("/runs/{run_id}/stream")),
    }
}

// ------------------------------------------------------------------ create

async fn create_background(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    LenientJson(body): LenientJson<Value>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let created = create(&st, owner, Some(&thread_id), body).await?;
    let (content_location, _) = run_paths(Some(&thread_id), &created.run.run_id);
    let mut resp = Json(&created.run).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LOCATION, header_value(&content_location));
    Ok(resp)
}

async fn stateless_background(
    caller: Caller,
    State(st): State<AppState>,
    LenientJson(body): LenientJson<Value>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let created = create(&st, owner, None, body).await?;
    let (content_location, _) = run_paths(None, &created.run.run_id);
    let mut resp = Json(&created.run).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_LOCATION, header_value(&content_location));
    Ok(resp)
}

async fn stateless_batch(
    caller: Caller,
    State(st): State<AppState>,
    Json(body): Json<Value>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let Value::Array(items) = body else {
        return Err(ApiError::unprocessable(
            "Request body must be a list of run-create objects",
        ));
    };
    // Validate every item first so a bad item creates nothing.
    let mut reqs = Vec::with_capacity(items.len());
    for item in &items {
        crate::routes::models::check_run_body(&st, item)?;
    }
    for mut item in items {
        crate::auth::strip_secrets(&mut item);
        reqs.push(RunCreate::parse(&item).map_err(rt_err)?);
    }
    let mut runs = Vec::with_capacity(reqs.len());
    for req in reqs {
        let created = st
            .runtime
            .create_run(owner, None, req)
            .await
            .map_err(rt_err)?;
        runs.push(created.run);
    }
    Ok(Json(runs).into_response())
}

async fn create_stream(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    headers: HeaderMap,
    LenientJson(body): LenientJson<Value>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let _ = headers;
    bridge_ready(&st).await?;
    let created = create(&st, owner, Some(&thread_id), body).await?;
    stream_created(&st, owner, Some(&thread_id), created).await
}

async fn stateless_stream(
    caller: Caller,
    State(st): State<AppState>,
    LenientJson(body): LenientJson<Value>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    bridge_ready(&st).await?;
    let created = create(&st, owner, None, body).await?;
    stream_created(&st, owner, None, created).await
}

/// A run to be streamed is refused (503, nothing created) when the stream bridge cannot
/// carry its stream.
async fn bridge_ready(st: &AppState) -> ApiResult<()> {
    st.runtime
        .bridge()
        .ready()
        .await
        .map_err(bridge_unavailable)
}

fn bridge_unavailable(e: antler_bridge::BridgeError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("Stream bridge unavailable: {e}"),
    )
}

async fn stream_created(
    st: &AppState,
    owner: &str,
    path_thread: Option<&str>,
    created: antler_runtime::CreatedRun,
) -> ApiResult<Response> {
    let run_id = created.run.run_id.clone();
    let (content_location, location) = run_paths(path_thread, &run_id);
    let cancel_on_disconnect = (created.request.on_disconnect == OnDisconnect::Cancel)
        .then(|| (created.run.thread_id.clone(), run_id.clone()));
    let body = sse_body(st, owner, &run_id, None, None, cancel_on_disconnect).await?;
    Ok(sse_response(body, Some((&location, &content_location))))
}

async fn create_wait(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    LenientJson(body): LenientJson<Value>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let created = create(&st, owner, Some(&thread_id), body).await?;
    wait_created_response(&st, owner, created)
}

async fn stateless_wait(
    caller: Caller,
    State(st): State<AppState>,
    LenientJson(body): LenientJson<Value>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let created = create(&st, owner, None, body).await?;
    wait_created_response(&st, owner, created)
}

/// [`wait_response`] for a run the caller just created.
fn wait_created_response(
    st: &AppState,
    owner: &str,
    created: antler_runtime::CreatedRun,
) -> ApiResult<Response> {
    let cancel = created.request.on_disconnect == OnDisconnect::Cancel;
    let (thread_id, run_id) = (&created.run.thread_id, &created.run.run_id);
    wait_response(st, owner, thread_id, run_id, cancel, created.done)
}

/// A chunked JSON body: a bare `\n` every 5 s while the run is pending, then the result.
fn wait_response(
    st: &AppState,
    owner: &str,
    thread_id: &str,
    run_id: &str,
    cancel_on_disconnect: bool,
    done: Option<tokio::sync::watch::Receiver<Option<antler_runtime::RunResult>>>,
) -> ApiResult<Response> {
    let rt = st.runtime.clone();
    let guard = DisconnectGuard::new(
        rt.clone(),
        owner,
        cancel_on_disconnect.then(|| (thread_id.to_string(), run_id.to_string())),
    );
    let run_id_owned = run_id.to_string();
    let owner_owned = owner.to_owned();
    let result = async move {
        let r = rt.wait_created(&owner_owned, &run_id_owned, done).await;
        (r, guard)
    };
    let period = Duration::from_secs(5);
    let ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let stream = futures::stream::unfold(
        (Some(Box::pin(result)), ticker),
        |(fut, mut tick)| async move {
            let mut fut = fut?;
            tokio::select! {
                (r, mut guard) = &mut fut => {
                    guard.disarm();
                    let body = match r {
                        Ok(res) => res.to_body_bytes(),
                        Err(e) => serde_json::to_vec(&json!({"__error__": {"error": "HTTPException", "message": e.to_string()}})).unwrap_or_default(),
                    };
                    let bytes = Bytes::from(body);
                    Some((Ok::<_, std::convert::Infallible>(bytes), (None, tick)))
                }
                _ = tick.tick() => Some((Ok(Bytes::from_static(b"\n")), (Some(fut), tick))),
            }
        },
    );
    let (content_location, _) = run_paths(Some(thread_id), run_id);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LOCATION, header_value(&content_location));
    h.insert(
        header::LOCATION,
        header_value(&format!("{content_location}/join")),
    );
    Ok(resp)
}

// ------------------------------------------------------------------ read / delete

#[derive(Debug, Deserialize)]
struct ListParams {
    #[serde(default, deserialize_with = "crate::error::de_opt_i64")]
    limit: Option<i64>,
    #[serde(default, deserialize_with = "crate::error::de_opt_i64")]
    offset: Option<i64>,
    status: Option<String>,
    #[serde(default)]
    select: Option<String>,
}

async fn list_runs(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Query(p): Query<ListParams>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let (limit, offset) = crate::error::page(p.limit, p.offset, 10)?;
    let status = match p.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<RunStatus>().map_err(|_| {
            ApiError::unprocessable(format!(
                "Invalid status '{s}': expected pending, running, success, error, timeout or interrupted"
            ))
        })?),
    };
    let runs = st
        .runtime
        .list_runs(
            owner,
            &thread_id,
            &RunListQuery {
                limit,
                offset,
                status,
            },
        )
        .await
        .map_err(rt_err)?;
    let select: Option<Vec<String>> = p.select.map(|s| {
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    });
    let values = project(to_values(&runs)?, select.as_deref());
    Ok(Json(values).into_response())
}

async fn get_run(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    let run = st
        .runtime
        .get_run(owner, &thread_id, &run_id)
        .await
        .map_err(rt_err)?;
    Ok(Json(run).into_response())
}

async fn delete_run(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    st.runtime
        .delete_run(owner, &thread_id, &run_id)
        .await
        .map_err(rt_err)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------ cancel

#[derive(Debug, Deserialize)]
struct CancelParams {
    #[serde(default, deserialize_with = "de_flag")]
    wait: Option<bool>,
    action: Option<String>,
}

fn parse_action(a: Option<&str>) -> ApiResult<CancelAction> {
    match a {
        None | Some("") => Ok(CancelAction::Interrupt),
        Some(s) => CancelAction::parse(s).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "Invalid action '{s}': expected \"interrupt\" or \"rollback\""
            ))
        }),
    }
}

async fn cancel_run(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    Query(p): Query<CancelParams>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    let action = parse_action(p.action.as_deref())?;
    let wait = p.wait.unwrap_or(false);
    st.runtime
        .cancel_run(owner, &thread_id, &run_id, action, wait)
        .await
        .map_err(rt_err)?;
    if wait {
        let (content_location, _) = run_paths(Some(&thread_id), &run_id);
        let mut resp = Json(json!({})).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_LOCATION, header_value(&content_location));
        resp.headers_mut().insert(
            header::LOCATION,
            header_value(&format!("{content_location}/join")),
        );
        Ok(resp)
    } else {
        Ok(StatusCode::ACCEPTED.into_response())
    }
}

#[derive(Debug, Deserialize)]
struct CancelManyBody {
    thread_id: Option<String>,
    run_ids: Option<Vec<String>>,
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CancelManyParams {
    action: Option<String>,
}

async fn cancel_many(
    caller: Caller,
    State(st): State<AppState>,
    Query(p): Query<CancelManyParams>,
    LenientJson(body): LenientJson<CancelManyBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let action = parse_action(p.action.as_deref())?;
    if let Some(s) = body.status.as_deref()
        && !["pending", "running", "all"].contains(&s)
    {
        return Err(ApiError::unprocessable(format!(
            "\"{s}\" is not one of \"pending\", \"running\" or \"all\""
        )));
    }
    if body.status.is_none() && body.run_ids.is_none() {
        return Err(ApiError::unprocessable(
            "Provide either \"status\" or \"thread_id\" with \"run_ids\"",
        ));
    }
    if body.run_ids.is_some() && body.thread_id.is_none() {
        return Err(ApiError::unprocessable(
            "\"run_ids\" requires \"thread_id\"",
        ));
    }
    let n = st
        .runtime
        .cancel_many(
            owner,
            body.thread_id.as_deref(),
            body.run_ids.as_deref(),
            body.status.as_deref(),
            action,
        )
        .await
        .map_err(rt_err)?;
    if n == 0 && body.run_ids.is_some() {
        return Err(ApiError::not_found(
            "No matching runs to cancel. Please verify the thread ID and run IDs are correct, and the runs haven't been deleted or completed.",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ------------------------------------------------------------------ join

async fn join_run(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    st.runtime
        .get_run(owner, &thread_id, &run_id)
        .await
        .map_err(rt_err)?;
    wait_response(&st, owner, &thread_id, &run_id, false, None)
}

/// Query of the join-stream routes. `stream_mode` may be repeated
/// (`?stream_mode=custom&stream_mode=updates`), so it is collected by hand.
#[derive(Debug, Default)]
struct JoinStreamParams {
    cancel_on_disconnect: Option<bool>,
    /// The events to pass (`None`: all).
    stream_mode: Option<Vec<Wanted>>,
}

/// One entry of a join's `stream_mode` filter: a stream mode, or any other event name
/// (passed as is: `metadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    Mode(StreamMode),
    Event(String),
}

impl Wanted {
    fn parse(name: String) -> Self {
        StreamMode::parse(&name).map_or(Wanted::Event(name), Wanted::Mode)
    }

    /// Whether events whose name starts with `base` (the name without `/…` and `|<ns>`) pass.
    fn matches(&self, base: &str) -> bool {
        match self {
            Wanted::Mode(mode) => mode.event_name() == base,
            Wanted::Event(name) => name == base,
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for JoinStreamParams {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let mut out = JoinStreamParams::default();
        let mut modes: Vec<String> = Vec::new();
        let query = parts.uri.query().unwrap_or_default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "cancel_on_disconnect" => {
                    out.cancel_on_disconnect = Some(crate::error::parse_flag(&v).ok_or_else(|| {
                        ApiError::unprocessable(format!(
                            "Invalid query parameter 'cancel_on_disconnect': '{v}' is not a boolean"
                        ))
                    })?);
                }
                "stream_mode" => modes.push(v.into_owned()),
                _ => {}
            }
        }
        let raw = match modes.len() {
            0 => None,
            1 => modes.pop(),
            _ => Some(modes.join(",")),
        };
        out.stream_mode = wanted(raw.as_deref());
        Ok(out)
    }
}

/// `stream_mode` query: a single mode, a comma list, or a JSON list; empty = all modes.
fn mode_filter(raw: Option<&str>) -> Option<Vec<String>> {
    let raw = raw?.trim();
    if raw.is_empty() {
        return None;
    }
    let modes: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw).unwrap_or_default()
    } else {
        raw.split(',').map(|s| s.trim().to_string()).collect()
    };
    let modes: Vec<String> = modes.into_iter().filter(|m| !m.is_empty()).collect();
    // `run_modes` (the thread stream's default) means: whatever each run streams.
    (!modes.is_empty() && !modes.iter().any(|m| m == "run_modes")).then_some(modes)
}

/// The typed `stream_mode` filter of a join ([`mode_filter`]'s names, parsed).
fn wanted(raw: Option<&str>) -> Option<Vec<Wanted>> {
    mode_filter(raw).map(|names| names.into_iter().map(Wanted::parse).collect())
}

async fn join_stream(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    p: JoinStreamParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    let (content_location, location) = run_paths(Some(&thread_id), &run_id);
    let run = match st.runtime.get_run(owner, &thread_id, &run_id).await {
        Ok(r) => r,
        Err(RuntimeError::NotFound(_)) => {
            // The reference answers 200 with an error event for an unknown run.
            let body = futures::stream::iter(vec![Ok::<_, std::convert::Infallible>(sse::error(
                "HTTPException",
                "404: Run not found",
            ))]);
            return Ok(sse_response(
                Body::from_stream(body),
                Some((&location, &content_location)),
            ));
        }
        Err(e) => return Err(rt_err(e)),
    };
    let filter = p.stream_mode;
    let cancel = (p.cancel_on_disconnect.unwrap_or(false) && run.status.is_active())
        .then(|| (thread_id.clone(), run_id.clone()));
    let last = last_event_id(&headers);
    // A run that is active (here, queued, or executing on another replica sharing the bridge)
    // is followed even before its stream exists: the subscription waits for it.
    if !run.status.is_active()
        && !st.runtime.is_live(&run_id)
        && !st.runtime.bridge().exists(&run_id).await
    {
        // Finished and no longer retained: nothing to replay.
        let body = futures::stream::iter(vec![Ok::<_, std::convert::Infallible>(sse::end())]);
        return Ok(sse_response(
            Body::from_stream(body),
            Some((&location, &content_location)),
        ));
    }
    let body = sse_body(&st, owner, &run_id, last.as_deref(), filter, cancel).await?;
    Ok(sse_response(body, Some((&location, &content_location))))
}

async fn thread_stream(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    p: JoinStreamParams,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    st.runtime
        .require_thread(owner, &thread_id)
        .await
        .map_err(rt_err)?;
    let filter = p.stream_mode;
    let stream_id = antler_runtime::thread_stream_id(owner, &thread_id);
    // Without Last-Event-ID a thread stream starts live (what the thread does from now on).
    let last = match last_event_id(&headers) {
        Some(id) => Some(id),
        None => st.runtime.bridge().latest_event_id(&stream_id).await,
    };
    let body = sse_body(&st, owner, &stream_id, last.as_deref(), filter, None).await?;
    Ok(sse_response(body, None))
}

// ------------------------------------------------------------------ SSE plumbing

fn sse_response(body: Body, locations: Option<(&str, &str)>) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some((location, content_location)) = locations {
        h.insert(header::LOCATION, header_value(location));
        h.insert(header::CONTENT_LOCATION, header_value(content_location));
    }
    resp
}

/// Whether an event passes a `stream_mode` filter (control events always pass).
fn passes(filter: &Option<Vec<Wanted>>, event: &str) -> bool {
    let Some(wanted) = filter else {
        return true;
    };
    let base = event.split('|').next().unwrap_or(event);
    let base = base.split('/').next().unwrap_or(base);
    if matches!(base, "error" | "end" | "gap") {
        return true;
    }
    wanted.iter().any(|w| w.matches(base))
}

/// Cancels a run when the streaming client goes away before the run ended
/// (`on_disconnect: cancel`). Disarmed once the stream has ended normally.
struct DisconnectGuard {
    rt: Arc<Runtime>,
    /// The caller the run belongs to (the cancel acts as them).
    owner: String,
    target: Option<(String, String)>,
}

impl DisconnectGuard {
    fn new(rt: Arc<Runtime>, owner: &str, target: Option<(String, String)>) -> Self {
        Self {
            rt,
            owner: owner.to_owned(),
            target,
        }
    }

    fn disarm(&mut self) {
        self.target = None;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if let Some((thread_id, run_id)) = self.target.take() {
            self.rt.cancel_in_background(&self.owner, thread_id, run_id);
        }
    }
}

async fn sse_body(
    st: &AppState,
    owner: &str,
    stream_id: &str,
    last_event_id: Option<&str>,
    filter: Option<Vec<Wanted>>,
    cancel_on_disconnect: Option<(String, String)>,
) -> ApiResult<Body> {
    // A thread stream outlives its runs' errors; a run stream ends with its error.
    let error_final = !stream_id.starts_with("thread:");
    let rt = st.runtime.clone();
    let sub = rt
        .bridge()
        .subscribe(stream_id, last_event_id)
        .await
        .map_err(bridge_unavailable)?;
    let guard = DisconnectGuard::new(rt.clone(), owner, cancel_on_disconnect);
    let shutdown = rt.shutdown_token();
    let heartbeat = st.heartbeat_interval;
    let ticks = sub.with_heartbeat(heartbeat);
    let stream = futures::stream::unfold(
        (ticks, guard, filter, false),
        move |(mut ticks, mut guard, filter, done)| {
            let shutdown = shutdown.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let tick = tokio::select! {
                        t = ticks.next() => t,
                        _ = shutdown.cancelled() => None,
                    };
                    let Some(tick) = tick else {
                        // Bridge closed (shutdown): end without `end` so clients reconnect.
                        guard.disarm();
                        return None;
                    };
                    let bytes = match tick {
                        Tick::Heartbeat => sse::heartbeat(),
                        Tick::Item(BridgeItem::Event(ev)) => {
                            if !passes(&filter, &ev.event) {
                                continue;
                            }
                            if error_final && ev.event == "error" {
                                // A run error is final: the stream ends with it (no `end`).
                                guard.disarm();
                                return Some((Ok(sse::event(&ev)), (ticks, guard, filter, true)));
                            }
                            sse::event(&ev)
                        }
                        Tick::Item(BridgeItem::Gap(info)) => {
                            guard.disarm();
                            return Some((
                                Ok::<_, std::convert::Infallible>(sse::gap(&info)),
                                (ticks, guard, filter, true),
                            ));
                        }
                        Tick::Item(BridgeItem::End) => {
                            guard.disarm();
                            return Some((Ok(sse::end()), (ticks, guard, filter, true)));
                        }
                    };
                    return Some((Ok(bytes), (ticks, guard, filter, false)));
                }
            }
        },
    );
    Ok(Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_filters() {
        assert_eq!(mode_filter(Some("")), None);
        assert_eq!(
            mode_filter(Some("values")),
            Some(vec!["values".to_string()])
        );
        assert_eq!(
            mode_filter(Some("[\"values\",\"custom\"]")),
            Some(vec!["values".to_string(), "custom".to_string()])
        );
        let f = wanted(Some("messages-tuple"));
        assert!(passes(&f, "messages|child:1"));
        assert!(!passes(&f, "metadata"));
        assert!(passes(&f, "error"));
        assert!(!passes(&f, "values"));
        let f = wanted(Some("messages"));
        assert!(passes(&f, "messages/partial"));
    }

    #[test]
    fn run_results_have_the_reference_bodies() {
        let r = antler_runtime::RunResult::Error {
            kind: "ValueError".into(),
            message: "boom".into(),
        };
        assert_eq!(
            r.to_body(),
            json!({"__error__": {"error": "ValueError", "message": "boom"}})
        );
    }
}
