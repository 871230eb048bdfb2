//! The configuration file: where it is found, `$VAR` / `${VAR}` / `${VAR:-default}` substitution,
//! YAML parsing, DeerFlow's section names, warnings for unknown keys and clear errors for invalid
//! values. Every option has a default, so no file at all is a valid configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use antler_auth::{AuthConfig, AuthMode};
use antler_bridge::{MemoryBridgeConfig, RedisBridgeConfig};
use antler_llm::{ModelConfig, TitleOptions};
use antler_runtime::{MultitaskStrategy, Recovery, RuntimeConfig};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

mod agents;

use agents::parse_agent_sections;
pub use agents::{AgentConfig, WORKSPACE_TOOLS, WorkspaceConfig};

/// Where the durable state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Everything in process memory (lost at exit).
    Memory,
    /// SQLite under `sqlite_dir`.
    Sqlite,
    /// PostgreSQL at `postgres_url`.
    Postgres,
    /// MySQL / MariaDB at `mysql_url`.
    Mysql,
}

impl Backend {
    /// Whether one process owns the database (no other server can share it): SQLite, memory.
    pub fn exclusive(self) -> bool {
        matches!(self, Backend::Memory | Backend::Sqlite)
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        }
    }
}

/// Whether this build includes the storage backend `name` (`postgres` and `mysql` are cargo
/// features of the `antler` crate).
pub fn backend_compiled(name: &str) -> bool {
    matches!(name, "memory" | "sqlite")
        || (name == "postgres" && cfg!(feature = "postgres"))
        || (name == "mysql" && cfg!(feature = "mysql"))
}

/// Where run events are kept (`run_events.backend`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEventsBackend {
    /// In the database, with everything else (default).
    Db,
    /// JSON Lines files under `jsonl_base_dir` (default `<sqlite_dir>/run-events`).
    Jsonl(Option<PathBuf>),
    /// In process memory (lost at exit).
    Memory,
}

/// Connection pool options of the server databases (`database.pool_size`, timeouts).
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Most connections per process.
    pub size: u32,
    /// How long a request waits for a free connection.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            size: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub host: String,
    /// Listen port (0 = any free port).
    pub port: u16,
    /// SSE heartbeat interval.
    pub heartbeat: Duration,
    /// Storage backend.
    pub backend: Backend,
    /// Directory of the SQLite database.
    pub sqlite_dir: PathBuf,
    /// `database.postgres_url`.
    pub postgres_url: Option<String>,
    /// `database.mysql_url`.
    pub mysql_url: Option<String>,
    /// Pool options of PostgreSQL / MySQL.
    pub pool: PoolConfig,
    /// Where run events are kept (`run_events.backend`).
    pub run_events: RunEventsBackend,
    /// In-memory stream bridge options.
    pub bridge: MemoryBridgeConfig,
    /// `Some` when `stream_bridge.type: redis`: the Redis Streams bridge and its options
    /// (`bridge` is then unused).
    pub redis_bridge: Option<RedisBridgeConfig>,
    /// Run kernel options.
    pub runtime: RuntimeConfig,
    /// Register the six example graphs.
    pub examples: bool,
    /// Authentication (`auth:` section).
    pub auth: AuthConfig,
    /// Chat models (`models:`), in order; the first is the default. Empty: the server starts,
    /// and a `lead_agent` run fails at once saying what to configure.
    pub models: Vec<ModelConfig>,
    /// Declarative agents (`agents:`), each served as its own graph and assistant.
    pub agents: Vec<AgentConfig>,
    /// The per-thread workspace tools of the agents (`sandbox:` and `tools:`).
    pub workspace: WorkspaceConfig,
    /// Title generation (`title:`).
    pub title: TitleOptions,
    /// Warnings found while loading (unknown keys...), logged at startup.
    pub warnings: Vec<String>,
    /// The file the configuration came from, if any.
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8123,
            heartbeat: Duration::from_secs(15),
            backend: Backend::Sqlite,
            sqlite_dir: PathBuf::from(".antler"),
            postgres_url: None,
            mysql_url: None,
            pool: PoolConfig::default(),
            run_events: RunEventsBackend::Db,
            bridge: MemoryBridgeConfig::default(),
            redis_bridge: None,
            runtime: RuntimeConfig::default(),
            examples: true,
            auth: AuthConfig::default(),
            models: Vec::new(),
            agents: Vec::new(),
            workspace: WorkspaceConfig::default(),
            title: TitleOptions::default(),
            warnings: Vec::new(),
            source: None,
        }
    }
}

