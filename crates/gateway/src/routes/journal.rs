//! DeerFlow's gateway extensions over the run journal: token usage per thread, a run's events
//! and messages, the thread's message feed, and feedback on runs
//! (`reference/deerflow.md` sections 1.2 and 1.4). Every route is owner-scoped: another user's
//! thread or run answers 404.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use antler_store::{Feedback, RunEvent, RunEventQuery, time};

use crate::auth::Caller;
use crate::error::{
    ApiError, ApiResult, Json, LenientJson, Path, Query, de_flag, de_opt_i64, parse_run_id,
    validate_thread_id,
};
use crate::routes::RouteDoc;
use crate::routes::runs::rt_err;
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/token-usage",
        "Token usage of a thread's runs",
        "Run journal",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/messages",
        "Message feed of a thread",
        "Run journal",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}/events",
        "Persisted events of a run",
        "Run journal",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}/messages",
        "Messages of a run (paged)",
        "Run journal",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/runs/{run_id}/feedback",
        "Add feedback to a run",
        "Feedback",
    ),
    RouteDoc::new(
        "PUT",
        "/threads/{thread_id}/runs/{run_id}/feedback",
        "Set the caller's feedback on a run",
        "Feedback",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}/feedback",
        "List feedback on a run",
        "Feedback",
    ),
    RouteDoc::new(
        "DELETE",
        "/threads/{thread_id}/runs/{run_id}/feedback",
        "Delete the caller's feedback on a run",
        "Feedback",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}/feedback/stats",
        "Feedback counts of a run",
        "Feedback",
    ),
    RouteDoc::new(
        "DELETE",
        "/threads/{thread_id}/runs/{run_id}/feedback/{feedback_id}",
        "Delete one feedback",
        "Feedback",
    ),
];

/// The journal routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/threads/{thread_id}/token-usage", get(token_usage))
        .route("/threads/{thread_id}/messages", get(thread_messages))
        .route("/threads/{thread_id}/runs/{run_id}/events", get(run_events))
        .route(
            "/threads/{thread_id}/runs/{run_id}/messages",
            get(run_messages),
        )
        .route(
            "/threads/{thread_id}/runs/{run_id}/feedback",
            get(list_feedback)
                .post(create_feedback)
                .put(upsert_feedback)
                .delete(delete_own_feedback),
        )
        .route(
            "/threads/{thread_id}/runs/{run_id}/feedback/stats",
            get(feedback_stats),
        )
        .route(
            "/threads/{thread_id}/runs/{run_id}/feedback/{feedback_id}",
            delete(delete_feedback),
        )
}

#[derive(Deserialize, Default)]
struct UsageQuery {
    #[serde(default, deserialize_with = "de_flag")]
    include_active: Option<bool>,
}

async fn token_usage(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Query(q): Query<UsageQuery>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    st.runtime
        .require_thread(owner, &thread_id)
        .await
        .map_err(rt_err)?;
    let agg = st
        .runtime
        .stores()
        .runs
        .aggregate_tokens_by_thread(owner, &thread_id, q.include_active.unwrap_or(false))
        .await
        .map_err(|e| rt_err(e.into()))?;
    let mut body = match serde_json::to_value(&agg) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    body.insert("thread_id".into(), json!(thread_id));
    body.insert("context_usage".into(), Value::Null);
    Ok(Json(Value::Object(body)).into_response())
}

/// Checks that the run exists, belongs to the caller and to the thread.
async fn require_run(st: &AppState, owner: &str, thread_id: &str, run_id: &str) -> ApiResult<()> {
    st.runtime
        .get_run(owner, thread_id, run_id)
        .await
        .map_err(|_| ApiError::not_found(format!("Run {run_id} not found")))?;
    Ok(())
}

/// An event as DeerFlow's feeds show it (`user_id` is never exposed).
fn event_json(e: &RunEvent) -> Value {
    json!({
        "thread_id": e.thread_id,
        "run_id": e.run_id,
        "seq": e.seq,
        "event_type": e.event_type,
        "category": e.category,
        "content": e.content,
        "metadata": e.metadata,
        "created_at": time::format(&e.created_at),
    })
}

#[derive(Deserialize, Default)]
struct EventsQuery {
    event_types: Option<String>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    limit: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    after_seq: Option<i64>,
}

