//! The top level of the file and the server-side sections: `server`, `database`,
//! `checkpointer` (DeerFlow's), `stream_bridge`, `run_events`, `runs`, `graphs` and `auth`. Each
//! section is one struct with exactly the keys it accepts, and an `apply` that validates the
//! values and sets them on [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use antler_auth::{AuthConfig, AuthMode};
use antler_bridge::{MemoryBridgeConfig, RedisBridgeConfig};
use antler_runtime::{MultitaskStrategy, Recovery, RuntimeConfig};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::agents::{self, AgentSections};
use super::read::{
    Flag, Int, Loader, Number, Section, Text, Unused, at_least_one, filled, timeout, within,
};
use super::{Backend, Config, RunEventsBackend, backend_compiled};

/// The top-level keys. Each section is kept as written until its own struct reads it, in the
/// order of [`Sections::apply`] (not the file's), so that the warnings and the first error come
/// in a fixed order.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct Sections {
    server: Value,
    database: Value,
    checkpointer: Value,
    stream_bridge: Value,
    run_events: Value,
    runs: Value,
    graphs: Value,
    auth: Value,
    // Agent sections (read in `agents.rs`).
    models: Value,
    tools: Value,
    sandbox: Value,
    title: Value,
    agents: Value,
    mcp_servers: Value,
    // Accepted silently (DeerFlow's bookkeeping keys and the DeerFlow sections Antler does not
    // use yet), so that a DeerFlow config.yaml loads without noise.
    config_version: Option<Unused>,
    log_level: Option<Unused>,
    tool_groups: Option<Unused>,
    skills: Option<Unused>,
    memory: Option<Unused>,
    summarization: Option<Unused>,
    subagents: Option<Unused>,
    channels: Option<Unused>,
    run_ownership: Option<Unused>,
}

impl Sections {
    /// Reads every section into `cfg`.
    pub fn apply(self, l: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        l.apply::<Server>(self.server, cfg)?;
        l.apply::<Database>(self.database, cfg)?;
        l.apply::<Checkpointer>(self.checkpointer, cfg)?;
        l.apply::<StreamBridge>(self.stream_bridge, cfg)?;
        l.apply::<RunEvents>(self.run_events, cfg)?;
        l.apply::<Runs>(self.runs, cfg)?;
        l.apply::<Graphs>(self.graphs, cfg)?;
        l.apply::<Auth>(self.auth, cfg)?;
        finish_auth(l.lookup, &mut cfg.auth)?;
        let agent_sections = AgentSections {
            models: self.models,
            tools: self.tools,
            sandbox: self.sandbox,
            title: self.title,
            agents: self.agents,
            mcp_servers: self.mcp_servers,
        };
        agents::apply(l, agent_sections, cfg)
    }
}

/// `server:`.
#[derive(Deserialize)]
struct Server {
    host: Option<Text>,
    port: Option<Int>,
    heartbeat_seconds: Option<Number>,
    max_body_mb: Option<Number>,
    header_timeout_seconds: Option<Number>,
}

impl Section for Server {
    const NAME: &'static str = "server";
    fn apply(self, _: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        if let Some(Text(host)) = self.host {
            cfg.host = host;
        }
        if let Some(Int(port)) = self.port {
            cfg.port = u16::try_from(port).context("config 'server.port' must be 0..65535")?;
        }
        if let Some(Number(h)) = self.heartbeat_seconds {
            if h < 0.1 {
                bail!("config 'server.heartbeat_seconds' must be at least 0.1");
            }
            cfg.heartbeat = Duration::from_secs_f64(h);
        }
        if let Some(Number(mb)) = self.max_body_mb {
            if !(0.001..=1024.0).contains(&mb) {
                bail!("config 'server.max_body_mb' must be between 0.001 and 1024");
            }
            cfg.max_body_bytes = (mb * 1024.0 * 1024.0) as usize;
        }
        if let Some(Number(t)) = self.header_timeout_seconds {
            if !(0.1..=3600.0).contains(&t) {
                bail!("config 'server.header_timeout_seconds' must be between 0.1 and 3600");
            }
            cfg.header_timeout = Duration::from_secs_f64(t);
        }
        Ok(())
    }
}

