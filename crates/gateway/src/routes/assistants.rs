//! Assistant routes: search, count, get, graph, schemas, subgraphs, create, update (new
//! version), delete, versions, latest.
//!
//! Every `{assistant_id}` accepts either a UUID or a registered graph name (which stands for
//! that graph's system assistant) — the reference accepts names only on `/graph`; we accept
//! them everywhere, as ARCHITECTURE.md asks.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use antler_graph::CompiledGraph;
use antler_store::{
    Assistant, AssistantPatch, AssistantSearch, AssistantSortBy, SYSTEM_OWNER, SortOrder,
    StoreError, VersionQuery, system_assistant_id,
};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json, LenientJson, Path, Query, page};
use crate::routes::{RouteDoc, pagination_headers, project, to_values, validate_select};
use crate::state::AppState;

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new("POST", "/assistants", "Create an assistant", "Assistants"),
    RouteDoc::new(
        "POST",
        "/assistants/search",
        "Search assistants",
        "Assistants",
    ),
    RouteDoc::new(
        "POST",
        "/assistants/count",
        "Count assistants",
        "Assistants",
    ),
    RouteDoc::new(
        "GET",
        "/assistants/{assistant_id}",
        "Get an assistant",
        "Assistants",
    ),
    RouteDoc::new(
        "PATCH",
        "/assistants/{assistant_id}",
        "Update an assistant (new version)",
        "Assistants",
    ),
    RouteDoc::new(
        "DELETE",
        "/assistants/{assistant_id}",
        "Delete an assistant",
        "Assistants",
    ),
    RouteDoc::new(
        "GET",
        "/assistants/{assistant_id}/graph",
        "Drawable graph",
        "Assistants",
    ),
    RouteDoc::new(
        "GET",
        "/assistants/{assistant_id}/schemas",
        "JSON schemas of the graph",
        "Assistants",
    ),
    RouteDoc::new(
        "GET",
        "/assistants/{assistant_id}/subgraphs",
        "Subgraph schemas",
        "Assistants",
    ),
    RouteDoc::new(
        "GET",
        "/assistants/{assistant_id}/subgraphs/{namespace}",
        "Subgraph schemas of one namespace",
        "Assistants",
    ),
    RouteDoc::new(
        "POST",
        "/assistants/{assistant_id}/versions",
        "List versions",
        "Assistants",
    ),
    RouteDoc::new(
        "POST",
        "/assistants/{assistant_id}/latest",
        "Set the current version",
        "Assistants",
    ),
];

/// The assistant routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/assistants", post(create))
        .route("/assistants/search", post(search))
        .route("/assistants/count", post(count))
        .route(
            "/assistants/{assistant_id}",
            get(get_one).patch(patch).delete(delete),
        )
        .route("/assistants/{assistant_id}/graph", get(graph))
        .route("/assistants/{assistant_id}/schemas", get(schemas))
        .route("/assistants/{assistant_id}/subgraphs", get(subgraphs))
        .route(
            "/assistants/{assistant_id}/subgraphs/{namespace}",
            get(subgraphs_ns),
        )
        .route("/assistants/{assistant_id}/versions", post(versions))
        .route("/assistants/{assistant_id}/latest", post(set_latest))
}

/// Resolves a path/body assistant id: a UUID (canonicalized) or a registered graph name
/// (its system assistant's id).
pub fn resolve_assistant_id(state: &AppState, raw: &str) -> ApiResult<String> {
    if let Ok(id) = uuid::Uuid::parse_str(raw) {
        return Ok(id.hyphenated().to_string());
    }
    if state.graphs.contains(raw) {
        return Ok(system_assistant_id(raw));
    }
    Err(ApiError::unprocessable(
        "Invalid assistant ID: must be a UUID or the name of a registered graph",
    ))
}

/// Loads an assistant visible to the caller (404 `Not Found` otherwise).
pub async fn load_assistant(state: &AppState, owner: &str, raw_id: &str) -> ApiResult<Assistant> {
    let id = resolve_assistant_id(state, raw_id)?;
    state
        .stores
        .assistants
        .get(owner, &id)
        .await?
        .ok_or_else(ApiError::not_found_plain)
}