/// Finds the config file: `--config`, then `ANTLER_CONFIG`, then `DEER_FLOW_CONFIG_PATH`, then
/// `./config.yaml`. An explicitly named file must exist; `./config.yaml` is optional.
pub fn locate(explicit: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.exists() {
            bail!("config file {} does not exist", p.display());
        }
        return Ok(Some(p.to_path_buf()));
    }
    for var in ["ANTLER_CONFIG", "DEER_FLOW_CONFIG_PATH"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            let p = PathBuf::from(v);
            if !p.exists() {
                bail!("config file {} (from {var}) does not exist", p.display());
            }
            return Ok(Some(p));
        }
    }
    let p = PathBuf::from("config.yaml");
    Ok(p.exists().then_some(p))
}

/// Substitutes `$VAR`, `${VAR}` and `${VAR:-default}` in the raw text. `$$` is a literal `$`.
/// A variable that is unset (and has no default) is an error naming it.
pub fn substitute(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'$' {
            let ch = text[i..].chars().next().unwrap_or('\0');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        if bytes.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'{') {
            let Some(close) = text[i + 2..].find('}') else {
                bail!("unterminated ${{ in config at byte {i}");
            };
            let inner = &text[i + 2..i + 2 + close];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                bail!("invalid variable name '{name}' in config");
            }
            match (lookup(name), default) {
                (Some(v), _) if !(v.is_empty() && default.is_some()) => out.push_str(&v),
                (_, Some(d)) => out.push_str(d),
                (None, None) => bail!("environment variable {name} is not set (used in config)"),
                (Some(v), None) => out.push_str(&v),
            }
            i += 2 + close + 1;
            continue;
        }
        let name_len = text[i + 1..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if name_len == 0 || bytes[i + 1].is_ascii_digit() {
            out.push('$');
            i += 1;
            continue;
        }
        let name = &text[i + 1..i + 1 + name_len];
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => bail!("environment variable {name} is not set (used in config)"),
        }
        i += 1 + name_len;
    }
    Ok(out)
}

fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

struct Reader<'a> {
    warnings: &'a mut Vec<String>,
}

impl Reader<'_> {
    /// Warns about keys of `section` that are not in `known`.
    fn check_keys(&mut self, section: &str, map: &Map<String, Value>, known: &[&str]) {
        for k in map.keys() {
            if !known.contains(&k.as_str()) {
                let path = if section.is_empty() {
                    k.clone()
                } else {
                    format!("{section}.{k}")
                };
                self.warnings
                    .push(format!("unknown config key '{path}' ignored"));
            }
        }
    }
}

fn section<'a>(root: &'a Map<String, Value>, name: &str) -> Result<Option<&'a Map<String, Value>>> {
    match root.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => bail!("config section '{name}' must be a mapping, got {other}"),
    }
}

fn get_str(m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<String>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => bail!("config '{path}.{key}' must be a string, got {other}"),
    }
}

fn get_f64(m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<f64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
            match n {
                Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
                _ => bail!("config '{path}.{key}' must be a non-negative number, got {v}"),
            }
        }
    }
}

fn get_u64(m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<u64>> {
    match get_f64(m, path, key)? {
        None => Ok(None),
        Some(n) if n.fract() == 0.0 => Ok(Some(n as u64)),
        Some(n) => bail!("config '{path}.{key}' must be an integer, got {n}"),
    }
}

fn get_bool(m: &Map<String, Value>, path: &str, key: &str) -> Result<Option<bool>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if matches!(s.as_str(), "true" | "false") => Ok(Some(s == "true")),
        Some(other) => bail!("config '{path}.{key}' must be true or false, got {other}"),
    }
}

