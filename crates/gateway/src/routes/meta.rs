//! System routes: `GET /ok`, `GET /info`, `GET /metrics` (Prometheus text) and
//! `GET /openapi.json` (the document of `crate::openapi`).

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

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
    Json(crate::openapi::document(&all_docs()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_page_escapes_and_lists_routes() {
        let page = docs_page(&[RouteDoc::new("GET", "/a/{id}", "x < y", "T")]);
        assert!(page.contains("/a/{id}"));
        assert!(page.contains("x &lt; y"));
    }
}
