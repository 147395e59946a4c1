//! `python`: runs a Python script in ProcOS's Python sandbox image (`docker/python-sandbox`),
//! one locked-down container per task. The script reads `inputs` and fills `outputs`; raising
//! `BpmnError(code, message)` ends the task with a BPMN error; any other exception fails it with
//! the traceback as the incident's details.
//!
//! Per-task settings (the step's `procos.*` extension properties and input parameters):
//! `procos.script` (the source), `procos.image` (within the worker's allowed images), and
//! `procos.timeout`, `procos.memory_mb`, `procos.cpus` (within the topic's `limits`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{
    self, ContainerSpec, Limits, Runner, check_script_name, image_refusal, script_source,
};
use crate::workspace::{Workspaces, wants_workspace};
use crate::{
    Adapter, AdapterTask, BuildContext, Failure, Guards, ImageAllowlist, Outcome, TaskSettings,
    async_trait,
};

/// The runner's exit code for a `BpmnError` (see `docker/python-sandbox/runner.py`).
const BPMN_ERROR_EXIT: i64 = 3;

/// `[topics.NAME.settings]` for `python`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonConfig {
    /// A script file in `scripts_dir`, used when the task has no `procos.script` (the step's
    /// extension property or input parameter holding the source).
    #[serde(default)]
    script: Option<String>,
    /// Where `script` files are looked up (read at each run, so edits apply at once).
    #[serde(default = "default_scripts_dir")]
    scripts_dir: PathBuf,
    /// The sandbox image; a task's `procos.image` replaces it (within the worker's allowed
    /// images).
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
    /// The container's guards; a task's `procos.timeout`, `procos.memory_mb` and `procos.cpus`
    /// replace the first three, within `limits`.
    #[serde(default)]
    sandbox: Guards,
    /// The most a task may ask for.
    #[serde(default)]
    limits: Limits,
}

/// The per-task settings `python` reads (beside the worker's own).
const TASK_SETTINGS: &[&str] = &[
    "script",
    "image",
    "timeout",
    "memory_mb",
    "cpus",
    "workspace",
];

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
    /// The images a task may name (`[worker] allowed_images`).
    allowlist: ImageAllowlist,
    /// Cold runs, or a warm pool in front of them.
    runner: Box<dyn Runner>,
    /// The instances' workspaces, for steps with `procos.workspace`.
    workspaces: Workspaces,
}

impl PythonAdapter {
    pub(crate) fn new(
        settings: PythonConfig,
        topic: &str,
        context: &BuildContext,
    ) -> Result<Self, String> {
        let allowlist = &context.allowed_images;
        if !allowlist.allows(&settings.image) {
            return Err(image_refusal(allowlist, &settings.image).message);
        }
        check_script_name(settings.script.as_deref())?;
        settings.limits.check(&settings.sandbox)?;
        let template = container_spec(
            topic,
            &settings.image,
            &settings.sandbox,
            Vec::new(),
            String::new(),
        );
        let runner = sandbox::runner(
            &settings.sandbox,
            context.rootfs_dir(),
            Some((template, settings.warm, settings.warm_idle)),
        )?;
        Ok(Self {
            settings,
            allowlist: allowlist.clone(),
            runner,
            workspaces: context.workspaces.clone(),
        })
    }

    pub(crate) fn relaxed_guards(&self) -> Vec<&'static str> {
        self.settings.sandbox.relaxed()
    }

    /// The container `task` runs in, or why it cannot run.
    pub(crate) async fn container_spec(&self, task: AdapterTask) -> Result<ContainerSpec, Failure> {
        let guards = self
            .settings
            .limits
            .guards_for(&self.settings.sandbox, &task.settings)?;
        let image = self.image(&task.settings)?;
        let (script_name, source) = script_source(
            &task.settings,
            self.settings.script.as_deref(),
            &self.settings.scripts_dir,
        )
        .await?;
        let input = serde_json::to_vec(&Value::Object(task.inputs)).unwrap_or_default();
        let files = vec![
            ("input.json".to_owned(), input),
            ("script.py".to_owned(), source.into_bytes()),
            // The runner reads the name from here: a warm container's environment was fixed
            // before the task was known.
            ("script-name".to_owned(), script_name.into_bytes()),
        ];
        // A file too, not the environment, for the same reason: the runner sets TRACEPARENT
        // from it before the script runs.
        let files = files
            .into_iter()
            .chain(
                task.traceparent
                    .map(|traceparent| ("traceparent".to_owned(), traceparent.into_bytes())),
            )
            .collect();
        Ok(container_spec(
            &task.topic,
            &image,
            &guards,
            files,
            task.task_id,
        ))
    }

    /// The task's `procos.image` if it sets one (and the worker allows it), else the topic's.
    fn image(&self, settings: &TaskSettings) -> Result<String, Failure> {
        match settings.text("image")? {
            Some(image) if !image.trim().is_empty() => {
                let image = image.trim();
                if !self.allowlist.allows(image) {
                    return Err(image_refusal(&self.allowlist, image));
                }
                Ok(image.to_owned())
            }
            _ => Ok(self.settings.image.clone()),
        }
    }
}

