//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the route tables
//! (`crate::routes::all_docs`): one operation per (path, method), its parameters, its request
//! body's schema and the responses it can give.

use serde_json::{Map, Value, json};

mod responses;

use crate::routes::RouteDoc;
use responses::{components, responses};

/// Builds an OpenAPI 3.1 document from route descriptions: one operation per (path, method),
/// path parameters taken from the `{name}` segments, a JSON request body for POST/PUT/PATCH,
/// and the error responses every route can give.
pub fn document(docs: &[RouteDoc]) -> Value {
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
        let public = crate::auth::is_public(doc.path);
        op.insert(
            "responses".into(),
            responses(doc, public, op.contains_key("requestBody")),
        );
        if !public {
            // `{}`: with `auth.mode: none` no credentials are needed.
            op.insert(
                "security".into(),
                json!([{}, {"ApiKeyAuth": []}, {"BearerAuth": []}, {"CookieAuth": []}]),
            );
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
        "servers": [
            {"url": "/", "description": "The API root (the LangGraph SDKs' default)"},
            {"url": "/api", "description": "The same routes under /api (DeerFlow's layout)"},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "CookieAuth": {"type": "apiKey", "in": "cookie", "name": "access_token"},
            },
            "schemas": components(),
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
        let doc = document(&docs);
        let ops = &doc["paths"]["/threads/{thread_id}"];
        assert_eq!(ops["get"]["parameters"][0]["name"], "thread_id");
        assert!(ops["delete"].is_object());
        assert_eq!(doc["openapi"], "3.1.0");
    }

    /// Every operation of the real route tables answers one success status, every error
    /// response is an `ErrorResponse`, and every `$ref` names a component.
    #[test]
    fn every_operation_documents_its_responses() {
        let doc = document(&crate::routes::all_docs());
        let components = &doc["components"]["schemas"];
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap()];
            assert!(components[name].is_object(), "unknown component {name}");
        }
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                let ok: Vec<_> = responses.keys().filter(|c| c.starts_with('2')).collect();
                assert_eq!(ok.len(), 1, "{method} {path}: {ok:?}");
                for (code, r) in responses.iter().filter(|(c, _)| !c.starts_with('2')) {
                    let schema = &r["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorResponse",
                        "{method} {path} {code}"
                    );
                }
            }
        }
        let delete = &doc["paths"]["/threads/{thread_id}"]["delete"]["responses"];
        assert!(delete["204"].is_object() && delete["204"].get("content").is_none());
        let stream = &doc["paths"]["/threads/{thread_id}/runs/stream"]["post"]["responses"]["200"];
        assert!(stream["content"]["text/event-stream"].is_object());
        assert!(delete["409"].is_null() && delete["401"].is_object());
    }

    #[test]
    fn known_bodies_have_schemas() {
        let docs = [RouteDoc::new("POST", "/threads/prune", "Prune", "Threads")];
        let doc = document(&docs);
        let schema = &doc["paths"]["/threads/prune"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(schema["required"], json!(["thread_ids"]));
        assert!(request_schema("GET", "/ok").is_none());
    }
}
