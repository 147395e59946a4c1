//! The thinnest path: a real engine booted by the kernel on a free port (with Camunda Run's REST
//! basic authentication switched on), a model with one external task, an instance with a
//! variable, a worker with the `echo` adapter, and history showing the instance completed with
//! the worker's output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::{Auth, EngineClient, StartProcessInstance, Variable};
use procos_kernel::{Launcher, LocalEngine};
use procos_worker::TopicConfig;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{self, assert_eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_completes_through_a_worker_on_a_freshly_booted_engine() {
    let port = support::free_port();
    let data = tempfile::tempdir().unwrap();
    let engine = LocalEngine {
        launcher: Launcher::Jar {
            java: "java".into(),
            jar: support::engine_jar(),
        },
        port,
        data_dir: data.path().to_path_buf(),
        env: vec![],
    };
    let client =
        EngineClient::new(&format!("http://127.0.0.1:{port}/engine-rest"), Auth::None).unwrap();
    let process = engine
        .boot(
            &client,
            Duration::from_secs(180),
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .expect("the engine boots and answers");

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
