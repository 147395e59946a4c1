//! The `python` and `docker` adapters against the real Docker engine and the real engine:
//! scripts whose outputs become variables, tracebacks that become incidents, misbehaving
//! scripts that are contained and reported while the worker keeps running, and the per-task
//! settings a model gives a step (`procos.*`), within the topic's ceilings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use camunda_client::{Variable, Variables};
use procos_worker::TopicConfig;

use crate::support;

/// `xml` (a model of `support`) with `extensions` as its task `work`'s extension elements.
pub(crate) fn with_task_extensions(xml: &str, topic: &str, extensions: &str) -> String {
    let task = format!(r#"camunda:topic="{topic}""#);
    let opened = format!("{task}><bpmn:extensionElements>{extensions}</bpmn:extensionElements>");
    if xml.contains(&format!("{task}/>")) {
        xml.replacen(
            &format!("{task}/>"),
            &format!("{opened}</bpmn:serviceTask>"),
            1,
        )
    } else {
        xml.replacen(&format!("{task}>"), &opened, 1)
    }
}

/// The input parameter that makes the process variable `script` the task's `procos.script`: a
/// model may compute a setting per instance, but only through an input parameter of its own.
pub(crate) const SCRIPT_FROM_VARIABLE: &str = r#"<camunda:inputOutput><camunda:inputParameter name="procos.script">${script}</camunda:inputParameter></camunda:inputOutput>"#;

/// Deploys start → external task → end (with DI) as a process and a topic of their own, named
/// after `prefix`, the task carrying `extensions`.
pub(crate) async fn deploy_task_process(
    client: &camunda_client::EngineClient,
    prefix: &str,
    extensions: &str,
) -> (String, String) {
    support::deploy_new(client, prefix, |key, topic| {
        with_task_extensions(
            &support::external_task_process(key, topic),
            topic,
            extensions,
        )
    })
    .await
}

/// [`support::model_with_error_boundary`], its task carrying `extensions`.
pub(crate) async fn deploy_boundary_task_process(
    client: &camunda_client::EngineClient,
    prefix: &str,
    extensions: &str,
) -> (String, String) {
    support::deploy_new(client, prefix, |key, topic| {
        with_task_extensions(
            &support::model_with_error_boundary(key, topic),
            topic,
            extensions,
        )
    })
    .await
}

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
    let (key, topic) = deploy_task_process(&client, "py-ok", SCRIPT_FROM_VARIABLE).await;
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
    let (key, topic) = deploy_task_process(&client, "py-raise", SCRIPT_FROM_VARIABLE).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_scripts_are_contained_and_reported() {
    let topic = contain_misbehaving_scripts("docker").await;
    assert_eq!(containers_of(&topic), "", "every container was removed");
}

/// What became of a misbehaving script: a guard stopped it and the incident says which, or it
/// ran to its end without harm.
enum Contained {
    /// An incident whose message holds one of these.
    Incident(&'static [&'static str]),
    /// The task completes; nothing it started is left running on the host.
    Completes,
}

