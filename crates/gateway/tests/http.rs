//! End-to-end tests of the gateway's own routes over real HTTP: meta, CORS, errors,
//! assistants, threads and the store. Every test boots its own server on 127.0.0.1:0.

mod common;

use common::{TestApp, json_of};
use reqwest::Method;
use serde_json::{Value, json};

const ECHO_ID: &str = "046b5dc7-2108-582c-9c6c-31d556d138f0";
const PARENT_ID: &str = "0b226d00-e4ec-5b58-8e33-88f4bd4debe7";

// ------------------------------------------------------------------ meta

#[tokio::test]
async fn ok_info_at_root_and_under_api() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    for prefix in ["", "/api"] {
        let (status, body) = json_of(app.get(&format!("{prefix}/ok")).await?).await?;
        assert_eq!(status, 200);
        assert_eq!(body["ok"], json!(true));
        let (status, body) = json_of(app.get(&format!("{prefix}/info")).await?).await?;
        assert_eq!(status, 200);
        assert!(body["version"].is_string());
        assert_eq!(body["flags"]["assistants"], json!(true));
    }
    Ok(())
}

#[tokio::test]
async fn metrics_count_requests_by_route() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    app.get("/ok").await?;
    app.get("/api/ok").await?;
    let resp = app.get("/metrics").await?;
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = resp.text().await?;
    assert!(
        text.contains(r#"antler_http_requests_total{method="GET",route="/ok",status="200"} 2"#),
        "{text}"
    );
    assert!(text.contains("antler_runs_running 0"), "{text}");
    Ok(())
}

#[tokio::test]
async fn openapi_lists_every_documented_route_and_each_is_served() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (status, doc) = json_of(app.get("/openapi.json").await?).await?;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let docs = antler_gateway::routes::all_docs();
    assert!(docs.len() >= 25);
    for route in &docs {
        let method = route.method.to_ascii_lowercase();
        assert!(
            doc["paths"][route.path][&method].is_object(),
            "{} {} missing from openapi.json",
            route.method,
            route.path
        );
        // Every documented route must be served: anything but the 404/405 of the router.
        let path = route
            .path
            .replace("{thread_id}", "00000000-0000-4000-8000-0000000000ff")
            .replace("{run_id}", "00000000-0000-4000-8000-0000000000ff")
            .replace("{checkpoint_id}", "1f1e5fb4-d4c7-6c78-8001-000000000000")
            .replace("{assistant_id}", ECHO_ID)
            .replace("{namespace}", "child");
        let method = Method::from_bytes(route.method.as_bytes())?;
        let resp = app
            .client
            .request(method, app.url(&path))
            .body("{}")
            .send()
            .await?;
        let status = resp.status().as_u16();
        // The metrics middleware labels a request with the route template it matched, so a
        // documented route that the router does not serve shows up as "unmatched" or 405.
        assert_ne!(
            status, 405,
            "{} {path} is documented but not served",
            route.method
        );
        assert!(
            app.state
                .metrics
                .request_count(route.method, route.path, status)
                >= 1,
            "{} {path} is documented but not routed ({status})",
            route.method
        );
        assert!(status < 500, "{} {path} gave {status}", route.method);
    }
    Ok(())
}

// ------------------------------------------------------------------ CORS, 404, 405

#[tokio::test]
async fn cors_preflight_matches_reference() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    for path in ["/threads/search", "/api/threads/search", "/no/such/route"] {
        let resp = app
            .client
            .request(Method::OPTIONS, app.url(path))
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-api-key")
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 200);
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(
            h["access-control-allow-methods"],
            "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, QUERY"
        );
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["access-control-allow-headers"], "content-type,x-api-key");
        assert_eq!(h["access-control-allow-private-network"], "true");
        assert!(
            h["vary"]
                .to_str()?
                .starts_with("Origin, Access-Control-Request-Method")
        );
    }
    Ok(())
}

#[tokio::test]
async fn cors_simple_request_exposes_location_headers() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let resp = app
        .client
        .post(app.url("/assistants/count"))
        .header("origin", "http://localhost:3000")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["access-control-allow-origin"], "*");
    let expose = h["access-control-expose-headers"].to_str()?;
    for name in [
        "x-pagination-total",
        "x-pagination-next",
        "content-location",
        "location",
    ] {
        assert!(expose.contains(name), "{expose}");
    }
    assert_eq!(h["vary"], "Origin");
    assert_eq!(resp.text().await?, "6");

    // Without Origin: no CORS headers, still vary: Origin.
    let resp = app.get("/ok").await?;
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(resp.headers()["vary"], "Origin");
    Ok(())
}

