//! One task's container on Docker, from create to remove. Inputs are uploaded as files into
//! `/in` before the container starts (a warm container, started ahead, gets them on its stdin
//! instead: `warm.rs`); outputs are read from `/out/output.json` after it ends (or
//! from the last stdout line when that is JSON). Both are anonymous volumes, so the root
//! filesystem can stay read-only and nothing outlives the task: the container and its volumes
//! are removed on every path, including timeouts, cancellation and Docker errors.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, DownloadFromContainerOptions, KillContainerOptions,
    LogsOptions, RemoveContainerOptions, UploadToContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt as _;
use procos_sandbox_contract::{Guards, docker};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::outcome::{
    Ended, Printed, one_line, outcome, printed_too_much, runner_exit_code, take_runner_lines,
    too_large,
};

/// How long the followed logs may take to end after their container did.
const LOG_DRAIN: Duration = Duration::from_secs(5);
/// How many times, a second apart, closing tries to remove the containers whose removal failed.
const CLOSE_RETRIES: u32 = 10;
use super::{ContainerSpec, Runner, lock};
use crate::{Failure, Outcome, Retry, async_trait};

/// A container's stdout and stderr as they come, from its followed logs or an attachment.
type Output =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, DockerError>> + Send>>;

/// The Docker engine the sandboxes run on.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub(super) docker: Docker,
    /// When this sandbox last looked for containers that dead workers left behind.
    pub(super) last_sweep: Arc<Mutex<Option<Instant>>>,
    /// Removals of finished tasks' containers, made after the outcome is handed back so that
    /// the task's completion does not wait for them; [`Sandbox::close`] waits for them.
    removals: Arc<Mutex<JoinSet<()>>>,
    /// Containers whose removal failed because the Docker engine could not be reached (it was
    /// restarting, say), by id, or by name for a creation whose answer never came (the engine
    /// may have made the container all the same): removed again at the next chance, and at
    /// [`Sandbox::close`].
    unremoved: Arc<Mutex<BTreeSet<String>>>,
    /// Why the Docker engine could not be used when the sandbox was made (no socket at
    /// `DOCKER_HOST`): the adapter still builds, so the worker starts, and reports its topic
    /// unavailable instead of fetching it.
    unusable: Option<String>,
}

