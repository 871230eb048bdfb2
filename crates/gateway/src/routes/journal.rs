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

use antler_runtime::{EventFilter, FeedbackInput, MessagePage};
use antler_store::{Feedback, RunEvent, time};

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
        "/threads/{thread_id}/messages/page",
        "Message feed of a thread, paged backward",
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
        .route(
            "/threads/{thread_id}/messages/page",
            get(thread_messages_page),
        )
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
    let agg = st
        .runtime
        .thread_token_usage(owner, &thread_id, q.include_active.unwrap_or(false))
        .await
        .map_err(rt_err)?;
    let mut body = match serde_json::to_value(&agg) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    body.insert("thread_id".into(), json!(thread_id));
    body.insert("context_usage".into(), Value::Null);
    Ok(Json(Value::Object(body)).into_response())
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

async fn run_events(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    let filter = EventFilter {
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
        limit: q.limit,
    };
    let events = st
        .runtime
        .run_events(owner, &thread_id, &run_id, filter)
        .await
        .map_err(rt_err)?;
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

impl PageQuery {
    fn page(&self) -> MessagePage {
        MessagePage {
            limit: self.limit,
            before_seq: self.before_seq,
            after_seq: self.after_seq,
        }
    }
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
    let (rows, more) = st
        .runtime
        .run_messages(owner, &thread_id, &run_id, q.page())
        .await
        .map_err(rt_err)?;
    Ok(Json(json!({
        "data": rows.iter().map(event_json).collect::<Vec<_>>(),
        "has_more": more,
    }))
    .into_response())
}

/// A message-feed row: the event with the caller's feedback (on the last AI response of a run).
fn feed_row((e, feedback): &(RunEvent, Option<Feedback>)) -> Value {
    let mut v = event_json(e);
    let feedback = feedback.as_ref().map_or(
        Value::Null,
        |f| json!({"feedback_id": f.feedback_id, "rating": f.rating, "comment": f.comment}),
    );
    if let Some(m) = v.as_object_mut() {
        m.insert("feedback".into(), feedback);
    }
    v
}

/// The thread's message feed rows of `q`'s page (with feedback), and whether more exist.
async fn feed_page(
    st: &AppState,
    owner: &str,
    thread_id: &str,
    q: &PageQuery,
) -> ApiResult<(Vec<Value>, Option<i64>, bool)> {
    validate_thread_id(thread_id)?;
    let (rows, more) = st
        .runtime
        .thread_messages(owner, thread_id, q.page())
        .await
        .map_err(rt_err)?;
    let oldest = rows.first().map(|(e, _)| e.seq);
    Ok((rows.iter().map(feed_row).collect(), oldest, more))
}

async fn thread_messages(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let (rows, _, _) = feed_page(&st, caller.owner(), &thread_id, &q).await?;
    Ok(Json(Value::Array(rows)).into_response())
}

/// DeerFlow's backward-only page of the thread's messages: `{data, has_more, next_before_seq}`,
/// where `next_before_seq` is the oldest row's `seq` when older rows exist (pass it as
/// `before_seq` for the next page), else null.
async fn thread_messages_page(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    if q.after_seq.is_some() {
        validate_thread_id(&thread_id)?;
        return Err(ApiError::unprocessable(
            "after_seq is not supported by the paged message feed; page backward with before_seq",
        ));
    }
    let (mut data, oldest, more) = feed_page(&st, owner, &thread_id, &q).await?;
    stamp_turn_durations(&st, owner, &thread_id, &mut data).await;
    Ok(Json(json!({
        "data": data,
        "has_more": more,
        "next_before_seq": if more { json!(oldest) } else { Value::Null },
    }))
    .into_response())
}

/// DeerFlow's `turn_duration`: on the last AI row of each run in a page, the run's lifetime in
/// whole seconds (`updated_at - created_at`) under `content.additional_kwargs` (its page shows it
/// on the answer). A run that cannot be read (deleted meanwhile) gets none.
async fn stamp_turn_durations(st: &AppState, owner: &str, thread_id: &str, rows: &mut [Value]) {
    let mut stamped = std::collections::HashSet::new();
    for row in rows.iter_mut().rev() {
        let Some(run_id) = row["run_id"].as_str().map(str::to_string) else {
            continue;
        };
        if row["content"]["type"] != "ai" || stamped.contains(&run_id) {
            continue;
        }
        stamped.insert(run_id.clone());
        let Ok(run) = st.runtime.get_run(owner, thread_id, &run_id).await else {
            continue;
        };
        let seconds = (run.updated_at - run.created_at).num_seconds().max(0);
        if let Some(content) = row["content"].as_object_mut() {
            let kwargs = content
                .entry("additional_kwargs")
                .or_insert_with(|| json!({}));
            if let Some(k) = kwargs.as_object_mut() {
                k.insert("turn_duration".into(), json!(seconds));
            }
        }
    }
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

impl FeedbackBody {
    fn input(self) -> FeedbackInput {
        FeedbackInput {
            rating: self.rating.as_i64(),
            comment: self.comment,
            message_id: self.message_id,
        }
    }
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

/// The validated `(thread_id, run_id)` of a run path.
fn run_path(thread_id: &str, run_id: &str) -> ApiResult<String> {
    validate_thread_id(thread_id)?;
    parse_run_id(run_id)
}

async fn create_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    LenientJson(body): LenientJson<FeedbackBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let run_id = run_path(&thread_id, &run_id)?;
    let fb = st
        .runtime
        .create_feedback(owner, &thread_id, &run_id, body.input())
        .await
        .map_err(rt_err)?;
    Ok(Json(feedback_json(&fb)).into_response())
}

async fn upsert_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    LenientJson(body): LenientJson<FeedbackBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let run_id = run_path(&thread_id, &run_id)?;
    let fb = st
        .runtime
        .upsert_feedback(owner, &thread_id, &run_id, body.input())
        .await
        .map_err(rt_err)?;
    Ok(Json(feedback_json(&fb)).into_response())
}

async fn list_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let run_id = run_path(&thread_id, &run_id)?;
    let list = st
        .runtime
        .list_feedback(owner, &thread_id, &run_id)
        .await
        .map_err(rt_err)?;
    Ok(Json(Value::Array(list.iter().map(feedback_json).collect())).into_response())
}

async fn feedback_stats(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let run_id = run_path(&thread_id, &run_id)?;
    let list = st
        .runtime
        .list_feedback(owner, &thread_id, &run_id)
        .await
        .map_err(rt_err)?;
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
    let run_id = run_path(&thread_id, &run_id)?;
    st.runtime
        .delete_run_feedback(owner, &thread_id, &run_id)
        .await
        .map_err(rt_err)?;
    Ok(Json(json!({"success": true})).into_response())
}

async fn delete_feedback(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id, feedback_id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    let run_id = run_path(&thread_id, &run_id)?;
    st.runtime
        .delete_feedback(owner, &thread_id, &run_id, &feedback_id)
        .await
        .map_err(rt_err)?;
    Ok((StatusCode::OK, Json(json!({"success": true}))).into_response())
}