fn check_limit(limit: Option<i64>, default: i64, max: i64) -> ApiResult<usize> {
    let n = limit.unwrap_or(default);
    if !(1..=max).contains(&n) {
        return Err(ApiError::unprocessable(format!(
            "limit must be between 1 and {max}, got {n}"
        )));
    }
    Ok(n as usize)
}

fn check_seq(name: &str, v: Option<i64>) -> ApiResult<Option<i64>> {
    match v {
        Some(n) if n < 1 => Err(ApiError::unprocessable(format!(
            "{name} must be at least 1, got {n}"
        ))),
        other => Ok(other),
    }
}

async fn run_events(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    let limit = check_limit(q.limit, 500, 2000)?;
    require_run(&st, owner, &thread_id, &run_id).await?;
    let query = RunEventQuery {
        run_id: Some(run_id),
        event_types: q
            .event_types
            .as_deref()
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        after_seq: q.after_seq,
        limit: Some(limit),
        ..Default::default()
    };
    let events = st
        .runtime
        .stores()
        .events
        .list(owner, &thread_id, &query)
        .await
        .map_err(|e| rt_err(e.into()))?;
    Ok(Json(Value::Array(events.iter().map(event_json).collect())).into_response())
}

#[derive(Deserialize, Default)]
struct PageQuery {
    #[serde(default, deserialize_with = "de_opt_i64")]
    limit: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    before_seq: Option<i64>,
    #[serde(default, deserialize_with = "de_opt_i64")]
    after_seq: Option<i64>,
}

/// One page of message events: `after_seq` pages forward, `before_seq` (or neither) backward
/// from the cursor (or the end). Returns the page (ascending) and whether more exist.
async fn message_page(
    st: &AppState,
    owner: &str,
    thread_id: &str,
    run_id: Option<String>,
    q: &PageQuery,
    max: i64,
) -> ApiResult<(Vec<RunEvent>, bool)> {
    let limit = check_limit(q.limit, 50, max)?;
    let before_seq = check_seq("before_seq", q.before_seq)?;
    let after_seq = check_seq("after_seq", q.after_seq)?;
    let forward = after_seq.is_some() && before_seq.is_none();
    let query = RunEventQuery {
        run_id,
        category: Some("message".into()),
        after_seq: if forward { after_seq } else { None },
        before_seq: if forward {
            None
        } else {
            Some(before_seq.unwrap_or(i64::MAX))
        },
        limit: Some(limit + 1),
        ..Default::default()
    };
    let mut rows = st
        .runtime
        .stores()
        .events
        .list(owner, thread_id, &query)
        .await
        .map_err(|e| rt_err(e.into()))?;
    let more = rows.len() > limit;
    if more {
        if forward {
            rows.truncate(limit);
        } else {
            rows.drain(..rows.len() - limit);
        }
    }
    Ok((rows, more))
}

async fn run_messages(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    require_run(&st, owner, &thread_id, &run_id).await?;
    let (rows, more) = message_page(&st, owner, &thread_id, Some(run_id), &q, 200).await?;
    Ok(Json(json!({
        "data": rows.iter().map(event_json).collect::<Vec<_>>(),
        "has_more": more,
    }))
    .into_response())
}

