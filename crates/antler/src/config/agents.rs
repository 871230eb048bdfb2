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
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Config;
use super::read::{
    Flag, Int, Loader, Names, Number, Section, Text, Unused, filled, timeout, within,
};

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

/// The agent-side top-level sections, as written.
pub(super) struct AgentSections {
    pub models: Value,
    pub tools: Value,
    pub sandbox: Value,
    pub title: Value,
    pub agents: Value,
    pub mcp_servers: Value,
}

/// Reads `models:`, `sandbox:`, `tools:`, `mcp_servers:`, `title:` and `agents:` (in this order:
/// the later ones refer to the earlier ones) into `cfg`.
pub(super) fn apply(l: &mut Loader<'_>, s: AgentSections, cfg: &mut Config) -> Result<()> {
    cfg.models = parse_models(s.models)?;
    l.apply::<Sandbox>(s.sandbox, cfg)?;
    parse_tools(l, s.tools, &mut cfg.workspace)?;
    parse_mcp_servers(l, s.mcp_servers, &mut cfg.workspace)?;
    l.apply::<Title>(s.title, cfg)?;
    for AgentEntry { path, key, map } in agent_entries(s.agents)? {
        let agent = l
            .read::<Agent>(&path, map)?
            .into_config(l, &path, key, &cfg.models)?;
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

/// That the model `name` (named at `path`) is in `models:`.
fn check_model(models: &[ModelConfig], path: &str, name: &str) -> Result<()> {
    if models.iter().any(|m| m.name == name) {
        return Ok(());
    }
    let configured = if models.is_empty() {
        "none".to_string()
    } else {
        let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    };
    bail!("config '{path}': model '{name}' is not in `models:` (configured: {configured})")
}

fn parse_models(v: Value) -> Result<Vec<ModelConfig>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => bail!("config 'models' must be a list, got {other}"),
    };
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

/// `sandbox:`.
#[derive(Deserialize)]
#[allow(dead_code)] // the `Unused` fields: accepted, never read
struct Sandbox {
    #[serde(rename = "use")]
    provider: Option<Text>,
    enabled: Option<Flag>,
    allow_host_bash: Option<Flag>,
    bash_timeout_seconds: Option<Number>,
    workspace_dir: Option<Text>,
    // DeerFlow's container provider options: not used by Antler.
    image: Option<Unused>,
    port: Option<Unused>,
    base_url: Option<Unused>,
    auto_start: Option<Unused>,
    container_prefix: Option<Unused>,
    idle_timeout: Option<Unused>,
    replicas: Option<Unused>,
    mounts: Option<Unused>,
    environment: Option<Unused>,
    provisioner_url: Option<Unused>,
}

impl Section for Sandbox {
    const NAME: &'static str = "sandbox";
    fn apply(self, l: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        if let Some(Text(u)) = &self.provider
            && !u.contains("LocalSandboxProvider")
        {
            l.warn(format!(
                "config 'sandbox.use: {u}': Antler's workspace tools run on this host (like \
                 LocalSandboxProvider); the provider is ignored"
            ));
        }
        let w = &mut cfg.workspace;
        if let Some(Flag(b)) = self.enabled {
            w.enabled = b;
        }
        if let Some(Flag(b)) = self.allow_host_bash {
            w.bash = b;
        }
        if let Some(Number(t)) = self.bash_timeout_seconds {
            w.bash_timeout = timeout("sandbox.bash_timeout_seconds", t, "")?;
        }
        if let Some(d) = filled(self.workspace_dir) {
            w.root = Some(PathBuf::from(d));
        }
        Ok(())
    }
}

/// `title:`.
#[derive(Deserialize)]
struct Title {
    enabled: Option<Flag>,
    max_words: Option<Int>,
    max_chars: Option<Int>,
    model_name: Option<Text>,
}

impl Section for Title {
    const NAME: &'static str = "title";
    fn apply(self, _: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        let t = &mut cfg.title;
        if let Some(Flag(b)) = self.enabled {
            t.enabled = b;
        }
        if let Some(Int(n)) = self.max_words {
            t.max_words = within("title.max_words", n, 1..=50, "")? as usize;
        }
        if let Some(Int(n)) = self.max_chars {
            t.max_chars = within("title.max_chars", n, 1..=500, "")? as usize;
        }
        if let Some(m) = filled(self.model_name) {
            check_model(&cfg.models, "title.model_name", &m)?;
            t.model_name = Some(m);
        }
        Ok(())
    }
}

/// DeerFlow's `tools:` list (`- name: read_file` / `use: ...`): the workspace tools it names
/// are offered; the others (web search, ...) are not implemented by Antler and are reported.
fn parse_tools(l: &mut Loader<'_>, v: Value, w: &mut WorkspaceConfig) -> Result<()> {
    let items = match v {
        Value::Null => return Ok(()),
        Value::Array(items) => items,
        other => bail!("config 'tools' must be a list, got {other}"),
    };
    let names = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| tool_name(i, item))
        .collect::<Result<Vec<_>>>()?;
    let (names, unsupported): (Vec<_>, Vec<_>) = names
        .into_iter()
        .partition(|n| WORKSPACE_TOOLS.contains(&n.as_str()));
    if !unsupported.is_empty() {
        l.warn(format!(
            "config 'tools': {} not available in Antler; ignored",
            unsupported.join(", ")
        ));
    }
    w.tools = Some(names);
    Ok(())
}

