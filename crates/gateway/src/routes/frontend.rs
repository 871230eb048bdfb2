//! What DeerFlow's web frontend asks of its gateway beyond the LangGraph API and the run
//! journal: the feature gates every page reads, and the settings pages (skills, MCP tools,
//! channels, integrations), answered truthfully for what Antler has, in DeerFlow's shapes
//! (bytedance/deer-flow `backend/app/gateway/routers/*.py`), so every page renders.
//!
//! What Antler does not have is answered as DeerFlow answers when that feature is off:
//! `agents_api`, `browser_control` and `mcp_tasks` are disabled (the agents routes answer
//! DeerFlow's 403), no skills are installed, suggestions are off (and the suggestions route
//! answers an empty list, as DeerFlow's does when they are), no channel is configured, lark-cli
//! is not installed, input polishing and context compaction are disabled, no run's workspace
//! changes are recorded. MCP servers are
//! Antler's `mcp_servers:` config, shown with every secret masked; they change with the config
//! file, not over HTTP (a PATCH is a 409).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{
    ApiError, ApiResult, Json, LenientJson, Path, Query, de_flag, parse_run_id, validate_thread_id,
};
use crate::routes::RouteDoc;
use crate::routes::runs::rt_err;
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new("GET", "/features", "Feature gates of the UI", "Frontend"),
    RouteDoc::new("GET", "/skills", "Installed skills", "Frontend"),
    RouteDoc::new("GET", "/skills/{skill_name}", "One skill", "Frontend"),
    RouteDoc::new(
        "GET",
        "/suggestions/config",
        "Follow-up suggestions settings",
        "Frontend",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/suggestions",
        "Follow-up suggestions for a thread",
        "Frontend",
    ),
    RouteDoc::new(
        "GET",
        "/channels/providers",
        "IM channel providers",
        "Frontend",
    ),
    RouteDoc::new(
        "GET",
        "/channels/connections",
        "The caller's IM channel connections",
        "Frontend",
    ),
    RouteDoc::new(
        "GET",
        "/integrations/lark/status",
        "Lark integration status",
        "Frontend",
    ),
    RouteDoc::new(
        "GET",
        "/mcp/config",
        "MCP servers (secrets masked)",
        "Frontend",
    ),
    RouteDoc::new("PATCH", "/mcp/config", "Switch an MCP server", "Frontend"),
    RouteDoc::new("GET", "/agents", "Custom agents", "Frontend"),
    RouteDoc::new("POST", "/agents", "Create a custom agent", "Frontend"),
    RouteDoc::new(
        "GET",
        "/agents/check",
        "Whether an agent name is free",
        "Frontend",
    ),
    RouteDoc::new("GET", "/agents/{name}", "One custom agent", "Frontend"),
    RouteDoc::new("PUT", "/agents/{name}", "Update a custom agent", "Frontend"),
    RouteDoc::new(
        "DELETE",
        "/agents/{name}",
        "Delete a custom agent",
        "Frontend",
    ),
    RouteDoc::new("GET", "/user-profile", "The user profile", "Frontend"),
    RouteDoc::new("PUT", "/user-profile", "Set the user profile", "Frontend"),
    RouteDoc::new(
        "POST",
        "/input-polish",
        "Polish a draft message",
        "Frontend",
    ),
    RouteDoc::new(
        "POST",
        "/threads/{thread_id}/compact",
        "Compact a thread's context",
        "Frontend",
    ),
    RouteDoc::new(
        "GET",
        "/threads/{thread_id}/runs/{run_id}/workspace-changes",
        "Files a run changed in its workspace",
        "Frontend",
    ),
];

/// DeerFlow's 403 for every agents / user-profile route while `agents_api` is off.
pub const AGENTS_API_DISABLED: &str = "Custom-agent management API is disabled. Set agents_api.enabled=true to expose agent and user-profile routes over HTTP.";

/// The frontend routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/features", get(features))
        .route("/skills", get(skills))
        .route("/skills/{skill_name}", get(skill))
        .route("/suggestions/config", get(suggestions_config))
        .route("/threads/{thread_id}/suggestions", post(suggestions))
        .route("/channels/providers", get(channel_providers))
        .route("/channels/connections", get(channel_connections))
        .route("/integrations/lark/status", get(lark_status))
        .route("/mcp/config", get(mcp_config).patch(mcp_patch))
        .route("/agents", get(agents_disabled).post(agents_disabled))
        .route("/agents/check", get(agents_disabled))
        .route(
            "/agents/{name}",
            get(agents_disabled)
                .put(agents_disabled)
                .delete(agents_disabled),
        )
        .route("/user-profile", get(agents_disabled).put(agents_disabled))
        .route("/input-polish", post(input_polish))
        .route("/threads/{thread_id}/compact", post(compact))
        .route(
            "/threads/{thread_id}/runs/{run_id}/workspace-changes",
            get(workspace_changes),
        )
}

async fn features(_caller: Caller) -> Json<Value> {
    Json(json!({
        "agents_api": {"enabled": false},
        "browser_control": {"enabled": false},
        "mcp_tasks": {"enabled": false},
    }))
}