/// The containment table, run on `backend` (`sandbox.backend`): each script is stopped by a
/// guard and reported as the task's failure, or is harmless; the worker goes on and runs a
/// well-behaved script afterwards. Returns the topic, for the backend's own leftovers check.
pub(crate) async fn contain_misbehaving_scripts(backend: &str) -> String {
    let client = support::engine();
    let (key, topic) =
        deploy_task_process(&client, &format!("contain-{backend}"), SCRIPT_FROM_VARIABLE).await;
    let host_secret = std::env::temp_dir().join(support::unique("procos-host-secret"));
    std::fs::write(&host_secret, "the host's secret").unwrap();
    // Marks the process a script leaves behind, to look for it on the host afterwards.
    let orphan_marker = support::unique("procos-orphan");
    let mut python = TopicConfig::new("python");
    python.retries = 1;
    // The timeout leaves room for a loaded machine; 1 MiB of printing is stopped well within it.
    python.settings = toml::from_str(&format!(
        "[sandbox]\nbackend = '{backend}'\ntimeout = '10s'\nmemory_mb = 64\npids_limit = 32\nmax_output_kb = 64\nmax_printed_mb = 1"
    ))
    .unwrap();
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);

    let cases: BTreeMap<&str, (String, Contained)> = BTreeMap::from([
        (
            "fork bomb",
            (
                "import os\nwhile True:\n    os.fork()\n".to_owned(),
                // Whichever limit it meets first: processes, memory or time; with many processes
                // dying at once, the exception line may be any of theirs.
                Contained::Incident(&[
                    "BlockingIOError",
                    "Resource temporarily unavailable",
                    "out of memory",
                    "timed out",
                    "exited with code",
                ]),
            ),
        ),
        (
            "memory bomb",
            (
                "hog = bytearray(1024 * 1024 * 1024)\n".to_owned(),
                Contained::Incident(&["MemoryError", "out of memory"]),
            ),
        ),
        (
            "endless loop",
            (
                "while True:\n    pass\n".to_owned(),
                Contained::Incident(&["timed out after 10s"]),
            ),
        ),
        (
            "200 MB to stdout",
            (
                "import sys\nchunk = 'x' * (1024 * 1024)\nfor _ in range(200):\n    sys.stdout.write(chunk)\n"
                    .to_owned(),
                Contained::Incident(&["printed more than"]),
            ),
        ),
        (
            "network: any interface",
            (
                reach_any_interface(),
                Contained::Incident(&["no network"]),
            ),
        ),
        (
            "write outside the workspace",
            (
                "open('/etc/procos-was-here', 'w').write('x')\n".to_owned(),
                Contained::Incident(&["Read-only file system", "Permission denied"]),
            ),
        ),
        (
            "read a host file",
            (
                format!(
                    "print(open({:?}).read())\n",
                    host_secret.display().to_string()
                ),
                Contained::Incident(&["FileNotFoundError"]),
            ),
        ),
        (
            "gain privileges",
            (GAIN_PRIVILEGES.to_owned(), Contained::Incident(&["no privilege gained"])),
        ),
        (
            "output over the size limit",
            (
                "outputs['big'] = 'x' * 200000\n".to_owned(),
                Contained::Incident(&["size limit"]),
            ),
        ),
        (
            "a child that outlives its parent",
            (
                format!(
                    "import subprocess\nsubprocess.Popen(['python3', '-c', 'import time; time.sleep(600)', {orphan_marker:?}], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\noutputs['left'] = True\n"
                ),
                Contained::Completes,
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
        match cases[name].1 {
            Contained::Incident(expected) => {
                let incident = support::incident(&client, instance, Duration::from_secs(120)).await;
                let message = incident.incident_message.unwrap_or_default();
                assert!(
                    expected.iter().any(|e| message.contains(e)),
                    "{backend}, {name}: the incident says why ({expected:?}): {message}"
                );
            }
            Contained::Completes => {
                support::wait_completed(&client, instance, Duration::from_secs(120)).await;
                no_process_left(
                    &format!("{backend}, {name}: no process left on the host"),
                    &orphan_marker,
                )
                .await;
            }
        }
    }
    let fine = support::start(&client, &key, support::script("outputs['ok'] = True\n")).await;
    support::wait_completed(&client, &fine, Duration::from_secs(60)).await;
    assert!(!worker.is_finished(), "the worker kept running");
    stop.cancel();
    worker.await.unwrap();
    std::fs::remove_file(&host_secret).ok();
    topic
}

/// Tries what a sandboxed command must not manage: become root, keep a capability or the
/// ability to gain privileges, make a user namespace of its own. Raises "no privilege gained"
/// when all fail; hands back what succeeded otherwise, which completes the task and fails the
/// test.
const GAIN_PRIVILEGES: &str = r#"import ctypes, os
gained = []
try:
    os.setuid(0)
    gained.append('setuid(0)')
except OSError:
    pass
status = open('/proc/self/status').read()
if 'NoNewPrivs:\t1' not in status:
    gained.append('no_new_privs is off')
for line in status.splitlines():
    if line.startswith(('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')) and int(line.split()[1], 16):
        gained.append(line)
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:
    gained.append('a user namespace of its own')
if gained:
    outputs['gained'] = gained
else:
    raise PermissionError('no privilege gained')
"#;

/// A script that connects to the test engine's port on every address of the host (loopback
/// included) and to an outside address; raises "no network" when none answers.
fn reach_any_interface() -> String {
    let port = support::engine_url()
        .split(':')
        .nth(2)
        .and_then(|rest| rest.split('/').next()?.parse::<u16>().ok())
        .unwrap();
    let mut targets = vec![("127.0.0.1".to_owned(), port), ("192.0.2.1".to_owned(), 80)];
    let addresses = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .unwrap();
    for address in String::from_utf8_lossy(&addresses.stdout).split_whitespace() {
        if !address.contains(':') {
            targets.push((address.to_owned(), port));
        }
    }
    format!(
        "import socket\nreached, refused = [], []\nfor host, port in {targets:?}:\n    try:\n        socket.create_connection((host, port), timeout=1).close()\n        reached.append(f'{{host}}:{{port}}')\n    except OSError as e:\n        refused.append(f'{{host}}:{{port}} ({{e}})')\nif reached:\n    outputs['reached'] = reached\nelse:\n    raise OSError('no network: ' + '; '.join(refused))\n"
    )
}

/// Host processes whose command line holds `marker`.
/// A script whose interpreter does not end when the script does (an exit handler waiting for a
/// child that sleeps): the runner's end line settles the outcome, so the task completes with its
/// outputs long before the sandbox's timeout, and the sandbox is removed afterwards, child and
/// all. Run on the `backend` named.
pub(crate) async fn the_outcome_does_not_wait_for_the_sandboxs_end(backend: &str) {
    let client = support::engine();
    let (key, topic) = deploy_task_process(
        &client,
        &format!("end-line-{backend}"),
        SCRIPT_FROM_VARIABLE,
    )
    .await;
    let marker = support::unique("procos-lingering");
    let mut python = TopicConfig::new("python");
    python.retries = 1;
    python.settings = toml::from_str(&format!(
        "[sandbox]\nbackend = '{backend}'\ntimeout = '60s'"
    ))
    .unwrap();
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);
    let instance = support::start(
        &client,
        &key,
        support::script(&format!(
            "import atexit, subprocess\nchild = subprocess.Popen(['python3', '-c', 'import time; time.sleep(600)', {marker:?}])\natexit.register(child.wait)\noutputs['done'] = True\n"
        )),
    )
    .await;
    // Well within the timeout, after which a run waited for to its end would be an incident.
    support::wait_completed(&client, &instance, Duration::from_secs(40)).await;
    let vars = client.historic_variables(&instance).await.unwrap();
    assert_eq!(vars["done"], Variable::Boolean(true));
    no_process_left(
        &format!("{backend}: the sandbox's processes are gone after the outcome"),
        &marker,
    )
    .await;
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_does_not_wait_for_the_containers_end() {
    the_outcome_does_not_wait_for_the_sandboxs_end("docker").await;
}

/// Waits until no process on the host has `marker` in its command line.
async fn no_process_left(what: &str, marker: &str) {
    support::assert_eventually(what, Duration::from_secs(20), || {
        let left = processes_mentioning(marker);
        async move { left.is_empty().then_some(()) }
    })
    .await;
}

fn processes_mentioning(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_adapter_runs_an_image_and_refuses_one_outside_the_allowlist() {
    let client = support::engine();
    // The image is the process variable `image`, through the task's input parameter.
    let (key, topic) = deploy_task_process(
        &client,
        "docker",
        r#"<camunda:inputOutput><camunda:inputParameter name="procos.image">${image}</camunda:inputParameter></camunda:inputOutput>"#,
    )
    .await;
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
        procos_worker::Telemetry::new(),
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
    let (key, topic) = deploy_task_process(&client, "py-warm", SCRIPT_FROM_VARIABLE).await;
    let mut python = TopicConfig::new("python");
    python.settings = toml::from_str("warm = 2").unwrap();
    python.max_tasks = Some(1);
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);
    // Outputs past the runner's 8 KiB output line come from /out/output.json, not over the
    // attachment that handed the warm container its task.
    let source = "import os, socket\n\
        outputs['container'] = socket.gethostname()\n\
        outputs['inherited'] = os.path.exists('/tmp/left-behind')\n\
        outputs['report'] = 'x' * 20000\n\
        open('/tmp/left-behind', 'w').write('x')\n";
    let mut seen = Vec::new();
    for _ in 0..4 {
        let instance = support::start(&client, &key, support::script(source)).await;
        support::wait_completed(&client, &instance, Duration::from_secs(60)).await;
        let vars = client.historic_variables(&instance).await.unwrap();
        assert_eq!(vars["inherited"], Variable::Boolean(false), "a clean /tmp");
        let report = vars["report"].to_json();
        assert!(
            report.as_str() == Some("x".repeat(20000).as_str()),
            "the 20,000-character report came back whole (it came back as {} characters)",
            report.as_str().map_or(0, str::len)
        );
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

/// A container as a killed worker leaves it: labelled like the sandbox's, `labels` added, made
/// with `docker <how>` (`run` waits for its end, `run -d` leaves it running, `create` never
/// starts it) running `python3 -c <code>`.
fn leave_container(name: &str, topic: &str, labels: &[String], how: &[&str], code: &str) {
    let mut docker = std::process::Command::new("docker");
    docker.args(how).args(["--name", name]);
    for label in [
        format!("io.procos.topic={topic}"),
        format!("io.procos.task=left-{name}"),
    ]
    .iter()
    .chain(labels)
    {
        docker.args(["--label", label]);
    }
    let output = docker
        .args([
            "--entrypoint",
            "python3",
            "procos/python-sandbox:latest",
            "-c",
            code,
        ])
        .output()
        .unwrap();
    // `docker run` answers with the container's exit code; only a failure to make it counts.
    // A sandbox of a test running meanwhile may sweep a container left past its deadline
    // before it has started: the very sweep these tests are about.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() || how == ["run"] || stderr.contains("marked for removal"),
        "docker {how:?} {name}: {stderr}"
    );
}

fn container_exists(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["container", "inspect", name])
        .output()
        .unwrap()
        .status
        .success()
}

/// A one-task Python process and its topic, deployed. Deploying first boots the shared engine
/// if this test is its first user: what a test leaves behind then ages only as long as meant.
async fn deploy_one_task(prefix: &str) -> (camunda_client::EngineClient, String, String) {
    let client = support::engine();
    let (key, topic) = deploy_task_process(&client, prefix, SCRIPT_FROM_VARIABLE).await;
    (client, key, topic)
}

/// Runs one task of [`deploy_one_task`]'s process with a fresh worker (whose sandbox sweeps on
/// its first run).
async fn run_one_task(
    (client, key, topic): &(camunda_client::EngineClient, String, String),
    topic_settings: &str,
) {
    let mut python = TopicConfig::new("python");
    python.settings = toml::from_str(topic_settings).unwrap();
    let (stop, worker) = support::start_quick_worker(client, topic, python);
    let instance = support::start(client, key, support::script("outputs['x'] = 1")).await;
    support::wait_completed(client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A starting warm pool clears the warm containers that gave up waiting (a killed worker's), and
/// only those: a warm container that ran a task has ended too, and another worker may still be
/// reading its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_warm_pool_clears_only_containers_that_gave_up_waiting() {
    let one_task = deploy_one_task("py-sweep-warm").await;
    let topic = support::unique("py-sweep-warm");
    let warm = [format!(
        "io.procos.warm={topic}:procos/python-sandbox:latest"
    )];
    let gave_up = support::unique("procos-gave-up");
    let ran_a_task = support::unique("procos-ran-a-task");
    leave_container(&gave_up, &topic, &warm, &["run"], "raise SystemExit(75)");
    leave_container(&ran_a_task, &topic, &warm, &["run"], "raise SystemExit(1)");

    run_one_task(&one_task, "warm = 1").await;

    let (gave_up_left, ran_a_task_left) =
        (container_exists(&gave_up), container_exists(&ran_a_task));
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

/// Containers a killed worker left (ended, still running, never started) are cleared by another
/// worker once they are well past the deadline they carry; those within it, or without one,
/// are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_killed_worker_are_cleared_once_past_their_deadline() {
    let one_task = deploy_one_task("py-sweep-dead").await;
    let topic = support::unique("py-sweep-dead");
    let deadline = |offset: i64| [format!("io.procos.deadline={}", unix_now() as i64 + offset)];
    let name = |what: &str| support::unique(&format!("procos-left-{what}"));
    let (ended, running, created) = (name("ended"), name("running"), name("created"));
    let (within_grace, before_deadline, no_deadline) = (
        name("within-grace"),
        name("before-deadline"),
        name("no-deadline"),
    );
    let long_ago = deadline(-300);
    leave_container(&ended, &topic, &long_ago, &["run"], "pass");
    leave_container(
        &running,
        &topic,
        &long_ago,
        &["run", "-d"],
        "import time; time.sleep(600)",
    );
    leave_container(&created, &topic, &long_ago, &["create"], "pass");
    leave_container(&within_grace, &topic, &deadline(-5), &["run"], "pass");
    leave_container(&before_deadline, &topic, &deadline(600), &["run"], "pass");
    leave_container(&no_deadline, &topic, &[], &["run"], "pass");

    run_one_task(&one_task, "").await;

    let all = [
        &ended,
        &running,
        &created,
        &within_grace,
        &before_deadline,
        &no_deadline,
    ];
    let left: Vec<bool> = all.iter().map(|name| container_exists(name)).collect();
    let mut rm = std::process::Command::new("docker");
    rm.args(["rm", "-f"]);
    rm.args(all).output().unwrap();
    assert_eq!(
        left,
        [false, false, false, true, true, true],
        "left after the sweep: {all:?}"
    );
}

/// `raise BpmnError(...)` in a script ends on the model's boundary error event, with the
/// error's variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripts_bpmn_error_is_caught_by_the_boundary_event() {
    let client = support::engine();
    let (key, topic) = deploy_boundary_task_process(&client, "py-bpmn", SCRIPT_FROM_VARIABLE).await;
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
/// the task's input parameter `procos.script`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_from_the_models_input_parameter_runs() {
    let client = support::engine();
    let (key, topic) = support::deploy_new(&client, "py-template", |key, topic| {
        support::model(
        key,
        topic,
        r#"<bpmn:extensionElements><camunda:inputOutput>
          <camunda:inputParameter name="procos.script">outputs['doubled'] = inputs['n'] * 2</camunda:inputParameter>
        </camunda:inputOutput></bpmn:extensionElements>"#,
        r#"<bpmn:endEvent id="after"/>"#,
    )
    .replace(r#"<bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end"/>"#, "")
    .replace(r#"<bpmn:endEvent id="end"/>"#, "")
    })
    .await;
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

/// A step that asks for ten times the topic's memory ceiling (`limits.max_memory_mb`, 2048 by
/// default) fails before any container starts, and at once: retrying cannot help, so the first
/// failure raises the incident, which names the setting, the value and the ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_asking_for_ten_times_the_memory_ceiling_fails_at_once() {
    let client = support::engine();
    let (key, topic) = deploy_task_process(
        &client,
        "py-greedy",
        r#"<camunda:properties>
          <camunda:property name="procos.script" value="outputs['ran'] = True" />
          <camunda:property name="procos.memory_mb" value="20480" />
        </camunda:properties>"#,
    )
    .await;
    let mut python = TopicConfig::new("python");
    python.retries = 3;
    python.retry_backoff = Duration::from_secs(1);
    let (stop, worker) = support::start_quick_worker(&client, &topic, python);
    let instance = support::start(&client, &key, Variables::new()).await;
    let incident = support::incident(&client, &instance, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    let message = incident.incident_message.unwrap_or_default();
    assert!(
        message.contains("procos.memory_mb = 20480")
            && message.contains("limits.max_memory_mb = 2048"),
        "the incident names the setting, the value and the ceiling: {message}"
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
    assert_eq!(failures.len(), 1, "one attempt, though the topic allows 3");
    assert_eq!(containers_of(&topic), "", "no container was started");
}

/// A step's script in an extension property (static text in the BPMN, newlines as `&#10;`) and
/// its timeout in an input parameter: it runs, under that timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_in_an_extension_property_runs_under_the_timeout_of_an_input_parameter() {
    let client = support::engine();
    let step = |script: &str, timeout: &str| {
        format!(
            r#"<camunda:properties><camunda:property name="procos.script" value="{script}" /></camunda:properties>
            <camunda:inputOutput><camunda:inputParameter name="procos.timeout">{timeout}</camunda:inputParameter></camunda:inputOutput>"#
        )
    };
    let (doubles, doubles_topic) = deploy_task_process(
        &client,
        "py-property",
        &step("n = inputs['n']&#10;outputs['doubled'] = n * 2", "20s"),
    )
    .await;
    let (sleeps, sleeps_topic) = deploy_task_process(
        &client,
        "py-property-timeout",
        &step("import time&#10;time.sleep(60)", "2s"),
    )
    .await;
    let mut python = TopicConfig::new("python");
    python.retries = 1;
    python.settings = toml::from_str("warm = 0").unwrap();
    let (stop, worker) = support::start_worker_with(
        &client,
        support::quick_worker_config(),
        support::topics(&[(&doubles_topic, python.clone()), (&sleeps_topic, python)]),
    );
    let ran = support::start(
        &client,
        &doubles,
        [("n".to_owned(), Variable::Integer(21))].into(),
    )
    .await;
    let slept = support::start(&client, &sleeps, Variables::new()).await;
    support::wait_completed(&client, &ran, Duration::from_secs(60)).await;
    let incident = support::incident(&client, &slept, Duration::from_secs(60)).await;
    stop.cancel();
    worker.await.unwrap();
    assert_eq!(
        client.historic_variables(&ran).await.unwrap()["doubled"],
        Variable::Integer(42)
    );
    let message = incident.incident_message.unwrap_or_default();
    assert!(
        message.contains("timed out after 2s"),
        "the step's own timeout, not the topic's 5m: {message}"
    );
}

/// A process variable named like a setting (`procos.script`) is never the step's setting: the
/// step's own extension property runs, with or without input parameters beside it, and a step
/// without one runs the topic's script. Nor does the script see the variable among its inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_variable_named_procos_script_is_not_the_script() {
    let client = support::engine();
    let scripts = std::env::temp_dir().join(support::unique("procos-scripts"));
    std::fs::create_dir_all(&scripts).unwrap();
    std::fs::write(
        scripts.join("topic.py"),
        "outputs['source'] = 'topic'\noutputs['inputs'] = sorted(inputs)\n",
    )
    .unwrap();
    let own = r#"<camunda:properties><camunda:property name="procos.script" value="outputs['source'] = 'model'&#10;outputs['inputs'] = sorted(inputs)" /></camunda:properties>"#;
    let with_parameter = format!(
        r#"{own}<camunda:inputOutput><camunda:inputParameter name="procos.timeout">30s</camunda:inputParameter></camunda:inputOutput>"#
    );
    let mut models = Vec::new();
    for (name, extensions, expected) in [
        ("property", own.to_owned(), "model"),
        ("property-and-parameter", with_parameter, "model"),
        ("nothing", String::new(), "topic"),
    ] {
        let (key, topic) =
            deploy_task_process(&client, &format!("py-shadow-{name}"), &extensions).await;
        models.push((name, key, topic, expected));
    }
    let mut python = TopicConfig::new("python");
    python.retries = 1;
    python.settings = toml::from_str(&format!(
        "warm = 0\nscript = 'topic.py'\nscripts_dir = {:?}",
        scripts.display().to_string()
    ))
    .unwrap();
    let topics: Vec<(&str, TopicConfig)> = models
        .iter()
        .map(|(_, _, topic, _)| (topic.as_str(), python.clone()))
        .collect();
    let (stop, worker) = support::start_worker_with(
        &client,
        support::quick_worker_config(),
        support::topics(&topics),
    );
    let mut results = Vec::new();
    for (name, key, _, expected) in &models {
        let variables: Variables = [(
            "procos.script".to_owned(),
            Variable::String("outputs['source'] = 'process variable'".into()),
        )]
        .into();
        let instance = support::start(&client, key, variables).await;
        results.push((*name, instance, *expected));
    }
    for (name, instance, expected) in &results {
        let vars = support::settle(&client, instance, Duration::from_secs(60))
            .await
            .unwrap_or_else(|message| panic!("{name}: an incident: {message}"));
        assert_eq!(
            vars["source"],
            Variable::String((*expected).into()),
            "{name}: the script that ran"
        );
        assert_eq!(
            vars["inputs"].to_json(),
            serde_json::json!([]),
            "{name}: procos.* variables are no inputs"
        );
    }
    stop.cancel();
    worker.await.unwrap();
    std::fs::remove_dir_all(&scripts).ok();
}