/// The name of `tools[i]`: a bare name, or a mapping's `name` (its other keys are DeerFlow's).
fn tool_name(i: usize, item: Value) -> Result<String> {
    match item {
        Value::String(s) => Ok(s),
        Value::Object(mut m) => match m.remove("name") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            _ => bail!("config 'tools[{i}]' has no `name`"),
        },
        other => bail!("config 'tools[{i}]' must be a mapping or a name, got {other}"),
    }
}

/// One `agents:` entry as written.
struct AgentEntry {
    /// `agents[0]` or `agents.<name>`.
    path: String,
    /// The name when `agents:` is a mapping of names.
    key: Option<String>,
    map: Map<String, Value>,
}

/// The `agents:` entries: a list, or a mapping whose keys are the names.
fn agent_entries(v: Value) -> Result<Vec<AgentEntry>> {
    let entry = |path, key, map| AgentEntry { path, key, map };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(m) => Ok(entry(format!("agents[{i}]"), None, m)),
                other => bail!("config 'agents[{i}]' must be a mapping, got {other}"),
            })
            .collect(),
        // `agents: {name: {...}}` is accepted too; the key is the name.
        Value::Object(by_name) => by_name
            .into_iter()
            .map(|(name, item)| match item {
                Value::Object(m) => Ok(entry(format!("agents.{name}"), Some(name), m)),
                Value::Null => bail!("config 'agents.{name}' is empty"),
                other => bail!("config 'agents.{name}' must be a mapping, got {other}"),
            })
            .collect(),
        other => bail!("config 'agents' must be a list, got {other}"),
    }
}

fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// One `agents:` entry.
#[derive(Deserialize)]
struct Agent {
    name: Option<Text>,
    description: Option<Text>,
    model: Option<Text>,
    model_name: Option<Text>,
    system_prompt: Option<Text>,
    tools: Option<Names>,
    subagents: Option<Value>,
    mcp_servers: Option<Names>,
}

impl Agent {
    fn into_config(
        self,
        l: &mut Loader<'_>,
        path: &str,
        name_from_key: Option<String>,
        models: &[ModelConfig],
    ) -> Result<AgentConfig> {
        let Some(name) = self.name.map(|Text(n)| n).or(name_from_key) else {
            bail!("config '{path}' has no `name`");
        };
        if !valid_agent_name(&name) {
            bail!(
                "config '{path}.name': '{name}' must be lower-case letters, digits and hyphens \
                 (at most 64), as DeerFlow's agent names are"
            );
        }
        let model = filled(self.model.or(self.model_name));
        if let Some(m) = &model {
            check_model(models, &format!("{path}.model"), m)?;
        }
        let subagents = match self.subagents {
            None => Vec::new(),
            Some(Value::Array(items)) => parse_subagents(l, path, items, models)?,
            Some(other) => bail!("config '{path}.subagents' must be a list, got {other}"),
        };
        Ok(AgentConfig {
            name,
            description: self.description.map(|Text(d)| d),
            model,
            system_prompt: self
                .system_prompt
                .map(|Text(p)| p)
                .filter(|p| !p.trim().is_empty()),
            tools: self.tools.map(|Names(t)| t),
            subagents,
            mcp_servers: self.mcp_servers.map(|Names(s)| s),
        })
    }
}

/// One `subagents:` entry of an agent.
#[derive(Deserialize)]
struct Subagent {
    name: Option<Text>,
    description: Option<Text>,
    system_prompt: Option<Text>,
    model: Option<Text>,
    model_name: Option<Text>,
    tools: Option<Names>,
    max_turns: Option<Int>,
}

