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
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use camunda_client::{Deployment, EngineClient, ExternalTaskLogQuery, StartProcessInstance};
use clap::Parser;
use procos_bench::{BenchEngine, EngineArgs, free_port, until_interrupted};
use tokio::process::{Child, Command};

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
    // Booted in the main future so the engine's process lives as long as the benchmark.
    let engine = until_interrupted(BenchEngine::start(&args.engine)).await?;
    let outcome = until_interrupted(measure(&args, &engine)).await;
    engine.stop().await;
    outcome
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
    fn config(&self) -> String {
        let mut text = format!(
            "[engine]\nurl = \"{}\"\n\n[worker]\nlisten = \"127.0.0.1:{}\"\nlong_poll = \"{}\"\n",
            self.engine_url,
            self.port,
            humantime::format_duration(self.long_poll)
        );
        for topic in &self.topics {
            text.push_str(&format!("\n[topics.\"{topic}\"]\nadapter = \"echo\"\n"));
        }
        text
    }

    fn write(&self) -> anyhow::Result<()> {
        std::fs::write(&self.file, self.config())
            .with_context(|| format!("writing {}", self.file.display()))
    }
}

/// SIGHUP to the worker, through `kill` (the benchmarks link no signal crate).
fn hang_up(child: &Child) -> anyhow::Result<()> {
    let pid = child.id().context("the worker has exited")?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("running kill -HUP")?;
    if !status.success() {
        bail!("kill -HUP {pid} failed");
    }
    Ok(())
}

async fn measure(args: &Args, engine: &BenchEngine) -> anyhow::Result<()> {
    let client = engine.client();
    println!(
        "# ProcOS topic-table reload: file write → first task of the new topic completed, long poll {}, {}",
        args.long_poll,
        engine.describe()
    );
    let dir = tempfile::tempdir()?;
    let (_, first_topic) = deploy(client, "bench-reload-base").await?;
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
        let mut samples = Vec::with_capacity(args.rounds);
        for _ in 0..args.rounds {
            let (key, topic) = deploy(client, "bench-reload").await?;
            client
                .start_process_instance(&key, &StartProcessInstance::default())
                .await?;
            // The worker is back in its long poll since the last round.
            tokio::time::sleep(Duration::from_millis(500)).await;
            fleet.topics.push(topic);
            let written = SystemTime::now();
            fleet.write()?;
            if with_sighup {
                hang_up(&child)?;
            }
            let served = first_completion(client, &key).await?;
            let took = served
                .duration_since(written)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64();
            println!("{series}: {:.0} ms", took * 1000.0);
            samples.push(took);
        }
        samples.sort_by(f64::total_cmp);
        if let (Some(min), Some(max)) = (samples.first(), samples.last()) {
            println!(
                "{series}: median {:.0} ms, min {:.0} ms, max {:.0} ms over {} rounds",
                samples[samples.len() / 2] * 1000.0,
                min * 1000.0,
                max * 1000.0,
                samples.len()
            );
        }
    }
    child.start_kill()?;
    child.wait().await?;
    Ok(())
}

fn spawn_worker(args: &Args, file: &Path) -> anyhow::Result<Child> {
    let procos = &args.procos_bin;
    let log = match &args.worker_log {
        Some(path) => Stdio::from(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    let mut command = Command::new(procos);
    command
        .arg("--config")
        .arg(file)
        .args(["--log", &args.log])
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    // Only the file configures this worker, not the caller's PROCOS_* variables.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PROCOS_") {
            command.env_remove(name);
        }
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", procos.display()))
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = reqwest::get(&url).await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the worker was not ready within 60 s ({url})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When the engine logged the first completion of `key`'s task.
async fn first_completion(client: &EngineClient, key: &str) -> anyhow::Result<SystemTime> {
    let query = ExternalTaskLogQuery {
        process_definition_key: Some(key.to_owned()),
        success_log: Some(true),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(entry) = client.external_task_log(&query).await?.first() {
            return Ok(SystemTime::from(entry.timestamp));
        }
        if Instant::now() > deadline {
            bail!("the new topic of {key} was not served within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn deploy(client: &EngineClient, prefix: &str) -> anyhow::Result<(String, String)> {
    let suffix = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
    let key = format!("{prefix}-{suffix}");
    let topic = key.clone();
    client
        .deploy(&Deployment {
            name: key.clone(),
            source: Some("procos-bench".into()),
            resources: vec![(format!("{key}.bpmn"), model(&key, &topic).into_bytes())],
        })
        .await?;
    Ok((key, topic))
}

fn model(key: &str, topic: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs-{key}" targetNamespace="https://procos.io/bench">
  <bpmn:process id="{key}" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work"/>
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}"/>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"#
    )
}
