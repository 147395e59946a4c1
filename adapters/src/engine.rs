//! `engine`: what a model may ask of the engine itself — start another process, wait for it to
//! end, terminate it, list the running ones; the engine's health and metrics; the fleet's
//! topics and whether they are served.
//!
//! Adapters never hold the engine's client. The worker hands this adapter an [`EngineGate`]:
//! the few calls it may make, implemented by the worker with the client crate. What a model
//! may do through it is the topic's allowlist: the process definition keys it may start, wait
//! for, list and terminate (`processes`, none by default) and the operations it may use
//! (`operations`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::{Adapter, AdapterTask, Failure, Outcome, Retry, async_trait};

/// The engine calls the worker lets the `engine` adapter make.
#[async_trait]
pub trait EngineGate: Send + Sync + fmt::Debug {
    /// Starts the latest version of `key`; the new instance's id.
    async fn start(
        &self,
        key: &str,
        business_key: Option<String>,
        variables: Map<String, Value>,
    ) -> Result<String, GateError>;
    /// The instance's process definition key and state (`ACTIVE`, `SUSPENDED`, `COMPLETED`,
    /// `EXTERNALLY_TERMINATED`, `INTERNALLY_TERMINATED`), as history has them; `None` for an
    /// instance the engine does not know.
    async fn instance(&self, id: &str) -> Result<Option<(String, String)>, GateError>;
    /// The instance's variables as history last saw them, in their plain-JSON view.
    async fn variables(&self, id: &str) -> Result<Map<String, Value>, GateError>;
    /// Cancels a running instance, as Cockpit's "cancel" does.
    async fn terminate(&self, id: &str) -> Result<(), GateError>;
    /// The running instances, of `key` when given: `{id, processKey, businessKey}` each.
    async fn running(&self, key: Option<&str>) -> Result<Vec<Value>, GateError>;
    /// The engine's version and its open incidents.
    async fn health(&self) -> Result<Map<String, Value>, GateError>;
    /// The engine's count of each metric in `names`.
    async fn metrics(&self, names: &[String]) -> Result<Map<String, Value>, GateError>;
    /// The topics with tasks waiting in the engine and those this worker cannot serve now:
    /// `{topic, waiting, unavailable}` each (`unavailable`: why, or null).
    async fn topics(&self) -> Result<Vec<Value>, GateError>;
}

/// Why an engine call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateError {
    pub message: String,
    /// The same call may succeed later (the engine was away or busy).
    pub transient: bool,
}

impl GateError {
    fn failure(self, what: &str) -> Failure {
        Failure::new(
            format!("could not {what}: {}", self.message),
            "The engine's answer is above; the `engine` adapter asked it through the worker.",
            if self.transient {
                Retry::Later
            } else {
                Retry::Never
            },
        )
    }
}

/// The operations a model may use, by name.
const OPERATIONS: &[&str] = &[
    "start",
    "wait",
    "terminate",
    "list",
    "health",
    "metrics",
    "topics",
];

/// The metrics `metrics` reports unless the step names its own (`procos.metrics`).
const DEFAULT_METRICS: &[&str] = &[
    "root-process-instance-start",
    "activity-instance-start",
    "activity-instance-end",
    "job-successful",
    "job-failed",
];

/// `[topics.NAME.settings]` of `engine`: what a model may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Process definition keys a model may start, wait for, list and terminate: exact keys or
    /// prefixes ending in `*`. Empty (the default): none.
    #[serde(default)]
    processes: Vec<String>,
    /// The operations a model may use. Default: all of them.
    #[serde(default = "all_operations")]
    operations: Vec<String>,
    /// How often `wait` asks whether the instance ended.
    #[serde(default = "default_poll", with = "humantime_serde")]
    poll: Duration,
}

fn all_operations() -> Vec<String> {
    OPERATIONS.iter().map(|&o| o.to_owned()).collect()
}

fn default_poll() -> Duration {
    Duration::from_secs(1)
}

/// The per-task settings `engine` reads.
const TASK_SETTINGS: &[&str] = &["operation", "metrics", "timeout"];

#[derive(Debug)]
pub(crate) struct EngineAdapter {
    settings: EngineConfig,
    gate: Option<Arc<dyn EngineGate>>,
}

