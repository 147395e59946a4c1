//! The engine a benchmark measures: one that runs already (`--engine-url`), or a scratch engine
//! booted by the kernel's [`LocalEngine`] from the engine jar (a fresh H2 database in a
//! temporary directory, a free port) and stopped when the benchmark ends. Every call to it goes
//! through [`EngineClient`]; nothing here knows the REST API's paths.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use camunda_client::{Auth, EngineClient};
use procos_kernel::{EngineProcess, Launcher, LocalEngine};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// How long a scratch engine may take to answer: a cold JVM boots in well under a minute, but on
/// 2 cores shared with a build it can take a few.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a scratch engine may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Which engine to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// REST API of a running engine to measure against. Without it, a scratch engine is booted
    /// from `--engine-jar` (fresh H2 database in a temporary directory, a free port) and stopped
    /// at the end.
    #[arg(long, env = "ENGINE_URL")]
    pub engine_url: Option<String>,
    /// The assembled engine a scratch engine is booted from (`build_engine` in `scripts/lib.sh`
    /// builds it).
    #[arg(
        long,
        env = "PROCOS_ENGINE_JAR",
        default_value = "docker/camunda/target/procos-camunda-engine.jar"
    )]
    pub engine_jar: PathBuf,
    /// The `java` that runs the engine jar.
    #[arg(long, default_value = "java")]
    pub java: PathBuf,
}

/// The engine under measurement and, when the benchmark booted it, its process.
#[derive(Debug)]
pub struct BenchEngine {
    client: EngineClient,
    scratch: Option<Scratch>,
}

#[derive(Debug)]
struct Scratch {
    process: EngineProcess,
    port: u16,
    /// The engine's H2 database and `engine.log`; removed once the engine has stopped.
    dir: TempDir,
}

impl BenchEngine {
    /// The engine at `--engine-url` once it answers, or a scratch engine booted until it answers.
    ///
    /// Call it from the binary's main future. The kernel asks Linux to SIGTERM the engine when
    /// the *thread* that spawned it exits (`PR_SET_PDEATHSIG`), so that no `java` outlives the
    /// benchmark. `#[tokio::main]` polls the main future inside `block_on` on the main thread
    /// (only `tokio::spawn`ed tasks go to the runtime's workers), and tokio's
    /// `Command::spawn` forks on the calling thread: booted from there, the engine lives exactly
    /// as long as the benchmark. From a blocking-pool thread it would die when that thread
    /// idles out, mid-run; hence the check below.
    pub async fn start(args: &EngineArgs) -> anyhow::Result<Self> {
        if let Some(url) = &args.engine_url {
            let client = EngineClient::new(url, Auth::None)?;
            client
                .engines()
                .await
                .with_context(|| format!("no engine answers at {url}"))?;
            return Ok(Self {
                client,
                scratch: None,
            });
        }
        if std::thread::current().name() != Some("main") {
            bail!(
                "a scratch engine must be booted from the main thread, which lives as long as the benchmark (the engine dies with the thread that spawned it)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("procos-bench-engine-")
            .tempdir()
            .context("creating a directory for the scratch engine")?;
        let port = free_port()?;
        let engine = LocalEngine {
            launcher: Launcher::Jar {
                java: args.java.clone(),
                jar: args.engine_jar.clone(),
            },
            port,
            data_dir: dir.path().to_path_buf(),
            env: Vec::new(),
        };
        let client = EngineClient::local(port, Auth::None)?;
        say(&format!(
            "booting a scratch engine on port {port} from {}",
            args.engine_jar.display()
        ));
        let process = engine
            .boot(
                &client,
                READY_TIMEOUT,
                &CancellationToken::new(),
                |waited| {
                    say(&format!(
                        "  still waiting for the engine ({} s)",
                        waited.as_secs()
                    ));
                },
            )
            .await
            .context("booting the scratch engine")?;
        say(&format!("engine ready on port {port}"));
        Ok(Self {
            client,
            scratch: Some(Scratch { process, port, dir }),
        })
    }

    /// A client of the engine's REST API.
    pub fn client(&self) -> &EngineClient {
        &self.client
    }

    /// The scratch engine's process id (for its CPU in `/proc`); `None` for an engine at
    /// `--engine-url`.
    pub fn pid(&self) -> Option<u32> {
        self.scratch.as_ref().and_then(|s| s.process.pid())
    }

    /// How to name the engine in a report's header.
    pub fn describe(&self) -> String {
        match &self.scratch {
            Some(s) => format!("scratch engine on port {}", s.port),
            None => self.client.base_url().to_owned(),
        }
    }

    /// Stops a scratch engine (SIGTERM to its process group, SIGKILL after 20 s) and removes its
    /// files. An engine at `--engine-url` is not ours: it keeps running.
    pub async fn stop(self) {
        let Some(scratch) = self.scratch else {
            return;
        };
        scratch.process.stop(STOP_TIMEOUT).await;
        let path = scratch.dir.path().display().to_string();
        if let Err(e) = scratch.dir.close() {
            say(&format!(
                "could not remove the scratch engine's files {path}: {e}"
            ));
        }
    }
}

/// Runs `bench` on the engine `args` name, booted first when it is a scratch engine, and stops a
/// scratch engine afterwards whatever came of it; Ctrl-C ends the boot or the benchmark early.
/// Call it from the binary's main future, so that the engine's process lives as long as the
/// benchmark (see [`BenchEngine::start`]). A boot interrupted by Ctrl-C kills the half-booted
/// engine as it is dropped.
pub async fn run_on_engine<T>(
    args: &EngineArgs,
    bench: impl AsyncFnOnce(&BenchEngine) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let engine = until_interrupted(BenchEngine::start(args)).await?;
    let outcome = until_interrupted(bench(&engine)).await;
    engine.stop().await;
    outcome
}

/// Runs `bench` unless Ctrl-C comes first, and then drops it. The caller goes on to stop its
/// engine either way: the scratch engine runs in its own process group, so the terminal's Ctrl-C
/// does not reach it.
pub async fn until_interrupted<T>(
    bench: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        outcome = bench => outcome,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

/// A TCP port free on the loopback address now (another process may take it before it is used;
/// good enough on a benchmark machine).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A line of progress, on stderr (the figures go to stdout).
pub fn say(text: &str) {
    eprintln!("==> {text}");
}
