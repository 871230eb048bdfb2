//! The responses of every operation: what it answers on success (status, content type and
//! body schema) and which error statuses it can give, plus the component schemas they name.
//! Every error body is `ErrorResponse`. Schemathesis (`tests/python/test_fuzz.py`) checks the
//! server against these: a status or a body not described here is a test failure.

use serde_json::{Map, Value, json};

use crate::routes::RouteDoc;

/// What an operation answers when it succeeds.
enum Answer {
    /// A JSON body with this status and schema.
    Json(u16, Value),
    /// No body.
    Empty(u16),
    /// `text/event-stream`.
    Sse,
    /// A text body of this content type.
    Text(&'static str),
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn array_of(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn object() -> Value {
    json!({"type": "object"})
}

/// The success answer of `method path` (paths relative to the API root).
fn answer(method: &str, path: &str) -> Answer {
    use Answer::{Empty, Json, Sse, Text};
    let any = json!({});
    let count = json!({"type": "integer", "minimum": 0});
    let success = json!({"type": "object", "properties": {"success": {"type": "boolean"}}});
    match (method, path) {
        ("GET", "/ok") => Json(
            200,
            json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}),
        ),
        ("GET", "/metrics") => Text("text/plain"),
        ("GET", "/docs") => Text("text/html"),
        ("POST", "/assistants/search") => Json(200, array_of(schema_ref("AssistantFields"))),
        ("POST", "/assistants/{assistant_id}/versions") => {
            Json(200, array_of(schema_ref("AssistantVersion")))
        }
        ("POST", "/assistants/count" | "/threads/count") => Json(200, count),
        ("POST", "/assistants" | "/assistants/{assistant_id}/latest")
        | ("GET" | "PATCH", "/assistants/{assistant_id}") => Json(200, schema_ref("Assistant")),
        ("POST", "/threads/search") => Json(200, array_of(schema_ref("ThreadFields"))),
        ("POST", "/threads/prune") => Json(
            200,
            json!({"type": "object", "properties": {"pruned_count": count}, "required": ["pruned_count"]}),
        ),
        ("POST", "/threads" | "/threads/{thread_id}/copy")
        | ("GET" | "PATCH", "/threads/{thread_id}") => Json(200, schema_ref("Thread")),
        ("GET", "/threads/{thread_id}/state" | "/threads/{thread_id}/state/{checkpoint_id}")
        | ("POST", "/threads/{thread_id}/state/checkpoint") => Json(200, schema_ref("ThreadState")),
        ("POST", "/threads/{thread_id}/state") => Json(
            200,
            json!({"type": "object", "properties": {"checkpoint": object()}, "required": ["checkpoint"]}),
        ),
        (_, "/threads/{thread_id}/history") => Json(200, array_of(schema_ref("ThreadState"))),
        ("POST", "/threads/{thread_id}/runs" | "/runs")
        | ("GET", "/threads/{thread_id}/runs/{run_id}") => Json(200, schema_ref("Run")),
        ("GET", "/threads/{thread_id}/runs") => Json(200, array_of(schema_ref("RunFields"))),
        ("POST", "/runs/batch") => Json(200, array_of(schema_ref("Run"))),
        (_, p) if p.ends_with("/stream") => Sse,
        ("POST", "/threads/{thread_id}/runs/wait" | "/runs/wait")
        | ("GET", "/threads/{thread_id}/runs/{run_id}/join") => Json(200, any),
        ("POST", "/threads/{thread_id}/runs/{run_id}/cancel") => Json(202, object()),
        ("GET", "/threads/{thread_id}/messages" | "/threads/{thread_id}/runs/{run_id}/events") => {
            Json(200, array_of(schema_ref("RunEvent")))
        }
        ("GET", "/threads/{thread_id}/runs/{run_id}/messages") => Json(
            200,
            json!({"type": "object", "properties": {"data": array_of(schema_ref("RunEvent")), "has_more": {"type": "boolean"}}, "required": ["data", "has_more"]}),
        ),
        ("GET", "/threads/{thread_id}/messages/page") => Json(
            200,
            json!({"type": "object", "properties": {"data": array_of(schema_ref("RunEvent")), "has_more": {"type": "boolean"}, "next_before_seq": {"type": ["integer", "null"]}}, "required": ["data", "has_more", "next_before_seq"]}),
        ),
        ("POST" | "PUT", "/threads/{thread_id}/runs/{run_id}/feedback") => {
            Json(200, schema_ref("Feedback"))
        }
        ("GET", "/threads/{thread_id}/runs/{run_id}/feedback") => {
            Json(200, array_of(schema_ref("Feedback")))
        }
        ("DELETE", p) if p.contains("/feedback") => Json(200, success),
        ("PUT", "/store/items") | ("DELETE", _) => Empty(204),
        ("GET", "/store/items") => Json(200, schema_ref("Item")),
        ("POST", "/store/items/search") => Json(
            200,
            json!({"type": "object", "properties": {"items": array_of(schema_ref("SearchItem"))}, "required": ["items"]}),
        ),
        ("POST", "/store/namespaces") => Json(
            200,
            json!({"type": "object", "properties": {"namespaces": array_of(array_of(json!({"type": "string"})))}, "required": ["namespaces"]}),
        ),
        ("POST", "/v1/auth/register" | "/v1/auth/initialize") => Json(201, schema_ref("User")),
        ("POST", "/v1/auth/api-keys" | "/v1/admin/api-keys") => Json(201, object()),
        ("GET", "/v1/auth/me") => Json(200, schema_ref("User")),
        ("GET", "/v1/admin/users") => Json(200, array_of(schema_ref("User"))),
        ("GET", "/v1/auth/api-keys" | "/v1/admin/api-keys") => {
            Json(200, array_of(schema_ref("ApiKey")))
        }
        _ => Json(200, object()),
    }
}

/// Error statuses `method path` can give beyond those of every operation (404, 422 and 503 —
/// storage unavailable or shutting down — on every operation outside System; 401 and 403 when
/// it needs credentials, 401 on the login side's public routes; 400 and 413 when it takes a
/// body).
fn extra_errors(method: &str, path: &str) -> &'static [u16] {
    match (method, path) {
        ("POST", "/assistants" | "/threads") => &[409],
        ("DELETE", "/assistants/{assistant_id}") => &[409],
        ("POST", "/threads/{thread_id}/state") => &[409],
        // run creates: a multitask `reject`, and `runs.max_pending_runs`
        ("POST", p) if p.starts_with("/threads/{thread_id}/runs") && !p.contains("{run_id}") => {
            &[409, 429]
        }
        ("POST", "/runs" | "/runs/stream" | "/runs/wait" | "/runs/batch") => &[429],
        ("POST", "/threads/{thread_id}/runs/{run_id}/cancel")
        | ("DELETE", "/threads/{thread_id}/runs/{run_id}") => &[409],
        ("POST", "/v1/auth/login/local") => &[401, 403, 429],
        ("POST", "/v1/auth/register" | "/v1/auth/initialize") => &[403, 409],
        ("POST", "/v1/auth/change-password") => &[409],
        ("POST", "/threads/{thread_id}/compact") => &[409],
        ("PATCH", "/mcp/config") => &[409],
        _ => &[],
    }
}

