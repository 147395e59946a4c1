//! `peers`: ProcOS workers against the official Camunda 7 external task clients (Java,
//! JavaScript, Python) on the same engine and machine, and the engine's own ceiling (the same
//! process with a no-op expression instead of the external task). `bench/run.sh peers` installs
//! the peers and runs this; without `--engine-url` it boots a scratch engine through the
//! kernel's own code and stops it at the end.
//!
//! Each run deploys its own process (one service task; its topic is the process key), starts the
//! contender's worker processes and waits until they are ready, warms them up with instances that
//! are not counted, starts instances one at a time for pickup latency, then starts the measured
//! instances at a fixed concurrency and waits for their end. Throughput is counted on the
//! engine's clock from history; pickup latency from the external-task log's creation time to the
//! handler's record; CPU (the worker's, the engine's by thread, the driver's) and peak RSS from
//! `/proc`.
//! Two scenarios: `echo` (no task body, one worker process each: throughput, latency, cost) and
//! scaling (a task body of `--scaling-delay`, 1, 2, 4, 8 worker processes: tasks/s per count).
//!
//! A benchmark, not a test: it prints and writes figures, and asserts nothing.

mod contender;
mod engine;
mod procfs;
mod report;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use procos_bench::{
    BenchEngine, EngineArgs, Machine, Model, load_average, millis, report_date, run_on_engine, say,
    tool_version,
};

use crate::contender::{Fleet, Kind, Programs, WorkerSettings};
use crate::engine::{Engine, FinishedInstance, MEASURED, PACED, WARMUP};
use crate::procfs::Clock;
use crate::report::{Pickup, Report, RunFigures, RunResult, Settings, ThreadCpu};

/// `bench/run.sh peers` passes the locations it installed; flags given after them override them.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// The process id of the engine at `--engine-url`, to report its CPU per 1,000 tasks (a
    /// scratch engine's is known).
    #[arg(long, requires = "engine_url")]
    engine_pid: Option<u32>,
    /// Measured instances per contender in the echo scenario.
    #[arg(long, default_value_t = 5000)]
    instances: usize,
    /// Instances that warm each run's workers up before the measured ones (not counted).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Instances, with and without an external task, that warm the engine up before all runs
    /// (its JIT compiler keeps making the engine faster for thousands of instances).
    #[arg(long, default_value_t = 3000)]
    engine_warmup: usize,
    /// Rounds of the echo scenario, the contenders' order reversed every other round; each
    /// contender's best round is reported (a shared machine's noise only ever slows a run down).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// maxTasks of every contender (ProcOS's `max_tasks`; the JS client's maxParallelExecutions
    /// too).
    #[arg(long, default_value_t = 16)]
    max_tasks: usize,
    /// Lock duration of every contender.
    #[arg(long, default_value = "60s")]
    lock_duration: humantime::Duration,
    /// Long poll (asyncResponseTimeout) of every contender.
    #[arg(long, default_value = "30s")]
    long_poll: humantime::Duration,
    /// Instances started at a time.
    #[arg(long, default_value_t = 8)]
    start_concurrency: usize,
    /// Instances started one at a time for pickup latency, per contender (echo scenario).
    #[arg(long, default_value_t = 200)]
    latency_samples: usize,
    /// Time between two of those starts.
    #[arg(long, default_value = "100ms")]
    latency_gap: humantime::Duration,
    /// The contenders, in the order they run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "procos,java,js,python,ceiling"
    )]
    contenders: Vec<Kind>,
    /// Measured instances per run in the scaling scenario; 0 skips it.
    #[arg(long, default_value_t = 1000)]
    scaling_instances: usize,
    /// Worker process counts in the scaling scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    scaling_workers: Vec<usize>,
    /// The task body in the scaling scenario.
    #[arg(long, default_value = "50ms")]
    scaling_delay: humantime::Duration,
    /// The JS client's `interval` in milliseconds (see bench/README.md).
    #[arg(long, default_value_t = 0)]
    js_interval_ms: u64,
    /// ProcOS's log filter. Its pickup latency is read from the `camunda_client=trace` lines;
    /// without them ProcOS has no pickup figures (but shows what the tracing costs it).
    #[arg(long, default_value = "info,camunda_client=trace")]
    procos_log: String,
    /// How long one run may take before it counts as failed.
    #[arg(long, default_value = "15m")]
    run_timeout: humantime::Duration,
    /// The `procos` binary.
    #[arg(long)]
    procos_bin: PathBuf,
    /// The Java peer's jar.
    #[arg(long)]
    java_jar: Option<PathBuf>,
    /// The JS peer's `worker.mjs`, next to its `node_modules`.
    #[arg(long)]
    js_worker: Option<PathBuf>,
    /// The Python interpreter of the Python peer's virtualenv.
    #[arg(long)]
    python: Option<PathBuf>,
    /// The Python peer's `worker.py`.
    #[arg(long)]
    python_worker: Option<PathBuf>,
    /// Where worker configurations, logs and pickup records go.
    #[arg(long)]
    work_dir: PathBuf,
    /// Where `peers.md`, `peers.json` and `peers.png` are written.
    #[arg(long)]
    results_dir: PathBuf,
    /// A document whose results section (between `<!-- results:peers -->` and
    /// `<!-- /results:peers -->`) is replaced by this run's tables and chart.
    #[arg(long)]
    doc: Option<PathBuf>,
    /// A Python with matplotlib, and `bench/chart/chart.py`, to draw `peers.png`.
    #[arg(long, requires = "chart_script")]
    chart_python: Option<PathBuf>,
    #[arg(long)]
    chart_script: Option<PathBuf>,
}

