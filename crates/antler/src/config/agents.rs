//! The agent side of the configuration: `models:` (DeerFlow's entries, parsed by
//! `antler-llm`), `agents:` (declarative agents), `sandbox:` + `tools:` (the per-thread
//! workspace tools, and whether `bash` is offered), `mcp_servers:` (MCP servers whose tools the
//! agents get) and `title:`.
//!
//! Every reference is checked here, at load time: an agent or subagent naming a model that is
//! not in `models:`, or an MCP server that is not in `mcp_servers:`, is a config error, not a
//! failed run later. Whether an MCP server actually starts is only known at startup, where a
//! failure is a warning (its tools are absent), never a startup failure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use antler_llm::{McpServerConfig, McpTransport, ModelConfig, SubagentSpec};
use anyhow::{Result, bail};
use serde_json::{Map, Value};

use super::{Config, Reader, get_bool, get_f64, get_str, get_u64, section};

/// Names of the workspace tools (DeerFlow's sandbox tool names).
pub const WORKSPACE_TOOLS: &[&str] = &["ls", "read_file", "write_file", "str_replace", "bash"];

/// The per-thread workspace tools (`sandbox:` section, filtered by the `tools:` list).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkspaceConfig {
    /// Whether the agents get workspace tools at all (`sandbox.enabled`, default true).
    pub enabled: bool,
    /// Parent of the per-thread directories (`sandbox.workspace_dir`); default
    /// `<sqlite_dir>/workspaces`.
    pub root: Option<PathBuf>,
    /// Whether `bash` is offered (`sandbox.allow_host_bash`, default **false**): it runs a shell
    /// on the host with the server's rights, confined to nothing but its working directory.
    pub bash: bool,
    /// Timeout of one `bash` command (`sandbox.bash_timeout_seconds`, default 60).
    pub bash_timeout: Duration,
    /// The workspace tools named in DeerFlow's `tools:` list (None: no list, all of them).
    pub tools: Option<Vec<String>>,
    /// The enabled `mcp_servers:` entries, in config order. (Kept here, beside the other tool
    /// settings, because this module owns no field of `Config`.)
    pub mcp_servers: Vec<McpServerConfig>,
    /// Names of the `mcp_servers:` entries switched off with `enabled: false`.
    pub mcp_disabled: Vec<String>,
}

impl Default for WorkspaceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: None,
            bash: false,
            bash_timeout: Duration::from_secs(60),
            tools: None,
            mcp_servers: Vec::new(),
            mcp_disabled: Vec::new(),
        }
    }
}

impl WorkspaceConfig {
    /// The workspace tools the agents are offered, in order.
    pub fn tool_names(&self) -> Vec<String> {
        WORKSPACE_TOOLS
            .iter()
            .filter(|t| self.enabled && (**t != "bash" || self.bash))
            .filter(|t| {
                self.tools
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|n| n == *t))
            })
            .map(|t| t.to_string())
            .collect()
    }
}

/// One `agents:` entry: served as graph `<name>` (the `lead_agent` graph with this
/// configuration) with its own system assistant.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Graph id and assistant name (`[a-z0-9-]+`).
    pub name: String,
    /// Shown in assistant listings.
    pub description: Option<String>,
    /// Its model (a `models:` name); None = the default model.
    pub model: Option<String>,
    /// Its system prompt; None = the default prompt.
    pub system_prompt: Option<String>,
    /// The tools it may use (None = all that are available).
    pub tools: Option<Vec<String>>,
    /// Subagents its `task` tool can run.
    pub subagents: Vec<SubagentSpec>,
    /// The MCP servers whose tools it gets (None = all of them).
    pub mcp_servers: Option<Vec<String>>,
}

