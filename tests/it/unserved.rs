//! Topics with waiting tasks and no worker serving them, against the real engine: what
//! `procos status` names, what the kernel's watch reports once, and the incident the kernel
//! raises when `[kernel] fail_unserved_after` is set.
//!
//! The shared engine holds other tests' tasks of topics no table here names; these tests look
//! only at their own topics, and fail only their own tasks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use procos_kernel::{
    KERNEL_WORKER_ID, KernelEvent, Unserved, UnservedSettings, UnservedTopic, UnservedWatch,
};
use procos_worker::TopicConfig;

use crate::support::{self, ProcosProcess, assert_eventually};

async fn unserved(
    client: &camunda_client::EngineClient,
    table: &BTreeSet<String>,
    stale_after: Duration,
    topic: &str,
) -> Option<UnservedTopic> {
    procos_kernel::survey(client, table, stale_after)
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.topic == topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_a_topic_no_table_serves_with_its_tasks_and_age_but_not_a_served_one() {
    let client = support::engine();
    let (lonely_key, lonely) = support::deploy_process(&client, "unserved").await;
    for _ in 0..2 {
        support::start(&client, &lonely_key, Default::default()).await;
    }
    // A served topic with a backlog: one task at a time, each for 3 s, so two wait.
    let (busy_key, busy) = support::deploy_process(&client, "served").await;
    let mut one_at_a_time = TopicConfig::new("echo");
    one_at_a_time.max_tasks = Some(1);
    one_at_a_time.settings = toml::from_str("delay = '3s'").unwrap();
    let (stop, worker) = support::start_quick_worker(&client, &busy, one_at_a_time);
    for _ in 0..3 {
        support::start(&client, &busy_key, Default::default()).await;
    }
    assert_eventually(
        "the served topic to have a task locked and tasks waiting",
        Duration::from_secs(20),
        || async {
            let waiting = client.waiting_external_task_count(&busy).await.ok()?;
            (waiting == 2).then_some(())
        },
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("procos.toml");
    std::fs::write(
        &config,
        format!("[topics.\"{busy}\"]\nadapter = \"echo\"\n"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_procos"))
        .arg("--config")
        .arg(&config)
        .arg("status")
        .env("PROCOS_ENGINE_URL", support::engine_url())
        .env_remove("PROCOS_CONFIG")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}\n{text}");
    assert!(
        text.contains("with waiting tasks and no worker serving them:"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains(&format!("topic `{lonely}`")))
        .unwrap_or_else(|| panic!("`{lonely}` is named:\n{text}"));
    assert!(
        line.contains("2 task(s) waiting, the oldest for "),
        "{line}"
    );
    assert!(
        line.contains(&format!("[topics.{lonely}]")),
        "the fix: {line}"
    );
    assert!(
        !text.contains(&format!("`{busy}`")),
        "a topic a worker serves is not named, backlog or not:\n{text}"
    );

    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_topic_whose_tasks_no_worker_fetched_counts_once_they_waited_too_long() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "unfetched").await;
    support::start(&client, &key, Default::default()).await;
    let table: BTreeSet<String> = [topic.clone()].into();

    assert_eq!(
        unserved(&client, &table, Duration::from_secs(60), &topic).await,
        None,
        "a young task of a configured topic is waiting, not unserved"
    );
    let found = assert_eventually(
        "the topic to count as unserved after 1 s",
        Duration::from_secs(20),
        || unserved(&client, &table, Duration::from_secs(1), &topic),
    )
    .await;
    assert_eq!(found.reason, Unserved::NotFetched);
    assert_eq!(found.waiting, 1);
    assert!(found.waited.unwrap() > Duration::from_secs(1), "{found:?}");
    let line = procos_kernel::unserved_topic_message(&found);
    assert!(
        line.contains("is configured, but no worker fetched it"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernels_watch_reports_a_topic_once_when_unserved_and_once_when_served() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "watched").await;
    support::start(&client, &key, Default::default()).await;
    // The table names another topic, so this one is unserved; nothing is ever failed.
    let table: BTreeSet<String> = ["some-other-topic".to_owned()].into();
    let mut watch = UnservedWatch::new(
        client.clone(),
        table,
        UnservedSettings {
            stale_after: Duration::from_secs(60),
            fail_after: None,
            check_interval: Duration::ZERO,
        },
    );
    let mine = |events: &[KernelEvent]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                KernelEvent::TopicUnserved(t) if t.topic == topic => {
                    Some(format!("unserved {}", t.waiting))
                }
                KernelEvent::TopicServed { topic: t } if *t == topic => Some("served".into()),
                _ => None,
            })
            .collect()
    };
    assert!(watch.due());
    assert_eq!(mine(&watch.check().await), ["unserved 1"]);
    assert_eq!(
        mine(&watch.check().await),
        Vec::<String>::new(),
        "the same state is not reported again"
    );

    // A worker (this test) takes the task: the topic is no longer unserved.
    let locked = support::lock_tasks(&client, &topic, 1, Some(&key)).await;
    assert_eq!(locked.len(), 1);
    assert_eq!(mine(&watch.check().await), ["served"]);
    assert_eq!(mine(&watch.check().await), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_fail_unserved_after_a_waiting_task_ends_in_an_incident_naming_its_topic() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "failed-unserved").await;
    let waiting = support::start(&client, &key, Default::default()).await;
    let taken = support::start(&client, &key, Default::default()).await;
    // A worker holds one of the two: the kernel must leave that one alone.
    let locked = support::lock_tasks(&client, &topic, 1, Some(&key)).await;
    assert_eq!(locked.len(), 1);
    let (waiting, taken) = if locked[0].process_instance_id.as_deref() == Some(&taken) {
        (waiting, taken)
    } else {
        (taken, waiting)
    };

    let table: BTreeSet<String> = ["python".to_owned()].into();
    let fail_after = Duration::from_secs(1);
    let found = assert_eventually(
        "the waiting task to have waited 1 s",
        Duration::from_secs(20),
        || async {
            unserved(&client, &table, Duration::from_secs(60), &topic)
                .await
                .filter(|t| t.waited.is_some_and(|w| w > fail_after))
        },
    )
    .await;
    assert_eq!(found.reason, Unserved::NotInTable);
    assert_eq!(found.waiting, 1, "the locked task does not wait");

    let failed = procos_kernel::fail_waiting_tasks(&client, KERNEL_WORKER_ID, &found, fail_after)
        .await
        .unwrap();
    assert_eq!(failed, 1);

    let incident = support::incident(&client, &waiting, Duration::from_secs(20)).await;
    let message = incident.incident_message.unwrap_or_default();
    assert!(
        message.starts_with(&format!("no worker serves topic `{topic}` (waited ")),
        "{message}"
    );
    assert!(
        message.contains(&format!("add [topics.{topic}] to the fleet's topic table")),
        "{message}"
    );
    let details = client
        .external_task_error_details(incident.configuration.as_deref().unwrap())
        .await
        .unwrap();
    assert!(details.contains("fail_unserved_after (1s)"), "{details}");
    assert!(details.contains("To fix"), "{details}");

    assert!(
        client.incidents(Some(&taken)).await.unwrap().is_empty(),
        "the task a worker holds is not failed"
    );
    let held = client.external_tasks(&taken).await.unwrap();
    assert_eq!(held[0].worker_id.as_deref(), Some("test"), "{held:?}");
    assert_eq!(
        unserved(&client, &table, Duration::from_secs(60), &topic).await,
        None,
        "nothing of the topic waits any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_added_to_the_table_while_the_kernel_runs_counts_as_served() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "reloaded").await;
    support::start(&client, &key, Default::default()).await;
    let init = tempfile::tempdir().unwrap();
    let config = "[kernel]\nroot_process = \"\"\n[topics.echo]\nadapter = \"echo\"\n";
    let kernel = ProcosProcess::spawn_command(
        &["kernel", "--init-dir", init.path().to_str().unwrap()],
        &support::engine_url(),
        "kernel-reload",
        config,
        &[],
    );
    let not_in_table = format!("topic `{topic}`: 1 task(s) waiting");
    assert_eventually(
        "the kernel to report the topic as not in the fleet's table",
        Duration::from_secs(60),
        || async { kernel.log().contains(&not_in_table).then_some(()) },
    )
    .await;
    assert!(
        kernel.log().contains("the fleet's topic table has no"),
        "{}",
        kernel.log()
    );

    // The operator adds the topic (a worker for it may come later): the kernel counts it as
    // served at once, rather than at its next start.
    let path = kernel.dir.path().join("procos.toml");
    std::fs::write(
        &path,
        format!("{config}[topics.\"{topic}\"]\nadapter = \"echo\"\n"),
    )
    .unwrap();
    let served = format!("topic `{topic}`: no task waits unserved any more");
    assert_eventually(
        "the kernel to count the added topic as served",
        Duration::from_secs(30),
        || async { kernel.log().contains(&served).then_some(()) },
    )
    .await;
    kernel.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = kernel.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains("topic table reloaded: the fleet's topics are now"),
        "{log}"
    );
}
