//! `worker-throughput`: how fast ProcOS workers move external tasks through a real engine, with
//! the `echo` adapter, so that the figures are the worker's and the engine's, not an adapter's.
//!
//! Two runs against the engine at `--engine-url`, or without it a scratch engine this binary
//! boots through the kernel's own code and stops at the end:
//! - **throughput**: a backlog of `--instances` instances, then `--workers` workers drain it;
//!   tasks/s is counted on the engine's clock, first completion to last.
//! - **pickup latency**: idle workers in their long poll; instances started one at a time; for
//!   each task, the time from its creation to its completion, both on the engine's clock (so it
//!   includes the fetch, echo, and the complete call).
//!
//! A benchmark, not a test: it prints figures and asserts nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camunda_client::{EngineClient, ExternalTaskLogQuery, StartProcessInstance};
use clap::Parser;
use procos_bench::{
    BenchEngine, EngineArgs, completion_count, completions, deploy_new, poll_until, run_on_engine,
};
use procos_worker::{Telemetry, TopicConfig, Worker, WorkerConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// ProcOS workers with the `echo` adapter against a real engine: throughput draining a backlog,
/// and pickup latency.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    engine: EngineArgs,
    /// Instances in the throughput run.
    #[arg(long, default_value_t = 2000)]
    instances: usize,
    /// Workers (fetch loops with their own worker id) in this process.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// `max_tasks` of each worker.
    #[arg(long, default_value_t = 32)]
    max_tasks: usize,
    /// Instances in the latency run, started one at a time.
    #[arg(long, default_value_t = 100)]
    latency_samples: usize,
    /// Pause between two latency samples.
    #[arg(long, default_value = "100ms")]
    latency_gap: humantime::Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    run_on_engine(&args.engine, async |engine| measure(&args, engine).await).await
}

async fn measure(args: &Args, engine: &BenchEngine) -> anyhow::Result<()> {
    println!(
        "# ProcOS worker benchmark: echo adapter, {} worker(s) × max_tasks {}, {}",
        args.workers,
        args.max_tasks,
        engine.describe()
    );
    throughput(engine.client(), args).await?;
    latency(engine.client(), args).await?;
    Ok(())
}

async fn throughput(client: &EngineClient, args: &Args) -> anyhow::Result<()> {
    let key = deploy_new(client, "bench-throughput").await?;
    let started = Instant::now();
    start_instances(client, &key, args.instances).await?;
    println!(
        "backlog: {} instances started in {:.1} s",
        args.instances,
        started.elapsed().as_secs_f64()
    );

    let fleet = Fleet::start(client, args, &key)?;
    let drained = Instant::now();
    wait_for_completions(client, &key, args.instances).await?;
    let wall = drained.elapsed();
    fleet.stop().await;

    let log = completions(client, &key).await?;
    let (Some(first), Some(last)) = (log.first(), log.last()) else {
        bail!("no completions in the external-task log");
    };
    let span = (last.timestamp - first.timestamp).num_milliseconds().max(1) as f64 / 1000.0;
    println!(
        "throughput: {} tasks in {:.2} s (engine clock, first to last completion) = {:.0} tasks/s; wall clock from worker start {:.2} s",
        log.len(),
        span,
        log.len() as f64 / span,
        wall.as_secs_f64()
    );
    Ok(())
}

async fn latency(client: &EngineClient, args: &Args) -> anyhow::Result<()> {
    let key = deploy_new(client, "bench-latency").await?;
    let fleet = Fleet::start(client, args, &key)?;
    // Let every worker's first fetch answer and its long poll begin.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..args.latency_samples {
        client
            .start_process_instance(&key, &StartProcessInstance::default())
            .await?;
        tokio::time::sleep(*args.latency_gap).await;
    }
    wait_for_completions(client, &key, args.latency_samples).await?;
    fleet.stop().await;

    let created: HashMap<String, _> = client
        .external_task_log(&ExternalTaskLogQuery {
            process_definition_key: Some(key.clone()),
            creation_log: Some(true),
            ..Default::default()
        })
        .await?
        .into_iter()
        .map(|e| (e.external_task_id, e.timestamp))
        .collect();
    let mut millis: Vec<i64> = completions(client, &key)
        .await?
        .into_iter()
        .filter_map(|done| {
            let created = created.get(&done.external_task_id)?;
            Some((done.timestamp - *created).num_milliseconds())
        })
        .collect();
    millis.sort_unstable();
    let pct = |p: f64| {
        let i = ((millis.len() as f64 - 1.0) * p).round() as usize;
        millis.get(i).copied().unwrap_or_default()
    };
    println!(
        "pickup latency (task created → completed, engine clock, {} samples, {} apart): p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        millis.len(),
        args.latency_gap,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        millis.last().copied().unwrap_or_default()
    );
    Ok(())
}

/// Workers in this process, as `procos worker` runs them.
struct Fleet {
    stop: CancellationToken,
    workers: JoinSet<()>,
}

impl Fleet {
    fn start(client: &EngineClient, args: &Args, topic: &str) -> anyhow::Result<Self> {
        let topics = BTreeMap::from([(topic.to_owned(), TopicConfig::new("echo"))]);
        let stop = CancellationToken::new();
        let mut workers = JoinSet::new();
        // One per process, as `procos worker` has: the workers share it.
        let telemetry = Telemetry::new();
        for _ in 0..args.workers {
            let config = WorkerConfig {
                max_tasks: args.max_tasks,
                listen: "off".into(),
                ..WorkerConfig::default()
            };
            let worker = Worker::new(client.clone(), config, &topics, telemetry.clone())?;
            workers.spawn(worker.run(stop.child_token()));
        }
        Ok(Self { stop, workers })
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
    }
}

/// Starts `count` instances, 16 requests at a time.
async fn start_instances(client: &EngineClient, key: &str, count: usize) -> anyhow::Result<()> {
    let mut starters = JoinSet::new();
    for i in 0..count {
        if starters.len() >= 16
            && let Some(done) = starters.join_next().await
        {
            done??;
        }
        let client = client.clone();
        let key = key.to_owned();
        starters.spawn(async move {
            client
                .start_process_instance(&key, &StartProcessInstance::default())
                .await
                .with_context(|| format!("starting instance {i}"))
                .map(drop)
        });
    }
    while let Some(done) = starters.join_next().await {
        done??;
    }
    Ok(())
}

async fn wait_for_completions(
    client: &EngineClient,
    key: &str,
    expected: usize,
) -> anyhow::Result<()> {
    let failure = format!("fewer than {expected} completions after 10 min");
    poll_until(
        Duration::from_secs(600),
        Duration::from_millis(100),
        failure,
        async || Ok((completion_count(client, key).await? >= expected as u64).then_some(())),
    )
    .await
}