/// Parses `models:`, `agents:`, `sandbox:`, `tools:` and `title:` into `cfg`.
pub(super) fn parse_agent_sections(
    r: &mut Reader<'_>,
    root: &Map<String, Value>,
    cfg: &mut Config,
) -> Result<()> {
    if let Some(v) = root.get("models") {
        cfg.models = parse_models(v)?;
    }
    let model_names: Vec<String> = cfg.models.iter().map(|m| m.name.clone()).collect();
    let check_model = |path: &str, name: &str| -> Result<()> {
        if model_names.iter().any(|n| n == name) {
            Ok(())
        } else {
            bail!(
                "config '{path}': model '{name}' is not in `models:` (configured: {})",
                if model_names.is_empty() {
                    "none".to_string()
                } else {
                    model_names.join(", ")
                }
            )
        }
    };
    if let Some(s) = section(root, "sandbox")? {
        parse_sandbox(r, s, &mut cfg.workspace)?;
    }
    if let Some(v) = root.get("tools") {
        parse_tools(r, v, &mut cfg.workspace)?;
    }
    if let Some(v) = root.get("mcp_servers") {
        parse_mcp_servers(r, v, &mut cfg.workspace)?;
    }
    if let Some(s) = section(root, "title")? {
        r.check_keys(
            "title",
            s,
            &["enabled", "max_words", "max_chars", "model_name"],
        );
        let t = &mut cfg.title;
        if let Some(b) = get_bool(s, "title", "enabled")? {
            t.enabled = b;
        }
        if let Some(n) = get_u64(s, "title", "max_words")? {
            if !(1..=50).contains(&n) {
                bail!("config 'title.max_words' must be between 1 and 50, got {n}");
            }
            t.max_words = n as usize;
        }
        if let Some(n) = get_u64(s, "title", "max_chars")? {
            if !(1..=500).contains(&n) {
                bail!("config 'title.max_chars' must be between 1 and 500, got {n}");
            }
            t.max_chars = n as usize;
        }
        if let Some(m) = get_str(s, "title", "model_name")?.filter(|m| !m.is_empty()) {
            check_model("title.model_name", &m)?;
            t.model_name = Some(m);
        }
    }
    let agents: Vec<(String, &Map<String, Value>)> = match root.get("agents") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(m) => Ok((format!("agents[{i}]"), m)),
                other => bail!("config 'agents[{i}]' must be a mapping, got {other}"),
            })
            .collect::<Result<_>>()?,
        // `agents: {name: {...}}` is accepted too; the key is the name.
        Some(Value::Object(by_name)) => by_name
            .iter()
            .map(|(name, item)| match item {
                Value::Object(m) => Ok((format!("agents.{name}"), m)),
                Value::Null => bail!("config 'agents.{name}' is empty"),
                other => bail!("config 'agents.{name}' must be a mapping, got {other}"),
            })
            .collect::<Result<_>>()?,
        Some(other) => bail!("config 'agents' must be a list, got {other}"),
    };
    let keyed = matches!(root.get("agents"), Some(Value::Object(_)));
    for (path, m) in agents {
        let name_from_key = keyed.then(|| path.trim_start_matches("agents.").to_string());
        let agent = parse_agent(r, &path, m, name_from_key, &check_model)?;
        for s in agent.mcp_servers.iter().flatten() {
            let w = &cfg.workspace;
            if !w.mcp_servers.iter().any(|m| m.name == *s) && !w.mcp_disabled.contains(s) {
                bail!("config '{path}.mcp_servers': '{s}' is not in `mcp_servers:`");
            }
        }
        if cfg.agents.iter().any(|a| a.name == agent.name) {
            bail!("config '{path}': agent '{}' is defined twice", agent.name);
        }
        cfg.agents.push(agent);
    }
    Ok(())
}

fn parse_models(v: &Value) -> Result<Vec<ModelConfig>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => {
            let mut out: Vec<ModelConfig> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let m = ModelConfig::from_value(item)
                    .map_err(|e| anyhow::anyhow!("config 'models[{i}]': {}", e.0))?;
                if out.iter().any(|o| o.name == m.name) {
                    bail!(
                        "config 'models[{i}]': model '{}' is configured twice",
                        m.name
                    );
                }
                out.push(m);
            }
            Ok(out)
        }
        other => bail!("config 'models' must be a list, got {other}"),
    }
}

fn parse_sandbox(
    r: &mut Reader<'_>,
    s: &Map<String, Value>,
    w: &mut WorkspaceConfig,
) -> Result<()> {
    r.check_keys(
        "sandbox",
        s,
        &[
            "use",
            "enabled",
            "allow_host_bash",
            "bash_timeout_seconds",
            "workspace_dir",
            // DeerFlow's container provider options: not used by Antler.
            "image",
            "port",
            "base_url",
            "auto_start",
            "container_prefix",
            "idle_timeout",
            "replicas",
            "mounts",
            "environment",
            "provisioner_url",
        ],
    );
    if let Some(u) = get_str(s, "sandbox", "use")?
        && !u.contains("LocalSandboxProvider")
    {
        r.warnings.push(format!(
            "config 'sandbox.use: {u}': Antler's workspace tools run on this host (like \
             LocalSandboxProvider); the provider is ignored"
        ));
    }
    if let Some(b) = get_bool(s, "sandbox", "enabled")? {
        w.enabled = b;
    }
    if let Some(b) = get_bool(s, "sandbox", "allow_host_bash")? {
        w.bash = b;
    }
    if let Some(t) = get_f64(s, "sandbox", "bash_timeout_seconds")? {
        if !(t > 0.0 && t <= 3600.0) {
            bail!("config 'sandbox.bash_timeout_seconds' must be between 0 and 3600, got {t}");
        }
        w.bash_timeout = Duration::from_secs_f64(t);
    }
    if let Some(d) = get_str(s, "sandbox", "workspace_dir")?.filter(|d| !d.is_empty()) {
        w.root = Some(PathBuf::from(d));
    }
    Ok(())
}

