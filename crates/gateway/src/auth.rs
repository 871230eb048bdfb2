//! Authentication at the HTTP edge: turns a request's credentials into the
//! [`antler_auth::Actor`] every handler passes as `owner`.
//!
//! The [`authenticate`] middleware runs on every request (CORS preflights are answered before
//! it). Public routes (`/ok`, `/info`, `/openapi.json`, `/docs`, `/metrics` and the login-side
//! `/v1/auth/*` endpoints) pass without credentials; everything else needs them, according to
//! `auth.mode`:
//! - `none`: everyone is `default`;
//! - `api_key`: `x-api-key` (or `Authorization: Bearer <key>`);
//! - `local`: an `access_token` cookie or `Authorization: Bearer <jwt>` (API keys also work);
//!   a request authenticated by the cookie that changes state must carry the double-submit
//!   CSRF header (`X-CSRF-Token` equal to the `csrf_token` cookie);
//! - `trusted_header`: the configured user header, believed only with the shared-secret
//!   header.
//!
//! Failures are 401 `{"detail": {"code": ..., "message": ...}}` (DeerFlow's shape). Handlers
//! read the actor with the [`Caller`] extractor. Credentials are never logged.

use std::net::{IpAddr, SocketAddr};

use antler_auth::{Actor, AuthError, AuthMode};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::state::AppState;

/// Name of the session cookie (HttpOnly, SameSite=Lax).
pub const SESSION_COOKIE: &str = "access_token";
/// Name of the CSRF double-submit cookie (readable by scripts, SameSite=Strict).
pub const CSRF_COOKIE: &str = "csrf_token";
/// Header that must echo the CSRF cookie on state-changing cookie-authenticated requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Header the official SDKs send their API key in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Routes that need no credentials (relative to the API root).
const PUBLIC_EXACT: &[&str] = &[
    "/ok",
    "/info",
    "/openapi.json",
    "/docs",
    "/metrics",
    "/v1/auth/login/local",
    "/v1/auth/register",
    "/v1/auth/logout",
    "/v1/auth/setup-status",
    "/v1/auth/initialize",
    "/v1/auth/providers",
];

/// Cookie-authenticated POSTs exempt from the CSRF check (they set a fresh CSRF cookie, and
/// check the Origin instead).
const CSRF_EXEMPT: &[&str] = &[
    "/v1/auth/login/local",
    "/v1/auth/register",
    "/v1/auth/logout",
    "/v1/auth/initialize",
    "/v1/auth/me",
];

/// The path relative to the API root (`/api/threads` -> `/threads`).
pub fn api_path(path: &str) -> &str {
    match path.strip_prefix("/api") {
        Some("") => "/",
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    }
}

/// Whether `path` (full request path) is reachable without credentials.
pub fn is_public(path: &str) -> bool {
    let p = api_path(path).trim_end_matches('/');
    PUBLIC_EXACT.contains(&p)
}

/// An auth failure as a response: 401 (or 429, 403, 400, 409...) with
/// `{"detail": {"code", "message"}}`. Never contains a secret.
#[derive(Debug)]
pub struct AuthFailure(pub AuthError);

impl From<AuthError> for AuthFailure {
    fn from(e: AuthError) -> Self {
        Self(e)
    }
}