async fn thread_messages(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    st.runtime
        .require_thread(owner, &thread_id)
        .await
        .map_err(rt_err)?;
    let (rows, _) = message_page(&st, owner, &thread_id, None, &q, 200).await?;
    // the caller's feedback rides on the last AI response of each run
    let mut last_response: std::collections::HashMap<&str, i64> = Default::default();
    for e in rows.iter().filter(|e| e.event_type == "llm.ai.response") {
        last_response.insert(e.run_id.as_str(), e.seq);
    }
    let mut out = Vec::with_capacity(rows.len());
    for e in &rows {
        let mut v = event_json(e);
        let feedback = if last_response.get(e.run_id.as_str()) == Some(&e.seq) {
            st.runtime
                .stores()
                .feedback
                .list_by_run(owner, &thread_id, &e.run_id)
                .await
                .map_err(|e| rt_err(e.into()))?
                .last()
                .map(|f| json!({"feedback_id": f.feedback_id, "rating": f.rating, "comment": f.comment}))
                .unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        if let Some(m) = v.as_object_mut() {
            m.insert("feedback".into(), feedback);
        }
        out.push(v);
    }
    Ok(Json(Value::Array(out)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    rating: Value,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
}

fn build_feedback(
    owner: &str,
    thread_id: &str,
    run_id: &str,
    body: FeedbackBody,
) -> ApiResult<Feedback> {
    let rating = match body.rating.as_i64() {
        Some(r @ (1 | -1)) => r,
        _ => return Err(ApiError::bad_request("rating must be +1 or -1")),
    };
    if body.comment.as_ref().is_some_and(|c| c.len() > 10_000) {
        return Err(ApiError::bad_request(
            "comment is too long (at most 10000 bytes)",
        ));
    }
    Ok(Feedback {
        feedback_id: uuid::Uuid::new_v4().to_string(),
        run_id: run_id.to_string(),
        thread_id: thread_id.to_string(),
        owner: owner.to_string(),
        message_id: body.message_id,
        rating,
        comment: body.comment,
        metadata: Map::new(),
        created_at: time::now(),
    })
}

fn feedback_json(f: &Feedback) -> Value {
    json!({
        "feedback_id": f.feedback_id,
        "run_id": f.run_id,
        "thread_id": f.thread_id,
        "user_id": f.owner,
        "message_id": f.message_id,
        "rating": f.rating,
        "comment": f.comment,
        "created_at": time::format(&f.created_at),
    })
}

async fn create_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    LenientJson(body): LenientJson<FeedbackBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    require_run(&st, owner, &thread_id, &run_id).await?;
    let fb = build_feedback(owner, &thread_id, &run_id, body)?;
    let fb = st
        .runtime
        .stores()
        .feedback
        .create(owner, fb)
        .await
        .map_err(|e| rt_err(e.into()))?;
    Ok(Json(feedback_json(&fb)).into_response())
}

async fn upsert_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    LenientJson(body): LenientJson<FeedbackBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    require_run(&st, owner, &thread_id, &run_id).await?;
    let fb = build_feedback(owner, &thread_id, &run_id, body)?;
    let fb = st
        .runtime
        .stores()
        .feedback
        .upsert(owner, fb)
        .await
        .map_err(|e| rt_err(e.into()))?;
    Ok(Json(feedback_json(&fb)).into_response())
}

async fn list_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    require_run(&st, owner, &thread_id, &run_id).await?;
    let list = st
        .runtime
        .stores()
        .feedback
        .list_by_run(owner, &thread_id, &run_id)
        .await
        .map_err(|e| rt_err(e.into()))?;
    Ok(Json(Value::Array(list.iter().map(feedback_json).collect())).into_response())
}

async fn feedback_stats(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    require_run(&st, owner, &thread_id, &run_id).await?;
    let list = st
        .runtime
        .stores()
        .feedback
        .list_by_run(owner, &thread_id, &run_id)
        .await
        .map_err(|e| rt_err(e.into()))?;
    let positive = list.iter().filter(|f| f.rating > 0).count();
    let negative = list.iter().filter(|f| f.rating < 0).count();
    Ok(Json(json!({
        "run_id": run_id,
        "total": list.len(),
        "positive": positive,
        "negative": negative,
    }))
    .into_response())
}

async fn delete_own_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    require_run(&st, owner, &thread_id, &run_id).await?;
    let n = st
        .runtime
        .stores()
        .feedback
        .delete_by_run(owner, &thread_id, &run_id)
        .await
        .map_err(|e| rt_err(e.into()))?;
    if n == 0 {
        return Err(ApiError::not_found("No feedback found for this run"));
    }
    Ok(Json(json!({"success": true})).into_response())
}

async fn delete_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id, feedback_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    let store = &st.runtime.stores().feedback;
    match store
        .get(owner, &feedback_id)
        .await
        .map_err(|e| rt_err(e.into()))?
    {
        Some(f) if f.thread_id == thread_id && f.run_id == run_id => {}
        _ => {
            return Err(ApiError::not_found(format!(
                "Feedback {feedback_id} not found"
            )));
        }
    }
    store
        .delete(owner, &feedback_id)
        .await
        .map_err(|e| rt_err(e.into()))?;
    Ok((StatusCode::OK, Json(json!({"success": true}))).into_response())
}
