//! Running one task in a throwaway, locked-down Docker container: the part the `docker` and
//! `python` adapters share.
//!
//! Inputs are uploaded as files into `/in` before the container starts; outputs are read from
//! `/out/output.json` after it ends (or from the last stdout line when that is JSON). Both are
//! anonymous volumes, so the root filesystem can stay read-only and nothing outlives the task:
//! the container and its volumes are removed on every path, including timeouts, cancellation and
//! Docker errors. A worker that is killed cannot do that: each container carries its deadline,
//! and any worker clears containers well past theirs (and warm containers that gave up waiting).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions, KillContainerOptions,
    LogsOptions, RemoveContainerOptions, UploadToContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Failure, ImageAllowlist, Outcome, Retry};

/// `[topics.NAME.settings.sandbox]`: the container's guards. Every guard is on by default;
/// turning one off is a setting, and the worker says so in its log at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Guards {
    /// Wall-clock limit; the container is killed after it.
    #[serde(with = "humantime_serde")]
    pub(crate) timeout: Duration,
    /// Memory limit in MiB (swap included: no swap beyond it).
    pub(crate) memory_mb: u64,
    /// CPU limit in cores.
    pub(crate) cpus: f64,
    /// Most processes and threads the container may have.
    pub(crate) pids_limit: i64,
    /// Give the container a network (off: `--network none`).
    pub(crate) network: bool,
    /// Keep the root filesystem read-only (only `/tmp`, `/in` and `/out` are writable).
    pub(crate) read_only: bool,
    /// The user the command runs as; ProcOS's default is `nobody`.
    pub(crate) user: String,
    /// Size of the `/tmp` tmpfs in MiB.
    pub(crate) tmpfs_mb: u64,
    /// Largest `/out/output.json` (or stdout line) taken as output, in KiB.
    pub(crate) max_output_kb: u64,
}

impl Default for Guards {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            memory_mb: 256,
            cpus: 1.0,
            pids_limit: 128,
            network: false,
            read_only: true,
            user: "65534:65534".to_owned(),
            tmpfs_mb: 64,
            max_output_kb: 1024,
        }
    }
}

impl Guards {
    /// The guards this configuration turns off, for the worker's start-up warning.
    pub(crate) fn relaxed(&self) -> Vec<&'static str> {
        let mut off = Vec::new();
        if self.network {
            off.push("network = true: the container can reach the network");
        }
        if !self.read_only {
            off.push("read_only = false: the container can write its root filesystem");
        }
        let user = self.user.trim();
        if user.is_empty() || user == "root" || user == "0" || user.starts_with("0:") {
            off.push("user is root inside the container");
        }
        off
    }

    fn check(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("sandbox.timeout must be more than 0s".into());
        }
        if self.memory_mb < 8 {
            return Err("sandbox.memory_mb must be at least 8".into());
        }
        if self.cpus.is_nan() || self.cpus <= 0.0 {
            return Err("sandbox.cpus must be more than 0".into());
        }
        if self.pids_limit < 1 {
            return Err("sandbox.pids_limit must be at least 1".into());
        }
        Ok(())
    }
}

/// The failure of a task whose image `list` does not allow: the image, the list, and the fix.
pub(crate) fn image_refusal(list: &ImageAllowlist, image: &str) -> Failure {
    Failure::new(
        format!("the image `{image}` is not in the worker's allowed images"),
        format!(
            "The worker runs only images that [worker] allowed_images lists (now: {}). Add `{image}` (or a prefix such as `{}*`) there if it is trusted.",
            list.describe(),
            image.split('/').next().unwrap_or(image)
        ),
        Retry::Never,
    )
}

/// One container run: what to run and what to hand it.
#[derive(Debug, Clone)]
pub(crate) struct ContainerSpec {
    pub(crate) task_id: String,
    pub(crate) topic: String,
    pub(crate) image: String,
    /// `None`: the image's own command.
    pub(crate) command: Option<Vec<String>>,
    pub(crate) env: Vec<String>,
    /// Files for `/in`, by name.
    pub(crate) files: Vec<(String, Vec<u8>)>,
    /// Exit codes that mean a BPMN error, with the error code ("" = from the output's
    /// `errorCode`).
    pub(crate) bpmn_error_exit_codes: BTreeMap<i64, String>,
    pub(crate) guards: Guards,
}

