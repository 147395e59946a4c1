//! The `python` and `docker` adapters against the real Docker engine and the real engine:
//! scripts whose outputs become variables, tracebacks that become incidents, and misbehaving
//! scripts that are contained and reported while the worker keeps running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use camunda_client::{Variable, Variables};
use procos_worker::TopicConfig;

use crate::support;

/// The ids of the containers, running or not, that the sandbox made for `topic`.
fn containers_of(topic: &str) -> String {
    let listing = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.procos.topic={topic}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&listing.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_script_turns_inputs_into_process_variables() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "py-ok").await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, TopicConfig::new("python"));
    let mut variables = support::script(
        "outputs['total'] = inputs['a'] + inputs['b']\noutputs['greeting'] = 'hello ' + inputs['name']",
    );
    variables.insert("a".into(), Variable::Integer(2));
    variables.insert("b".into(), Variable::Integer(40));
    variables.insert("name".into(), Variable::String("ProcOS".into()));
    let instance = support::start(&client, &key, variables).await;
    support::wait_completed(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    let vars = client.historic_variables(&instance).await.unwrap();
    assert_eq!(vars["total"], Variable::Integer(42));
    assert_eq!(vars["greeting"], Variable::String("hello ProcOS".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raising_script_ends_in_an_incident_with_its_traceback() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "py-raise").await;
    let mut python = TopicConfig::new("python");
    python.retries = 2;
    python.retry_backoff = Duration::from_secs(1);
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);
    let instance = support::start(
        &client,
        &key,
        support::script(
            "def check(x):\n    raise ValueError('the ledger says no: ' + x)\n\ncheck('INV-7')\n",
        ),
    )
    .await;
    let incident = support::incident(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    let message = incident.incident_message.unwrap_or_default();
    assert!(
        message.contains("ValueError: the ledger says no: INV-7"),
        "the message names the exception: {message}"
    );
    let details = client
        .external_task_error_details(incident.configuration.as_deref().unwrap())
        .await
        .unwrap();
    assert!(
        details.contains("Traceback") && details.contains("line 2, in check"),
        "the details hold the traceback: {details}"
    );
    let failures = support::task_log(
        &client,
        camunda_client::ExternalTaskLogQuery {
            process_instance_id: Some(instance.clone()),
            failure_log: Some(true),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(failures.len(), 2, "two attempts, then the incident");
}

/// Each of these is stopped by a guard and reported as the task's failure; the worker goes on
/// and runs a well-behaved script afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_scripts_are_contained_and_reported() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "py-contain").await;
    let host_secret = std::env::temp_dir().join(support::unique("procos-host-secret"));
    std::fs::write(&host_secret, "the host's secret").unwrap();
    let mut python = TopicConfig::new("python");
    python.retries = 1;
    python.settings = toml::from_str(
        "[sandbox]\ntimeout = '5s'\nmemory_mb = 64\npids_limit = 32\nmax_output_kb = 64",
    )
    .unwrap();
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);

    let cases: BTreeMap<&str, (String, &[&str])> = BTreeMap::from([
        (
            "fork bomb",
            (
                "import os\nwhile True:\n    os.fork()\n".to_owned(),
                // Whichever limit it meets first: processes, memory or time; with many processes
                // dying at once, the exception line may be any of theirs.
                &[
                    "BlockingIOError",
                    "Resource temporarily unavailable",
                    "out of memory",
                    "timed out",
                    "exited with code",
                ][..],
            ),
        ),
        (
            "memory bomb",
            (
                "hog = bytearray(1024 * 1024 * 1024)\n".to_owned(),
                &["MemoryError", "out of memory"][..],
            ),
        ),
        (
            "endless loop",
            (
                "while True:\n    pass\n".to_owned(),
                &["timed out after 5s"][..],
            ),
        ),
        (
            "network egress",
            (
                "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=3)\n"
                    .to_owned(),
                &["OSError", "unreachable", "timed out"][..],
            ),
        ),
        (
            "write outside the workspace",
            (
                "open('/etc/procos-was-here', 'w').write('x')\n".to_owned(),
                &["Read-only file system", "Permission denied"][..],
            ),
        ),
        (
            "read a host file",
            (
                format!(
                    "print(open({:?}).read())\n",
                    host_secret.display().to_string()
                ),
                &["FileNotFoundError"][..],
            ),
        ),
        (
            "output over the size limit",
            (
                "outputs['big'] = 'x' * 200000\n".to_owned(),
                &["size limit"][..],
            ),
        ),
    ]);
    let mut instances = Vec::new();
    for (name, (source, _)) in &cases {
        instances.push((
            *name,
            support::start(&client, &key, support::script(source)).await,
        ));
    }
    for (name, instance) in &instances {
        let incident = support::incident(&client, instance, Duration::from_secs(90)).await;
        let message = incident.incident_message.unwrap_or_default();
        let expected = cases[name].1;
        assert!(
            expected.iter().any(|e| message.contains(e)),
            "{name}: the incident says why ({expected:?}): {message}"
        );
    }
    let fine = support::start(&client, &key, support::script("outputs['ok'] = True\n")).await;
    support::wait_completed(&client, &fine, Duration::from_secs(60)).await;
    assert!(!worker.is_finished(), "the worker kept running");
    stop.cancel();
    worker.await.unwrap();
    std::fs::remove_file(&host_secret).ok();
    assert_eq!(containers_of(&topic), "", "every container was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_adapter_runs_an_image_and_refuses_one_outside_the_allowlist() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "docker").await;
    let mut docker = TopicConfig::new("docker");
    docker.retries = 1;
    docker.settings = toml::from_str(
        r#"command = ["python3", "-c", "import json; n = json.load(open('/in/input.json'))['n']; print('working'); print(json.dumps({'doubled': n * 2}))"]"#,
    )
    .unwrap();
    // No image in the settings: each task names its own, and the allowlist decides.
    let (stop, worker) = support::start_quick_worker(&client, &topic, docker);
    let mut allowed: Variables = [("n".to_owned(), Variable::Integer(21))].into();
    allowed.insert(
        "image".into(),
        Variable::String("procos/python-sandbox:latest".into()),
    );
    let ok = support::start(&client, &key, allowed).await;
    let mut refused: Variables = [("n".to_owned(), Variable::Integer(1))].into();
    refused.insert("image".into(), Variable::String("evil/miner:1".into()));
    let bad = support::start(&client, &key, refused).await;

    support::wait_completed(&client, &ok, Duration::from_secs(60)).await;
    assert_eq!(
        client.historic_variables(&ok).await.unwrap()["doubled"],
        Variable::Integer(42)
    );
    let incident = support::incident(&client, &bad, Duration::from_secs(30)).await;
    assert!(
        incident
            .incident_message
            .as_deref()
            .unwrap_or_default()
            .contains("`evil/miner:1` is not in the worker's allowed images"),
        "{incident:?}"
    );
    stop.cancel();
    worker.await.unwrap();

    // An image named in the settings is checked before the worker starts at all.
    let mut pinned = TopicConfig::new("docker");
    pinned.settings = toml::from_str("image = 'evil/miner:1'").unwrap();
    let err = procos_worker::Worker::new(
        client.clone(),
        support::quick_worker_config(),
        &support::topics(&[("pinned", pinned)]),
    )
    .unwrap_err();
    assert_eq!(err.key, "topics.pinned.settings");
    assert!(err.problem.contains("allowed images"), "{err}");
}

/// With warm containers, each task still runs in a container of its own: nothing one task left
/// in /tmp is there for the next, and no container serves twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_containers_serve_one_task_each() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "py-warm").await;
    let mut python = TopicConfig::new("python");
    python.settings = toml::from_str("warm = 2").unwrap();
    python.max_tasks = Some(1);
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);
    let source = "import os, socket\n\
        outputs['container'] = socket.gethostname()\n\
        outputs['inherited'] = os.path.exists('/tmp/left-behind')\n\
        open('/tmp/left-behind', 'w').write('x')\n";
    let mut seen = Vec::new();
    for _ in 0..4 {
        let instance = support::start(&client, &key, support::script(source)).await;
        support::wait_completed(&client, &instance, Duration::from_secs(60)).await;
        let vars = client.historic_variables(&instance).await.unwrap();
        assert_eq!(vars["inherited"], Variable::Boolean(false), "a clean /tmp");
        seen.push(vars["container"].clone());
    }
    let distinct: std::collections::BTreeSet<String> =
        seen.iter().map(|v| format!("{v:?}")).collect();
    assert_eq!(
        distinct.len(),
        4,
        "four containers for four tasks: {seen:?}"
    );
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        containers_of(&topic),
        "",
        "the worker removed its waiting containers when it stopped"
    );
}

