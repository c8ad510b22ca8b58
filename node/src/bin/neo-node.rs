//! `neo-node`: runs one Neo broker node (see `docs/node.md`).
//!
//! Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), 1 when the node fails, 2
//! when the command line or the configuration is invalid. `neo-node healthcheck`
//! exits 0 when `/health` answers 200, else 1.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use neo_node::{Config, LogFormat, Node, RunArgs};

#[derive(Parser, Debug)]
#[command(
    name = "neo-node",
    version,
    about = "Neo broker node. With no arguments: a single-node cluster in ./neo-data on 127.0.0.1:7070/7071/7072.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// GET /health on a node's HTTP admin listener: exit 0 if it answers 200, else 1.
    Healthcheck {
        /// HTTP admin address [env: NEO_HTTP_LISTEN; a wildcard IP is dialled on 127.0.0.1].
        #[arg(long, value_name = "HOST:PORT")]
        http: Option<String>,
        /// Give up after this long.
        #[arg(long, value_name = "MS", default_value_t = 2_000)]
        timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("neo-node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Healthcheck { http, timeout_ms }) = cli.command {
        let addr = http
            .or_else(|| std::env::var("NEO_HTTP_LISTEN").ok())
            .unwrap_or_else(|| "127.0.0.1:7072".to_string());
        let addr = addr.replace("0.0.0.0:", "127.0.0.1:");
        let ok = runtime.block_on(neo_node::healthcheck(
            &addr,
            Duration::from_millis(timeout_ms),
        ));
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let cfg = match Config::resolve(&cli.run, &|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("neo-node: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(cfg.log_format, &cfg.log_filter) {
        eprintln!("neo-node: invalid configuration: --log / NEO_LOG / log: {e}");
        return ExitCode::from(2);
    }
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("neo-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("bad log filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let node = Node::start(cfg).await.context("start")?;
    wait_for_signal().await?;
    tracing::info!("signal received: shutting down");
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("wait for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
