//! The `scilab` adapter against the real Docker engine, Debian's scilab-cli and the real engine:
//! matrices and strings that round-trip, and each way a script can go wrong, reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use camunda_client::{Variable, Variables};
use procos_worker::TopicConfig;
use serde_json::json;

use crate::sandbox::{SCRIPT_FROM_VARIABLE, deploy_boundary_task_process, deploy_task_process};
use crate::support;

fn scilab_topic(outputs: &[&str]) -> TopicConfig {
    let mut topic = TopicConfig::new("scilab");
    topic.retries = 1;
    let outputs: Vec<String> = outputs.iter().map(|o| format!("{o:?}")).collect();
    topic.settings = toml::from_str(&format!(
        "outputs = [{}]\n[sandbox]\ntimeout = '20s'",
        outputs.join(", ")
    ))
    .unwrap();
    topic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrices_numbers_and_strings_round_trip_through_scilab() {
    let client = support::engine();
    let (key, topic) = deploy_task_process(&client, "scilab-ok", SCRIPT_FROM_VARIABLE).await;
    let (stop, worker) = support::start_quick_worker(
        &client,
        &topic,
        scilab_topic(&["total", "doubled", "echo", "flags", "third"]),
    );
    let tricky = "it's \"quoted\"\nsecond line\twith a tab and a \\ backslash";
    let variables: Variables = [
        ("a".to_owned(), Variable::Integer(2)),
        ("m".to_owned(), Variable::Json(json!([[1, 2], [3, 4]]))),
        ("s".to_owned(), Variable::String(tricky.into())),
    ]
    .into();
    let script = "total = a * 21;\ndoubled = m * 2;\necho = s;\nflags = m > 2;\nthird = 1/3;\n";
    let instance = support::start(
        &client,
        &key,
        variables
            .into_iter()
            .chain(support::script(script))
            .collect(),
    )
    .await;
    support::wait_completed(&client, &instance, Duration::from_secs(90)).await;
    stop.cancel();
    worker.await.unwrap();
    let vars = client.historic_variables(&instance).await.unwrap();
    assert_eq!(vars["total"], Variable::Integer(42));
    // Lists are stored as the engine's Java lists; their document is what a model reads.
    assert_eq!(vars["doubled"].to_json(), json!([[2, 4], [6, 8]]));
    assert_eq!(
        vars["echo"],
        Variable::String(tricky.into()),
        "the string round-trips"
    );
    assert_eq!(
        vars["flags"].to_json(),
        json!([[false, false], [true, true]])
    );
    assert_eq!(
        vars["third"],
        Variable::Double(1.0 / 3.0),
        "all 17 digits come back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_way_a_scilab_script_fails_is_reported() {
    let client = support::engine();
    let (key, topic) = deploy_task_process(&client, "scilab-fail", SCRIPT_FROM_VARIABLE).await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, scilab_topic(&["x"]));
    let cases: BTreeMap<&str, (&str, &str)> = BTreeMap::from([
        (
            "error()",
            (
                "x = 1;\ny = 2;\nerror(\"the ledger is down\");\n",
                "the script, line 3: the ledger is down",
            ),
        ),
        ("exit(n)", ("exit(7);\n", "exited with code 7")),
        ("syntax error", ("x = [1, 2\ny = 3;\n", "syntax error")),
        // input() waits for a terminal that never answers.
        (
            "a hang",
            ("x = input(\"amount? \");\n", "timed out after 20s"),
        ),
        ("NaN", ("x = %nan;\n", "output x holds NaN or Inf")),
        ("Inf", ("x = [1, %inf];\n", "output x holds NaN or Inf")),
        (
            "no output",
            ("y = 1;\n", "the script did not set the output x"),
        ),
    ]);
    let mut instances = Vec::new();
    for (name, (script, _)) in &cases {
        let instance = support::start(&client, &key, support::script(script)).await;
        instances.push((*name, instance));
    }
    for (name, instance) in &instances {
        let message = support::incident(&client, instance, Duration::from_secs(90))
            .await
            .incident_message
            .unwrap_or_default();
        let expected = cases[name].1;
        if *name == "a hang" {
            // input() with no terminal either hangs until the timeout or fails at once.
            assert!(
                message.contains("timed out") || message.contains("exited with code"),
                "{name}: {message}"
            );
        } else {
            assert!(
                message.contains(expected),
                "{name}: expected `{expected}` in: {message}"
            );
        }
    }
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scilab_bpmn_error_is_caught_by_the_boundary_event() {
    let client = support::engine();
    let (key, topic) =
        deploy_boundary_task_process(&client, "scilab-bpmn", SCRIPT_FROM_VARIABLE).await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, scilab_topic(&[]));
    let script = "if 1 > 0 then\n  procos_bpmn_error(\"NO_STOCK\", \"none left\");\nend\n";
    let instance = support::start(&client, &key, support::script(script)).await;
    support::wait_completed(&client, &instance, Duration::from_secs(90)).await;
    stop.cancel();
    worker.await.unwrap();
    support::assert_caught_by_boundary(&client, &instance).await;
}