impl Sandbox {
    /// Connects (lazily) to the local Docker engine, or the one `DOCKER_HOST` names.
    pub(crate) fn connect(guards: &Guards) -> Result<Self, String> {
        guards.check()?;
        let (docker, unusable) = match Docker::connect_with_defaults() {
            Ok(docker) => (docker, None),
            // A client that reaches nothing stands in; `available` reports why, so the topic
            // is never fetched with it.
            Err(e) => match Docker::connect_with_http(
                "http://127.0.0.1:9",
                4,
                bollard::API_DEFAULT_VERSION,
            ) {
                Ok(nowhere) => (nowhere, Some(e.to_string())),
                Err(_) => return Err(format!("cannot use the Docker engine: {e}")),
            },
        };
        Ok(Self {
            docker,
            last_sweep: Arc::default(),
            removals: Arc::default(),
            unremoved: Arc::default(),
            unusable,
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
        self.remove_later(id);
        match ended {
            Ok(ended) => outcome(spec, ended),
            Err(failure) => Outcome::Failure(failure),
        }
    }

    pub(super) async fn ensure_image(&self, image: &str) -> Result<(), Failure> {
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

    /// Creates the container the contract renders for `spec`; `warm` is the pool's key and the
    /// longest the container waits for its task.
    pub(super) async fn create_labelled(
        &self,
        spec: &ContainerSpec,
        warm: Option<(&str, Duration)>,
    ) -> Result<String, DockerError> {
        let body = docker::create_body(&spec.sandbox_spec(warm));
        let name = format!("procos-task-{}", sanitize(&spec.task_id));
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await;
        match created {
            Ok(created) => Ok(created.id),
            // The engine refused it: there is no container.
            Err(e @ DockerError::DockerResponseServerError { .. }) => Err(e),
            // No answer: the container may exist all the same, under its name.
            Err(e) => {
                lock(&self.unremoved).insert(name);
                Err(e)
            }
        }
    }

    /// Uploads the inputs, starts, and finishes.
    pub(super) async fn drive(
        &self,
        id: &str,
        spec: &ContainerSpec,
        cancel: &CancellationToken,
    ) -> Result<Ended, Failure> {
        self.upload(id, "/in", &spec.files)
            .await
            .map_err(|e| docker_failure("hand the inputs to the container", &spec.image, &e))?;
        self.prepare_and_start(id, &spec.image).await?;
        self.finish(id, spec, None, cancel).await
    }

    /// Makes `/out/output.json` writable for the command and starts the container.
    pub(super) async fn prepare_and_start(&self, id: &str, image: &str) -> Result<(), Failure> {
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
    /// exit status, logs and the output file. `attached` is an attachment already made, whose
    /// output is read; without one the container's logs are followed.
    pub(super) async fn finish(
        &self,
        id: &str,
        spec: &ContainerSpec,
        attached: Option<AttachContainerResults>,
        cancel: &CancellationToken,
    ) -> Result<Ended, Failure> {
        let failed = |what: &str, e: DockerError| docker_failure(what, &spec.image, &e);
        let mut wait = self.docker.wait_container(id, None::<WaitContainerOptions>);
        // Followed while the container runs: its tails are at hand when it ends, and a command
        // that prints without end is stopped at sandbox.max_printed_mb instead of filling the engine's
        // log files.
        // An attachment's stdin stays open until the end: the engine ends the attachment's
        // output when its stdin closes.
        let (mut logs, stdin): (Output, _) = match attached {
            Some(AttachContainerResults { output, input }) => (output, Some(input)),
            None => (
                Box::pin(self.docker.logs(
                    id,
                    Some(LogsOptions {
                        follow: true,
                        stdout: true,
                        stderr: true,
                        ..Default::default()
                    }),
                )),
                None,
            ),
        };
        // Let go of an attachment before a kill: the engine counts the container stopped only
        // once its output is taken, and nobody would take it while the kill is awaited.
        let release = |logs: Output, stdin| drop((logs, stdin));
        let mut printed = Printed::default();
        // Some(true): the followed stream ended with the container; Some(false): it broke off,
        // so the logs are read again once the container has ended.
        let mut logs_ended: Option<bool> = None;
        // The exit code on the Python runner's end line: the outcome is settled, and the
        // container's exit is not waited for (it is removed after the outcome went back).
        let mut runner_end: Option<i64> = None;
        let limit = spec.guards.timeout;
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // A non-zero exit arrives as an error here; the exit code is read below.
                _ = wait.next() => break,
                chunk = logs.next(), if logs_ended.is_none() => match chunk {
                    Some(Ok(output)) => {
                        printed.push(&output);
                        if printed.too_much(&spec.guards) {
                            release(logs, stdin);
                            self.kill(id).await;
                            return Err(printed_too_much(spec, &printed.stderr));
                        }
                        runner_end = runner_exit_code(&printed.stdout);
                        if runner_end.is_some() {
                            break;
                        }
                    }
                    Some(Err(_)) => logs_ended = Some(false),
                    None => logs_ended = Some(true),
                },
                () = &mut deadline => {
                    release(logs, stdin);
                    self.kill(id).await;
                    return Err(Failure::new(
                        format!("the container timed out after {}; it was killed", humantime::format_duration(limit)),
                        format!(
                            "`{}` ran longer than sandbox.timeout ({}). Raise the timeout if the work needs longer, or look for an endless loop. The end of its stderr:\n{}",
                            spec.image,
                            humantime::format_duration(limit),
                            String::from_utf8_lossy(&printed.stderr)
                        ),
                        Retry::Later,
                    ));
                }
                () = cancel.cancelled() => {
                    release(logs, stdin);
                    self.kill(id).await;
                    return Err(Failure::new("cancelled", "The worker cancelled the run (shutdown, or the lock was lost).", Retry::Later));
                }
            }
        }
        let (exit_code, oom_killed) = match runner_end {
            Some(code) => (code, false),
            None => {
                // The rest of the output: the followed stream ends shortly after the container.
                while logs_ended.is_none() {
                    match tokio::time::timeout(LOG_DRAIN, logs.next()).await {
                        Ok(Some(Ok(output))) => printed.push(&output),
                        Ok(None) => logs_ended = Some(true),
                        Ok(Some(Err(_))) | Err(_) => logs_ended = Some(false),
                    }
                }
                if printed.too_much(&spec.guards) {
                    return Err(printed_too_much(spec, &printed.stderr));
                }
                if logs_ended == Some(false) {
                    printed = self
                        .logs(id)
                        .await
                        .map_err(|e| failed("read the finished container's output", e))?;
                }
                let state = self
                    .docker
                    .inspect_container(id, None)
                    .await
                    .map_err(|e| failed("inspect the finished container", e))?
                    .state
                    .unwrap_or_default();
                (
                    state.exit_code.unwrap_or(-1),
                    state.oom_killed.unwrap_or(false),
                )
            }
        };
        let (mut stdout, stderr) = printed.into_text();
        let limit = spec.guards.max_output_kb * 1024;
        // The Python runner prints a small output document; the file is fetched otherwise.
        let output_file = match take_runner_lines(&mut stdout, limit)? {
            Some(document) => Some(document),
            None => self.download(id, "/out/output.json", limit).await?,
        };
        Ok(Ended {
            exit_code,
            oom_killed,
            stdout,
            stderr,
            output_file,
        })
    }

    pub(super) async fn upload(
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
    pub(super) async fn download(
        &self,
        id: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, Failure> {
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
    pub(super) async fn logs(&self, id: &str) -> Result<Printed, DockerError> {
        let mut stream = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut printed = Printed::default();
        while let Some(chunk) = stream.next().await {
            printed.push(&chunk?);
        }
        Ok(printed)
    }

    pub(super) async fn kill(&self, id: &str) {
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

    /// Removes the container after the caller has gone on: the task's outcome does not wait
    /// for it. A worker that dies first leaves it to the next sweep.
    pub(super) fn remove_later(&self, id: String) {
        let sandbox = self.clone();
        let mut removals = lock(&self.removals);
        while removals.try_join_next().is_some() {}
        removals.spawn(async move { sandbox.remove(&id).await });
    }

    /// Waits for the removals still under way, then removes what could not be removed before;
    /// a Docker engine that is restarting gets [`CLOSE_RETRIES`] seconds to come back.
    pub(crate) async fn close(&self) {
        let mut removals = std::mem::take(&mut *lock(&self.removals));
        while removals.join_next().await.is_some() {}
        for _ in 0..CLOSE_RETRIES {
            self.remove_unremoved().await;
            if lock(&self.unremoved).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let left: Vec<String> = lock(&self.unremoved).iter().cloned().collect();
        tracing::warn!(
            containers = ?left,
            "the Docker engine could not be reached to remove these containers; other workers' sweeps remove them once past their deadline"
        );
    }

    /// Removes the container (force: a running one is killed). One the Docker engine does not
    /// answer for is removed again later.
    pub(super) async fn remove(&self, id: &str) {
        if !self.try_remove(id).await {
            tracing::warn!(
                container = id,
                "could not remove the task's container; trying again later"
            );
            lock(&self.unremoved).insert(id.to_owned());
        }
    }

    /// Tries again to remove the containers whose removal failed.
    pub(super) async fn remove_unremoved(&self) {
        let pending: Vec<String> = lock(&self.unremoved).iter().cloned().collect();
        for id in pending {
            if self.try_remove(&id).await {
                lock(&self.unremoved).remove(&id);
            }
        }
    }

    /// Whether the container is gone: removed now, never made, or being removed already.
    async fn try_remove(&self, id: &str) -> bool {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => true,
            Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => true,
            Err(e) => {
                tracing::debug!(container = id, error = %e, "the container's removal failed");
                false
            }
        }
    }
}

#[async_trait]
impl Runner for Sandbox {
    async fn run(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome {
        Sandbox::run(self, spec, cancel).await
    }

    async fn close(&self) {
        Sandbox::close(self).await;
    }

    async fn available(&self) -> Result<(), crate::Unavailable> {
        Sandbox::available(self).await
    }
}

impl Sandbox {
    /// Pings the Docker engine, briefly: a worker must not hang on a socket that never answers.
    pub(crate) async fn available(&self) -> Result<(), crate::Unavailable> {
        // Asked every 30 s by the worker: the chance to remove what could not be removed while
        // the Docker engine was away, even when no task comes.
        let result = self.ping().await;
        if result.is_ok() {
            self.remove_unremoved().await;
        }
        result
    }

    async fn ping(&self) -> Result<(), crate::Unavailable> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let reason = |why: String| {
            crate::Unavailable {
            reason: format!("the Docker engine at {host} does not answer: {why}"),
            fix: "start Docker (scripts/docker-engine.sh installs and starts one), or point DOCKER_HOST at a running engine".to_owned(),
        }
        };
        if let Some(why) = &self.unusable {
            return Err(crate::Unavailable {
                reason: format!("the Docker engine at {host} cannot be used: {why}"),
                fix: "start Docker (scripts/docker-engine.sh installs and starts one), or point DOCKER_HOST at a running engine, then restart the worker".to_owned(),
            });
        }
        match tokio::time::timeout(Duration::from_secs(3), self.docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(reason(e.to_string())),
            Err(_) => Err(reason("no answer within 3 s".to_owned())),
        }
    }
}

pub(super) fn sanitize(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect::<String>()
        + &format!("-{:06x}", rand_suffix())
}

pub(super) fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() & 0xff_ffff)
}

pub(super) fn docker_failure(what: &str, image: &str, e: &DockerError) -> Failure {
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