/// Users may read the graphs' system assistants but not change them (they belong to the
/// server, and every user sees them): 403 with a hint instead of a misleading 404.
fn ensure_writable(assistant: &Assistant) -> ApiResult<()> {
    if assistant.owner == SYSTEM_OWNER {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "Assistant {} is the system assistant of graph '{}' and cannot be modified; create your own with POST /assistants",
                assistant.assistant_id, assistant.graph_id
            ),
        ))
    } else {
        Ok(())
    }
}

fn graph_of<'a>(state: &'a AppState, assistant: &Assistant) -> ApiResult<&'a CompiledGraph> {
    state.graphs.get(&assistant.graph_id).ok_or_else(|| {
        ApiError::not_found(format!(
            "Graph '{}' of assistant {} is not registered",
            assistant.graph_id, assistant.assistant_id
        ))
    })
}

fn unknown_graph(state: &AppState, graph_id: &str) -> ApiError {
    let expected: Vec<String> = state
        .graphs
        .sorted_ids()
        .into_iter()
        .map(|g| format!("'{g}'"))
        .collect();
    ApiError::not_found(format!(
        "Graph '{graph_id}' not found. Expected one of: [{}]",
        expected.join(", ")
    ))
}

pub(crate) fn parse_sort_order(raw: Option<&str>) -> ApiResult<SortOrder> {
    match raw {
        None => Ok(SortOrder::Desc),
        Some(s) => s.to_ascii_lowercase().parse().map_err(|_| {
            ApiError::unprocessable(format!(
                "Invalid value for 'sort_order': '{s}' (expected 'asc' or 'desc')"
            ))
        }),
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
enum IfExists {
    #[default]
    Raise,
    DoNothing,
}

#[derive(Debug, Deserialize)]
struct CreateBody {
    #[serde(default)]
    assistant_id: Option<String>,
    graph_id: String,
    #[serde(default)]
    config: Option<Map<String, Value>>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    if_exists: Option<IfExists>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

fn context_from_config(config: &Map<String, Value>) -> Value {
    match config.get("configurable") {
        Some(Value::Object(c)) => Value::Object(c.clone()),
        _ => Value::Object(Map::new()),
    }
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Json(mut body): Json<CreateBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    crate::auth::strip_stored_secrets(
        body.config.as_mut(),
        body.context.as_mut(),
        body.metadata.as_mut(),
    );
    if !state.graphs.contains(&body.graph_id) {
        return Err(unknown_graph(&state, &body.graph_id));
    }
    let assistant_id = match body.assistant_id.as_deref() {
        Some(raw) => uuid::Uuid::parse_str(raw)
            .map(|u| u.hyphenated().to_string())
            .map_err(|_| ApiError::unprocessable("Invalid assistant ID: must be a UUID"))?,
        None => uuid::Uuid::new_v4().to_string(),
    };
    let if_exists = body.if_exists.unwrap_or_default();
    if body.assistant_id.is_some()
        && let Some(existing) = state.stores.assistants.get(owner, &assistant_id).await?
    {
        return match if_exists {
            IfExists::DoNothing => Ok(Json(existing).into_response()),
            IfExists::Raise => Err(ApiError::conflict(format!(
                "Assistant {assistant_id} already exists"
            ))),
        };
    }
    let config = body.config.unwrap_or_default();
    let mut assistant = Assistant::new(
        assistant_id.clone(),
        body.graph_id,
        body.name.unwrap_or_else(|| "Untitled".to_owned()),
    );
    assistant.context = match body.context {
        Some(ctx) => Value::Object(ctx),
        None => context_from_config(&config),
    };
    assistant.config = Value::Object(config);
    assistant.metadata = body.metadata.unwrap_or_default();
    assistant.description = body.description;
    match state.stores.assistants.create(owner, assistant).await {
        Ok(created) => Ok(Json(created).into_response()),
        Err(StoreError::Conflict(_)) => match if_exists {
            IfExists::DoNothing => {
                let existing = state
                    .stores
                    .assistants
                    .get(owner, &assistant_id)
                    .await?
                    .ok_or_else(|| {
                        ApiError::conflict(format!("Assistant {assistant_id} already exists"))
                    })?;
                Ok(Json(existing).into_response())
            }
            IfExists::Raise => Err(ApiError::conflict(format!(
                "Assistant {assistant_id} already exists"
            ))),
        },
        Err(other) => Err(other.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct SearchBody {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    graph_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    sort_by: Option<String>,
    #[serde(default)]
    sort_order: Option<String>,
    #[serde(default)]
    select: Option<Vec<String>>,
}

fn assistant_search(body: &SearchBody) -> ApiResult<AssistantSearch> {
    let (limit, offset) = page(body.limit, body.offset, 10)?;
    let sort_by = match body.sort_by.as_deref() {
        None => AssistantSortBy::default(),
        Some(s) => s
            .parse()
            .map_err(|e: StoreError| ApiError::unprocessable(e.to_string()))?,
    };
    Ok(AssistantSearch {
        graph_id: body.graph_id.clone(),
        name: body.name.clone(),
        metadata: body.metadata.clone().unwrap_or_default(),
        limit,
        offset,
        sort_by,
        sort_order: parse_sort_order(body.sort_order.as_deref())?,
    })
}

/// Fields `select` may name on assistant searches.
const ASSISTANT_FIELDS: &[&str] = &[
    "assistant_id",
    "graph_id",
    "name",
    "description",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
];

async fn search(
    caller: Caller,
    State(state): State<AppState>,
    LenientJson(body): LenientJson<SearchBody>,
) -> ApiResult<Response> {
    let owner = caller.owner();
    validate_select(body.select.as_deref(), ASSISTANT_FIELDS)?;
    let query = assistant_search(&body)?;
    let (items, total) = state.stores.assistants.search(owner, &query).await?;
    let headers = pagination_headers(total, query.offset, items.len());
    let items = project(to_values(&items)?, body.select.as_deref());
    Ok((headers, Json(items)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct CountBody {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    graph_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

async fn count(
    caller: Caller,
    State(state): State<AppState>,
    LenientJson(body): LenientJson<CountBody>,
) -> ApiResult<Json<u64>> {
    let owner = caller.owner();
    let query = AssistantSearch {
        graph_id: body.graph_id,
        name: body.name,
        metadata: body.metadata.unwrap_or_default(),
        ..AssistantSearch::default()
    };
    Ok(Json(state.stores.assistants.count(owner, &query).await?))
}

async fn get_one(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
) -> ApiResult<Json<Assistant>> {
    let owner = caller.owner();
    load_assistant(&state, owner, &assistant_id).await.map(Json)
}

#[derive(Debug, Default, Deserialize)]
struct PatchBody {
    #[serde(default)]
    graph_id: Option<String>,
    #[serde(default)]
    config: Option<Map<String, Value>>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

async fn patch(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
    LenientJson(mut body): LenientJson<PatchBody>,
) -> ApiResult<Json<Assistant>> {
    let owner = caller.owner();
    crate::auth::strip_stored_secrets(
        body.config.as_mut(),
        body.context.as_mut(),
        body.metadata.as_mut(),
    );
    let current = load_assistant(&state, owner, &assistant_id).await?;
    ensure_writable(&current)?;
    if let Some(graph_id) = &body.graph_id
        && !state.graphs.contains(graph_id)
    {
        return Err(unknown_graph(&state, graph_id));
    }
    let context = match (body.context, &body.config) {
        (Some(ctx), _) => Some(Value::Object(ctx)),
        (None, Some(config)) if config.contains_key("configurable") => {
            Some(context_from_config(config))
        }
        _ => None,
    };
    let patch = AssistantPatch {
        graph_id: body.graph_id,
        config: body.config.map(Value::Object),
        context,
        metadata: body.metadata,
        name: body.name,
        description: body.description,
    };
    let updated = state
        .stores
        .assistants
        .update(owner, &current.assistant_id, patch)
        .await?;
    Ok(Json(updated))
}

async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
) -> ApiResult<StatusCode> {
    let owner = caller.owner();
    let assistant = load_assistant(&state, owner, &assistant_id).await?;
    ensure_writable(&assistant)?;
    state
        .stores
        .assistants
        .delete(owner, &assistant.assistant_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
struct GraphQuery {
    #[serde(default)]
    xray: Option<String>,
}

fn parse_xray(raw: Option<&str>) -> ApiResult<bool> {
    let Some(raw) = raw else { return Ok(false) };
    if let Some(flag) = crate::error::parse_flag(raw) {
        return Ok(flag);
    }
    raw.trim()
        .parse::<i64>()
        .map(|depth| depth > 0)
        .map_err(|_| {
            ApiError::unprocessable(format!(
                "Invalid query parameter 'xray': expected a boolean or an integer, got '{raw}'"
            ))
        })
}

async fn graph(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
    Query(q): Query<GraphQuery>,
) -> ApiResult<Json<Value>> {
    let owner = caller.owner();
    let xray = parse_xray(q.xray.as_deref())?;
    let assistant = load_assistant(&state, owner, &assistant_id).await?;
    let graph = graph_of(&state, &assistant)?;
    Ok(Json(graph.drawable(xray)))
}

fn title_case(key: &str) -> String {
    key.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn message_schema() -> Value {
    json!({
        "title": "Message",
        "description": "A LangChain message (type human/ai/system/tool/...), or {role, content}.",
        "type": "object",
        "additionalProperties": true,
        "properties": {
            "content": {
                "title": "Content",
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object", "additionalProperties": true}]}}
                ]
            },
            "type": {"title": "Type", "type": "string", "enum": ["human", "ai", "system", "tool", "function", "chat", "remove", "AIMessageChunk", "HumanMessageChunk"]},
            "role": {"title": "Role", "type": "string"},
            "id": {"title": "Id", "anyOf": [{"type": "string"}, {"type": "null"}], "default": null},
            "name": {"title": "Name", "anyOf": [{"type": "string"}, {"type": "null"}], "default": null},
            "additional_kwargs": {"title": "Additional Kwargs", "type": "object", "additionalProperties": true},
            "response_metadata": {"title": "Response Metadata", "type": "object", "additionalProperties": true},
            "tool_calls": {"title": "Tool Calls", "type": "array", "items": {"type": "object", "additionalProperties": true}},
            "tool_call_id": {"title": "Tool Call Id", "type": "string"}
        },
        "required": ["content"]
    })
}

/// A JSON schema for a graph's state: one property per state key; `messages` is a list of
/// LangChain messages, other keys accept any JSON.
pub fn state_schema(graph_id: &str, keys: &[String]) -> Value {
    let mut props = Map::new();
    for key in keys {
        let schema = if key == "messages" {
            json!({"title": "Messages", "type": "array", "items": {"$ref": "#/$defs/Message"}})
        } else {
            json!({"title": title_case(key)})
        };
        props.insert(key.clone(), schema);
    }
    json!({
        "title": graph_id,
        "type": "object",
        "properties": props,
        "$defs": {"Message": message_schema()},
    })
}

fn open_object_schema(title: &str) -> Value {
    json!({"title": title, "type": "object", "properties": {}, "additionalProperties": true})
}

fn graph_schemas(graph_id: &str, graph: &CompiledGraph) -> Map<String, Value> {
    let keys = graph.state_keys();
    let state = state_schema(graph_id, &keys);
    let mut out = Map::new();
    out.insert("input_schema".into(), state.clone());
    out.insert("output_schema".into(), state.clone());
    out.insert("state_schema".into(), state);
    out.insert("config_schema".into(), open_object_schema("Configurable"));
    out.insert("context_schema".into(), open_object_schema("Context"));
    out
}

async fn schemas(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
) -> ApiResult<Json<Value>> {
    let owner = caller.owner();
    let assistant = load_assistant(&state, owner, &assistant_id).await?;
    let graph = graph_of(&state, &assistant)?;
    let mut out = Map::new();
    out.insert("graph_id".into(), json!(assistant.graph_id));
    out.extend(graph_schemas(&assistant.graph_id, graph));
    Ok(Json(Value::Object(out)))
}

#[derive(Debug, Default, Deserialize)]
struct SubgraphQuery {
    #[serde(default, deserialize_with = "crate::error::de_flag")]
    recurse: Option<bool>,
}

fn collect_subgraphs(
    prefix: Option<&str>,
    graph: &CompiledGraph,
    recurse: bool,
    out: &mut Vec<(String, CompiledGraph)>,
) {
    for (name, sub) in graph.subgraphs() {
        let ns = match prefix {
            Some(p) => format!("{p}|{name}"),
            None => name,
        };
        if recurse {
            collect_subgraphs(Some(&ns), &sub, true, out);
        }
        out.push((ns, sub));
    }
}

async fn subgraphs_impl(
    state: &AppState,
    owner: &str,
    assistant_id: &str,
    namespace: Option<&str>,
    recurse: bool,
) -> ApiResult<Json<Value>> {
    let assistant = load_assistant(state, owner, assistant_id).await?;
    let graph = graph_of(state, &assistant)?;
    let mut found = Vec::new();
    collect_subgraphs(None, graph, recurse, &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Map::new();
    for (ns, sub) in found {
        if namespace.is_some_and(|want| want != ns) {
            continue;
        }
        let name = sub.name().to_owned();
        out.insert(ns, Value::Object(graph_schemas(&name, &sub)));
    }
    Ok(Json(Value::Object(out)))
}

async fn subgraphs(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
    Query(q): Query<SubgraphQuery>,
) -> ApiResult<Json<Value>> {
    let owner = caller.owner();
    subgraphs_impl(
        &state,
        owner,
        &assistant_id,
        None,
        q.recurse.unwrap_or(false),
    )
    .await
}

async fn subgraphs_ns(
    caller: Caller,
    State(state): State<AppState>,
    Path((assistant_id, namespace)): Path<(String, String)>,
    Query(q): Query<SubgraphQuery>,
) -> ApiResult<Json<Value>> {
    let owner = caller.owner();
    subgraphs_impl(
        &state,
        owner,
        &assistant_id,
        Some(&namespace),
        q.recurse.unwrap_or(false),
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
struct VersionsBody {
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

async fn versions(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
    LenientJson(body): LenientJson<VersionsBody>,
) -> ApiResult<Json<Vec<antler_store::AssistantVersion>>> {
    let owner = caller.owner();
    let (limit, offset) = page(body.limit, body.offset, 10)?;
    let assistant = load_assistant(&state, owner, &assistant_id).await?;
    let query = VersionQuery {
        metadata: body.metadata.unwrap_or_default(),
        limit,
        offset,
    };
    Ok(Json(
        state
            .stores
            .assistants
            .versions(owner, &assistant.assistant_id, &query)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
struct LatestBody {
    version: i64,
}

async fn set_latest(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
    Json(body): Json<LatestBody>,
) -> ApiResult<Json<Assistant>> {
    let owner = caller.owner();
    let assistant = load_assistant(&state, owner, &assistant_id).await?;
    ensure_writable(&assistant)?;
    Ok(Json(
        state
            .stores
            .assistants
            .set_latest(owner, &assistant.assistant_id, body.version)
            .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_messages_array() {
        let s = state_schema("echo", &["messages".to_owned(), "title".to_owned()]);
        assert_eq!(s["properties"]["messages"]["type"], "array");
        assert_eq!(s["properties"]["title"]["title"], "Title");
    }

    #[test]
    fn xray_accepts_flags_and_depths() {
        assert!(!parse_xray(None).unwrap());
        assert!(parse_xray(Some("true")).unwrap());
        assert!(parse_xray(Some("2")).unwrap());
        assert!(!parse_xray(Some("0")).unwrap());
        assert!(parse_xray(Some("maybe")).is_err());
    }
}