/// How a container ended, before it is turned into an [`Outcome`].
#[derive(Debug)]
struct Ended {
    exit_code: i64,
    oom_killed: bool,
    stdout: String,
    stderr: String,
    /// `/out/output.json`, if the command wrote anything there.
    output_file: Option<Vec<u8>>,
}

/// Bytes of stdout and stderr kept (the end of each).
const LOG_TAIL: usize = 16 * 1024;

/// The Docker engine the sandboxes run on.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    docker: Docker,
    /// When this sandbox last looked for containers that dead workers left behind.
    last_sweep: Arc<Mutex<Option<Instant>>>,
}

impl Sandbox {
    /// Connects (lazily) to the local Docker engine, or the one `DOCKER_HOST` names.
    pub(crate) fn connect(guards: &Guards) -> Result<Self, String> {
        guards.check()?;
        let docker = Docker::connect_with_defaults()
            .map_err(|e| format!("cannot use the Docker engine: {e}"))?;
        Ok(Self {
            docker,
            last_sweep: Arc::default(),
        })
    }

    /// Runs `spec` to its end and says what became of it. Never leaves a container behind.
    pub(crate) async fn run(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome {
        self.sweep_if_due().await;
        if let Err(failure) = self.ensure_image(&spec.image).await {
            return Outcome::Failure(failure);
        }
        let id = match self.create(spec).await {
            Ok(id) => id,
            Err(e) => {
                return Outcome::Failure(docker_failure("create the container", &spec.image, &e));
            }
        };
        let ended = self.drive(&id, spec, cancel).await;
        self.remove(&id).await;
        match ended {
            Ok(ended) => outcome(spec, ended),
            Err(failure) => Outcome::Failure(failure),
        }
    }

    async fn ensure_image(&self, image: &str) -> Result<(), Failure> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(docker_failure("inspect the image", image, &e)),
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(progress) = pull.next().await {
            if let Err(e) = progress {
                return Err(Failure::new(
                    format!(
                        "the image `{image}` is not on this Docker engine and could not be pulled"
                    ),
                    format!(
                        "Pulling `{image}` failed: {e}\nBuild or load the image on the Docker engine the worker uses (`docker build`, `docker load`), or make its registry reachable."
                    ),
                    Retry::Later,
                ));
            }
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        self.create_labelled(spec, None).await
    }

    /// Creates the container; `warm` is the pool's key and the longest the container waits for
    /// its task.
    async fn create_labelled(
        &self,
        spec: &ContainerSpec,
        warm: Option<(&str, Duration)>,
    ) -> Result<String, DockerError> {
        let g = &spec.guards;
        let waits = warm.map_or(Duration::ZERO, |(_, waits)| waits);
        let deadline = unix_now().saturating_add((waits + g.timeout).as_secs());
        let memory = i64::try_from(g.memory_mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        let volume = |target: &str| Mount {
            target: Some(target.to_owned()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        };
        let host_config = HostConfig {
            network_mode: (!g.network).then(|| "none".to_owned()),
            readonly_rootfs: Some(g.read_only),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!("rw,nosuid,nodev,size={}m,mode=1777", g.tmpfs_mb),
            )])),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            pids_limit: Some(g.pids_limit),
            memory: Some(memory),
            memory_swap: Some(memory),
            nano_cpus: Some((g.cpus * 1e9) as i64),
            mounts: Some(vec![volume("/in"), volume("/out")]),
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            env: Some(spec.env.clone()),
            user: Some(g.user.clone()).filter(|u| !u.trim().is_empty()),
            working_dir: Some("/tmp".to_owned()),
            network_disabled: Some(!g.network),
            labels: Some(
                [
                    ("io.procos.task".to_owned(), spec.task_id.clone()),
                    ("io.procos.topic".to_owned(), spec.topic.clone()),
                    (DEADLINE_LABEL.to_owned(), deadline.to_string()),
                ]
                .into_iter()
                .chain(warm.map(|(key, _)| (WARM_LABEL.to_owned(), key.to_owned())))
                .collect(),
            ),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!("procos-task-{}", sanitize(&spec.task_id));
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await?;
        Ok(created.id)
    }