/// `database:`.
#[derive(Deserialize)]
struct Database {
    backend: Option<Text>,
    sqlite_dir: Option<Text>,
    postgres_url: Option<Text>,
    mysql_url: Option<Text>,
    pool_size: Option<Int>,
    pool_timeout: Option<Number>,
}

impl Section for Database {
    const NAME: &'static str = "database";
    fn apply(self, _: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        if let Some(Text(b)) = self.backend {
            cfg.backend = backend(&b)?;
        }
        if let Some(Text(dir)) = self.sqlite_dir {
            cfg.sqlite_dir = PathBuf::from(dir);
        }
        cfg.postgres_url = filled(self.postgres_url);
        cfg.mysql_url = filled(self.mysql_url);
        if let Some(Int(n)) = self.pool_size {
            cfg.pool.size = within("database.pool_size", n, 1..=1000, "")? as u32;
        }
        if let Some(Number(t)) = self.pool_timeout {
            cfg.pool.acquire_timeout = timeout("database.pool_timeout", t, " seconds")?;
        }
        match cfg.backend {
            Backend::Postgres if cfg.postgres_url.is_none() => {
                bail!("config 'database.backend: postgres' needs 'database.postgres_url'")
            }
            Backend::Mysql if cfg.mysql_url.is_none() => {
                bail!("config 'database.backend: mysql' needs 'database.mysql_url'")
            }
            _ => Ok(()),
        }
    }
}

/// `database.backend`, which must be compiled in.
fn backend(b: &str) -> Result<Backend> {
    let backend = match b {
        "sqlite" => Backend::Sqlite,
        "memory" => Backend::Memory,
        "postgres" | "postgresql" => Backend::Postgres,
        "mysql" | "mariadb" => Backend::Mysql,
        other => bail!(
            "config 'database.backend' must be sqlite, postgres, mysql or memory, got '{other}'"
        ),
    };
    if !backend_compiled(backend.as_str()) {
        bail!(
            "config 'database.backend: {b}': this build of antler was compiled without the '{}' feature",
            backend.as_str()
        );
    }
    Ok(backend)
}

/// DeerFlow's legacy `checkpointer:` section: `type: memory|sqlite`.
#[derive(Deserialize)]
struct Checkpointer {
    #[serde(rename = "type")]
    kind: Option<Text>,
    #[allow(dead_code)] // accepted, not used
    connection_string: Option<Unused>,
}

impl Section for Checkpointer {
    const NAME: &'static str = "checkpointer";
    fn apply(self, _: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        match self.kind.as_ref().map(|Text(t)| t.as_str()) {
            None => {}
            Some("memory") => cfg.backend = Backend::Memory,
            Some("sqlite") => cfg.backend = Backend::Sqlite,
            Some(other) => {
                bail!("config 'checkpointer.type' must be memory or sqlite, got '{other}'")
            }
        }
        Ok(())
    }
}

/// `stream_bridge:`: the in-memory bridge's options, and with `type: redis` the Redis bridge's.
#[derive(Deserialize)]
struct StreamBridge {
    #[serde(rename = "type")]
    kind: Option<Text>,
    queue_maxsize: Option<Int>,
    max_bytes: Option<Int>,
    terminal_ttl_seconds: Option<Int>,
    abandoned_ttl_seconds: Option<Int>,
    awaiting_input_ttl_seconds: Option<Int>,
    cleanup_interval_seconds: Option<Int>,
    redis_url: Option<Text>,
    stream_ttl_seconds: Option<Int>,
    #[allow(dead_code)] // accepted, not used
    max_connections: Option<Unused>,
    key_prefix: Option<Text>,
    block_ms: Option<Int>,
    response_timeout_ms: Option<Int>,
    max_retries: Option<Int>,
    wait_timeout_seconds: Option<Int>,
}

