//! `procos-sandbox-proxy`: the Docker socket proxy of a ProcOS deployment. Parses flags and
//! environment, sets up logging, binds, and serves until SIGTERM/SIGINT; errors become a
//! message and exit code 1 here and only here.
//!
//! The signal handling and logging set-up repeat `procos`'s (src/shutdown.rs, src/main.rs) on
//! purpose: the one process that holds the Docker socket stays a small binary that links none
//! of the worker, kernel or adapters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use procos_sandbox_proxy::{Listen, ProxyConfig, SANDBOX_LABEL, SandboxProxy};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// ProcOS sandbox proxy: holds the Docker socket and lets through only the calls of ProcOS's
/// sandbox. Reachable only on the network of the workers that use it: whoever reaches it can
/// start sandbox containers.
#[derive(Debug, Parser)]
#[command(name = "procos-sandbox-proxy", version, about)]
struct Cli {
    /// Where to accept Docker API clients: tcp://HOST:PORT or unix:///PATH; repeat the flag or
    /// separate with commas for several. Keep TCP addresses on the compose network only.
    #[arg(
        long,
        env = "PROCOS_SANDBOX_PROXY_LISTEN",
        value_delimiter = ',',
        default_value = "tcp://0.0.0.0:2375"
    )]
    listen: Vec<Listen>,
    /// The Docker engine's socket (unix:// prefix optional).
    #[arg(
        long,
        env = "PROCOS_SANDBOX_PROXY_UPSTREAM",
        default_value = "/var/run/docker.sock"
    )]
    upstream: String,
    /// Images sandbox containers may be created from and pulled: exact references or prefixes
    /// ending in `*`, as in `[worker] allowed_images`; comma-separated.
    #[arg(
        long,
        env = "PROCOS_SANDBOX_PROXY_ALLOWED_IMAGES",
        value_delimiter = ',',
        default_value = "procos/*"
    )]
    allowed_images: Vec<String>,
    /// The workers' workspace directory (`[worker] workspace_dir`): a sandbox may bind one
    /// directory directly under it, its instance's workspace, at /workspace. Unset: no sandbox
    /// binds any host path.
    #[arg(long, env = "PROCOS_SANDBOX_PROXY_WORKSPACE_DIR")]
    workspace_dir: Option<PathBuf>,
    /// Largest container-create body read, in KiB.
    #[arg(long, env = "PROCOS_SANDBOX_PROXY_MAX_BODY_KB", default_value_t = 1024)]
    max_body_kb: usize,
    /// On SIGTERM/SIGINT: how long open requests (container waits, log streams) may take to
    /// finish before their connections are closed.
    #[arg(
        long,
        env = "PROCOS_SANDBOX_PROXY_GRACE_PERIOD",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    grace_period: Duration,
    /// Log format on stderr.
    #[arg(long, env = "PROCOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, in `tracing` syntax (e.g. `info,procos_sandbox_proxy=debug`).
    #[arg(long, env = "PROCOS_LOG", default_value = "info")]
    log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("procos-sandbox-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("procos-sandbox-proxy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let upstream = PathBuf::from(
        cli.upstream
            .strip_prefix("unix://")
            .unwrap_or(&cli.upstream),
    );
    if !upstream.exists() {
        tracing::warn!(upstream = %upstream.display(), "the Docker socket is not there (yet); calls fail until it is");
    }
    for listen in &cli.listen {
        if let Listen::Tcp(address) = listen
            && !address.ip().is_loopback()
        {
            tracing::info!(%address, "listening beyond loopback: keep this address on the workers' network only");
        }
    }
    let config = ProxyConfig {
        listen: cli.listen,
        upstream: upstream.clone(),
        allowed_images: cli.allowed_images.clone(),
        workspace_dir: cli.workspace_dir.clone(),
        max_body_bytes: cli.max_body_kb.saturating_mul(1024),
        grace_period: cli.grace_period,
    };
    let proxy = SandboxProxy::bind(config)
        .await
        .context("cannot start the sandbox proxy")?;
    let addresses: Vec<SocketAddr> = proxy.tcp_addrs();
    tracing::info!(
        upstream = %upstream.display(),
        allowed_images = %cli.allowed_images.join(", "),
        label = SANDBOX_LABEL,
        ?addresses,
        "the ProcOS sandbox proxy is up"
    );
    let shutdown = CancellationToken::new();
    // Owned here so the signal listener ends with the proxy, never detached.
    let mut background = tokio::task::JoinSet::new();
    background.spawn(on_signal(shutdown.clone()));
    proxy.run(shutdown.clone()).await;
    shutdown.cancel();
    background.shutdown().await;
    tracing::info!("the ProcOS sandbox proxy stopped");
    Ok(())
}

/// Waits for SIGINT/SIGTERM and cancels `token`; exits on the second signal. Returns when the
/// token is cancelled by anyone.
async fn on_signal(token: CancellationToken) {
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::error!("cannot listen for signals; stop the proxy with SIGKILL");
        token.cancelled().await;
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        () = token.cancelled() => return,
    }
    eprintln!("procos-sandbox-proxy: stopping (send the signal again to stop at once)");
    token.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("procos-sandbox-proxy: stopped at once");
    std::process::exit(130);
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
