//! `steps`: the shape of windmill.dev's orchestrator benchmark, run on ProcOS: one process
//! instance of 40 sequential light steps (a Python script computing `fib(10)` each) and one of
//! 10 heavy steps (`fib(33)`), one instance at a time, on
//!
//! - the `python` adapter on the Docker backend, with its default warm pool;
//! - the `python` adapter on the namespace backend (bubblewrap);
//! - the `echo` adapter, which runs nothing: the engine's and the worker's own share.
//!
//! One in-process worker serves the three topics with one long poll, so that a step's task is
//! handed over as soon as the engine creates it and no other poll is woken by it. After a
//! warm-up (the engine, then one uncounted instance of each configuration and shape), `--rounds`
//! interleaved rounds run each configuration's light and heavy instance, and the host's bare
//! `python3` computes the same Fibonacci numbers in one process for a baseline.
//!
//! The figures come from the engine's history: an instance's start to its end, each step's
//! activity instance from start to end, and the gap between one step's end and the next one's
//! start. Each Python step also records when its script started and ended (the sandbox and the
//! engine read the same host clock), which splits a step into the way to the script, the script
//! and the way back.
//!
//! A benchmark, not a test: it prints figures and asserts nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camunda_client::{
    Deployment, EngineClient, HistoricActivityInstance, StartProcessInstance, Variable,
};
use clap::Parser;
use procos_bench::{
    BenchEngine, EngineArgs, Machine, load_average, report_date, say, tool_version,
    until_interrupted,
};
use procos_worker::{Telemetry, TopicConfig, Worker, WorkerConfig};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Sequential Python steps on ProcOS (the shape of windmill.dev's benchmark): end-to-end time
/// and per-step overhead on the Docker and namespace backends, and the echo adapter's share.
/// `bench/run.sh steps` passes the locations it installed; flags given after them override them.
#[derive(Debug, Parser)]
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// Measured rounds; each runs every configuration's light and heavy instance once.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The configurations, in the order each round runs them.
    #[arg(long, value_delimiter = ',', default_values = ["echo", "docker", "namespace"])]
    configs: Vec<Config>,
    /// Steps of the light instance.
    #[arg(long, default_value_t = 40)]
    light_steps: usize,
    /// The Fibonacci number a light step computes.
    #[arg(long, default_value_t = 10)]
    light_n: u32,
    /// Steps of the heavy instance.
    #[arg(long, default_value_t = 10)]
    heavy_steps: usize,
    /// The Fibonacci number a heavy step computes.
    #[arg(long, default_value_t = 33)]
    heavy_n: u32,
    /// The Python sandbox image (both backends run it).
    #[arg(long, default_value = "procos/python-sandbox:latest")]
    image: String,
    /// Instances of the light echo process that warm the engine up before anything is counted
    /// (4 at a time).
    #[arg(long, default_value_t = 50)]
    engine_warmup: usize,
    /// The worker's long poll.
    #[arg(long, default_value = "30s")]
    long_poll: humantime::Duration,
    /// The host's Python interpreters for the baseline (each that exists, once).
    #[arg(long, value_delimiter = ',', default_values = ["python3", "/usr/bin/python3"])]
    host_python: Vec<String>,
    /// Where steps.md, steps.json (and steps.png, with the chart options) go; nothing is
    /// written without it.
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// The Python that draws the chart (matplotlib).
    #[arg(long)]
    chart_python: Option<PathBuf>,
    /// The chart script (`bench/chart/steps.py`).
    #[arg(long)]
    chart_script: Option<PathBuf>,
}

/// What serves the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Config {
    /// The `echo` adapter: nothing runs, so what is left is the engine's and the worker's share.
    Echo,
    /// The `python` adapter on the Docker backend, its default warm pool (2 containers).
    Docker,
    /// The `python` adapter on the namespace backend (bubblewrap).
    Namespace,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Echo => "echo",
            Config::Docker => "docker",
            Config::Namespace => "namespace",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Config::Echo => "echo adapter (engine + worker only)",
            Config::Docker => "python, Docker backend (warm pool)",
            Config::Namespace => "python, namespace backend (bubblewrap)",
        }
    }

    fn runs_python(self) -> bool {
        self != Config::Echo
    }

    /// The topic's configuration: the adapter's defaults, one attempt (a failing step becomes
    /// an incident at once instead of waiting for retries), and no variables fetched (the steps
    /// read none).
    fn topic(self, image: &str) -> TopicConfig {
        let mut topic = TopicConfig::new(if self.runs_python() { "python" } else { "echo" });
        topic.settings = match self {
            Config::Echo => Map::new(),
            Config::Docker => object(json!({"image": image})),
            Config::Namespace => {
                object(json!({"image": image, "sandbox": {"backend": "namespace"}}))
            }
        };
        topic.retries = 1;
        topic.variables = Some(Vec::new());
        topic
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Shape {
    Light,
    Heavy,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Light => "light",
            Shape::Heavy => "heavy",
        }
    }
}

