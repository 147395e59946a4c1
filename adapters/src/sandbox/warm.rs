//! Warm containers: started ahead of their task, each waiting for the one task it will run.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::container::AttachContainerResults;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::AttachContainerOptions;
use tokio::io::AsyncWriteExt as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::outcome::outcome;
use super::run::{docker_failure, rand_suffix};
use super::{ContainerSpec, Runner, Sandbox, lock};
use crate::{Failure, Outcome, async_trait};

/// The file a namespace sandbox's task gets beside its files in `/in`, for a runner of an older
/// sandbox image, which polled for it.
pub(super) const GO_FILE: &str = "go";
/// The exit code of a warm container whose task never came (the Python runner's
/// `GAVE_UP_WAITING`).
pub(super) const GAVE_UP_WAITING: i64 = 75;

/// Started containers of one spec, each waiting for the one task it will run: a short script
/// pays for its container's start ahead of time, and still gets a container of its own. A
/// waiting container gives up after `idle` by itself (the runner's `PROCOS_WAIT_SECONDS`).
/// A run that differs from the spec (another image, or guards a task set for itself) cannot
/// use a container made for it, and runs cold.
#[derive(Debug)]
pub(crate) struct WarmPool {
    sandbox: Sandbox,
    /// The spec the containers were made for, before it was made to wait.
    made_for: ContainerSpec,
    template: ContainerSpec,
    size: usize,
    ready: Arc<Mutex<VecDeque<String>>>,
    filling: Mutex<JoinSet<()>>,
    /// How long a warm container waits for its task before it gives up.
    idle: Duration,
}

impl WarmPool {
    /// `template`'s command must wait for its task on stdin (the Python runner does when
    /// `PROCOS_WAIT_FOR_INPUT` is set, which this adds).
    pub(crate) fn new(
        sandbox: Sandbox,
        template: ContainerSpec,
        size: usize,
        idle: Duration,
    ) -> Self {
        Self {
            sandbox,
            made_for: template.clone(),
            template: waiting(template, idle),
            size,
            ready: Arc::default(),
            filling: Mutex::new(JoinSet::new()),
            idle: idle.max(Duration::from_secs(1)),
        }
    }

    fn key(&self) -> String {
        pool_key(&self.template)
    }

    /// Whether a container made for the pool can run `spec`: what a container is created with
    /// (image, command, environment, guards) cannot change once it waits.
    pub(crate) fn fits(&self, spec: &ContainerSpec) -> bool {
        fits(&self.made_for, spec)
    }

    /// Runs `spec` in a waiting container when one is ready and fits, else in a cold one; tops
    /// the pool up after taking from it.
    pub(crate) async fn run(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome {
        if !self.fits(spec) {
            return self.sandbox.run(spec, cancel).await;
        }
        self.sandbox.sweep_if_due().await;
        let warm = self.take_running().await;
        self.top_up();
        let Some(id) = warm else {
            return self.sandbox.run(spec, cancel).await;
        };
        let ended = match self.sandbox.hand_over(&id, &spec.files).await {
            Ok(attached) => self.sandbox.finish(&id, spec, Some(attached), cancel).await,
            Err(e) => Err(docker_failure(
                "hand the task to the container",
                &spec.image,
                &e,
            )),
        };
        self.sandbox.remove_later(id);
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
        self.sandbox.close().await;
    }
}

/// Whether a sandbox started for `made_for` can run `spec`: what a sandbox is started with
/// (image, command, environment, guards) cannot change once it waits.
pub(super) fn fits(made_for: &ContainerSpec, spec: &ContainerSpec) -> bool {
    spec.image == made_for.image
        && spec.command == made_for.command
        && spec.env == made_for.env
        && spec.guards == made_for.guards
        // A sandbox started ahead knows no task, so it has no instance's workspace.
        && spec.workspace.is_none()
}

/// `template` made to wait up to `idle` for its task on stdin (the Python runner does when
/// `PROCOS_WAIT_FOR_INPUT` is set): the line `go`, then the task's files for a container, which
/// the worker attaches to; the line alone for a namespace sandbox, whose `/in` the worker fills.
pub(crate) fn waiting(mut template: ContainerSpec, idle: Duration) -> ContainerSpec {
    template.env.push("PROCOS_WAIT_FOR_INPUT=stdin".to_owned());
    template
        .env
        .push(format!("PROCOS_WAIT_SECONDS={}", idle.as_secs().max(1)));
    template.files.clear();
    template.task_id = "warm".to_owned();
    template
}

/// The warm label's value: which pool a waiting container belongs to.
pub(crate) fn pool_key(template: &ContainerSpec) -> String {
    format!("{}:{}", template.topic, template.image)
}

#[async_trait]
impl Runner for WarmPool {
    async fn run(&self, spec: &ContainerSpec, cancel: &CancellationToken) -> Outcome {
        WarmPool::run(self, spec, cancel).await
    }

