//! `echo`: completes every task with its inputs as outputs, optionally after a delay. The
//! smallest adapter there is; it proves the path engine → worker → adapter → engine without a
//! sandbox in the way. With `delay` it stands in for a task body of known length; with `fail` or
//! `bpmn_error` it rehearses a model's failure paths (incident, boundary error event) before the
//! real adapter is plugged in.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, async_trait};

/// `[topics.NAME.settings]` for `echo`; an unknown key is refused rather than ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoConfig {
    /// How long each run takes before it answers (default: no delay).
    #[serde(default, with = "humantime_serde")]
    delay: Option<Duration>,
    /// Fail every run with this message (retried as the topic's retries say, then an incident).
    #[serde(default)]
    fail: Option<String>,
    /// End every run with a BPMN error of this code, the inputs as its variables.
    #[serde(default)]
    bpmn_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Echo {
    settings: EchoConfig,
}

impl Echo {
    pub(crate) fn new(settings: EchoConfig) -> Self {
        Echo { settings }
    }
}

#[async_trait]
impl Adapter for Echo {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        if let Some(delay) = self.settings.delay {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => {
                    return Outcome::Failure(Failure::new("echo cancelled", "", Retry::Later));
                }
            }
        }
        if let Some(message) = &self.settings.fail {
            let inputs = Value::Object(task.inputs);
            return Outcome::Failure(Failure::new(
                message.clone(),
                format!(
                    "The echo adapter of topic `{}` is configured to fail (settings.fail).\nTask {} had the inputs: {inputs}",
                    task.topic, task.task_id
                ),
                Retry::Later,
            ));
        }
        if let Some(code) = &self.settings.bpmn_error {
            return Outcome::BpmnError {
                code: code.clone(),
                message: format!("echo raised the BPMN error `{code}` as configured"),
                outputs: task.inputs,
            };
        }
        Outcome::Complete(task.inputs)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task() -> AdapterTask {
        AdapterTask {
            traceparent: None,
            task_id: "t".into(),
            topic: "echo".into(),
            inputs: json!({"a": 1, "b": [true, null]})
                .as_object()
                .unwrap()
                .clone(),
            settings: Default::default(),
            root_process_instance_id: None,
        }
    }

    #[tokio::test]
    async fn returns_inputs_as_outputs() {
        let adapter = crate::build(
            "echo",
            "t",
            &toml::Table::new(),
            &crate::BuildContext::default(),
        )
        .unwrap();
        let expected = task().inputs;
        assert_eq!(
            adapter.run(task(), CancellationToken::new()).await,
            Outcome::Complete(expected)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waits_its_delay_unless_cancelled() {
        let settings: toml::Table = toml::from_str("delay = '10s'").unwrap();
        let adapter =
            crate::build("echo", "t", &settings, &crate::BuildContext::default()).unwrap();
        let started = tokio::time::Instant::now();
        let outcome = adapter.run(task(), CancellationToken::new()).await;
        assert!(matches!(outcome, Outcome::Complete(_)));
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let cancel = CancellationToken::new();
        cancel.cancel();
        let outcome = adapter.run(task(), cancel).await;
        assert!(matches!(outcome, Outcome::Failure(_)), "{outcome:?}");
    }

    #[tokio::test]
    async fn rehearses_failures_and_bpmn_errors_when_configured_to() {
        let settings: toml::Table = toml::from_str("fail = 'disk full'").unwrap();
        let adapter =
            crate::build("echo", "t", &settings, &crate::BuildContext::default()).unwrap();
        match adapter.run(task(), CancellationToken::new()).await {
            Outcome::Failure(f) => {
                assert_eq!(f.message, "disk full");
                assert!(f.details.contains("settings.fail"), "{}", f.details);
                assert_eq!(f.retry, Retry::Later);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let settings: toml::Table = toml::from_str("bpmn_error = 'NO_STOCK'").unwrap();
        let adapter =
            crate::build("echo", "t", &settings, &crate::BuildContext::default()).unwrap();
        match adapter.run(task(), CancellationToken::new()).await {
            Outcome::BpmnError { code, outputs, .. } => {
                assert_eq!(code, "NO_STOCK");
                assert_eq!(outputs, task().inputs);
            }
            other => panic!("expected a BPMN error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_settings_and_adapters_are_refused() {
        let settings: toml::Table = toml::from_str("colour = 'red'").unwrap();
        let err = crate::build("echo", "t", &settings, &crate::BuildContext::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        let err = crate::build(
            "nope",
            "t",
            &toml::Table::new(),
            &crate::BuildContext::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("known adapters: echo, docker, python, scilab, llm"),
            "{err}"
        );
    }
}
