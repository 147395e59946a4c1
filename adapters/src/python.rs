//! `python`: runs a Python script in ProcOS's Python sandbox image (`docker/python-sandbox`),
//! one locked-down container per task. The script reads `inputs` and fills `outputs`; raising
//! `BpmnError(code, message)` ends the task with a BPMN error; any other exception fails it with
//! the traceback as the incident's details.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{
    ContainerSpec, Runner, Sandbox, WarmPool, check_script_name, image_refusal, script_source,
};
use crate::{Adapter, AdapterTask, Failure, Guards, ImageAllowlist, Outcome, async_trait};

/// The runner's exit code for a `BpmnError` (see `docker/python-sandbox/runner.py`).
const BPMN_ERROR_EXIT: i64 = 3;

/// `[topics.NAME.settings]` for `python`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonConfig {
    /// A script file in `scripts_dir`, used when the task has no input `script` (the model's
    /// input parameter holding the source).
    #[serde(default)]
    script: Option<String>,
    /// Where `script` files are looked up (read at each run, so edits apply at once).
    #[serde(default = "default_scripts_dir")]
    scripts_dir: PathBuf,
    /// The sandbox image.
    #[serde(default = "default_image")]
    image: String,
    /// Containers kept started and waiting, so a task does not wait for one to start (0: none).
    /// Each still runs one task only.
    #[serde(default = "default_warm")]
    warm: usize,
    /// How long a waiting container waits for a task before it gives up (it is replaced when
    /// a task needs one).
    #[serde(default = "default_warm_idle", with = "humantime_serde")]
    warm_idle: Duration,
    /// The container's guards.
    #[serde(default)]
    sandbox: Guards,
}

fn default_warm() -> usize {
    2
}

fn default_warm_idle() -> Duration {
    Duration::from_secs(600)
}

fn default_scripts_dir() -> PathBuf {
    PathBuf::from("scripts")
}

fn default_image() -> String {
    "procos/python-sandbox:latest".to_owned()
}

#[derive(Debug)]
pub(crate) struct PythonAdapter {
    settings: PythonConfig,
    /// Cold runs, or a warm pool in front of them.
    runner: Box<dyn Runner>,
}

impl PythonAdapter {
    pub(crate) fn new(
        settings: PythonConfig,
        topic: &str,
        allowlist: &ImageAllowlist,
    ) -> Result<Self, String> {
        if !allowlist.allows(&settings.image) {
            return Err(image_refusal(allowlist, &settings.image).message);
        }
        check_script_name(settings.script.as_deref())?;
        let sandbox = Sandbox::connect(&settings.sandbox)?;
        let runner: Box<dyn Runner> = if settings.warm > 0 {
            Box::new(WarmPool::new(
                sandbox,
                container_spec(&settings, topic, Vec::new(), String::new()),
                settings.warm,
                settings.warm_idle,
            ))
        } else {
            Box::new(sandbox)
        };
        Ok(Self { settings, runner })
    }

    pub(crate) fn relaxed_guards(&self) -> Vec<&'static str> {
        self.settings.sandbox.relaxed()
    }

    /// The container `task` runs in, or why it cannot run.
    pub(crate) async fn container_spec(&self, task: AdapterTask) -> Result<ContainerSpec, Failure> {
        let (script_name, source) = script_source(
            &task.inputs,
            self.settings.script.as_deref(),
            &self.settings.scripts_dir,
        )
        .await?;
        let mut inputs = task.inputs;
        inputs.remove("script");
        let input = serde_json::to_vec(&Value::Object(inputs)).unwrap_or_default();
        let files = vec![
            ("input.json".to_owned(), input),
            ("script.py".to_owned(), source.into_bytes()),
            // The runner reads the name from here: a warm container's environment was fixed
            // before the task was known.
            ("script-name".to_owned(), script_name.into_bytes()),
        ];
        Ok(container_spec(
            &self.settings,
            &task.topic,
            files,
            task.task_id,
        ))
    }
}

#[async_trait]
impl Adapter for PythonAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        match self.container_spec(task).await {
            Ok(spec) => self.runner.run(&spec, &cancel).await,
            Err(failure) => Outcome::Failure(failure),
        }
    }

    async fn close(&self) {
        self.runner.close().await;
    }
}

fn container_spec(
    settings: &PythonConfig,
    topic: &str,
    files: Vec<(String, Vec<u8>)>,
    task_id: String,
) -> ContainerSpec {
    ContainerSpec {
        task_id,
        topic: topic.to_owned(),
        image: settings.image.clone(),
        command: Some(vec![
            "python3".to_owned(),
            "/opt/procos/runner.py".to_owned(),
        ]),
        env: Vec::new(),
        files,
        bpmn_error_exit_codes: BTreeMap::from([(BPMN_ERROR_EXIT, String::new())]),
        guards: settings.sandbox.clone(),
    }
}
