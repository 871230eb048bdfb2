//! The DeerFlow frontend's gates and settings routes over real HTTP, in DeerFlow's shapes
//! (bytedance/deer-flow `backend/app/gateway/routers`): what its pages read from each.

mod common;

use std::collections::BTreeMap;

use antler_llm::{McpServerConfig, McpTransport};
use common::{TestApp, json_of};
use reqwest::Method;
use serde_json::{Value, json};

async fn get(app: &TestApp, path: &str) -> anyhow::Result<(u16, Value)> {
    json_of(app.get(path).await?).await
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: &'static str,
) -> anyhow::Result<(u16, Value)> {
    json_of(app.send_raw(method, path, body.as_bytes()).await?).await
}

#[tokio::test]
async fn gates_and_settings_pages_get_deerflows_shapes() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    for prefix in ["", "/api"] {
        let (s, f) = get(&app, &format!("{prefix}/features")).await?;
        assert_eq!(s, 200);
        assert_eq!(
            f,
            json!({"agents_api": {"enabled": false}, "browser_control": {"enabled": false}, "mcp_tasks": {"enabled": false}})
        );
    }
    assert_eq!(
        get(&app, "/api/skills").await?,
        (200, json!({"skills": []}))
    );
    let (s, e) = get(&app, "/api/skills/deep-research").await?;
    assert_eq!(
        (s, e["detail"].clone()),
        (404, json!("Skill 'deep-research' not found"))
    );
    assert_eq!(
        get(&app, "/api/suggestions/config").await?,
        (200, json!({"enabled": false, "max_suggestions": 3}))
    );
    assert_eq!(
        get(&app, "/api/channels/providers").await?,
        (200, json!({"enabled": false, "providers": []}))
    );
    assert_eq!(
        get(&app, "/api/channels/connections").await?,
        (200, json!({"connections": []}))
    );
    let (s, lark) = get(&app, "/api/integrations/lark/status").await?;
    assert_eq!(s, 200);
    assert_eq!(lark["installed"], json!(false));
    assert_eq!(lark["cli"]["available"], json!(false));
    assert_eq!(lark["auth"]["status"], json!("unavailable"));
    assert_eq!(lark["sandbox_runtime_mode"], json!("none"));
    Ok(())
}