/// The `responses` object of one operation.
pub(super) fn responses(doc: &RouteDoc, public: bool, has_body: bool) -> Value {
    let mut out = Map::new();
    let (status, content) = match answer(doc.method, doc.path) {
        Answer::Json(status, schema) => (status, json!({"application/json": {"schema": schema}})),
        Answer::Empty(status) => (status, Value::Null),
        Answer::Sse => (
            200,
            json!({"text/event-stream": {"schema": {"type": "string"}}}),
        ),
        Answer::Text(kind) => (200, json!({kind: {"schema": {"type": "string"}}})),
    };
    let mut ok = json!({"description": "Success"});
    if !content.is_null() {
        ok["content"] = content;
    }
    out.insert(status.to_string(), ok);
    let mut errors: Vec<u16> = extra_errors(doc.method, doc.path).to_vec();
    if doc.tag != "System" {
        errors.extend([404, 422, 503]);
    }
    if !public {
        errors.extend([401, 403]);
    } else if doc.path.starts_with("/v1/auth/") {
        // The login side refuses credentials that do not authenticate, even where none are needed.
        errors.push(401);
    }
    if has_body {
        errors.extend([400, 413]);
    }
    errors.sort_unstable();
    errors.dedup();
    for code in errors {
        out.insert(
            code.to_string(),
            json!({
                "description": error_description(code),
                "content": {"application/json": {"schema": schema_ref("ErrorResponse")}},
            }),
        );
    }
    Value::Object(out)
}

fn error_description(code: u16) -> &'static str {
    match code {
        400 => "Bad request",
        401 => "Missing or invalid credentials",
        403 => "Forbidden",
        404 => "Not found",
        409 => "Conflict with the resource's current state",
        413 => "Request body too large",
        422 => "Validation error",
        429 => "Too many requests",
        503 => "Storage unavailable or server shutting down",
        _ => "Error",
    }
}

