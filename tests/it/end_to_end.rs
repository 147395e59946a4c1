//! The thinnest path: a real engine booted by the kernel on a free port (with Camunda Run's REST
//! basic authentication switched on), a model with one external task, an instance with a
//! variable, a worker with the `echo` adapter, and history showing the instance completed with
//! the worker's output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::{Auth, EngineClient, StartProcessInstance, Variable};
use procos_worker::TopicConfig;
use serde_json::json;

use crate::support::{self, assert_eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_completes_through_a_worker_on_a_freshly_booted_engine() {
    let data = tempfile::tempdir().unwrap();
    let auth_on = vec![("CAMUNDA_BPM_RUN_AUTH_ENABLED".to_owned(), "true".to_owned())];
    // Booting waits on GET /engine, which answers without credentials.
    let (anonymous, process) =
        support::boot_engine(support::free_port(), data.path(), auth_on).await;
    let refused = anonymous.process_definitions("anything").await.unwrap_err();
    assert_eq!(
        refused.status(),
        Some(401),
        "anonymous calls are refused: {refused}"
    );
    let client = EngineClient::new(
        anonymous.base_url(),
        Auth::Basic {
            user: "demo".into(),
            password: "demo".into(),
        },
    )
    .unwrap();

    let key = support::unique("e2e");
    support::deploy(
        &client,
        "e2e.bpmn",
        &support::external_task_process(&key, "greet"),
    )
    .await;
    let instance = client
        .start_process_instance(
            &key,
            &StartProcessInstance {
                variables: [("greeting".to_owned(), Variable::String("hello".into()))].into(),
                business_key: None,
            },
        )
        .await
        .unwrap();

    // Without a worker, nothing moves: completion below is the worker's doing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = client
        .historic_process_instance(&instance.id)
        .await
        .unwrap();
    assert_eq!(before.state, "ACTIVE");

    let mut topic = TopicConfig::new("echo");
    topic.result_variable = Some("echoed".into());
    let (stop, worker) = support::start_worker(&client, support::topics(&[("greet", topic)]));

    let history = assert_eventually(
        "the instance to complete",
        Duration::from_secs(30),
        || async {
            let h = client.historic_process_instance(&instance.id).await.ok()?;
            (h.state == "COMPLETED").then_some(h)
        },
    )
    .await;
    assert!(history.end_time.is_some());
    let variables = client.historic_variables(&instance.id).await.unwrap();
    assert_eq!(
        variables.get("echoed"),
        Some(&Variable::Json(json!({"greeting": "hello"})))
    );

    stop.cancel();
    worker.await.unwrap();
    process.stop(Duration::from_secs(20)).await;
    assert!(
        support::processes_in(data.path()).is_empty(),
        "the engine process is gone"
    );
}
