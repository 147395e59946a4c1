//! The benchmarks' process on the engine: one service task between a start and an end event,
//! deployed under a key of its own (the external task's topic is the key too), and what the
//! engine's external-task log says of its tasks. Every call goes through the typed client.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use camunda_client::{Deployment, EngineClient, ExternalTaskLogEntry, ExternalTaskLogQuery};

/// What the one service task of the benchmark's process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// An external task on the process key's topic, served by the worker under test.
    ExternalTask,
    /// `camunda:expression="${true}"`: the engine runs it itself; no worker, no round trip. The
    /// engine's ceiling for this process shape.
    NoOp,
}

/// Deploys the process `key` with its service task as `model` says; the external task's topic
/// is the key too.
pub async fn deploy(client: &EngineClient, key: &str, model: Model) -> anyhow::Result<()> {
    client
        .deploy(&Deployment {
            name: key.to_owned(),
            source: Some("procos-bench".into()),
            resources: vec![(format!("{key}.bpmn"), bpmn(key, model).into_bytes())],
        })
        .await
        .with_context(|| format!("deploying {key}"))?;
    Ok(())
}

/// Deploys an external-task process under a fresh key, `prefix` and the time to the
/// millisecond, so that runs never see each other's tasks; returns the key, which is its topic.
pub async fn deploy_new(client: &EngineClient, prefix: &str) -> anyhow::Result<String> {
    let key = format!("{prefix}-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    deploy(client, &key, Model::ExternalTask).await?;
    Ok(key)
}

/// The external-task log's completions of the tasks of process `key`.
fn completions_of(key: &str) -> ExternalTaskLogQuery {
    ExternalTaskLogQuery {
        process_definition_key: Some(key.to_owned()),
        success_log: Some(true),
        ..ExternalTaskLogQuery::default()
    }
}

/// Every completion of a task of process `key`, as the engine logged it (its clock).
pub async fn completions(
    client: &EngineClient,
    key: &str,
) -> anyhow::Result<Vec<ExternalTaskLogEntry>> {
    Ok(client.external_task_log(&completions_of(key)).await?)
}

/// How many tasks of process `key` have been completed.
pub async fn completion_count(client: &EngineClient, key: &str) -> anyhow::Result<u64> {
    Ok(client.external_task_log_count(&completions_of(key)).await?)
}

/// Asks `check` every `every` until it answers `Some`, and fails with `failure` when it has not
/// within `timeout`.
pub async fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    failure: impl std::fmt::Display,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("{failure}");
        }
        tokio::time::sleep(every).await;
    }
}

fn bpmn(key: &str, model: Model) -> String {
    let task = match model {
        Model::ExternalTask => {
            format!(
                r#"<bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{key}"/>"#
            )
        }
        Model::NoOp => r#"<bpmn:serviceTask id="work" camunda:expression="${true}"/>"#.to_owned(),
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs-{key}" targetNamespace="https://procos.io/bench">
  <bpmn:process id="{key}" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work"/>
    {task}
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_models_differ_only_in_the_service_task() {
        let external = bpmn("k", Model::ExternalTask);
        let noop = bpmn("k", Model::NoOp);
        assert!(external.contains(r#"camunda:topic="k""#));
        assert!(noop.contains("${true}") && !noop.contains("external"));
        assert_eq!(external.lines().count(), noop.lines().count());
    }

    #[test]
    fn completions_are_the_success_entries_of_one_process() {
        let query = completions_of("k");
        assert_eq!(query.process_definition_key.as_deref(), Some("k"));
        assert_eq!(query.success_log, Some(true));
    }

    #[tokio::test]
    async fn polling_ends_with_the_first_answer_or_the_failure() {
        let mut asked = 0;
        let found = poll_until(
            Duration::from_secs(5),
            Duration::ZERO,
            "never",
            async || {
                asked += 1;
                Ok((asked == 3).then_some(asked))
            },
        )
        .await
        .unwrap();
        assert_eq!(found, 3);
        let failed = poll_until(Duration::ZERO, Duration::ZERO, "gave up", async || {
            Ok(None::<()>)
        })
        .await
        .unwrap_err();
        assert_eq!(failed.to_string(), "gave up");
    }
}