impl Section for StreamBridge {
    const NAME: &'static str = "stream_bridge";
    fn moot(section: &Map<String, Value>) -> &'static [&'static str] {
        match section.get("type") {
            Some(Value::String(t)) if t == "redis" => &[],
            _ => &[
                "redis_url",
                "stream_ttl_seconds",
                "key_prefix",
                "block_ms",
                "response_timeout_ms",
                "max_retries",
                "wait_timeout_seconds",
            ],
        }
    }
    fn apply(self, l: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        let redis = match self.kind.as_ref().map(|Text(t)| t.as_str()) {
            None | Some("memory") => false,
            Some("redis") => true,
            Some(other) => {
                bail!("config 'stream_bridge.type' must be memory or redis, got '{other}'")
            }
        };
        self.set_memory(&mut cfg.bridge);
        if redis {
            let rc = self.redis(l.lookup);
            rc.validate()
                .map_err(|e| anyhow::anyhow!("config 'stream_bridge': {e}"))?;
            cfg.redis_bridge = Some(rc);
        }
        cfg.bridge
            .validate()
            .map_err(|e| anyhow::anyhow!("config 'stream_bridge': {e}"))
    }
}

impl StreamBridge {
    fn set_memory(&self, b: &mut MemoryBridgeConfig) {
        set(
            &mut b.queue_maxsize,
            self.queue_maxsize.map(|Int(n)| n as usize),
        );
        set(&mut b.max_bytes, self.max_bytes.map(|Int(n)| n as usize));
        set(
            &mut b.terminal_ttl_seconds,
            self.terminal_ttl_seconds.map(|Int(n)| n),
        );
        set(
            &mut b.abandoned_ttl_seconds,
            self.abandoned_ttl_seconds.map(|Int(n)| n),
        );
        set(
            &mut b.awaiting_input_ttl_seconds,
            self.awaiting_input_ttl_seconds.map(|Int(n)| n),
        );
        set(
            &mut b.cleanup_interval_seconds,
            self.cleanup_interval_seconds.map(|Int(n)| n),
        );
    }

    fn redis(self, lookup: &dyn Fn(&str) -> Option<String>) -> RedisBridgeConfig {
        // DeerFlow's fallbacks: the key, then DEER_FLOW_STREAM_BRIDGE_REDIS_URL, then REDIS_URL
        // (then the bridge's default, redis://127.0.0.1:6379/0).
        let redis_url = self
            .redis_url
            .map(|Text(u)| u)
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
        set(
            &mut rc.queue_maxsize,
            self.queue_maxsize.map(|Int(n)| n as usize),
        );
        set(
            &mut rc.stream_ttl_seconds,
            self.stream_ttl_seconds.map(|Int(n)| n),
        );
        set(
            &mut rc.awaiting_input_ttl_seconds,
            self.awaiting_input_ttl_seconds.map(|Int(n)| n),
        );
        set(&mut rc.key_prefix, self.key_prefix.map(|Text(p)| p));
        set(&mut rc.block_ms, self.block_ms.map(|Int(n)| n));
        set(
            &mut rc.response_timeout_ms,
            self.response_timeout_ms.map(|Int(n)| n),
        );
        set(
            &mut rc.max_retries,
            self.max_retries.map(|Int(n)| n.min(100) as u32),
        );
        set(
            &mut rc.wait_timeout_seconds,
            self.wait_timeout_seconds.map(|Int(n)| n),
        );
        rc
    }
}

/// Overwrites `slot` when the key was given.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// `run_events:`.
#[derive(Deserialize)]
struct RunEvents {
    backend: Option<Text>,
    jsonl_base_dir: Option<Text>,
    max_trace_content: Option<Int>,
    #[allow(dead_code)] // accepted, not used
    track_token_usage: Option<Unused>,
    batch_size: Option<Int>,
}