/// One run's shape.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    workers: usize,
    instances: usize,
    warmup: usize,
    /// Instances started one at a time (every `--latency-gap`) before the measured ones.
    paced: usize,
    delay: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let engine = args.engine.clone();
    run_on_engine(&engine, async |target| measure(args, target).await).await
}

async fn measure(args: Args, target: &BenchEngine) -> anyhow::Result<()> {
    let started = Instant::now();
    let engine = Engine::new(target.client().clone());
    let engine_version = engine.client().version().await?;
    let mut machine = Machine::probe();
    let mut bench = Bench {
        engine_pid: args.engine_pid.or_else(|| target.pid()),
        // Without the client's trailing `/`: the peers append `/external-task/…` themselves.
        engine_url: target.client().base_url().trim_end_matches('/').to_owned(),
        programs: Programs {
            procos: args.procos_bin.clone(),
            java_jar: args.java_jar.clone(),
            js_worker: args.js_worker.clone(),
            python: args.python.clone(),
            python_worker: args.python_worker.clone(),
            js_interval_ms: args.js_interval_ms,
            procos_log: args.procos_log.clone(),
        },
        engine,
        clock: Clock::probe(),
        args,
        runs: 0,
        clients: BTreeMap::new(),
    };
    let args = &bench.args;
    say(&format!(
        "{} instances per contender, then the scaling scenario ({} instances per run); {}",
        args.instances,
        args.scaling_instances,
        target.describe()
    ));

    if args.engine_warmup > 0 {
        let scenario = Scenario {
            workers: 1,
            instances: args.engine_warmup,
            warmup: 0,
            paced: 0,
            delay: Duration::ZERO,
        };
        for kind in [Kind::Ceiling, Kind::Procos] {
            let result = bench.run_reported("engine warm-up", kind, scenario).await;
            if let Some(e) = result.error {
                bail!("the engine warm-up failed: {e}");
            }
        }
    }

    let args = &bench.args;
    let echo = Scenario {
        workers: 1,
        instances: args.instances,
        warmup: args.warmup,
        paced: args.latency_samples,
        delay: Duration::ZERO,
    };
    let contenders = args.contenders.clone();
    let mut echo_runs = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let mut order = contenders.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for kind in order {
            let phase = format!("echo, round {round}");
            let mut result = bench.run_reported(&phase, kind, echo).await;
            result.round = round;
            echo_runs.push(result);
        }
    }
    let main_runs: Vec<RunResult> = contenders
        .iter()
        .filter_map(|&kind| best_round(&echo_runs, kind))
        .collect();

    let args = &bench.args;
    let mut scaling_runs = Vec::new();
    if args.scaling_instances > 0 {
        let counts = args.scaling_workers.clone();
        let max_tasks = args.max_tasks;
        let base = Scenario {
            workers: 1,
            instances: args.scaling_instances,
            warmup: 0,
            paced: 0,
            delay: *args.scaling_delay,
        };
        for &kind in contenders.iter().filter(|k| **k != Kind::Ceiling) {
            for &workers in &counts {
                // A fetch's worth per process: at 50 ms a task, the sequential clients would
                // spend half a minute on `--warmup` instances alone.
                let warmup = workers * max_tasks;
                let scenario = Scenario {
                    workers,
                    warmup,
                    ..base
                };
                scaling_runs.push(bench.run_reported("scaling", kind, scenario).await);
            }
        }
    }

    machine.load_after = load_average();
    let args = &bench.args;
    let mut versions = bench.clients.clone();
    versions.insert(
        "engine".into(),
        format!("Camunda {engine_version} (ProcOS's engine build, H2)"),
    );
    versions.insert(
        "procos".into(),
        tool_version(args.procos_bin.as_os_str(), &["--version"])
            .await
            .unwrap_or_default(),
    );
    let python = args.python.clone().map(PathBuf::into_os_string);
    for (name, program, flag) in [
        ("rustc", Some("rustc".into()), "--version"),
        ("java", Some("java".into()), "-version"),
        ("node", Some("node".into()), "--version"),
        ("python", python, "--version"),
    ] {
        if let Some(program) = program
            && let Some(version) = tool_version(&program, &[flag]).await
        {
            versions.insert(name.into(), version);
        }
    }
    let report = Report {
        date: report_date(),
        machine,
        versions,
        settings: Settings {
            instances: args.instances,
            warmup: args.warmup,
            engine_warmup: args.engine_warmup,
            rounds: args.rounds.max(1),
            max_tasks: args.max_tasks,
            lock_duration_ms: millis(*args.lock_duration),
            long_poll_ms: millis(*args.long_poll),
            start_concurrency: args.start_concurrency,
            latency_samples: args.latency_samples,
            latency_gap_ms: millis(*args.latency_gap),
            scaling_instances: args.scaling_instances,
            scaling_workers: if args.scaling_instances > 0 {
                args.scaling_workers.clone()
            } else {
                Vec::new()
            },
            scaling_delay_ms: millis(*args.scaling_delay),
            js_interval_ms: args.js_interval_ms,
        },
        main: main_runs,
        echo_rounds: echo_runs,
        scaling: scaling_runs,
        duration_s: started.elapsed().as_secs_f64(),
    };
    report.write(&args.results_dir)?;
    if let (Some(python), Some(script)) = (&args.chart_python, &args.chart_script) {
        let status = tokio::process::Command::new(python)
            .arg(script)
            .arg(args.results_dir.join("peers.json"))
            .arg(args.results_dir.join("peers.png"))
            .status()
            .await
            .context("running the chart script")?;
        if !status.success() {
            bail!("the chart script failed ({status}); the tables are in peers.md");
        }
    }
    if let Some(doc) = &args.doc {
        report::update_doc(doc, &args.results_dir, &report.markdown())?;
    }
    println!("{}", report.markdown());
    Ok(())
}