#[tokio::test]
async fn unknown_route_is_json_404_and_wrong_method_is_json_405() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    for path in ["/nope", "/api/nope", "/api"] {
        let resp = app.get(path).await?;
        assert_eq!(
            resp.headers()["content-type"].to_str()?,
            "application/json",
            "{path}"
        );
        let (status, body) = json_of(resp).await?;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body, json!({"detail": "Not Found"}));
    }
    for path in ["/threads/search", "/api/threads/search"] {
        let resp = app.send_raw(Method::PUT, path, b"{}").await?;
        assert_eq!(resp.headers()["allow"], "POST");
        let (status, body) = json_of(resp).await?;
        assert_eq!(status, 405);
        assert_eq!(body, json!({"detail": "Method Not Allowed"}));
    }
    Ok(())
}

// ------------------------------------------------------------------ bad input

#[tokio::test]
async fn bad_json_wrong_types_and_ids_are_422() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (status, body) = json_of(
        app.send_raw(Method::POST, "/threads/search", b"{\"limit\":")
            .await?,
    )
    .await?;
    assert_eq!(
        (status, body),
        (422, json!({"detail": "Invalid JSON in request body"}))
    );

    let (status, body) = json_of(
        app.send_raw(Method::POST, "/threads/search", br#"{"limit":"ten"}"#)
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("limit"),
        "{body}"
    );

    // Unknown fields are ignored.
    let (status, _) = json_of(
        app.send_raw(
            Method::POST,
            "/threads/search",
            br#"{"limit":1,"bogus_field":1}"#,
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 200);

    // Empty body on POST /threads: 422 like the reference.
    let resp = app.client.post(app.url("/threads")).send().await?;
    let (status, body) = json_of(resp).await?;
    assert_eq!(
        (status, body),
        (422, json!({"detail": "Invalid JSON in request body"}))
    );

    // JSON sent as form-urlencoded (curl's default) is accepted.
    let resp = app
        .client
        .post(app.url("/threads/count"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("{}")
        .send()
        .await?;
    assert_eq!(json_of(resp).await?, (200, json!(0)));

    // Out of range paging.
    for body in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"offset": -1}),
    ] {
        let (status, _) = json_of(app.post_json("/threads/search", body).await?).await?;
        assert_eq!(status, 422);
    }

    // Bad ids.
    let (status, body) = json_of(app.get("/threads/bad%20id").await?).await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Invalid thread ID")
    );
    let (status, _) = json_of(app.get(&format!("/threads/{}", "x".repeat(65))).await?).await?;
    assert_eq!(status, 422);
    let (status, body) = json_of(app.get("/assistants/nope").await?).await?;
    assert_eq!(status, 422);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Invalid assistant ID")
    );
    Ok(())
}

#[tokio::test]
async fn garbage_never_produces_a_5xx() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let bodies: [&'static [u8]; 12] = [
        b"",
        b"null",
        b"[]",
        b"42",
        b"\"str\"",
        b"\xff\xfe\x00",
        br#"{"limit":-5,"offset":"x"}"#,
        br#"{"metadata":"x","values":[1],"status":"bogus","ids":[1]}"#,
        br#"{"thread_id":"a/b","graph_id":7,"namespace":"x","key":1,"value":[]}"#,
        br#"{"thread_ids":"x","strategy":"nuke","select":["a"],"sort_by":"bogus"}"#,
        br#"{"namespace":[""],"key":"","value":{},"sort_order":"sideways","version":"1"}"#,
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    ];
    let ids = [
        "00000000-0000-4000-8000-0000000000ff",
        "not-a-uuid",
        "%00",
        "echo",
        "a.b",
        "%FF",
    ];
    for route in antler_gateway::routes::all_docs() {
        let method = Method::from_bytes(route.method.as_bytes())?;
        for id in ids {
            let path = route
                .path
                .replace("{thread_id}", id)
                .replace("{run_id}", id)
                .replace("{checkpoint_id}", id)
                .replace("{assistant_id}", id)
                .replace("{namespace}", id);
            for body in bodies {
                let resp = app
                    .client
                    .request(
                        method.clone(),
                        app.url(&format!(
                            "{path}?limit=x&xray=maybe&recurse=2&namespace=..&key="
                        )),
                    )
                    .body(body)
                    .send()
                    .await?;
                let status = resp.status().as_u16();
                assert!(
                    status < 500,
                    "{} {path} with {:?} gave {status}",
                    route.method,
                    String::from_utf8_lossy(body)
                );
            }
        }
    }
    // An oversized body is a JSON 413, not a crash.
    let big = vec![b' '; antler_gateway::DEFAULT_MAX_BODY_BYTES + 1];
    let resp = app
        .client
        .post(app.url("/threads/search"))
        .body(big)
        .send()
        .await?;
    let (status, body) = json_of(resp).await?;
    assert_eq!(status, 413);
    assert!(body["detail"].is_string());
    // The server is still healthy.
    assert_eq!(app.get("/ok").await?.status().as_u16(), 200);
    Ok(())
}

