//! `python`: runs a Python script in ProcOS's Python sandbox image (`docker/python-sandbox`),
//! one locked-down container per task. The script reads `inputs` and fills `outputs`; raising
//! `BpmnError(code, message)` ends the task with a BPMN error; any other exception fails it with
//! the traceback as the incident's details.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::sandbox::{ContainerSpec, Guards, ImageAllowlist, Sandbox};
use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, async_trait};

/// The runner's exit code for a `BpmnError` (see `docker/python-sandbox/runner.py`).
const BPMN_ERROR_EXIT: i64 = 3;

/// `[topics.NAME.settings]` for `python`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PythonSettings {
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
    /// The container's guards.
    #[serde(default)]
    sandbox: Guards,
}

fn default_scripts_dir() -> PathBuf {
    PathBuf::from("scripts")
}

fn default_image() -> String {
    "procos/python-sandbox:latest".to_owned()
}

#[derive(Debug)]
pub(crate) struct PythonAdapter {
    settings: PythonSettings,
    sandbox: Sandbox,
}

impl PythonAdapter {
    pub(crate) fn new(
        settings: PythonSettings,
        allowlist: &ImageAllowlist,
    ) -> Result<Self, String> {
        if !allowlist.allows(&settings.image) {
            return Err(allowlist.refusal(&settings.image).message);
        }
        if let Some(name) = &settings.script
            && (name.contains('/') || name.contains(".."))
        {
            return Err(format!(
                "script `{name}` must be a file name inside scripts_dir, not a path"
            ));
        }
        let sandbox = Sandbox::connect(&settings.sandbox)?;
        Ok(Self { settings, sandbox })
    }

    pub(crate) fn relaxed_guards(&self) -> Vec<&'static str> {
        self.settings.sandbox.relaxed()
    }

    /// The script's source and a name for messages.
    async fn script(&self, task: &AdapterTask) -> Result<(String, String), Failure> {
        if let Some(Value::String(source)) = task.inputs.get("script") {
            return Ok(("the model's `script` input".to_owned(), source.clone()));
        }
        let Some(name) = &self.settings.script else {
            return Err(Failure::new(
                "no script to run",
                "Give the task an input `script` with the source (an input parameter in Camunda Modeler), or set `script` in the topic's settings to a file in scripts_dir.",
                Retry::Never,
            ));
        };
        let path = self.settings.scripts_dir.join(name);
        match tokio::fs::read_to_string(&path).await {
            Ok(source) => Ok((name.clone(), source)),
            Err(e) => Err(Failure::new(
                format!("cannot read the script {}: {e}", path.display()),
                format!(
                    "The topic's settings name the script `{name}` in scripts_dir {}.",
                    self.settings.scripts_dir.display()
                ),
                Retry::Later,
            )),
        }
    }
}

#[async_trait]
impl Adapter for PythonAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let (script_name, source) = match self.script(&task).await {
            Ok(script) => script,
            Err(failure) => return Outcome::Failure(failure),
        };
        let mut inputs = task.inputs;
        inputs.remove("script");
        let input = serde_json::to_vec(&Value::Object(inputs)).unwrap_or_default();
        let spec = ContainerSpec {
            task_id: task.task_id,
            topic: task.topic,
            image: self.settings.image.clone(),
            command: Some(vec![
                "python3".to_owned(),
                "/opt/procos/runner.py".to_owned(),
            ]),
            env: vec![format!("PROCOS_SCRIPT_NAME={script_name}")],
            files: vec![
                ("input.json".to_owned(), input),
                ("script.py".to_owned(), source.into_bytes()),
            ],
            bpmn_error_exit_codes: BTreeMap::from([(BPMN_ERROR_EXIT, String::new())]),
            guards: self.settings.sandbox.clone(),
        };
        self.sandbox.run(&spec, &cancel).await
    }
}
