//! Account routes under `/v1/auth` (served at `/api/v1/auth/...` as DeerFlow's frontend
//! expects, and at the root), self-service API keys, and the explicit admin routes.
//!
//! DeerFlow-compatible (`local` mode): `POST /login/local` (form fields `username`,
//! `password`, `remember_me`), `POST /register`, `POST /initialize` (first admin),
//! `POST /logout`, `GET /me`, `POST /change-password`, `GET /setup-status`, `GET /providers`.
//! Logging in sets the HttpOnly `access_token` cookie (a signed JWT) and a fresh `csrf_token`
//! cookie. API keys: `GET|POST /v1/auth/api-keys`, `DELETE /v1/auth/api-keys/{key_id}` (a key
//! of someone else is 404). Admin only: `GET /v1/admin/users`, `GET|POST /v1/admin/api-keys`,
//! `DELETE /v1/admin/api-keys/{key_id}`: the only way an admin reaches other users' records.

use antler_auth::{Actor, ApiKey, AuthError, AuthMode, User};
use axum::Router;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{AuthFailure, CSRF_COOKIE, Caller, SESSION_COOKIE, client_key, peer_addr};
use crate::error::{ApiError, Path, parse_json_body};
use crate::routes::RouteDoc;
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new(
        "POST",
        "/v1/auth/login/local",
        "Log in (form fields)",
        "Auth",
    ),
    RouteDoc::new("POST", "/v1/auth/register", "Register a user", "Auth"),
    RouteDoc::new(
        "POST",
        "/v1/auth/initialize",
        "Create the first admin",
        "Auth",
    ),
    RouteDoc::new("POST", "/v1/auth/logout", "Log out (clear cookies)", "Auth"),
    RouteDoc::new("GET", "/v1/auth/me", "The current user", "Auth"),
    RouteDoc::new(
        "POST",
        "/v1/auth/change-password",
        "Change password",
        "Auth",
    ),
    RouteDoc::new(
        "GET",
        "/v1/auth/setup-status",
        "Whether setup is needed",
        "Auth",
    ),
    RouteDoc::new(
        "GET",
        "/v1/auth/providers",
        "External identity providers",
        "Auth",
    ),
    RouteDoc::new("GET", "/v1/auth/api-keys", "List my API keys", "Auth"),
    RouteDoc::new("POST", "/v1/auth/api-keys", "Create an API key", "Auth"),
    RouteDoc::new(
        "DELETE",
        "/v1/auth/api-keys/{key_id}",
        "Revoke my API key",
        "Auth",
    ),
    RouteDoc::new("GET", "/v1/admin/users", "List users (admin)", "Admin"),
    RouteDoc::new(
        "GET",
        "/v1/admin/api-keys",
        "List API keys (admin)",
        "Admin",
    ),
    RouteDoc::new(
        "POST",
        "/v1/admin/api-keys",
        "Create a key for a user (admin)",
        "Admin",
    ),
    RouteDoc::new(
        "DELETE",
        "/v1/admin/api-keys/{key_id}",
        "Revoke any key (admin)",
        "Admin",
    ),
];

/// The auth routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login/local", post(login))
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/initialize", post(initialize))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/me", get(me))
        .route("/v1/auth/change-password", post(change_password))
        .route("/v1/auth/setup-status", get(setup_status))
        .route("/v1/auth/providers", get(providers))
        .route("/v1/auth/api-keys", get(my_keys).post(create_my_key))
        .route("/v1/auth/api-keys/{key_id}", delete(revoke_my_key))
        .route("/v1/admin/users", get(admin_users))
        .route("/v1/admin/api-keys", get(admin_keys).post(admin_create_key))
        .route("/v1/admin/api-keys/{key_id}", delete(admin_revoke_key))
}

/// A failure of an account route: an auth error (`{"detail": {"code", "message"}}`) or a
/// plain API error (`{"detail": "..."}`).
#[derive(Debug)]
enum RouteError {
    Auth(AuthError),
    Api(ApiError),
}

impl From<AuthError> for RouteError {
    fn from(e: AuthError) -> Self {
        Self::Auth(e)
    }
}

impl From<ApiError> for RouteError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl IntoResponse for RouteError {
    fn into_response(self) -> Response {
        match self {
            Self::Auth(e) => AuthFailure(e).into_response(),
            Self::Api(e) => e.into_response(),
        }
    }
}

type AuthResult<T> = Result<T, RouteError>;

fn local_only(state: &AppState) -> AuthResult<()> {
    if state.auth.mode() == AuthMode::Local {
        Ok(())
    } else {
        Err(ApiError::not_found_plain().into())
    }
}

