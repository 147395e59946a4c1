//! A topic whose adapter cannot serve (its Docker engine does not answer) is not fetched, the
//! worker's other topics are, and `/readyz`, `procos status` and the log say why and how to fix
//! it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::Variables;

use crate::support::{self, ProcosProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_docker_engine_does_not_answer_is_not_fetched_and_readyz_says_why() {
    let client = support::engine();
    let (python_key, python_topic) = support::deploy_process(&client, "unavailable-py").await;
    let (echo_key, echo_topic) = support::deploy_process(&client, "unavailable-echo").await;
    let port = support::free_port();
    let config = format!(
        "[worker]\nlisten = \"127.0.0.1:{port}\"\nlong_poll = \"1s\"\ngrace_period = \"5s\"\n\
         [topics.{python_topic}]\nadapter = \"python\"\n[topics.{echo_topic}]\nadapter = \"echo\"\n"
    );
    let worker = ProcosProcess::spawn_with_env(
        &support::engine_url(),
        &support::unique("unavailable"),
        &config,
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );

    // The worker starts and serves its other topic.
    let echo = support::start(&client, &echo_key, Variables::new()).await;
    support::wait_completed(&client, &echo, Duration::from_secs(60)).await;
    let readyz = support::assert_eventually(
        "/readyz names the unavailable topic",
        Duration::from_secs(30),
        || async {
            let body = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            body.contains(&format!("topic `{python_topic}` is unavailable"))
                .then_some(body)
        },
    )
    .await;
    assert!(
        readyz.starts_with("ready"),
        "its other topics serve: {readyz}"
    );
    assert!(
        readyz.contains("nonexistent/docker.sock") && readyz.contains("DOCKER_HOST"),
        "the reason and the fix: {readyz}"
    );

    // `procos status` with the same configuration asks the worker's endpoint (its `listen`).
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_procos"))
        .arg("--config")
        .arg(worker.dir.path().join("procos.toml"))
        .arg("status")
        .env("PROCOS_ENGINE_URL", support::engine_url())
        .env_remove("PROCOS_CONFIG")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(matches!(status.status.code(), Some(0 | 3)), "{status:?}");
    assert!(
        text.contains(&format!("topic `{python_topic}` is unavailable:"))
            && text.contains("nonexistent/docker.sock")
            && text.contains("DOCKER_HOST"),
        "procos status names the topic, the reason and the fix:\n{text}"
    );
    assert!(
        !text.contains(&format!("topic `{echo_topic}` is unavailable")),
        "{text}"
    );

    // Its tasks wait, unlocked, for a worker that can serve them.
    let python = support::start(&client, &python_key, Variables::new()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tasks = client.external_tasks(&python).await.unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(
        tasks[0].worker_id.is_none() && tasks[0].lock_expiration_time.is_none(),
        "not fetched: {tasks:?}"
    );

    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, log) = worker.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{log}");
    assert!(
        log.contains(&python_topic) && log.contains("is unavailable and not fetched"),
        "{log}"
    );
}