/// `server.max_body_mb`: a body past the limit is a JSON 413 on every route and writes
/// nothing; JSON nested deeper than the parser's limit (128) is a 422 before any handler.
#[tokio::test]
async fn oversized_and_too_deep_bodies_are_refused_and_write_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(|s| s.with_max_body_bytes(4096)).await?;
    let padding = "x".repeat(5000);
    for path in ["/threads", "/api/threads", "/threads/search", "/runs/wait"] {
        let body = json!({"metadata": {"pad": padding}, "namespace": ["a"], "key": "k", "value": {"pad": padding}, "assistant_id": "echo"});
        let resp = app.post_json(path, body).await?;
        let (status, body) = json_of(resp).await?;
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(body["detail"], json!("Request body too large"), "{path}");
    }
    let item = json!({"namespace": ["a"], "key": "k", "value": {"pad": padding}});
    let resp = app
        .client
        .put(app.url("/store/items"))
        .json(&item)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 413);
    let fits = json!({"metadata": {"pad": "x".repeat(3000)}});
    assert_eq!(
        app.post_json("/threads", fits).await?.status().as_u16(),
        200
    );
    let mut deep = json!("x");
    for _ in 0..200 {
        deep = json!([deep]);
    }
    let (status, body) = json_of(
        app.post_json("/threads", json!({"metadata": {"deep": deep}}))
            .await?,
    )
    .await?;
    assert_eq!(
        (status, body["detail"].clone()),
        (422, json!("Invalid JSON in request body"))
    );
    let (_, count) = json_of(app.post_json("/threads/count", json!({})).await?).await?;
    assert_eq!(count, json!(1), "only the body that fits made a thread");
    let (_, items) = json_of(app.post_json("/store/items/search", json!({})).await?).await?;
    assert_eq!(items["items"], json!([]));
    Ok(())
}

// ------------------------------------------------------------------ assistants

#[tokio::test]
async fn assistants_search_count_get_graph() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (status, count) = json_of(app.post_json("/assistants/count", json!({})).await?).await?;
    assert_eq!((status, count), (200, json!(6)));

    let resp = app
        .post_json("/assistants/search", json!({"limit": 2, "offset": 0}))
        .await?;
    assert_eq!(resp.headers()["x-pagination-total"], "6");
    assert_eq!(resp.headers()["x-pagination-next"], "2");
    let (status, page) = json_of(resp).await?;
    assert_eq!(status, 200);
    assert_eq!(page.as_array().map(Vec::len), Some(2));

    let resp = app
        .post_json("/api/assistants/search", json!({"graph_id": "echo"}))
        .await?;
    assert_eq!(resp.headers()["x-pagination-total"], "1");
    assert!(resp.headers().get("x-pagination-next").is_none());
    let (_, page) = json_of(resp).await?;
    assert_eq!(page[0]["assistant_id"], json!(ECHO_ID));
    assert_eq!(page[0]["metadata"], json!({"created_by": "system"}));
    assert_eq!(page[0]["version"], json!(1));

    let resp = app
        .post_json(
            "/assistants/search",
            json!({"limit": 1, "select": ["assistant_id", "name"]}),
        )
        .await?;
    let (_, page) = json_of(resp).await?;
    let keys: Vec<&String> = page[0]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["assistant_id", "name"]);

    // Get by uuid and by graph name give the same assistant.
    let (status, by_id) = json_of(app.get(&format!("/assistants/{ECHO_ID}")).await?).await?;
    assert_eq!(status, 200);
    let (status, by_name) = json_of(app.get("/assistants/echo").await?).await?;
    assert_eq!(status, 200);
    assert_eq!(by_id, by_name);
    assert_eq!(
        by_id
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>()),
        Some(
            [
                "assistant_id",
                "graph_id",
                "config",
                "context",
                "metadata",
                "name",
                "created_at",
                "updated_at",
                "version",
                "description"
            ]
            .map(String::from)
            .to_vec()
        )
    );

    let (status, graph) = json_of(app.get(&format!("/assistants/{ECHO_ID}/graph")).await?).await?;
    assert_eq!(status, 200);
    assert_eq!(
        graph,
        json!({"nodes":[{"id":"__start__","type":"runnable","data":{"name":"__start__"}},{"id":"echo","type":"runnable","data":{"name":"echo"}},{"id":"__end__"}],"edges":[{"source":"__start__","target":"echo"},{"source":"echo","target":"__end__"}]})
    );
    let (status, graph) = json_of(app.get("/assistants/parent/graph?xray=true").await?).await?;
    assert_eq!(status, 200);
    assert!(graph["nodes"].is_array());

    let (status, unknown) = json_of(
        app.get("/assistants/00000000-0000-4000-8000-0000000000ff")
            .await?,
    )
    .await?;
    assert_eq!((status, unknown), (404, json!({"detail": "Not Found"})));
    Ok(())
}