#[tokio::test]
async fn disabled_features_answer_as_deerflow_does_and_change_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let (_, thread) = json_of(app.post_json("/threads", json!({})).await?).await?;
    let tid = thread["thread_id"].as_str().unwrap_or_default().to_string();
    let disabled = json!(antler_gateway::routes::frontend::AGENTS_API_DISABLED);
    for (method, path) in [
        (Method::GET, "/api/agents"),
        (Method::POST, "/api/agents"),
        (Method::GET, "/api/agents/check?name=x"),
        (Method::GET, "/api/agents/x"),
        (Method::PUT, "/api/agents/x"),
        (Method::DELETE, "/api/agents/x"),
        (Method::GET, "/api/user-profile"),
        (Method::PUT, "/api/user-profile"),
    ] {
        let (s, e) = send(&app, method.clone(), path, "{}").await?;
        assert_eq!((s, &e["detail"]), (403, &disabled), "{method} {path}");
    }
    // suggestions off: an empty list after DeerFlow's checks
    let path = format!("/api/threads/{tid}/suggestions");
    let body = r#"{"messages": [{"role": "user", "content": "hi"}], "n": 3}"#;
    assert_eq!(
        send(&app, Method::POST, &path, body).await?,
        (200, json!({"suggestions": []}))
    );
    let (s, _) = send(&app, Method::POST, &path, r#"{"messages": [], "n": 9}"#).await?;
    assert_eq!(s, 422);
    let (s, _) = send(&app, Method::POST, &path, r#"{"n": 2}"#).await?;
    assert!(s == 400 || s == 422, "{s}");
    let ghost = "00000000-0000-4000-8000-0000000000aa";
    let ghost_path = format!("/api/threads/{ghost}/suggestions");
    let (s, _) = send(&app, Method::POST, &ghost_path, body).await?;
    assert_eq!(s, 404);
    // compaction and input polishing are off
    let (s, e) = send(
        &app,
        Method::POST,
        &format!("/api/threads/{tid}/compact"),
        "{}",
    )
    .await?;
    assert_eq!(
        (s, e["detail"].clone()),
        (409, json!("Context compaction is disabled."))
    );
    let (s, _) = send(
        &app,
        Method::POST,
        &format!("/api/threads/{ghost}/compact"),
        "{}",
    )
    .await?;
    assert_eq!(s, 404);
    let (s, e) = send(&app, Method::POST, "/api/input-polish", r#"{"text": "hi"}"#).await?;
    assert_eq!(
        (s, e["detail"].clone()),
        (404, json!("Input polishing is disabled"))
    );
    let (_, after) = get(&app, &format!("/threads/{tid}")).await?;
    assert_eq!(after["metadata"], thread["metadata"], "nothing written");
    // workspace changes are not recorded: DeerFlow's "not available" answer for a real run
    let run =
        r#"{"assistant_id": "echo", "input": {"messages": [{"role": "human", "content": "hi"}]}}"#;
    let (s, _) = send(
        &app,
        Method::POST,
        &format!("/threads/{tid}/runs/wait"),
        run,
    )
    .await?;
    assert_eq!(s, 200);
    let (_, runs) = get(&app, &format!("/threads/{tid}/runs")).await?;
    let rid = runs[0]["run_id"].as_str().unwrap_or_default().to_string();
    let changes = format!(
        "/api/threads/{tid}/runs/{rid}/workspace-changes?include_files=true&include_diff=false"
    );
    let (s, c) = get(&app, &changes).await?;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["available"], json!(false));
    assert_eq!(c["files"], json!([]));
    assert_eq!(c["summary"]["created"], json!(0));
    let (s, _) = get(
        &app,
        &format!("/api/threads/{tid}/runs/{ghost}/workspace-changes"),
    )
    .await?;
    assert_eq!(s, 404);
    let (s, _) = get(
        &app,
        &format!("/api/threads/{tid}/runs/{rid}/workspace-changes?include_diff=maybe"),
    )
    .await?;
    assert_eq!(s, 422);
    Ok(())
}

#[tokio::test]
async fn mcp_config_shows_the_configured_servers_with_secrets_masked() -> anyhow::Result<()> {
    let stdio = McpServerConfig::new(
        "github",
        McpTransport::Stdio {
            command: "npx".into(),
            args: vec!["-y".into(), "@modelcontextprotocol/server-github".into()],
            env: BTreeMap::from([("GITHUB_TOKEN".into(), "ghp_secret123".into())]),
        },
    );
    let http = McpServerConfig::new(
        "search",
        McpTransport::Http {
            url: "https://mcp.example.com/mcp".into(),
            headers: BTreeMap::from([("Authorization".into(), "Bearer sk-live-xyz".into())]),
        },
    );
    let servers = json!({"github": stdio.masked_json(), "search": http.masked_json()});
    let app = TestApp::spawn_with(|s| s.with_mcp_servers(servers)).await?;
    let resp = app.get("/api/mcp/config").await?;
    let text = resp.text().await?;
    assert!(
        !text.contains("ghp_secret123") && !text.contains("sk-live-xyz"),
        "{text}"
    );
    let cfg: Value = serde_json::from_str(&text)?;
    let gh = &cfg["mcp_servers"]["github"];
    assert_eq!(gh["enabled"], json!(true));
    assert_eq!(gh["type"], json!("stdio"));
    assert_eq!(gh["command"], json!("npx"));
    assert_eq!(gh["env"], json!({"GITHUB_TOKEN": "***"}));
    assert_eq!(gh["description"], json!(""));
    let search = &cfg["mcp_servers"]["search"];
    assert_eq!(search["type"], json!("http"));
    assert_eq!(search["url"], json!("https://mcp.example.com/mcp"));
    assert_eq!(search["headers"], json!({"Authorization": "***"}));
    // switching a server over HTTP is not supported: 409, nothing changes
    let body = r#"{"server_name": "github", "enabled": false}"#;
    let (s, _) = send(&app, Method::PATCH, "/api/mcp/config", body).await?;
    assert_eq!(s, 409);
    let (_, again) = get(&app, "/api/mcp/config").await?;
    assert_eq!(again, cfg);
    Ok(())
}