/// A deployed process: one configuration's topic, one shape.
#[derive(Debug, Clone)]
struct Process {
    config: Config,
    shape: Shape,
    key: String,
    steps: usize,
}

/// One step as history and its script saw it.
#[derive(Debug, Clone, Serialize)]
struct Step {
    activity_id: String,
    /// Activity instance start → end (engine clock).
    duration_ms: i64,
    /// The previous step's end → this one's start (engine clock); `None` for the first step.
    gap_before_ms: Option<i64>,
    /// Activity start → the script's first line (Python steps).
    to_script_ms: Option<f64>,
    /// The script's first line → its last (Python steps).
    script_ms: Option<f64>,
    /// The script's last line → activity end (Python steps).
    back_ms: Option<f64>,
}

impl Step {
    /// What the step cost beyond its script: its whole duration for echo.
    fn overhead_ms(&self) -> f64 {
        self.duration_ms as f64 - self.script_ms.unwrap_or(0.0)
    }
}

/// One measured (or warm-up) instance.
#[derive(Debug, Clone, Serialize)]
struct InstanceRun {
    round: usize,
    config: Config,
    shape: Shape,
    instance_id: String,
    /// Historic process instance start → end (engine clock).
    end_to_end_ms: i64,
    /// Start request sent → end seen in history (this process's clock; history is polled every
    /// 100 ms, so up to that much late).
    seen_after_ms: u64,
    /// Instance start → first step's start.
    lead_in_ms: i64,
    /// Last step's end → instance end.
    lead_out_ms: i64,
    /// The machine's 1-minute load average when the instance had ended.
    load_1min: f64,
    steps: Vec<Step>,
}

/// The host's bare Python computing the same numbers in one process.
#[derive(Debug, Clone, Serialize)]
struct HostRun {
    round: usize,
    python: String,
    version: String,
    /// The whole process, interpreter start included.
    process_ms: f64,
    light_total_ms: f64,
    heavy_total_ms: f64,
    heavy_each_ms: Vec<f64>,
}

/// One configuration and shape over the measured rounds.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    config: Config,
    label: &'static str,
    shape: Shape,
    steps: usize,
    rounds: usize,
    end_to_end_ms: Vec<i64>,
    end_to_end_median_ms: i64,
    end_to_end_min_ms: i64,
    end_to_end_max_ms: i64,
    step_p50_ms: f64,
    step_p90_ms: f64,
    overhead_p50_ms: f64,
    overhead_p90_ms: f64,
    to_script_p50_ms: Option<f64>,
    script_p50_ms: Option<f64>,
    back_p50_ms: Option<f64>,
    gap_p50_ms: f64,
    gap_max_ms: f64,
    lead_in_p50_ms: f64,
    lead_out_p50_ms: f64,
}

/// The host baseline over the rounds, per interpreter.
#[derive(Debug, Clone, Serialize)]
struct HostSummary {
    python: String,
    version: String,
    heavy_total_median_ms: f64,
    heavy_total_min_ms: f64,
    heavy_total_max_ms: f64,
    process_median_ms: f64,
    light_total_median_ms: f64,
}

/// A figure another project published, for comparison (not measured here).
#[derive(Debug, Clone, Serialize)]
struct Published {
    system: &'static str,
    shape: Shape,
    end_to_end_s: f64,
}

const PUBLISHED_SOURCE: &str = "https://www.windmill.dev/docs/misc/benchmarks/competitors";
const PUBLISHED_HEAVY_SOURCE: &str =
    "https://www.windmill.dev/docs/misc/benchmarks/competitors/results/python";
const PUBLISHED_MACHINE: &str = "AWS m4.large (2 vCPUs), each system's recommended docker-compose";

fn published() -> Vec<Published> {
    let light = [
        ("Hatchet", 1.22),
        ("Windmill, dedicated workers", 2.09),
        ("Temporal", 2.97),
        ("Windmill", 4.38),
        ("Prefect", 4.87),
        ("Kestra", 6.04),
    ];
    let heavy = [
        ("Temporal", 7.247),
        ("Windmill, dedicated workers", 7.701),
        ("Hatchet", 7.793),
        ("Windmill", 8.347),
        ("Prefect", 15.489),
        ("Kestra", 15.786),
    ];
    light
        .into_iter()
        .map(|(system, s)| Published {
            system,
            shape: Shape::Light,
            end_to_end_s: s,
        })
        .chain(heavy.into_iter().map(|(system, s)| Published {
            system,
            shape: Shape::Heavy,
            end_to_end_s: s,
        }))
        .collect()
}

