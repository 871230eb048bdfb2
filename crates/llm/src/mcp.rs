//! MCP tools: a client for the servers of DeerFlow's `mcp_servers` config (through the official
//! `rmcp` SDK) whose tools become [`Tool`]s of the `lead_agent`.
//!
//! - Transports: a child process speaking newline-delimited JSON-RPC on stdio
//!   ([`McpTransport::Stdio`]), streamable HTTP ([`McpTransport::Http`], `http://` or `https://`),
//!   or the legacy HTTP+SSE transport ([`McpTransport::Sse`], see `mcp_sse`).
//! - [`McpHub::start`] connects to every server at once, each bounded by its connect timeout,
//!   lists its tools and wraps each as an [`McpTool`]. A server that cannot be started,
//!   initialized or listed is reported in [`McpHub::failures`] (the caller logs a warning naming
//!   it); its tools are simply absent. Startup never fails because of an MCP server.
//! - Tool names: the tool's own name (as DeerFlow's MCP adapter does), so agent `tools:` lists
//!   and prompts written for DeerFlow keep working; characters a model API refuses are replaced
//!   by `_` (64 at most). A name already taken — by an earlier server's tool or a reserved name
//!   (the workspace tools, `task`) — becomes `<server>__<tool>`.
//! - A call has a timeout (`timeout_seconds`, default 60 s); MCP errors, timeouts and results
//!   with `isError: true` become [`ToolError`]s, i.e. error `ToolMessage`s, never run failures.
//!   A call that times out or is cancelled is dropped, which sends `notifications/cancelled`.
//! - The child's stderr is read line by line and logged at debug level, so a chatty server can
//!   never block on a full pipe.
//!
//! Why a thread of its own: the sessions' background tasks (the JSON-RPC loop, the stderr
//! reader) run on a small current-thread runtime owned by the hub, in a thread named
//! `antler-mcp`. That lets a synchronous caller (`build_graphs`) connect at startup and lets the
//! sessions outlive whichever runtime happened to build the graphs (tests build graphs inside
//! short-lived runtimes). Tool calls are made from the agent's own runtime through the sessions'
//! `Peer` handles (channels work across runtimes). Dropping the hub (with the graphs, when the
//! server shuts down) closes every session: stdin is closed, the child is given 3 s to exit,
//! then SIGTERM, then killed; children are also spawned with `kill_on_drop`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::model::{CallToolRequestParams, CallToolResponse, CallToolResult};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value, json};
use tokio::io::AsyncBufReadExt;

use crate::tools::{Tool, ToolContext, ToolError};

/// Default per-call timeout.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default connect timeout (spawn + initialize + tools/list).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP transports' URL check.
fn check_http_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("url '{url}': must be an http:// or https:// URL"))
    }
}

/// A server entry's `headers`, as HTTP headers (a name or value HTTP cannot carry is an error
/// naming the header, never its value).
fn http_headers(
    headers: &BTreeMap<String, String>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    headers
        .iter()
        .map(|(k, v)| {
            let name = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name '{k}' is not valid"))?;
            let value = http::HeaderValue::from_str(v)
                .map_err(|_| format!("the value of header '{k}' is not valid"))?;
            Ok((name, value))
        })
        .collect()
}

