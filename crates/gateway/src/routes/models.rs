//! Chat models (DeerFlow's `/api/models` router): `GET /models` lists the configured models,
//! `GET /models/{name}` shows one. Also the allowlist check of run creation: a run whose
//! `context.model_name` / `config.configurable.model_name` is not a configured model is refused
//! with 400 before anything is created ([`check_run_model`]).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use crate::error::{ApiError, ApiResult, Json};
use crate::routes::RouteDoc;
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new(
        "GET",
        "/models",
        "List the configured chat models",
        "Models",
    ),
    RouteDoc::new(
        "GET",
        "/models/{model_name}",
        "Get one chat model",
        "Models",
    ),
];

/// The model routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/models", get(list_models))
        .route("/models/{model_name}", get(get_model))
}

/// `{"models": [...], "token_usage": {"enabled": true}}` (the journal always counts tokens).
async fn list_models(State(st): State<AppState>) -> Json<Value> {
    Json(st.models.api_json(true))
}

async fn get_model(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    st.models
        .get(&name)
        .map(|e| Json(e.config.api_json()))
        .ok_or_else(|| ApiError::not_found(format!("Model '{name}' not found")))
}

/// Largest run-create body the check reads (axum's default body limit, which the run
/// handlers apply too).
const MAX_BODY: usize = 2 * 1024 * 1024;

/// Whether `path` creates runs: `[/api]/runs[/stream|/wait|/batch]` or
/// `[/api]/threads/{id}/runs[/stream|/wait]`.
fn is_run_create(path: &str) -> bool {
    let path = path.strip_prefix("/api").unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    if matches!(
        path,
        "/runs" | "/runs/stream" | "/runs/wait" | "/runs/batch"
    ) {
        return true;
    }
    let Some(rest) = path.strip_prefix("/threads/") else {
        return false;
    };
    let mut segs = rest.split('/');
    let (Some(id), Some("runs")) = (segs.next(), segs.next()) else {
        return false;
    };
    !id.is_empty()
        && matches!(
            (segs.next(), segs.next()),
            (None, _) | (Some("stream" | "wait"), None)
        )
}

/// The model names a run-create body asks for (`context.model_name`,
/// `config.configurable.model_name`). A non-string value is a 400.
fn requested_models(body: &Value) -> ApiResult<Vec<&str>> {
    let mut out = Vec::new();
    for (where_, v) in [
        ("context.model_name", body.pointer("/context/model_name")),
        (
            "config.configurable.model_name",
            body.pointer("/config/configurable/model_name"),
        ),
    ] {
        match v {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => out.push(s.as_str()),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid value for \"{where_}\": {other} is not a model name (a string)"
                )));
            }
        }
    }
    Ok(out)
}

/// Checks one run-create body against the configured models.
pub fn check_run_body(st: &AppState, body: &Value) -> ApiResult<()> {
    for name in requested_models(body)? {
        st.models
            .resolve(Some(name))
            .map_err(|e| ApiError::bad_request(e.0))?;
    }
    Ok(())
}

/// Middleware: refuses (400) a run-create request whose model is not configured, before the
/// run handlers see it. Other requests pass through untouched; a body that is not JSON is
/// left for the handler to reject.
pub async fn check_run_model(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || !is_run_create(req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
                .into_response();
        }
    };
    if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
        let items: Vec<&Value> = match &value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            if let Err(e) = check_run_body(&st, item) {
                return e.into_response();
            }
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_create_paths() {
        for p in [
            "/runs",
            "/api/runs/stream",
            "/runs/wait",
            "/runs/batch",
            "/threads/t1/runs",
            "/api/threads/t1/runs/stream",
            "/threads/t1/runs/wait",
        ] {
            assert!(is_run_create(p), "{p}");
        }
        for p in [
            "/runs/cancel",
            "/runs/crons",
            "/threads",
            "/threads/t1/runs/r1",
            "/threads/t1/runs/r1/cancel",
            "/threads//runs",
            "/threads/t1/state",
            "/models",
        ] {
            assert!(!is_run_create(p), "{p}");
        }
    }

    #[test]
    fn model_names_come_from_context_and_configurable() {
        let body = json!({"context": {"model_name": "a"}, "config": {"configurable": {"model_name": "b"}}});
        assert_eq!(requested_models(&body).unwrap(), vec!["a", "b"]);
        assert!(
            requested_models(&json!({"context": {"model_name": null}}))
                .unwrap()
                .is_empty()
        );
        let err = requested_models(&json!({"context": {"model_name": 3}})).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }
}