#[derive(Debug, Serialize)]
struct Settings {
    rounds: usize,
    light_steps: usize,
    light_n: u32,
    heavy_steps: usize,
    heavy_n: u32,
    image: String,
    engine_warmup: usize,
    max_tasks: usize,
    long_poll_ms: u64,
    configs: Vec<Config>,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: Machine,
    versions: BTreeMap<String, String>,
    settings: Settings,
    summaries: Vec<Summary>,
    host: Vec<HostSummary>,
    published: Vec<Published>,
    published_source: &'static str,
    published_heavy_source: &'static str,
    published_machine: &'static str,
    /// Every measured instance, in the order they ran.
    runs: Vec<InstanceRun>,
    host_runs: Vec<HostRun>,
    /// The uncounted warm-up instances.
    warmup: Vec<InstanceRun>,
    /// Instances that failed and were started again (round 0: a warm-up).
    failures: Vec<FailedInstance>,
    duration_s: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Booted here, in the main future, so that the engine lives as long as the benchmark.
    let engine = until_interrupted(BenchEngine::start(&args.engine)).await?;
    let outcome = until_interrupted(measure(&args, &engine)).await;
    engine.stop().await;
    outcome
}

async fn measure(args: &Args, engine: &BenchEngine) -> anyhow::Result<()> {
    let started = Instant::now();
    let date = report_date();
    let mut machine = Machine::probe();
    let client = engine.client();
    let mut configs = args.configs.clone();
    configs.dedup();
    if configs.is_empty() {
        bail!("no configuration to run");
    }
    say(&format!(
        "steps: {} rounds of {} on {}",
        args.rounds,
        configs
            .iter()
            .map(|c| c.name())
            .collect::<Vec<_>>()
            .join(", "),
        engine.describe()
    ));

    // Every configuration's processes, and the echo one for the engine's warm-up.
    let suffix = chrono::Utc::now().format("%Y%m%d%H%M%S%3f").to_string();
    let mut all = configs.clone();
    if !all.contains(&Config::Echo) {
        all.push(Config::Echo);
    }
    let mut processes = BTreeMap::new();
    let mut topics = BTreeMap::new();
    for &config in &all {
        let topic = format!("steps-{}-{suffix}", config.name());
        topics.insert(topic.clone(), config.topic(&args.image));
        for (shape, steps, n) in [
            (Shape::Light, args.light_steps, args.light_n),
            (Shape::Heavy, args.heavy_steps, args.heavy_n),
        ] {
            let key = format!("steps-{}-{}-{suffix}", config.name(), shape.name());
            deploy(client, &key, &topic, config, steps, n).await?;
            processes.insert(
                (config.name(), shape.name()),
                Process {
                    config,
                    shape,
                    key,
                    steps,
                },
            );
        }
    }

    // One worker, one long poll for every topic: a fetch always waits while a step runs (16
    // slots), and the engine hands it the next step's task as soon as it creates it.
    let worker_config = WorkerConfig {
        long_poll: *args.long_poll,
        listen: "off".into(),
        ..WorkerConfig::default()
    };
    let max_tasks = worker_config.max_tasks;
    let worker = Worker::new(client.clone(), worker_config, &topics, Telemetry::new())?;
    let stop = CancellationToken::new();
    let mut running = JoinSet::new();
    running.spawn(worker.run(stop.child_token()));

    let measured = run_all(args, client, &configs, &processes).await;

    say("stopping the worker");
    stop.cancel();
    while running.join_next().await.is_some() {}
    let Measured {
        warmup,
        runs,
        host_runs,
        failures,
    } = measured?;

    machine.load_after = load_average();
    let mut versions = versions(args, client).await;
    for run in &host_runs {
        versions
            .entry(format!("host python ({})", run.python))
            .or_insert_with(|| run.version.clone());
    }
    let summaries = configs
        .iter()
        .flat_map(|&c| [(c, Shape::Light), (c, Shape::Heavy)])
        .filter_map(|(c, s)| summarize(c, s, &runs))
        .collect();
    let report = Report {
        date,
        machine,
        versions,
        settings: Settings {
            rounds: args.rounds,
            light_steps: args.light_steps,
            light_n: args.light_n,
            heavy_steps: args.heavy_steps,
            heavy_n: args.heavy_n,
            image: args.image.clone(),
            engine_warmup: args.engine_warmup,
            max_tasks,
            long_poll_ms: u64::try_from(args.long_poll.as_millis()).unwrap_or(u64::MAX),
            configs,
        },
        summaries,
        host: summarize_host(&host_runs),
        published: published(),
        published_source: PUBLISHED_SOURCE,
        published_heavy_source: PUBLISHED_HEAVY_SOURCE,
        published_machine: PUBLISHED_MACHINE,
        runs,
        host_runs,
        warmup,
        failures,
        duration_s: started.elapsed().as_secs_f64(),
    };
    let markdown = report.markdown();
    println!("{markdown}");
    if let Some(dir) = &args.results_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("steps.md"), &markdown)
            .with_context(|| format!("writing {}", dir.join("steps.md").display()))?;
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(dir.join("steps.json"), json + "\n")
            .with_context(|| format!("writing {}", dir.join("steps.json").display()))?;
        if let (Some(python), Some(script)) = (&args.chart_python, &args.chart_script) {
            let status = tokio::process::Command::new(python)
                .arg(script)
                .arg(dir.join("steps.json"))
                .arg(dir.join("steps.png"))
                .status()
                .await
                .context("running the chart script")?;
            if !status.success() {
                bail!("the chart script failed ({status}); the tables are in steps.md");
            }
        }
        say(&format!("results in {}", dir.display()));
    }
    Ok(())
}

