//! `sandbox-latency`: what a sandboxed step costs, measured on the local Docker engine.
//!
//! - `docker run` of the Python sandbox image with the same guards, from the CLI (the baseline);
//! - the `docker` adapter's round trip for the same image and command (create, upload inputs,
//!   start, wait, logs, read outputs, remove);
//! - a `python` adapter step, cold (`warm = 0`: a container started per task), warm
//!   (`warm = 2`) and on the namespace backend (bubblewrap), each with a trivial script, one task at a time with a pause between tasks
//!   (a step that arrives now and then) and back to back.
//!
//! A benchmark, not a test: it prints figures and asserts nothing.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use procos_adapters::{
    AdapterConfig, AdapterTask, BuildContext, ImageAllowlist, Outcome, TaskSettings,
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Runs per measurement.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The sandbox image.
    #[arg(long, default_value = "procos/python-sandbox:latest")]
    image: String,
    /// Pause between two steps in the "now and then" runs.
    #[arg(long, default_value = "1s")]
    pause: humantime::Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "# ProcOS sandbox latency: {} runs each, image {}",
        args.runs, args.image
    );

    let cli = measure(args.runs, Duration::ZERO, || async {
        let status = tokio::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--read-only",
                "--tmpfs",
                "/tmp",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "--user",
                "65534:65534",
                "--pids-limit",
                "128",
                "--memory",
                "256m",
                &args.image,
                "python3",
                "-c",
                "print('{\"x\": 1}')",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .await?;
        if !status.success() {
            bail!("docker run failed: {status}");
        }
        Ok(())
    })
    .await?;
    report("docker run (CLI), same guards", &cli);

    let context = BuildContext {
        allowed_images: ImageAllowlist::new([args.image.clone()]),
        ..BuildContext::default()
    };
    let settings = json!({
        "image": args.image,
        "command": ["python3", "-c", "print('{\"x\": 1}')"],
    });
    let docker = AdapterConfig::from_parts("docker", object(settings))?.build("bench", &context)?;
    let adapter_runs = measure(args.runs, Duration::ZERO, || {
        run(docker.as_ref(), Map::new(), TaskSettings::default())
    })
    .await?;
    report("docker adapter round trip", &adapter_runs);

    // The script is the step's setting (`procos.script`), as a model gives it.
    let script = TaskSettings::from_pairs([("script", json!("outputs['x'] = inputs['n'] + 1"))]);
    let inputs = json!({"n": 1}).as_object().cloned().unwrap_or_default();
    for (label, backend, warm, pause) in [
        ("python step, cold, now and then", "docker", 0, *args.pause),
        ("python step, warm, now and then", "docker", 2, *args.pause),
        (
            "python step, namespace, now and then",
            "namespace",
            0,
            *args.pause,
        ),
        (
            "python step, cold, back to back",
            "docker",
            0,
            Duration::ZERO,
        ),
        (
            "python step, warm, back to back",
            "docker",
            2,
            Duration::ZERO,
        ),
        (
            "python step, namespace, back to back",
            "namespace",
            0,
            Duration::ZERO,
        ),
    ] {
        let settings = json!({"image": args.image, "warm": warm, "sandbox": {"backend": backend}});
        let python =
            AdapterConfig::from_parts("python", object(settings))?.build("bench", &context)?;
        // The first step fills the pool; it is not counted.
        run(python.as_ref(), inputs.clone(), script.clone()).await?;
        tokio::time::sleep(*args.pause).await;
        let runs = measure(args.runs, pause, || {
            run(python.as_ref(), inputs.clone(), script.clone())
        })
        .await?;
        python.close().await;
        report(label, &runs);
    }
    Ok(())
}

async fn run(
    adapter: &dyn procos_adapters::Adapter,
    inputs: Map<String, Value>,
    settings: TaskSettings,
) -> anyhow::Result<()> {
    let task = AdapterTask {
        traceparent: None,
        task_id: format!("bench-{}", std::process::id()),
        topic: "bench".into(),
        inputs,
        settings,
        root_process_instance_id: None,
    };
    match adapter.run(task, CancellationToken::new()).await {
        Outcome::Complete(outputs) if outputs.contains_key("x") => Ok(()),
        other => bail!("unexpected outcome: {other:?}"),
    }
}

async fn measure<F, Fut>(runs: usize, pause: Duration, mut step: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        step().await?;
        took.push(started.elapsed());
        tokio::time::sleep(pause).await;
    }
    took.sort_unstable();
    Ok(took)
}

fn report(label: &str, sorted: &[Duration]) {
    let at = |p: f64| {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(i).map_or(0, |d| d.as_millis())
    };
    println!(
        "{label}: p50 {} ms, p90 {} ms, min {} ms, max {} ms",
        at(0.5),
        at(0.9),
        sorted.first().map_or(0, |d| d.as_millis()),
        sorted.last().map_or(0, |d| d.as_millis())
    );
}

/// The settings table of a JSON object.
fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}