    /// Uploads the inputs, starts, and finishes.
    async fn drive(
        &self,
        id: &str,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> Result<Ended, Failure> {
        self.upload(id, "/in", &spec.files)
            .await
            .map_err(|e| docker_failure("hand the inputs to the container", &spec.image, &e))?;
        self.prepare_and_start(id, &spec.image).await?;
        self.finish(id, spec, cancel).await
    }

    /// Makes `/out/output.json` writable for the command and starts the container.
    async fn prepare_and_start(&self, id: &str, image: &str) -> Result<(), Failure> {
        // Pre-created and world-writable, so a non-root command can write it into the
        // root-owned volume.
        self.upload(id, "/out", &[("output.json".to_owned(), Vec::new())])
            .await
            .map_err(|e| docker_failure("prepare /out", image, &e))?;
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| docker_failure("start the container", image, &e))
    }

    /// Waits for the started container's end (bounded by the timeout and `cancel`) and collects
    /// exit status, logs and the output file.
    async fn finish(
        &self,
        id: &str,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> Result<Ended, Failure> {
        let failed = |what: &str, e: DockerError| docker_failure(what, &spec.image, &e);
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let limit = spec.guards.timeout;
        tokio::select! {
            // A non-zero exit arrives as an error here; the exit code is read below.
            _ = wait.next() => {}
            () = tokio::time::sleep(limit) => {
                self.kill(id).await;
                return Err(Failure::new(
                    format!("the container timed out after {}; it was killed", humantime::format_duration(limit)),
                    format!(
                        "`{}` ran longer than sandbox.timeout ({}). Raise the timeout if the work needs longer, or look for an endless loop. The end of its stderr:\n{}",
                        spec.image,
                        humantime::format_duration(limit),
                        self.logs(id).await.map(|(_, stderr)| stderr).unwrap_or_default()
                    ),
                    Retry::Later,
                ));
            }
            () = cancel.cancelled() => {
                self.kill(id).await;
                return Err(Failure::new("cancelled", "The worker cancelled the run (shutdown, or the lock was lost).", Retry::Later));
            }
        }

        let state = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| failed("inspect the finished container", e))?
            .state
            .unwrap_or_default();
        let (stdout, stderr) = self
            .logs(id)
            .await
            .map_err(|e| failed("read the finished container's output", e))?;
        let output_file = self
            .download(id, "/out/output.json", spec.guards.max_output_kb * 1024)
            .await?;
        Ok(Ended {
            exit_code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
            stdout,
            stderr,
            output_file,
        })
    }

    async fn upload(
        &self,
        id: &str,
        dir: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<(), DockerError> {
        let mut archive = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o666);
            header.set_mtime(0);
            header.set_cksum();
            // Appending to a Vec cannot fail.
            let _ = archive.append_data(&mut header, name, bytes.as_slice());
        }
        let tar = archive.into_inner().unwrap_or_default();
        self.docker
            .upload_to_container(
                id,
                Some(UploadToContainerOptions {
                    path: dir.to_owned(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
    }

    /// The file at `path`, or `None` when it is missing or empty; over `limit` bytes is a
    /// failure.
    async fn download(&self, id: &str, path: &str, limit: u64) -> Result<Option<Vec<u8>>, Failure> {
        let mut stream = self.docker.download_from_container(
            id,
            Some(DownloadFromContainerOptions {
                path: path.to_owned(),
            }),
        );
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    tar_bytes.extend_from_slice(&bytes);
                    // A tar holds the file plus headers and padding: stop reading well past the
                    // limit rather than buffer a huge file.
                    if tar_bytes.len() as u64 > limit + 64 * 1024 {
                        return Err(too_large(path, tar_bytes.len() as u64, limit));
                    }
                }
                Err(_) => return Ok(None),
            }
        }
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let Ok(mut entries) = archive.entries() else {
            return Ok(None);
        };
        let Some(Ok(mut entry)) = entries.next() else {
            return Ok(None);
        };
        let size = entry.size();
        if size > limit {
            return Err(too_large(path, size, limit));
        }
        let mut content = Vec::new();
        if entry.read_to_end(&mut content).is_err() || content.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        Ok(Some(content))
    }

