//! `reload-latency`: how long a `procos worker` takes to serve a topic added to its
//! configuration file while it runs, from the file's write to the completion of the new topic's
//! first task (a task already waiting), on the engine's clock (same host as this one).
//!
//! Two series of `--rounds` each: the file alone (the worker notices it within its 1 s poll of
//! the file's modification time), and the file followed by SIGHUP (read at once). The worker
//! long-polls with `--long-poll`, so every reload has to cut a long poll short. It prints the
//! table and, given `--results-dir`, writes it to `reload.md` and every trial to `reload.json`.
//!
//! A benchmark, not a test: it prints and writes figures, and asserts nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use camunda_client::{EngineClient, StartProcessInstance};
use clap::Parser;
use procos_bench::worker::{
    echo_topic, is_ready, readyz_client, readyz_url, signal, worker_command, worker_file,
};
use procos_bench::{
    BenchEngine, EngineArgs, Machine, Sorted, Table, completions, deploy_new, free_port,
    load_average, millis, poll_until, report_date, run_on_engine, say, tool_version, write_results,
};
use serde::Serialize;
use tokio::process::Child;

/// Reload latency of `procos worker`: file write to the first task of a new topic served.
/// `bench/run.sh reload` passes `--results-dir`; flags given after it override it.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
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
    /// Where `reload.md` (the printed report) and `reload.json` (every trial) are written;
    /// nothing is written without it.
    #[arg(long)]
    results_dir: Option<PathBuf>,
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

/// What `reload.json` holds.
#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: Machine,
    versions: BTreeMap<String, String>,
    settings: Settings,
    series: Vec<Series>,
    duration_s: f64,
}

#[derive(Debug, Serialize)]
struct Settings {
    rounds: usize,
    long_poll_ms: u64,
    worker_log: String,
    engine: String,
}

/// One way of telling the worker: the file alone, or the file and SIGHUP.
#[derive(Debug, Serialize)]
struct Series {
    name: &'static str,
    sighup: bool,
    /// File write → the new topic's task completed, each round in the order they ran.
    latencies_ms: Vec<f64>,
    summary: Option<Summary>,
}

#[derive(Debug, Serialize)]
struct Summary {
    rounds: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

impl Series {
    fn new(name: &'static str, sighup: bool, latencies_ms: Vec<f64>) -> Self {
        let summary = Sorted::new(latencies_ms.clone()).map(|s| Summary {
            rounds: s.len(),
            median_ms: s.percentile(0.5),
            min_ms: s.min(),
            max_ms: s.max(),
            mean_ms: s.mean(),
        });
        Self {
            name,
            sighup,
            latencies_ms,
            summary,
        }
    }
}

impl Report {
    fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::from("# ProcOS topic-table reload\n\n");
        out.push_str(&self.machine.describe(&self.date, self.duration_s));
        out.push_str("\n\nVersions:\n\n");
        for (what, version) in &self.versions {
            out.push_str(&format!("- {what}: {version}\n"));
        }
        out.push_str(&format!(
            "\n`procos worker` (`long_poll = \"{}\"`, log filter `{}`) on a {}. Each round deploys a process with a topic of its own, starts an instance (its task waits), adds the topic to the worker's file and times the write → the engine's log entry of that task's completion (both clocks are the host's; ±1 ms, the engine's timestamps are whole milliseconds). {} rounds per series: the file alone (the worker looks at its modification time every second) and the file followed by SIGHUP.\n\n",
            humantime::format_duration(Duration::from_millis(s.long_poll_ms)),
            s.worker_log,
            s.engine,
            s.rounds
        ));
        let mut table = Table::new(&[
            "series",
            "rounds",
            "median",
            "min",
            "max",
            "mean",
            "each round, in order",
        ])
        .left(6);
        let ms = |v: f64| format!("{v:.0} ms");
        for series in &self.series {
            let rounds: Vec<String> = series
                .latencies_ms
                .iter()
                .map(|v| format!("{v:.0}"))
                .collect();
            let mut row = vec![series.name.to_owned()];
            match &series.summary {
                Some(m) => row.extend([
                    m.rounds.to_string(),
                    ms(m.median_ms),
                    ms(m.min_ms),
                    ms(m.max_ms),
                    ms(m.mean_ms),
                ]),
                None => row.extend(["0".into(), "—".into(), "—".into(), "—".into(), "—".into()]),
            }
            row.push(format!("{} ms", rounds.join(", ")));
            table.row(row);
        }
        out.push_str(&table.markdown());
        out
    }
}

async fn measure(args: &Args, engine: &BenchEngine) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut machine = Machine::probe();
    let client = engine.client();
    say(&format!(
        "topic-table reload: {} rounds per series, long poll {}, {}",
        args.rounds,
        args.long_poll,
        engine.describe()
    ));
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

    let mut series = Vec::new();
    for (name, with_sighup) in [("file watch", false), ("file + SIGHUP", true)] {
        let mut latencies = Vec::with_capacity(args.rounds);
        for round in 1..=args.rounds {
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
            // In whole microseconds: the engine's timestamp has whole milliseconds anyway.
            let took = served.duration_since(written).unwrap_or(Duration::ZERO);
            let took_ms = took.as_micros() as f64 / 1000.0;
            say(&format!("{name}, round {round}: {took_ms:.0} ms"));
            latencies.push(took_ms);
        }
        series.push(Series::new(name, with_sighup, latencies));
    }
    child.start_kill()?;
    child.wait().await?;

    machine.load_after = load_average();
    let mut versions = BTreeMap::new();
    versions.insert(
        "engine".to_owned(),
        format!("Camunda {}", client.version().await?),
    );
    if let Some(procos) = tool_version(args.procos_bin.as_os_str(), &["--version"]).await {
        versions.insert("procos".to_owned(), procos);
    }
    let report = Report {
        date: report_date(),
        machine,
        versions,
        settings: Settings {
            rounds: args.rounds,
            long_poll_ms: millis(*args.long_poll),
            worker_log: args.log.clone(),
            engine: engine.describe(),
        },
        series,
        duration_s: started.elapsed().as_secs_f64(),
    };
    let markdown = report.markdown();
    if let Some(dir) = &args.results_dir {
        write_results(dir, "reload", &markdown, &report)?;
        say(&format!(
            "results in {}/reload.md and reload.json",
            dir.display()
        ));
    }
    println!("{markdown}");
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