/// `{"type": "object", ...}` with `props`, requiring `required`, and its `...Fields` twin with
/// nothing required (what a search with `select` answers).
fn record(props: Value, required: &[&str]) -> (Value, Value) {
    let full = json!({"type": "object", "properties": props, "required": required});
    let fields = json!({"type": "object", "properties": props});
    (full, fields)
}

/// The component schemas the responses name.
pub(super) fn components() -> Value {
    let string = json!({"type": "string"});
    let nullable_string = json!({"type": ["string", "null"]});
    let obj = object();
    let any = json!({});
    let (assistant, assistant_fields) = record(
        json!({"assistant_id": string, "graph_id": string, "config": obj, "context": obj, "metadata": obj, "name": string, "description": nullable_string, "version": {"type": "integer"}, "created_at": string, "updated_at": string}),
        &[
            "assistant_id",
            "graph_id",
            "config",
            "metadata",
            "name",
            "version",
            "created_at",
            "updated_at",
        ],
    );
    let mut version = assistant.clone();
    version["required"] = json!([
        "assistant_id",
        "graph_id",
        "config",
        "metadata",
        "name",
        "version",
        "created_at"
    ]);
    let (thread, thread_fields) = record(
        json!({"thread_id": string, "created_at": string, "updated_at": string, "state_updated_at": string, "metadata": obj, "status": {"type": "string", "enum": ["idle", "busy", "interrupted", "error"]}, "config": obj, "values": any, "interrupts": any}),
        &[
            "thread_id",
            "created_at",
            "updated_at",
            "metadata",
            "status",
        ],
    );
    let (run, run_fields) = record(
        json!({"run_id": string, "thread_id": string, "assistant_id": string, "created_at": string, "updated_at": string, "status": {"type": "string", "enum": ["pending", "running", "error", "success", "timeout", "interrupted"]}, "metadata": obj, "kwargs": obj, "multitask_strategy": nullable_string}),
        &[
            "run_id",
            "thread_id",
            "assistant_id",
            "created_at",
            "updated_at",
            "status",
            "metadata",
            "kwargs",
        ],
    );
    let checkpoint = json!({"type": "object", "properties": {"checkpoint_id": string, "thread_id": string, "checkpoint_ns": string}});
    let (state, _) = record(
        json!({"values": any, "next": array_of(string.clone()), "tasks": array_of(obj.clone()), "metadata": any, "created_at": nullable_string, "checkpoint": {"anyOf": [checkpoint.clone(), {"type": "null"}]}, "parent_checkpoint": {"anyOf": [checkpoint, {"type": "null"}]}, "interrupts": any}),
        &[
            "values",
            "next",
            "tasks",
            "checkpoint",
            "metadata",
            "created_at",
        ],
    );
    let item_props = json!({"namespace": array_of(string.clone()), "key": string, "value": obj, "created_at": string, "updated_at": string});
    let (item, _) = record(
        item_props.clone(),
        &["namespace", "key", "value", "created_at", "updated_at"],
    );
    let mut search_props = item_props;
    search_props["score"] = json!({"type": ["number", "null"]});
    let (search_item, _) = record(
        search_props,
        &["namespace", "key", "value", "created_at", "updated_at"],
    );
    let (event, _) = record(
        json!({"thread_id": string, "run_id": string, "seq": {"type": "integer"}, "event_type": string, "category": string, "content": any, "metadata": obj, "created_at": string}),
        &[
            "thread_id",
            "run_id",
            "seq",
            "event_type",
            "category",
            "content",
            "metadata",
            "created_at",
        ],
    );
    let (feedback, _) = record(
        json!({"feedback_id": string, "run_id": string, "thread_id": string, "rating": {"type": "integer"}, "comment": nullable_string, "created_at": string}),
        &["feedback_id", "run_id", "rating"],
    );
    let (user, _) = record(
        json!({"id": string, "email": string, "system_role": string, "needs_setup": {"type": "boolean"}, "oauth_provider": nullable_string}),
        &["id", "email", "system_role"],
    );
    let (api_key, _) = record(
        json!({"id": string, "user_id": string, "name": nullable_string, "created_at": string, "revoked_at": nullable_string}),
        &["id", "user_id", "created_at"],
    );
    let detail = json!({"anyOf": [string, {"type": "object", "properties": {"code": string, "message": string}}]});
    json!({
        "ErrorResponse": {"type": "object", "properties": {"detail": detail}, "required": ["detail"]},
        "Assistant": assistant, "AssistantFields": assistant_fields, "AssistantVersion": version,
        "Thread": thread, "ThreadFields": thread_fields,
        "Run": run, "RunFields": run_fields,
        "ThreadState": state,
        "Item": item, "SearchItem": search_item,
        "RunEvent": event,
        "Feedback": feedback,
        "User": user, "ApiKey": api_key,
    })
}
