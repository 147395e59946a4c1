//! The contenders and their worker processes: ProcOS as the real `procos worker` with a TOML
//! file; the Java, JavaScript and Python peers (`bench/peers/`) with the same settings as
//! environment variables; the engine's ceiling with no worker at all. A [`Fleet`] is one
//! contender's processes for one run: started, waited for until ready, sampled (CPU, peak RSS),
//! stopped, and read for its pickup records (task id → when its handler got it).

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use procos_bench::free_port;
use procos_bench::worker::{
    echo_topic, is_ready, readyz_client, readyz_url, signal, worker_command, worker_file,
};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::engine::Engine;
use crate::procfs::{self, Clock};

/// Who serves the benchmark's external tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `procos worker` with the `echo` adapter.
    Procos,
    /// `org.camunda.bpm:camunda-external-task-client`.
    Java,
    /// `camunda-external-task-client-js`.
    Js,
    /// `camunda-external-task-client-python3`.
    Python,
    /// No worker: the task is a no-op expression the engine runs itself.
    Ceiling,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Procos => "ProcOS",
            Kind::Java => "Java client",
            Kind::Js => "JS client",
            Kind::Python => "Python client",
            Kind::Ceiling => "engine ceiling (no-op task)",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Procos => "procos",
            Kind::Java => "java",
            Kind::Js => "js",
            Kind::Python => "python",
            Kind::Ceiling => "ceiling",
        }
    }
}

/// Where each contender's program is.
#[derive(Debug, Clone)]
pub struct Programs {
    pub procos: PathBuf,
    pub java_jar: Option<PathBuf>,
    pub js_worker: Option<PathBuf>,
    pub python: Option<PathBuf>,
    pub python_worker: Option<PathBuf>,
    /// The JS client's `interval` (see `bench/peers/js/worker.mjs`).
    pub js_interval_ms: u64,
    /// ProcOS's log filter; its pickups need `camunda_client=trace`.
    pub procos_log: String,
}

/// The settings every contender gets alike.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The engine's REST API as the client knows it ([`camunda_client::EngineClient::base_url`],
    /// without its trailing `/`: the peers append `/external-task/…` themselves).
    pub engine_url: String,
    pub topic: String,
    pub max_tasks: usize,
    pub lock_duration: Duration,
    pub long_poll: Duration,
    /// The task body: how long the handler waits before completing.
    pub delay: Duration,
}

/// One contender's worker processes in one run.
#[derive(Debug)]
pub struct Fleet {
    kind: Kind,
    members: Vec<Member>,
    /// For ProcOS's own `/readyz`, the worker process's endpoint: not the engine.
    http: reqwest::Client,
}

#[derive(Debug)]
struct Member {
    child: Child,
    pid: u32,
    worker_id: String,
    stdout: PathBuf,
    stderr: PathBuf,
    pickups: PathBuf,
    /// ProcOS's `/readyz`; the peers say `ready <client> <version>` on stdout instead.
    readyz: Option<String>,
    client_version: Option<String>,
}

