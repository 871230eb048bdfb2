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
use antler_runtime::{AssistantChanges, IfExists, NewAssistant};
use antler_store::{
    Assistant, AssistantSearch, AssistantSortBy, SortOrder, StoreError, VersionQuery,
};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Json, LenientJson, Path, Query, page};
use crate::routes::runs::rt_err;
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

/// Loads an assistant visible to the caller by UUID or graph name (422 / 404 `Not Found`
/// otherwise).
pub async fn load_assistant(state: &AppState, owner: &str, raw_id: &str) -> ApiResult<Assistant> {
    state
        .runtime
        .get_assistant(owner, raw_id)
        .await
        .map_err(rt_err)
}

fn graph_of<'a>(state: &'a AppState, assistant: &Assistant) -> ApiResult<&'a CompiledGraph> {
    state.graphs.get(&assistant.graph_id).ok_or_else(|| {
        ApiError::not_found(format!(
            "Graph '{}' of assistant {} is not registered",
            assistant.graph_id, assistant.assistant_id
        ))
    })
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
    let new = NewAssistant {
        assistant_id: body.assistant_id,
        graph_id: body.graph_id,
        config: body.config.unwrap_or_default(),
        context: body.context,
        metadata: body.metadata.unwrap_or_default(),
        name: body.name,
        description: body.description,
        if_exists: body.if_exists.unwrap_or_default(),
    };
    let created = state
        .runtime
        .create_assistant(owner, new)
        .await
        .map_err(rt_err)?;
    Ok(Json(created).into_response())
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
    let (items, total) = state
        .runtime
        .search_assistants(owner, &query)
        .await
        .map_err(rt_err)?;
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
    let total = state
        .runtime
        .count_assistants(owner, &query)
        .await
        .map_err(rt_err)?;
    Ok(Json(total))
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
    let changes = AssistantChanges {
        graph_id: body.graph_id,
        config: body.config,
        context: body.context,
        metadata: body.metadata,
        name: body.name,
        description: body.description,
    };
    let updated = state
        .runtime
        .update_assistant(owner, &assistant_id, changes)
        .await
        .map_err(rt_err)?;
    Ok(Json(updated))
}

async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(assistant_id): Path<String>,
) -> ApiResult<StatusCode> {
    let owner = caller.owner();
    state
        .runtime
        .delete_assistant(owner, &assistant_id)
        .await
        .map_err(rt_err)?;
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
    let query = VersionQuery {
        metadata: body.metadata.unwrap_or_default(),
        limit,
        offset,
    };
    let versions = state
        .runtime
        .assistant_versions(owner, &assistant_id, &query)
        .await
        .map_err(rt_err)?;
    Ok(Json(versions))
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
    let assistant = state
        .runtime
        .set_latest_assistant_version(owner, &assistant_id, body.version)
        .await
        .map_err(rt_err)?;
    Ok(Json(assistant))
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
