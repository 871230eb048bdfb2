//! `antler-gateway`: the HTTP edge of Antler (axum 0.8).
//!
//! Owns the LangGraph Platform API routes, served both at the root (`/threads/...`, what the
//! SDKs use by default) and under `/api` (DeerFlow's layout); CORS as the reference sends it;
//! JSON `{"detail": ...}` errors for every failure (unknown route 404, wrong method 405 with
//! `allow`, bad input 422); request metrics; and the OpenAPI document generated from the
//! route tables. Handlers are thin: they validate and extract, call one runtime service, and
//! map the result (the gateway never touches a store). Every request is authenticated first ([`auth`]); handlers act as the
//! request's [`Caller`], never as a fixed owner.

pub mod auth;
pub mod error;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;

use axum::Router;
use axum::http::StatusCode;

pub use auth::Caller;
pub use error::{ApiError, ApiResult};
pub use state::{AppState, DEFAULT_MAX_BODY_BYTES, DEFAULT_OWNER, Graphs, Metrics};

/// The routes of the API, relative to its root (no middleware, no fallback).
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .merge(routes::meta::router())
        .merge(routes::assistants::router())
        .merge(routes::threads::router())
        .merge(routes::store::router())
        .merge(routes::runs::router())
        .merge(routes::journal::router())
        .merge(routes::state::router())
        .merge(routes::auth::router())
        .merge(routes::models::router())
        .merge(routes::frontend::router())
}

/// The whole application: every route at `/` and under `/api`, CORS, JSON errors, metrics.
pub fn router(state: AppState) -> Router {
    let api = api_routes();
    let body_limit = axum::extract::DefaultBodyLimit::max(state.max_body_bytes);
    Router::new()
        .merge(api.clone())
        .nest("/api", api)
        .fallback(not_found)
        .layer(body_limit)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::metrics,
        ))
        .layer(axum::middleware::from_fn(middleware::json_errors))
        .layer(axum::middleware::from_fn(middleware::cors))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}