#[tokio::test]
async fn assistants_schemas_and_subgraphs() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (status, schemas) = json_of(app.get("/assistants/echo/schemas").await?).await?;
    assert_eq!(status, 200);
    assert_eq!(schemas["graph_id"], json!("echo"));
    for key in [
        "input_schema",
        "output_schema",
        "state_schema",
        "config_schema",
        "context_schema",
    ] {
        assert!(schemas[key].is_object(), "{key}");
    }
    assert_eq!(
        schemas["state_schema"]["properties"]["messages"]["type"],
        json!("array")
    );
    assert!(schemas["state_schema"]["properties"]["title"].is_object());

    let (status, subs) = json_of(
        app.get(&format!("/assistants/{PARENT_ID}/subgraphs"))
            .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert!(subs["child"]["input_schema"].is_object(), "{subs}");
    let (status, subs) =
        json_of(app.get("/assistants/parent/subgraphs?recurse=true").await?).await?;
    assert_eq!(status, 200);
    assert!(subs["child"].is_object());
    let (status, subs) = json_of(app.get("/assistants/parent/subgraphs/child").await?).await?;
    assert_eq!(status, 200);
    assert_eq!(subs.as_object().map(|m| m.len()), Some(1));
    let (status, subs) = json_of(app.get("/assistants/parent/subgraphs/nope").await?).await?;
    assert_eq!((status, subs), (200, json!({})));
    let (status, subs) = json_of(app.get("/assistants/echo/subgraphs").await?).await?;
    assert_eq!((status, subs), (200, json!({})));
    Ok(())
}