/// DeerFlow's `tools:` list (`- name: read_file` / `use: ...`): the workspace tools it names
/// are offered; the others (web search, ...) are not implemented by Antler and are reported.
fn parse_tools(r: &mut Reader<'_>, v: &Value, w: &mut WorkspaceConfig) -> Result<()> {
    let items = match v {
        Value::Null => return Ok(()),
        Value::Array(items) => items,
        other => bail!("config 'tools' must be a list, got {other}"),
    };
    let mut names = Vec::new();
    let mut unsupported = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = match item {
            Value::String(s) => s.clone(),
            Value::Object(m) => match m.get("name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => bail!("config 'tools[{i}]' has no `name`"),
            },
            other => bail!("config 'tools[{i}]' must be a mapping or a name, got {other}"),
        };
        if WORKSPACE_TOOLS.contains(&name.as_str()) {
            names.push(name);
        } else {
            unsupported.push(name);
        }
    }
    if !unsupported.is_empty() {
        r.warnings.push(format!(
            "config 'tools': {} not available in Antler; ignored",
            unsupported.join(", ")
        ));
    }
    w.tools = Some(names);
    Ok(())
}

fn str_list(m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<Vec<String>>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => bail!("config '{path}.{key}' must be a list of names, got {other}"),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(other) => bail!("config '{path}.{key}' must be a list of names, got {other}"),
    }
}

fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn parse_agent(
    r: &mut Reader<'_>,
    path: &str,
    m: &Map<String, Value>,
    name_from_key: Option<String>,
    check_model: &dyn Fn(&str, &str) -> Result<()>,
) -> Result<AgentConfig> {
    r.check_keys(
        path,
        m,
        &[
            "name",
            "description",
            "model",
            "model_name",
            "system_prompt",
            "tools",
            "subagents",
            "mcp_servers",
        ],
    );
    let name = match get_str(m, path, "name")?.or(name_from_key) {
        Some(n) => n,
        None => bail!("config '{path}' has no `name`"),
    };
    if !valid_agent_name(&name) {
        bail!(
            "config '{path}.name': '{name}' must be lower-case letters, digits and hyphens \
             (at most 64), as DeerFlow's agent names are"
        );
    }
    let model = get_str(m, path, "model")?
        .or(get_str(m, path, "model_name")?)
        .filter(|s| !s.is_empty());
    if let Some(mm) = &model {
        check_model(&format!("{path}.model"), mm)?;
    }
    let mut subagents = Vec::new();
    match m.get("subagents") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let sp = format!("{path}.subagents[{i}]");
                let Value::Object(s) = item else {
                    bail!("config '{sp}' must be a mapping, got {item}");
                };
                r.check_keys(
                    &sp,
                    s,
                    &[
                        "name",
                        "description",
                        "system_prompt",
                        "model",
                        "model_name",
                        "tools",
                        "max_turns",
                    ],
                );
                let Some(sname) = get_str(s, &sp, "name")?.filter(|n| !n.is_empty()) else {
                    bail!("config '{sp}' has no `name`");
                };
                if subagents.iter().any(|x: &SubagentSpec| x.name == sname) {
                    bail!("config '{sp}': subagent '{sname}' is defined twice");
                }
                let mut spec = SubagentSpec::new(
                    &sname,
                    &get_str(s, &sp, "description")?.unwrap_or_default(),
                    &get_str(s, &sp, "system_prompt")?.unwrap_or_else(|| {
                        "You are a subagent. Complete the task you are given with the tools \
                         available, then answer with the result."
                            .to_string()
                    }),
                );
                spec.model_name = get_str(s, &sp, "model")?
                    .or(get_str(s, &sp, "model_name")?)
                    .filter(|x| !x.is_empty());
                if let Some(mm) = &spec.model_name {
                    check_model(&format!("{sp}.model"), mm)?;
                }
                spec.tools = str_list(s, &sp, "tools")?;
                if let Some(n) = get_u64(s, &sp, "max_turns")? {
                    if !(1..=100).contains(&n) {
                        bail!("config '{sp}.max_turns' must be between 1 and 100, got {n}");
                    }
                    spec.max_turns = n as usize;
                }
                subagents.push(spec);
            }
        }
        Some(other) => bail!("config '{path}.subagents' must be a list, got {other}"),
    }
    Ok(AgentConfig {
        name,
        description: get_str(m, path, "description")?,
        model,
        system_prompt: get_str(m, path, "system_prompt")?.filter(|s| !s.trim().is_empty()),
        tools: str_list(m, path, "tools")?,
        subagents,
        mcp_servers: str_list(m, path, "mcp_servers")?,
    })
}