/// What the rounds measured.
struct Measured {
    warmup: Vec<InstanceRun>,
    runs: Vec<InstanceRun>,
    host_runs: Vec<HostRun>,
    failures: Vec<FailedInstance>,
}

/// The warm-ups and the measured rounds, while the worker runs.
async fn run_all(
    args: &Args,
    client: &EngineClient,
    configs: &[Config],
    processes: &BTreeMap<(&str, &str), Process>,
) -> anyhow::Result<Measured> {
    let process = |config: Config, shape: Shape| {
        processes
            .get(&(config.name(), shape.name()))
            .context("a process that was not deployed")
    };

    if args.engine_warmup > 0 {
        say(&format!(
            "warming the engine up: {} instances of {} echo steps, 4 at a time",
            args.engine_warmup, args.light_steps
        ));
        let key = process(Config::Echo, Shape::Light)?.key.clone();
        let mut starters = JoinSet::new();
        for _ in 0..args.engine_warmup {
            if starters.len() >= 4
                && let Some(done) = starters.join_next().await
            {
                done??;
            }
            let client = client.clone();
            let key = key.clone();
            starters.spawn(async move {
                let id = client
                    .start_process_instance(&key, &StartProcessInstance::default())
                    .await?
                    .id;
                wait_ended(&client, &id).await.map(drop)
            });
        }
        while let Some(done) = starters.join_next().await {
            done??;
        }
    }

    let mut failures = Vec::new();
    let mut warmup = Vec::new();
    for &config in configs {
        for shape in [Shape::Light, Shape::Heavy] {
            say(&format!(
                "warm-up (not counted): {} {}",
                config.name(),
                shape.name()
            ));
            warmup.push(attempt(client, process(config, shape)?, 0, &mut failures).await?);
        }
    }

    let mut runs = Vec::new();
    let mut host_runs = Vec::new();
    for round in 1..=args.rounds {
        for &config in configs {
            for shape in [Shape::Light, Shape::Heavy] {
                let run = attempt(client, process(config, shape)?, round, &mut failures).await?;
                say(&format!(
                    "round {round}: {} {}: {:.2} s end to end",
                    config.name(),
                    shape.name(),
                    run.end_to_end_ms as f64 / 1000.0
                ));
                runs.push(run);
            }
        }
        for python in host_pythons(&args.host_python) {
            let run = host_baseline(&python, args, round).await?;
            say(&format!(
                "round {round}: host {} ({}): {} × fib({}) in {:.2} s",
                run.python,
                run.version,
                args.heavy_steps,
                args.heavy_n,
                run.heavy_total_ms / 1000.0
            ));
            host_runs.push(run);
        }
    }
    Ok(Measured {
        warmup,
        runs,
        host_runs,
        failures,
    })
}

/// An instance that did not complete: a step failed (an incident) or it did not end.
#[derive(Debug, Clone, Serialize)]
struct FailedInstance {
    round: usize,
    config: Config,
    shape: Shape,
    error: String,
}

/// How often an instance is started before the benchmark gives up on it.
const ATTEMPTS: usize = 3;

