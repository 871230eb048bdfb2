//! System routes: `GET /ok`, `GET /info`, `GET /metrics` (Prometheus text) and
//! `GET /openapi.json` (an OpenAPI 3.1 document generated from the route tables in code).

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::routes::{RouteDoc, all_docs};
use crate::state::AppState;

/// The LangGraph API version whose wire format this server speaks.
pub const COMPAT_API_VERSION: &str = "0.16.7";

/// Routes documented in `/openapi.json`.
pub const DOCS: &[RouteDoc] = &[
    RouteDoc::new("GET", "/ok", "Health check", "System"),
    RouteDoc::new("GET", "/info", "Server information", "System"),
    RouteDoc::new("GET", "/metrics", "Prometheus metrics", "System"),
    RouteDoc::new("GET", "/openapi.json", "This OpenAPI document", "System"),
    RouteDoc::new("GET", "/docs", "Human-readable route list", "System"),
];

/// The system routes, relative to the API root.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ok", get(ok))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/docs", get(docs))
}

async fn ok() -> Json<Value> {
    Json(json!({"ok": true, "services": {}}))
}

async fn info(State(state): State<AppState>) -> Json<Value> {
    // The deployment: this replica, its backends, the queue depth and the live replicas.
    // A storage failure must not take `/info` down: it is reported inside.
    let replica = match state.runtime.replica_status().await {
        Ok(r) => serde_json::to_value(&r).unwrap_or(Value::Null),
        Err(e) => json!({"replica_id": state.runtime.worker_id(), "error": e.to_string()}),
    };
    Json(json!({
        "replica": replica,
        "version": COMPAT_API_VERSION,
        "langgraph_py_version": "1.2.22",
        "antler_version": env!("CARGO_PKG_VERSION"),
        "flags": {
            "assistants": true,
            "crons": false,
            "langsmith": false,
            "langsmith_tracing_replicas": false,
            "langsmith_tracing_session_on_runs": false,
        },
        "host": {
            "kind": "self-hosted",
            "project_id": null,
            "host_revision_id": null,
            "revision_id": null,
            "tenant_id": null,
        },
        "metadata": {
            "server": "antler",
            "graphs": state.graphs.ids(),
        },
    }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(state.runtime.counters()),
    )
}

async fn openapi() -> Json<Value> {
    Json(openapi_document(&all_docs()))
}

async fn docs() -> Html<String> {
    Html(docs_page(&all_docs()))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained HTML page listing every route (no external assets, so it works offline).
pub fn docs_page(docs: &[RouteDoc]) -> String {
    let mut rows = String::new();
    for d in docs {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>\n",
            html_escape(d.tag),
            html_escape(d.method),
            html_escape(d.path),
            html_escape(d.summary)
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Antler API</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 12px}}</style></head>\
         <body><h1>Antler API</h1><p>Every route is served at the root and under <code>/api</code>. \
         Machine-readable: <a href=\"openapi.json\">openapi.json</a>.</p>\
         <table><tr><th>Tag</th><th>Method</th><th>Path</th><th>Summary</th></tr>\n{rows}</table></body></html>"
    )
}

/// Builds an OpenAPI 3.1 document from route descriptions: one operation per (path, method),
/// path parameters taken from the `{name}` segments, a JSON request body for POST/PUT/PATCH,
/// and the error responses every route can give.
pub fn openapi_document(docs: &[RouteDoc]) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for doc in docs {
        let params: Vec<Value> = doc
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                json!({
                    "name": name,
                    "in": "path",
                    "required": true,
                    "schema": {"type": "string"},
                })
            })
            .collect();
        let method = doc.method.to_ascii_lowercase();
        let mut op = Map::new();
        op.insert("tags".into(), json!([doc.tag]));
        op.insert("summary".into(), json!(doc.summary));
        op.insert("operationId".into(), json!(operation_id(&method, doc.path)));
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if matches!(method.as_str(), "post" | "put" | "patch" | "delete") {
            let schema = request_schema(doc.method, doc.path);
            if schema.is_some() || method != "delete" {
                op.insert(
                    "requestBody".into(),
                    json!({"content": {"application/json": {"schema": schema.unwrap_or_else(|| json!({"type": "object"}))}}}),
                );
            }
        }
        op.insert(
            "responses".into(),
            json!({
                "200": {"description": "Success"},
                "404": {"description": "Not Found", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}},
                "422": {"description": "Validation Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}},
            }),
        );
        if !crate::auth::is_public(doc.path) {
            // `{}`: with `auth.mode: none` no credentials are needed.
            op.insert(
                "security".into(),
                json!([{}, {"ApiKeyAuth": []}, {"BearerAuth": []}, {"CookieAuth": []}]),
            );
            if let Some(Value::Object(responses)) = op.get_mut("responses") {
                responses.insert(
                    "401".into(),
                    json!({"description": "Missing or invalid credentials"}),
                );
            }
        }
        let entry = paths
            .entry(doc.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(ops) = entry {
            ops.insert(method, Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Antler (LangGraph Platform API)",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "CookieAuth": {"type": "apiKey", "in": "cookie", "name": "access_token"},
            },
            "schemas": {
                "ErrorResponse": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        }
    })
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

