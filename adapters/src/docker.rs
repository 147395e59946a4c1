//! `docker`: runs an image in a locked-down container per task (the sandbox contract holds the
//! guards; `sandbox/` runs it). Inputs arrive as `/in/input.json` and, where configured, as
//! environment variables; outputs come from `/out/output.json` or the last stdout line.
//!
//! Per-task settings (the step's `procos.*` extension properties and input parameters):
//! `procos.image` (within the worker's allowed images), `procos.command`,
//! `procos.error_exit_codes`, and `procos.timeout`, `procos.memory_mb`, `procos.cpus` (within the
//! topic's `limits`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::SETTING_PREFIX as PREFIX;
use crate::sandbox::{self, ContainerSpec, Limits, Runner, image_refusal, trace_env};
use crate::workspace::{Workspaces, wants_workspace};
use crate::{
    Adapter, AdapterTask, BuildContext, Failure, Guards, ImageAllowlist, Outcome, Retry,
    TaskSettings, async_trait,
};

/// `[topics.NAME.settings]` for `docker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The image to run, unless the task's `procos.image` names one (either must be in the
    /// worker's allowed images).
    #[serde(default)]
    image: Option<String>,
    /// The command, unless the task's `procos.command` gives one (a list of strings); when
    /// neither does, the image's own.
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
    /// `errorCode` from the output (`{"errorCode", "errorMessage", "outputs"}`). A task's
    /// `procos.error_exit_codes` adds to them (and wins for a code both name).
    #[serde(default)]
    bpmn_error_exit_codes: BTreeMap<String, String>,
    /// The container's guards; a task's `procos.timeout`, `procos.memory_mb` and `procos.cpus`
    /// replace the first three, within `limits`.
    #[serde(default)]
    sandbox: Guards,
    /// The most a task may ask for.
    #[serde(default)]
    limits: Limits,
}

/// The per-task settings `docker` reads (beside the worker's own).
const TASK_SETTINGS: &[&str] = &[
    "image",
    "command",
    "error_exit_codes",
    "timeout",
    "memory_mb",
    "cpus",
    "workspace",
];

#[derive(Debug)]
pub(crate) struct DockerAdapter {
    settings: DockerConfig,
    exit_codes: BTreeMap<i64, String>,
    allowlist: ImageAllowlist,
    sandbox: Box<dyn Runner>,
    /// The instances' workspaces, for steps with `procos.workspace`.
    workspaces: Workspaces,
}

impl DockerAdapter {
    pub(crate) fn new(settings: DockerConfig, context: &BuildContext) -> Result<Self, String> {
        let allowlist = context.allowed_images.clone();
        if let Some(image) = &settings.image
            && !allowlist.allows(image)
        {
            return Err(image_refusal(&allowlist, image).message);
        }
        let exit_codes = settings
            .bpmn_error_exit_codes
            .iter()
            .map(|(code, error)| {
                exit_code(code).map(|c| (c, error.clone())).ok_or_else(|| {
                    format!("bpmn_error_exit_codes: `{code}` is not a non-zero exit code")
                })
            })
            .collect::<Result<_, _>>()?;
        settings.limits.check(&settings.sandbox)?;
        let sandbox = sandbox::runner(&settings.sandbox, context.rootfs_dir(), None)?;
        Ok(Self {
            settings,
            exit_codes,
            allowlist,
            sandbox,
            workspaces: context.workspaces.clone(),
        })
    }

    pub(crate) fn relaxed_guards(&self) -> Vec<&'static str> {
        self.settings.sandbox.relaxed()
    }
}

#[async_trait]
impl Adapter for DockerAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let workspace = match self.workspaces.for_sandbox(&task).await {
            Ok(workspace) => workspace,
            Err(failure) => return Outcome::Failure(failure),
        };
        match self.container_spec(task) {
            Ok(spec) => {
                let spec = ContainerSpec { workspace, ..spec };
                self.sandbox.run(&spec, &cancel).await
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
        self.sandbox.close().await;
    }

    async fn available(&self) -> Result<(), crate::Unavailable> {
        self.sandbox.available().await
    }
}