fn with_accounts(state: &AppState) -> AuthResult<()> {
    if state.auth.mode() == AuthMode::None {
        Err(ApiError::not_found_plain().into())
    } else {
        Ok(())
    }
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "system_role": u.role.as_str(),
        "needs_setup": false,
        "oauth_provider": null,
    })
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "user_id": k.user_id,
        "name": k.name,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    })
}

/// Login-side POSTs made by a browser must come from this server's own origin.
fn same_origin(headers: &HeaderMap) -> AuthResult<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "Cross-site auth request denied.").into())
    }
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn set_cookie(resp: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Adds the session + CSRF cookies to a response.
fn add_session_cookies(
    state: &AppState,
    headers: &HeaderMap,
    resp: &mut Response,
    token: &str,
    remember: bool,
) {
    let secure = if is_https(headers) { "; Secure" } else { "" };
    let max_age = if remember {
        format!("; Max-Age={}", state.auth.token_expiry().as_secs())
    } else {
        String::new()
    };
    set_cookie(
        resp,
        format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax{max_age}{secure}"),
    );
    let csrf = antler_auth::apikey::random_token(48);
    set_cookie(
        resp,
        format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict{max_age}{secure}"),
    );
}

fn parse_flag_value(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !matches!(
            s.to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        ),
        Some(_) => true,
    }
}

/// Form (`username=..&password=..`) or JSON body as a JSON object.
fn form_or_json(headers: &HeaderMap, body: &Bytes) -> AuthResult<serde_json::Map<String, Value>> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json || body.first() == Some(&b'{') {
        return Ok(parse_json_body::<serde_json::Map<String, Value>>(
            body, true,
        )?);
    }
    Ok(form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect())
}

fn field<'a>(map: &'a serde_json::Map<String, Value>, names: &[&str]) -> AuthResult<&'a str> {
    names
        .iter()
        .find_map(|n| map.get(*n).and_then(Value::as_str))
        .ok_or_else(|| ApiError::unprocessable(format!("Field required: '{}'", names[0])).into())
}