/// Parses configuration text (already read from a file).
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let text = substitute(text, lookup)?;
    let root: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_saphyr::from_str(&text).context("config is not valid YAML")?
    };
    let root = match root {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => bail!("config must be a mapping at the top level, got {other}"),
    };
    let mut cfg = Config::default();
    let mut warnings = Vec::new();
    let mut r = Reader {
        warnings: &mut warnings,
    };
    r.check_keys(
        "",
        &root,
        &[
            "server",
            "database",
            "checkpointer",
            "stream_bridge",
            "run_events",
            "runs",
            "graphs",
            "config_version",
            "log_level",
            "auth",
            // Agent sections (parsed in `agents.rs`).
            "models",
            "tools",
            "sandbox",
            "title",
            "agents",
            "mcp_servers",
            // DeerFlow sections Antler does not use yet; accepted silently so a DeerFlow
            // config.yaml loads without noise.
            "tool_groups",
            "skills",
            "memory",
            "summarization",
            "subagents",
            "channels",
            "run_ownership",
        ],
    );
    if let Some(s) = section(&root, "server")? {
        r.check_keys("server", s, &["host", "port", "heartbeat_seconds"]);
        if let Some(h) = get_str(s, "server", "host")? {
            cfg.host = h;
        }
        if let Some(p) = get_u64(s, "server", "port")? {
            cfg.port = u16::try_from(p).context("config 'server.port' must be 0..65535")?;
        }
        if let Some(h) = get_f64(s, "server", "heartbeat_seconds")? {
            if h < 0.1 {
                bail!("config 'server.heartbeat_seconds' must be at least 0.1");
            }
            cfg.heartbeat = Duration::from_secs_f64(h);
        }
    }
    if let Some(s) = section(&root, "database")? {
        r.check_keys(
            "database",
            s,
            &[
                "backend",
                "sqlite_dir",
                "postgres_url",
                "mysql_url",
                "pool_size",
                "pool_timeout",
            ],
        );
        if let Some(b) = get_str(s, "database", "backend")? {
            cfg.backend = match b.as_str() {
                "sqlite" => Backend::Sqlite,
                "memory" => Backend::Memory,
                "postgres" | "postgresql" => Backend::Postgres,
                "mysql" | "mariadb" => Backend::Mysql,
                other => bail!(
                    "config 'database.backend' must be sqlite, postgres, mysql or memory, got '{other}'"
                ),
            };
            if !backend_compiled(cfg.backend.as_str()) {
                bail!(
                    "config 'database.backend: {b}': this build of antler was compiled without the '{}' feature",
                    cfg.backend.as_str()
                );
            }
        }
        if let Some(d) = get_str(s, "database", "sqlite_dir")? {
            cfg.sqlite_dir = PathBuf::from(d);
        }
        cfg.postgres_url = get_str(s, "database", "postgres_url")?.filter(|u| !u.is_empty());
        cfg.mysql_url = get_str(s, "database", "mysql_url")?.filter(|u| !u.is_empty());
        if let Some(n) = get_u64(s, "database", "pool_size")? {
            if !(1..=1000).contains(&n) {
                bail!("config 'database.pool_size' must be between 1 and 1000, got {n}");
            }
            cfg.pool.size = n as u32;
        }
        if let Some(t) = get_f64(s, "database", "pool_timeout")? {
            if !(t > 0.0 && t <= 3600.0) {
                bail!("config 'database.pool_timeout' must be between 0 and 3600 seconds, got {t}");
            }
            cfg.pool.acquire_timeout = Duration::from_secs_f64(t);
        }
        match cfg.backend {
            Backend::Postgres if cfg.postgres_url.is_none() => {
                bail!("config 'database.backend: postgres' needs 'database.postgres_url'")
            }
            Backend::Mysql if cfg.mysql_url.is_none() => {
                bail!("config 'database.backend: mysql' needs 'database.mysql_url'")
            }
            _ => {}
        }
    }
    if let Some(s) = section(&root, "checkpointer")? {
        // DeerFlow's legacy section: `type: memory|sqlite`.
        r.check_keys("checkpointer", s, &["type", "connection_string"]);
        if let Some(t) = get_str(s, "checkpointer", "type")? {
            match t.as_str() {
                "memory" => cfg.backend = Backend::Memory,
                "sqlite" => cfg.backend = Backend::Sqlite,
                other => {
                    bail!("config 'checkpointer.type' must be memory or sqlite, got '{other}'")
                }
            }
        }
    }
    if let Some(s) = section(&root, "stream_bridge")? {
        r.check_keys(
            "stream_bridge",
            s,
            &[
                "type",
                "queue_maxsize",
                "max_bytes",
                "terminal_ttl_seconds",
                "abandoned_ttl_seconds",
                "awaiting_input_ttl_seconds",
                "cleanup_interval_seconds",
                "redis_url",
                "stream_ttl_seconds",
                "max_connections",
                "key_prefix",
                "block_ms",
                "response_timeout_ms",
                "max_retries",
                "wait_timeout_seconds",
            ],
        );
        let redis = match get_str(s, "stream_bridge", "type")?.as_deref() {
            None | Some("memory") => false,
            Some("redis") => true,
            Some(other) => {
                bail!("config 'stream_bridge.type' must be memory or redis, got '{other}'")
            }
        };
        let b = &mut cfg.bridge;
        if let Some(n) = get_u64(s, "stream_bridge", "queue_maxsize")? {
            b.queue_maxsize = n as usize;
        }
        if let Some(n) = get_u64(s, "stream_bridge", "max_bytes")? {
            b.max_bytes = n as usize;
        }
        if let Some(n) = get_u64(s, "stream_bridge", "terminal_ttl_seconds")? {
            b.terminal_ttl_seconds = n;
        }
        if let Some(n) = get_u64(s, "stream_bridge", "abandoned_ttl_seconds")? {
            b.abandoned_ttl_seconds = n;
        }
        if let Some(n) = get_u64(s, "stream_bridge", "awaiting_input_ttl_seconds")? {
            b.awaiting_input_ttl_seconds = n;
        }
        if let Some(n) = get_u64(s, "stream_bridge", "cleanup_interval_seconds")? {
            b.cleanup_interval_seconds = n;
        }
        if redis {
            // DeerFlow's fallbacks: the key, then DEER_FLOW_STREAM_BRIDGE_REDIS_URL, then REDIS_URL
            // (then the bridge's default, redis://127.0.0.1:6379/0).
            let redis_url = get_str(s, "stream_bridge", "redis_url")?
                .filter(|u| !u.trim().is_empty())
                .or_else(|| {
                    antler_bridge::redis_bridge::REDIS_URL_ENV
                        .iter()
                        .find_map(|k| lookup(k).filter(|v| !v.trim().is_empty()))
                });
            let mut rc = RedisBridgeConfig {
                redis_url,
                ..RedisBridgeConfig::default()
            };
            if let Some(n) = get_u64(s, "stream_bridge", "queue_maxsize")? {
                rc.queue_maxsize = n as usize;
            }
            if let Some(n) = get_u64(s, "stream_bridge", "stream_ttl_seconds")? {
                rc.stream_ttl_seconds = n;
            }
            if let Some(n) = get_u64(s, "stream_bridge", "awaiting_input_ttl_seconds")? {
                rc.awaiting_input_ttl_seconds = n;
            }
            if let Some(p) = get_str(s, "stream_bridge", "key_prefix")? {
                rc.key_prefix = p;
            }
            if let Some(n) = get_u64(s, "stream_bridge", "block_ms")? {
                rc.block_ms = n;
            }
            if let Some(n) = get_u64(s, "stream_bridge", "response_timeout_ms")? {
                rc.response_timeout_ms = n;
            }
            if let Some(n) = get_u64(s, "stream_bridge", "max_retries")? {
                rc.max_retries = n.min(100) as u32;
            }
            if let Some(n) = get_u64(s, "stream_bridge", "wait_timeout_seconds")? {
                rc.wait_timeout_seconds = n;
            }
            rc.validate()
                .map_err(|e| anyhow::anyhow!("config 'stream_bridge': {e}"))?;
            cfg.redis_bridge = Some(rc);
        }
        b.validate()
            .map_err(|e| anyhow::anyhow!("config 'stream_bridge': {e}"))?;
    }
    if let Some(s) = section(&root, "run_events")? {
        r.check_keys(
            "run_events",
            s,
            &[
                "backend",
                "jsonl_base_dir",
                "max_trace_content",
                "track_token_usage",
                "batch_size",
            ],
        );
        if let Some(b) = get_str(s, "run_events", "backend")? {
            cfg.run_events = match b.as_str() {
                "db" => RunEventsBackend::Db,
                "memory" => RunEventsBackend::Memory,
                "jsonl" => RunEventsBackend::Jsonl(None),
                other => {
                    bail!("config 'run_events.backend' must be db, jsonl or memory, got '{other}'")
                }
            };
        }
        if let Some(d) = get_str(s, "run_events", "jsonl_base_dir")? {
            match &mut cfg.run_events {
                RunEventsBackend::Jsonl(dir) => *dir = Some(PathBuf::from(d)),
                _ => r.warnings.push(
                    "config 'run_events.jsonl_base_dir' is ignored unless 'run_events.backend' is jsonl"
                        .into(),
                ),
            }
        }
        if let Some(n) = get_u64(s, "run_events", "max_trace_content")? {
            if !(256..=10_485_760).contains(&n) {
                bail!(
                    "config 'run_events.max_trace_content' must be between 256 and 10485760 bytes, got {n}"
                );
            }
            cfg.runtime.max_trace_content = n as usize;
        }
        if let Some(n) = get_u64(s, "run_events", "batch_size")? {
            if n == 0 {
                bail!("config 'run_events.batch_size' must be at least 1");
            }
            cfg.runtime.event_batch_size = n as usize;
        }
    }
    if let Some(s) = section(&root, "runs")? {
        r.check_keys(
            "runs",
            s,
            &[
                "default_multitask_strategy",
                "timeout_seconds",
                "stream_retention_seconds",
                "shutdown_grace_seconds",
                "webhook_attempts",
                "recovery",
                "lease_ttl_seconds",
                "max_concurrent_runs",
                "poll_interval_ms",
            ],
        );
        if let Some(n) = get_u64(s, "runs", "max_concurrent_runs")? {
            if n == 0 {
                bail!("config 'runs.max_concurrent_runs' must be at least 1");
            }
            cfg.runtime.max_concurrent_runs = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(n) = get_u64(s, "runs", "poll_interval_ms")? {
            if !(10..=60_000).contains(&n) {
                bail!("config 'runs.poll_interval_ms' must be between 10 and 60000, got {n}");
            }
            cfg.runtime.poll_interval = Duration::from_millis(n);
        }
        if let Some(m) = get_str(s, "runs", "recovery")? {
            cfg.runtime.recovery = Recovery::parse(&m).with_context(|| {
                format!("config 'runs.recovery' must be resume or fail, got '{m}'")
            })?;
        }
        if let Some(t) = get_f64(s, "runs", "lease_ttl_seconds")? {
            if !(0.5..=3600.0).contains(&t) {
                bail!("config 'runs.lease_ttl_seconds' must be between 0.5 and 3600, got {t}");
            }
            cfg.runtime.lease_ttl = Duration::from_secs_f64(t);
        }
        if let Some(m) = get_str(s, "runs", "default_multitask_strategy")? {
            cfg.runtime.default_multitask_strategy = MultitaskStrategy::parse(&m).with_context(|| {
                format!("config 'runs.default_multitask_strategy' must be reject, interrupt, rollback or enqueue, got '{m}'")
            })?;
        }
        if let Some(t) = get_f64(s, "runs", "timeout_seconds")? {
            cfg.runtime.run_timeout = (t > 0.0).then(|| Duration::from_secs_f64(t));
        }
        if let Some(t) = get_f64(s, "runs", "stream_retention_seconds")? {
            cfg.runtime.stream_cleanup_delay = Duration::from_secs_f64(t);
        }
        if let Some(t) = get_f64(s, "runs", "shutdown_grace_seconds")? {
            cfg.runtime.shutdown_grace = Duration::from_secs_f64(t);
        }
        if let Some(n) = get_u64(s, "runs", "webhook_attempts")? {
            cfg.runtime.webhook_attempts = n.clamp(1, 20) as u32;
        }
    }
    if let Some(s) = section(&root, "graphs")? {
        r.check_keys("graphs", s, &["examples"]);
        if let Some(b) = get_bool(s, "graphs", "examples")? {
            cfg.examples = b;
        }
    }
    if let Some(s) = section(&root, "auth")? {
        parse_auth(&mut r, s, &mut cfg.auth)?;
    }
    if cfg.auth.jwt_secret.is_none()
        && let Some(v) = lookup("AUTH_JWT_SECRET").filter(|v| !v.is_empty())
    {
        cfg.auth.jwt_secret = Some(v);
    }
    cfg.auth
        .validate()
        .map_err(|e| anyhow::anyhow!("config {e}"))?;
    parse_agent_sections(&mut r, &root, &mut cfg)?;
    cfg.warnings = warnings;
    Ok(cfg)
}