impl EngineAdapter {
    pub(crate) fn new(
        settings: EngineConfig,
        gate: Option<Arc<dyn EngineGate>>,
    ) -> Result<Self, String> {
        if let Some(unknown) = settings
            .operations
            .iter()
            .find(|o| !OPERATIONS.contains(&o.as_str()))
        {
            return Err(format!(
                "operations: `{unknown}` is no operation of the engine adapter ({})",
                OPERATIONS.join(", ")
            ));
        }
        if settings.poll.is_zero() {
            return Err("poll is zero; set e.g. poll = \"1s\"".into());
        }
        Ok(Self { settings, gate })
    }

    fn allows(&self, key: &str) -> bool {
        self.settings
            .processes
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => key.starts_with(prefix),
                None => key == allowed,
            })
    }

    fn check_process(&self, key: &str) -> Result<(), Failure> {
        if self.allows(key) {
            return Ok(());
        }
        let allowed = if self.settings.processes.is_empty() {
            "none".to_owned()
        } else {
            self.settings.processes.join(", ")
        };
        Err(Failure::new(
            format!(
                "the process `{key}` is not one this topic lets a model manage (allowed: {allowed})"
            ),
            format!(
                "The operator's `processes` in the topic's settings lists the process definition keys a model may start, wait for, list and terminate. Name one of them, or have the operator add `{key}`."
            ),
            Retry::Never,
        ))
    }

    async fn operate(
        &self,
        gate: &dyn EngineGate,
        task: &AdapterTask,
    ) -> Result<Map<String, Value>, Failure> {
        let settings = &task.settings;
        let Some(operation) = settings.text("operation")? else {
            return Err(Failure::new(
                "the step names no `procos.operation`",
                format!(
                    "Set `procos.operation` to one of: {}.",
                    OPERATIONS.join(", ")
                ),
                Retry::Never,
            ));
        };
        let operation = operation.trim();
        if !self.settings.operations.iter().any(|o| o == operation) {
            return Err(Failure::new(
                format!(
                    "the operation `{operation}` is not one this topic allows (allowed: {})",
                    self.settings.operations.join(", ")
                ),
                format!(
                    "Operations of the engine adapter: {}. The operator's `operations` in the topic's settings lists those a model may use.",
                    OPERATIONS.join(", ")
                ),
                Retry::Never,
            ));
        }
        let mut out = Map::new();
        match operation {
            "start" => {
                let key = text_input(&task.inputs, "processKey")?;
                self.check_process(&key)?;
                let business_key = match task.inputs.get("businessKey") {
                    Some(Value::String(k)) if !k.is_empty() => Some(k.clone()),
                    _ => None,
                };
                let variables = match task.inputs.get("variables") {
                    None | Some(Value::Null) => Map::new(),
                    Some(Value::Object(map)) => map.clone(),
                    Some(Value::String(text)) => match serde_json::from_str(text) {
                        Ok(Value::Object(map)) => map,
                        _ => return Err(not_variables(&task.inputs["variables"])),
                    },
                    Some(other) => return Err(not_variables(other)),
                };
                let id = gate
                    .start(&key, business_key, variables)
                    .await
                    .map_err(|e| e.failure(&format!("start `{key}`")))?;
                out.insert("processInstanceId".into(), json!(id));
            }
            "wait" | "terminate" => {
                let id = text_input(&task.inputs, "processInstanceId")?;
                let (key, state) = self.managed(gate, &id).await?;
                if operation == "terminate" {
                    if matches!(state.as_str(), "ACTIVE" | "SUSPENDED") {
                        gate.terminate(&id)
                            .await
                            .map_err(|e| e.failure(&format!("terminate {id}")))?;
                    }
                    let (_, state) = self.managed(gate, &id).await?;
                    out.insert("state".into(), json!(state));
                } else {
                    let limit = settings.duration("timeout")?;
                    let started = tokio::time::Instant::now();
                    let mut state = state;
                    while matches!(state.as_str(), "ACTIVE" | "SUSPENDED") {
                        if limit.is_some_and(|limit| started.elapsed() >= limit) {
                            return Err(Failure::new(
                                format!(
                                    "the instance {id} of `{key}` did not end within {}",
                                    humantime::format_duration(limit.unwrap_or_default())
                                ),
                                "Raise the step's `procos.timeout`, or wait with a timer in the model.",
                                Retry::Never,
                            ));
                        }
                        tokio::time::sleep(self.settings.poll).await;
                        state = self.managed(gate, &id).await?.1;
                    }
                    out.insert("state".into(), json!(state));
                    let variables = gate
                        .variables(&id)
                        .await
                        .map_err(|e| e.failure(&format!("read the variables of {id}")))?;
                    out.insert("variables".into(), Value::Object(variables));
                }
                out.insert("processInstanceId".into(), json!(id));
                out.insert("processKey".into(), json!(key));
            }
            "list" => {
                let key = match task.inputs.get("processKey") {
                    Some(Value::String(key)) if !key.is_empty() => {
                        self.check_process(key)?;
                        Some(key.as_str())
                    }
                    _ => None,
                };
                let running = gate
                    .running(key)
                    .await
                    .map_err(|e| e.failure("list the running instances"))?;
                let allowed: Vec<Value> = running
                    .into_iter()
                    .filter(|i| i["processKey"].as_str().is_some_and(|k| self.allows(k)))
                    .collect();
                out.insert("instances".into(), Value::Array(allowed));
            }
            "health" => {
                out = gate
                    .health()
                    .await
                    .map_err(|e| e.failure("read the engine's health"))?;
            }
            "metrics" => {
                let names = settings
                    .text_list("metrics")?
                    .unwrap_or_else(|| DEFAULT_METRICS.iter().map(|&n| n.to_owned()).collect());
                let metrics = gate
                    .metrics(&names)
                    .await
                    .map_err(|e| e.failure("read the engine's metrics"))?;
                out.insert("metrics".into(), Value::Object(metrics));
            }
            "topics" => {
                let topics = gate
                    .topics()
                    .await
                    .map_err(|e| e.failure("read the topics"))?;
                out.insert("topics".into(), Value::Array(topics));
            }
            other => {
                return Err(Failure::new(
                    format!(
                        "the step's `procos.operation` is `{other}`, which the engine adapter does not know"
                    ),
                    format!("Operations: {}.", OPERATIONS.join(", ")),
                    Retry::Never,
                ));
            }
        }
        Ok(out)
    }

    /// The key and state of an instance a model may manage: one the engine knows, of a process
    /// the topic allows.
    async fn managed(&self, gate: &dyn EngineGate, id: &str) -> Result<(String, String), Failure> {
        let Some((key, state)) = gate
            .instance(id)
            .await
            .map_err(|e| e.failure(&format!("read the instance {id}")))?
        else {
            return Err(Failure::new(
                format!("the engine knows no process instance {id}"),
                "Give the id a start step handed back (its output processInstanceId).",
                Retry::Never,
            ));
        };
        self.check_process(&key)?;
        Ok((key, state))
    }
}