async fn login(
    State(state): State<AppState>,
    ext: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> AuthResult<Response> {
    local_only(&state)?;
    same_origin(&headers)?;
    let form = form_or_json(&headers, &body)?;
    let username = field(&form, &["username", "email"])?;
    let password = field(&form, &["password"])?;
    let remember = parse_flag_value(form.get("remember_me"));
    let client = client_key(&state, &headers, peer_addr(&ext));
    let (_, token) = state.auth.login(&client, username, password).await?;
    let mut resp = axum::Json(json!({
        "expires_in": state.auth.token_expiry().as_secs(),
        "needs_setup": false,
    }))
    .into_response();
    add_session_cookies(&state, &headers, &mut resp, &token, remember);
    Ok(resp)
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
    #[serde(default)]
    remember_me: Option<Value>,
}

async fn create_account(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    first_admin: bool,
) -> AuthResult<Response> {
    local_only(state)?;
    same_origin(headers)?;
    let creds: Credentials = parse_json_body(body, true)?;
    let user = if first_admin {
        state.auth.initialize(&creds.email, &creds.password).await
    } else {
        state.auth.register(&creds.email, &creds.password).await
    }?;
    let token = state.auth.issue_token(&user)?;
    let mut resp = (StatusCode::CREATED, axum::Json(user_json(&user))).into_response();
    add_session_cookies(
        state,
        headers,
        &mut resp,
        &token,
        parse_flag_value(creds.remember_me.as_ref()),
    );
    Ok(resp)
}

async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> AuthResult<Response> {
    create_account(&state, &headers, &body, false).await
}

async fn initialize(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> AuthResult<Response> {
    create_account(&state, &headers, &body, true).await
}

async fn logout(headers: HeaderMap) -> AuthResult<Response> {
    same_origin(&headers)?;
    let mut resp = axum::Json(json!({"message": "Successfully logged out"})).into_response();
    set_cookie(
        &mut resp,
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    set_cookie(
        &mut resp,
        format!("{CSRF_COOKIE}=; Path=/; SameSite=Strict; Max-Age=0"),
    );
    Ok(resp)
}

async fn me(State(state): State<AppState>, caller: Caller) -> AuthResult<Response> {
    let actor: &Actor = &caller.0;
    let user = match state.auth.mode() {
        AuthMode::Local | AuthMode::ApiKey => state.auth.store().get_user(actor.owner()).await?,
        _ => None,
    };
    let body = match user {
        Some(u) => user_json(&u),
        None => json!({
            "id": actor.owner(),
            "email": actor.owner(),
            "system_role": actor.role.as_str(),
            "needs_setup": false,
            "oauth_provider": null,
        }),
    };
    Ok(axum::Json(body).into_response())
}

#[derive(Deserialize)]
struct ChangePassword {
    current_password: String,
    new_password: String,
    #[serde(default)]
    new_email: Option<String>,
    #[serde(default)]
    remember_me: Option<Value>,
}

async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> AuthResult<Response> {
    local_only(&state)?;
    let req: ChangePassword = parse_json_body(&body, true)?;
    let (user, token) = state
        .auth
        .change_password(
            caller.owner(),
            &req.current_password,
            &req.new_password,
            req.new_email.as_deref(),
        )
        .await?;
    let mut resp = axum::Json(json!({
        "message": "Password changed successfully",
        "user": user_json(&user),
    }))
    .into_response();
    add_session_cookies(
        &state,
        &headers,
        &mut resp,
        &token,
        parse_flag_value(req.remember_me.as_ref()),
    );
    Ok(resp)
}

async fn setup_status(State(state): State<AppState>) -> AuthResult<Response> {
    let local = state.auth.mode() == AuthMode::Local;
    let needs_setup = local && state.auth.needs_setup().await?;
    Ok(axum::Json(json!({
        "needs_setup": needs_setup,
        "registration_enabled": local && state.auth.config().allow_registration,
        "mode": state.auth.mode().as_str(),
    }))
    .into_response())
}

async fn providers() -> Response {
    axum::Json(json!({"providers": []})).into_response()
}

#[derive(Deserialize, Default)]
struct NewKey {
    #[serde(default)]
    name: Option<String>,
    /// Admin route only: the user the key acts as.
    #[serde(default, alias = "user_id")]
    user: Option<String>,
}

fn created_key(rec: &ApiKey, key: &str) -> Response {
    let mut body = key_json(rec);
    if let Some(obj) = body.as_object_mut() {
        obj.insert("key".to_owned(), Value::String(key.to_owned()));
    }
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn my_keys(State(state): State<AppState>, caller: Caller) -> AuthResult<Response> {
    with_accounts(&state)?;
    let keys = state.auth.list_api_keys(Some(caller.owner())).await?;
    Ok(axum::Json(keys.iter().map(key_json).collect::<Vec<_>>()).into_response())
}

async fn create_my_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> AuthResult<Response> {
    with_accounts(&state)?;
    let req: NewKey = parse_json_body(&body, true)?;
    let (rec, key) = state
        .auth
        .create_api_key(caller.owner(), req.name.as_deref())
        .await?;
    Ok(created_key(&rec, &key))
}

async fn revoke_my_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> AuthResult<Response> {
    with_accounts(&state)?;
    state
        .auth
        .revoke_api_key(Some(caller.owner()), &key_id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn require_admin(state: &AppState, caller: &Caller) -> AuthResult<()> {
    with_accounts(state)?;
    if caller.0.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "Permission denied: admin").into())
    }
}

async fn admin_users(State(state): State<AppState>, caller: Caller) -> AuthResult<Response> {
    require_admin(&state, &caller)?;
    let users = state.auth.list_users().await?;
    Ok(axum::Json(users.iter().map(user_json).collect::<Vec<_>>()).into_response())
}

#[derive(Deserialize)]
struct KeyFilter {
    #[serde(default)]
    user_id: Option<String>,
}

async fn admin_keys(
    State(state): State<AppState>,
    caller: Caller,
    crate::error::Query(q): crate::error::Query<KeyFilter>,
) -> AuthResult<Response> {
    require_admin(&state, &caller)?;
    let keys = state.auth.list_api_keys(q.user_id.as_deref()).await?;
    Ok(axum::Json(keys.iter().map(key_json).collect::<Vec<_>>()).into_response())
}

async fn admin_create_key(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> AuthResult<Response> {
    require_admin(&state, &caller)?;
    let req: NewKey = parse_json_body(&body, true)?;
    let Some(user) = req.user.as_deref() else {
        return Err(ApiError::unprocessable("Field required: 'user'").into());
    };
    let user = state.auth.ensure_user(user).await?;
    let (rec, key) = state
        .auth
        .create_api_key(&user.id, req.name.as_deref())
        .await?;
    Ok(created_key(&rec, &key))
}

async fn admin_revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> AuthResult<Response> {
    require_admin(&state, &caller)?;
    state.auth.revoke_api_key(None, &key_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