/// The state shared by the runs.
#[derive(Debug)]
struct Bench {
    args: Args,
    engine: Engine,
    /// The engine's REST API, for the contenders' configuration.
    engine_url: String,
    /// The engine's process, for its CPU.
    engine_pid: Option<u32>,
    programs: Programs,
    clock: Clock,
    runs: usize,
    /// Client → version, as the peers reported them.
    clients: BTreeMap<String, String>,
}

impl Bench {
    /// Runs one contender and says how it went; a failed run is reported, not fatal, so that
    /// one broken peer does not cost the others' figures.
    async fn run_reported(&mut self, phase: &str, kind: Kind, scenario: Scenario) -> RunResult {
        say(&format!(
            "{phase}: {} × {}, {} instances",
            kind.label(),
            scenario.workers,
            scenario.instances
        ));
        let (figures, error) = match self.run(kind, scenario).await {
            Ok(f) => {
                say(&format!(
                    "  {:.0} tasks/s{}{}",
                    f.tasks_per_s,
                    f.pickup.as_ref().map_or(String::new(), |p| format!(
                        ", pickup p50 {:.1} ms p99 {:.1} ms",
                        p.p50_ms, p.p99_ms
                    )),
                    f.worker_cpu_s_per_1000
                        .map_or(String::new(), |c| format!(", {c:.3} CPU s / 1,000 tasks"))
                ));
                (Some(f), None)
            }
            Err(e) => {
                say(&format!("  failed: {e:#}"));
                (None, Some(format!("{e:#}")))
            }
        };
        RunResult {
            contender: kind,
            label: kind.label(),
            workers: scenario.workers,
            round: 1,
            figures,
            error,
        }
    }

