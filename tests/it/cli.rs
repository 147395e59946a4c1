//! `procos start` and `procos status` against the real engine: what they print and the exit
//! codes a script relies on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use camunda_client::Variable;

use crate::support;

async fn procos(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_procos"))
        .args(args)
        .env("PROCOS_ENGINE_URL", support::engine_url())
        .env_remove("PROCOS_CONFIG")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_prints_the_instance_and_status_lists_it() {
    let client = support::engine();
    let key = support::unique("cli");
    support::deploy(
        &client,
        &format!("{key}.bpmn"),
        &support::external_task_process(&key, "cli-wait"),
    )
    .await;

    let out = procos(&[
        "start",
        &key,
        "--var",
        "amount=42",
        "--var",
        "customer=ACME Corp",
        "--business-key",
        "order-7",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let vars = client.historic_variables(&id).await.unwrap();
    assert_eq!(vars["amount"], Variable::Integer(42));
    assert_eq!(vars["customer"], Variable::String("ACME Corp".into()));

    let refused = procos(&["start", "no-such-process-anywhere"]).await;
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no-such-process-anywhere"), "{stderr}");

    let status = procos(&["status"]).await;
    let text = String::from_utf8_lossy(&status.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("{key} is listed:\n{text}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&columns[1..3], ["1", "1"], "version 1, one running: {line}");
    let incidents_listed = text.contains("open incident(s)");
    assert_eq!(
        status.status.code(),
        Some(if incidents_listed { 3 } else { 0 }),
        "exit 3 exactly when incidents are open:\n{text}"
    );
}
