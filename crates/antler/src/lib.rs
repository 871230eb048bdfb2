//! `antler`: the server as a library — configuration, wiring of stores / bridge / runtime /
//! gateway, and the shutdown sequence. The binary (`main.rs`) is a thin CLI over [`start`];
//! end-to-end tests call [`start`] with port 0.

pub mod config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use antler_bridge::{MemoryBridge, RedisBridge, StreamBridge};
use antler_runtime::{Graphs, Runtime};
use antler_store::Stores;
use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Backend, Config};

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

/// The auth service of a configuration: accounts in `<sqlite_dir>/auth.db` (in memory with
/// `database.backend: memory`). `mode: none` opens nothing. The session-token secret is
/// `auth.jwt_secret` / `AUTH_JWT_SECRET`, else one generated once and kept in
/// `<sqlite_dir>/.jwt_secret` (random per process with the memory backend).
pub async fn open_auth(cfg: &Config) -> Result<Arc<antler_auth::Auth>> {
    if cfg.auth.mode == antler_auth::AuthMode::None {
        return Ok(Arc::new(antler_auth::Auth::disabled()));
    }
    let mut auth_cfg = cfg.auth.clone();
    let store: Arc<dyn antler_auth::AuthStore> = match cfg.backend {
        Backend::Memory => Arc::new(antler_auth::MemoryAuthStore::new()),
        // Users and API keys stay in SQLite next to the process even with PostgreSQL/MySQL
        // (replicas need a shared `auth.jwt_secret` and the same keys; see ARCHITECTURE.md).
        Backend::Sqlite | Backend::Postgres | Backend::Mysql => {
            if auth_cfg.jwt_secret.is_none() && auth_cfg.mode == antler_auth::AuthMode::Local {
                auth_cfg.jwt_secret = Some(persistent_jwt_secret(&cfg.sqlite_dir)?);
            }
            Arc::new(open_auth_store(cfg).await?)
        }
    };
    let auth = antler_auth::Auth::new(auth_cfg, store).map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    Ok(Arc::new(auth))
}

/// Opens `<sqlite_dir>/auth.db` (the CLI's `keys` commands use it directly).
pub async fn open_auth_store(cfg: &Config) -> Result<antler_auth::SqliteAuthStore> {
    antler_auth::SqliteAuthStore::open(&cfg.sqlite_dir)
        .await
        .with_context(|| {
            format!(
                "cannot open the auth database in {}",
                cfg.sqlite_dir.display()
            )
        })
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
    Ok(match cfg.backend {
        Backend::Memory => Stores::memory(),
        Backend::Sqlite => antler_store_sql::open_sqlite(&cfg.sqlite_dir)
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
    let stores = open_stores(&cfg).await?;
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
    let graphs = if cfg.examples {
        Graphs::new(antler_graph::examples::all())
    } else {
        Graphs::default()
    };
    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", cfg.host, cfg.port))?;
    let addr = listener.local_addr()?;
    let mut runtime_cfg = cfg.runtime.clone();
    runtime_cfg.api_url = format!("http://{addr}");
    runtime_cfg.exclusive = cfg.backend.exclusive();
    let runtime = Runtime::new(stores.clone(), graphs, bridge, runtime_cfg);
    runtime
        .register_system_assistants()
        .await
        .context("cannot register the graphs' assistants")?;
    runtime.start_durability().await;
    let auth = open_auth(&cfg).await?;
    tracing::info!(mode = auth.mode().as_str(), "authentication");
    let state =
        antler_gateway::AppState::new(runtime.clone(), cfg.heartbeat).with_auth(auth.clone());
    let app = antler_gateway::router(state);
    let startup = started.elapsed();
    tracing::info!(%addr, ready_ms = startup.as_millis() as u64, "antler ready");

    // Shutdown order: (1) a signal arrives; (2) the runtime stops accepting runs, cancels the
    // running ones at their next await (bounded by shutdown_grace) and closes the bridge, which
    // ends every SSE stream; (3) axum stops accepting and drains connections, bounded by a hard
    // deadline so a stuck client cannot hold the process.
    let shutdown_rt = runtime.clone();
    let token = runtime.shutdown_token();
    // Connect info: the login lockout keys failures by client address.
    // TCP_NODELAY: responses are written in several pieces (headers, then SSE frames or the
    // `/wait` body); with Nagle's algorithm on, the second piece waits for the client's delayed
    // ACK (~40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        token.cancelled().await;
        tracing::info!("shutting down");
        shutdown_rt.shutdown().await;
    });
    let deadline = runtime.config().shutdown_grace + Duration::from_secs(5);
    let shutdown_token = runtime.shutdown_token();
    let task = tokio::spawn(async move {
        tokio::select! {
            r = server => r.context("server error")?,
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
