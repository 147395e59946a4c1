//! `procos worker` processes against the real engine: a fleet sharing work exactly once, a
//! worker killed mid-task, a graceful drain, an engine outage, and a configuration refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use camunda_client::EngineClient;
use nix::sys::signal::Signal;

use crate::support::{self, ProcosProcess, assert_eventually};

/// A worker configuration for `topic` served by echo with `settings` (TOML inline-table body).
fn config(topic: &str, worker: &str, topic_extra: &str, settings: &str) -> String {
    format!(
        "[worker]\nlong_poll = \"2s\"\n{worker}\n\n[topics.\"{topic}\"]\nadapter = \"echo\"\n{topic_extra}\nsettings = {{ {settings} }}\n"
    )
}

/// The worker that holds the lock of `instance`'s external task, if any.
async fn lock_holder(client: &EngineClient, instance: &str) -> Option<String> {
    let tasks = client.external_tasks(instance).await.ok()?;
    tasks.first()?.worker_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_instances_through_three_worker_processes_complete_exactly_once() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "fleet").await;
    let metrics_port = support::free_port();
    let workers: Vec<ProcosProcess> = (0..3)
        .map(|i| {
            let listen = if i == 0 {
                format!("listen = \"127.0.0.1:{metrics_port}\"")
            } else {
                String::new()
            };
            ProcosProcess::spawn(
                &support::engine_url(),
                &format!("{key}-w{i}"),
                &config(&topic, &format!("max_tasks = 8\n{listen}"), "", ""),
            )
        })
        .collect();

    let mut instances = BTreeSet::new();
    for _ in 0..500 {
        instances.insert(support::start(&client, &key, Default::default()).await);
    }
    let log = assert_eventually(
        "500 completions in the external-task log",
        Duration::from_secs(180),
        || async {
            let log = support::completions(&client, &key).await;
            (log.len() >= 500).then_some(log)
        },
    )
    .await;
    // Anything still in flight would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log_after = support::completions(&client, &key).await;
    assert_eq!(log_after.len(), 500, "no completion beyond one per task");

    let mut per_task: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in &log {
        *per_task.entry(&entry.external_task_id).or_default() += 1;
    }
    assert_eq!(per_task.len(), 500, "500 distinct tasks completed");
    assert!(per_task.values().all(|n| *n == 1), "none completed twice");
    let completed_instances: BTreeSet<String> = log
        .iter()
        .filter_map(|e| e.process_instance_id.clone())
        .collect();
    assert_eq!(
        completed_instances, instances,
        "every instance's task, once"
    );
    let by_worker: BTreeSet<&str> = log.iter().filter_map(|e| e.worker_id.as_deref()).collect();
    assert_eq!(
        by_worker.len(),
        3,
        "all three workers took part: {by_worker:?}"
    );

    let scrape = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let completed_line =
        format!(r#"procos_worker_tasks_total{{topic="{topic}",outcome="completed"}}"#);
    assert!(
        scrape.lines().any(|l| l.starts_with(&completed_line)),
        "the first worker counts its completions:\n{scrape}"
    );
    let ready = reqwest::get(format!("http://127.0.0.1:{metrics_port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    for worker in workers {
        worker.signal(Signal::SIGTERM);
        let (status, _) = worker.wait(Duration::from_secs(30)).await;
        assert!(status.success(), "exit status {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_worker_is_completed_by_another_after_its_lock_expires() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "kill9").await;
    let url = support::engine_url();
    let doomed_id = format!("{key}-doomed");
    let doomed = ProcosProcess::spawn(
        &url,
        &doomed_id,
        &config(&topic, "", "lock_duration = \"3s\"", "delay = \"60s\""),
    );
    let instance = support::start(&client, &key, Default::default()).await;
    assert_eventually(
        "the doomed worker to lock the task",
        Duration::from_secs(30),
        || async {
            (lock_holder(&client, &instance).await.as_deref() == Some(doomed_id.as_str()))
                .then_some(())
        },
    )
    .await;
    doomed.signal(Signal::SIGKILL);
    let _ = doomed.wait(Duration::from_secs(10)).await;

    let survivor_id = format!("{key}-survivor");
    let survivor = ProcosProcess::spawn(
        &url,
        &survivor_id,
        &config(&topic, "", "lock_duration = \"3s\"", ""),
    );
    let log = assert_eventually(
        "another worker to complete the task",
        Duration::from_secs(40),
        || async {
            let log = support::completions(&client, &key).await;
            (!log.is_empty()).then_some(log)
        },
    )
    .await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].worker_id.as_deref(), Some(survivor_id.as_str()));
    let history = client.historic_process_instance(&instance).await.unwrap();
    assert_eq!(history.state, "COMPLETED");
    survivor.signal(Signal::SIGTERM);
    assert!(survivor.wait(Duration::from_secs(30)).await.0.success());
}

/// SIGTERM while two tasks run and two wait in the engine: the two finish and are completed by
/// the draining worker, the two waiting ones were never locked by it, and it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_tasks_finish_and_exits_zero() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "drain").await;
    let url = support::engine_url();
    let draining_id = format!("{key}-draining");
    let draining = ProcosProcess::spawn(
        &url,
        &draining_id,
        &config(
            &topic,
            "max_tasks = 2\ngrace_period = \"15s\"",
            "",
            "delay = \"3s\"",
        ),
    );
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(support::start(&client, &key, Default::default()).await);
    }
    let locked = assert_eventually("two tasks locked", Duration::from_secs(30), || async {
        let mut locked = Vec::new();
        for instance in &instances {
            if lock_holder(&client, instance).await.is_some() {
                locked.push(instance.clone());
            }
        }
        (locked.len() == 2).then_some(locked)
    })
    .await;
    let signalled = std::time::Instant::now();
    draining.signal(Signal::SIGTERM);
    let (status, log) = draining.wait(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(signalled.elapsed() < Duration::from_secs(15));

    let completed = support::completions(&client, &key).await;
    let completed_instances: BTreeSet<String> = completed
        .iter()
        .filter_map(|e| e.process_instance_id.clone())
        .collect();
    assert_eq!(
        completed_instances,
        locked.iter().cloned().collect::<BTreeSet<_>>(),
        "the running tasks finished"
    );
    assert!(
        completed
            .iter()
            .all(|e| e.worker_id.as_deref() == Some(draining_id.as_str()))
    );
    for instance in instances.iter().filter(|i| !locked.contains(i)) {
        assert_eq!(
            lock_holder(&client, instance).await,
            None,
            "a waiting task stays free for other workers"
        );
    }
}

