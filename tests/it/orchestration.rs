//! The root orchestration models of `bpmn/init` on an engine of the test's own: the health check
//! finds an incident, error recovery asks a person, and their "retry" gives the failed task one
//! more attempt.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use camunda_client::{CompleteTask, FailureReport, StartProcessInstance};
use serde_json::{Value, json};

use crate::support::{self, assert_eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_hands_an_incident_to_error_recovery_and_a_person_retries_it() {
    let data = tempfile::tempdir().unwrap();
    let (client, engine) = support::boot_engine(support::free_port(), data.path(), vec![]).await;
    let init = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bpmn/init");
    let report = procos_kernel::deploy_init_dir(&client, &init).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    // One external task that fails for good: an incident.
    let key = support::unique("failing");
    support::deploy(
        &client,
        &format!("{key}.bpmn"),
        &support::external_task_process(&key, "doomed"),
    )
    .await;
    client
        .start_process_instance(&key, &StartProcessInstance::default())
        .await
        .unwrap();
    let locked = support::lock_tasks(&client, "doomed", 1, None).await;
    let task = &locked[0];
    client
        .report_failure(
            &task.id,
            &FailureReport {
                worker_id: "test".into(),
                error_message: "the ledger is down".into(),
                error_details: None,
                retries: 0,
                retry_timeout: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(client.incidents(None).await.unwrap().len(), 1);

    // What the root orchestrator's timer does every minute.
    client
        .start_process_instance("procos-health", &StartProcessInstance::default())
        .await
        .unwrap();
    let base = client.base_url().trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let review: Value = assert_eventually(
        "error recovery to ask a person",
        Duration::from_secs(30),
        || async {
            let tasks: Vec<Value> = http
                .get(format!("{base}/task?taskDefinitionKey=review-retry"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            tasks.into_iter().next()
        },
    )
    .await;
    assert_eq!(review["name"], "Retry the failed tasks?");

    let done = http
        .post(format!(
            "{base}/task/{}/complete",
            review["id"].as_str().unwrap()
        ))
        .json(&json!({"variables": {"retry": {"value": true, "type": "Boolean"}}}))
        .send()
        .await
        .unwrap();
    assert!(done.status().is_success(), "{done:?}");
    assert!(
        client.incidents(None).await.unwrap().is_empty(),
        "the incident is resolved"
    );
    let retried = client
        .external_tasks(task.process_instance_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(retried[0].retries, Some(1), "one more attempt");

    // The task can now be fetched and completed.
    let again = support::lock_tasks(&client, "doomed", 1, None).await;
    assert_eq!(again.len(), 1);
    client
        .complete(
            &again[0].id,
            &CompleteTask {
                worker_id: "test".into(),
                variables: Default::default(),
                local_variables: Default::default(),
            },
        )
        .await
        .unwrap();
    engine.stop(Duration::from_secs(20)).await;
}