    /// The tails of the container's stdout and stderr. An error (the container is gone, the
    /// engine went away) is not "no output": the caller must not judge the task on it.
    async fn logs(&self, id: &str) -> Result<(String, String), DockerError> {
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk? {
                bollard::container::LogOutput::StdErr { message } => {
                    push_tail(&mut stderr, &message)
                }
                other => push_tail(&mut stdout, other.as_ref()),
            }
        }
        Ok((
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        ))
    }

    async fn kill(&self, id: &str) {
        let _ = self
            .docker
            .kill_container(
                id,
                Some(KillContainerOptions {
                    signal: "KILL".to_owned(),
                }),
            )
            .await;
    }

    async fn remove(&self, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if let Err(e) = self.docker.remove_container(id, Some(options)).await {
            tracing::warn!(container = id, error = %e, "could not remove the task's container");
        }
    }
}

/// Label of a warm container, with the pool's key (topic and image) as its value.
const WARM_LABEL: &str = "io.procos.warm";
/// The file whose arrival in `/in` hands a task to a waiting warm container.
const GO_FILE: &str = "go";
/// The exit code of a warm container whose task never came (the Python runner's
/// `GAVE_UP_WAITING`).
const GAVE_UP_WAITING: i64 = 75;
/// Label with the Unix time (seconds) by which the container has ended on every path its
/// worker drives: created, plus the longest wait for a warm container's task, plus the timeout.
const DEADLINE_LABEL: &str = "io.procos.deadline";
/// How far past its deadline a container must be before another worker takes it for a dead
/// worker's: its own kills it at the deadline and removes it seconds later. Also absorbs clock
/// skew between workers on different machines sharing one Docker engine.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// How often at most one sandbox looks for containers of dead workers (a list call or two).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Started containers of one spec, each waiting for the one task it will run: a short script
/// pays for its container's start ahead of time, and still gets a container of its own. A
/// waiting container gives up after `idle` by itself (the runner's `PROCOS_WAIT_SECONDS`).
#[derive(Debug)]
pub(crate) struct WarmPool {
    sandbox: Sandbox,
    template: ContainerSpec,
    size: usize,
    ready: Arc<Mutex<VecDeque<String>>>,
    filling: Mutex<JoinSet<()>>,
    /// How long a warm container waits for its task before it gives up.
    idle: Duration,
}

impl WarmPool {
    /// `template`'s command must wait for `/in/go` (the Python runner does when
    /// `PROCOS_WAIT_FOR_INPUT` is set, which this adds).
    pub(crate) fn new(
        sandbox: Sandbox,
        mut template: ContainerSpec,
        size: usize,
        idle: Duration,
    ) -> Self {
        template.env.push("PROCOS_WAIT_FOR_INPUT=1".to_owned());
        template
            .env
            .push(format!("PROCOS_WAIT_SECONDS={}", idle.as_secs().max(1)));
        template.files.clear();
        template.task_id = "warm".to_owned();
        Self {
            sandbox,
            template,
            size,
            ready: Arc::default(),
            filling: Mutex::new(JoinSet::new()),
            idle: idle.max(Duration::from_secs(1)),
        }
    }

    fn key(&self) -> String {
        format!("{}:{}", self.template.topic, self.template.image)
    }