/// `mcp_servers: {name: {...}}` (DeerFlow's `mcpServers` entries): `type: stdio` with
/// `command` / `args` / `env`, `type: http` (also `streamable_http`) with `url` / `headers`,
/// or `type: sse` (the legacy HTTP+SSE transport) with `url` / `headers`; without `type` it follows from `command` or `url`. `enabled: false` skips an
/// entry; `timeout_seconds` (default 60) bounds one tool call and `connect_timeout_seconds`
/// (default 10) the start.
fn parse_mcp_servers(r: &mut Reader<'_>, v: &Value, w: &mut WorkspaceConfig) -> Result<()> {
    let entries = match v {
        Value::Null => return Ok(()),
        Value::Object(m) => m,
        other => bail!("config 'mcp_servers' must be a mapping of name -> server, got {other}"),
    };
    for (name, entry) in entries {
        let path = format!("mcp_servers.{name}");
        if name.is_empty() || name.len() > 64 {
            bail!("config '{path}': the server name must be 1 to 64 characters");
        }
        let Value::Object(m) = entry else {
            bail!("config '{path}' must be a mapping, got {entry}");
        };
        r.check_keys(
            &path,
            m,
            &[
                "enabled",
                "type",
                "transport",
                "command",
                "args",
                "env",
                "url",
                "headers",
                "description",
                "timeout_seconds",
                "connect_timeout_seconds",
            ],
        );
        if get_bool(m, &path, "enabled")? == Some(false) {
            w.mcp_disabled.push(name.clone());
            continue;
        }
        let kind = get_str(m, &path, "type")?.or(get_str(m, &path, "transport")?);
        let command = get_str(m, &path, "command")?.filter(|c| !c.is_empty());
        let url = get_str(m, &path, "url")?.filter(|u| !u.is_empty());
        let sse = kind.as_deref() == Some("sse");
        let stdio = match (kind.as_deref(), &command, &url) {
            (Some("stdio"), _, _) => true,
            (Some("http" | "sse" | "streamable_http" | "streamable-http"), _, _) => false,
            (Some(other), _, _) => bail!(
                "config '{path}.type': '{other}' is not a transport (stdio, http, sse, \
                 streamable_http)"
            ),
            (None, Some(_), None) => true,
            (None, None, Some(_)) => false,
            (None, Some(_), Some(_)) => {
                bail!("config '{path}' has both `command` and `url`; set `type`")
            }
            (None, None, None) => bail!("config '{path}' needs `command` (stdio) or `url` (http)"),
        };
        let transport = if stdio {
            let Some(command) = command else {
                bail!("config '{path}' is a stdio server without `command`");
            };
            McpTransport::Stdio {
                command,
                args: str_list(m, &path, "args")?.unwrap_or_default(),
                env: string_map(m, &path, "env")?,
            }
        } else {
            let Some(url) = url else {
                bail!("config '{path}' is an http server without `url`");
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("config '{path}.url': '{url}' is not an http(s) URL");
            }
            let headers = string_map(m, &path, "headers")?;
            if sse {
                McpTransport::Sse { url, headers }
            } else {
                McpTransport::Http { url, headers }
            }
        };
        let mut server = McpServerConfig::new(name.clone(), transport);
        for (key, slot) in [
            ("timeout_seconds", &mut server.call_timeout),
            ("connect_timeout_seconds", &mut server.connect_timeout),
        ] {
            if let Some(t) = get_f64(m, &path, key)? {
                if !(t > 0.0 && t <= 3600.0) {
                    bail!("config '{path}.{key}' must be between 0 and 3600, got {t}");
                }
                *slot = Duration::from_secs_f64(t);
            }
        }
        w.mcp_servers.push(server);
    }
    Ok(())
}

