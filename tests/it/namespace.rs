//! The namespace sandbox backend (`sandbox.backend = "namespace"`: bubblewrap over the image's
//! root filesystem) against the real engine: the same script runs as on Docker, and the same
//! misbehaviour is contained and reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use camunda_client::Variable;
use procos_worker::TopicConfig;

use crate::sandbox::{SCRIPT_FROM_VARIABLE, deploy_task_process};
use crate::support;

fn namespace_python(settings: &str) -> TopicConfig {
    let mut python = TopicConfig::new("python");
    python.settings =
        toml::from_str(&format!("[sandbox]\nbackend = 'namespace'\n{settings}")).unwrap();
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_script_runs_on_the_namespace_backend() {
    let client = support::engine();
    let (key, topic) = deploy_task_process(&client, "ns-ok", SCRIPT_FROM_VARIABLE).await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, namespace_python(""));
    let mut variables = support::script(
        "import os, socket\noutputs['total'] = inputs['a'] + inputs['b']\noutputs['uid'] = os.getuid()\noutputs['host'] = socket.gethostname()\noutputs['pid'] = os.getpid()",
    );
    variables.insert("a".into(), Variable::Integer(2));
    variables.insert("b".into(), Variable::Integer(40));
    let instance = support::start(&client, &key, variables).await;
    support::wait_completed(&client, &instance, Duration::from_secs(120)).await;
    stop.cancel();
    worker.await.unwrap();
    let vars = client.historic_variables(&instance).await.unwrap();
    assert_eq!(vars["total"], Variable::Integer(42));
    assert_eq!(
        vars["uid"],
        Variable::Integer(65534),
        "nobody, as on Docker"
    );
    assert_eq!(vars["host"], Variable::String("sandbox".into()));
    assert!(
        matches!(vars["pid"], Variable::Integer(pid) if pid < 10),
        "its own PID namespace: {:?}",
        vars["pid"]
    );
}

/// The containment table the Docker backend passes, on bubblewrap; afterwards no task's
/// directory is left in the worker's temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_scripts_are_contained_and_reported_on_the_namespace_backend() {
    let topic = crate::sandbox::contain_misbehaving_scripts("namespace").await;
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("procos-task-{topic}-"))
        })
        .collect();
    assert!(left.is_empty(), "task directories left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_does_not_wait_for_the_namespace_sandboxs_end() {
    crate::sandbox::the_outcome_does_not_wait_for_the_sandboxs_end("namespace").await;
}