/// [`run_instance`], started again (up to [`ATTEMPTS`] in all) when a step fails: the failure
/// is recorded and reported, and the figures are the completed instance's.
async fn attempt(
    client: &EngineClient,
    process: &Process,
    round: usize,
    failures: &mut Vec<FailedInstance>,
) -> anyhow::Result<InstanceRun> {
    let mut tried = 0;
    loop {
        tried += 1;
        match run_instance(client, process, round).await {
            Ok(run) => return Ok(run),
            Err(e) if tried < ATTEMPTS => {
                say(&format!(
                    "{} {} failed, starting it again: {e:#}",
                    process.config.name(),
                    process.shape.name()
                ));
                failures.push(FailedInstance {
                    round,
                    config: process.config,
                    shape: process.shape,
                    error: format!("{e:#}"),
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Starts one instance, waits for its end and reads its history.
async fn run_instance(
    client: &EngineClient,
    process: &Process,
    round: usize,
) -> anyhow::Result<InstanceRun> {
    let sent = Instant::now();
    let id = client
        .start_process_instance(&process.key, &StartProcessInstance::default())
        .await
        .with_context(|| format!("starting {}", process.key))?
        .id;
    let (start, end) = wait_ended(client, &id).await?;
    let seen_after_ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);

    let mut tasks: Vec<HistoricActivityInstance> = client
        .historic_activity_instances(&id)
        .await?
        .into_iter()
        .filter(|a| a.activity_type.as_deref() == Some("serviceTask"))
        .collect();
    // Step ids are zero-padded: their order is the process's.
    tasks.sort_by(|a, b| a.activity_id.cmp(&b.activity_id));
    if tasks.len() != process.steps {
        bail!(
            "instance {id} of {} passed {} steps, not {}",
            process.key,
            tasks.len(),
            process.steps
        );
    }
    let variables = if process.config.runs_python() {
        client.historic_variables(&id).await?
    } else {
        Default::default()
    };
    let mut steps = Vec::with_capacity(tasks.len());
    let mut previous_end: Option<i64> = None;
    let mut first_start = None;
    for task in &tasks {
        let (Some(a_start), Some(a_end)) = (task.start_time, task.end_time) else {
            bail!(
                "step {} of instance {id} has no start or end",
                task.activity_id
            );
        };
        let (a_start, a_end) = (a_start.timestamp_millis(), a_end.timestamp_millis());
        first_start.get_or_insert(a_start);
        let script = match (
            number(variables.get(&format!("{}_started_ms", task.activity_id))),
            number(variables.get(&format!("{}_ended_ms", task.activity_id))),
        ) {
            (Some(s), Some(e)) => Some((s, e)),
            _ => None,
        };
        if process.config.runs_python() && script.is_none() {
            bail!(
                "step {} of instance {id} left no script times",
                task.activity_id
            );
        }
        steps.push(Step {
            activity_id: task.activity_id.clone(),
            duration_ms: a_end - a_start,
            gap_before_ms: previous_end.map(|e| a_start - e),
            to_script_ms: script.map(|(s, _)| s - a_start as f64),
            script_ms: script.map(|(s, e)| e - s),
            back_ms: script.map(|(_, e)| a_end as f64 - e),
        });
        previous_end = Some(a_end);
    }
    let (start, end) = (start.timestamp_millis(), end.timestamp_millis());
    Ok(InstanceRun {
        round,
        config: process.config,
        shape: process.shape,
        instance_id: id,
        end_to_end_ms: end - start,
        seen_after_ms,
        lead_in_ms: first_start.map_or(0, |s| s - start),
        lead_out_ms: previous_end.map_or(0, |e| end - e),
        load_1min: load_1min(),
        steps,
    })
}

type EngineTime = chrono::DateTime<chrono::FixedOffset>;

/// Polls history (every 100 ms) until the instance has ended; its start and end times. An
/// incident (a step failed) ends the wait with its message.
async fn wait_ended(client: &EngineClient, id: &str) -> anyhow::Result<(EngineTime, EngineTime)> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut polls = 0u32;
    loop {
        let history = client.historic_process_instance(id).await?;
        if let (Some(start), Some(end)) = (history.start_time, history.end_time) {
            if history.state != "COMPLETED" {
                bail!("instance {id} ended {}", history.state);
            }
            return Ok((start, end));
        }
        polls += 1;
        if polls % 20 == 0
            && let Some(incident) = client.incidents(Some(id)).await?.into_iter().next()
        {
            bail!(
                "instance {id}: a step failed: {}",
                incident.incident_message.unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("instance {id} has not ended after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn number(variable: Option<&Variable>) -> Option<f64> {
    match variable? {
        Variable::Double(v) => Some(*v),
        Variable::Integer(v) => Some(f64::from(*v)),
        Variable::Long(v) => Some(*v as f64),
        _ => None,
    }
}

/// The step's script: the Fibonacci number, and when the script began and ended (epoch ms, the
/// host's clock, which the sandbox shares).
fn script(step: &str, n: u32) -> String {
    format!(
        "import time\n\
         started = time.time()\n\
         def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n\
         outputs['fib'] = fib({n})\n\
         outputs['{step}_started_ms'] = started * 1000\n\
         outputs['{step}_ended_ms'] = time.time() * 1000\n"
    )
}

/// start → step01 → … → stepNN → end, each step an external task of `topic`; a Python step
/// carries its script as the extension property `procos.script`.
fn model(key: &str, topic: &str, config: Config, steps: usize, n: u32) -> String {
    let mut xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs-{key}" targetNamespace="https://procos.io/bench">
  <bpmn:process id="{key}" isExecutable="true">
    <bpmn:startEvent id="start"/>
"#
    );
    let id = |i: usize| format!("step{i:02}");
    for i in 1..=steps {
        let step = id(i);
        let _ = write!(
            xml,
            r#"    <bpmn:serviceTask id="{step}" camunda:type="external" camunda:topic="{topic}">"#
        );
        if config.runs_python() {
            let _ = write!(
                xml,
                r#"<bpmn:extensionElements><camunda:properties><camunda:property name="procos.script" value="{}"/></camunda:properties></bpmn:extensionElements>"#,
                xml_attribute(&script(&step, n))
            );
        }
        xml.push_str("</bpmn:serviceTask>\n");
        let from = if i == 1 {
            "start".to_owned()
        } else {
            id(i - 1)
        };
        let _ = writeln!(
            xml,
            r#"    <bpmn:sequenceFlow id="f{i}" sourceRef="{from}" targetRef="{step}"/>"#
        );
    }
    let _ = write!(
        xml,
        r#"    <bpmn:endEvent id="end"/>
    <bpmn:sequenceFlow id="f-end" sourceRef="{}" targetRef="end"/>
  </bpmn:process>
</bpmn:definitions>
"#,
        id(steps)
    );
    xml
}

/// `text` as an XML attribute value: newlines kept (as character references, since a parser
/// turns a literal newline in an attribute into a space).
fn xml_attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

async fn deploy(
    client: &EngineClient,
    key: &str,
    topic: &str,
    config: Config,
    steps: usize,
    n: u32,
) -> anyhow::Result<()> {
    client
        .deploy(&Deployment {
            name: key.to_owned(),
            source: Some("procos-bench".into()),
            resources: vec![(
                format!("{key}.bpmn"),
                model(key, topic, config, steps, n).into_bytes(),
            )],
        })
        .await
        .with_context(|| format!("deploying {key}"))?;
    Ok(())
}

/// The same Fibonacci numbers in one bare Python process on the host: the light steps' and the
/// heavy steps', each timed.
const HOST_SCRIPT: &str = r#"
import json, sys, time
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
def timed(n, times):
    took = []
    for _ in range(times):
        started = time.perf_counter()
        fib(n)
        took.append((time.perf_counter() - started) * 1000)
    return took
light_n, light_steps, heavy_n, heavy_steps = map(int, sys.argv[1:5])
print(json.dumps({"version": sys.version.split()[0], "light_ms": timed(light_n, light_steps), "heavy_ms": timed(heavy_n, heavy_steps)}))
"#;

/// The interpreters of `--host-python` that exist, each once (by their resolved path).
fn host_pythons(names: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for name in names {
        let Some(path) = resolve(name) else {
            continue;
        };
        let real = std::fs::canonicalize(&path).unwrap_or(path);
        if !seen.contains(&real) {
            seen.push(real);
            found.push(name.clone());
        }
    }
    found
}

fn resolve(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let path = PathBuf::from(name);
        return path.is_file().then_some(path);
    }
    // pyenv's shims are scripts that pick the interpreter: ask the interpreter itself.
    let out = std::process::Command::new(name)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

async fn host_baseline(python: &str, args: &Args, round: usize) -> anyhow::Result<HostRun> {
    let started = Instant::now();
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(HOST_SCRIPT)
        .arg(args.light_n.to_string())
        .arg(args.light_steps.to_string())
        .arg(args.heavy_n.to_string())
        .arg(args.heavy_steps.to_string())
        .output()
        .await
        .with_context(|| format!("running {python}"))?;
    let process_ms = started.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "{python} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let answer: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading what {python} printed"))?;
    let list = |name: &str| -> Vec<f64> {
        answer[name]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let heavy = list("heavy_ms");
    Ok(HostRun {
        round,
        python: python.to_owned(),
        version: answer["version"].as_str().unwrap_or("?").to_owned(),
        process_ms,
        light_total_ms: list("light_ms").iter().sum(),
        heavy_total_ms: heavy.iter().sum(),
        heavy_each_ms: heavy,
    })
}

fn summarize(config: Config, shape: Shape, runs: &[InstanceRun]) -> Option<Summary> {
    let mine: Vec<&InstanceRun> = runs
        .iter()
        .filter(|r| r.config == config && r.shape == shape)
        .collect();
    let first = mine.first()?;
    let mut e2e: Vec<i64> = mine.iter().map(|r| r.end_to_end_ms).collect();
    let in_order = e2e.clone();
    e2e.sort_unstable();
    let steps: Vec<&Step> = mine.iter().flat_map(|r| &r.steps).collect();
    let of = |f: &dyn Fn(&Step) -> Option<f64>| -> Vec<f64> {
        sorted(steps.iter().filter_map(|s| f(s)).collect())
    };
    let durations = of(&|s| Some(s.duration_ms as f64));
    let overheads = of(&|s| Some(s.overhead_ms()));
    let gaps = of(&|s| s.gap_before_ms.map(|g| g as f64));
    let to_script = of(&|s| s.to_script_ms);
    let script = of(&|s| s.script_ms);
    let back = of(&|s| s.back_ms);
    let lead_in = sorted(mine.iter().map(|r| r.lead_in_ms as f64).collect());
    let lead_out = sorted(mine.iter().map(|r| r.lead_out_ms as f64).collect());
    Some(Summary {
        config,
        label: config.label(),
        shape,
        steps: first.steps.len(),
        rounds: mine.len(),
        end_to_end_ms: in_order,
        end_to_end_median_ms: pct_i(&e2e, 0.5),
        end_to_end_min_ms: e2e.first().copied().unwrap_or_default(),
        end_to_end_max_ms: e2e.last().copied().unwrap_or_default(),
        step_p50_ms: pct(&durations, 0.5),
        step_p90_ms: pct(&durations, 0.9),
        overhead_p50_ms: pct(&overheads, 0.5),
        overhead_p90_ms: pct(&overheads, 0.9),
        to_script_p50_ms: (!to_script.is_empty()).then(|| pct(&to_script, 0.5)),
        script_p50_ms: (!script.is_empty()).then(|| pct(&script, 0.5)),
        back_p50_ms: (!back.is_empty()).then(|| pct(&back, 0.5)),
        gap_p50_ms: pct(&gaps, 0.5),
        gap_max_ms: gaps.last().copied().unwrap_or_default(),
        lead_in_p50_ms: pct(&lead_in, 0.5),
        lead_out_p50_ms: pct(&lead_out, 0.5),
    })
}

fn summarize_host(runs: &[HostRun]) -> Vec<HostSummary> {
    let mut pythons: Vec<&str> = Vec::new();
    for run in runs {
        if !pythons.contains(&run.python.as_str()) {
            pythons.push(&run.python);
        }
    }
    pythons
        .into_iter()
        .map(|python| {
            let mine: Vec<&HostRun> = runs.iter().filter(|r| r.python == python).collect();
            let heavy = sorted(mine.iter().map(|r| r.heavy_total_ms).collect());
            let process = sorted(mine.iter().map(|r| r.process_ms).collect());
            let light = sorted(mine.iter().map(|r| r.light_total_ms).collect());
            HostSummary {
                python: python.to_owned(),
                version: mine.first().map(|r| r.version.clone()).unwrap_or_default(),
                heavy_total_median_ms: pct(&heavy, 0.5),
                heavy_total_min_ms: heavy.first().copied().unwrap_or_default(),
                heavy_total_max_ms: heavy.last().copied().unwrap_or_default(),
                process_median_ms: pct(&process, 0.5),
                light_total_median_ms: pct(&light, 0.5),
            }
        })
        .collect()
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Nearest-rank percentile of sorted values (0 when there are none).
fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn pct_i(sorted: &[i64], p: f64) -> i64 {
    let i = ((sorted.len().saturating_sub(1)) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

impl Report {
    fn markdown(&self) -> String {
        let s = &self.settings;
        let m = &self.machine;
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# ProcOS on sequential steps (the shape of windmill.dev's benchmark)\n"
        );
        let _ = writeln!(md, "{}\n", m.describe(&self.date, self.duration_s));
        let loads = sorted(self.runs.iter().map(|r| r.load_1min).collect());
        if !loads.is_empty() {
            let _ = writeln!(
                md,
                "The machine's 1-minute load average as each measured instance ended: min {:.1}, median {:.1}, max {:.1} (other work shared the machine; a load above the 2 cores slows every figure down).\n",
                loads.first().copied().unwrap_or_default(),
                pct(&loads, 0.5),
                loads.last().copied().unwrap_or_default()
            );
        }
        md.push_str("Versions:\n\n");
        for (what, version) in &self.versions {
            let _ = writeln!(md, "- {what}: {version}");
        }
        let _ = writeln!(
            md,
            "\nOne process instance at a time: {} sequential steps computing fib({}) each (light), or {} computing fib({}) (heavy). One in-process worker (`max_tasks` {}, long poll {} s) serves the three topics; the engine was warmed up with {} instances of the light echo process and one uncounted instance of each configuration and shape. {} rounds, each running every configuration in the order listed. End to end: the historic process instance's start → end (engine clock). Step: the service task's historic activity instance, start → end, over all rounds' steps. Overhead: a step's duration less its script's own run time (for echo, the whole step).\n",
            s.light_steps,
            s.light_n,
            s.heavy_steps,
            s.heavy_n,
            s.max_tasks,
            s.long_poll_ms / 1000,
            s.engine_warmup,
            s.rounds
        );
        for (shape, title) in [
            (
                Shape::Light,
                format!("Light: {} steps of fib({})", s.light_steps, s.light_n),
            ),
            (
                Shape::Heavy,
                format!("Heavy: {} steps of fib({})", s.heavy_steps, s.heavy_n),
            ),
        ] {
            let _ = writeln!(md, "## {title}\n");
            md.push_str("| configuration | end to end, median | min – max | step p50 | step p90 | overhead p50 | overhead p90 |\n");
            md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            for sum in self.summaries.iter().filter(|x| x.shape == shape) {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} – {} | {} | {} | {} | {} |",
                    sum.label,
                    secs(sum.end_to_end_median_ms as f64),
                    secs(sum.end_to_end_min_ms as f64),
                    secs(sum.end_to_end_max_ms as f64),
                    ms(sum.step_p50_ms),
                    ms(sum.step_p90_ms),
                    ms(sum.overhead_p50_ms),
                    ms(sum.overhead_p90_ms)
                );
            }
            for host in &self.host {
                let (median, min, max) = match shape {
                    Shape::Light => {
                        let v = host.light_total_median_ms;
                        (v, v, v)
                    }
                    Shape::Heavy => (
                        host.heavy_total_median_ms,
                        host.heavy_total_min_ms,
                        host.heavy_total_max_ms,
                    ),
                };
                if shape == Shape::Light {
                    let _ = writeln!(
                        md,
                        "| host `{}` (Python {}), bare, one process | {} (median) | — | — | — | — | — |",
                        host.python,
                        host.version,
                        ms(median)
                    );
                } else {
                    let _ = writeln!(
                        md,
                        "| host `{}` (Python {}), bare, one process | {} | {} – {} | {} per fib({}) | — | — | — |",
                        host.python,
                        host.version,
                        secs(median),
                        secs(min),
                        secs(max),
                        ms(median / s.heavy_steps.max(1) as f64),
                        s.heavy_n
                    );
                }
            }
            md.push('\n');
            let per_round: Vec<String> = self
                .summaries
                .iter()
                .filter(|x| x.shape == shape)
                .map(|x| {
                    format!(
                        "{} {}",
                        x.config.name(),
                        x.end_to_end_ms
                            .iter()
                            .map(|v| secs(*v as f64))
                            .collect::<Vec<_>>()
                            .join(" / ")
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "End to end in each round, in order: {}.\n",
                per_round.join("; ")
            );
        }

        md.push_str("## Where a step's time goes (p50 over all steps)\n\n");
        md.push_str("| configuration | shape | activity start → script start | script | script end → activity end | previous step's end → next step's start | instance start → first step | last step → instance end |\n");
        md.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for sum in &self.summaries {
            let opt = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), ms);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} (max {}) | {} | {} |",
                sum.label,
                sum.shape.name(),
                opt(sum.to_script_p50_ms),
                opt(sum.script_p50_ms),
                opt(sum.back_p50_ms),
                ms(sum.gap_p50_ms),
                ms(sum.gap_max_ms),
                ms(sum.lead_in_p50_ms),
                ms(sum.lead_out_p50_ms)
            );
        }
        md.push_str("\nThe script's times are its own `time.time()` at its first and last line, on the host's clock (both sandboxes share it); engine timestamps are whole milliseconds.\n\n");

        if !self.failures.is_empty() {
            md.push_str("## Instances that failed and were started again\n\n");
            for f in &self.failures {
                let _ = writeln!(
                    md,
                    "- round {} ({}), {} {}: {}",
                    f.round,
                    if f.round == 0 { "warm-up" } else { "measured" },
                    f.config.name(),
                    f.shape.name(),
                    f.error
                );
            }
            md.push('\n');
        }
        md.push_str("## Published figures of other systems (not measured here)\n\n");
        let _ = writeln!(
            md,
            "From windmill.dev's benchmark ({}; the long-running figures from {}), run on {}: other hardware and another setup, for orientation only.\n",
            self.published_source, self.published_heavy_source, self.published_machine
        );
        md.push_str("| system | light: 40 steps of fib(10) | heavy: 10 steps of fib(33) |\n| --- | ---: | ---: |\n");
        let mut systems: Vec<&str> = Vec::new();
        for p in &self.published {
            if !systems.contains(&p.system) {
                systems.push(p.system);
            }
        }
        for system in systems {
            let of = |shape: Shape| {
                self.published
                    .iter()
                    .find(|p| p.system == system && p.shape == shape)
                    .map_or_else(|| "—".to_owned(), |p| format!("{:.2} s", p.end_to_end_s))
            };
            let _ = writeln!(
                md,
                "| {system} | {} | {} |",
                of(Shape::Light),
                of(Shape::Heavy)
            );
        }
        md.push_str("\nWindmill's own per-step overhead, as it publishes it: about 12 ms with dedicated workers, about 50 ms with normal workers.\n");
        md
    }
}

fn secs(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

fn ms(value: f64) -> String {
    if value.abs() < 1.0 {
        format!("{value:.2} ms")
    } else if value.abs() < 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.0} ms")
    }
}

async fn versions(args: &Args, client: &EngineClient) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    versions.insert("procos".into(), env!("CARGO_PKG_VERSION").to_owned());
    if let Ok(v) = client.version().await {
        versions.insert("engine".into(), format!("Camunda {v}"));
    }
    let probes: [(&str, &str, &[&str]); 3] = [
        (
            "sandbox image python",
            "docker",
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &args.image,
                "python3",
                "--version",
            ],
        ),
        (
            "docker engine",
            "docker",
            &["version", "--format", "{{.Server.Version}}"],
        ),
        ("bubblewrap", "bwrap", &["--version"]),
    ];
    for (what, program, probe_args) in probes {
        if let Some(v) = tool_version(program.as_ref(), probe_args).await {
            versions.insert(what.into(), v);
        }
    }
    versions.insert(
        "sandbox image".into(),
        format!("{} (both backends)", args.image),
    );
    versions
}

fn load_1min() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// The settings table of a JSON object.
fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_survives_the_attribute() {
        let xml = model("k", "t", Config::Docker, 2, 10);
        assert!(xml.contains("&#10;    return n if n &lt; 2"));
        assert!(xml.contains(r#"sourceRef="step01" targetRef="step02""#));
        assert!(xml.contains(r#"sourceRef="step02" targetRef="end""#));
        assert!(!model("k", "t", Config::Echo, 2, 10).contains("procos.script"));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values = sorted(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(pct(&values, 0.5), 3.0);
        assert_eq!(pct(&values, 0.9), 5.0);
        assert_eq!(pct(&[], 0.5), 0.0);
    }
}
