//! `reload-latency`: how long a `procos worker` takes to serve a topic added to its
//! configuration file while it runs, from the file's write to the completion of the new topic's
//! first task (a task already waiting), on the engine's clock (same host as this one).
//!
//! Two series of `--rounds` each: the file alone (the worker notices it within its 1 s poll of
//! the file's modification time), and the file followed by SIGHUP (read at once). The worker
//! long-polls with `--long-poll`, so every reload has to cut a long poll short.
//!
//! A benchmark, not a test: it prints figures and asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use camunda_client::{EngineClient, StartProcessInstance};
use clap::Parser;
use procos_bench::worker::{
    echo_topic, is_ready, readyz_client, readyz_url, signal, worker_command, worker_file,
};
use procos_bench::{
    BenchEngine, EngineArgs, Sorted, completions, deploy_new, free_port, poll_until, run_on_engine,
};
use tokio::process::Child;

/// Reload latency of `procos worker`: file write to the first task of a new topic served.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// The `procos` binary.
    #[arg(long, default_value = "target/release/procos")]
    procos_bin: PathBuf,
    /// Rounds of each series (file alone, file + SIGHUP).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The worker's long poll.
    #[arg(long, default_value = "30s")]
    long_poll: humantime::Duration,
    /// Where the worker's log goes (discarded without it).
    #[arg(long)]
    worker_log: Option<PathBuf>,
    /// The worker's log filter.
    #[arg(long, default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_on_engine(&args.engine, async |engine| measure(&args, engine).await).await
}

/// The worker's configuration file and what it says.
struct WorkerFile {
    file: PathBuf,
    port: u16,
    engine_url: String,
    long_poll: Duration,
    topics: Vec<String>,
    _dir: tempfile::TempDir,
}

impl WorkerFile {
    fn write(&self) -> anyhow::Result<()> {
        let mut worker = toml::Table::new();
        worker.insert("listen".into(), format!("127.0.0.1:{}", self.port).into());
        worker.insert(
            "long_poll".into(),
            humantime::format_duration(self.long_poll)
                .to_string()
                .into(),
        );
        let topics = self.topics.iter().map(|t| (t.clone(), echo_topic()));
        let text = worker_file(&self.engine_url, worker, topics)?;
        std::fs::write(&self.file, text).with_context(|| format!("writing {}", self.file.display()))
    }
}

async fn measure(args: &Args, engine: &BenchEngine) -> anyhow::Result<()> {
    let client = engine.client();
    println!(
        "# ProcOS topic-table reload: file write → first task of the new topic completed, long poll {}, {}",
        args.long_poll,
        engine.describe()
    );
    let dir = tempfile::tempdir()?;
    let first_topic = deploy_new(client, "bench-reload-base").await?;
    let mut fleet = WorkerFile {
        file: dir.path().join("procos.toml"),
        port: free_port()?,
        engine_url: client.base_url().to_owned(),
        long_poll: args.long_poll.into(),
        topics: vec![first_topic],
        _dir: dir,
    };
    fleet.write()?;
    let mut child = spawn_worker(args, &fleet.file)?;
    wait_ready(fleet.port).await?;

    for (series, with_sighup) in [("file watch", false), ("file + SIGHUP", true)] {
        let mut latencies = Vec::with_capacity(args.rounds);
        for _ in 0..args.rounds {
            let key = deploy_new(client, "bench-reload").await?;
            client
                .start_process_instance(&key, &StartProcessInstance::default())
                .await?;
            // The worker is back in its long poll since the last round.
            tokio::time::sleep(Duration::from_millis(500)).await;
            fleet.topics.push(key.clone());
            let written = SystemTime::now();
            fleet.write()?;
            if with_sighup {
                signal(child.id().context("the worker has exited")?, "HUP").await?;
            }
            let served = first_completion(client, &key).await?;
            let took = served
                .duration_since(written)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64();
            println!("{series}: {:.0} ms", took * 1000.0);
            latencies.push(took);
        }
        if let Some(sorted) = Sorted::new(latencies) {
            println!(
                "{series}: median {:.0} ms, min {:.0} ms, max {:.0} ms over {} rounds",
                sorted.percentile(0.5) * 1000.0,
                sorted.min() * 1000.0,
                sorted.max() * 1000.0,
                sorted.len()
            );
        }
    }
    child.start_kill()?;
    child.wait().await?;
    Ok(())
}

fn spawn_worker(args: &Args, file: &Path) -> anyhow::Result<Child> {
    let log = match &args.worker_log {
        Some(path) => Stdio::from(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut command = worker_command(&args.procos_bin, file, &["--log", &args.log]);
    command
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.procos_bin.display()))
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let url = readyz_url(port);
    let http = readyz_client()?;
    let failure = format!("the worker was not ready within 60 s ({url})");
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        failure,
        async || Ok(is_ready(&http, &url).await.then_some(())),
    )
    .await
}

/// When the engine logged the first completion of `key`'s task.
async fn first_completion(client: &EngineClient, key: &str) -> anyhow::Result<SystemTime> {
    let failure = format!("the new topic of {key} was not served within 60 s");
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(20),
        failure,
        async || {
            let log = completions(client, key).await?;
            Ok(log.first().map(|entry| SystemTime::from(entry.timestamp)))
        },
    )
    .await
}
