//! `antler`: the server binary — the CLI over the `antler` library (the one composition root
//! of the workspace).

use std::path::PathBuf;

use antler::config::{self, Config};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

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
    /// Check a configuration file and print the effective settings.
    CheckConfig {
        /// Configuration file (else the usual lookup).
        #[arg(long)]
        config: Option<PathBuf>,
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