fn parse_auth(r: &mut Reader<'_>, s: &Map<String, Value>, a: &mut AuthConfig) -> Result<()> {
    r.check_keys(
        "auth",
        s,
        &[
            "mode",
            "enabled",
            "jwt_secret",
            "allow_registration",
            "token_expiry_days",
            "trusted_header",
            "trusted_secret_header",
            "trusted_secret",
            "trusted_proxies",
            "lockout_threshold",
            "lockout_seconds",
        ],
    );
    if let Some(m) = get_str(s, "auth", "mode")? {
        a.mode = AuthMode::parse(&m).with_context(|| {
            format!("config 'auth.mode' must be none, api_key, local or trusted_header, got '{m}'")
        })?;
    } else if get_bool(s, "auth", "enabled")? == Some(true) {
        a.mode = AuthMode::Local;
    }
    if let Some(v) = get_str(s, "auth", "jwt_secret")?.filter(|v| !v.is_empty()) {
        a.jwt_secret = Some(v);
    }
    if let Some(b) = get_bool(s, "auth", "allow_registration")? {
        a.allow_registration = b;
    }
    if let Some(d) = get_u64(s, "auth", "token_expiry_days")? {
        if !(1..=30).contains(&d) {
            bail!("config 'auth.token_expiry_days' must be 1..30, got {d}");
        }
        a.token_expiry = Duration::from_secs(d * 86_400);
    }
    if let Some(h) = get_str(s, "auth", "trusted_header")? {
        a.trusted_header = h.to_ascii_lowercase();
    }
    if let Some(h) = get_str(s, "auth", "trusted_secret_header")? {
        a.trusted_secret_header = h.to_ascii_lowercase();
    }
    if let Some(v) = get_str(s, "auth", "trusted_secret")?.filter(|v| !v.is_empty()) {
        a.trusted_secret = Some(v);
    }
    match s.get("trusted_proxies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            a.trusted_proxies = items
                .iter()
                .map(|v| match v {
                    Value::String(ip) if ip.parse::<std::net::IpAddr>().is_ok() => Ok(ip.clone()),
                    other => bail!(
                        "config 'auth.trusted_proxies' entries must be IP addresses, got {other}"
                    ),
                })
                .collect::<Result<_>>()?;
        }
        Some(other) => bail!("config 'auth.trusted_proxies' must be a list, got {other}"),
    }
    if let Some(n) = get_u64(s, "auth", "lockout_threshold")? {
        if n == 0 {
            bail!("config 'auth.lockout_threshold' must be at least 1");
        }
        a.lockout_threshold = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(t) = get_f64(s, "auth", "lockout_seconds")? {
        a.lockout_duration = Duration::from_secs_f64(t);
    }
    Ok(())
}