#[async_trait]
impl Adapter for PythonAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let workspace = match self.workspaces.for_sandbox(&task).await {
            Ok(workspace) => workspace,
            Err(failure) => return Outcome::Failure(failure),
        };
        match self.container_spec(task).await {
            Ok(spec) => {
                let spec = ContainerSpec { workspace, ..spec };
                self.runner.run(&spec, &cancel).await
            }
            Err(failure) => Outcome::Failure(failure),
        }
    }

    fn uses_workspace(&self, settings: &TaskSettings) -> bool {
        wants_workspace(settings).unwrap_or(false)
    }

    fn task_settings(&self) -> &'static [&'static str] {
        TASK_SETTINGS
    }

    async fn close(&self) {
        self.runner.close().await;
    }

    async fn available(&self) -> Result<(), crate::Unavailable> {
        self.runner.available().await
    }
}

fn container_spec(
    topic: &str,
    image: &str,
    guards: &Guards,
    files: Vec<(String, Vec<u8>)>,
    task_id: String,
) -> ContainerSpec {
    ContainerSpec {
        task_id,
        topic: topic.to_owned(),
        image: image.to_owned(),
        command: Some(vec![
            "python3".to_owned(),
            "/opt/procos/runner.py".to_owned(),
        ]),
        env: Vec::new(),
        files,
        bpmn_error_exit_codes: BTreeMap::from([(BPMN_ERROR_EXIT, String::new())]),
        guards: guards.clone(),
        workspace: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::Retry;

    fn adapter(settings: Value) -> Result<PythonAdapter, String> {
        let config: PythonConfig = serde_json::from_value(settings).unwrap();
        PythonAdapter::new(
            config,
            "py",
            &BuildContext {
                allowed_images: ImageAllowlist::new(["procos/*".to_owned()]),
                ..BuildContext::default()
            },
        )
    }

    fn task(inputs: Value, settings: Value) -> AdapterTask {
        AdapterTask {
            traceparent: None,
            task_id: "task-1".into(),
            topic: "py".into(),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
            settings: TaskSettings::from_pairs(settings.as_object().cloned().unwrap_or_default()),
            root_process_instance_id: None,
        }
    }

    fn file<'a>(spec: &'a ContainerSpec, name: &str) -> &'a [u8] {
        &spec.files.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[tokio::test]
    async fn a_task_sets_its_script_image_and_guards() {
        let python = adapter(json!({"warm": 0})).unwrap();
        let spec = python
            .container_spec(task(
                json!({"n": 1}),
                json!({
                    "script": "outputs['n'] = inputs['n']", "image": "procos/python-sandbox:3",
                    "timeout": "90s", "memory_mb": "512", "cpus": 0.5,
                }),
            ))
            .await
            .unwrap();
        assert_eq!(file(&spec, "script.py"), b"outputs['n'] = inputs['n']");
        assert_eq!(file(&spec, "script-name"), b"procos.script");
        assert_eq!(file(&spec, "input.json"), br#"{"n":1}"#);
        assert_eq!(spec.image, "procos/python-sandbox:3");
        assert_eq!(spec.guards.timeout, Duration::from_secs(90));
        assert_eq!(spec.guards.memory_mb, 512);
        assert_eq!(spec.guards.cpus, 0.5);
        let plain = python
            .container_spec(task(json!({}), json!({"script": "pass"})))
            .await
            .unwrap();
        assert_eq!(plain.image, "procos/python-sandbox:latest");
        assert_eq!(plain.guards, Guards::default());
    }

    #[tokio::test]
    async fn a_variable_named_script_is_an_input_not_the_script() {
        let python = adapter(json!({"warm": 0})).unwrap();
        let failure = python
            .container_spec(task(json!({"script": "import os"}), json!({})))
            .await
            .unwrap_err();
        assert_eq!(failure.message, "no script to run");
        let spec = python
            .container_spec(task(json!({"script": "x"}), json!({"script": "pass"})))
            .await
            .unwrap();
        assert_eq!(file(&spec, "script.py"), b"pass");
        assert_eq!(file(&spec, "input.json"), br#"{"script":"x"}"#);
    }

    #[tokio::test]
    async fn a_task_asking_for_more_than_the_topic_allows_fails_at_once() {
        let python = adapter(json!({"warm": 0, "limits": {"max_memory_mb": 1024}})).unwrap();
        let failure = python
            .container_spec(task(
                json!({}),
                json!({"script": "pass", "memory_mb": 10240}),
            ))
            .await
            .unwrap_err();
        assert_eq!(failure.retry, Retry::Never);
        assert!(
            failure.message.contains("procos.memory_mb = 10240")
                && failure.message.contains("limits.max_memory_mb = 1024"),
            "{}",
            failure.message
        );
        let refused = python
            .container_spec(task(
                json!({}),
                json!({"script": "pass", "image": "evil/miner:1"}),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.retry, Retry::Never);
        assert!(
            refused.message.contains("`evil/miner:1`"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn a_topic_whose_guards_pass_its_limits_does_not_build() {
        let refused =
            adapter(json!({"sandbox": {"memory_mb": 4096}, "limits": {"max_memory_mb": 2048}}))
                .unwrap_err();
        assert!(refused.contains("limits.max_memory_mb"), "{refused}");
        let unknown: Result<PythonConfig, _> =
            serde_json::from_value(json!({"limits": {"max_cpu": 2}}));
        assert!(unknown.is_err(), "unknown ceilings are refused");
    }

    #[test]
    fn the_adapter_names_its_task_settings() {
        let python = adapter(json!({"warm": 0})).unwrap();
        assert_eq!(
            python.task_settings(),
            [
                "script",
                "image",
                "timeout",
                "memory_mb",
                "cpus",
                "workspace"
            ]
        );
    }
}
