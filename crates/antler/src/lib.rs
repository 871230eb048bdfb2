//! `antler`: the server as a library — configuration, wiring of stores / bridge / runtime /
//! gateway, and the shutdown sequence. The binary (`main.rs`) is a thin CLI over [`start`];
//! end-to-end tests call [`start`] with port 0.

pub mod config;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_bridge::{MemoryBridge, RedisBridge, StreamBridge};
use antler_runtime::{Graphs, Runtime};
use antler_store::{JsonlRunEventStore, MemoryRunEventStore, Stores, ThreadId};
use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Backend, Config, RunEventsBackend};

/// A running server.
pub struct Server {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The run kernel.
    pub runtime: Arc<Runtime>,
    /// How long startup took (config loaded to listening).
    pub startup: Duration,
    /// Accounts and API keys (tests create keys through it).
    pub auth: Arc<antler_auth::Auth>,
    task: JoinHandle<Result<()>>,
}

impl Server {
    /// Base URL, e.g. `http://127.0.0.1:8123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the shutdown sequence and waits for it to finish.
    pub async fn shutdown(self) -> Result<()> {
        self.runtime.shutdown_token().cancel();
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops (after [`Runtime::shutdown_token`] is cancelled).
    pub async fn wait(self) -> Result<()> {
        self.task.await.context("server task panicked")?
    }
}

/// Name of the file that keeps the generated session-token secret (0600).
pub const JWT_SECRET_FILE: &str = ".jwt_secret";

/// The auth service of a configuration. Accounts live where the data does: in
/// `<sqlite_dir>/auth.db` with SQLite, in the shared database with PostgreSQL / MySQL (so every
/// replica knows the same users and API keys), in memory with `database.backend: memory`.
/// `mode: none` opens nothing. The session-token secret is `auth.jwt_secret` /
/// `AUTH_JWT_SECRET`, else one generated once and kept in the shared database (PostgreSQL /
/// MySQL: the same for every replica) or in `<sqlite_dir>/.jwt_secret` (SQLite; random per
/// process with the memory backend).
pub async fn open_auth(cfg: &Config) -> Result<Arc<antler_auth::Auth>> {
    if cfg.auth.mode == antler_auth::AuthMode::None {
        return Ok(Arc::new(antler_auth::Auth::disabled()));
    }
    let mut auth_cfg = cfg.auth.clone();
    let store = open_auth_store(cfg).await?;
    if auth_cfg.jwt_secret.is_none() && auth_cfg.mode == antler_auth::AuthMode::Local {
        let candidate = antler_auth::apikey::random_token(48);
        auth_cfg.jwt_secret = match store
            .shared_secret("jwt_secret", &candidate)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the shared session secret: {e}"))?
        {
            Some(shared) => Some(shared),
            None if cfg.backend == Backend::Sqlite => Some(persistent_jwt_secret(&cfg.sqlite_dir)?),
            None => None,
        };
    }
    let auth = antler_auth::Auth::new(auth_cfg, store).map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    Ok(Arc::new(auth))
}

/// The account store of a configuration (the CLI's `keys` commands use it directly):
/// `<sqlite_dir>/auth.db`, the shared PostgreSQL / MySQL database, or memory.
pub async fn open_auth_store(cfg: &Config) -> Result<Arc<dyn antler_auth::AuthStore>> {
    let store = open_account_store(cfg).await?;
    if matches!(cfg.backend, Backend::Postgres | Backend::Mysql) {
        import_local_accounts(cfg, store.as_ref()).await?;
    }
    Ok(store)
}

/// Earlier versions kept accounts in `<sqlite_dir>/auth.db` on every backend. On a shared
/// database, a replica's leftover `auth.db` is merged into the shared account tables once
/// (users and keys whose id or email is already there are skipped) and renamed
/// `auth.db.imported`, so no account or key of an upgraded deployment is lost.
async fn import_local_accounts(cfg: &Config, shared: &dyn antler_auth::AuthStore) -> Result<()> {
    use antler_auth::AuthStore as _;
    let path = cfg.sqlite_dir.join(antler_auth::sqlite::AUTH_DB_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let local = antler_auth::SqliteAuthStore::open(&cfg.sqlite_dir)
        .await
        .with_context(|| format!("cannot open {} to import its accounts", path.display()))?;
    let (mut users, mut keys) = (0usize, 0usize);
    for user in local
        .list_users()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        match shared.create_user(&user).await {
            Ok(()) => users += 1,
            Err(antler_auth::AuthError::EmailExists) => {}
            Err(e) => anyhow::bail!("importing the accounts of {}: {e}", path.display()),
        }
    }
    for key in local
        .list_api_keys(None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        if shared
            .get_api_key(&key.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .is_none()
        {
            shared.create_api_key(&key).await.map_err(|e| {
                anyhow::anyhow!("importing the API keys of {}: {e}", path.display())
            })?;
            keys += 1;
        }
    }
    drop(local);
    // kept as a backup under another name (with its WAL files, which SQLite pairs by name)
    for suffix in ["", "-wal", "-shm"] {
        let from = cfg
            .sqlite_dir
            .join(format!("{}{suffix}", antler_auth::sqlite::AUTH_DB_FILE));
        let to = cfg.sqlite_dir.join(format!(
            "{}.imported{suffix}",
            antler_auth::sqlite::AUTH_DB_FILE
        ));
        if from.exists() {
            std::fs::rename(&from, &to)
                .with_context(|| format!("cannot rename {} after importing it", from.display()))?;
        }
    }
    tracing::info!(
        users,
        api_keys = keys,
        from = %path.display(),
        "imported accounts from the local auth database into the shared database"
    );
    Ok(())
}

async fn open_account_store(cfg: &Config) -> Result<Arc<dyn antler_auth::AuthStore>> {
    Ok(match cfg.backend {
        Backend::Memory => Arc::new(antler_auth::MemoryAuthStore::new()),
        Backend::Sqlite => Arc::new(
            antler_auth::SqliteAuthStore::open(&cfg.sqlite_dir)
                .await
                .with_context(|| {
                    format!(
                        "cannot open the auth database in {}",
                        cfg.sqlite_dir.display()
                    )
                })?,
        ),
        #[cfg(feature = "postgres")]
        Backend::Postgres => Arc::new(
            antler_auth::PgAuthStore::connect(cfg.postgres_url.as_deref().unwrap_or_default())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        #[cfg(feature = "mysql")]
        Backend::Mysql => Arc::new(
            antler_auth::MysqlAuthStore::connect(cfg.mysql_url.as_deref().unwrap_or_default())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        #[allow(unreachable_patterns)]
        other => anyhow::bail!(
            "storage backend '{}' is not compiled into this build",
            other.as_str()
        ),
    })
}

/// Name of the lock file that keeps a SQLite data directory to one server.
pub const LOCK_FILE: &str = "antler.lock";

/// Takes the exclusive lock of a SQLite data directory (`<dir>/antler.lock`, an advisory
/// file lock the OS releases when the process ends): a second server on the same directory
/// is refused at once, even when both start at the same instant.
pub fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another antler server is using the data directory {} (SQLite is one server's \
             database; use PostgreSQL or MySQL with the Redis stream bridge to run replicas)",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

fn persistent_jwt_secret(dir: &std::path::Path) -> Result<String> {
    let path = dir.join(JWT_SECRET_FILE);
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim().to_owned();
        if s.len() >= 32 {
            return Ok(s);
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let secret = antler_auth::apikey::random_token(48);
    // Created 0600 from the start: the secret is never readable by others, not even briefly.
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut file = opts
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, secret.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(file = %path.display(), "generated the session-token secret");
    Ok(secret)
}

async fn open_stores(cfg: &Config) -> Result<Stores> {
    let mut stores = open_database(cfg).await?;
    match &cfg.run_events {
        RunEventsBackend::Db => {}
        RunEventsBackend::Memory => stores.set_events(Arc::new(MemoryRunEventStore::default())),
        RunEventsBackend::Jsonl(dir) => {
            let dir = dir
                .clone()
                .unwrap_or_else(|| cfg.sqlite_dir.join("run-events"));
            let store = JsonlRunEventStore::open(&dir)
                .map_err(|e| anyhow::anyhow!("run events (jsonl) in {}: {e}", dir.display()))?;
            stores.set_events(Arc::new(store));
        }
    }
    Ok(stores)
}

async fn open_database(cfg: &Config) -> Result<Stores> {
    Ok(match cfg.backend {
        Backend::Memory => Stores::memory(),
        // `start` holds the data directory's lock: this server is the database's only writer
        Backend::Sqlite => antler_store_sql::sqlite::open_sqlite_owned(&cfg.sqlite_dir)
            .await
            .with_context(|| {
                format!(
                    "cannot open the SQLite database in {}",
                    cfg.sqlite_dir.display()
                )
            })?,
        #[cfg(feature = "postgres")]
        Backend::Postgres => {
            let url = cfg.postgres_url.as_deref().unwrap_or_default();
            let opts = antler_store_sql::postgres::PoolOptions {
                max_connections: cfg.pool.size,
                acquire_timeout: cfg.pool.acquire_timeout,
                ..Default::default()
            };
            antler_store_sql::postgres::open_postgres(url, opts)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL database: {e}"))?
        }
        #[cfg(feature = "mysql")]
        Backend::Mysql => {
            let url = cfg.mysql_url.as_deref().unwrap_or_default();
            let opts = antler_store_sql::mysql::PoolOptions {
                max_connections: cfg.pool.size,
                acquire_timeout: cfg.pool.acquire_timeout,
                ..Default::default()
            };
            antler_store_sql::mysql::open_mysql(url, opts)
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the MySQL database: {e}"))?
        }
        #[allow(unreachable_patterns)]
        other => anyhow::bail!(
            "storage backend '{}' is not compiled into this build",
            other.as_str()
        ),
    })
}

/// Graph id of the default agent (what DeerFlow's frontend sends as `assistant_id`).
pub const LEAD_AGENT: &str = "lead_agent";

/// The parent of the per-thread workspace directories: `sandbox.workspace_dir`, else
/// `<sqlite_dir>/workspaces`.
pub fn workspace_root(cfg: &Config) -> std::path::PathBuf {
    cfg.workspace
        .root
        .clone()
        .unwrap_or_else(|| cfg.sqlite_dir.join("workspaces"))
}

/// Earlier versions kept a thread's workspace at `<root>/<thread_id>`; thread ids are per
/// owner now, so each such directory moves under its thread's owner
/// (`<root>/@<owner>/<thread_id>`, where the agent finds it). One whose thread no longer
/// exists stays where it is (no user can reach it), with a warning.
async fn adopt_legacy_workspaces(ws: &antler_llm::Workspace, stores: &Stores) -> Result<()> {
    for (thread_id, path) in ws.legacy_dirs() {
        let owners = stores
            .threads
            .owners_of(ThreadId(&thread_id))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot look up the owner of workspace {thread_id}: {e}")
            })?;
        match owners.as_slice() {
            [owner] => match ws.adopt_legacy_dir(owner, &thread_id) {
                Ok(_) => {
                    tracing::info!(dir = %path.display(), %owner, "workspace moved under its owner")
                }
                Err(e) => tracing::warn!(dir = %path.display(), "{e}"),
            },
            _ => tracing::warn!(
                dir = %path.display(),
                owners = owners.len(),
                "workspace of an earlier version left where it is: its thread has no single owner"
            ),
        }
    }
    Ok(())
}

/// The graphs of a configuration, in registration order: `lead_agent` (the default agent),
/// one graph per `agents:` entry (graph id = the agent's name: the `lead_agent` graph with
/// that agent's model, prompt, tools and subagents), then the example graphs when enabled.
/// An agent whose name is taken by another graph, or whose tools are not available, is an
/// error naming it.
///
/// MCP: connects to every enabled `mcp_servers:` entry first. This blocks the calling thread
/// until each server has connected or failed (at most its `connect_timeout_seconds`, 10 s by
/// default; all at once). A server that fails is a warning naming it and its tools are absent.
/// `lead_agent` gets every MCP tool; an agent gets those of its `mcp_servers:` (default all).
/// The sessions live as long as the graphs (their tools hold them).
pub fn build_graphs(cfg: &Config, models: &Arc<antler_llm::ModelRegistry>) -> Result<Graphs> {
    let tool_names = cfg.workspace.tool_names();
    let reserved: Vec<String> = crate::config::WORKSPACE_TOOLS
        .iter()
        .chain(&["task"])
        .map(|s| s.to_string())
        .collect();
    let mcp = antler_llm::McpHub::start(cfg.workspace.mcp_servers.clone(), &reserved);
    for f in mcp.failures() {
        tracing::warn!(
            mcp_server = %f.server,
            "MCP server '{}' is unavailable; its tools are not offered: {}",
            f.server,
            f.error
        );
    }
    if !cfg.workspace.mcp_servers.is_empty() {
        tracing::info!(tools = %mcp.tool_names(None).join(", "), "MCP tools");
    }
    let mcp_failed = !mcp.failures().is_empty();
    let mut base = antler_llm::LeadAgentOptions::new(models.clone());
    base.name = LEAD_AGENT.into();
    base.title = cfg.title.clone();
    base.tools = mcp.tools();
    if !tool_names.is_empty() {
        let mut ws = antler_llm::WorkspaceOptions::new(workspace_root(cfg));
        ws.bash = cfg.workspace.bash && tool_names.iter().any(|t| t == "bash");
        ws.bash_timeout = cfg.workspace.bash_timeout;
        base.workspace = Some(ws);
    }
    if cfg.workspace.tools.is_some() {
        // DeerFlow's `tools:` list selects the workspace tools; MCP tools come from
        // `mcp_servers:`.
        let mut allowed = tool_names.clone();
        allowed.extend(mcp.tool_names(None));
        base.allowed_tools = Some(allowed);
    }
    let mut graphs = Graphs::default();
    let lead = antler_llm::lead_agent(base.clone())
        .map_err(|e| anyhow::anyhow!("cannot build the {LEAD_AGENT} graph: {e}"))?;
    graphs.insert(LEAD_AGENT, lead);
    graphs.mark_agent(LEAD_AGENT);
    graphs.describe(
        LEAD_AGENT,
        "The default agent: a chat model with the configured tools, MCP tools and subagents",
    );
    let examples = if cfg.examples {
        antler_graph::examples::all()
    } else {
        Vec::new()
    };
    for agent in &cfg.agents {
        if agent.name == LEAD_AGENT || examples.iter().any(|(id, _)| *id == agent.name) {
            anyhow::bail!(
                "config 'agents': the name '{}' is already a graph id; choose another name",
                agent.name
            );
        }
        let mut opts = base.clone();
        opts.name = agent.name.clone();
        opts.model_name = agent.model.clone();
        if let Some(p) = &agent.system_prompt {
            opts.system_prompt = p.clone();
        }
        let servers = agent.mcp_servers.as_deref();
        let agent_mcp = mcp.tool_names(servers);
        opts.tools = match servers {
            Some(s) => mcp.tools_of(s),
            None => mcp.tools(),
        };
        if let Some(t) = &agent.tools {
            // `tools:` restricts the workspace tools (an unknown name is an error); the MCP
            // tools of the agent's servers are always offered. A name that may belong to a
            // server that failed to start is dropped, not an error: startup must not depend
            // on an MCP server.
            let mut allowed: Vec<String> = t
                .iter()
                .filter(|n| !mcp_failed || reserved.contains(n) || agent_mcp.contains(n))
                .cloned()
                .collect();
            if allowed.len() < t.len() {
                tracing::warn!(
                    agent = %agent.name,
                    "tools {:?} are not available (an MCP server failed); not offered",
                    t.iter().filter(|n| !allowed.contains(n)).collect::<Vec<_>>()
                );
            }
            for n in &agent_mcp {
                if !allowed.contains(n) {
                    allowed.push(n.clone());
                }
            }
            opts.allowed_tools = Some(allowed);
        } else if base.allowed_tools.is_some() {
            let mut allowed = tool_names.clone();
            allowed.extend(agent_mcp);
            opts.allowed_tools = Some(allowed);
        }
        opts.subagents = agent.subagents.clone();
        let graph = antler_llm::lead_agent(opts).map_err(|e| {
            anyhow::anyhow!("config 'agents': cannot build agent '{}': {e}", agent.name)
        })?;
        graphs.insert(agent.name.clone(), graph);
        graphs.mark_agent(&agent.name);
        if let Some(d) = &agent.description {
            graphs.describe(&agent.name, d.clone());
        }
    }
    for (id, graph) in examples {
        graphs.insert(id, graph);
    }
    Ok(graphs)
}

/// Opens the stores, builds the runtime and the HTTP app, binds the listener and starts
/// serving in the background. Returns once the server accepts connections.
pub async fn start(cfg: Config) -> Result<Server> {
    let started = Instant::now();
    if let Some(src) = &cfg.source {
        tracing::info!(config = %src.display(), "configuration loaded");
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    // One server per SQLite data directory, enforced by the OS (released when the process
    // ends, however it ends); the replica registry below covers the shared databases.
    let data_dir_lock = match cfg.backend {
        Backend::Sqlite => Some(lock_data_dir(&cfg.sqlite_dir)?),
        _ => None,
    };
    let stores = open_stores(&cfg).await?;
    let workspaces =
        antler_llm::Workspace::new(antler_llm::WorkspaceOptions::new(workspace_root(&cfg)));
    adopt_legacy_workspaces(&workspaces, &stores).await?;
    let bridge: Arc<dyn StreamBridge> = match &cfg.redis_bridge {
        Some(rc) => {
            let bridge = RedisBridge::connect(rc.clone())
                .await
                .map_err(|e| anyhow::anyhow!("stream bridge (redis): {e}"))?;
            tracing::info!(prefix = %rc.key_prefix, "stream bridge: redis");
            Arc::new(bridge)
        }
        None => Arc::new(
            MemoryBridge::new(cfg.bridge.clone())
                .map_err(|e| anyhow::anyhow!("stream bridge: {e}"))?,
        ),
    };
    let models = Arc::new(
        antler_llm::ModelRegistry::new(cfg.models.clone())
            .map_err(|e| anyhow::anyhow!("config 'models': {}", e.0))?,
    );
    if models.is_empty() {
        tracing::warn!(
            "no chat model is configured (`models:`): lead_agent runs will fail until one is added"
        );
    }
    let graphs = build_graphs(&cfg, &models)?;
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", cfg.host, cfg.port))?;
    let addr = listener.local_addr()?;
    let mut runtime_cfg = cfg.runtime.clone();
    runtime_cfg.api_url = format!("http://{addr}");
    runtime_cfg.exclusive = cfg.backend.exclusive();
    let runtime = Runtime::new(stores.clone(), graphs, bridge, runtime_cfg);
    // a deleted thread's agent workspace goes with it
    runtime.on_thread_deleted(Arc::new(move |owner, thread_id| {
        if let Err(e) = workspaces.remove_thread_dir(owner, thread_id) {
            tracing::warn!(%thread_id, "workspace of a deleted thread: {e}");
        }
    }));
    runtime
        .register_system_assistants()
        .await
        .context("cannot register the graphs' assistants")?;
    runtime
        .register_replica(antler_runtime::ReplicaBackends {
            database: cfg.backend.as_str().into(),
            bridge: if cfg.redis_bridge.is_some() {
                "redis"
            } else {
                "memory"
            }
            .into(),
            bridge_shared: cfg.redis_bridge.is_some(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    runtime.start_durability().await;
    let auth = open_auth(&cfg).await?;
    tracing::info!(mode = auth.mode().as_str(), "authentication");
    let state = antler_gateway::AppState::new(runtime.clone(), cfg.heartbeat)
        .with_auth(auth.clone())
        .with_models(models)
        .with_mcp_servers(mcp_config_json(&cfg.workspace))
        .with_max_body_bytes(cfg.max_body_bytes);
    let app = antler_gateway::router(state);
    let startup = started.elapsed();
    tracing::info!(%addr, ready_ms = startup.as_millis() as u64, "antler ready");

    // Shutdown order: (1) a signal arrives; (2) the runtime stops accepting runs (503), ends
    // every SSE stream, gives running runs shutdown_grace and releases the rest, and closes
    // the bridge; (3) the accept loop stops and connections drain, bounded by a hard deadline
    // so a stuck client cannot hold the process.
    let shutdown_rt = runtime.clone();
    let token = runtime.shutdown_token();
    let server = serve::serve(listener, app, cfg.header_timeout, async move {
        token.cancelled().await;
        tracing::info!("shutting down");
        shutdown_rt.shutdown().await;
    });
    let deadline = runtime.config().shutdown_grace + Duration::from_secs(5);
    let shutdown_token = runtime.shutdown_token();
    let task = tokio::spawn(async move {
        // held until the server has stopped
        let _data_dir_lock = data_dir_lock;
        tokio::select! {
            () = server => {}
            _ = async {
                shutdown_token.cancelled().await;
                tokio::time::sleep(deadline).await;
            } => tracing::warn!("connections still open after the shutdown deadline; exiting"),
        }
        Ok(())
    });
    Ok(Server {
        addr,
        runtime,
        startup,
        auth,
        task,
    })
}

/// The `mcp_servers:` entries as `GET /api/mcp/config` shows them: enabled ones with their
/// settings (secrets masked), switched-off ones by name.
fn mcp_config_json(w: &config::WorkspaceConfig) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for s in &w.mcp_servers {
        out.insert(s.name.clone(), s.masked_json());
    }
    for name in &w.mcp_disabled {
        out.insert(
            name.clone(),
            serde_json::json!({"enabled": false, "description": ""}),
        );
    }
    serde_json::Value::Object(out)
}