    async fn close(&self) {
        WarmPool::close(self).await;
    }

    async fn available(&self) -> Result<(), crate::Unavailable> {
        self.sandbox.available().await
    }
}

impl Sandbox {
    async fn is_running(&self, id: &str) -> bool {
        self.docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false)
    }

    /// Hands a waiting container its task: attached to (its stdin open, as a warm container's
    /// is), the line `go N` and the task's N files, each a line `SIZE NAME` and its bytes, on
    /// its stdin; its output from then on comes over the same attachment. Far cheaper than an
    /// archive upload into `/in`, for which the Docker engine starts a helper process.
    async fn hand_over(
        &self,
        id: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<AttachContainerResults, DockerError> {
        let mut attached = self
            .docker
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    stream: true,
                    // What it printed while it waited, as the followed logs would have it.
                    logs: true,
                    ..Default::default()
                }),
            )
            .await?;
        attached.input.write_all(&task_message(files)).await?;
        attached.input.flush().await?;
        Ok(attached)
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

/// What a waiting runner reads on its stdin as its task: `go N`, then each of the N files as a
/// line `SIZE NAME` and its bytes (`docker/python-sandbox/runner.py`).
fn task_message(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut message = format!("go {}\n", files.len()).into_bytes();
    for (name, bytes) in files {
        message.extend_from_slice(format!("{} {name}\n", bytes.len()).as_bytes());
        message.extend_from_slice(bytes);
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use procos_sandbox_contract::Guards;

    use super::*;

    fn spec(image: &str, guards: Guards) -> ContainerSpec {
        ContainerSpec {
            task_id: "t".into(),
            topic: "warm".into(),
            image: image.into(),
            command: Some(vec!["python3".into(), "/opt/procos/runner.py".into()]),
            env: Vec::new(),
            files: vec![("script.py".into(), b"outputs['x'] = 1".to_vec())],
            bpmn_error_exit_codes: BTreeMap::new(),
            guards,
            workspace: None,
        }
    }

    #[test]
    fn only_a_run_like_the_pools_takes_a_waiting_container() {
        let sandbox = Sandbox::connect(&Guards::default()).unwrap();
        let made_for = spec("procos/python-sandbox:latest", Guards::default());
        let pool = WarmPool::new(sandbox, made_for.clone(), 2, Duration::from_secs(60));
        let mut other_task = made_for.clone();
        other_task.task_id = "another".into();
        other_task.files.clear();
        assert!(pool.fits(&other_task), "another task, same container spec");
        let more_memory = Guards {
            memory_mb: 1024,
            ..Guards::default()
        };
        assert!(!pool.fits(&spec("procos/python-sandbox:latest", more_memory)));
        let longer = Guards {
            timeout: Duration::from_secs(600),
            ..Guards::default()
        };
        assert!(!pool.fits(&spec("procos/python-sandbox:latest", longer)));
        assert!(!pool.fits(&spec("procos/python-sandbox:other", Guards::default())));
    }
}
