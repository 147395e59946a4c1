//! The worker against the real engine, in-process: lock extension, retries and incidents, BPMN
//! errors, typed and local write-back, per-topic concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::{
    EngineClient, ExternalTaskLogQuery, StartProcessInstance, Variable, Variables,
};
use chrono::{DateTime, Utc};
use procos_worker::{TopicConfig, WorkerConfig};
use serde_json::json;

use crate::support::{self, assert_eventually};

/// A task that runs three times its lock duration keeps its lock the whole time (so no other
/// worker can fetch it) and completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_three_times_its_lock_keeps_it_and_completes_once() {
    let client = support::engine();
    let key = support::unique("lock-keep");
    let topic = support::unique("slow");
    support::deploy(
        &client,
        &format!("{key}.bpmn"),
        &support::external_task_process(&key, &topic),
    )
    .await;

    let mut slow = TopicConfig::new("echo");
    slow.lock_duration = Duration::from_secs(2);
    slow.settings = toml::from_str("delay = '6s'").unwrap();
    // Two workers compete for the topic: had the lock lapsed, the other one would take the task.
    let (stop_a, worker_a) =
        support::start_worker(&client, support::topics(&[(&topic, slow.clone())]));
    let (stop_b, worker_b) = support::start_worker(&client, support::topics(&[(&topic, slow)]));

    let instance = client
        .start_process_instance(&key, &StartProcessInstance::default())
        .await
        .unwrap();

    let mut holder: Option<String> = None;
    let mut first_expiry: Option<DateTime<Utc>> = None;
    let mut last_expiry: Option<DateTime<Utc>> = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sampled_at = Utc::now();
        let tasks = client.external_tasks(&instance.id).await.unwrap();
        let Some(task) = tasks.first() else { break }; // completed
        if let (Some(worker), Some(expiry)) = (&task.worker_id, task.lock_expiration_time) {
            let expiry = expiry.with_timezone(&Utc);
            assert!(
                expiry > sampled_at,
                "the lock lapsed: it ended {expiry}, seen at {sampled_at}"
            );
            assert_eq!(
                holder.get_or_insert_with(|| worker.clone()),
                worker,
                "another worker took the task"
            );
            first_expiry.get_or_insert(expiry);
            last_expiry = Some(expiry);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task did not complete within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let extended_by = last_expiry.unwrap() - first_expiry.unwrap();
    assert!(
        extended_by >= chrono::Duration::seconds(3),
        "the lock was extended: by {extended_by}"
    );
    assert_eventually(
        "the instance to complete",
        Duration::from_secs(10),
        || async {
            let h = client.historic_process_instance(&instance.id).await.ok()?;
            (h.state == "COMPLETED").then_some(())
        },
    )
    .await;

    stop_a.cancel();
    stop_b.cancel();
    worker_a.await.unwrap();
    worker_b.await.unwrap();
}

async fn deploy_and_start(
    client: &EngineClient,
    key: &str,
    xml: &str,
    variables: Variables,
) -> String {
    support::deploy(client, &format!("{key}.bpmn"), xml).await;
    support::start(client, key, variables).await
}

fn fast_polling() -> WorkerConfig {
    // The engine re-checks waiting fetches for elapsed retry timeouts only every 30 s; short
    // polls make retry timing visible.
    WorkerConfig {
        long_poll: Duration::from_millis(300),
        ..support::quick_worker_config()
    }
}