/// A task still running when the grace period ends is cancelled and unlocked at once: another
/// worker may fetch it without waiting for the lock to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_outliving_the_grace_period_is_unlocked_for_other_workers() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "grace").await;
    let url = support::engine_url();
    let id = format!("{key}-short-grace");
    let worker = ProcosProcess::spawn(
        &url,
        &id,
        &config(
            &topic,
            "grace_period = \"1s\"",
            "lock_duration = \"5m\"",
            "delay = \"10m\"",
        ),
    );
    let instance = support::start(&client, &key, Default::default()).await;
    assert_eventually("the task to be locked", Duration::from_secs(30), || async {
        (lock_holder(&client, &instance).await.as_deref() == Some(id.as_str())).then_some(())
    })
    .await;
    let signalled = std::time::Instant::now();
    worker.signal(Signal::SIGTERM);
    let (status, log) = worker.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exits soon after the grace period: {:?}",
        signalled.elapsed()
    );
    let task = client.external_tasks(&instance).await.unwrap().remove(0);
    assert_eq!(
        task.worker_id, None,
        "unlocked although the lock had 5 min left"
    );
    assert!(task.lock_expiration_time.is_none());
}

/// The engine stops for 20 s while a worker runs tasks, then comes back on the same database:
/// the worker reports not-ready meanwhile, stays up, and every instance completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_an_engine_outage_and_lose_no_task() {
    let port = support::free_port();
    let data = tempfile::tempdir().unwrap();
    let (client, first) = support::boot_engine(port, data.path(), vec![]).await;
    let url = client.base_url().to_owned();
    let (key, topic) = support::deploy_process(&client, "outage").await;
    let metrics_port = support::free_port();
    let mut worker = ProcosProcess::spawn(
        &url,
        &format!("{key}-w"),
        &config(
            &topic,
            &format!("max_tasks = 2\nlisten = \"127.0.0.1:{metrics_port}\""),
            "",
            "delay = \"3s\"",
        ),
    );
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(support::start(&client, &key, Default::default()).await);
    }
    let readyz = format!("http://127.0.0.1:{metrics_port}/readyz");
    let ready_status = || async {
        reqwest::get(&readyz)
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    assert_eventually(
        "the worker to be ready",
        Duration::from_secs(20),
        || async { (ready_status().await == Some(200)).then_some(()) },
    )
    .await;
    assert_eventually("two tasks running", Duration::from_secs(20), || async {
        let mut running = 0;
        for instance in &instances {
            running += usize::from(lock_holder(&client, instance).await.is_some());
        }
        (running == 2).then_some(())
    })
    .await;

    first.stop(Duration::from_secs(20)).await;
    assert_eventually(
        "the worker to report the outage",
        Duration::from_secs(20),
        || async { (ready_status().await == Some(503)).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker is still running after 20 s without an engine"
    );
    // Again on the same port and database.
    let (_, second) = support::boot_engine(port, data.path(), vec![]).await;

    for instance in &instances {
        assert_eventually(
            "every instance to complete",
            Duration::from_secs(90),
            || async {
                let h = client.historic_process_instance(instance).await.ok()?;
                (h.state == "COMPLETED").then_some(())
            },
        )
        .await;
    }
    assert_eq!(ready_status().await, Some(200));
    worker.signal(Signal::SIGTERM);
    assert!(worker.wait(Duration::from_secs(30)).await.0.success());
    second.stop(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_topic_configuration_is_refused_naming_file_key_and_fix() {
    let worker = ProcosProcess::spawn(
        &support::engine_url(),
        "refused",
        "[topics.invoices]\nadapter = \"echo\"\nlock_duration = \"10ms\"\n",
    );
    let file = worker.dir.path().join("procos.toml");
    let (status, log) = worker.wait(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&file.display().to_string()),
        "names the file: {log}"
    );
    assert!(
        log.contains("topics.invoices.lock_duration"),
        "names the key: {log}"
    );
    assert!(
        log.contains("fix: set lock_duration = \"60s\""),
        "says the fix: {log}"
    );

    let worker = ProcosProcess::spawn(
        &support::engine_url(),
        "refused-2",
        "[topics.invoices]\nadapter = \"echo\"\nlock_duraton = \"10s\"\n",
    );
    let (status, log) = worker.wait(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("lock_duraton") && log.contains("lock_duration"),
        "an unknown key is named with the expected ones: {log}"
    );
}