    /// Runs `spec` in a waiting container when one is ready, else in a cold one; tops the pool
    /// up either way.
    pub(crate) async fn run(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome {
        self.sandbox.sweep_if_due().await;
        let warm = self.take_running().await;
        self.top_up();
        let Some(id) = warm else {
            return self.sandbox.run(spec, cancel).await;
        };
        let mut files = spec.files.clone();
        files.push((GO_FILE.to_owned(), Vec::new()));
        let ended = match self.sandbox.upload(&id, "/in", &files).await {
            Ok(()) => self.sandbox.finish(&id, spec, cancel).await,
            Err(e) => Err(docker_failure(
                "hand the inputs to the container",
                &spec.image,
                &e,
            )),
        };
        self.sandbox.remove(&id).await;
        match ended {
            Ok(ended) => outcome(spec, ended),
            Err(failure) => Outcome::Failure(failure),
        }
    }

    /// A waiting container that still waits: one that gave up (idle too long) is removed.
    async fn take_running(&self) -> Option<String> {
        loop {
            let id = lock(&self.ready).pop_front()?;
            if self.sandbox.is_running(&id).await {
                return Some(id);
            }
            self.sandbox.remove(&id).await;
        }
    }

    /// Starts as many containers as the pool lacks (counting those already starting).
    fn top_up(&self) {
        let mut filling = lock(&self.filling);
        while filling.try_join_next().is_some() {}
        let missing = self
            .size
            .saturating_sub(lock(&self.ready).len() + filling.len());
        for _ in 0..missing {
            let sandbox = self.sandbox.clone();
            let mut spec = self.template.clone();
            spec.task_id = format!("warm-{}", rand_suffix());
            let ready = Arc::clone(&self.ready);
            let key = self.key();
            let idle = self.idle;
            filling.spawn(async move {
                match sandbox.start_waiting(&spec, &key, idle).await {
                    Ok(id) => lock(&ready).push_back(id),
                    Err(failure) => tracing::warn!(image = %spec.image, error = %failure.message, "could not start a warm container; tasks start cold meanwhile"),
                }
            });
        }
    }

    /// Lets the containers being started finish starting (aborting one halfway would leave it
    /// behind), then removes every waiting container.
    pub(crate) async fn close(&self) {
        let mut filling = std::mem::take(&mut *lock(&self.filling));
        while filling.join_next().await.is_some() {}
        let waiting: Vec<String> = lock(&self.ready).drain(..).collect();
        for id in waiting {
            self.sandbox.remove(&id).await;
        }
    }
}

/// Seconds since the Unix epoch (0 for a clock set before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values inside; a panic elsewhere cannot leave them half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sandbox {
    /// Clears away what dead workers left, at most every [`SWEEP_EVERY`]: a worker removes its
    /// own containers on every path, but one that was killed cannot. Any worker may do it, on
    /// rules that never touch a container a live worker still uses.
    async fn sweep_if_due(&self) {
        {
            let mut last = lock(&self.last_sweep);
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        self.remove_given_up_warm_containers().await;
        self.remove_containers_past_their_deadline().await;
    }

    /// Warm containers that exited with the runner's give-up code: their task never came. A
    /// warm container that was handed a task carries the same label but ends with the task's
    /// code (the runner maps every script exit to 0, 1 or 3), and its worker may still be
    /// reading its output.
    async fn remove_given_up_warm_containers(&self) {
        let filters = HashMap::from([
            ("label", vec![WARM_LABEL.to_owned()]),
            ("status", vec!["exited".to_owned()]),
            ("exited", vec![GAVE_UP_WAITING.to_string()]),
        ]);
        for container in self.list(&filters).await {
            if let Some(id) = container.id {
                self.remove(&id).await;
            }
        }
    }

    /// Sandbox containers, running or not, more than [`ORPHAN_GRACE`] past their deadline:
    /// their worker would have killed them at it and removed them within seconds, so it is
    /// gone. Containers without a deadline are left alone.
    async fn remove_containers_past_their_deadline(&self) {
        let filters = HashMap::from([("label", vec![DEADLINE_LABEL.to_owned()])]);
        let cutoff = unix_now().saturating_sub(ORPHAN_GRACE.as_secs());
        for container in self.list(&filters).await {
            let deadline = container
                .labels
                .as_ref()
                .and_then(|labels| labels.get(DEADLINE_LABEL))
                .and_then(|value| value.parse::<u64>().ok());
            if let (Some(id), Some(deadline)) = (container.id, deadline)
                && deadline < cutoff
            {
                tracing::info!(container = %id, state = ?container.state, "removing a sandbox container its worker left behind (past its deadline)");
                self.remove(&id).await;
            }
        }
    }

    /// Every container, running or not, that matches `filters`; none (and a warning) when Docker
    /// cannot say.
    async fn list(
        &self,
        filters: &HashMap<&str, Vec<String>>,
    ) -> Vec<bollard::models::ContainerSummary> {
        let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(true)
            .filters(filters)
            .build();
        match self.docker.list_containers(Some(options)).await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::warn!(error = %e, "could not list sandbox containers to clear those of dead workers; trying again in a minute");
                Vec::new()
            }
        }
    }

    async fn is_running(&self, id: &str) -> bool {
        self.docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false)
    }

    /// Creates and starts a container that waits for its task.
    async fn start_waiting(
        &self,
        spec: &ContainerSpec,
        key: &str,
        idle: Duration,
    ) -> Result<String, Failure> {
        self.ensure_image(&spec.image).await?;
        let id = self
            .create_labelled(spec, Some((key, idle)))
            .await
            .map_err(|e| docker_failure("create a warm container", &spec.image, &e))?;
        if let Err(failure) = self.prepare_and_start(&id, &spec.image).await {
            self.remove(&id).await;
            return Err(failure);
        }
        Ok(id)
    }
}