/// How to reach one MCP server.
#[derive(Clone, PartialEq)]
pub enum McpTransport {
    /// A child process speaking JSON-RPC on stdin/stdout.
    Stdio {
        /// Program (looked up on `PATH`).
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables (added to the server's own environment).
        env: BTreeMap<String, String>,
    },
    /// The legacy HTTP+SSE transport (protocol 2024-11-05; DeerFlow's `type: sse`): an event
    /// stream at `url` announcing the endpoint messages are POSTed to.
    Sse {
        /// Event-stream URL (`http://...` or `https://...`).
        url: String,
        /// Extra HTTP headers sent with every request.
        headers: BTreeMap<String, String>,
    },
    /// A streamable-HTTP endpoint.
    Http {
        /// Endpoint URL (`http://...` or `https://...`, verified against the system roots).
        url: String,
        /// Extra HTTP headers sent with every request.
        headers: BTreeMap<String, String>,
    },
}

impl std::fmt::Debug for McpTransport {
    // Environment values and headers often carry tokens: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            McpTransport::Stdio { command, args, env } => f
                .debug_struct("Stdio")
                .field("command", command)
                .field("args", args)
                .field("env", &env.keys().collect::<Vec<_>>())
                .finish(),
            McpTransport::Http { url, headers } => f
                .debug_struct("Http")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .finish(),
            McpTransport::Sse { url, headers } => f
                .debug_struct("Sse")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// One enabled `mcp_servers` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct McpServerConfig {
    /// The entry's key.
    pub name: String,
    /// How to reach it.
    pub transport: McpTransport,
    /// Timeout of one tool call.
    pub call_timeout: Duration,
    /// Timeout of start + `initialize` + `tools/list`.
    pub connect_timeout: Duration,
}

impl McpServerConfig {
    /// A server with the default timeouts.
    pub fn new(name: impl Into<String>, transport: McpTransport) -> Self {
        Self {
            name: name.into(),
            transport,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl McpServerConfig {
    /// This server as DeerFlow's `GET /api/mcp/config` shows an entry: every environment and
    /// header value masked as `***` (their names are shown), no OAuth secrets.
    pub fn masked_json(&self) -> Value {
        let mask = |m: &BTreeMap<String, String>| -> Map<String, Value> {
            m.keys().map(|k| (k.clone(), json!("***"))).collect()
        };
        let (kind, command, args, env, url, headers) = match &self.transport {
            McpTransport::Stdio { command, args, env } => (
                "stdio",
                json!(command),
                json!(args),
                mask(env),
                Value::Null,
                Map::new(),
            ),
            McpTransport::Sse { url, headers } => (
                "sse",
                Value::Null,
                json!([]),
                Map::new(),
                json!(url),
                mask(headers),
            ),
            McpTransport::Http { url, headers } => (
                "http",
                Value::Null,
                json!([]),
                Map::new(),
                json!(url),
                mask(headers),
            ),
        };
        json!({
            "enabled": true,
            "type": kind,
            "command": command,
            "args": args,
            "env": env,
            "url": url,
            "headers": headers,
            "oauth": null,
            "description": "",
            "tool_call_timeout": self.call_timeout.as_secs_f64(),
            "session_init_timeout": self.connect_timeout.as_secs_f64(),
        })
    }
}

/// A server that could not be used, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct McpFailure {
    /// The server's name.
    pub server: String,
    /// What went wrong.
    pub error: String,
}

/// One tool of an MCP server, callable by the agent.
pub struct McpTool {
    server: String,
    name: String,
    remote_name: String,
    description: String,
    schema: Value,
    timeout: Duration,
    peer: Peer<RoleClient>,
    /// Keeps the sessions open while any tool (or the hub) is alive.
    _sessions: Arc<SessionsGuard>,
}

/// Dropped with the last tool and the hub: tells the `antler-mcp` thread to close the sessions
/// and exit. (The graphs hold the tools, not the hub, so the guard must travel with them.)
struct SessionsGuard(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for SessionsGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl McpTool {
    /// The server it belongs to.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The tool's name on its server.
    pub fn remote_name(&self) -> &str {
        &self.remote_name
    }
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn parameters(&self) -> Value {
        self.schema.clone()
    }

    async fn call(&self, args: Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let arguments = match args {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(ToolError(format!(
                    "the arguments of '{}' must be a JSON object, got {other}",
                    self.name
                )));
            }
        };
        let params = CallToolRequestParams::new(self.remote_name.clone()).with_arguments(arguments);
        let call = self.peer.call_tool_once(params);
        // Dropping the request future (timeout, cancellation) sends `notifications/cancelled`.
        let outcome = tokio::select! {
            r = tokio::time::timeout(self.timeout, call) => r,
            _ = ctx.cancel.cancelled() => {
                return Err(ToolError(format!("MCP tool '{}' was cancelled", self.name)));
            }
        };
        match outcome {
            Err(_) => Err(ToolError(format!(
                "MCP tool '{}' (server '{}') timed out after {} s",
                self.name,
                self.server,
                self.timeout.as_secs_f64()
            ))),
            Ok(Err(e)) => Err(ToolError(format!(
                "MCP tool '{}' (server '{}') failed: {e}",
                self.name, self.server
            ))),
            Ok(Ok(CallToolResponse::Complete(result))) => result_text(&result),
            Ok(Ok(CallToolResponse::InputRequired(_))) => Err(ToolError(format!(
                "MCP tool '{}' (server '{}') asked for client input, which Antler does not \
                 provide",
                self.name, self.server
            ))),
            // A background task (`resultType: "task"`) or a result kind newer than this client.
            Ok(Ok(_)) => Err(ToolError(format!(
                "MCP tool '{}' (server '{}') answered with a background task or a result kind \
                 Antler does not handle",
                self.name, self.server
            ))),
        }
    }
}

/// The text a call result gives the model: the text blocks joined by newlines, other blocks as
/// JSON, else the structured content; `isError: true` makes it an error with that text.
fn result_text(result: &CallToolResult) -> Result<String, ToolError> {
    let mut parts: Vec<String> = Vec::new();
    for block in &result.content {
        let v = serde_json::to_value(block).unwrap_or(Value::Null);
        match (
            v.get("type").and_then(Value::as_str),
            v.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) => parts.push(t.to_string()),
            _ => parts.push(v.to_string()),
        }
    }
    if parts.is_empty()
        && let Some(s) = &result.structured_content
    {
        parts.push(s.to_string());
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) {
        Err(ToolError(if text.is_empty() {
            "the MCP tool reported an error".to_string()
        } else {
            text
        }))
    } else {
        Ok(text)
    }
}

/// A tool name a model API accepts: `[A-Za-z0-9_-]`, at most 64 characters.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() { "tool".to_string() } else { s }
}

/// A listed tool before naming.
struct Listed {
    remote_name: String,
    description: String,
    schema: Value,
}

/// One connected server (session kept alive for its tools).
struct Session {
    server: McpServerConfig,
    service: RunningService<RoleClient, ()>,
    tools: Vec<Listed>,
}

fn listed(tools: Vec<rmcp::model::Tool>) -> Vec<Listed> {
    tools
        .into_iter()
        .map(|t| {
            let mut schema = Value::Object((*t.input_schema).clone());
            // Some servers omit `type` / `properties`; model APIs want an object schema.
            if let Value::Object(m) = &mut schema {
                m.entry("type").or_insert_with(|| json!("object"));
                m.entry("properties").or_insert_with(|| json!({}));
            }
            Listed {
                description: t
                    .description
                    .as_deref()
                    .or(t.title.as_deref())
                    .unwrap_or_default()
                    .to_string(),
                remote_name: t.name.to_string(),
                schema,
            }
        })
        .collect()
}

async fn connect(server: McpServerConfig) -> Result<Session, String> {
    let service = match &server.transport {
        McpTransport::Stdio { command, args, env } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).envs(env).kill_on_drop(true);
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start `{command}`: {e}"))?;
            if let Some(stderr) = stderr {
                let name = server.name.clone();
                // Ends at EOF, i.e. when the child exits.
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(mcp_server = %name, "stderr: {line}");
                    }
                });
            }
            ().serve(transport)
                .await
                .map_err(|e| format!("initialize failed: {e}"))?
        }
        McpTransport::Sse { url, headers } => {
            check_http_url(url)?;
            let headers = http_headers(headers)?.into_iter().collect();
            let transport = crate::mcp_sse::connect(url, headers).await?;
            ().serve(transport)
                .await
                .map_err(|e| format!("initialize failed: {e}"))?
        }
        McpTransport::Http { url, headers } => {
            check_http_url(url)?;
            let mut cfg = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            cfg.custom_headers = http_headers(headers)?.into_iter().collect();
            let transport = StreamableHttpClientTransport::from_config(cfg);
            ().serve(transport)
                .await
                .map_err(|e| format!("initialize failed: {e}"))?
        }
    };
    let tools = service
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| format!("tools/list failed: {e}"))?;
    Ok(Session {
        server,
        service,
        tools: listed(tools),
    })
}

