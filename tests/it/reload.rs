//! The topic table reloaded while workers run, against the real engine: in-process through
//! `TopicTable`, and through `procos worker` with its file edited on disk and SIGHUP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use camunda_client::EngineClient;
use procos_worker::{Telemetry, TopicConfig, TopicTable, Worker};

use crate::support::{self, ProcosProcess, assert_eventually};

fn echo(delay: &str) -> TopicConfig {
    let mut config = TopicConfig::new("echo");
    config.settings = toml::from_str(&format!("delay = '{delay}'")).unwrap();
    // Short, so that a task locked by mistake would show up as a second run within the test.
    config.lock_duration = Duration::from_secs(5);
    config
}

/// A sample of `telemetry`'s scrape, 0 when absent.
fn sample(telemetry: &Telemetry, name: &str, labels: &str) -> u64 {
    let line = format!("{name}{{{labels}}} ");
    telemetry
        .encode_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn started(telemetry: &Telemetry, topic: &str) -> u64 {
    sample(
        telemetry,
        "procos_worker_tasks_fetched_total",
        &format!("topic=\"{topic}\""),
    )
}

fn completed(telemetry: &Telemetry, topic: &str) -> u64 {
    sample(
        telemetry,
        "procos_worker_tasks_total",
        &format!("topic=\"{topic}\",outcome=\"completed\""),
    )
}

fn in_flight(telemetry: &Telemetry, topic: &str) -> u64 {
    sample(
        telemetry,
        "procos_worker_tasks_in_flight",
        &format!("topic=\"{topic}\""),
    )
}

/// Success entries of the external-task log of `key`, with each task counted once at most.
async fn completed_once(client: &EngineClient, key: &str) -> usize {
    let entries = support::completions(client, key).await;
    let tasks: HashSet<&str> = entries
        .iter()
        .map(|e| e.external_task_id.as_str())
        .collect();
    assert_eq!(
        tasks.len(),
        entries.len(),
        "a task of {key} was completed twice"
    );
    entries.len()
}

async fn start_many(client: &EngineClient, key: &str, n: usize) -> Vec<String> {
    let mut instances = Vec::with_capacity(n);
    for _ in 0..n {
        instances.push(support::start(client, key, Default::default()).await);
    }
    instances
}

/// 200 instances over two echo topics (one slow, so tasks are in flight): a topic added is
/// served, a removed one drains its running tasks and leaves the rest waiting unlocked until it
/// comes back, an invalid table is refused while the old one serves, and in the end every task
/// ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_added_removed_and_refused_while_running_lose_no_task_and_run_none_twice() {
    let client = support::engine();
    let (key_a, topic_a) = support::deploy_process(&client, "reload-a").await;
    let (key_b, topic_b) = support::deploy_process(&client, "reload-b").await;
    let (key_c, topic_c) = support::deploy_process(&client, "reload-c").await;
    let a = start_many(&client, &key_a, 100).await;
    let b = start_many(&client, &key_b, 100).await;
    let c = start_many(&client, &key_c, 20).await;

    let first: BTreeMap<String, TopicConfig> =
        support::topics(&[(&topic_a, echo("50ms")), (&topic_b, echo("1s"))]);
    let mut worker_config = support::quick_worker_config();
    worker_config.max_tasks = 10;
    // A long poll, so that new tables must cut it short.
    worker_config.long_poll = Duration::from_secs(20);
    let telemetry = Telemetry::new();
    let table = TopicTable::new(&worker_config, first.clone(), telemetry.clone());
    let worker = Worker::new(client.clone(), worker_config, &first, telemetry.clone()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run_with_table(stop.clone(), table.updates()));

    assert_eventually(
        "some of topic b's tasks to complete",
        Duration::from_secs(60),
        || async { (completed(&telemetry, &topic_b) >= 10).then_some(()) },
    )
    .await;

    // b removed (with tasks in flight), c added.
    let change = table
        .replace(support::topics(&[
            (&topic_a, echo("50ms")),
            (&topic_c, echo("10ms")),
        ]))
        .unwrap();
    assert_eq!(change.added, std::slice::from_ref(&topic_c));
    assert_eq!(change.removed, std::slice::from_ref(&topic_b));
    assert!(change.changed.is_empty());

    assert_eventually(
        "the added topic's instances to complete",
        Duration::from_secs(60),
        || async { (completed_once(&client, &key_c).await == c.len()).then_some(()) },
    )
    .await;
    assert_eventually(
        "the removed topic's running tasks to finish",
        Duration::from_secs(30),
        || async { (in_flight(&telemetry, &topic_b) == 0).then_some(()) },
    )
    .await;
    let drained = completed_once(&client, &key_b).await;
    assert_eq!(
        drained as u64,
        started(&telemetry, &topic_b),
        "every task of the removed topic that started completed"
    );
    assert!(drained < b.len(), "tasks of the removed topic remain");
    // The rest wait, unlocked, and nobody runs them: not this worker (it would count them),
    // and no lock held for a request nobody reads.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(completed_once(&client, &key_b).await, drained);
    let mut waiting = 0;
    for instance in &b {
        for task in client.external_tasks(instance).await.unwrap() {
            assert_eq!(
                task.worker_id, None,
                "task {} of the removed topic is locked",
                task.id
            );
            waiting += 1;
        }
    }
    assert_eq!(
        drained + waiting,
        b.len(),
        "no task of the removed topic is lost"
    );

    // An invalid table is refused with the start's message; the running one serves on.
    let err = table
        .replace(support::topics(&[
            (&topic_a, echo("50ms")),
            (
                &topic_c,
                TopicConfig {
                    lock_duration: Duration::from_millis(10),
                    ..echo("10ms")
                },
            ),
        ]))
        .unwrap_err();
    assert_eq!(err.key, format!("topics.{topic_c}.lock_duration"));
    assert!(err.fix.contains("60s"), "{err}");
    let note = telemetry.refused_table().expect("the refusal is reported");
    assert!(note.contains("lock_duration"), "{note}");
    assert!(telemetry.readiness().is_ok(), "the old table serves");
    assert_eq!(table.current().len(), 2);
    let more_c = start_many(&client, &key_c, 5).await;
    assert_eventually(
        "the running table to serve on",
        Duration::from_secs(30),
        || async {
            (completed_once(&client, &key_c).await == c.len() + more_c.len()).then_some(())
        },
    )
    .await;

    // b back: its waiting tasks are served; every instance completes, each task exactly once.
    table
        .replace(support::topics(&[
            (&topic_a, echo("50ms")),
            (&topic_b, echo("100ms")),
            (&topic_c, echo("10ms")),
        ]))
        .unwrap();
    assert_eq!(telemetry.refused_table(), None);
    for (key, instances) in [(&key_a, a.len()), (&key_b, b.len())] {
        assert_eventually(
            &format!("every instance of {key} to complete"),
            Duration::from_secs(90),
            || async { (completed_once(&client, key).await == instances).then_some(()) },
        )
        .await;
    }
    for topic in [&topic_a, &topic_b, &topic_c] {
        assert_eq!(
            started(&telemetry, topic),
            completed(&telemetry, topic),
            "{topic}: every task this worker started completed"
        );
    }
    assert_eq!(started(&telemetry, &topic_a), 100);
    assert_eq!(started(&telemetry, &topic_b), 100, "no task of b ran twice");
    assert_eq!(started(&telemetry, &topic_c), 25);

    stop.cancel();
    running.await.unwrap();
}