impl DockerAdapter {
    /// The container `task` runs in, or why it cannot run.
    pub(crate) fn container_spec(&self, task: AdapterTask) -> Result<ContainerSpec, Failure> {
        let settings = &task.settings;
        let guards = self
            .settings
            .limits
            .guards_for(&self.settings.sandbox, settings)?;
        let image = match (settings.text("image")?, &self.settings.image) {
            (Some(image), _) if !image.trim().is_empty() => image.trim().to_owned(),
            (_, Some(image)) => image.clone(),
            _ => {
                return Err(Failure::new(
                    "no image to run",
                    format!(
                        "Set the step's `{PREFIX}image` (the Docker template's Image field), or `image` in the topic's settings."
                    ),
                    Retry::Never,
                ));
            }
        };
        if !self.allowlist.allows(&image) {
            return Err(image_refusal(&self.allowlist, &image));
        }
        let command = match settings.json("command")? {
            Some(value) => match serde_json::from_value::<Vec<String>>(value.clone()) {
                Ok(command) if !command.is_empty() => Some(command),
                _ => {
                    return Err(Failure::new(
                        format!("the task's setting `{PREFIX}command` is not a list of strings"),
                        format!(
                            "Give `{PREFIX}command` as a JSON list, e.g. [\"python3\", \"-c\", \"print(1)\"], or leave it empty for the topic's command or the image's own; got {value}"
                        ),
                        Retry::Never,
                    ));
                }
            },
            None => self.settings.command.clone(),
        };
        let mut exit_codes = self.exit_codes.clone();
        exit_codes.extend(task_exit_codes(settings)?);
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
        env.extend(trace_env(task.traceparent.as_deref()));
        let input = serde_json::to_vec(&Value::Object(task.inputs)).unwrap_or_default();
        Ok(ContainerSpec {
            task_id: task.task_id,
            topic: task.topic,
            image,
            command,
            env,
            files: vec![("input.json".to_owned(), input)],
            bpmn_error_exit_codes: exit_codes,
            guards,
            workspace: None,
        })
    }
}

/// A non-zero exit code, from its text.
fn exit_code(text: &str) -> Option<i64> {
    text.trim().parse::<i64>().ok().filter(|c| *c != 0)
}

