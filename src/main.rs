//! `procos`: the one command users run. Parses the command line, sets up logging, and hands over
//! to the kernel and worker libraries; errors become a message and an exit code here and only
//! here.

mod commands;
mod config;
mod reload;
mod shutdown;
mod traces;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::Layer as _;

/// ProcOS: a Camunda 7 microkernel and worker fleet.
#[derive(Debug, Parser)]
#[command(name = "procos", version, about)]
struct Cli {
    /// The configuration file (engine, kernel, worker, topic table).
    #[arg(
        long,
        global = true,
        env = "PROCOS_CONFIG",
        default_value = "procos.toml"
    )]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, env = "PROCOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, in `tracing` syntax (e.g. `info,procos_worker=debug`).
    #[arg(long, global = true, env = "PROCOS_LOG", default_value = "info")]
    log: String,
    /// An OTLP/HTTP receiver's base URL (e.g. http://localhost:4318): each external task's span
    /// is exported there. Unset: no traces leave the process.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(subcommand)]
    command: Command,
}

/// The engines ProcOS builds (`scripts/lib.sh`: `build_engine`, `build_operaton`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EngineKind {
    Camunda,
    Operaton,
}

impl EngineKind {
    /// Where the repository's build puts this engine's jar.
    fn jar(self) -> PathBuf {
        PathBuf::from(match self {
            EngineKind::Camunda => "docker/camunda/target/procos-camunda-engine.jar",
            EngineKind::Operaton => "docker/operaton/target/procos-operaton-engine.jar",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Engine connection flags; each overrides `[engine]` in the configuration file.
#[derive(Debug, Args)]
struct EngineArgs {
    /// REST API of an engine that runs elsewhere (e.g. http://camunda:8080/engine-rest).
    #[arg(long, global = true, env = "PROCOS_ENGINE_URL")]
    engine_url: Option<String>,
    /// User for the REST API's basic authentication.
    #[arg(long, global = true, env = "PROCOS_ENGINE_USER")]
    engine_user: Option<String>,
    /// Password for --engine-user.
    #[arg(
        long,
        global = true,
        env = "PROCOS_ENGINE_PASSWORD",
        hide_env_values = true
    )]
    engine_password: Option<String>,
    /// Bearer token for the REST API.
    #[arg(
        long,
        global = true,
        env = "PROCOS_ENGINE_TOKEN",
        hide_env_values = true
    )]
    engine_token: Option<String>,
    /// OAuth2: the issuer's token endpoint; requests then carry tokens got by the client
    /// credentials grant.
    #[arg(long, global = true, env = "PROCOS_ENGINE_OAUTH2_TOKEN_URL")]
    engine_oauth2_token_url: Option<String>,
    /// OAuth2: the client id the issuer knows this fleet by.
    #[arg(long, global = true, env = "PROCOS_ENGINE_OAUTH2_CLIENT_ID")]
    engine_oauth2_client_id: Option<String>,
    /// OAuth2: the client secret (better from the environment or a file than on a command line).
    #[arg(
        long,
        global = true,
        env = "PROCOS_ENGINE_OAUTH2_CLIENT_SECRET",
        hide_env_values = true
    )]
    engine_oauth2_client_secret: Option<String>,
    /// OAuth2: a file holding the client secret (e.g. a mounted secret).
    #[arg(long, global = true, env = "PROCOS_ENGINE_OAUTH2_CLIENT_SECRET_FILE")]
    engine_oauth2_client_secret_file: Option<PathBuf>,
    /// OAuth2: the scope to ask for, when the issuer wants one.
    #[arg(long, global = true, env = "PROCOS_ENGINE_OAUTH2_SCOPE")]
    engine_oauth2_scope: Option<String>,
    /// OAuth2: the audience to ask for, when the issuer wants one.
    #[arg(long, global = true, env = "PROCOS_ENGINE_OAUTH2_AUDIENCE")]
    engine_oauth2_audience: Option<String>,
    /// Which engine the kernel boots from this repository's builds: Camunda 7.24
    /// (`docker/camunda`) or Operaton, the Camunda 7 fork with the same REST API
    /// (`docker/operaton`). `--engine-jar` names a jar directly instead.
    #[arg(long = "engine", global = true, env = "PROCOS_ENGINE", value_enum)]
    engine_kind: Option<EngineKind>,
    /// The assembled engine jar the kernel boots.
    #[arg(long, global = true, env = "PROCOS_ENGINE_JAR")]
    engine_jar: Option<PathBuf>,
    /// A Camunda Run install for the kernel to boot instead of the jar.
    #[arg(long, global = true, env = "CAMUNDA_RUN_HOME")]
    camunda_run_home: Option<PathBuf>,
    /// Port of the engine the kernel boots.
    #[arg(long, global = true, env = "PROCOS_ENGINE_PORT")]
    port: Option<u16>,
    /// Where the booted engine keeps its database and log.
    #[arg(long, global = true, env = "PROCOS_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Engine + kernel + a local worker fleet; prints the Cockpit URL once ready.
    Up {
        /// Worker processes' worth of fetch loops to run.
        #[arg(long, env = "PROCOS_WORKERS", default_value_t = 2)]
        workers: usize,
        /// The init directory (ProcOS's /proc/init).
        #[arg(long, env = "PROCOS_INIT_DIR")]
        init_dir: Option<PathBuf>,
    },
    /// Boot (or, with --engine-url, wait for) the engine and deploy the init directory.
    Kernel {
        /// The init directory (ProcOS's /proc/init).
        #[arg(long, env = "PROCOS_INIT_DIR")]
        init_dir: Option<PathBuf>,
    },
    /// Fetch and run external tasks for the configured topics.
    Worker,
    /// Deploy model files (.bpmn, .dmn, .form); unchanged files make no new version. Exit 2 when
    /// any file was not deployed.
    Deploy {
        /// The files to deploy.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start an instance of the latest version of a process; prints its id. Exit 2 when the
    /// engine refuses (no such process, bad variables).
    Start {
        /// The process definition key.
        key: String,
        /// A variable as NAME=VALUE; VALUE is read as JSON when it is JSON (42, true, {"a":1})
        /// and as a string otherwise. Repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        variables: Vec<String>,
        /// The instance's business key.
        #[arg(long)]
        business_key: Option<String>,
    },
    /// Deployed processes with their versions, running instances, topics no worker serves (and
    /// why a worker cannot), and open incidents. Exit 0 when no incident is open, 3 when some are.
    Status {
        /// A worker's observability endpoint (http://HOST:PORT) to ask which topics it cannot
        /// serve, and why. Repeatable. Default: this configuration's `[worker] listen`, where
        /// `procos up` serves its workers' endpoint.
        #[arg(long = "worker", value_name = "URL")]
        workers: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let traces = match init_logging(cli.log_format, &cli.log, cli.otlp_endpoint.as_deref()) {
        Ok(traces) => traces,
        Err(e) => {
            eprintln!("procos: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("procos: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("procos: error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // The last spans are still in the exporter's batch: send them before the process ends.
    if let Some(provider) = traces
        && let Err(e) = provider.shutdown()
    {
        eprintln!("procos: the last traces were not exported: {e}");
    }
    code
}

/// Logs to stderr, and spans to the OTLP receiver at `otlp_endpoint` when there is one (its
/// tracer provider is returned, to be shut down at exit).
fn init_logging(
    format: LogFormat,
    filter: &str,
    otlp_endpoint: Option<&str>,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (provider, otel) = match otlp_endpoint.filter(|e| !e.trim().is_empty()) {
        Some(endpoint) => {
            let (provider, layer) = traces::exporting(endpoint)?;
            (Some(provider), Some(layer))
        }
        None => (None, None),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(provider)
}