impl Fleet {
    /// Starts `count` worker processes of `kind` (not the ceiling), files under `dir`. Each is
    /// killed if the fleet is dropped without [`Fleet::stop`].
    pub fn start(
        kind: Kind,
        count: usize,
        programs: &Programs,
        settings: &WorkerSettings,
        dir: &Path,
        run: &str,
    ) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut members = Vec::with_capacity(count);
        for i in 0..count {
            let worker_id = format!("bench-{run}-{i}");
            let stdout = dir.join(format!("{worker_id}.out"));
            let stderr = dir.join(format!("{worker_id}.err"));
            let pickups = dir.join(format!("{worker_id}.pickups"));
            let (mut command, readyz) =
                command(kind, programs, settings, dir, &worker_id, &pickups)?;
            command
                .stdin(Stdio::null())
                .stdout(File::create(&stdout)?)
                .stderr(File::create(&stderr)?)
                .kill_on_drop(true);
            let child = command
                .spawn()
                .with_context(|| format!("starting the {} worker", kind.label()))?;
            let pid = child.id().context("the worker exited at once")?;
            members.push(Member {
                child,
                pid,
                worker_id,
                stdout,
                stderr,
                pickups,
                readyz,
                client_version: None,
            });
        }
        Ok(Self {
            kind,
            members,
            http: readyz_client()?,
        })
    }

    /// Waits until every process says it is ready: ProcOS's `/readyz` answers 200 (its first
    /// fetch reached the engine), a peer printed its `ready` line (its client is subscribed and
    /// polling).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut ready = vec![false; self.members.len()];
        while ready.iter().any(|r| !r) {
            self.check_alive()?;
            for (member, ready) in self.members.iter_mut().zip(ready.iter_mut()) {
                if *ready {
                    continue;
                }
                *ready = match &member.readyz {
                    Some(url) => is_ready(&self.http, url).await,
                    None => {
                        let out = fs::read_to_string(&member.stdout).unwrap_or_default();
                        match out.lines().find_map(|l| l.strip_prefix("ready ")) {
                            Some(client) => {
                                member.client_version = Some(client.trim().to_owned());
                                true
                            }
                            None => false,
                        }
                    }
                };
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} workers were not ready within {timeout:?}",
                    self.kind.label()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Fails, with the end of its log, when a worker process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for m in &mut self.members {
            if let Some(status) = m.child.try_wait()? {
                bail!(
                    "the {} worker {} exited ({status}); the end of its log:\n{}",
                    self.kind.label(),
                    m.worker_id,
                    tail(&m.stderr, 15)
                );
            }
        }
        Ok(())
    }

    /// The client and version the peers reported, e.g. `camunda-external-task-client 7.24.0`.
    pub fn client_version(&self) -> Option<String> {
        self.members.iter().find_map(|m| m.client_version.clone())
    }

    /// CPU seconds the fleet's processes (and their children) have used so far.
    pub fn cpu_seconds(&self, clock: &Clock) -> anyhow::Result<f64> {
        self.members
            .iter()
            .map(|m| clock.tree_cpu_seconds(m.pid))
            .sum()
    }

    /// The largest peak RSS of one of the fleet's processes, in bytes.
    pub fn peak_rss_bytes(&self) -> anyhow::Result<u64> {
        let mut peak = 0;
        for m in &self.members {
            peak = peak.max(procfs::tree_peak_rss_bytes(m.pid)?);
        }
        Ok(peak)
    }

    /// Resident memory now, summed over the fleet's processes: (anonymous, file-backed) bytes.
    pub fn rss_parts_bytes(&self) -> anyhow::Result<(u64, u64)> {
        let mut total = (0, 0);
        for m in &self.members {
            let (anon, file) = procfs::rss_parts_bytes(m.pid)?;
            total = (total.0 + anon, total.1 + file);
        }
        Ok(total)
    }

    /// Stops every process (SIGTERM, then SIGKILL after 20 s) and withdraws its pending long
    /// poll from the engine.
    pub async fn stop(&mut self, engine: &Engine, topic: &str) -> anyhow::Result<()> {
        for m in &self.members {
            let _ = signal(m.pid, "TERM").await;
        }
        for m in &mut self.members {
            match tokio::time::timeout(Duration::from_secs(20), m.child.wait()).await {
                Ok(status) => {
                    status?;
                }
                Err(_) => {
                    m.child.kill().await?;
                }
            }
        }
        for m in &self.members {
            engine.retract_long_poll(&m.worker_id, topic).await;
        }
        Ok(())
    }

    /// After [`Fleet::stop`]: when each task reached a handler, task id → epoch milliseconds.
    pub fn pickups(&self) -> anyhow::Result<HashMap<String, f64>> {
        let mut all = HashMap::new();
        for m in &self.members {
            let found = match self.kind {
                Kind::Procos => procos_pickups(&m.stderr)?,
                _ => peer_pickups(&m.pickups)?,
            };
            for (task, at) in found {
                all.entry(task).or_insert(at);
            }
        }
        Ok(all)
    }
}

/// The command for one worker process, and ProcOS's readiness URL.
fn command(
    kind: Kind,
    programs: &Programs,
    settings: &WorkerSettings,
    dir: &Path,
    worker_id: &str,
    pickups: &Path,
) -> anyhow::Result<(Command, Option<String>)> {
    let needs = |path: &Option<PathBuf>, what: &str| -> anyhow::Result<PathBuf> {
        path.clone()
            .with_context(|| format!("no {what} given for the {} contender", kind.label()))
    };
    let mut command = match kind {
        Kind::Procos => {
            let port = free_port()?;
            let config = dir.join(format!("{worker_id}.toml"));
            fs::write(&config, procos_config(settings, worker_id, port)?)
                .with_context(|| format!("writing {}", config.display()))?;
            // `engine call` is traced when each engine call starts: for a task, the start of its
            // complete call is the worker's timestamp for it (see `procos_pickups`).
            let log = ["--log-format", "json", "--log", &programs.procos_log];
            let command = worker_command(&programs.procos, &config, &log);
            return Ok((command, Some(readyz_url(port))));
        }
        Kind::Java => {
            let mut c = Command::new("java");
            c.arg("-jar").arg(needs(&programs.java_jar, "--java-jar")?);
            c
        }
        Kind::Js => {
            let mut c = Command::new("node");
            c.arg(needs(&programs.js_worker, "--js-worker")?)
                .env("PEER_JS_INTERVAL_MS", programs.js_interval_ms.to_string());
            c
        }
        Kind::Python => {
            let mut c = Command::new(needs(&programs.python, "--python")?);
            c.arg(needs(&programs.python_worker, "--python-worker")?);
            c
        }
        Kind::Ceiling => bail!("the engine ceiling has no worker process"),
    };
    command
        .env("PEER_ENGINE_URL", &settings.engine_url)
        .env("PEER_TOPIC", &settings.topic)
        .env("PEER_WORKER_ID", worker_id)
        .env("PEER_MAX_TASKS", settings.max_tasks.to_string())
        .env(
            "PEER_LOCK_DURATION_MS",
            settings.lock_duration.as_millis().to_string(),
        )
        .env(
            "PEER_LONG_POLL_MS",
            settings.long_poll.as_millis().to_string(),
        )
        .env("PEER_DELAY_MS", settings.delay.as_millis().to_string())
        .env("PEER_PICKUP_FILE", pickups);
    Ok((command, None))
}

