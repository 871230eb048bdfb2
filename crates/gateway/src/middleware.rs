//! Cross-cutting HTTP behaviour applied to every route: CORS exactly as the reference sends
//! it, `vary: Origin` on every response, JSON bodies for every error response (axum's own
//! 404/405/rejections included), and request metrics.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Methods listed in `access-control-allow-methods` (the reference's list, `QUERY` included).
pub const CORS_ALLOW_METHODS: &str = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, QUERY";
/// Headers a browser may read from our responses (the JS SDK reads the run id from
/// `content-location`, and `location` to rejoin).
pub const CORS_EXPOSE_HEADERS: &str =
    "x-pagination-total, x-pagination-next, content-location, location";
/// Preflight cache lifetime, in seconds.
pub const CORS_MAX_AGE: &str = "600";

const PREFLIGHT_VARY: &str = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, Access-Control-Request-Private-Network";

/// Answers CORS preflights itself and decorates every other response with `vary: Origin` and,
/// when the request has an `Origin`, `access-control-allow-origin: *` and the exposed headers.
pub async fn cors(req: Request, next: Next) -> Response {
    let has_origin = req.headers().contains_key(header::ORIGIN);
    if has_origin
        && req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(req.headers());
    }
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    add_vary_origin(headers);
    if has_origin {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(CORS_EXPOSE_HEADERS),
        );
    }
    resp
}

fn add_vary_origin(headers: &mut HeaderMap) {
    let already = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case("origin"))
        })
    });
    if !already {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn preflight(req_headers: &HeaderMap) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "OK",
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(CORS_ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(CORS_MAX_AGE),
    );
    if let Some(requested) = req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    h.insert(
        "access-control-allow-private-network",
        HeaderValue::from_static("true"),
    );
    resp
}

/// Largest plain-text error body that is rewrapped as `{"detail": ...}`.
const MAX_REWRAP: usize = 64 * 1024;

/// Turns any non-JSON error response (axum's empty 404/405, extractor rejections of routes
/// that use axum's own extractors) into `{"detail": ...}`, keeping the status and headers
/// (`allow` on 405).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json_or_stream = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with("text/event-stream")
        });
    if is_json_or_stream {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REWRAP).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let detail = if text.is_empty() {
        default_detail(status)
    } else {
        text
    };
    let body = serde_json::json!({ "detail": detail }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

fn default_detail(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => "Not Found".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed".to_owned(),
        other => other.canonical_reason().unwrap_or("Error").to_owned(),
    }
}

/// The route template a request matched, without the `/api` prefix, or `unmatched`.
pub fn route_label(req: &Request) -> String {
    match req.extensions().get::<MatchedPath>() {
        Some(p) => {
            let path = p.as_str();
            match path.strip_prefix("/api") {
                Some("") => "/".to_owned(),
                Some(rest) if rest.starts_with('/') => rest.to_owned(),
                _ => path.to_owned(),
            }
        }
        None => "unmatched".to_owned(),
    }
}

/// Counts every request by (method, route template, status) and its duration.
pub async fn metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = route_label(&req);
    let resp = next.run(req).await;
    state.metrics.record_request(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}