impl Section for RunEvents {
    const NAME: &'static str = "run_events";
    fn apply(self, l: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        if let Some(Text(b)) = self.backend {
            cfg.run_events = match b.as_str() {
                "db" => RunEventsBackend::Db,
                "memory" => RunEventsBackend::Memory,
                "jsonl" => RunEventsBackend::Jsonl(None),
                other => {
                    bail!("config 'run_events.backend' must be db, jsonl or memory, got '{other}'")
                }
            };
        }
        if let Some(Text(d)) = self.jsonl_base_dir {
            match &mut cfg.run_events {
                RunEventsBackend::Jsonl(dir) => *dir = Some(PathBuf::from(d)),
                _ => l.warn(
                    "config 'run_events.jsonl_base_dir' is ignored unless 'run_events.backend' is jsonl"
                        .into(),
                ),
            }
        }
        let rt = &mut cfg.runtime;
        if let Some(Int(n)) = self.max_trace_content {
            let n = within(
                "run_events.max_trace_content",
                n,
                256..=10_485_760,
                " bytes",
            )?;
            rt.max_trace_content = n as usize;
        }
        if let Some(Int(n)) = self.batch_size {
            rt.event_batch_size = at_least_one("run_events.batch_size", n)? as usize;
        }
        Ok(())
    }
}

/// `runs:`.
#[derive(Deserialize)]
struct Runs {
    default_multitask_strategy: Option<Text>,
    timeout_seconds: Option<Number>,
    stream_retention_seconds: Option<Number>,
    shutdown_grace_seconds: Option<Number>,
    webhook_attempts: Option<Int>,
    recovery: Option<Text>,
    lease_ttl_seconds: Option<Number>,
    max_concurrent_runs: Option<Int>,
    max_pending_runs: Option<Int>,
    poll_interval_ms: Option<Int>,
}

