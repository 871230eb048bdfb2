//! Error mapping and request extraction for the HTTP edge.
//!
//! Owns [`ApiError`] (every error response is `{"detail": "..."}` with a 4xx/5xx status), the
//! conversion from storage errors, and the extractors [`Json`], [`LenientJson`], [`Query`] and
//! [`Path`] whose rejections are JSON 4xx responses instead of axum's plain-text ones.
//! Invariant: nothing a client sends may turn into a 500 or a panic; only storage backend
//! failures produce 5xx.
//!
//! Content type is deliberately not checked (the reference accepts a JSON body sent as
//! `application/x-www-form-urlencoded`, which is what plain `curl -d` does).

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The one error type of the gateway: a status and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Text placed in `{"detail": ...}`.
    pub detail: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }

    /// 404 with the given detail.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    /// 404 `Not Found` (the reference's text for unknown runs, assistants and routes).
    pub fn not_found_plain() -> Self {
        Self::not_found("Not Found")
    }

    /// 404 `Thread with ID … not found`.
    pub fn thread_not_found(thread_id: &str) -> Self {
        Self::not_found(format!("Thread with ID {thread_id} not found"))
    }

    /// 409 with the given detail.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, detail)
    }

    /// 422 with the given detail.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
    }

    /// 400 with the given detail.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 429 with the given detail; the response asks to retry after [`RETRY_AFTER_SECONDS`].
    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, detail)
    }

    /// 500 with the given detail (server-side failures only).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }

    /// 422 `Invalid JSON in request body`.
    pub fn invalid_json() -> Self {
        Self::unprocessable("Invalid JSON in request body")
    }
}

/// The `Retry-After` of a 429 or 503 answer, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, detail = %self.detail, "request failed");
        }
        let retry = matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let mut resp = (
            self.status,
            axum::Json(serde_json::json!({ "detail": self.detail })),
        )
            .into_response();
        if retry {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECONDS),
            );
        }
        resp
    }
}

impl From<antler_store::StoreError> for ApiError {
    fn from(err: antler_store::StoreError) -> Self {
        use antler_store::StoreError;
        match err {
            StoreError::NotFound => Self::not_found_plain(),
            StoreError::Conflict(msg) => Self::conflict(msg),
            StoreError::InvalidArgument(msg) => Self::unprocessable(msg),
            StoreError::Transient(msg) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Storage temporarily unavailable: {msg}"),
            ),
            StoreError::Backend(msg) => Self::internal(format!("Storage error: {msg}")),
        }
    }
}

impl From<antler_graph::CheckpointError> for ApiError {
    fn from(err: antler_graph::CheckpointError) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Checkpoint storage error: {err}"),
        )
    }
}

/// Result alias used by handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body into `T`; `empty_as_object` makes an empty (or all-whitespace) body
/// behave as `{}`.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8], empty_as_object: bool) -> ApiResult<T> {
    let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_as_object {
            Value::Object(serde_json::Map::new())
        } else {
            return Err(ApiError::invalid_json());
        }
    } else {
        serde_json::from_slice(bytes).map_err(|_| ApiError::invalid_json())?
    };
    from_value(value)
}

/// Deserializes a parsed JSON value into `T`, naming the offending field on failure.
pub fn from_value<T: DeserializeOwned>(value: Value) -> ApiResult<T> {
    let is_object = value.is_object();
    serde_path_to_error::deserialize::<_, T>(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        if path == "." || path.is_empty() {
            if is_object {
                ApiError::unprocessable(format!("Invalid request body: {inner}"))
            } else {
                ApiError::unprocessable("Invalid request body: expected a JSON object")
            }
        } else {
            ApiError::unprocessable(format!("Invalid value for '{path}': {inner}"))
        }
    })
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        let status = rej.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "Request body too large")
        } else {
            ApiError::bad_request(format!("Could not read request body: {}", rej.body_text()))
        }
    })
}

/// JSON body extractor: the body must be JSON (an empty body is rejected with 422
/// `Invalid JSON in request body`, as the reference does for `POST /threads`). Also usable as
/// a response (serializes like `axum::Json`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_json_body(&bytes, false).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// JSON body extractor where an empty body means `{}` (search, count, copy, namespaces...).
#[derive(Debug, Clone, Copy, Default)]
pub struct LenientJson<T>(pub T);

impl<S, T> FromRequest<S> for LenientJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_json_body(&bytes, true).map(LenientJson)
    }
}

/// Query-string extractor whose rejections are 422 JSON naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

/// Parses a raw query string (without `?`) into `T`.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> ApiResult<T> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize::<_, T>(de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        if path == "." || path.is_empty() {
            ApiError::unprocessable(format!("Invalid query string: {inner}"))
        } else {
            ApiError::unprocessable(format!("Invalid query parameter '{path}': {inner}"))
        }
    })
}

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

/// Path extractor whose rejections are 422 JSON.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|rej| ApiError::unprocessable(format!("Invalid path: {}", rej.body_text())))
    }
}

/// Whether `id` is an acceptable thread id: 1 to 64 characters of `[A-Za-z0-9_-]` (UUIDs
/// included).
pub fn is_valid_thread_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Validates a thread id taken from a path or body (422 otherwise).
pub fn validate_thread_id(id: &str) -> ApiResult<()> {
    if is_valid_thread_id(id) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "Invalid thread ID: must be a UUID or 1-64 characters of [A-Za-z0-9_-]",
        ))
    }
}

