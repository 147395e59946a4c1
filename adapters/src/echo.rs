//! `echo`: completes every task with its inputs as outputs, optionally after a delay. The
//! smallest adapter there is; it proves the path engine → worker → adapter → engine without a
//! sandbox in the way, and with `delay` it stands in for a task body of known length.

use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, async_trait};

/// `[topics.NAME.settings]` for `echo`; an unknown key is refused rather than ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EchoSettings {
    /// How long each run takes before it answers (default: no delay).
    #[serde(default, with = "humantime_serde")]
    delay: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Echo {
    delay: Option<Duration>,
}

impl Echo {
    pub(crate) fn new(settings: EchoSettings) -> Self {
        Echo {
            delay: settings.delay,
        }
    }
}

#[async_trait]
impl Adapter for Echo {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        if let Some(delay) = self.delay {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => {
                    return Outcome::Failure(Failure::new("echo cancelled", "", Retry::Later));
                }
            }
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
            task_id: "t".into(),
            topic: "echo".into(),
            inputs: json!({"a": 1, "b": [true, null]})
                .as_object()
                .unwrap()
                .clone(),
        }
    }

    #[tokio::test]
    async fn returns_inputs_as_outputs() {
        let adapter = crate::build("echo", &toml::Table::new()).unwrap();
        let expected = task().inputs;
        assert_eq!(
            adapter.run(task(), CancellationToken::new()).await,
            Outcome::Complete(expected)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waits_its_delay_unless_cancelled() {
        let settings: toml::Table = toml::from_str("delay = '10s'").unwrap();
        let adapter = crate::build("echo", &settings).unwrap();
        let started = tokio::time::Instant::now();
        let outcome = adapter.run(task(), CancellationToken::new()).await;
        assert!(matches!(outcome, Outcome::Complete(_)));
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let cancel = CancellationToken::new();
        cancel.cancel();
        let outcome = adapter.run(task(), cancel).await;
        assert!(matches!(outcome, Outcome::Failure(_)), "{outcome:?}");
    }

    #[test]
    fn unknown_settings_and_adapters_are_refused() {
        let settings: toml::Table = toml::from_str("colour = 'red'").unwrap();
        let err = crate::build("echo", &settings).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        let err = crate::build("nope", &toml::Table::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("known adapters: echo"), "{err}");
    }
}