/// A mapping of names to scalar values (`env:`, `headers:`), values as strings.
fn string_map(m: &Map<String, Value>, path: &str, key: &str) -> Result<BTreeMap<String, String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(items)) => items
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
                other => bail!("config '{path}.{key}.{k}' must be a string, got {other}"),
            })
            .collect(),
        Some(other) => bail!("config '{path}.{key}' must be a mapping, got {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "OPENAI_KEY").then(|| "sk-from-env".to_string())
    }

    const MODELS: &str = "models:\n  - name: gpt\n    use: langchain_openai:ChatOpenAI\n    model: gpt-4o\n    api_key: $OPENAI_KEY\n  - name: claude\n    use: langchain_anthropic:ChatAnthropic\n    model: claude-sonnet\n";

    #[test]
    fn deerflow_sections_parse() {
        let text = format!(
            "{MODELS}sandbox:\n  use: deerflow.sandbox.local:LocalSandboxProvider\n  allow_host_bash: true\n  bash_timeout_seconds: 5\ntools:\n  - name: web_search\n    use: deerflow.community.tavily.tools:web_search_tool\n  - name: read_file\n    group: file:read\n  - name: bash\ntitle:\n  max_words: 4\n  model_name: claude\nagents:\n  - name: researcher\n    description: Finds things\n    model: claude\n    system_prompt: Be thorough.\n    tools: [read_file]\n    subagents:\n      - name: digger\n        description: Digs\n        tools: [read_file]\n        max_turns: 3\n"
        );
        let cfg = parse(&text, &env).unwrap();
        assert_eq!(cfg.models.len(), 2);
        assert_eq!(cfg.models[0].api_key.as_deref(), Some("sk-from-env"));
        assert!(cfg.workspace.bash);
        assert_eq!(cfg.workspace.bash_timeout, Duration::from_secs(5));
        assert_eq!(cfg.workspace.tool_names(), vec!["read_file", "bash"]);
        assert_eq!(cfg.title.max_words, 4);
        assert_eq!(cfg.title.model_name.as_deref(), Some("claude"));
        let a = &cfg.agents[0];
        assert_eq!(a.name, "researcher");
        assert_eq!(a.model.as_deref(), Some("claude"));
        assert_eq!(a.tools, Some(vec!["read_file".to_string()]));
        assert_eq!(a.subagents[0].name, "digger");
        assert_eq!(a.subagents[0].max_turns, 3);
        assert!(
            cfg.warnings.iter().any(|w| w.contains("web_search")),
            "{:?}",
            cfg.warnings
        );
        // the key never shows in the config's debug form
        assert!(!format!("{cfg:?}").contains("sk-from-env"));
    }

    #[test]
    fn defaults_are_safe() {
        let cfg = parse("", &env).unwrap();
        assert!(cfg.models.is_empty() && cfg.agents.is_empty());
        assert!(!cfg.workspace.bash, "bash is off unless allowed");
        assert_eq!(
            cfg.workspace.tool_names(),
            vec!["ls", "read_file", "write_file", "str_replace"]
        );
        let cfg = parse("sandbox:\n  enabled: false\n", &env).unwrap();
        assert!(cfg.workspace.tool_names().is_empty());
        // a mapping of agents is accepted; the key is the name
        let cfg = parse("agents:\n  helper:\n    description: Helps\n", &env).unwrap();
        assert_eq!(cfg.agents[0].name, "helper");
    }

    #[test]
    fn mcp_servers_parse() {
        let text = "mcp_servers:\n  fs:\n    command: npx\n    args: [-y, server-fs, /tmp]\n    env: {TOKEN: abc, DEBUG: 1}\n    timeout_seconds: 5\n    description: files\n  web:\n    type: http\n    url: http://127.0.0.1:9/mcp\n    headers: {Authorization: Bearer x}\n    connect_timeout_seconds: 2\n  old:\n    enabled: false\n    url: http://x/sse\n  odd:\n    url: http://127.0.0.1:9/mcp\n    oauth: {}\nagents:\n  - name: a\n    mcp_servers: [fs, old]\n";
        let cfg = parse(text, &env).unwrap();
        let m = &cfg.workspace.mcp_servers;
        assert_eq!(
            m.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            vec!["fs", "web", "odd"]
        );
        assert_eq!(
            m[0].transport,
            McpTransport::Stdio {
                command: "npx".into(),
                args: vec!["-y".into(), "server-fs".into(), "/tmp".into()],
                env: BTreeMap::from([
                    ("DEBUG".to_string(), "1".to_string()),
                    ("TOKEN".to_string(), "abc".to_string()),
                ]),
            }
        );
        assert_eq!(m[0].call_timeout, Duration::from_secs(5));
        assert_eq!(m[1].connect_timeout, Duration::from_secs(2));
        assert_eq!(m[1].call_timeout, Duration::from_secs(60));
        assert!(
            matches!(&m[1].transport, McpTransport::Http { headers, .. } if headers["Authorization"] == "Bearer x")
        );
        assert_eq!(cfg.workspace.mcp_disabled, vec!["old"]);
        let legacy = parse(
            "mcp_servers:\n  legacy:\n    type: sse\n    url: https://mcp.example/sse\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            legacy.workspace.mcp_servers[0].transport,
            McpTransport::Sse {
                url: "https://mcp.example/sse".into(),
                headers: BTreeMap::new(),
            },
            "type: sse is the legacy HTTP+SSE transport"
        );
        assert_eq!(
            cfg.agents[0].mcp_servers,
            Some(vec!["fs".to_string(), "old".to_string()])
        );
        assert!(
            cfg.warnings
                .iter()
                .any(|w| w.contains("mcp_servers.odd.oauth")),
            "{:?}",
            cfg.warnings
        );
        // secrets in env / headers never show in the debug form
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("abc") && !dbg.contains("Bearer x"), "{dbg}");
    }

    #[test]
    fn invalid_agent_sections_are_clear_errors() {
        for (text, needle) in [
            (
                format!("{MODELS}agents:\n  - name: a\n    model: gpt-5\n"),
                "agents[0].model': model 'gpt-5' is not in `models:` (configured: gpt, claude)",
            ),
            (
                "agents:\n  - name: Bad_Name\n".to_string(),
                "lower-case letters",
            ),
            (
                "agents:\n  - name: a\n  - name: a\n".to_string(),
                "defined twice",
            ),
            (
                "agents:\n  - description: no name\n".to_string(),
                "has no `name`",
            ),
            (
                "title:\n  model_name: nope\n".to_string(),
                "configured: none",
            ),
            (
                format!("{MODELS}agents:\n  - name: a\n    subagents:\n      - name: s\n        model: x\n"),
                "subagents[0].model",
            ),
            ("models: 3\n".to_string(), "'models' must be a list"),
            (
                "models:\n  - name: m\n    use: langchain_google_genai:ChatGoogleGenerativeAI\n    model: g\n".to_string(),
                "models[0]': model 'm'",
            ),
            (
                format!("{MODELS}  - name: gpt\n    provider: openai\n    model: other\n"),
                "configured twice",
            ),
            (
                "sandbox:\n  bash_timeout_seconds: 0\n".to_string(),
                "bash_timeout_seconds",
            ),
            ("tools: [{group: web}]\n".to_string(), "tools[0]' has no `name`"),
            ("mcp_servers: [a]\n".to_string(), "mapping of name -> server"),
            ("mcp_servers:\n  a: {}\n".to_string(), "needs `command` (stdio) or `url`"),
            (
                "mcp_servers:\n  a: {command: x, url: http://y}\n".to_string(),
                "both `command` and `url`",
            ),
            (
                "mcp_servers:\n  a: {type: ws, url: http://y}\n".to_string(),
                "'ws' is not a transport",
            ),
            (
                "mcp_servers:\n  a: {type: http, command: x}\n".to_string(),
                "http server without `url`",
            ),
            (
                "mcp_servers:\n  a: {url: ftp://y}\n".to_string(),
                "not an http(s) URL",
            ),
            (
                "mcp_servers:\n  a: {command: x, timeout_seconds: 0}\n".to_string(),
                "a.timeout_seconds' must be between",
            ),
            (
                "mcp_servers:\n  a: {command: x, env: {K: [1]}}\n".to_string(),
                "a.env.K' must be a string",
            ),
            (
                "agents:\n  - name: b\n    mcp_servers: [zz]\n".to_string(),
                "'zz' is not in `mcp_servers:`",
            ),
        ] {
            let err = format!("{:#}", parse(&text, &env).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
