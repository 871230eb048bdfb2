//! Chat models (DeerFlow's `/api/models` router): `GET /models` lists the configured models,
//! `GET /models/{name}` shows one. Also the allowlist check of run creation: a run whose
//! `context.model_name` / `config.configurable.model_name` is not a configured model is refused
//! with 400 before anything is created ([`check_run_body`], called by every run-create handler
//! on the body it has parsed anyway).

use axum::Router;
use axum::extract::{Path, State};
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
    }
}
