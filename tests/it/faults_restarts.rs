//! Faults of restarts: the engine killed mid-run, a worker killed while it writes results back,
//! the Docker engine restarted while sandboxed steps run. Each run ends with the figures of
//! `support::tally` and its check: every instance ended, every external task completed exactly
//! once, nothing left behind, and the workers that were not killed still running.
//!
//! Ignored in the ordinary run: two of them restart parts a test would otherwise share (an
//! engine, a Docker engine), and all three load the machine on purpose; `scripts/test.sh` runs
//! them in a phase of their own, one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camunda_client::EngineClient;
use camunda_client::{Variable, Variables};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::support::tally::{
    Tally, assert_alive_and_stop, wait_for_all_ended, wait_for_completions,
};
use crate::support::{self, ProcosProcess, assert_eventually};

/// A `procos worker` configuration: `[worker]` with `worker` (its long poll short, so that a
/// worker notices a returning engine soon), and `topic` served by `adapter` with `topic_extra`
/// (TOML lines) and `settings` (an inline table's body).
fn worker_config(
    topic: &str,
    worker: &str,
    adapter: &str,
    topic_extra: &str,
    settings: &str,
) -> String {
    format!(
        "[worker]\nlong_poll = \"2s\"\n{worker}\n\n[topics.\"{topic}\"]\nadapter = \"{adapter}\"\n{topic_extra}\nsettings = {{ {settings} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault phase: scripts/test.sh runs the faults_ tests alone, one at a time"]
async fn the_engine_killed_mid_run_loses_no_task() {
    const INSTANCES: usize = 500;
    let port = support::free_port();
    let data = tempfile::tempdir().unwrap();
    let booting = Instant::now();
    let (client, mut first) = support::boot_engine(port, data.path(), vec![]).await;
    let first_boot = booting.elapsed();
    let url = client.base_url().to_owned();
    let (key, topic) = support::deploy_process(&client, "engine-killed").await;
    // All started before the workers run: the kill is to come with two thirds of the work still
    // to do, and started beside the workers they could nearly all be done before the last one
    // started.
    let instances = support::start_many(&client, &key, INSTANCES, 8, |_| Variables::new()).await;
    // Short locks, so that the tasks locked before the kill come back soon after the engine.
    let config = worker_config(
        &topic,
        "max_tasks = 8",
        "echo",
        "lock_duration = \"10s\"",
        "delay = \"100ms\"",
    );
    let workers: Vec<ProcosProcess> = (0..2)
        .map(|i| ProcosProcess::spawn(&url, &format!("{key}-w{i}"), &config))
        .collect();

    let completed_before = wait_for_completions(
        &client,
        &key,
        INSTANCES as u64 / 3,
        Duration::from_secs(120),
    )
    .await;
    // SIGKILL to the engine's process group: the JVM ends at once, with no shutdown hook, no
    // orderly close of its database and locks held by the workers' running tasks.
    let pid = first.pid().expect("the engine runs");
    killpg(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    first.exited().await.unwrap();
    assert_eq!(
        support::processes_in(data.path()),
        Vec::<u32>::new(),
        "nothing of the killed engine runs on"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Again on the same port and database.
    let booting = Instant::now();
    let (_, second) = support::boot_engine(port, data.path(), vec![]).await;
    let back = Instant::now();
    eprintln!(
        "the engine booted in {:.1} s, was killed with {completed_before} of {INSTANCES} tasks \
         completed (a moment before), booted again in {:.1} s and answered {:.1} s after the kill",
        first_boot.as_secs_f64(),
        booting.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );

    wait_for_all_ended(&client, &key, INSTANCES, Duration::from_secs(180)).await;
    let recovered = back.elapsed();
    let mut logs = Vec::new();
    for worker in workers {
        logs.push(assert_alive_and_stop(worker, Duration::from_secs(60)).await);
    }
    Tally::count(
        "the engine killed mid-run",
        &client,
        &key,
        &instances,
        &logs,
        recovered,
    )
    .await
    .assert_nothing_lost(1);
    second.stop(Duration::from_secs(20)).await;
}

/// The ids of the tasks a worker logging JSON reported done (completed, as the engine answered
/// its write-back).
fn reported_done(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "task done")
        .filter_map(|event| event["span"]["task_id"].as_str().map(str::to_owned))
        .collect()
}

/// How many answers to its write-backs a worker logging JSON reported, of any outcome.
fn answers(log: &str) -> usize {
    log.matches(r#""message":"task done""#).count()
}

/// How many external tasks the engine holds locked for `worker_id`.
async fn locked_for(client: &EngineClient, worker_id: &str) -> u64 {
    let count: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/external-task/count",
            client.base_url().trim_end_matches('/')
        ))
        .query(&[("workerId", worker_id), ("locked", "true")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    count["count"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault phase: scripts/test.sh runs the faults_ tests alone, one at a time"]
async fn a_worker_killed_while_it_writes_back_loses_no_task() {
    const INSTANCES: usize = 500;
    const KILLS: usize = 4;
    let client = support::engine();
    let url = support::engine_url();
    let (key, topic) = support::deploy_process(&client, "writeback-killed").await;
    let instances = support::start_many(&client, &key, INSTANCES, 8, |_| Variables::new()).await;
    // Echo without delay: a task's run takes microseconds, so nearly all of a handler's life is
    // its write-back (the `complete` call and the engine's transaction behind it). Worker A,
    // with many slots, writes back a whole fetch's tasks at once, and the engine answers them
    // one after another; A is killed the moment one answer shows in its log, while the rest of
    // those write-backs are still at the engine. The engine then completes tasks whose answer A
    // never sees (counted from the external-task log and A's log, and required below), and
    // what A had not yet sent stays locked for it until its 5 s lock expires.
    let config = |max_tasks: usize| {
        worker_config(
            &topic,
            &format!("max_tasks = {max_tasks}"),
            "echo",
            "lock_duration = \"5s\"",
            "",
        )
    };
    let b = ProcosProcess::spawn(&url, &format!("{key}-b"), &config(4));
    let spawn_a = |round: usize| {
        ProcosProcess::spawn_with_env(
            &url,
            &format!("{key}-a{round}"),
            &config(32),
            &[("PROCOS_LOG_FORMAT", "json")],
        )
    };

    let mut logs = Vec::new();
    let mut unanswered_per_kill = Vec::new();
    let mut last_kill = Instant::now();
    for round in 1..=KILLS {
        let a = spawn_a(round);
        let id = a.worker_id.clone();
        // In full flow: fetching and writing back.
        assert_eventually(
            &format!("worker {id} to complete tasks"),
            Duration::from_secs(60),
            || async { (reported_done(&a.log()).len() >= 20).then_some(()) },
        )
        .await;
        // At the next answer to one of its write-backs.
        let answered = answers(&a.log());
        let deadline = Instant::now() + Duration::from_secs(30);
        while answers(&a.log()) == answered {
            assert!(
                Instant::now() < deadline,
                "worker {id} stopped writing back"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        a.signal(Signal::SIGKILL);
        last_kill = Instant::now();
        let (_, log) = a.wait(Duration::from_secs(10)).await;
        // Long enough for the engine to finish the calls A made, well within the locks' 5 s.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let still_locked = locked_for(&client, &id).await;
        let done = reported_done(&log);
        let completed_by_a: BTreeSet<String> = support::completions(&client, &key)
            .await
            .into_iter()
            .filter(|entry| entry.worker_id.as_deref() == Some(id.as_str()))
            .map(|entry| entry.external_task_id)
            .collect();
        let unanswered = completed_by_a.difference(&done).count();
        eprintln!(
            "kill {round} of worker A ({id}): {still_locked} tasks locked for it, not completed; \
             {unanswered} completions the engine took that it never saw answered; {} reported done",
            done.len()
        );
        unanswered_per_kill.push(unanswered);
        logs.push(log);
    }
    // The fleet back at two workers for the rest.
    let a = spawn_a(KILLS + 1);

    wait_for_all_ended(&client, &key, INSTANCES, Duration::from_secs(180)).await;
    let recovered = last_kill.elapsed();
    assert!(
        unanswered_per_kill.iter().sum::<usize>() > 0,
        "the kills landed while the engine took worker A's results: {unanswered_per_kill:?}"
    );
    logs.push(assert_alive_and_stop(a, Duration::from_secs(60)).await);
    logs.push(assert_alive_and_stop(b, Duration::from_secs(60)).await);
    Tally::count(
        "a worker killed while it writes back",
        &client,
        &key,
        &instances,
        &logs,
        recovered,
    )
    .await
    .assert_nothing_lost(1);
}

/// A Docker engine of the test's own: a second `dockerd` with its socket, data, state and pid
/// file in a directory of its own, and no networking of its own (no bridge, no iptables rules,
/// no proxy), so that restarting it touches nothing but this test. It runs in a network
/// namespace of its own too: a `dockerd` without a bridge deletes the default bridge
/// interface (`docker0`) at start, and on the host that is the main engine's. Stopped, its
/// namespace deleted and its directory removed when dropped.
struct Dockerd {
    root: tempfile::TempDir,
    netns: String,
    process: Option<std::process::Child>,
}

impl Dockerd {
    /// Starts it and waits until it answers.
    async fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        // An empty configuration: the host's /etc/docker/daemon.json is the main engine's.
        std::fs::write(root.path().join("daemon.json"), "{}").unwrap();
        let netns = format!("procos-dockerd-{}", std::process::id());
        // What a killed earlier test binary with the same pid may have left.
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
        let added = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .expect("`ip` runs (scripts/test.sh installs iproute2)");
        assert!(added.success(), "ip netns add {netns} (needs root)");
        let mut dockerd = Self {
            root,
            netns,
            process: None,
        };
        dockerd.run().await;
        dockerd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// `unix://…/docker.sock`, as `DOCKER_HOST` and `docker -H` take it.
    fn host(&self) -> String {
        format!("unix://{}", self.path("docker.sock").display())
    }

    /// Starts `dockerd` on the directory (again, after a kill) and waits until it answers.
    async fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("dockerd.log"))
            .unwrap();
        // nsenter enters the network namespace alone; `ip netns exec` would also give dockerd a
        // mount namespace with a fresh /sys, without the cgroup mounts it needs.
        let process = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", self.netns))
            .arg("dockerd")
            .arg("--host")
            .arg(self.host())
            .arg("--config-file")
            .arg(self.path("daemon.json"))
            .arg("--data-root")
            .arg(self.path("data"))
            .arg("--exec-root")
            .arg(self.path("exec"))
            .arg("--pidfile")
            .arg(self.path("docker.pid"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--userland-proxy=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd runs (scripts/docker-engine.sh installs it)");
        // Kept at once, so that a start that fails is stopped when the guard is dropped.
        self.process = Some(process);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                return;
            }
            let process = self.process.as_mut().expect("just started");
            if let Some(status) = process.try_wait().unwrap() {
                panic!(
                    "dockerd exited ({status}) while starting:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills `dockerd` with `signal` and waits for it to end.
    fn kill(&mut self, signal: Signal) {
        let mut process = self.process.take().expect("dockerd runs");
        kill(Pid::from_raw(i32::try_from(process.id()).unwrap()), signal).unwrap();
        process.wait().unwrap();
    }

    /// `docker -H <this engine> ARGS…`.
    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .args(args)
            .output()
            .unwrap()
    }

    /// Copies `image` from the main Docker engine (no registry is needed or reachable).
    fn load_image(&self, image: &str) {
        let mut save = Command::new("docker")
            .args(["save", image])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let load = Command::new("docker")
            .arg("-H")
            .arg(self.host())
            .arg("load")
            .stdin(save.stdout.take().unwrap())
            .output()
            .unwrap();
        assert!(save.wait().unwrap().success(), "docker save {image}");
        assert!(
            load.status.success(),
            "docker load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
    }

    /// The containers, running or not, that carry `label`: one line each with id, name, state
    /// and the warm pool's label, to say what was left.
    fn containers_labelled(&self, label: &str) -> Vec<String> {
        let listing = self.docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={label}"),
            "--format",
            "{{.ID}} {{.Names}} {{.Status}} warm={{.Label \"io.procos.warm\"}}",
        ]);
        assert!(listing.status.success(), "{listing:?}");
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // In order, so that it stops its containers and containerd and unmounts their
            // filesystems; killed if it takes too long.
            let pid = Pid::from_raw(i32::try_from(process.id()).unwrap());
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while process.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = process.kill();
            let _ = process.wait();
        }
        // What a killed dockerd left running (its containerd, the containers' shims) names the
        // directory on its command line.
        for pid in processes_naming(self.root.path()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Mounts under the directory, deepest first, so that it can be removed.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut inside: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| Path::new(point).starts_with(self.root.path()))
            .collect();
        inside.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in inside {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// Processes whose command line names `dir`.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&dir))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault phase: scripts/test.sh runs the faults_ tests alone, one at a time"]
async fn the_docker_engine_restarted_while_sandboxed_steps_run_loses_no_task() {
    const INSTANCES: usize = 50;
    const IMAGE: &str = "procos/python-sandbox:latest";
    let mut dockerd = Dockerd::start().await;
    let loading = Instant::now();
    dockerd.load_image(IMAGE);
    eprintln!(
        "{IMAGE} loaded into the test's Docker engine in {:?}",
        loading.elapsed()
    );

    let client = support::engine();
    let url = support::engine_url();
    let (key, topic) = crate::sandbox::deploy_task_process(
        &client,
        "docker-restarted",
        crate::sandbox::SCRIPT_FROM_VARIABLE,
    )
    .await;
    // The topic's retries and backoff are the defaults (3, from 10 s): a task whose container
    // the restart took away fails and runs again, as it would for an operator.
    let worker = ProcosProcess::spawn_with_env(
        &url,
        &format!("{key}-w"),
        &worker_config(&topic, "max_tasks = 4", "python", "", ""),
        &[("DOCKER_HOST", &dockerd.host())],
    );
    let script = "import time\ntime.sleep(1.5)\noutputs['doubled'] = inputs['x'] * 2\n";
    let instances = support::start_many(&client, &key, INSTANCES, 8, |i| {
        let mut variables = support::script(script);
        variables.insert("x".into(), Variable::Integer(i32::try_from(i).unwrap()));
        variables
    })
    .await;

    let completed_before = wait_for_completions(
        &client,
        &key,
        INSTANCES as u64 / 3,
        Duration::from_secs(180),
    )
    .await;
    // A crash: dockerd ends at once, stopping nothing and answering no call in flight; the
    // containers it ran are for its next start to find.
    dockerd.kill(Signal::SIGKILL);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    dockerd.run().await;
    let back = Instant::now();
    eprintln!(
        "the Docker engine was killed with {completed_before} of {INSTANCES} tasks completed (a \
         moment before) and answered again {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );

    wait_for_all_ended(&client, &key, INSTANCES, Duration::from_secs(240)).await;
    let recovered = back.elapsed();
    let log = assert_alive_and_stop(worker, Duration::from_secs(60)).await;
    let mut wrong = BTreeMap::new();
    for instance in &instances {
        let variables = client.historic_variables(instance).await.unwrap();
        let Variable::Integer(x) = variables["x"] else {
            panic!("x of {instance}: {:?}", variables["x"])
        };
        if variables.get("doubled") != Some(&Variable::Integer(2 * x)) {
            wrong.insert(instance.clone(), (x, variables.get("doubled").cloned()));
        }
    }
    assert!(
        wrong.is_empty(),
        "every instance's result is its input doubled: {wrong:?}"
    );
    Tally::count(
        "the Docker engine restarted while sandboxed steps run",
        &client,
        &key,
        &instances,
        &[log],
        recovered,
    )
    .await
    .assert_nothing_lost(1);
    assert_eq!(
        dockerd.containers_labelled("io.procos.task"),
        Vec::<String>::new(),
        "no sandbox container is left on the restarted Docker engine once the worker stopped"
    );
}