fn text_input(inputs: &Map<String, Value>, name: &str) -> Result<String, Failure> {
    match inputs.get(name) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        other => Err(Failure::new(
            format!(
                "the step's variable `{name}` is {}, not the text it needs",
                other.map_or_else(|| "missing".to_owned(), Value::to_string)
            ),
            format!("Give the step a variable `{name}` (a camunda:in of the library process)."),
            Retry::Never,
        )),
    }
}

fn not_variables(value: &Value) -> Failure {
    Failure::new(
        format!("the variable `variables` is {value}, not a JSON object of variables"),
        "Give the started instance's variables as a JSON object, e.g. {\"order\": 42}.",
        Retry::Never,
    )
}

#[async_trait]
impl Adapter for EngineAdapter {
    async fn run(&self, task: AdapterTask, cancel: CancellationToken) -> Outcome {
        let Some(gate) = &self.gate else {
            return Outcome::Failure(Failure::new(
                "this worker gave the engine adapter no access to the engine",
                "",
                Retry::Later,
            ));
        };
        tokio::select! {
            done = self.operate(gate.as_ref(), &task) => match done {
                Ok(outputs) => Outcome::Complete(outputs),
                Err(failure) => Outcome::Failure(failure),
            },
            () = cancel.cancelled() => Outcome::Failure(Failure::new("cancelled", "", Retry::Later)),
        }
    }

    fn task_settings(&self) -> &'static [&'static str] {
        TASK_SETTINGS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(value: Value) -> EngineConfig {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_allowlist_names_processes_exactly_or_by_prefix_and_none_by_default() {
        let none = EngineAdapter::new(config(json!({})), None).unwrap();
        let failure = none.check_process("example-x").unwrap_err();
        assert!(
            failure.message.contains("`example-x`") && failure.message.contains("allowed: none"),
            "{}",
            failure.message
        );
        let some = EngineAdapter::new(
            config(json!({"processes": ["procos-hello", "example-*"]})),
            None,
        )
        .unwrap();
        assert!(some.check_process("procos-hello").is_ok());
        assert!(some.check_process("example-order").is_ok());
        assert!(some.check_process("procos-root").is_err());
        assert!(EngineAdapter::new(config(json!({"operations": ["reboot"]})), None).is_err());
    }
}
