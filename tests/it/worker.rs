//! The worker against the real engine: lock extension.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::StartProcessInstance;
use chrono::{DateTime, Utc};
use procos_worker::TopicConfig;

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
