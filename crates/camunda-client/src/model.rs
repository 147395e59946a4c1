//! Requests to and answers from the engine, in the engine's field names (camelCase on the wire).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::variables::{Variables, engine_date};

/// `POST /external-task/fetchAndLock`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchAndLock {
    pub worker_id: String,
    pub max_tasks: u32,
    pub use_priority: bool,
    /// Long-poll time in ms; the engine refuses more than 1,800,000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_response_timeout: Option<u64>,
    pub topics: Vec<TopicSubscription>,
}

/// One topic of a fetch-and-lock request, with its filters.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicSubscription {
    pub topic_name: String,
    /// Lock duration in ms.
    pub lock_duration: u64,
    /// Variables to fetch; `None` fetches all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<Vec<String>>,
    /// Fetch only the variables local to the task's execution.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub local_variables: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_definition_key_in: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id_in: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub without_tenant_id: bool,
    /// Only tasks whose process has these variable values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_variables: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub include_extension_properties: bool,
}

/// An external task this worker now holds the lock of.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedExternalTask {
    pub id: String,
    pub topic_name: String,
    #[serde(default)]
    pub worker_id: Option<String>,
    /// `None` until the first failure is reported.
    #[serde(default)]
    pub retries: Option<i32>,
    #[serde(default, deserialize_with = "engine_date::deserialize")]
    pub lock_expiration_time: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub process_instance_id: Option<String>,
    #[serde(default)]
    pub process_definition_key: Option<String>,
    #[serde(default)]
    pub activity_id: Option<String>,
    /// The execution the task belongs to: its local variables are the task's input parameters.
    #[serde(default)]
    pub execution_id: Option<String>,
    #[serde(default)]
    pub business_key: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub variables: Variables,
    #[serde(default)]
    pub extension_properties: Option<Map<String, Value>>,
}

/// An external task as the engine lists it (`GET /external-task`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTask {
    pub id: String,
    pub topic_name: String,
    /// The worker holding the lock, if any.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// When the lock ends; `None` when unlocked.
    #[serde(default, deserialize_with = "engine_date::deserialize")]
    pub lock_expiration_time: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    pub retries: Option<i32>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub process_instance_id: Option<String>,
    /// When the engine created the task (Camunda 7.21 and later; `None` from older engines).
    #[serde(default, deserialize_with = "engine_date::deserialize")]
    pub create_time: Option<DateTime<FixedOffset>>,
}

/// `POST /external-task/{id}/complete`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompleteTask {
    pub worker_id: String,
    #[serde(skip_serializing_if = "Variables::is_empty")]
    pub variables: Variables,
    #[serde(skip_serializing_if = "Variables::is_empty")]
    pub local_variables: Variables,
}

/// `POST /external-task/{id}/failure`. `retries: 0` makes the engine raise an incident.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    pub worker_id: String,
    pub error_message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_details: Option<String>,
    pub retries: i32,
    /// Delay in ms before the task can be fetched again.
    pub retry_timeout: u64,
}

/// `POST /external-task/{id}/bpmnError`: a business error for a boundary error event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BpmnErrorReport {
    pub worker_id: String,
    pub error_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Variables::is_empty")]
    pub variables: Variables,
}

/// A deployment to create: named resources, deployed with the engine's duplicate filtering so
/// that an unchanged resource makes no new version.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    /// Tells the engine and Cockpit where the deployment came from.
    pub source: Option<String>,
    pub resources: Vec<(String, Vec<u8>)>,
}

/// The engine's answer to a deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub deployed_process_definitions: Option<std::collections::BTreeMap<String, DeployedResource>>,
    #[serde(default)]
    pub deployed_decision_definitions: Option<std::collections::BTreeMap<String, DeployedResource>>,
}

impl DeploymentResult {
    /// Definitions this deployment created; empty when duplicate filtering found nothing new.
    pub fn new_definitions(&self) -> Vec<&DeployedResource> {
        self.deployed_process_definitions
            .iter()
            .chain(self.deployed_decision_definitions.iter())
            .flat_map(|m| m.values())
            .collect()
    }
}

/// A process or decision definition created by a deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployedResource {
    pub id: String,
    pub key: String,
    pub version: i32,
    #[serde(default)]
    pub resource: Option<String>,
}

/// A deployed process definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessDefinition {
    pub id: String,
    pub key: String,
    pub version: i32,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub deployment_id: Option<String>,
}

/// `POST /process-definition/key/{key}/start`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartProcessInstance {
    #[serde(skip_serializing_if = "Variables::is_empty")]
    pub variables: Variables,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_key: Option<String>,
}

/// A running (or just finished) process instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInstance {
    pub id: String,
    #[serde(default)]
    pub definition_id: Option<String>,
    #[serde(default)]
    pub business_key: Option<String>,
    #[serde(default)]
    pub ended: bool,
}

/// A process instance as history records it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoricProcessInstance {
    pub id: String,
    #[serde(default)]
    pub process_definition_key: Option<String>,
    #[serde(default)]
    pub business_key: Option<String>,
    /// The instance at the top of its call tree (itself unless a call activity started it).
    #[serde(default)]
    pub root_process_instance_id: Option<String>,
    /// ACTIVE, SUSPENDED, COMPLETED, EXTERNALLY_TERMINATED, INTERNALLY_TERMINATED.
    pub state: String,
    /// When the instance started, on the engine's clock.
    #[serde(default, deserialize_with = "engine_date::deserialize")]
    pub start_time: Option<DateTime<FixedOffset>>,
    /// When the instance ended, on the engine's clock; `None` while it runs.
    #[serde(default, deserialize_with = "engine_date::deserialize")]
    pub end_time: Option<DateTime<FixedOffset>>,
}