/// Request-body schemas of the routes whose bodies have fixed fields (the others get a plain
/// object). Field names and enums follow the LangGraph API.
pub fn request_schema(method: &str, path: &str) -> Option<Value> {
    let object = json!({"type": "object"});
    let string = json!({"type": "string"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let limit = json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 10});
    let offset = json!({"type": "integer", "minimum": 0, "default": 0});
    let order = json!({"type": "string", "enum": ["asc", "desc"]});
    let if_exists = json!({"type": "string", "enum": ["raise", "do_nothing"], "default": "raise"});
    let status = json!({"type": "string", "enum": ["idle", "busy", "interrupted", "error"]});
    let schema = match (method, path) {
        ("POST", "/assistants") => obj(
            json!({"assistant_id": {"type": "string", "format": "uuid"}, "graph_id": string, "config": object, "context": object, "metadata": object, "if_exists": if_exists, "name": string, "description": {"type": ["string", "null"]}}),
            &["graph_id"],
        ),
        ("PATCH", "/assistants/{assistant_id}") => obj(
            json!({"graph_id": string, "config": object, "context": object, "metadata": object, "name": string, "description": string}),
            &[],
        ),
        ("POST", "/assistants/search") => obj(
            json!({"metadata": object, "graph_id": string, "name": string, "limit": limit, "offset": offset, "sort_by": {"type": "string", "enum": ["assistant_id", "created_at", "updated_at", "name", "graph_id"]}, "sort_order": order, "select": strings}),
            &[],
        ),
        ("POST", "/assistants/count") => obj(
            json!({"metadata": object, "graph_id": string, "name": string}),
            &[],
        ),
        ("POST", "/assistants/{assistant_id}/versions") => obj(
            json!({"metadata": object, "limit": limit, "offset": offset}),
            &[],
        ),
        ("POST", "/assistants/{assistant_id}/latest") => {
            obj(json!({"version": {"type": "integer"}}), &["version"])
        }
        ("POST", "/threads") => obj(
            json!({"thread_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}, "metadata": object, "if_exists": if_exists, "ttl": object, "supersteps": {"type": "array", "items": obj(json!({"updates": {"type": "array", "items": obj(json!({"values": {}, "command": object, "as_node": string}), &["as_node"])}}), &["updates"])}}),
            &[],
        ),
        ("PATCH", "/threads/{thread_id}") => obj(json!({"metadata": object, "ttl": object}), &[]),
        ("POST", "/threads/search") => obj(
            json!({"ids": strings, "metadata": object, "values": object, "status": status, "limit": limit, "offset": offset, "sort_by": {"type": "string", "enum": ["thread_id", "status", "created_at", "updated_at", "state_updated_at"]}, "sort_order": order, "select": strings, "extract": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 10}}),
            &[],
        ),
        ("POST", "/threads/count") => obj(
            json!({"metadata": object, "values": object, "status": status}),
            &[],
        ),
        ("POST", "/threads/prune") => obj(
            json!({"thread_ids": strings, "strategy": {"type": "string", "enum": ["delete", "keep_latest"], "default": "delete"}}),
            &["thread_ids"],
        ),
        ("PUT", "/store/items") => obj(
            json!({"namespace": strings, "key": string, "value": object, "index": {}, "ttl": {"type": ["number", "null"]}}),
            &["namespace", "key", "value"],
        ),
        ("DELETE", "/store/items") => obj(json!({"namespace": strings, "key": string}), &["key"]),
        ("POST", "/store/items/search") => obj(
            json!({"namespace_prefix": strings, "filter": object, "limit": limit, "offset": offset, "query": {"type": ["string", "null"]}}),
            &[],
        ),
        ("POST", "/store/namespaces") => obj(
            json!({"prefix": strings, "suffix": strings, "max_depth": {"type": "integer", "minimum": 1}, "limit": {"type": "integer", "default": 100}, "offset": offset}),
            &[],
        ),
        _ => return None,
    };
    Some(schema)
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = String::from(method);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            seg.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .filter(|c| *c != '_' || !seg.starts_with('{')),
        );
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_route() {
        let docs = [
            RouteDoc::new("GET", "/threads/{thread_id}", "Get", "Threads"),
            RouteDoc::new("DELETE", "/threads/{thread_id}", "Delete", "Threads"),
        ];
        let doc = openapi_document(&docs);
        let ops = &doc["paths"]["/threads/{thread_id}"];
        assert_eq!(ops["get"]["parameters"][0]["name"], "thread_id");
        assert!(ops["delete"].is_object());
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[test]
    fn docs_page_escapes_and_lists_routes() {
        let page = docs_page(&[RouteDoc::new("GET", "/a/{id}", "x < y", "T")]);
        assert!(page.contains("/a/{id}"));
        assert!(page.contains("x &lt; y"));
    }

    #[test]
    fn known_bodies_have_schemas() {
        let docs = [RouteDoc::new("POST", "/threads/prune", "Prune", "Threads")];
        let doc = openapi_document(&docs);
        let schema = &doc["paths"]["/threads/prune"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(schema["required"], json!(["thread_ids"]));
        assert!(request_schema("GET", "/ok").is_none());
    }
}
