//! `docker`: runs a topic's image in a locked-down container per task (the sandbox contract
//! holds the guards; `sandbox/` runs it). Inputs arrive as `/in/input.json` and, where configured, as environment variables;
//! outputs come from `/out/output.json` or the last stdout line.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::inputs::json_input;
use crate::sandbox::{ContainerSpec, Runner, Sandbox, image_refusal};
use crate::{Adapter, AdapterTask, Failure, Guards, ImageAllowlist, Outcome, Retry, async_trait};

/// `[topics.NAME.settings]` for `docker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The image to run; when absent, the task's input `image` names it.
    #[serde(default)]
    image: Option<String>,
    /// The command; when absent, the task's input `command` (a list of strings), else the
    /// image's own.
    #[serde(default)]
    command: Option<Vec<String>>,
    /// Fixed environment variables.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Inputs also handed over as environment variables (strings as they are, other values as
    /// JSON).
    #[serde(default)]
    env_from_inputs: Vec<String>,
    /// Exit codes that mean a business error, with the BPMN error code; an empty code takes
    /// `errorCode` from the output (`{"errorCode", "errorMessage", "outputs"}`).
    #[serde(default)]
    bpmn_error_exit_codes: BTreeMap<String, String>,
    /// The container's guards.
    #[serde(default)]
    sandbox: Guards,
}

#[derive(Debug)]
pub(crate) struct DockerAdapter {
    settings: DockerConfig,
    exit_codes: BTreeMap<i64, String>,
    allowlist: ImageAllowlist,
    sandbox: Box<dyn Runner>,
}

impl DockerAdapter {
    pub(crate) fn new(settings: DockerConfig, allowlist: ImageAllowlist) -> Result<Self, String> {
        if let Some(image) = &settings.image
            && !allowlist.allows(image)
        {
            return Err(image_refusal(&allowlist, image).message);
        }
        let exit_codes = settings
            .bpmn_error_exit_codes
            .iter()
            .map(|(code, error)| {
                code.parse::<i64>()
                    .ok()
                    .filter(|c| *c != 0)
                    .map(|c| (c, error.clone()))
                    .ok_or_else(|| {
                        format!("bpmn_error_exit_codes: `{code}` is not a non-zero exit code")
                    })
            })
            .collect::<Result<_, _>>()?;
        let sandbox = Box::new(Sandbox::connect(&settings.sandbox)?);
        Ok(Self {
            settings,
            exit_codes,
            allowlist,
            sandbox,
        })
    }

    pub(crate) fn relaxed_guards(&self) -> Vec<&'static str> {
        self.settings.sandbox.relaxed()
    }
}

#[async_trait]
impl Adapter for DockerAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        match self.container_spec(task) {
            Ok(spec) => self.sandbox.run(&spec, &cancel).await,
            Err(failure) => Outcome::Failure(failure),
        }
    }
}

impl DockerAdapter {
    /// The container `task` runs in, or why it cannot run.
    pub(crate) fn container_spec(&self, task: AdapterTask) -> Result<ContainerSpec, Failure> {
        let image = match (&self.settings.image, task.inputs.get("image")) {
            (Some(image), _) => image.clone(),
            (None, Some(Value::String(image))) => image.clone(),
            _ => {
                return Err(Failure::new(
                    "no image to run",
                    "Set `image` in the topic's settings, or give the task an input variable `image`.",
                    Retry::Never,
                ));
            }
        };
        if !self.allowlist.allows(&image) {
            return Err(image_refusal(&self.allowlist, &image));
        }
        let command = match (&self.settings.command, json_input(&task.inputs, "command")) {
            (Some(command), _) => Some(command.clone()),
            (None, Some(value)) => match serde_json::from_value::<Vec<String>>(value.clone()) {
                Ok(command) => Some(command),
                Err(_) => {
                    return Err(Failure::new(
                        "the input `command` is not a list of strings",
                        format!(
                            "Give it as a JSON list, e.g. [\"python3\", \"-c\", \"print(1)\"]; got {value}"
                        ),
                        Retry::Never,
                    ));
                }
            },
            (None, None) => None,
        };
        let mut env: Vec<String> = self
            .settings
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for name in &self.settings.env_from_inputs {
            if let Some(value) = task.inputs.get(name) {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                env.push(format!("{name}={text}"));
            }
        }
        let input = serde_json::to_vec(&Value::Object(task.inputs)).unwrap_or_default();
        Ok(ContainerSpec {
            task_id: task.task_id,
            topic: task.topic,
            image,
            command,
            env,
            files: vec![("input.json".to_owned(), input)],
            bpmn_error_exit_codes: self.exit_codes.clone(),
            guards: self.settings.sandbox.clone(),
        })
    }
}