/// Connects to every server concurrently; each is bounded by its connect timeout.
async fn connect_all(servers: Vec<McpServerConfig>) -> (Vec<Session>, Vec<McpFailure>) {
    let attempts = servers.into_iter().map(|s| async move {
        let name = s.name.clone();
        let limit = s.connect_timeout;
        match tokio::time::timeout(limit, connect(s)).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(error)) => Err(McpFailure {
                server: name,
                error,
            }),
            Err(_) => Err(McpFailure {
                server: name,
                error: format!("no answer within {} s", limit.as_secs_f64()),
            }),
        }
    });
    let mut sessions = Vec::new();
    let mut failures = Vec::new();
    for r in futures::future::join_all(attempts).await {
        match r {
            Ok(s) => sessions.push(s),
            Err(f) => failures.push(f),
        }
    }
    (sessions, failures)
}

/// The connected MCP servers and their tools. The sessions close when the hub and every tool
/// it handed out are dropped (module docs).
pub struct McpHub {
    tools: Vec<Arc<McpTool>>,
    failures: Vec<McpFailure>,
}

impl std::fmt::Debug for McpHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpHub")
            .field(
                "tools",
                &self.tools.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .field("failures", &self.failures)
            .finish()
    }
}

impl McpHub {
    /// A hub with no servers.
    pub fn empty() -> Self {
        Self {
            tools: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Connects to `servers` (blocking the calling thread until each has connected or failed,
    /// at most the longest connect timeout) and lists their tools. `reserved` are names the
    /// tools must not take (the agent's other tools). Never fails: see [`Self::failures`].
    pub fn start(servers: Vec<McpServerConfig>, reserved: &[String]) -> Self {
        if servers.is_empty() {
            return Self::empty();
        }
        let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
        let wait = servers
            .iter()
            .map(|s| s.connect_timeout)
            .max()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            + Duration::from_secs(5);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("antler-mcp".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start the MCP runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let (sessions, failures) = connect_all(servers).await;
                    let found: Vec<(McpServerConfig, Peer<RoleClient>, Vec<Listed>)> = sessions
                        .iter()
                        .map(|s| {
                            let tools = s
                                .tools
                                .iter()
                                .map(|t| Listed {
                                    remote_name: t.remote_name.clone(),
                                    description: t.description.clone(),
                                    schema: t.schema.clone(),
                                })
                                .collect();
                            (s.server.clone(), s.service.peer().clone(), tools)
                        })
                        .collect();
                    if ready_tx.send(Ok((found, failures))).is_err() {
                        return;
                    }
                    // Until the hub is dropped (or its sender is lost).
                    let _ = stop_rx.await;
                    let closing = sessions.into_iter().map(|s| async move {
                        let name = s.server.name.clone();
                        if let Err(e) = s.service.cancel().await {
                            tracing::debug!(mcp_server = %name, error = %e, "MCP session close");
                        }
                    });
                    futures::future::join_all(closing).await;
                });
            });
        let fail_all = |error: String| Self {
            tools: Vec::new(),
            failures: names
                .iter()
                .map(|n| McpFailure {
                    server: n.clone(),
                    error: error.clone(),
                })
                .collect(),
        };
        if let Err(e) = spawned {
            return fail_all(format!("cannot start the MCP thread: {e}"));
        }
        let (found, failures) = match ready_rx.recv_timeout(wait) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return fail_all(e),
            Err(_) => return fail_all("the MCP connections did not finish".into()),
        };
        let guard = Arc::new(SessionsGuard(Some(stop_tx)));
        let mut taken: Vec<String> = reserved.to_vec();
        let mut tools = Vec::new();
        for (server, peer, listed) in found {
            for t in listed {
                let own = sanitize(&t.remote_name);
                let name = if taken.contains(&own) {
                    let prefixed = sanitize(&format!("{}__{}", server.name, t.remote_name));
                    tracing::warn!(
                        mcp_server = %server.name,
                        "MCP tool '{}' is named like another tool; offered as '{prefixed}'",
                        t.remote_name
                    );
                    prefixed
                } else {
                    own
                };
                if taken.contains(&name) {
                    tracing::warn!(
                        mcp_server = %server.name,
                        "MCP tool '{}' is listed twice; the second one is ignored",
                        t.remote_name
                    );
                    continue;
                }
                taken.push(name.clone());
                tools.push(Arc::new(McpTool {
                    server: server.name.clone(),
                    name,
                    remote_name: t.remote_name,
                    description: t.description,
                    schema: t.schema,
                    timeout: server.call_timeout,
                    peer: peer.clone(),
                    _sessions: guard.clone(),
                }));
            }
        }
        Self { tools, failures }
    }

    /// Every tool, in server then listing order.
    pub fn tools(&self) -> Vec<Arc<dyn Tool>> {
        self.tools
            .iter()
            .map(|t| t.clone() as Arc<dyn Tool>)
            .collect()
    }

    /// The tools of the named servers (an agent's `mcp_servers:`).
    pub fn tools_of(&self, servers: &[String]) -> Vec<Arc<dyn Tool>> {
        self.tools
            .iter()
            .filter(|t| servers.iter().any(|s| *s == t.server))
            .map(|t| t.clone() as Arc<dyn Tool>)
            .collect()
    }

    /// Names of the tools of the named servers (None: of all servers).
    pub fn tool_names(&self, servers: Option<&[String]>) -> Vec<String> {
        self.tools
            .iter()
            .filter(|t| servers.is_none_or(|ss| ss.iter().any(|s| *s == t.server)))
            .map(|t| t.name.clone())
            .collect()
    }

    /// Servers that could not be used.
    pub fn failures(&self) -> &[McpFailure] {
        &self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("get.weather now"), "get_weather_now");
        assert_eq!(sanitize(""), "tool");
        assert_eq!(sanitize(&"x".repeat(80)).len(), 64);
    }

    #[test]
    fn results_become_text_or_errors() {
        let ok: CallToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        }))
        .unwrap();
        assert_eq!(result_text(&ok).unwrap(), "a\nb");
        let err: CallToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "boom"}], "isError": true
        }))
        .unwrap();
        assert_eq!(result_text(&err).unwrap_err().0, "boom");
        let structured: CallToolResult = serde_json::from_value(json!({
            "content": [], "structuredContent": {"n": 1}
        }))
        .unwrap();
        assert_eq!(result_text(&structured).unwrap(), r#"{"n":1}"#);
    }

    #[test]
    fn a_missing_command_is_a_failure_not_a_panic() {
        let hub = McpHub::start(
            vec![McpServerConfig::new(
                "nope",
                McpTransport::Stdio {
                    command: "/nonexistent/antler-mcp-server".into(),
                    args: Vec::new(),
                    env: BTreeMap::new(),
                },
            )],
            &[],
        );
        assert!(hub.tools().is_empty());
        assert_eq!(hub.failures().len(), 1);
        assert_eq!(hub.failures()[0].server, "nope");
        assert!(
            hub.failures()[0].error.contains("cannot start"),
            "{:?}",
            hub.failures()
        );
    }

    #[test]
    fn https_endpoints_are_dialled_over_tls_and_other_schemes_refused() {
        // a listener that records the first byte the client sends, then hangs up: a TLS
        // ClientHello starts with 0x16 (a handshake record), plain HTTP with 'P' (POST)
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming().take(8) {
                let mut first = [0u8; 1];
                if let Ok(mut c) = conn
                    && c.read_exact(&mut first).is_ok()
                {
                    let _ = tx.send(first[0]);
                }
            }
        });
        let hub = McpHub::start(
            vec![
                McpServerConfig::new(
                    "remote",
                    McpTransport::Http {
                        url: format!("https://127.0.0.1:{port}/mcp"),
                        headers: BTreeMap::new(),
                    },
                ),
                McpServerConfig::new(
                    "ftp",
                    McpTransport::Http {
                        url: "ftp://example.invalid/mcp".into(),
                        headers: BTreeMap::new(),
                    },
                ),
            ],
            &[],
        );
        assert!(hub.tools().is_empty());
        let failures = hub.failures();
        let remote = failures
            .iter()
            .find(|f| f.server == "remote")
            .expect("remote");
        assert!(remote.error.contains("initialize failed"), "{failures:?}");
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Ok(0x16),
            "the client opened a TLS handshake"
        );
        let ftp = failures.iter().find(|f| f.server == "ftp").expect("ftp");
        assert!(ftp.error.contains("must be an http"), "{failures:?}");
    }
}