/// Loads the configuration from `path` (or defaults when None).
pub fn load(path: Option<&Path>) -> Result<Config> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let mut cfg = parse(&text, &|k| std::env::var(k).ok())
        .with_context(|| format!("invalid config file {}", path.display()))?;
    cfg.source = Some(path.to_path_buf());
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "PORT" => Some("9000".into()),
            "DIR" => Some("/tmp/x".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_all_three_forms() {
        let s = substitute(
            "a: $PORT\nb: ${DIR}\nc: ${NOPE:-dflt}\nd: $$x\ne: ${EMPTY:-d2}",
            &env,
        )
        .unwrap();
        assert_eq!(s, "a: 9000\nb: /tmp/x\nc: dflt\nd: $x\ne: d2");
        assert!(
            substitute("x: $NOPE", &env)
                .unwrap_err()
                .to_string()
                .contains("NOPE")
        );
        assert!(substitute("x: ${NOPE}", &env).is_err());
        assert_eq!(substitute("price: 5$", &env).unwrap(), "price: 5$");
    }

    #[test]
    fn run_events_trace_limit_is_configurable_and_bounded() {
        let cfg = parse("run_events:\n  max_trace_content: 4096\n", &env).unwrap();
        assert_eq!(cfg.runtime.max_trace_content, 4096);
        assert_eq!(parse("", &env).unwrap().runtime.max_trace_content, 10_240);
        let err = parse("run_events:\n  max_trace_content: 10\n", &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_trace_content"), "{err}");
    }

    #[test]
    fn parses_sections_and_warns_on_unknown_keys() {
        let cfg = parse(
            "server:\n  port: $PORT\n  bogus: 1\ndatabase:\n  backend: sqlite\n  sqlite_dir: ${DIR}\nstream_bridge:\n  type: memory\n  queue_maxsize: 64\nruns:\n  default_multitask_strategy: reject\nweird: 2\n",
            &env,
        )
        .unwrap();
        assert_eq!(cfg.port, 9000);
        assert_eq!(cfg.sqlite_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.bridge.queue_maxsize, 64);
        assert_eq!(
            cfg.runtime.default_multitask_strategy,
            MultitaskStrategy::Reject
        );
        assert_eq!(cfg.warnings.len(), 2, "{:?}", cfg.warnings);
        assert!(cfg.warnings.iter().any(|w| w.contains("server.bogus")));
        assert!(cfg.warnings.iter().any(|w| w.contains("'weird'")));
    }

    #[test]
    fn invalid_values_are_clear_errors() {
        for (text, needle) in [
            ("server:\n  port: 99999\n", "server.port"),
            ("server:\n  port: abc\n", "server.port"),
            ("database:\n  backend: oracle\n", "database.backend"),
            (
                "runs:\n  default_multitask_strategy: nope\n",
                "default_multitask_strategy",
            ),
            ("stream_bridge: 3\n", "stream_bridge"),
            ("- a\n- b\n", "mapping"),
        ] {
            let err = format!("{:#}", parse(text, &env).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn redis_stream_bridge_section() {
        let cfg = parse(
            "stream_bridge:\n  type: redis\n  redis_url: redis://h:1/0\n  queue_maxsize: 32\n  stream_ttl_seconds: 60\n  key_prefix: 'x:'\n",
            &env,
        )
        .unwrap();
        let rc = cfg.redis_bridge.expect("redis bridge");
        assert_eq!(rc.redis_url.as_deref(), Some("redis://h:1/0"));
        assert_eq!(
            (
                rc.queue_maxsize,
                rc.stream_ttl_seconds,
                rc.key_prefix.as_str()
            ),
            (32, 60, "x:")
        );
        let fallback = |k: &str| match k {
            "REDIS_URL" => Some("redis://r:2/0".to_owned()),
            _ => None,
        };
        let cfg = parse("stream_bridge:\n  type: redis\n", &fallback).unwrap();
        let rc = cfg.redis_bridge.expect("redis bridge");
        assert_eq!(rc.redis_url.as_deref(), Some("redis://r:2/0"));
        let first = |k: &str| match k {
            "DEER_FLOW_STREAM_BRIDGE_REDIS_URL" => Some("redis://d:3/0".to_owned()),
            "REDIS_URL" => Some("redis://r:2/0".to_owned()),
            _ => None,
        };
        let cfg = parse("stream_bridge:\n  type: redis\n", &first).unwrap();
        assert_eq!(
            cfg.redis_bridge.and_then(|r| r.redis_url).as_deref(),
            Some("redis://d:3/0")
        );
        assert!(parse("stream_bridge:\n  type: kafka\n", &env).is_err());
        assert!(
            parse("stream_bridge:\n  type: memory\n", &env)
                .unwrap()
                .redis_bridge
                .is_none()
        );
    }

    #[test]
    fn auth_section_parses_and_hides_secrets() {
        let lookup = |k: &str| match k {
            "JWT" => Some("a-jwt-secret-of-some-length".to_owned()),
            "PROXY" => Some("proxy-shared-secret-123".to_owned()),
            _ => None,
        };
        let cfg = parse(
            "auth:\n  mode: trusted_header\n  jwt_secret: $JWT\n  allow_registration: false\n  trusted_header: X-User\n  trusted_secret: ${PROXY}\n  trusted_proxies: [127.0.0.1]\n",
            &lookup,
        )
        .unwrap();
        assert_eq!(cfg.auth.mode, AuthMode::TrustedHeader);
        assert_eq!(cfg.auth.trusted_header, "x-user");
        assert!(!cfg.auth.allow_registration);
        assert_eq!(cfg.auth.trusted_proxies, vec!["127.0.0.1".to_owned()]);
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("a-jwt-secret"), "{shown}");
        assert!(!shown.contains("proxy-shared-secret"), "{shown}");
        for (text, needle) in [
            ("auth:\n  mode: magic\n", "auth.mode"),
            ("auth:\n  mode: trusted_header\n", "trusted_secret"),
            ("auth:\n  token_expiry_days: 90\n", "token_expiry_days"),
        ] {
            let err = format!("{:#}", parse(text, &env).unwrap_err());
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert_eq!(parse("", &env).unwrap().auth.mode, AuthMode::None);
    }

    #[test]
    fn empty_config_is_the_default() {
        let cfg = parse("", &env).unwrap();
        assert_eq!(cfg.port, 8123);
        assert_eq!(cfg.backend, Backend::Sqlite);
        assert!(cfg.examples);
    }
}