/// Filters for history's process instances; unset ones do not filter.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoricProcessInstanceQuery {
    /// Instances of any version of this process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_definition_key: Option<String>,
    #[serde(
        rename = "processInstanceBusinessKey",
        skip_serializing_if = "Option::is_none"
    )]
    pub business_key: Option<String>,
    /// Only instances a call activity of this instance started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub super_process_instance_id: Option<String>,
    /// Only instances that have ended (completed or terminated). The engine takes no `false`:
    /// leaving it unset is how to ask for all.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    /// Only instances that are still running.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unfinished: bool,
}

/// An open incident, as Cockpit shows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    pub id: String,
    pub incident_type: String,
    #[serde(default)]
    pub incident_message: Option<String>,
    #[serde(default)]
    pub process_instance_id: Option<String>,
    #[serde(default)]
    pub activity_id: Option<String>,
    /// For `failedExternalTask` incidents: the external task's id.
    #[serde(default)]
    pub configuration: Option<String>,
}

/// Filters for the external-task log; unset ones do not filter.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTaskLogQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_definition_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Only entries of completed tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_log: Option<bool>,
    /// Only entries of failure reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_log: Option<bool>,
    /// Only entries of task creations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_log: Option<bool>,
}

/// One entry of the external-task log: a task was created, failed, succeeded or was deleted.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTaskLogEntry {
    pub id: String,
    #[serde(deserialize_with = "crate::variables::engine_date::deserialize_required")]
    pub timestamp: DateTime<FixedOffset>,
    pub external_task_id: String,
    pub topic_name: Option<String>,
    pub worker_id: Option<String>,
    /// The retries the task had after this entry (a failure report's new value).
    pub retries: Option<i32>,
    pub error_message: Option<String>,
    pub process_instance_id: Option<String>,
    #[serde(default)]
    pub creation_log: bool,
    #[serde(default)]
    pub failure_log: bool,
    #[serde(default)]
    pub success_log: bool,
    #[serde(default)]
    pub deletion_log: bool,
}

/// An activity an instance passed through, as history records it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoricActivityInstance {
    pub id: String,
    pub activity_id: String,
    #[serde(default)]
    pub activity_type: Option<String>,
    /// When the activity started, on the engine's clock.
    #[serde(default, deserialize_with = "engine_date::deserialize")]
    pub start_time: Option<DateTime<FixedOffset>>,
    /// When the activity ended, on the engine's clock; `None` while it runs.
    #[serde(default, deserialize_with = "engine_date::deserialize")]
    pub end_time: Option<DateTime<FixedOffset>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_query_sends_only_the_filters_that_are_set() {
        let query = HistoricProcessInstanceQuery {
            process_definition_key: Some("p".into()),
            business_key: Some("measured".into()),
            finished: true,
            ..HistoricProcessInstanceQuery::default()
        };
        let sent = serde_json::to_value(&query).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({
                "processDefinitionKey": "p",
                "processInstanceBusinessKey": "measured",
                "finished": true,
            })
        );
        let all = serde_json::to_value(HistoricProcessInstanceQuery::default()).unwrap();
        assert_eq!(all, serde_json::json!({}));
    }

    #[test]
    fn history_gives_an_instance_its_times_on_the_engine_clock() {
        let ended: HistoricProcessInstance = serde_json::from_value(serde_json::json!({
            "id": "i1",
            "businessKey": "measured",
            "state": "COMPLETED",
            "startTime": "2024-02-29T13:45:00.123+0100",
            "endTime": "2024-02-29T13:45:01.000+0100",
        }))
        .unwrap();
        let (start, end) = (ended.start_time.unwrap(), ended.end_time.unwrap());
        assert_eq!((end - start).num_milliseconds(), 877);
        assert_eq!(start.offset().local_minus_utc(), 3600);
        let running: HistoricProcessInstance = serde_json::from_value(serde_json::json!({
            "id": "i2",
            "state": "ACTIVE",
            "startTime": "2024-02-29T13:45:00.123+0100",
            "endTime": null,
        }))
        .unwrap();
        assert!(running.end_time.is_none());
    }

    #[test]
    fn history_gives_an_activity_its_times_on_the_engine_clock() {
        let step: HistoricActivityInstance = serde_json::from_value(serde_json::json!({
            "id": "a1",
            "activityId": "step01",
            "activityType": "serviceTask",
            "startTime": "2024-02-29T13:45:00.123+0100",
            "endTime": "2024-02-29T13:45:00.170+0100",
        }))
        .unwrap();
        let (start, end) = (step.start_time.unwrap(), step.end_time.unwrap());
        assert_eq!((end - start).num_milliseconds(), 47);
        let running: HistoricActivityInstance = serde_json::from_value(serde_json::json!({
            "id": "a2",
            "activityId": "step02",
            "startTime": "2024-02-29T13:45:00.170+0100",
            "endTime": null,
        }))
        .unwrap();
        assert!(running.end_time.is_none());
    }
}
