//! The engine calls the `engine` adapter may make ([`EngineGate`]), made with the worker's
//! client: the adapter never holds the client, and can do nothing else with the engine.

use camunda_client::{ClientError, EngineClient, HistoricProcessInstanceQuery, Variable};
use procos_adapters::{EngineGate, GateError, async_trait};
use serde_json::{Map, Value, json};

use crate::metrics::Telemetry;

/// The worker's [`EngineGate`].
#[derive(Debug, Clone)]
pub(crate) struct EngineAccess {
    client: EngineClient,
    telemetry: Telemetry,
}

impl EngineAccess {
    pub(crate) fn new(client: EngineClient, telemetry: Telemetry) -> Self {
        Self { client, telemetry }
    }
}

fn gate_error(e: &ClientError) -> GateError {
    GateError {
        message: e.to_string(),
        transient: e.is_transient() && !e.is_engine_error(),
    }
}

#[async_trait]
impl EngineGate for EngineAccess {
    async fn start(
        &self,
        key: &str,
        business_key: Option<String>,
        variables: Map<String, Value>,
    ) -> Result<String, GateError> {
        let start = camunda_client::StartProcessInstance {
            variables: variables
                .into_iter()
                .map(|(name, value)| (name, Variable::from_json(value)))
                .collect(),
            business_key,
        };
        self.client
            .start_process_instance(key, &start)
            .await
            .map(|started| started.id)
            .map_err(|e| gate_error(&e))
    }

    async fn instance(&self, id: &str) -> Result<Option<(String, String)>, GateError> {
        match self.client.historic_process_instance(id).await {
            Ok(found) => Ok(Some((
                found.process_definition_key.unwrap_or_default(),
                found.state,
            ))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(gate_error(&e)),
        }
    }

    async fn variables(&self, id: &str) -> Result<Map<String, Value>, GateError> {
        self.client
            .historic_variables(id)
            .await
            .map(|variables| {
                variables
                    .into_iter()
                    .map(|(name, variable)| (name, variable.to_json()))
                    .collect()
            })
            .map_err(|e| gate_error(&e))
    }

    async fn terminate(&self, id: &str) -> Result<(), GateError> {
        self.client
            .delete_process_instance(id)
            .await
            .map_err(|e| gate_error(&e))
    }

    async fn running(&self, key: Option<&str>) -> Result<Vec<Value>, GateError> {
        let query = HistoricProcessInstanceQuery {
            process_definition_key: key.map(str::to_owned),
            unfinished: true,
            ..HistoricProcessInstanceQuery::default()
        };
        self.client
            .historic_process_instances(&query)
            .await
            .map(|instances| {
                instances
                    .into_iter()
                    .map(|i| {
                        json!({
                            "id": i.id,
                            "processKey": i.process_definition_key,
                            "businessKey": i.business_key,
                            "state": i.state,
                        })
                    })
                    .collect()
            })
            .map_err(|e| gate_error(&e))
    }

    async fn health(&self) -> Result<Map<String, Value>, GateError> {
        let version = self.client.version().await.map_err(|e| gate_error(&e))?;
        let incidents = self
            .client
            .incidents(None)
            .await
            .map_err(|e| gate_error(&e))?;
        let mut health = Map::new();
        health.insert("reachable".into(), json!(true));
        health.insert("version".into(), json!(version));
        health.insert("openIncidents".into(), json!(incidents.len()));
        Ok(health)
    }

    async fn metrics(&self, names: &[String]) -> Result<Map<String, Value>, GateError> {
        let mut metrics = Map::new();
        for name in names {
            let sum = self
                .client
                .metric_sum(name)
                .await
                .map_err(|e| gate_error(&e))?;
            metrics.insert(name.clone(), json!(sum));
        }
        Ok(metrics)
    }

    async fn topics(&self) -> Result<Vec<Value>, GateError> {
        let waiting = self
            .client
            .waiting_topic_names()
            .await
            .map_err(|e| gate_error(&e))?;
        let unavailable: std::collections::BTreeMap<String, String> = self
            .telemetry
            .topic_report()
            .unavailable
            .into_iter()
            .map(|u| (u.topic, u.why))
            .collect();
        let mut names: std::collections::BTreeSet<String> = waiting.into_iter().collect();
        names.extend(unavailable.keys().cloned());
        let mut topics = Vec::new();
        for topic in names {
            let count = self
                .client
                .waiting_external_task_count(&topic)
                .await
                .map_err(|e| gate_error(&e))?;
            topics.push(json!({
                "topic": topic,
                "waiting": count,
                "unavailable": unavailable.get(&topic),
            }));
        }
        Ok(topics)
    }
}