/// The worker's `procos.toml`: the engine, `[worker]` and one `echo` topic.
fn procos_config(settings: &WorkerSettings, worker_id: &str, port: u16) -> anyhow::Result<String> {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    let mut topic = echo_topic();
    topic.insert(
        "lock_duration".into(),
        duration(settings.lock_duration).into(),
    );
    if !settings.delay.is_zero() {
        let mut echo = toml::Table::new();
        echo.insert("delay".into(), duration(settings.delay).into());
        topic.insert("settings".into(), echo.into());
    }
    let mut worker = toml::Table::new();
    worker.insert("worker_id".into(), worker_id.into());
    worker.insert(
        "max_tasks".into(),
        i64::try_from(settings.max_tasks)?.into(),
    );
    worker.insert("long_poll".into(), duration(settings.long_poll).into());
    worker.insert("grace_period".into(), "5s".into());
    worker.insert("listen".into(), format!("127.0.0.1:{port}").into());
    worker_file(
        &settings.engine_url,
        worker,
        [(settings.topic.clone(), topic)],
    )
}

/// ProcOS's pickups from its JSON log: the `engine call` trace line of a task's complete call
/// (`POST external-task/{id}/complete`). With the `echo` adapter and no delay nothing runs
/// between the handler getting the task and that call but turning its variables into outputs,
/// so the line's time is the handler's time plus a few microseconds (an upper bound).
fn procos_pickups(log: &Path) -> anyhow::Result<HashMap<String, f64>> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut found = HashMap::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event.get("message").and_then(|m| m.as_str()) != Some("engine call") {
            continue;
        }
        let Some(task) = event
            .get("path")
            .and_then(|p| p.as_str())
            .and_then(|p| p.strip_prefix("external-task/"))
            .and_then(|p| p.strip_suffix("/complete"))
        else {
            continue;
        };
        let Some(at) = event
            .get("timestamp")
            .and_then(|t| t.as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        found
            .entry(task.to_owned())
            .or_insert(at.timestamp_micros() as f64 / 1000.0);
    }
    Ok(found)
}

/// A peer's pickups: the lines `TASK_ID EPOCH_MILLIS` its handler recorded.
fn peer_pickups(file: &Path) -> anyhow::Result<HashMap<String, f64>> {
    let text = fs::read_to_string(file).with_context(|| {
        format!(
            "reading {} (the peer writes it when it is stopped)",
            file.display()
        )
    })?;
    let mut found = HashMap::new();
    for line in text.lines() {
        if let Some((task, millis)) = line.split_once(' ')
            && let Ok(millis) = millis.trim().parse::<f64>()
        {
            found.entry(task.to_owned()).or_insert(millis);
        }
    }
    Ok(found)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procos_pickups_come_from_the_complete_call_trace() {
        let dir = std::env::temp_dir().join(format!("procos-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("w.err");
        fs::write(
            &log,
            concat!(
                r#"{"timestamp":"2026-01-01T00:00:00.000500Z","level":"TRACE","message":"engine call","method":"POST","path":"external-task/fetchAndLock"}"#,
                "\n",
                r#"{"timestamp":"2026-01-01T00:00:01.002500Z","level":"TRACE","message":"engine call","method":"POST","path":"external-task/abc/complete"}"#,
                "\nnot json\n",
                r#"{"timestamp":"2026-01-01T00:00:09Z","level":"TRACE","message":"engine call","method":"POST","path":"external-task/abc/complete"}"#,
                "\n",
            ),
        )
        .unwrap();
        let found = procos_pickups(&log).unwrap();
        assert_eq!(found.len(), 1);
        let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .timestamp_millis() as f64;
        assert!((found["abc"] - base - 1002.5).abs() < 1e-6);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn procos_config_names_the_topic_and_its_delay() {
        let client = camunda_client::EngineClient::local(1, camunda_client::Auth::None).unwrap();
        let settings = WorkerSettings {
            engine_url: client.base_url().trim_end_matches('/').to_owned(),
            topic: "peers-procos-1".into(),
            max_tasks: 16,
            lock_duration: Duration::from_secs(60),
            long_poll: Duration::from_secs(30),
            delay: Duration::from_millis(50),
        };
        let text = procos_config(&settings, "w", 9999).unwrap();
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let topic = &parsed["topics"]["peers-procos-1"];
        assert_eq!(topic["adapter"].as_str(), Some("echo"));
        assert_eq!(topic["settings"]["delay"].as_str(), Some("50ms"));
        assert_eq!(parsed["worker"]["max_tasks"].as_integer(), Some(16));
        assert_eq!(parsed["worker"]["listen"].as_str(), Some("127.0.0.1:9999"));
        assert_eq!(
            parsed["engine"]["url"].as_str(),
            Some(settings.engine_url.as_str())
        );
    }
}