/// An input that holds JSON: the value itself, or JSON text in a string (what a Modeler text
/// field gives). Absent, null and blank mean "not given"; text that is not JSON stays a string,
/// for the caller to refuse with its own message.
pub(crate) fn json_input(inputs: &Map<String, Value>, name: &str) -> Option<Value> {
    match inputs.get(name)? {
        Value::Null => None,
        Value::String(text) if text.trim().is_empty() => None,
        Value::String(text) => {
            Some(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())))
        }
        other => Some(other.clone()),
    }
}

/// A script setting names a file inside `scripts_dir`, never a path out of it.
pub(crate) fn check_script_name(name: Option<&str>) -> Result<(), String> {
    match name {
        Some(name) if name.contains('/') || name.contains("..") => Err(format!(
            "script `{name}` must be a file name inside scripts_dir, not a path"
        )),
        _ => Ok(()),
    }
}

/// The script a task runs, with a name for messages: the task's input `script` (the model's
/// input parameter holding the source), else the file `setting` in `scripts_dir`, read at each
/// run so that edits apply at once.
pub(crate) async fn script_source(
    inputs: &Map<String, Value>,
    setting: Option<&str>,
    scripts_dir: &std::path::Path,
) -> Result<(String, String), Failure> {
    if let Some(Value::String(source)) = inputs.get("script") {
        return Ok(("the model's `script` input".to_owned(), source.clone()));
    }
    let Some(name) = setting else {
        return Err(Failure::new(
            "no script to run",
            "Give the task an input `script` with the source (an input parameter in Camunda Modeler), or set `script` in the topic's settings to a file in scripts_dir.",
            Retry::Never,
        ));
    };
    let path = scripts_dir.join(name);
    match tokio::fs::read_to_string(&path).await {
        Ok(source) => Ok((name.to_owned(), source)),
        Err(e) => Err(Failure::new(
            format!("cannot read the script {}: {e}", path.display()),
            format!(
                "The topic's settings name the script `{name}` in scripts_dir {}.",
                scripts_dir.display()
            ),
            Retry::Later,
        )),
    }
}

fn push_tail(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(bytes);
    if buffer.len() > LOG_TAIL * 2 {
        let cut = buffer.len() - LOG_TAIL;
        buffer.drain(..cut);
    }
}

fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(LOG_TAIL);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

/// The last meaningful line: a traceback's header, printed last by a process that died
/// meanwhile, says nothing.
fn last_line(text: &str) -> Option<&str> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Traceback (most recent call last)"))
}

fn sanitize(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect::<String>()
        + &format!("-{:06x}", rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() & 0xff_ffff)
}

fn too_large(path: &str, size: u64, limit: u64) -> Failure {
    Failure::new(
        format!("the output is over the size limit ({} KiB)", limit / 1024),
        format!(
            "{path} holds at least {size} bytes; sandbox.max_output_kb allows {limit}. Large results belong in a file store, with a reference in the output."
        ),
        Retry::Never,
    )
}

fn docker_failure(what: &str, image: &str, e: &DockerError) -> Failure {
    Failure::new(
        format!(
            "could not {what} for `{image}`: {}",
            one_line(&e.to_string())
        ),
        format!(
            "The Docker engine answered: {e}\nCheck that the worker can reach it (DOCKER_HOST or /var/run/docker.sock)."
        ),
        Retry::Later,
    )
}

fn one_line(text: &str) -> String {
    last_line(text).unwrap_or("").chars().take(300).collect()
}

/// Exit code and files → the task's outcome.
fn outcome(spec: &ContainerSpec, ended: Ended) -> Outcome {
    let limit = spec.guards.max_output_kb * 1024;
    let output = match parse_output(&ended, limit) {
        Ok(output) => output,
        Err(failure) => return Outcome::Failure(failure),
    };
    let stderr_tail = tail(&ended.stderr);
    // SIGKILL that the sandbox did not send (its timeout returns earlier): the kernel's OOM
    // killer at the memory limit. Docker flags OOMKilled only when it hit the container's first
    // process, not a child of its init.
    const SIGKILLED: i64 = 128 + 9;
    if ended.oom_killed || ended.exit_code == SIGKILLED {
        let how = if ended.oom_killed {
            "ran out of memory"
        } else {
            "was killed (SIGKILL), most likely for running out of memory"
        };
        return Outcome::Failure(Failure::new(
            format!("the container {how} (limit {} MiB)", spec.guards.memory_mb),
            format!(
                "Raise sandbox.memory_mb if the work needs more. Exit code {}. The end of its stderr:\n{stderr_tail}",
                ended.exit_code
            ),
            Retry::Later,
        ));
    }
    if ended.exit_code == 0 {
        return Outcome::Complete(output.unwrap_or_default());
    }
    if let Some(code) = spec.bpmn_error_exit_codes.get(&ended.exit_code) {
        let output = output.unwrap_or_default();
        let code = if code.is_empty() {
            output
                .get("errorCode")
                .and_then(Value::as_str)
                .unwrap_or("ERROR")
                .to_owned()
        } else {
            code.clone()
        };
        let message = output
            .get("errorMessage")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| last_line(&ended.stderr).map(str::to_owned))
            .unwrap_or_default();
        let outputs = match output.get("outputs") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        return Outcome::BpmnError {
            code,
            message,
            outputs,
        };
    }
    let reason = last_line(&ended.stderr)
        .or_else(|| last_line(&ended.stdout))
        .unwrap_or("no output");
    Outcome::Failure(Failure::new(
        format!(
            "`{}` exited with code {}: {reason}",
            spec.image, ended.exit_code
        ),
        format!(
            "exit code {}\n--- stderr (end) ---\n{stderr_tail}\n--- stdout (end) ---\n{}",
            ended.exit_code,
            tail(&ended.stdout)
        ),
        Retry::Later,
    ))
}