fn parse_subagents(
    l: &mut Loader<'_>,
    path: &str,
    items: Vec<Value>,
    models: &[ModelConfig],
) -> Result<Vec<SubagentSpec>> {
    let mut subagents: Vec<SubagentSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let sp = format!("{path}.subagents[{i}]");
        let Value::Object(m) = item else {
            bail!("config '{sp}' must be a mapping, got {item}");
        };
        let spec = l
            .read::<Subagent>(&sp, m)?
            .into_spec(&sp, &subagents, models)?;
        subagents.push(spec);
    }
    Ok(subagents)
}

impl Subagent {
    /// The spec of subagent `sp`, whose name must differ from those `before` it.
    fn into_spec(
        self,
        sp: &str,
        before: &[SubagentSpec],
        models: &[ModelConfig],
    ) -> Result<SubagentSpec> {
        let Some(name) = filled(self.name) else {
            bail!("config '{sp}' has no `name`");
        };
        if before.iter().any(|x| x.name == name) {
            bail!("config '{sp}': subagent '{name}' is defined twice");
        }
        let mut spec = SubagentSpec::new(
            &name,
            &self.description.map(|Text(d)| d).unwrap_or_default(),
            &self.system_prompt.map(|Text(p)| p).unwrap_or_else(|| {
                "You are a subagent. Complete the task you are given with the tools \
                 available, then answer with the result."
                    .to_string()
            }),
        );
        spec.model_name = filled(self.model.or(self.model_name));
        if let Some(m) = &spec.model_name {
            check_model(models, &format!("{sp}.model"), m)?;
        }
        spec.tools = self.tools.map(|Names(t)| t);
        if let Some(Int(n)) = self.max_turns {
            spec.max_turns = within(&format!("{sp}.max_turns"), n, 1..=100, "")? as usize;
        }
        Ok(spec)
    }
}

/// One `mcp_servers:` entry (every field optional: see `parse_mcp_servers`).
#[derive(Deserialize)]
struct McpEntry {
    #[allow(dead_code)] // decided before, by `parse_mcp_servers`; checked here
    enabled: Option<Flag>,
    #[serde(rename = "type")]
    kind: Option<Text>,
    transport: Option<Text>,
    command: Option<Text>,
    args: Option<Names>,
    env: Option<Value>,
    url: Option<Text>,
    headers: Option<Value>,
    #[allow(dead_code)] // accepted, not used
    description: Option<Unused>,
    timeout_seconds: Option<Number>,
    connect_timeout_seconds: Option<Number>,
}

/// `mcp_servers: {name: {...}}` (DeerFlow's `mcpServers` entries): `type: stdio` with
/// `command` / `args` / `env`, `type: http` (also `streamable_http`) with `url` / `headers`,
/// or `type: sse` (the legacy HTTP+SSE transport) with `url` / `headers`; without `type` it
/// follows from `command` or `url`. `enabled: false` skips an entry; `timeout_seconds`
/// (default 60) bounds one tool call and `connect_timeout_seconds` (default 10) the start.
fn parse_mcp_servers(l: &mut Loader<'_>, v: Value, w: &mut WorkspaceConfig) -> Result<()> {
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
        // Of an entry switched off only the keys are checked (its values are moot).
        let off = m.get("enabled").cloned().map(Flag::try_from);
        if let Some(Ok(Flag(false))) = off {
            let keys = m.into_iter().map(|(k, _)| (k, Value::Null)).collect();
            l.read::<McpEntry>(&path, keys)?;
            w.mcp_disabled.push(name);
            continue;
        }
        let entry = l.read::<McpEntry>(&path, m)?;
        w.mcp_servers.push(entry.into_server(&path, name)?);
    }
    Ok(())
}

impl McpEntry {
    fn into_server(self, path: &str, name: String) -> Result<McpServerConfig> {
        let mut server = McpServerConfig::new(name, self.transport(path)?);
        if let Some(Number(t)) = self.timeout_seconds {
            server.call_timeout = timeout(&format!("{path}.timeout_seconds"), t, "")?;
        }
        if let Some(Number(t)) = self.connect_timeout_seconds {
            server.connect_timeout = timeout(&format!("{path}.connect_timeout_seconds"), t, "")?;
        }
        Ok(server)
    }