#[tokio::test]
async fn assistants_create_patch_versions_latest_delete() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (status, created) = json_of(
        app.post_json(
            "/assistants",
            json!({"graph_id":"slow","name":"slow-fast","config":{"configurable":{"delay":0.05}},"metadata":{"k":"v"}}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(created["context"], json!({"delay": 0.05}));
    assert_eq!(created["version"], json!(1));
    assert_eq!(created["description"], Value::Null);
    let id = created["assistant_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let (status, patched) = json_of(
        app.client
            .patch(app.url(&format!("/assistants/{id}")))
            .json(&json!({"metadata":{"k":"v2"},"description":"patched"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(patched["version"], json!(2));
    assert_eq!(patched["metadata"]["k"], json!("v2"));
    assert_eq!(patched["description"], json!("patched"));

    let (status, versions) = json_of(
        app.post_json(&format!("/assistants/{id}/versions"), json!({}))
            .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(versions[0]["version"], json!(2));
    assert_eq!(versions[1]["version"], json!(1));
    assert!(versions[0].get("updated_at").is_none());

    let (status, latest) = json_of(
        app.post_json(&format!("/assistants/{id}/latest"), json!({"version": 1}))
            .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(latest["version"], json!(1));
    assert_eq!(latest["metadata"], json!({"k": "v"}));

    let (status, same) = json_of(
        app.post_json(
            "/assistants",
            json!({"assistant_id": id, "graph_id": "slow", "if_exists": "do_nothing"}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(same["assistant_id"], json!(id));

    let (status, body) = json_of(
        app.post_json(
            "/assistants",
            json!({"assistant_id": id, "graph_id": "slow"}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 409);
    assert_eq!(
        body["detail"],
        json!(format!("Assistant {id} already exists"))
    );

    let (status, body) = json_of(
        app.post_json("/assistants", json!({"graph_id": "nope"}))
            .await?,
    )
    .await?;
    assert_eq!(status, 404);
    assert_eq!(
        body["detail"],
        json!(
            "Graph 'nope' not found. Expected one of: ['chat', 'echo', 'fail', 'interrupt', 'parent', 'slow']"
        )
    );
    let (status, _) = json_of(app.post_json("/assistants", json!({})).await?).await?;
    assert_eq!(status, 422);
    let (status, _) = json_of(
        app.post_json(
            "/assistants",
            json!({"graph_id": "echo", "if_exists": "bogus"}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 422);

    let (status, count) = json_of(
        app.post_json("/assistants/count", json!({"graph_id": "slow"}))
            .await?,
    )
    .await?;
    assert_eq!((status, count), (200, json!(2)));

    let resp = app
        .client
        .delete(app.url(&format!("/api/assistants/{id}")))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 204);
    let (status, body) = json_of(app.get(&format!("/assistants/{id}")).await?).await?;
    assert_eq!((status, body), (404, json!({"detail": "Not Found"})));
    Ok(())
}

// ------------------------------------------------------------------ threads

async fn create_thread(app: &TestApp, body: Value) -> anyhow::Result<Value> {
    let (status, thread) = json_of(app.post_json("/threads", body).await?).await?;
    anyhow::ensure!(status == 200, "create thread gave {status}: {thread}");
    Ok(thread)
}

#[tokio::test]
async fn threads_create_get_patch_conflict() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let t = create_thread(&app, json!({})).await?;
    let keys: Vec<String> = t
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "thread_id",
            "created_at",
            "updated_at",
            "state_updated_at",
            "metadata",
            "status",
            "config",
            "values"
        ]
    );
    assert_eq!(t["status"], json!("idle"));
    assert_eq!(t["values"], Value::Null);
    let tid = t["thread_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&tid)?.get_version_num(), 7);

    let fixed = "00000000-0000-4000-8000-000000000001";
    let t2 = create_thread(
        &app,
        json!({"thread_id": fixed, "metadata": {"owner": "alice"}}),
    )
    .await?;
    assert_eq!(t2["metadata"], json!({"owner": "alice"}));
    let (status, body) = json_of(
        app.post_json("/threads", json!({"thread_id": fixed}))
            .await?,
    )
    .await?;
    assert_eq!(status, 409);
    assert_eq!(
        body["detail"],
        json!(format!("Thread with ID {fixed} already exists"))
    );
    let again = create_thread(&app, json!({"thread_id": fixed, "if_exists": "do_nothing"})).await?;
    assert_eq!(again, t2);

    // Non-UUID ids of the allowed alphabet work.
    let named = create_thread(&app, json!({"thread_id": "my_thread-1"})).await?;
    assert_eq!(named["thread_id"], json!("my_thread-1"));
    let (status, _) = json_of(
        app.post_json("/threads", json!({"thread_id": "a b"}))
            .await?,
    )
    .await?;
    assert_eq!(status, 422);

    let (status, got) = json_of(app.get(&format!("/api/threads/{tid}")).await?).await?;
    assert_eq!((status, &got), (200, &t));

    let (status, patched) = json_of(
        app.client
            .patch(app.url(&format!("/threads/{tid}")))
            .json(&json!({"metadata": {"title": "renamed", "n": 1}}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(patched["metadata"], json!({"title": "renamed", "n": 1}));
    let (_, patched) = json_of(
        app.client
            .patch(app.url(&format!("/threads/{tid}")))
            .json(&json!({"metadata": {"n": 2}}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(patched["metadata"], json!({"title": "renamed", "n": 2}));
    assert_ne!(patched["updated_at"], t["updated_at"]);

    let missing = "00000000-0000-4000-8000-0000000000ff";
    let (status, body) = json_of(app.get(&format!("/threads/{missing}")).await?).await?;
    assert_eq!(status, 404);
    assert_eq!(
        body["detail"],
        json!(format!("Thread with ID {missing} not found"))
    );
    let (status, _) = json_of(
        app.client
            .patch(app.url(&format!("/threads/{missing}")))
            .json(&json!({"metadata": {}}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn threads_search_count_with_real_totals() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    for i in 0..5 {
        create_thread(
            &app,
            json!({"metadata": {"owner": if i % 2 == 0 { "alice" } else { "bob" }, "i": i}}),
        )
        .await?;
    }
    let resp = app
        .post_json(
            "/threads/search",
            json!({"metadata": {"owner": "alice"}, "limit": 2}),
        )
        .await?;
    assert_eq!(resp.headers()["x-pagination-total"], "3");
    assert_eq!(resp.headers()["x-pagination-next"], "2");
    let (_, page) = json_of(resp).await?;
    assert_eq!(page.as_array().map(Vec::len), Some(2));

    let resp = app
        .post_json(
            "/threads/search",
            json!({"status": "idle", "sort_by": "created_at", "sort_order": "asc", "limit": 10, "offset": 3}),
        )
        .await?;
    assert_eq!(resp.headers()["x-pagination-total"], "5");
    assert!(resp.headers().get("x-pagination-next").is_none());
    let (_, page) = json_of(resp).await?;
    assert_eq!(page[0]["metadata"]["i"], json!(3));
    assert_eq!(page[1]["metadata"]["i"], json!(4));

    let (_, page) = json_of(
        app.post_json(
            "/threads/search",
            json!({"limit": 1, "select": ["thread_id", "status"]}),
        )
        .await?,
    )
    .await?;
    let keys: Vec<String> = page[0]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["thread_id", "status"]);

    let (_, page) = json_of(
        app.post_json(
            "/threads/search",
            json!({"limit": 1, "extract": {"who": "metadata.owner"}}),
        )
        .await?,
    )
    .await?;
    assert!(page[0]["extracted"]["who"].is_string(), "{page}");

    let (_, all) = json_of(app.post_json("/threads/search", json!({})).await?).await?;
    let first_two: Vec<Value> = all
        .as_array()
        .map(|a| a.iter().take(2).map(|t| t["thread_id"].clone()).collect())
        .unwrap_or_default();
    let resp = app
        .post_json("/threads/search", json!({"ids": first_two}))
        .await?;
    assert_eq!(resp.headers()["x-pagination-total"], "2");

    let (status, n) = json_of(app.post_json("/threads/count", json!({})).await?).await?;
    assert_eq!((status, n), (200, json!(5)));
    let (_, n) = json_of(
        app.post_json("/threads/count", json!({"metadata": {"owner": "bob"}}))
            .await?,
    )
    .await?;
    assert_eq!(n, json!(2));
    let (_, n) = json_of(
        app.post_json("/threads/count", json!({"status": "busy"}))
            .await?,
    )
    .await?;
    assert_eq!(n, json!(0));
    let (status, _) = json_of(
        app.post_json("/threads/search", json!({"status": "bogus"}))
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    let (status, _) = json_of(
        app.post_json("/threads/search", json!({"sort_by": "bogus"}))
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    Ok(())
}

#[tokio::test]
async fn threads_copy_delete_prune() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let t = create_thread(&app, json!({"metadata": {"title": "x"}})).await?;
    let tid = t["thread_id"].as_str().unwrap_or_default().to_owned();

    // Copy (no body, as the Python SDK sends it).
    let resp = app
        .client
        .post(app.url(&format!("/threads/{tid}/copy")))
        .send()
        .await?;
    let (status, copy) = json_of(resp).await?;
    assert_eq!(status, 200, "{copy}");
    assert_ne!(copy["thread_id"], t["thread_id"]);
    assert_eq!(copy["metadata"], json!({"title": "x"}));

    let resp = app
        .client
        .delete(app.url(&format!("/threads/{tid}")))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.text().await?, "");
    let (status, _) = json_of(app.get(&format!("/threads/{tid}")).await?).await?;
    assert_eq!(status, 404);
    let resp = app
        .client
        .delete(app.url(&format!("/threads/{tid}")))
        .send()
        .await?;
    let (status, body) = json_of(resp).await?;
    assert_eq!(status, 404);
    assert_eq!(
        body["detail"],
        json!(format!("Thread with ID {tid} not found"))
    );

    let a = create_thread(&app, json!({})).await?;
    let b = create_thread(&app, json!({})).await?;
    let (status, body) = json_of(
        app.post_json(
            "/threads/prune",
            json!({"thread_ids": [a["thread_id"], b["thread_id"], "00000000-0000-4000-8000-0000000000ff"]}),
        )
        .await?,
    )
    .await?;
    assert_eq!((status, body), (200, json!({"pruned_count": 2})));
    let (status, _) = json_of(
        app.get(&format!(
            "/threads/{}",
            a["thread_id"].as_str().unwrap_or_default()
        ))
        .await?,
    )
    .await?;
    assert_eq!(status, 404);

    let c = create_thread(&app, json!({})).await?;
    let (status, body) = json_of(
        app.post_json(
            "/threads/prune",
            json!({"thread_ids": [c["thread_id"]], "strategy": "keep_latest"}),
        )
        .await?,
    )
    .await?;
    assert_eq!((status, body), (200, json!({"pruned_count": 1})));
    let (status, _) = json_of(
        app.get(&format!(
            "/threads/{}",
            c["thread_id"].as_str().unwrap_or_default()
        ))
        .await?,
    )
    .await?;
    assert_eq!(status, 200);
    let (status, _) = json_of(
        app.post_json("/threads/prune", json!({"strategy": "delete"}))
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    let (status, _) = json_of(
        app.post_json(
            "/threads/prune",
            json!({"thread_ids": [], "strategy": "nuke"}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 422);
    Ok(())
}

// ------------------------------------------------------------------ store

#[tokio::test]
async fn store_items_round_trip() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let resp = app
        .client
        .put(app.url("/store/items"))
        .json(&json!({"namespace": ["users", "u1"], "key": "prefs", "value": {"lang": "en"}}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 204);

    let (status, item) =
        json_of(app.get("/store/items?namespace=users.u1&key=prefs").await?).await?;
    assert_eq!(status, 200);
    assert_eq!(item["namespace"], json!(["users", "u1"]));
    assert_eq!(item["value"], json!({"lang": "en"}));
    assert!(item["created_at"].is_string());

    let (status, found) = json_of(
        app.post_json(
            "/api/store/items/search",
            json!({"namespace_prefix": ["users"], "limit": 5}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(found["items"][0]["key"], json!("prefs"));
    assert_eq!(found["items"][0]["score"], Value::Null);
    let (_, found) = json_of(
        app.post_json("/store/items/search", json!({"filter": {"lang": "fr"}}))
            .await?,
    )
    .await?;
    assert_eq!(found, json!({"items": []}));

    let (status, ns) = json_of(app.post_json("/store/namespaces", json!({})).await?).await?;
    assert_eq!(
        (status, ns),
        (200, json!({"namespaces": [["users", "u1"]]}))
    );
    let (_, ns) = json_of(
        app.post_json("/store/namespaces", json!({"max_depth": 1}))
            .await?,
    )
    .await?;
    assert_eq!(ns, json!({"namespaces": [["users"]]}));

    let resp = app
        .client
        .delete(app.url("/store/items"))
        .json(&json!({"namespace": ["users", "u1"], "key": "prefs"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 204);
    let (status, item) =
        json_of(app.get("/store/items?namespace=users.u1&key=prefs").await?).await?;
    assert_eq!((status, item), (200, Value::Null));

    // Bad input.
    let resp = app
        .client
        .put(app.url("/store/items"))
        .json(&json!({"namespace": ["a.b"], "key": "k", "value": {}}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 422);
    let resp = app
        .client
        .put(app.url("/store/items"))
        .json(&json!({"namespace": ["a"], "key": "k", "value": [1]}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 422);
    let (status, _) = json_of(app.get("/store/items?namespace=a").await?).await?;
    assert_eq!(status, 422);
    Ok(())
}

#[tokio::test]
async fn thread_create_with_supersteps_applies_updates() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let t = create_thread(
        &app,
        json!({
            "metadata": {"graph_id": "echo"},
            "supersteps": [{"updates": [{"values": {"title": "seeded"}, "as_node": "echo"}]}],
        }),
    )
    .await?;
    assert_eq!(t["values"]["title"], json!("seeded"), "{t}");
    let tid = t["thread_id"].as_str().unwrap_or_default().to_owned();
    let (status, st) = json_of(app.get(&format!("/threads/{tid}/state")).await?).await?;
    assert_eq!(status, 200);
    assert_eq!(st["values"]["title"], json!("seeded"));

    // Without a graph to apply them with: 422 and no thread left behind.
    let (status, _) = json_of(
        app.post_json(
            "/threads",
            json!({"thread_id": "no-graph", "supersteps": [{"updates": [{"values": {}, "as_node": "echo"}]}]}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 422);
    let (status, _) = json_of(app.get("/threads/no-graph").await?).await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn copy_and_delete_carry_checkpoints_and_runs() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let t = create_thread(&app, json!({})).await?;
    let tid = t["thread_id"].as_str().unwrap_or_default().to_owned();
    let (status, out) = json_of(
        app.post_json(
            &format!("/threads/{tid}/runs/wait"),
            json!({"assistant_id": "echo", "input": {"messages": [{"role": "human", "content": "hi"}]}}),
        )
        .await?,
    )
    .await?;
    assert_eq!(status, 200, "{out}");

    let resp = app
        .client
        .post(app.url(&format!("/threads/{tid}/copy")))
        .send()
        .await?;
    let (status, copy) = json_of(resp).await?;
    assert_eq!(status, 200);
    let cid = copy["thread_id"].as_str().unwrap_or_default().to_owned();
    let (_, state) = json_of(app.get(&format!("/threads/{cid}/state")).await?).await?;
    assert_eq!(
        state["values"]["messages"][1]["content"],
        json!("echo: hi"),
        "{state}"
    );
    let (_, runs) = json_of(app.get(&format!("/threads/{cid}/runs")).await?).await?;
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs[0]["thread_id"], json!(cid));
    assert_eq!(runs[0]["status"], json!("success"));

    let (_, runs) = json_of(app.get(&format!("/threads/{tid}/runs")).await?).await?;
    let run_id = runs[0]["run_id"].as_str().unwrap_or_default().to_owned();
    let resp = app
        .client
        .delete(app.url(&format!("/threads/{tid}")))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 204);
    let (status, _) = json_of(app.get(&format!("/threads/{tid}/runs/{run_id}")).await?).await?;
    assert_eq!(status, 404);
    let history = app
        .state
        .runtime
        .stores()
        .checkpointer(antler_auth::DEFAULT_USER_ID)
        .list(&tid, None, &antler_graph::ListOptions::default())
        .await?;
    assert!(history.is_empty());
    // The copy is untouched.
    let (_, state) = json_of(app.get(&format!("/threads/{cid}/state")).await?).await?;
    assert_eq!(state["values"]["messages"][1]["content"], json!("echo: hi"));
    Ok(())
}

#[tokio::test]
async fn system_assistants_are_read_only_and_select_is_validated() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let resp = app
        .client
        .patch(app.url("/assistants/echo"))
        .json(&json!({"metadata": {"x": 1}}))
        .send()
        .await?;
    let (status, body) = json_of(resp).await?;
    assert_eq!(status, 403, "{body}");
    let resp = app
        .client
        .delete(app.url(&format!("/assistants/{ECHO_ID}")))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 403);
    let (status, _) = json_of(app.get("/assistants/echo").await?).await?;
    assert_eq!(status, 200);

    let (status, body) = json_of(
        app.post_json("/threads/search", json!({"select": ["nope"]}))
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap_or_default().contains("nope"));
    let (status, _) = json_of(
        app.post_json("/assistants/search", json!({"select": ["nope"]}))
            .await?,
    )
    .await?;
    assert_eq!(status, 422);
    Ok(())
}

#[tokio::test]
async fn cors_headers_reach_streaming_responses() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let t = create_thread(&app, json!({})).await?;
    let tid = t["thread_id"].as_str().unwrap_or_default().to_owned();
    let resp = app
        .client
        .post(app.url(&format!("/api/threads/{tid}/runs/stream")))
        .header("origin", "http://localhost:3000")
        .json(&json!({"assistant_id": "echo", "input": {"messages": [{"role": "human", "content": "hi"}]}}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h["access-control-expose-headers"]
            .to_str()?
            .contains("content-location")
    );
    assert!(h["content-location"].to_str()?.contains(&tid));
    assert_eq!(h["vary"], "Origin");
    let body = resp.text().await?;
    assert!(body.contains("event: metadata"), "{body}");
    Ok(())
}