/// `/out/output.json`, else the last stdout line when it is a JSON object.
fn parse_output(ended: &Ended, limit: u64) -> Result<Option<Map<String, Value>>, Failure> {
    if let Some(bytes) = &ended.output_file {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(other) => Err(Failure::new(
                "/out/output.json is not a JSON object",
                format!(
                    "Outputs must be an object of name → value; found: {}",
                    one_line(&other.to_string())
                ),
                Retry::Never,
            )),
            Err(e) => Err(Failure::new(
                format!("/out/output.json is not valid JSON: {e}"),
                format!(
                    "The file began: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                ),
                Retry::Never,
            )),
        };
    }
    let Some(line) = last_line(&ended.stdout) else {
        return Ok(None);
    };
    if line.len() as u64 > limit {
        return Err(too_large("the last stdout line", line.len() as u64, limit));
    }
    Ok(match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_takes_exact_names_and_prefixes() {
        let list = ImageAllowlist::new(["procos/*".to_owned(), "python:3.12".to_owned()]);
        assert!(list.allows("procos/python-sandbox"));
        assert!(list.allows("python:3.12"));
        assert!(!list.allows("python"), "python means python:latest");
        assert!(!list.allows("evil/procos"));
        let refusal = image_refusal(&list, "evil/miner:1");
        assert_eq!(refusal.retry, Retry::Never);
        assert!(
            refusal.details.contains("allowed_images"),
            "{}",
            refusal.details
        );
    }

    fn ended(exit_code: i64, stdout: &str, output_file: Option<&str>) -> Ended {
        Ended {
            exit_code,
            oom_killed: false,
            stdout: stdout.into(),
            stderr: "Traceback…\nValueError: bad\n".into(),
            output_file: output_file.map(|s| s.as_bytes().to_vec()),
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            task_id: "t".into(),
            topic: "x".into(),
            image: "img".into(),
            command: None,
            env: vec![],
            files: vec![],
            bpmn_error_exit_codes: BTreeMap::from([(3, String::new())]),
            guards: Guards::default(),
        }
    }

    #[test]
    fn json_inputs_come_as_values_or_as_text() {
        let inputs =
            serde_json::json!({"a": ["x"], "b": "[\"y\"]", "c": " ", "d": null, "e": "not json"});
        let inputs = inputs.as_object().cloned().unwrap_or_default();
        assert_eq!(json_input(&inputs, "a"), Some(serde_json::json!(["x"])));
        assert_eq!(json_input(&inputs, "b"), Some(serde_json::json!(["y"])));
        assert_eq!(json_input(&inputs, "c"), None);
        assert_eq!(json_input(&inputs, "d"), None);
        assert_eq!(
            json_input(&inputs, "e"),
            Some(serde_json::json!("not json"))
        );
        assert_eq!(json_input(&inputs, "missing"), None);
    }

    #[test]
    fn exit_codes_become_outcomes() {
        let done = outcome(&spec(), ended(0, "log\n{\"n\": 1}\n", None));
        assert!(
            matches!(done, Outcome::Complete(ref m) if m["n"] == 1),
            "{done:?}"
        );
        let file_wins = outcome(&spec(), ended(0, "{\"n\": 1}", Some("{\"n\": 2}")));
        assert!(matches!(file_wins, Outcome::Complete(ref m) if m["n"] == 2));
        let bpmn = outcome(
            &spec(),
            ended(
                3,
                "",
                Some(r#"{"errorCode": "NO_STOCK", "errorMessage": "none left"}"#),
            ),
        );
        assert!(
            matches!(bpmn, Outcome::BpmnError { ref code, .. } if code == "NO_STOCK"),
            "{bpmn:?}"
        );
        let failed = outcome(&spec(), ended(1, "", None));
        match failed {
            Outcome::Failure(f) => {
                assert!(f.message.contains("ValueError: bad"), "{}", f.message);
                assert!(f.details.contains("Traceback"), "{}", f.details);
            }
            other => panic!("{other:?}"),
        }
        let killed = outcome(&spec(), ended(137, "", None));
        assert!(
            matches!(killed, Outcome::Failure(ref f) if f.message.contains("out of memory (limit 256 MiB)")),
            "{killed:?}"
        );
        let not_object = outcome(&spec(), ended(0, "", Some("[1]")));
        assert!(matches!(not_object, Outcome::Failure(ref f) if f.retry == Retry::Never));
    }
}