impl Section for Runs {
    const NAME: &'static str = "runs";
    fn apply(self, _: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        let rt = &mut cfg.runtime;
        if let Some(Int(n)) = self.max_concurrent_runs {
            let n = at_least_one("runs.max_concurrent_runs", n)?;
            rt.max_concurrent_runs = Some(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(Int(n)) = self.max_pending_runs {
            // 0 = unbounded
            let n = within("runs.max_pending_runs", n, 0..=100_000_000, "")?;
            rt.max_pending_runs = (n > 0).then(|| usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(Int(n)) = self.poll_interval_ms {
            let n = within("runs.poll_interval_ms", n, 10..=60_000, "")?;
            rt.poll_interval = Duration::from_millis(n);
        }
        self.set_modes(rt)?;
        if let Some(Number(t)) = self.timeout_seconds {
            rt.run_timeout = (t > 0.0).then(|| Duration::from_secs_f64(t));
        }
        let secs = |t: Option<Number>| t.map(|Number(t)| Duration::from_secs_f64(t));
        set(
            &mut rt.stream_cleanup_delay,
            secs(self.stream_retention_seconds),
        );
        set(&mut rt.shutdown_grace, secs(self.shutdown_grace_seconds));
        set(
            &mut rt.webhook_attempts,
            self.webhook_attempts.map(|Int(n)| n.clamp(1, 20) as u32),
        );
        Ok(())
    }
}

impl Runs {
    /// `recovery`, `lease_ttl_seconds` and `default_multitask_strategy`.
    fn set_modes(&self, rt: &mut RuntimeConfig) -> Result<()> {
        if let Some(Text(m)) = &self.recovery {
            rt.recovery = Recovery::parse(m).with_context(|| {
                format!("config 'runs.recovery' must be resume or fail, got '{m}'")
            })?;
        }
        if let Some(Number(t)) = self.lease_ttl_seconds {
            let t = within("runs.lease_ttl_seconds", t, 0.5..=3600.0, "")?;
            rt.lease_ttl = Duration::from_secs_f64(t);
        }
        if let Some(Text(m)) = &self.default_multitask_strategy {
            rt.default_multitask_strategy = MultitaskStrategy::parse(m).with_context(|| {
                format!("config 'runs.default_multitask_strategy' must be reject, interrupt, rollback or enqueue, got '{m}'")
            })?;
        }
        Ok(())
    }
}

/// `graphs:`.
#[derive(Deserialize)]
struct Graphs {
    examples: Option<Flag>,
}

impl Section for Graphs {
    const NAME: &'static str = "graphs";
    fn apply(self, _: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        set(&mut cfg.examples, self.examples.map(|Flag(b)| b));
        Ok(())
    }
}

/// `auth:`.
#[derive(Deserialize)]
struct Auth {
    mode: Option<Text>,
    enabled: Option<Flag>,
    jwt_secret: Option<Text>,
    allow_registration: Option<Flag>,
    token_expiry_days: Option<Int>,
    trusted_header: Option<Text>,
    trusted_secret_header: Option<Text>,
    trusted_secret: Option<Text>,
    trusted_proxies: Option<IpList>,
    lockout_threshold: Option<Int>,
    lockout_seconds: Option<Number>,
}

impl Section for Auth {
    const NAME: &'static str = "auth";
    fn moot(section: &Map<String, Value>) -> &'static [&'static str] {
        match section.get("mode") {
            None | Some(Value::Null) => &[],
            Some(_) => &["enabled"],
        }
    }
    fn apply(self, _: &mut Loader<'_>, cfg: &mut Config) -> Result<()> {
        let a = &mut cfg.auth;
        if let Some(Text(m)) = &self.mode {
            a.mode = AuthMode::parse(m).with_context(|| {
                format!(
                    "config 'auth.mode' must be none, api_key, local or trusted_header, got '{m}'"
                )
            })?;
        } else if let Some(Flag(true)) = self.enabled {
            a.mode = AuthMode::Local;
        }
        set(&mut a.jwt_secret, filled(self.jwt_secret).map(Some));
        set(
            &mut a.allow_registration,
            self.allow_registration.map(|Flag(b)| b),
        );
        if let Some(Int(d)) = self.token_expiry_days {
            if !(1..=30).contains(&d) {
                bail!("config 'auth.token_expiry_days' must be 1..30, got {d}");
            }
            a.token_expiry = Duration::from_secs(d * 86_400);
        }
        let lower = |h: Option<Text>| h.map(|Text(h)| h.to_ascii_lowercase());
        set(&mut a.trusted_header, lower(self.trusted_header));
        set(
            &mut a.trusted_secret_header,
            lower(self.trusted_secret_header),
        );
        set(&mut a.trusted_secret, filled(self.trusted_secret).map(Some));
        set(
            &mut a.trusted_proxies,
            self.trusted_proxies.map(|IpList(ips)| ips),
        );
        if let Some(Int(n)) = self.lockout_threshold {
            let n = at_least_one("auth.lockout_threshold", n)?;
            a.lockout_threshold = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(Number(t)) = self.lockout_seconds {
            a.lockout_duration = Duration::from_secs_f64(t);
        }
        Ok(())
    }
}

/// `auth.trusted_proxies`: IP addresses.
#[derive(Deserialize)]
#[serde(try_from = "Value")]
struct IpList(Vec<String>);

impl TryFrom<Value> for IpList {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        let Value::Array(items) = v else {
            return Err(format!("must be a list, got {v}"));
        };
        items
            .into_iter()
            .map(|v| match v {
                Value::String(ip) if ip.parse::<std::net::IpAddr>().is_ok() => Ok(ip),
                other => Err(format!("entries must be IP addresses, got {other}")),
            })
            .collect::<Result<_, _>>()
            .map(IpList)
    }
}

/// The JWT secret from `AUTH_JWT_SECRET` when the file has none, then the checks of the
/// combination (with or without an `auth:` section).
fn finish_auth(lookup: &dyn Fn(&str) -> Option<String>, a: &mut AuthConfig) -> Result<()> {
    if a.jwt_secret.is_none()
        && let Some(v) = lookup("AUTH_JWT_SECRET").filter(|v| !v.is_empty())
    {
        a.jwt_secret = Some(v);
    }
    a.validate().map_err(|e| anyhow::anyhow!("config {e}"))
}
