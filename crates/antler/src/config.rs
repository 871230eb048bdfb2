//! The configuration file: where it is found, `$VAR` / `${VAR}` / `${VAR:-default}` substitution,
//! YAML parsing, DeerFlow's section names, warnings for unknown keys and clear errors for invalid
//! values. Every option has a default, so no file at all is a valid configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use antler_auth::AuthConfig;
use antler_bridge::{MemoryBridgeConfig, RedisBridgeConfig};
use antler_llm::{ModelConfig, TitleOptions};
use antler_runtime::RuntimeConfig;
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

mod agents;
mod read;
mod sections;

pub use agents::{AgentConfig, WORKSPACE_TOOLS, WorkspaceConfig};
use read::Loader;
use sections::Sections;

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
    /// `server.max_body_mb`, in bytes: the largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// `server.header_timeout_seconds`: a client has this long to send a request's line and
    /// headers, else its connection is closed.
    pub header_timeout: Duration,
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
            max_body_bytes: antler_gateway::DEFAULT_MAX_BODY_BYTES,
            header_timeout: Duration::from_secs(30),
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

/// Parses configuration text (already read from a file).
pub fn parse(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let root = top_level(&substitute(text, lookup)?)?;
    let mut loader = Loader::new(lookup);
    let sections: Sections = loader.read("", root)?;
    let mut cfg = Config::default();
    sections.apply(&mut loader, &mut cfg)?;
    cfg.warnings = loader.warnings;
    Ok(cfg)
}

/// The top-level mapping of the YAML text (empty text: an empty mapping).
fn top_level(text: &str) -> Result<Map<String, Value>> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_saphyr::from_str(text).context("config is not valid YAML")? {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => bail!("config must be a mapping at the top level, got {other}"),
    }
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
    use antler_auth::AuthMode;
    use antler_runtime::MultitaskStrategy;

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
        assert_eq!(cfg.max_body_bytes, antler_gateway::DEFAULT_MAX_BODY_BYTES);
        let small = parse("server:\n  max_body_mb: 0.5\n", &env).unwrap();
        assert_eq!(small.max_body_bytes, 512 * 1024);
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
            ("server:\n  max_body_mb: 0\n", "server.max_body_mb"),
            ("server:\n  max_body_mb: 4096\n", "server.max_body_mb"),
            ("runs:\n  max_pending_runs: -1\n", "runs.max_pending_runs"),
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
    fn each_section_names_the_path_of_a_bad_value() {
        for (text, message) in [
            (
                "server: 3\n",
                "config section 'server' must be a mapping, got 3",
            ),
            (
                "server:\n  port: abc\n",
                "config 'server.port' must be a non-negative number, got \"abc\"",
            ),
            (
                "server:\n  port: 1.5\n",
                "config 'server.port' must be an integer, got 1.5",
            ),
            (
                "server:\n  port: 99999\n",
                "config 'server.port' must be 0..65535: out of range integral type conversion attempted",
            ),
            (
                "server:\n  host: [1]\n",
                "config 'server.host' must be a string, got [1]",
            ),
            (
                "database:\n  pool_size: 2000\n",
                "config 'database.pool_size' must be between 1 and 1000, got 2000",
            ),
            (
                "database:\n  pool_timeout: 0\n",
                "config 'database.pool_timeout' must be between 0 and 3600 seconds, got 0",
            ),
            (
                "checkpointer:\n  type: redis\n",
                "config 'checkpointer.type' must be memory or sqlite, got 'redis'",
            ),
            (
                "stream_bridge:\n  queue_maxsize: 0\n",
                "config 'stream_bridge': invalid stream bridge config: queue_maxsize must be at least 1",
            ),
            (
                "run_events:\n  backend: kafka\n",
                "config 'run_events.backend' must be db, jsonl or memory, got 'kafka'",
            ),
            (
                "run_events:\n  batch_size: 0\n",
                "config 'run_events.batch_size' must be at least 1",
            ),
            (
                "runs:\n  lease_ttl_seconds: 0.1\n",
                "config 'runs.lease_ttl_seconds' must be between 0.5 and 3600, got 0.1",
            ),
            (
                "runs:\n  lease_ttl_seconds: abc\n",
                "config 'runs.lease_ttl_seconds' must be a non-negative number, got \"abc\"",
            ),
            (
                "runs:\n  recovery: maybe\n",
                "config 'runs.recovery' must be resume or fail, got 'maybe'",
            ),
            (
                "runs:\n  poll_interval_ms: 5\n",
                "config 'runs.poll_interval_ms' must be between 10 and 60000, got 5",
            ),
            (
                "graphs:\n  examples: yes please\n",
                "config 'graphs.examples' must be true or false, got \"yes please\"",
            ),
            (
                "auth:\n  trusted_proxies: [nope]\n",
                "config 'auth.trusted_proxies' entries must be IP addresses, got \"nope\"",
            ),
            (
                "auth:\n  trusted_proxies: 127.0.0.1\n",
                "config 'auth.trusted_proxies' must be a list, got \"127.0.0.1\"",
            ),
            (
                "auth:\n  lockout_threshold: 0\n",
                "config 'auth.lockout_threshold' must be at least 1",
            ),
            (
                "auth:\n  jwt_secret: short\n",
                "config auth.jwt_secret must be at least 16 characters",
            ),
        ] {
            let err = format!("{:#}", parse(text, &env).unwrap_err());
            assert_eq!(err, message, "{text}");
        }
    }

    #[test]
    fn warnings_follow_the_section_order_and_moot_values_are_not_checked() {
        let cfg = parse(
            "yy: 1\nruns:\n  r1: 1\nserver:\n  s1: 1\nstream_bridge:\n  type: memory\n  block_ms: 5s\nauth:\n  mode: none\n  enabled: maybe\nconfig_version: 3\nskills: {a: 1}\n",
            &env,
        )
        .unwrap();
        assert_eq!(
            cfg.warnings,
            [
                "unknown config key 'yy' ignored",
                "unknown config key 'server.s1' ignored",
                "unknown config key 'runs.r1' ignored",
            ]
        );
        for (text, message) in [
            (
                "stream_bridge:\n  type: redis\n  block_ms: 5s\n",
                "config 'stream_bridge.block_ms' must be a non-negative number, got \"5s\"",
            ),
            (
                "auth:\n  enabled: maybe\n",
                "config 'auth.enabled' must be true or false, got \"maybe\"",
            ),
        ] {
            let err = format!("{:#}", parse(text, &env).unwrap_err());
            assert_eq!(err, message, "{text}");
        }
    }

    #[test]
    fn empty_config_is_the_default() {
        let cfg = parse("", &env).unwrap();
        assert_eq!(cfg.port, 8123);
        assert_eq!(cfg.backend, Backend::Sqlite);
        assert!(cfg.examples);
    }
}
