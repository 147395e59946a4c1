//! The guards of one run: which image it may use, and the contract's [`SandboxSpec`] (labels,
//! deadline, limits) a [`ContainerSpec`] becomes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use procos_sandbox_contract::labels::SandboxLabels;
use procos_sandbox_contract::{Guards, ImageAllowlist, SandboxSpec};

use crate::{Failure, Retry};

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
    /// The host directory of the task's workspace, mounted at `/workspace`, for a step that
    /// asks for it (`procos.workspace`); such a run never takes a sandbox started ahead.
    pub(crate) workspace: Option<std::path::PathBuf>,
}

impl ContainerSpec {
    /// The sandbox this run asks for; `warm` is the pool's key and the longest the sandbox
    /// waits for its task. The deadline label is set from now.
    pub(crate) fn sandbox_spec(&self, warm: Option<(&str, Duration)>) -> SandboxSpec {
        let waits = warm.map_or(Duration::ZERO, |(_, waits)| waits);
        SandboxSpec {
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            labels: SandboxLabels {
                task: self.task_id.clone(),
                topic: self.topic.clone(),
                deadline: unix_now().saturating_add((waits + self.guards.timeout).as_secs()),
                warm: warm.map(|(key, _)| key.to_owned()),
            },
            guards: self.guards.clone(),
            workspace: self
                .workspace
                .as_ref()
                .map(|path| path.display().to_string()),
        }
    }
}

/// The environment that hands a sandboxed process its step's W3C trace context: `TRACEPARENT`,
/// the name OpenTelemetry's SDKs read it from.
pub(crate) fn trace_env(traceparent: Option<&str>) -> Option<String> {
    traceparent.map(|traceparent| format!("TRACEPARENT={traceparent}"))
}

/// Seconds since the Unix epoch (0 for a clock set before it).
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
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
}
