//! `echo`: completes every task with its inputs as outputs. The smallest adapter there is; it
//! proves the path engine → worker → adapter → engine without any sandbox in the way.

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{Adapter, AdapterTask, Outcome, async_trait};

/// `echo` takes no settings; an unknown key is refused rather than ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EchoSettings {}

#[derive(Debug)]
pub(crate) struct Echo;

impl Echo {
    pub(crate) fn new(_settings: EchoSettings) -> Self {
        Echo
    }
}

#[async_trait]
impl Adapter for Echo {
    async fn run(&self, task: AdapterTask, _cancel: CancellationToken) -> Outcome {
        Outcome::Complete(task.inputs)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn returns_inputs_as_outputs() {
        let adapter = crate::build("echo", &toml::Table::new()).unwrap();
        let inputs = json!({"a": 1, "b": [true, null]})
            .as_object()
            .unwrap()
            .clone();
        let task = AdapterTask {
            task_id: "t".into(),
            topic: "echo".into(),
            inputs: inputs.clone(),
        };
        assert_eq!(
            adapter.run(task, CancellationToken::new()).await,
            Outcome::Complete(inputs)
        );
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