async fn skills(_caller: Caller) -> Json<Value> {
    Json(json!({"skills": []}))
}

async fn skill(_caller: Caller, Path(name): Path<String>) -> ApiError {
    let name = name.replace(['\r', '\n'], "");
    ApiError::not_found(format!("Skill '{name}' not found"))
}

async fn suggestions_config(_caller: Caller) -> Json<Value> {
    Json(json!({"enabled": false, "max_suggestions": 3}))
}

/// DeerFlow's `SuggestionsRequest`, validated as DeerFlow does (read only for that while
/// suggestions are off).
#[derive(Deserialize)]
#[allow(dead_code)]
struct SuggestionsBody {
    messages: Vec<SuggestionMessage>,
    #[serde(default = "three")]
    n: i64,
    #[serde(default)]
    model_name: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct SuggestionMessage {
    role: String,
    content: String,
}

fn three() -> i64 {
    3
}

/// Suggestions are off: an empty list (what DeerFlow answers then), after the checks.
async fn suggestions(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    Json(body): Json<SuggestionsBody>,
) -> ApiResult<Json<Value>> {
    validate_thread_id(&thread_id)?;
    if !(1..=5).contains(&body.n) {
        return Err(ApiError::unprocessable(format!(
            "n must be between 1 and 5, got {}",
            body.n
        )));
    }
    st.runtime
        .require_thread(caller.owner(), &thread_id)
        .await
        .map_err(rt_err)?;
    Ok(Json(json!({"suggestions": []})))
}

async fn channel_providers(_caller: Caller) -> Json<Value> {
    Json(json!({"enabled": false, "providers": []}))
}

async fn channel_connections(_caller: Caller) -> Json<Value> {
    Json(json!({"connections": []}))
}

/// lark-cli is not part of Antler: DeerFlow's status of a gateway without it.
async fn lark_status(_caller: Caller) -> Json<Value> {
    let missing = "lark-cli is not installed on the server";
    Json(json!({
        "installed": false,
        "version": "",
        "manifest_version": null,
        "latest_available_version": null,
        "runtime_version_mismatch": false,
        "app_configured": false,
        "app_id": null,
        "app_brand": null,
        "skills_expected": 0,
        "skills_installed": 0,
        "installed_skills": [],
        "enabled_skills": [],
        "install_path": "",
        "cli": {"available": false, "path": null, "version": null, "error": missing},
        "auth": {"status": "unavailable", "message": missing, "user": null, "verified": false},
        "sandbox_runtime_mode": "none",
        "sandbox_runtime_ready": false,
        "sandbox_runtime_detail": "The sandbox does not run lark-cli in this configuration.",
    }))
}

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.0.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Admin privileges required to manage MCP configuration.",
        ))
    }
}

async fn mcp_config(caller: Caller, State(st): State<AppState>) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    Ok(Json(json!({"mcp_servers": *st.mcp_servers})))
}

async fn mcp_patch(
    caller: Caller,
    LenientJson(_body): LenientJson<Value>,
) -> ApiResult<Json<Value>> {
    require_admin(&caller)?;
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "MCP servers are set by the config file (mcp_servers:), not over HTTP: change the file and restart the server",
    ))
}

async fn agents_disabled(_caller: Caller) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, AGENTS_API_DISABLED)
}

async fn input_polish(_caller: Caller, LenientJson(_body): LenientJson<Value>) -> ApiError {
    ApiError::not_found("Input polishing is disabled")
}

async fn compact(
    caller: Caller,
    State(st): State<AppState>,
    Path(thread_id): Path<String>,
    LenientJson(_body): LenientJson<Value>,
) -> ApiResult<Json<Value>> {
    validate_thread_id(&thread_id)?;
    st.runtime
        .require_thread(caller.owner(), &thread_id)
        .await
        .map_err(rt_err)?;
    Err(ApiError::conflict("Context compaction is disabled."))
}

#[derive(Deserialize)]
#[allow(dead_code)] // validated only: there is nothing to include
struct ChangesQuery {
    #[serde(default, deserialize_with = "de_flag")]
    include_files: Option<bool>,
    #[serde(default, deserialize_with = "de_flag")]
    include_diff: Option<bool>,
}

/// Antler does not record the files a run changes: DeerFlow's answer for a run without that
/// record (`available: false`), so the page shows no change badge.
async fn workspace_changes(
    caller: Caller,
    State(st): State<AppState>,
    Path((thread_id, run_id)): Path<(String, String)>,
    Query(_q): Query<ChangesQuery>,
) -> ApiResult<Json<Value>> {
    validate_thread_id(&thread_id)?;
    let run_id = parse_run_id(&run_id)?;
    st.runtime
        .get_run(caller.owner(), &thread_id, &run_id)
        .await
        .map_err(rt_err)?;
    Ok(Json(json!({
        "available": false,
        "version": 1,
        "summary": {"created": 0, "modified": 0, "deleted": 0, "symlink_created": 0,
                    "additions": 0, "deletions": 0, "truncated": false},
        "files": [],
        "limits": {},
    })))
}