/// The task's `procos.error_exit_codes`: a JSON object `{"3": "NO_STOCK"}` (or its text), or
/// text such as `3=NO_STOCK, 4`; a code without a name takes `errorCode` from the output.
fn task_exit_codes(settings: &TaskSettings) -> Result<BTreeMap<i64, String>, Failure> {
    let Some((value, _)) = settings.get("error_exit_codes") else {
        return Ok(BTreeMap::new());
    };
    let refused = |why: String| {
        Failure::new(
            format!("the task's setting `{PREFIX}error_exit_codes` {why}"),
            format!(
                "Give `{PREFIX}error_exit_codes` as exit codes with the BPMN error each means, e.g. `3=NO_STOCK, 4` or {{\"3\": \"NO_STOCK\"}}; a code without a name takes the error code from the output's errorCode. Got {value}"
            ),
            Retry::Never,
        )
    };
    let pairs: Vec<(String, String)> = match settings.json("error_exit_codes") {
        Ok(Some(Value::Object(map))) => map
            .into_iter()
            .map(|(code, error)| match error {
                Value::String(error) => Ok((code, error)),
                Value::Null => Ok((code, String::new())),
                other => Err(refused(format!(
                    "maps `{code}` to {other}, not an error code"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Ok(Some(Value::Number(code))) => vec![(code.to_string(), String::new())],
        Ok(None) => Vec::new(),
        _ => match value {
            Value::String(text) => text
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| match item.split_once('=') {
                    Some((code, error)) => (code.trim().to_owned(), error.trim().to_owned()),
                    None => (item.to_owned(), String::new()),
                })
                .collect(),
            _ => return Err(refused("is neither codes nor a JSON object".to_owned())),
        },
    };
    pairs
        .into_iter()
        .map(|(code, error)| {
            exit_code(&code).map(|c| (c, error)).ok_or_else(|| {
                refused(format!("names `{code}`, which is not a non-zero exit code"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn adapter(settings: Value) -> Result<DockerAdapter, String> {
        let config: DockerConfig = serde_json::from_value(settings).unwrap();
        DockerAdapter::new(
            config,
            &BuildContext {
                allowed_images: ImageAllowlist::new(["procos/*".to_owned()]),
                ..BuildContext::default()
            },
        )
    }

    fn task(settings: Value) -> AdapterTask {
        AdapterTask {
            traceparent: None,
            task_id: "task-1".into(),
            topic: "docker".into(),
            inputs: json!({"n": 1, "image": "evil/miner:1", "command": "rm -rf /"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            settings: TaskSettings::from_pairs(settings.as_object().cloned().unwrap_or_default()),
            root_process_instance_id: None,
        }
    }

    #[test]
    fn a_task_names_its_image_command_exit_codes_and_guards() {
        let docker = adapter(json!({"bpmn_error_exit_codes": {"3": ""}})).unwrap();
        let spec = docker
            .container_spec(task(json!({
                "image": "procos/tool:1", "command": "[\"run\", \"--fast\"]",
                "error_exit_codes": "4=NO_STOCK, 5", "timeout": "2m", "cpus": "2",
            })))
            .unwrap();
        assert_eq!(spec.image, "procos/tool:1");
        assert_eq!(
            spec.command,
            Some(vec!["run".to_owned(), "--fast".to_owned()])
        );
        assert_eq!(
            spec.bpmn_error_exit_codes,
            BTreeMap::from([
                (3, String::new()),
                (4, "NO_STOCK".to_owned()),
                (5, String::new())
            ])
        );
        assert_eq!(spec.guards.timeout, std::time::Duration::from_secs(120));
        assert_eq!(spec.guards.cpus, 2.0);
        let json_codes = docker
            .container_spec(task(json!({
                "image": "procos/tool:1", "error_exit_codes": "{\"3\": \"EMPTY\"}",
            })))
            .unwrap();
        assert_eq!(
            json_codes.bpmn_error_exit_codes,
            BTreeMap::from([(3, "EMPTY".to_owned())]),
            "the task's name wins over the topic's"
        );
    }

    #[test]
    fn variables_named_like_settings_are_inputs_only() {
        let docker = adapter(json!({})).unwrap();
        let failure = docker.container_spec(task(json!({}))).unwrap_err();
        assert_eq!(failure.message, "no image to run");
        assert!(
            failure.details.contains("procos.image"),
            "{}",
            failure.details
        );
        let spec = docker
            .container_spec(task(json!({"image": "procos/tool:1"})))
            .unwrap();
        assert_eq!(spec.command, None, "the image's own command");
        let input = String::from_utf8(spec.files[0].1.clone()).unwrap();
        assert!(input.contains("evil/miner:1"), "{input}");
    }

    #[test]
    fn bad_or_greedy_settings_fail_the_task_at_once() {
        let docker = adapter(json!({"image": "procos/tool:1"})).unwrap();
        for (settings, named) in [
            (json!({"image": "evil/miner:1"}), "`evil/miner:1`"),
            (json!({"command": "rm -rf /"}), "procos.command"),
            (json!({"command": "{\"a\": 1}"}), "procos.command"),
            (
                json!({"error_exit_codes": "zero=X"}),
                "procos.error_exit_codes",
            ),
            (json!({"error_exit_codes": "0"}), "procos.error_exit_codes"),
            (json!({"memory_mb": 20480}), "procos.memory_mb = 20480"),
        ] {
            let failure = docker.container_spec(task(settings.clone())).unwrap_err();
            assert_eq!(failure.retry, Retry::Never, "{settings}");
            assert!(
                failure.message.contains(named),
                "{settings}: {}",
                failure.message
            );
        }
        assert_eq!(
            docker.task_settings(),
            [
                "image",
                "command",
                "error_exit_codes",
                "timeout",
                "memory_mb",
                "cpus",
                "workspace"
            ]
        );
    }

    #[test]
    fn a_topic_whose_guards_pass_its_limits_does_not_build() {
        let refused = adapter(json!({"sandbox": {"timeout": "1h"}})).unwrap_err();
        assert!(refused.contains("limits.max_timeout = 30m"), "{refused}");
    }
}