    /// The transport: `type` (or `transport`), else whichever of `command` / `url` is set.
    fn transport(&self, path: &str) -> Result<McpTransport> {
        let kind = self.kind.as_ref().or(self.transport.as_ref());
        let command = self
            .command
            .as_ref()
            .map(|Text(c)| c.clone())
            .filter(|c| !c.is_empty());
        let url = self
            .url
            .as_ref()
            .map(|Text(u)| u.clone())
            .filter(|u| !u.is_empty());
        let stdio = match (kind.map(|Text(k)| k.as_str()), &command, &url) {
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
        if stdio {
            let Some(command) = command else {
                bail!("config '{path}' is a stdio server without `command`");
            };
            let args = self
                .args
                .as_ref()
                .map(|Names(a)| a.clone())
                .unwrap_or_default();
            let env = string_map(&format!("{path}.env"), self.env.as_ref())?;
            return Ok(McpTransport::Stdio { command, args, env });
        }
        let Some(url) = url else {
            bail!("config '{path}' is an http server without `url`");
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("config '{path}.url': '{url}' is not an http(s) URL");
        }
        let headers = string_map(&format!("{path}.headers"), self.headers.as_ref())?;
        Ok(match kind {
            Some(Text(k)) if k == "sse" => McpTransport::Sse { url, headers },
            _ => McpTransport::Http { url, headers },
        })
    }
}

/// A mapping of names to scalar values (`env:`, `headers:`), values as strings.
fn string_map(path: &str, v: Option<&Value>) -> Result<BTreeMap<String, String>> {
    match v {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(items)) => items
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
                other => bail!("config '{path}.{k}' must be a string, got {other}"),
            })
            .collect(),
        Some(other) => bail!("config '{path}' must be a mapping, got {other}"),
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
    fn nested_entries_warn_in_order_and_a_server_switched_off_is_not_checked() {
        let text = "mcp_servers:\n  a: {enabled: 'false', args: [--port, 8080], timeout_seconds: -1, type: ws, q: 1}\n  b: {command: x, zz: 1}\nagents:\n  - name: a\n    subagents: [{name: s, w1: 1}]\n    w2: 2\n  - name: b\n    w3: 3\n";
        let cfg = parse(text, &env).unwrap();
        assert_eq!(cfg.workspace.mcp_disabled, vec!["a"]);
        assert_eq!(
            cfg.warnings,
            [
                "unknown config key 'mcp_servers.a.q' ignored",
                "unknown config key 'mcp_servers.b.zz' ignored",
                "unknown config key 'agents[0].w2' ignored",
                "unknown config key 'agents[0].subagents[0].w1' ignored",
                "unknown config key 'agents[1].w3' ignored",
            ]
        );
    }

    #[test]
    fn each_agent_section_names_the_path_of_a_bad_value() {
        for (text, message) in [
            (
                "agents:\n  - name: a\n    subagents: [{name: s, max_turns: 101}]\n",
                "config 'agents[0].subagents[0].max_turns' must be between 1 and 100, got 101",
            ),
            (
                "agents:\n  - name: a\n    subagents: [x]\n",
                "config 'agents[0].subagents[0]' must be a mapping, got \"x\"",
            ),
            (
                "agents:\n  - name: a\n    tools: read_file\n",
                "config 'agents[0].tools' must be a list of names, got \"read_file\"",
            ),
            (
                "agents:\n  - name: a\n    description: [1]\n",
                "config 'agents[0].description' must be a string, got [1]",
            ),
            ("agents:\n  a:\n", "config 'agents.a' is empty"),
            (
                "sandbox:\n  enabled: 2\n",
                "config 'sandbox.enabled' must be true or false, got 2",
            ),
            (
                "title:\n  max_chars: 501\n",
                "config 'title.max_chars' must be between 1 and 500, got 501",
            ),
            (
                "title: 1\n",
                "config section 'title' must be a mapping, got 1",
            ),
            (
                "tools: [3]\n",
                "config 'tools[0]' must be a mapping or a name, got 3",
            ),
            (
                "mcp_servers:\n  a: {command: x, args: [1]}\n",
                "config 'mcp_servers.a.args' must be a list of names, got 1",
            ),
            (
                "mcp_servers:\n  a: {command: x, enabled: 3}\n",
                "config 'mcp_servers.a.enabled' must be true or false, got 3",
            ),
            (
                "mcp_servers:\n  a: {url: 'http://x', headers: {H: {a: 1}}}\n",
                "config 'mcp_servers.a.headers.H' must be a string, got {\"a\":1}",
            ),
            (
                "models:\n  - name: m\n    provider: openai\n    model: x\n    max_retries: 21\n",
                "config 'models[0]': model 'm': field `max_retries`: 21 is more than 20",
            ),
        ] {
            let err = format!("{:#}", parse(text, &env).unwrap_err());
            assert_eq!(err, message, "{text}");
        }
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