fn worker_file(listen: u16, topics: &[(&str, &str)]) -> String {
    let mut text = format!("[worker]\nlisten = \"127.0.0.1:{listen}\"\nlong_poll = \"20s\"\n");
    for (topic, extra) in topics {
        text.push_str(&format!(
            "\n[topics.\"{topic}\"]\nadapter = \"echo\"\n{extra}\n"
        ));
    }
    text
}

async fn readyz(port: u16) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `procos worker --config FILE`: a topic added to the file is served, an invalid edit is
/// refused (log and `/readyz` say so) while the old table serves, and SIGHUP reloads a file whose
/// change the watcher could not see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procos_worker_reloads_its_file_when_edited_and_on_sighup() {
    let client = support::engine();
    let (key_x, topic_x) = support::deploy_process(&client, "reload-x").await;
    let (key_y, topic_y) = support::deploy_process(&client, "reload-y").await;
    let port = support::free_port();
    let worker = ProcosProcess::spawn(
        &support::engine_url(),
        &support::unique("reloading"),
        &worker_file(port, &[(&topic_x, "")]),
    );
    let path = worker.dir.path().join("procos.toml");
    let x = support::start(&client, &key_x, Default::default()).await;
    support::wait_completed(&client, &x, Duration::from_secs(30)).await;

    // Added in the file: served.
    let y = support::start(&client, &key_y, Default::default()).await;
    std::fs::write(&path, worker_file(port, &[(&topic_x, ""), (&topic_y, "")])).unwrap();
    support::wait_completed(&client, &y, Duration::from_secs(30)).await;

    // An invalid edit: refused, the old table serves on, /readyz stays ready and says so.
    let invalid = worker_file(
        port,
        &[(&topic_x, ""), (&topic_y, "lock_duration = \"10ms\"")],
    );
    std::fs::write(&path, &invalid).unwrap();
    let body = assert_eventually(
        "/readyz to name the refused table",
        Duration::from_secs(15),
        || async {
            let (status, body) = readyz(port).await;
            (status == 200 && body.contains("refused")).then_some(body)
        },
    )
    .await;
    assert!(
        body.contains(&format!("topics.{topic_y}.lock_duration")),
        "{body}"
    );
    let y2 = support::start(&client, &key_y, Default::default()).await;
    support::wait_completed(&client, &y2, Duration::from_secs(30)).await;

    // A valid file the watcher cannot tell from the invalid one (same length, same mtime):
    // SIGHUP reloads it.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut valid = worker_file(
        port,
        &[(&topic_x, ""), (&topic_y, "lock_duration = \"20s\"")],
    );
    assert!(valid.len() <= invalid.len());
    while valid.len() < invalid.len() {
        valid.push('\n');
    }
    std::fs::write(&path, &valid).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        readyz(port).await.1.contains("refused"),
        "the watcher did not see the edit"
    );
    worker.signal(nix::sys::signal::Signal::SIGHUP);
    assert_eventually(
        "/readyz to drop the refusal after SIGHUP",
        Duration::from_secs(15),
        || async {
            let (status, body) = readyz(port).await;
            (status == 200 && !body.contains("refused")).then_some(())
        },
    )
    .await;

    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = worker.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "topic table reloaded: added [{topic_y}], removed [], changed []"
        )),
        "{log}"
    );
    assert!(
        log.contains("topic table refused, the running one stays")
            && log.contains(&format!("topics.{topic_y}.lock_duration")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "topic table reloaded: added [], removed [], changed [{topic_y}]"
        )) && log.contains("SIGHUP"),
        "{log}"
    );
}