/// A starting warm pool clears the warm containers that gave up waiting (a killed worker's), and
/// only those: a warm container that ran a task has ended too, and another worker may still be
/// reading its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_warm_pool_clears_only_containers_that_gave_up_waiting() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "py-sweep").await;
    // As a killed worker leaves them: one gave up waiting, one ended its task.
    let leave = |name: &str, code: u8| {
        let status = std::process::Command::new("docker")
            .args(["run", "--name", name, "--label"])
            .arg(format!(
                "io.procos.warm={topic}:procos/python-sandbox:latest"
            ))
            .args(["--label", &format!("io.procos.topic={topic}")])
            .args(["--label", &format!("io.procos.task=warm-{name}")])
            .args([
                "--entrypoint",
                "python3",
                "procos/python-sandbox:latest",
                "-c",
            ])
            .arg(format!("raise SystemExit({code})"))
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(i32::from(code)), "docker run {name}");
    };
    let gave_up = support::unique("procos-gave-up");
    let ran_a_task = support::unique("procos-ran-a-task");
    leave(&gave_up, 75);
    leave(&ran_a_task, 1);

    let mut python = TopicConfig::new("python");
    python.settings = toml::from_str("warm = 1").unwrap();
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);
    let instance = support::start(&client, &key, support::script("outputs['x'] = 1")).await;
    support::wait_completed(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();

    let exists = |name: &str| {
        std::process::Command::new("docker")
            .args(["container", "inspect", name])
            .output()
            .unwrap()
            .status
            .success()
    };
    let (gave_up_left, ran_a_task_left) = (exists(&gave_up), exists(&ran_a_task));
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &gave_up, &ran_a_task])
        .output();
    assert!(
        !gave_up_left,
        "the container that gave up waiting is removed"
    );
    assert!(
        ran_a_task_left,
        "the container that ran a task is its worker's to remove"
    );
}

