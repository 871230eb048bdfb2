//! `antler`: the server binary — the CLI over the `antler` library (the one composition root
//! of the workspace).

use std::path::PathBuf;

use antler::config::{self, Config};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// mimalloc: the engine's persistent lists and the JSON values allocate many small nodes, which
/// glibc's malloc serves several times slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "antler",
    version,
    about = "Antler: an agent runtime server speaking the LangGraph Platform API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve {
        /// Address to listen on.
        #[arg(long)]
        host: Option<String>,
        /// Port to listen on (0 = any free port; the chosen one is printed).
        #[arg(long)]
        port: Option<u16>,
        /// Configuration file (else ANTLER_CONFIG, DEER_FLOW_CONFIG_PATH, ./config.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Directory of the SQLite database (overrides `database.sqlite_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Manage API keys (kept hashed where the accounts live: `<data dir>/auth.db` with SQLite,
    /// the shared database with PostgreSQL / MySQL).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        /// Configuration file (else the usual lookup).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Directory of the SQLite databases (overrides `database.sqlite_dir`).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Check a configuration file and print the effective settings.
    CheckConfig {
        /// Configuration file (else the usual lookup).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Create a key acting as user NAME (created if unknown); prints the key once.
    Create {
        /// User id or login name the key acts as.
        #[arg(long)]
        user: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Make the user an admin (may use the `/v1/admin/*` routes).
        #[arg(long)]
        admin: bool,
    },
    /// List keys (never their values).
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key id (as printed by `create` and `list`).
        id: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve {
            host,
            port,
            config,
            data_dir,
        } => {
            let path = config::locate(config.as_deref())?;
            let mut cfg = config::load(path.as_deref())?;
            if let Some(h) = host {
                cfg.host = h;
            }
            if let Some(p) = port {
                cfg.port = p;
            }
            if let Some(d) = data_dir {
                cfg.sqlite_dir = d;
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(serve(cfg))
        }
        Command::Keys {
            action,
            config,
            data_dir,
        } => {
            let path = config::locate(config.as_deref())?;
            let mut cfg = config::load(path.as_deref())?;
            if let Some(d) = data_dir {
                cfg.sqlite_dir = d;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(keys(cfg, action))
        }
        Command::CheckConfig { config } => {
            let path = config::locate(config.as_deref())?;
            let cfg = config::load(path.as_deref())?;
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            println!("{cfg:#?}");
            Ok(())
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ANTLER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn keys(cfg: Config, action: KeysAction) -> Result<()> {
    let store = antler::open_auth_store(&cfg).await?;
    let mut auth_cfg = cfg.auth.clone();
    // Key management works whatever the serving mode is.
    auth_cfg.mode = antler_auth::AuthMode::ApiKey;
    let auth = antler_auth::Auth::new(auth_cfg, store).map_err(|e| anyhow::anyhow!("auth: {e}"))?;
    match action {
        KeysAction::Create { user, name, admin } => {
            let mut user = auth
                .ensure_user(&user)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if admin && user.role != antler_auth::Role::Admin {
                user = auth
                    .set_role(&user.id, antler_auth::Role::Admin)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let (rec, key) = auth
                .create_api_key(&user.id, name.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created key {} for user {} (shown once; store it now)",
                rec.id, user.id
            );
            println!("{key}");
        }
        KeysAction::List { user } => {
            let keys = auth
                .list_api_keys(user.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "{:<18} {:<24} {:<16} {:<28} status",
                "id", "user", "name", "created"
            );
            for k in keys {
                let status = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{:<18} {:<24} {:<16} {:<28} {status}",
                    k.id,
                    k.user_id,
                    k.name.as_deref().unwrap_or("-"),
                    k.created_at.to_rfc3339()
                );
            }
        }
        KeysAction::Revoke { id } => {
            auth.revoke_api_key(None, &id)
                .await
                .map_err(|e| anyhow::anyhow!("key {id}: {e}"))?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn serve(cfg: Config) -> Result<()> {
    let server = antler::start(cfg).await?;
    // Ready: print the address on stdout (tests and scripts parse this line).
    println!("antler listening on {}", server.url());
    let token = server.runtime.shutdown_token();
    tokio::select! {
        _ = wait_for_signal() => token.cancel(),
        _ = token.cancelled() => {}
    }
    server.wait().await?;
    tracing::info!("bye");
    Ok(())
}