/// retries = 3 and retry_backoff = 1s: failure reports leave 2, 1, then 0 retries, the second
/// wait longer than the first, and the incident carries the adapter's message and details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_adapter_counts_retries_down_then_raises_an_incident_naming_the_cause() {
    let client = support::engine();
    let key = support::unique("failing");
    let topic = support::unique("ledger");
    let instance = deploy_and_start(
        &client,
        &key,
        &support::external_task_process(&key, &topic),
        [("invoice".to_owned(), Variable::String("INV-7".into()))].into(),
    )
    .await;

    let mut failing = TopicConfig::new("echo");
    failing.settings = toml::from_str("fail = 'the ledger service answered 503'").unwrap();
    failing.retries = 3;
    failing.retry_backoff = Duration::from_secs(1);
    let (stop, worker) = support::start_worker_with(
        &client,
        fast_polling(),
        support::topics(&[(&topic, failing)]),
    );

    let incident = assert_eventually("an incident", Duration::from_secs(30), || async {
        client
            .incidents(Some(&instance))
            .await
            .unwrap()
            .into_iter()
            .next()
    })
    .await;
    stop.cancel();
    worker.await.unwrap();

    assert_eq!(incident.incident_type, "failedExternalTask");
    assert_eq!(
        incident.incident_message.as_deref(),
        Some("the ledger service answered 503")
    );
    let task_id = incident.configuration.clone().unwrap();
    let details = client.external_task_error_details(&task_id).await.unwrap();
    assert!(
        details.contains("settings.fail") && details.contains("INV-7"),
        "the details name the cause and the task's inputs: {details}"
    );

    let failures = support::task_log(
        &client,
        ExternalTaskLogQuery {
            process_instance_id: Some(instance.clone()),
            failure_log: Some(true),
            ..Default::default()
        },
    )
    .await;
    // Each failure entry records the retries the task had when it failed: none before the first.
    let retries: Vec<Option<i32>> = failures.iter().map(|f| f.retries).collect();
    assert_eq!(retries, [None, Some(2), Some(1)], "retries count down");
    let task = client.external_tasks(&instance).await.unwrap().remove(0);
    assert_eq!(task.retries, Some(0), "and end at 0");
    let first_wait = failures[1].timestamp - failures[0].timestamp;
    let second_wait = failures[2].timestamp - failures[1].timestamp;
    assert!(
        first_wait >= chrono::Duration::milliseconds(1000),
        "the first retry waits its retryTimeout: {first_wait}"
    );
    assert!(
        second_wait >= chrono::Duration::milliseconds(2000) && second_wait > first_wait,
        "the retryTimeout grows: {first_wait} then {second_wait}"
    );
}

/// An adapter's BPMN error ends up on the model's boundary error event, with its variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapters_business_error_is_caught_by_the_boundary_error_event() {
    let client = support::engine();
    let key = support::unique("bpmn-error");
    let topic = support::unique("reserve");
    let xml = support::model_with_error_boundary(&key, &topic);
    let instance = deploy_and_start(
        &client,
        &key,
        &xml,
        [("sku".to_owned(), Variable::String("A-1".into()))].into(),
    )
    .await;

    let mut raising = TopicConfig::new("echo");
    raising.settings = toml::from_str("bpmn_error = 'NO_STOCK'").unwrap();
    let (stop, worker) = support::start_worker(&client, support::topics(&[(&topic, raising)]));
    support::wait_completed(&client, &instance, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();

    support::assert_caught_by_boundary(&client, &instance).await;
    assert!(incident_free(&client, &instance).await);
}

/// A binary history variable's content: list queries leave it out, `/data` has it.
async fn historic_bytes(client: &EngineClient, instance: &str, name: &str) -> Vec<u8> {
    let base = client.base_url().trim_end_matches('/');
    let rows: Vec<serde_json::Value> = reqwest::get(format!(
        "{base}/history/variable-instance?processInstanceId={instance}&variableName={name}"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = rows[0]["id"].as_str().unwrap();
    let data = reqwest::get(format!("{base}/history/variable-instance/{id}/data"))
        .await
        .unwrap();
    assert!(data.status().is_success());
    data.bytes().await.unwrap().to_vec()
}

async fn incident_free(client: &EngineClient, instance: &str) -> bool {
    client.incidents(Some(instance)).await.unwrap().is_empty()
}

/// Outputs in Camunda's typed form are stored with that type: Date, Bytes, Long; plain JSON
/// gets the narrowest type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_written_back_with_their_camunda_types() {
    let client = support::engine();
    let key = support::unique("typed");
    let topic = support::unique("typed");
    // echo answers with its inputs; Json inputs in the typed form come back as typed outputs.
    let typed = |json: serde_json::Value| Variable::Json(json);
    let instance = deploy_and_start(
        &client,
        &key,
        &support::external_task_process(&key, &topic),
        [
            (
                "due".to_owned(),
                typed(json!({"type": "Date", "value": "2024-02-29T13:45:00Z"})),
            ),
            (
                "scan".to_owned(),
                typed(json!({"type": "Bytes", "value": "AP8H"})),
            ),
            (
                "count".to_owned(),
                typed(json!({"type": "Long", "value": 5})),
            ),
            ("doc".to_owned(), typed(json!({"a": [1, 2]}))),
            ("flag".to_owned(), Variable::Boolean(true)),
            ("none".to_owned(), Variable::Null),
        ]
        .into(),
    )
    .await;
    let (stop, worker) = support::start_worker(
        &client,
        support::topics(&[(&topic, TopicConfig::new("echo"))]),
    );
    support::wait_completed(&client, &instance, Duration::from_secs(30)).await;
    stop.cancel();
    worker.await.unwrap();

    let vars = client.historic_variables(&instance).await.unwrap();
    let due = chrono::DateTime::parse_from_rfc3339("2024-02-29T13:45:00Z").unwrap();
    assert_eq!(vars["due"], Variable::Date(due));
    assert_eq!(vars["scan"].type_name(), "Bytes");
    assert_eq!(
        historic_bytes(&client, &instance, "scan").await,
        [0, 255, 7],
        "the bytes themselves"
    );
    assert_eq!(vars["count"], Variable::Long(5));
    assert_eq!(vars["doc"], Variable::Json(json!({"a": [1, 2]})));
    assert_eq!(vars["flag"], Variable::Boolean(true));
    assert_eq!(vars["none"], Variable::Null);
}

/// With `local_outputs`, outputs land in the task's own scope: the model's output mapping sees
/// them, the process scope keeps what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_outputs_feed_the_models_output_mapping_and_stay_out_of_the_process_scope() {
    let client = support::engine();
    let key = support::unique("local");
    let topic = support::unique("local");
    let xml = support::model(
        &key,
        &topic,
        r#"<bpmn:extensionElements><camunda:inputOutput>
          <camunda:outputParameter name="total">${count}</camunda:outputParameter>
        </camunda:inputOutput></bpmn:extensionElements>"#,
        &format!(
            r#"<bpmn:serviceTask id="after" camunda:type="external" camunda:topic="{topic}-after"/>"#
        ),
    );
    // echo answers `count` in the typed form, i.e. as a Long: the process scope's `count` is Json.
    let typed_count = Variable::Json(json!({"type": "Long", "value": 8}));
    let instance = deploy_and_start(
        &client,
        &key,
        &xml,
        [("count".to_owned(), typed_count.clone())].into(),
    )
    .await;
    let mut local = TopicConfig::new("echo");
    local.local_outputs = true;
    let (stop, worker) = support::start_worker(&client, support::topics(&[(&topic, local)]));
    let vars = assert_eventually(
        "the output mapping to run",
        Duration::from_secs(30),
        || async {
            let vars = client.process_instance_variables(&instance).await.ok()?;
            vars.contains_key("total").then_some(vars)
        },
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        vars["total"],
        Variable::Long(8),
        "the mapping saw the local output"
    );
    assert_eq!(vars["count"], typed_count, "the process scope is untouched");
}