/// `raise BpmnError(...)` in a script ends on the model's boundary error event, with the
/// error's variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_bpmn_error_is_caught_by_the_boundary_event() {
    let client = support::engine();
    let (key, topic) = support::deploy_boundary_process(&client, "py-bpmn").await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, TopicConfig::new("python"));
    let mut variables = support::script(
        "raise BpmnError('NO_STOCK', 'none left of ' + inputs['sku'], {'reorder': True})",
    );
    variables.insert("sku".into(), Variable::String("A-1".into()));
    let instance = support::start(&client, &key, variables).await;
    support::wait_completed(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    let vars = client.historic_variables(&instance).await.unwrap();
    assert_eq!(
        vars["reorder"],
        Variable::Boolean(true),
        "the error's variables"
    );
    support::assert_caught_by_boundary(&client, &instance).await;
}

/// An image that is not on the Docker engine and cannot be pulled fails the task, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_fails_the_task_naming_it() {
    let client = support::engine();
    let (key, topic) = support::deploy_process(&client, "docker-missing").await;
    let mut docker = TopicConfig::new("docker");
    docker.retries = 1;
    docker.settings = toml::from_str("image = 'procos/no-such-image:1'").unwrap();
    let (stop, worker) = support::start_quick_worker(&client, &topic, docker);
    let instance = support::start(&client, &key, Variables::new()).await;
    let incident = support::incident(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    let message = incident.incident_message.unwrap_or_default();
    assert!(
        message.contains(
            "`procos/no-such-image:1` is not on this Docker engine and could not be pulled"
        ),
        "{message}"
    );
}

/// The shape `bpmn/element-templates/python.json` gives a task in Camunda Modeler: the script as
/// the task's input parameter `script`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_from_the_models_input_parameter_runs() {
    let client = support::engine();
    let key = support::unique("py-template");
    let topic = support::unique("py-template");
    let xml = support::model(
        &key,
        &topic,
        r#"<bpmn:extensionElements><camunda:inputOutput>
          <camunda:inputParameter name="script">outputs['doubled'] = inputs['n'] * 2</camunda:inputParameter>
        </camunda:inputOutput></bpmn:extensionElements>"#,
        r#"<bpmn:endEvent id="after"/>"#,
    )
    .replace(r#"<bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end"/>"#, "")
    .replace(r#"<bpmn:endEvent id="end"/>"#, "");
    support::deploy(&client, &format!("{key}.bpmn"), &xml).await;
    let (stop, worker) = support::start_quick_worker(&client, &topic, TopicConfig::new("python"));
    let instance = support::start(
        &client,
        &key,
        [("n".to_owned(), Variable::Integer(21))].into(),
    )
    .await;
    support::wait_completed(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    let vars = client.historic_variables(&instance).await.unwrap();
    assert_eq!(vars["doubled"], Variable::Integer(42));
}