/// The HTTP status of an auth error.
pub fn auth_status(e: &AuthError) -> StatusCode {
    match e {
        AuthError::NotAuthenticated
        | AuthError::InvalidCredentials
        | AuthError::TokenExpired
        | AuthError::TokenInvalid
        | AuthError::TokenRevoked
        | AuthError::UserNotFound => StatusCode::UNAUTHORIZED,
        AuthError::LockedOut { .. } => StatusCode::TOO_MANY_REQUESTS,
        AuthError::RegistrationDisabled => StatusCode::FORBIDDEN,
        AuthError::EmailExists | AuthError::WeakPassword(_) | AuthError::InvalidInput(_) => {
            StatusCode::BAD_REQUEST
        }
        AuthError::AlreadyInitialized => StatusCode::CONFLICT,
        AuthError::NotFound | AuthError::Unsupported(_) => StatusCode::NOT_FOUND,
        AuthError::Storage(_) | AuthError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let status = auth_status(&self.0);
        if status == StatusCode::NOT_FOUND {
            return ApiError::not_found_plain().into_response();
        }
        if status.is_server_error() {
            tracing::error!(error = %self.0, "auth backend failure");
        }
        let body = json!({"detail": {"code": self.0.code(), "message": self.0.to_string()}});
        let mut resp = (status, axum::Json(body)).into_response();
        if let AuthError::LockedOut { retry_after } = self.0 {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The authenticated actor of a request, for handlers. Its rejection (no actor: the
/// middleware did not run) is a 401, never a silent default.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

impl Caller {
    /// The owner string every store / runtime call takes.
    pub fn owner(&self) -> &str {
        self.0.owner()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AuthFailure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .map(Caller)
            .ok_or(AuthFailure(AuthError::NotAuthenticated))
    }
}

/// The value of cookie `name`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = header_str(headers, header::AUTHORIZATION.as_str())?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn is_state_changing(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

fn csrf_failure(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// Checks the double-submit CSRF token (constant-time). `Err` is the 403.
fn check_csrf(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(header_token) = header_str(headers, CSRF_HEADER) else {
        return Err(csrf_failure(
            "CSRF token missing. Include X-CSRF-Token header.",
        ));
    };
    let Some(cookie_token) = cookie(headers, CSRF_COOKIE) else {
        return Err(csrf_failure(
            "CSRF token missing. Include X-CSRF-Token header.",
        ));
    };
    if bool::from(header_token.as_bytes().ct_eq(cookie_token.as_bytes())) {
        Ok(())
    } else {
        Err(csrf_failure("CSRF token mismatch."))
    }
}

/// Resolves the request's actor (see the module docs) and stores it in the request
/// extensions; answers 401 / 403 itself when it cannot.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let auth = state.auth.clone();
    let headers = req.headers();
    let actor: Result<Option<Actor>, Response> = match auth.mode() {
        AuthMode::None => Ok(Some(Actor::anonymous_default())),
        AuthMode::ApiKey => match header_str(headers, API_KEY_HEADER).or_else(|| bearer(headers)) {
            Some(key) => auth
                .authenticate_api_key(key)
                .await
                .map(Some)
                .map_err(|e| AuthFailure(e).into_response()),
            None => Ok(None),
        },
        AuthMode::TrustedHeader => {
            let cfg = auth.config();
            let user = header_str(headers, &cfg.trusted_header);
            let secret = header_str(headers, &cfg.trusted_secret_header);
            if user.is_none() && secret.is_none() {
                Ok(None)
            } else {
                auth.authenticate_trusted(user, secret)
                    .map(Some)
                    .map_err(|e| AuthFailure(e).into_response())
            }
        }
        AuthMode::Local => {
            if let Some(key) = header_str(headers, API_KEY_HEADER) {
                auth.authenticate_api_key(key)
                    .await
                    .map(Some)
                    .map_err(|e| AuthFailure(e).into_response())
            } else if let Some(token) = bearer(headers) {
                let r = if antler_auth::apikey::key_id(token).is_some() {
                    auth.authenticate_api_key(token).await
                } else {
                    auth.authenticate_session(token).await.map(|(a, _)| a)
                };
                r.map(Some).map_err(|e| AuthFailure(e).into_response())
            } else if let Some(token) = cookie(headers, SESSION_COOKIE) {
                match auth.authenticate_session(token).await {
                    Ok((actor, _)) => {
                        let exempt = CSRF_EXEMPT.contains(&api_path(&path).trim_end_matches('/'));
                        if is_state_changing(req.method()) && !exempt {
                            check_csrf(req.headers())
                                .map(|()| Some(actor))
                                .map_err(IntoResponse::into_response)
                        } else {
                            Ok(Some(actor))
                        }
                    }
                    // A stale cookie on a public route (e.g. logging in again) is no error.
                    Err(_) if is_public(&path) => Ok(None),
                    Err(e) => Err(AuthFailure(e).into_response()),
                }
            } else {
                Ok(None)
            }
        }
    };
    match actor {
        Ok(Some(actor)) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Ok(None) if is_public(&path) => next.run(req).await,
        Ok(None) => AuthFailure(AuthError::NotAuthenticated).into_response(),
        // Bad credentials on a public route: still serve it anonymously (health checks
        // behind a proxy that adds a stale header must not fail).
        Err(_) if is_public(&path) && !path.contains("/v1/auth/") => next.run(req).await,
        Err(resp) => resp,
    }
}

/// The client address used as the lockout key: the peer's IP, or `X-Real-IP` /
/// the first `X-Forwarded-For` entry when the peer is a configured trusted proxy.
pub fn client_key(state: &AppState, headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    let Some(peer) = peer else {
        return "unknown".to_owned();
    };
    let ip = peer.ip();
    let trusted = state
        .auth
        .config()
        .trusted_proxies
        .iter()
        .any(|p| p.parse::<IpAddr>().is_ok_and(|t| t == ip));
    if trusted {
        let forwarded = header_str(headers, "x-real-ip").or_else(|| {
            header_str(headers, "x-forwarded-for")
                .and_then(|v| v.split(',').next())
                .map(str::trim)
        });
        if let Some(f) = forwarded.and_then(|f| f.parse::<IpAddr>().ok()) {
            return f.to_string();
        }
    }
    ip.to_string()
}

/// The peer address, when the server was started with connect info.
pub fn peer_addr(parts_ext: &axum::http::Extensions) -> Option<SocketAddr> {
    parts_ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Keys whose values look like secrets (compared case-insensitively as substrings).
const SECRET_MARKERS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "token",
    "password",
    "passwd",
    "secret",
    "cookie",
    "credential",
    "private_key",
];

/// Whether a JSON key names a secret. Token *counts* (`max_tokens`, `total_tokens`...) are not
/// secrets: the `token` marker only counts when the key does not say `tokens`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_MARKERS
        .iter()
        .any(|m| k.contains(m) && !(*m == "token" && k.contains("tokens")))
}

/// Removes secret-looking keys of one JSON object (one level).
pub fn strip_secret_keys(map: &mut serde_json::Map<String, serde_json::Value>) {
    map.retain(|k, _| !is_secret_key(k));
}

/// Removes secret-looking keys from a stored `config` (its `configurable`), `context` and
/// `metadata` (assistants, threads): what is stored would be copied into run kwargs.
pub fn strip_stored_secrets(
    config: Option<&mut serde_json::Map<String, serde_json::Value>>,
    context: Option<&mut serde_json::Map<String, serde_json::Value>>,
    metadata: Option<&mut serde_json::Map<String, serde_json::Value>>,
) {
    if let Some(conf) = config
        .and_then(|c| c.get_mut("configurable"))
        .and_then(|c| c.as_object_mut())
    {
        strip_secret_keys(conf);
    }
    for m in [context, metadata].into_iter().flatten() {
        strip_secret_keys(m);
    }
}

/// Removes secret-looking keys from a run-create body's `config.configurable`,
/// `context` and `metadata` (one level deep), so they never reach run kwargs, the database
/// or logs. Token *counts* (`max_tokens` and the like) are kept.
pub fn strip_secrets(body: &mut serde_json::Value) {
    fn strip(map: &mut serde_json::Map<String, serde_json::Value>) {
        map.retain(|k, _| !is_secret_key(k));
    }
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    if let Some(cfg) = obj.get_mut("config").and_then(|c| c.as_object_mut())
        && let Some(conf) = cfg.get_mut("configurable").and_then(|c| c.as_object_mut())
    {
        strip(conf);
    }
    for key in ["context", "metadata"] {
        if let Some(m) = obj.get_mut(key).and_then(|c| c.as_object_mut()) {
            strip(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths() {
        for p in [
            "/ok",
            "/api/ok",
            "/info",
            "/openapi.json",
            "/api/v1/auth/login/local",
            "/docs",
            "/metrics",
        ] {
            assert!(is_public(p), "{p}");
        }
        for p in [
            "/threads",
            "/api/threads/x",
            "/api/v1/auth/me",
            "/okay",
            "/store/items",
        ] {
            assert!(!is_public(p), "{p}");
        }
    }

    #[test]
    fn cookies_and_bearer_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; access_token=abc; csrf_token=x"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(cookie(&h, "access_token"), Some("abc"));
        assert_eq!(cookie(&h, "csrf_token"), Some("x"));
        assert_eq!(cookie(&h, "nope"), None);
        assert_eq!(bearer(&h), Some("tok"));
        h.insert(CSRF_HEADER, HeaderValue::from_static("x"));
        assert!(check_csrf(&h).is_ok());
        h.insert(CSRF_HEADER, HeaderValue::from_static("y"));
        assert!(check_csrf(&h).is_err());
    }

    #[test]
    fn secrets_are_stripped_from_run_bodies() {
        let mut body = json!({
            "config": {"configurable": {"api_key": "k", "OPENAI_API_KEY": "k2", "access_token": "t",
                "thread_id": "x", "model": "m", "max_tokens": 5, "total_tokens": 7, "db_password": "p",
                "refresh_token": "r", "hf_token": "h"}},
            "context": {"secret": "s", "keep": 1},
            "metadata": {"Authorization": "Bearer x", "user": "u"},
        });
        strip_secrets(&mut body);
        assert_eq!(
            body,
            json!({
                "config": {"configurable": {"thread_id": "x", "model": "m", "max_tokens": 5, "total_tokens": 7}},
                "context": {"keep": 1},
                "metadata": {"user": "u"},
            })
        );
    }
}