/// A topic with `max_tasks = 1` runs its tasks one after another even though the worker has
/// room for more; a topic without a limit of its own on the same worker runs in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_own_max_tasks_bounds_its_concurrency() {
    let client = support::engine();
    let key_serial = support::unique("serial");
    let key_parallel = support::unique("parallel");
    let serial = support::unique("serial");
    let parallel = support::unique("parallel");
    support::deploy(
        &client,
        &format!("{key_serial}.bpmn"),
        &support::external_task_process(&key_serial, &serial),
    )
    .await;
    support::deploy(
        &client,
        &format!("{key_parallel}.bpmn"),
        &support::external_task_process(&key_parallel, &parallel),
    )
    .await;
    for key in [&key_serial, &key_parallel] {
        for _ in 0..3 {
            client
                .start_process_instance(key, &StartProcessInstance::default())
                .await
                .unwrap();
        }
    }
    let mut one_at_a_time = TopicConfig::new("echo");
    one_at_a_time.max_tasks = Some(1);
    one_at_a_time.settings = toml::from_str("delay = '1s'").unwrap();
    let mut unbounded = TopicConfig::new("echo");
    unbounded.settings = toml::from_str("delay = '1s'").unwrap();
    let (stop, worker) = support::start_worker_with(
        &client,
        WorkerConfig {
            // The default long poll: a topic at its limit must not wait it out.
            long_poll: Duration::from_secs(30),
            ..fast_polling()
        },
        support::topics(&[(&serial, one_at_a_time), (&parallel, unbounded)]),
    );
    let done = |key: String| {
        let client = client.clone();
        async move {
            assert_eventually("three completions", Duration::from_secs(30), || async {
                let log = support::completions(&client, &key).await;
                (log.len() == 3).then_some(log)
            })
            .await
        }
    };
    let serial_log = done(key_serial).await;
    let parallel_log = done(key_parallel).await;
    stop.cancel();
    worker.await.unwrap();

    let spread = |log: &[camunda_client::ExternalTaskLogEntry]| log[2].timestamp - log[0].timestamp;
    assert!(
        spread(&serial_log) >= chrono::Duration::milliseconds(1900),
        "one at a time: the third ended {} after the first",
        spread(&serial_log)
    );
    assert!(
        spread(&serial_log) < chrono::Duration::seconds(8),
        "each next task of the limited topic starts soon after a slot frees, not a long poll later: {}",
        spread(&serial_log)
    );
    assert!(
        spread(&parallel_log) < chrono::Duration::milliseconds(1000),
        "in parallel: all ended within {}",
        spread(&parallel_log)
    );
}