/// Parses a UUID path parameter, returning its canonical lowercase hyphenated form; `what`
/// names the kind of id in the error (`Invalid run ID: must be a UUID`).
pub fn parse_uuid(id: &str, what: &str) -> ApiResult<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| ApiError::unprocessable(format!("Invalid {what} ID: must be a UUID")))
}

/// Validates a run id (a UUID) and returns its canonical form.
pub fn parse_run_id(id: &str) -> ApiResult<String> {
    parse_uuid(id, "run")
}

/// Parses a boolean flag the way the reference does: `true`/`yes`/`1`/`on` are true,
/// `false`/`no`/`0`/`off`/empty are false (case-insensitive).
pub fn parse_flag(raw: &str) -> Option<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" | "t" | "y" => Some(true),
        "false" | "no" | "0" | "off" | "f" | "n" | "" => Some(false),
        _ => None,
    }
}

/// `#[serde(deserialize_with = "antler_gateway::error::de_flag")]` for `Option<bool>` query
/// parameters (accepts `1`, `yes`, `true`, JSON booleans...).
pub fn de_flag<'de, D: Deserializer<'de>>(de: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bool(bool),
        Int(i64),
        Str(String),
    }
    match Option::<Raw>::deserialize(de)? {
        None => Ok(None),
        Some(Raw::Bool(b)) => Ok(Some(b)),
        Some(Raw::Int(i)) => Ok(Some(i != 0)),
        Some(Raw::Str(s)) => parse_flag(&s).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("expected a boolean (true/false/1/0), got '{s}'"))
        }),
    }
}

/// Serde helper for integer fields that clients sometimes send as numeric strings in query
/// strings (`?limit=10`): accepts an integer or a string holding one.
pub fn de_opt_i64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Str(String),
    }
    match Option::<Raw>::deserialize(de)? {
        None => Ok(None),
        Some(Raw::Int(i)) => Ok(Some(i)),
        Some(Raw::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Raw::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected an integer, got '{s}'"))),
    }
}

/// Checks `limit` (1..=1000, default `default`) and `offset` (>= 0, default 0) the way the
/// reference schema does, with a clear 422 otherwise.
pub fn page(limit: Option<i64>, offset: Option<i64>, default: i64) -> ApiResult<(usize, usize)> {
    let limit = limit.unwrap_or(default);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable(format!(
            "Invalid value for 'limit': {limit} is not between 1 and 1000"
        )));
    }
    let offset = offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::unprocessable(format!(
            "Invalid value for 'offset': {offset} is less than the minimum of 0"
        )));
    }
    let limit = usize::try_from(limit).map_err(|_| ApiError::unprocessable("Invalid limit"))?;
    let offset = usize::try_from(offset).map_err(|_| ApiError::unprocessable("Invalid offset"))?;
    Ok((limit, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        limit: Option<i64>,
    }

    #[test]
    fn overload_and_unavailable_answers_say_when_to_retry() {
        for err in [
            ApiError::too_many_requests("full"),
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "down"),
        ] {
            let status = err.status;
            let resp = err.into_response();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        }
        let resp = ApiError::conflict("busy").into_response();
        assert!(
            resp.headers()
                .get(axum::http::header::RETRY_AFTER)
                .is_none()
        );
    }

    #[test]
    fn malformed_json_is_422_invalid_json() {
        let err = parse_json_body::<Body>(b"{\"limit\":", false).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.detail, "Invalid JSON in request body");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_json_body::<Body>(br#"{"limit":"ten"}"#, false).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.detail.contains("'limit'"), "{}", err.detail);
    }

    #[test]
    fn empty_body_depends_on_leniency() {
        assert!(parse_json_body::<Body>(b"", false).is_err());
        let body = parse_json_body::<Body>(b"  ", true).unwrap();
        assert_eq!(body.limit, None);
    }

    #[test]
    fn non_object_body_is_rejected() {
        let err = parse_json_body::<Body>(b"[1,2]", false).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn thread_ids() {
        assert!(is_valid_thread_id("not-a-uuid"));
        assert!(is_valid_thread_id("01a20042-681e-7167-9755-f0c2bdbd75a8"));
        assert!(!is_valid_thread_id(""));
        assert!(!is_valid_thread_id("a b"));
        assert!(!is_valid_thread_id(&"x".repeat(65)));
    }

    #[test]
    fn flags_and_query() {
        #[derive(Deserialize)]
        struct Q {
            #[serde(default, deserialize_with = "de_flag")]
            wait: Option<bool>,
        }
        let q: Q = parse_query("wait=1").unwrap();
        assert_eq!(q.wait, Some(true));
        let q: Q = parse_query("wait=no").unwrap();
        assert_eq!(q.wait, Some(false));
        let q: Q = parse_query("").unwrap();
        assert_eq!(q.wait, None);
        let err = parse_query::<Q>("wait=maybe").err().unwrap();
        assert!(err.detail.contains("wait"), "{}", err.detail);
    }

    #[test]
    fn paging_bounds() {
        assert_eq!(page(None, None, 10).unwrap(), (10, 0));
        assert!(page(Some(0), None, 10).is_err());
        assert!(page(Some(1001), None, 10).is_err());
        assert!(page(Some(5), Some(-1), 10).is_err());
    }

    #[test]
    fn uuid_parsing() {
        assert!(parse_run_id("nope").is_err());
        let id = parse_run_id("00000000-0000-4000-8000-0000000000FF").unwrap();
        assert_eq!(id, "00000000-0000-4000-8000-0000000000ff");
    }
}