    async fn run(&mut self, kind: Kind, scenario: Scenario) -> anyhow::Result<RunFigures> {
        self.runs += 1;
        let args = &self.args;
        let run = format!(
            "{}-{}w-{}-{}",
            kind.name(),
            scenario.workers,
            self.runs,
            chrono::Utc::now().format("%H%M%S")
        );
        let key = format!("peers-{run}");
        let engine = &self.engine;
        let model = match kind {
            Kind::Ceiling => Model::NoOp,
            _ => Model::ExternalTask,
        };
        engine.deploy(&key, model).await?;
        let deadline = Instant::now() + *args.run_timeout;

        let mut fleet = match kind {
            Kind::Ceiling => None,
            _ => {
                let settings = WorkerSettings {
                    engine_url: self.engine_url.clone(),
                    topic: key.clone(),
                    max_tasks: args.max_tasks,
                    lock_duration: *args.lock_duration,
                    long_poll: *args.long_poll,
                    delay: scenario.delay,
                };
                let mut fleet = Fleet::start(
                    kind,
                    scenario.workers,
                    &self.programs,
                    &settings,
                    &args.work_dir.join(&run),
                    &run,
                )?;
                fleet.wait_ready(Duration::from_secs(120)).await?;
                if let Some(client) = fleet.client_version() {
                    let (name, version) = client.split_once(' ').unwrap_or((&client, ""));
                    self.clients.insert(name.to_owned(), version.to_owned());
                }
                Some(fleet)
            }
        };

        if scenario.warmup > 0 {
            engine
                .start_instances(&key, WARMUP, scenario.warmup, args.start_concurrency)
                .await?;
            engine
                .wait_finished(&key, WARMUP, scenario.warmup, deadline, || {
                    fleet.as_mut().map_or(Ok(()), Fleet::check_alive)
                })
                .await?;
            // Every worker back in its long poll before the measured instances start.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        if scenario.paced > 0 {
            engine
                .start_paced(&key, PACED, scenario.paced, *args.latency_gap)
                .await?;
            engine
                .wait_finished(&key, PACED, scenario.paced, deadline, || {
                    fleet.as_mut().map_or(Ok(()), Fleet::check_alive)
                })
                .await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }

        let clock = self.clock;
        let driver = std::process::id();
        let engine_pid = self.engine_pid;
        let engine_cpu = |clock: &Clock| engine_pid.and_then(|p| clock.cpu_seconds(p).ok());
        let engine_threads =
            |clock: &Clock| engine_pid.and_then(|p| clock.threads_cpu_seconds(p).ok());
        let worker_cpu_0 = fleet.as_ref().map(|f| f.cpu_seconds(&clock)).transpose()?;
        let engine_cpu_0 = engine_cpu(&clock);
        let engine_threads_0 = engine_threads(&clock);
        let driver_cpu_0 = clock.cpu_seconds(driver)?;
        let wall = Instant::now();
        engine
            .start_instances(&key, MEASURED, scenario.instances, args.start_concurrency)
            .await?;
        engine
            .wait_finished(&key, MEASURED, scenario.instances, deadline, || {
                fleet.as_mut().map_or(Ok(()), Fleet::check_alive)
            })
            .await?;
        let wall_s = wall.elapsed().as_secs_f64();
        let worker_cpu_1 = fleet.as_ref().map(|f| f.cpu_seconds(&clock)).transpose()?;
        let engine_cpu_1 = engine_cpu(&clock);
        let engine_threads_1 = engine_threads(&clock);
        let driver_cpu_1 = clock.cpu_seconds(driver)?;
        let peak_rss = fleet.as_ref().map(Fleet::peak_rss_bytes).transpose()?;
        let rss_parts = fleet.as_ref().map(Fleet::rss_parts_bytes).transpose()?;
        if let Some(fleet) = fleet.as_mut() {
            fleet.stop(engine, &key).await?;
        }

        let finished = engine.finished_instances(&key, MEASURED).await?;
        let unique: HashSet<&str> = finished.iter().map(|i| i.id.as_str()).collect();
        if unique.len() != scenario.instances || finished.len() != scenario.instances {
            bail!(
                "history lists {} measured instances of {key} ({} different), not {}",
                finished.len(),
                unique.len(),
                scenario.instances
            );
        }
        let (Some(first), Some(last)) = (
            finished.iter().map(|i| i.start).min(),
            finished.iter().map(|i| i.end).max(),
        ) else {
            bail!("no measured instances of {key} in history");
        };
        let span_s = ((last - first).num_milliseconds().max(1)) as f64 / 1000.0;

        let (pickup, pickup_under_load) = match &fleet {
            None => (None, None),
            Some(fleet) => {
                let handled = fleet.pickups()?;
                let created = engine.task_creations(&key).await?;
                let paced = engine.finished_instances(&key, PACED).await?;
                let latencies = |instances: &[FinishedInstance]| {
                    let ids: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
                    let millis: Vec<f64> = created
                        .iter()
                        .filter(|(_, (instance, _))| ids.contains(instance.as_str()))
                        .filter_map(|(task, (_, at))| handled.get(task).map(|h| h - *at as f64))
                        .collect();
                    if millis.len() < instances.len() {
                        say(&format!(
                            "  note: pickup records for {} of {} tasks",
                            millis.len(),
                            instances.len()
                        ));
                    }
                    Pickup::from_samples(millis)
                };
                (latencies(&paced), latencies(&finished))
            }
        };
        let per_1000 = |before: Option<f64>, after: Option<f64>| {
            Some((after? - before?) / scenario.instances as f64 * 1000.0)
        };
        let used = |before: Option<f64>, after: Option<f64>| Some(after? - before?);
        Ok(RunFigures {
            instances: scenario.instances,
            tasks_per_s: scenario.instances as f64 / span_s,
            span_s,
            wall_s,
            pickup,
            pickup_under_load,
            worker_cpu_s_per_1000: per_1000(worker_cpu_0, worker_cpu_1),
            worker_peak_rss_mb: peak_rss.map(|b| b as f64 / 1e6),
            worker_rss_anon_mb: rss_parts.map(|(anon, _)| anon as f64 / 1e6),
            worker_rss_file_mb: rss_parts.map(|(_, file)| file as f64 / 1e6),
            engine_cpu_s_per_1000: per_1000(engine_cpu_0, engine_cpu_1),
            driver_cpu_s_per_1000: per_1000(Some(driver_cpu_0), Some(driver_cpu_1)),
            worker_cpu_s: used(worker_cpu_0, worker_cpu_1),
            engine_cpu_s: used(engine_cpu_0, engine_cpu_1),
            driver_cpu_s: driver_cpu_1 - driver_cpu_0,
            engine_threads: match (
                engine_threads_0,
                engine_threads_1,
                used(engine_cpu_0, engine_cpu_1),
            ) {
                (Some(before), Some(after), Some(total)) => {
                    ThreadCpu::breakdown(&before, &after, total)
                }
                _ => Vec::new(),
            },
        })
    }
}

/// A contender's round with the most tasks/s, or its last failed one.
fn best_round(runs: &[RunResult], kind: Kind) -> Option<RunResult> {
    let mine = runs.iter().filter(|r| r.contender == kind);
    mine.clone()
        .filter(|r| r.figures.is_some())
        .max_by(|a, b| {
            let tps = |r: &RunResult| r.figures.as_ref().map_or(0.0, |f| f.tasks_per_s);
            tps(a).total_cmp(&tps(b))
        })
        .or_else(|| mine.clone().next_back())
        .cloned()
}
