//! Helpers shared by the integration tests: the shared engine and model servers (`shared`),
//! unique names, models, a worker in the background, and waits for state that settles
//! asynchronously.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use camunda_client::{Auth, EngineClient};
use procos_worker::{Telemetry, TopicConfig, Worker, WorkerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod shared;
pub mod tally;

pub use shared::{jaeger, llm_url, oauth2_issuer, ollama_url};

/// Test logs, shown for failing tests. Idempotent.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_test_writer()
        .try_init();
}

/// The engine the tests share: `PROCOS_TEST_ENGINE_URL`, or one booted for this test binary.
pub fn engine() -> EngineClient {
    init_logging();
    EngineClient::new(shared::engine_url(), Auth::None).unwrap()
}

/// The assembled engine jar, for tests that boot engines of their own.
pub fn engine_jar() -> PathBuf {
    std::env::var_os("PROCOS_ENGINE_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("docker/camunda/target/procos-camunda-engine.jar")
        })
}

/// A name no other test (or earlier run against the same engine) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{:06x}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos & 0xff_ffff
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process `key` of start → external task on `topic` → end, with BPMN DI.
pub fn external_task_process(key: &str, topic: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
    xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
    id="defs-{key}" targetNamespace="https://procos.io/test">
  <bpmn:process id="{key}" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work"/>
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}"/>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
  <bpmndi:BPMNDiagram id="diagram"><bpmndi:BPMNPlane id="plane" bpmnElement="{key}">
    <bpmndi:BPMNShape id="start_di" bpmnElement="start"><dc:Bounds x="100" y="100" width="36" height="36"/></bpmndi:BPMNShape>
    <bpmndi:BPMNShape id="work_di" bpmnElement="work"><dc:Bounds x="200" y="78" width="100" height="80"/></bpmndi:BPMNShape>
    <bpmndi:BPMNShape id="end_di" bpmnElement="end"><dc:Bounds x="360" y="100" width="36" height="36"/></bpmndi:BPMNShape>
    <bpmndi:BPMNEdge id="f1_di" bpmnElement="f1"><di:waypoint x="136" y="118"/><di:waypoint x="200" y="118"/></bpmndi:BPMNEdge>
    <bpmndi:BPMNEdge id="f2_di" bpmnElement="f2"><di:waypoint x="300" y="118"/><di:waypoint x="360" y="118"/></bpmndi:BPMNEdge>
  </bpmndi:BPMNPlane></bpmndi:BPMNDiagram>
</bpmn:definitions>
"#
    )
}

/// Deploys `model(key, topic)` with a key and a topic of its own, both named after `prefix`, as
/// `{key}.bpmn`; (key, topic).
pub async fn deploy_new(
    client: &EngineClient,
    prefix: &str,
    model: impl FnOnce(&str, &str) -> String,
) -> (String, String) {
    let key = unique(prefix);
    let topic = unique(prefix);
    deploy(client, &format!("{key}.bpmn"), &model(&key, &topic)).await;
    (key, topic)
}

/// Deploys one model under `name`.
pub async fn deploy(client: &EngineClient, name: &str, xml: &str) {
    client
        .deploy(&camunda_client::Deployment {
            name: name.to_owned(),
            source: Some("procos-tests".into()),
            resources: vec![(name.to_owned(), xml.as_bytes().to_vec())],
        })
        .await
        .unwrap();
}

/// A worker serving `topics`, running until the returned token is cancelled.
pub fn start_worker(
    client: &EngineClient,
    topics: BTreeMap<String, TopicConfig>,
) -> (CancellationToken, JoinHandle<()>) {
    let config = WorkerConfig {
        long_poll: Duration::from_secs(5),
        grace_period: Duration::from_secs(5),
        ..WorkerConfig::default()
    };
    start_worker_with(client, config, topics)
}

/// A worker with `config` serving `topics`, running until the returned token is cancelled.
pub fn start_worker_with(
    client: &EngineClient,
    config: WorkerConfig,
    topics: BTreeMap<String, TopicConfig>,
) -> (CancellationToken, JoinHandle<()>) {
    init_logging();
    let worker = Worker::new(client.clone(), config, &topics, Telemetry::new()).unwrap();
    let stop = CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    (stop, handle)
}

/// Polls `probe` until it yields a value, or panics after `timeout` naming `what`.
pub async fn assert_eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Processes whose working directory is `dir`: the engines booted there.
pub fn processes_in(dir: &std::path::Path) -> Vec<u32> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

pub fn topics(entries: &[(&str, TopicConfig)]) -> BTreeMap<String, TopicConfig> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// A `procos` process (a worker, or a kernel) with its own configuration file; killed when
/// dropped. Everything it writes (stdout and stderr) is echoed to the test's output, tagged with
/// its name, and kept for [`ProcosProcess::log`] and [`ProcosProcess::wait`].
pub struct ProcosProcess {
    pub child: tokio::process::Child,
    pub worker_id: String,
    pub dir: tempfile::TempDir,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    readers: tokio::task::JoinSet<()>,
}

impl ProcosProcess {
    /// Starts `procos worker` against `engine_url` with `worker_id` and the TOML `config` (the
    /// `[worker]` table gets `worker_id`; `listen` defaults to `off` unless `config` sets it).
    pub fn spawn(engine_url: &str, worker_id: &str, config: &str) -> Self {
        Self::spawn_with_env(engine_url, worker_id, config, &[])
    }

    /// [`ProcosProcess::spawn`] with environment variables of the test's own, which win over
    /// spawn's (`PROCOS_LOG=debug`, a secret's variable).
    pub fn spawn_with_env(
        engine_url: &str,
        worker_id: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn_command(&["worker"], engine_url, worker_id, config, env)
    }

    /// `procos ARGS… --config FILE` with the TOML `config` in FILE, against `engine_url`; `name`
    /// is its worker id and tags its output.
    pub fn spawn_command(
        args: &[&str],
        engine_url: &str,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn_wrapped(&[], args, engine_url, name, config, env)
    }

    /// [`ProcosProcess::spawn_command`] run by `wrapper` (a program and its arguments, which
    /// end by running the command after them: `ip netns exec NAME`); no wrapper runs it
    /// directly. The wrapper must `exec` it, so that the process signalled is `procos` itself.
    pub fn spawn_wrapped(
        wrapper: &[&str],
        args: &[&str],
        engine_url: &str,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("procos.toml");
        std::fs::write(&path, config).unwrap();
        let procos = env!("CARGO_BIN_EXE_procos");
        let mut command = match wrapper {
            [] => tokio::process::Command::new(procos),
            [program, wrapper_args @ ..] => {
                let mut command = tokio::process::Command::new(program);
                command.args(wrapper_args).arg(procos);
                command
            }
        };
        if !config.contains("listen") {
            command.env("PROCOS_WORKER__LISTEN", "off");
        }
        command
            .args(args)
            .arg("--config")
            .arg(&path)
            .env("PROCOS_ENGINE_URL", engine_url)
            .env("PROCOS_WORKER__WORKER_ID", name)
            .env("PROCOS_LOG", "info")
            .env_remove("PROCOS_CONFIG");
        for (variable, value) in env {
            command.env(variable, value);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut readers = tokio::task::JoinSet::new();
        let mut collect = |stream: Box<dyn AsyncRead + Unpin + Send>| {
            let (tag, log) = (name.to_owned(), log.clone());
            readers.spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{tag}] {line}");
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        };
        collect(Box::new(child.stdout.take().unwrap()));
        collect(Box::new(child.stderr.take().unwrap()));
        Self {
            child,
            worker_id: name.to_owned(),
            dir,
            log,
            readers,
        }
    }

    /// Everything the process wrote so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id().unwrap()).unwrap())
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap();
    }

    /// Waits for the process to end within `limit`; its exit status and everything it wrote.
    pub async fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("process {} did not exit within {limit:?}", self.worker_id))
            .unwrap();
        while self.readers.join_next().await.is_some() {}
        (status, self.log())
    }
}

/// The test engine's REST URL.
pub fn engine_url() -> String {
    engine().base_url().to_owned()
}

/// The external-task log entries `query` selects, oldest first.
pub async fn task_log(
    client: &EngineClient,
    query: camunda_client::ExternalTaskLogQuery,
) -> Vec<camunda_client::ExternalTaskLogEntry> {
    client.external_task_log(&query).await.unwrap()
}

/// Success entries of the external-task log for process definition `key`.
pub async fn completions(
    client: &EngineClient,
    key: &str,
) -> Vec<camunda_client::ExternalTaskLogEntry> {
    task_log(
        client,
        camunda_client::ExternalTaskLogQuery {
            process_definition_key: Some(key.to_owned()),
            success_log: Some(true),
            ..Default::default()
        },
    )
    .await
}

/// An engine of the test's own, booted from the jar on `port` with its database in `data_dir`.
pub async fn boot_engine(
    port: u16,
    data_dir: &std::path::Path,
    env: Vec<(String, String)>,
) -> (EngineClient, procos_kernel::EngineProcess) {
    let engine = procos_kernel::LocalEngine {
        launcher: procos_kernel::Launcher::Jar {
            java: "java".into(),
            jar: engine_jar(),
        },
        port,
        data_dir: data_dir.to_path_buf(),
        env,
    };
    let client =
        EngineClient::new(&format!("http://127.0.0.1:{port}/engine-rest"), Auth::None).unwrap();
    let process = engine
        .boot(
            &client,
            Duration::from_secs(180),
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .expect("the engine boots and answers");
    (client, process)
}

/// A topic subscription with nothing but defaults, to fill in with struct update syntax.
pub fn subscription() -> camunda_client::TopicSubscription {
    camunda_client::TopicSubscription {
        topic_name: String::new(),
        lock_duration: 60_000,
        variables: None,
        local_variables: false,
        business_key: None,
        process_definition_key_in: None,
        tenant_id_in: None,
        without_tenant_id: false,
        process_variables: None,
        include_extension_properties: false,
    }
}

/// Deploys start → external task → end as a process and a topic of their own, named after
/// `prefix`.
pub async fn deploy_process(client: &EngineClient, prefix: &str) -> (String, String) {
    let key = unique(prefix);
    let topic = unique(prefix);
    deploy(
        client,
        &format!("{key}.bpmn"),
        &external_task_process(&key, &topic),
    )
    .await;
    (key, topic)
}

/// Starts an instance of the latest version of `key`; its id.
pub async fn start(
    client: &EngineClient,
    key: &str,
    variables: camunda_client::Variables,
) -> String {
    client
        .start_process_instance(
            key,
            &camunda_client::StartProcessInstance {
                variables,
                business_key: None,
            },
        )
        .await
        .unwrap()
        .id
}

/// Starts `n` instances of `key`, `at_once` at a time (a fault test starts thousands, without
/// queueing them all in the engine at once); instance `i` gets `variables(i)`. Their ids, in
/// that order.
pub async fn start_many(
    client: &EngineClient,
    key: &str,
    n: usize,
    at_once: usize,
    variables: impl Fn(usize) -> camunda_client::Variables,
) -> Vec<String> {
    let mut ids = vec![String::new(); n];
    let mut starting = tokio::task::JoinSet::new();
    for i in 0..n {
        if starting.len() >= at_once {
            let (at, id) = starting.join_next().await.unwrap().unwrap();
            ids[at] = id;
        }
        let (client, key, variables) = (client.clone(), key.to_owned(), variables(i));
        starting.spawn(async move { (i, start(&client, &key, variables).await) });
    }
    while let Some(started) = starting.join_next().await {
        let (at, id) = started.unwrap();
        ids[at] = id;
    }
    ids
}

/// Waits until history shows `instance` completed.
pub async fn wait_completed(client: &EngineClient, instance: &str, within: Duration) {
    assert_eventually("the instance to complete", within, || async {
        let h = client.historic_process_instance(instance).await.ok()?;
        (h.state == "COMPLETED").then_some(())
    })
    .await;
}

/// A model without DI: start → external task `work` on `topic` (`task_extra` inside its
/// element) → the elements `after` (one of them with id `after`) → end. It declares the error
/// `NO_STOCK` for boundary events.
pub fn model(key: &str, topic: &str, task_extra: &str, after: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs-{key}" targetNamespace="https://procos.io/test">
  <bpmn:error id="no-stock" name="No stock" errorCode="NO_STOCK"/>
  <bpmn:process id="{key}" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work"/>
    <bpmn:serviceTask id="work" camunda:type="external" camunda:topic="{topic}">{task_extra}</bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="after"/>
    {after}
    <bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"#
    )
}

/// start → external task `work` on `topic` → end `after`; a boundary error event `no_stock`
/// (code `NO_STOCK`) on the task leads to the end `backorder`.
pub fn model_with_error_boundary(key: &str, topic: &str) -> String {
    model(
        key,
        topic,
        "",
        r#"<bpmn:endEvent id="after"/>
    <bpmn:boundaryEvent id="no_stock" attachedToRef="work"><bpmn:errorEventDefinition errorRef="no-stock"/></bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="f4" sourceRef="no_stock" targetRef="backorder"/>
    <bpmn:endEvent id="backorder"/>"#,
    )
    .replace(r#"<bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end"/>"#, "")
    .replace(r#"<bpmn:endEvent id="end"/>"#, "")
}

/// `instance` (of [`model_with_error_boundary`]) completed through the boundary event, with
/// no incident.
pub async fn assert_caught_by_boundary(client: &EngineClient, instance: &str) {
    assert_caught_by(client, instance, "no_stock", "backorder", "after").await;
}

/// `text` as XML element text or attribute value: `&`, `<`, `>` and `"` escaped.
pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A BPMN document of the one executable process `key`: `declarations` (errors, messages) before
/// it, `elements` inside it.
pub fn bpmn(key: &str, declarations: &str, elements: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xmlns:camunda="http://camunda.org/schema/1.0/bpmn" id="defs-{key}" targetNamespace="https://procos.io/test">
  {declarations}
  <bpmn:process id="{key}" isExecutable="true">
    {elements}
  </bpmn:process>
</bpmn:definitions>"#
    )
}

/// `<camunda:property>` elements for a step's `procos.*` extension properties (names without
/// the prefix), values escaped.
pub fn procos_properties<V: AsRef<str>>(properties: &[(&str, V)]) -> String {
    properties
        .iter()
        .map(|(name, value)| {
            format!(
                "<camunda:property name=\"procos.{name}\" value=\"{}\"/>",
                xml_escape(value.as_ref())
            )
        })
        .collect()
}

/// The ids of the activities `instance` passed, in the engine's history.
pub async fn passed(client: &EngineClient, instance: &str) -> Vec<String> {
    client
        .historic_activity_instances(instance)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.activity_id)
        .collect()
}

/// The text of the variable `name` of `instance`, as the engine's history keeps it: a `File`
/// variable's content (`/history/variable-instance/{id}/data`, what Cockpit downloads), any
/// other's serialized value.
pub async fn variable_data(client: &EngineClient, instance: &str, name: &str) -> String {
    let http = reqwest::Client::new();
    let base = client.base_url().trim_end_matches('/');
    let rows: Vec<serde_json::Value> = http
        .get(format!("{base}/history/variable-instance"))
        .query(&[
            ("processInstanceId", instance),
            ("variableName", name),
            ("deserializeValues", "false"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let [row] = &rows[..] else {
        panic!("one variable `{name}` in {instance}: {rows:?}")
    };
    if row["type"] != "File" {
        return row["value"]
            .as_str()
            .map_or_else(|| row["value"].to_string(), str::to_owned);
    }
    let id = row["id"].as_str().unwrap();
    let response = http
        .get(format!("{base}/history/variable-instance/{id}/data"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    response.text().await.unwrap()
}

/// `instance` passed the boundary event `boundary` and the element `handled` after it, not the
/// element `normal` of the path without the error, and has no incident.
pub async fn assert_caught_by(
    client: &EngineClient,
    instance: &str,
    boundary: &str,
    handled: &str,
    normal: &str,
) {
    let passed = passed(client, instance).await;
    assert!(
        passed.iter().any(|a| a == boundary) && passed.iter().any(|a| a == handled),
        "the boundary event caught the error: {passed:?}"
    );
    assert!(!passed.iter().any(|a| a == normal), "{passed:?}");
    assert!(client.incidents(Some(instance)).await.unwrap().is_empty());
}

/// A worker that polls briefly, drains quickly and serves no HTTP endpoint: for tests.
pub fn quick_worker_config() -> WorkerConfig {
    WorkerConfig {
        long_poll: Duration::from_millis(500),
        grace_period: Duration::from_secs(5),
        listen: "off".into(),
        ..WorkerConfig::default()
    }
}

/// Deploys [`model_with_error_boundary`] as a process and topic of their own.
pub async fn deploy_boundary_process(client: &EngineClient, prefix: &str) -> (String, String) {
    let key = unique(prefix);
    let topic = unique(prefix);
    deploy(
        client,
        &format!("{key}.bpmn"),
        &model_with_error_boundary(&key, &topic),
    )
    .await;
    (key, topic)
}

/// Fetch-and-locks up to `max_tasks` tasks of `topic` (of process `key`, when given) for the
/// worker id `test`, as a worker would, without waiting.
pub async fn lock_tasks(
    client: &EngineClient,
    topic: &str,
    max_tasks: u32,
    key: Option<&str>,
) -> Vec<camunda_client::LockedExternalTask> {
    client
        .fetch_and_lock(&camunda_client::FetchAndLock {
            worker_id: "test".into(),
            max_tasks,
            use_priority: false,
            async_response_timeout: None,
            topics: vec![camunda_client::TopicSubscription {
                topic_name: topic.to_owned(),
                process_definition_key_in: key.map(|k| vec![k.to_owned()]),
                ..subscription()
            }],
        })
        .await
        .unwrap()
}

/// A quick worker ([`quick_worker_config`]) serving `topic` with `config`.
pub fn start_quick_worker(
    client: &EngineClient,
    topic: &str,
    config: TopicConfig,
) -> (CancellationToken, JoinHandle<()>) {
    start_worker_with(client, quick_worker_config(), topics(&[(topic, config)]))
}

/// The variable `script` holding `source`, as a model's input parameter would give it.
pub fn script(source: &str) -> camunda_client::Variables {
    [(
        "script".to_owned(),
        camunda_client::Variable::String(source.to_owned()),
    )]
    .into()
}

/// The first incident of `instance`, once there is one.
pub async fn incident(
    client: &EngineClient,
    instance: &str,
    within: Duration,
) -> camunda_client::Incident {
    assert_eventually("an incident", within, || async {
        client
            .incidents(Some(instance))
            .await
            .ok()?
            .into_iter()
            .next()
    })
    .await
}

/// The variables of `instance` once it completed, or the message of the incident it ran into.
pub async fn settle(
    client: &EngineClient,
    instance: &str,
    within: Duration,
) -> Result<camunda_client::Variables, String> {
    assert_eventually("the instance to complete or fail", within, || async {
        if let Some(incident) = client
            .incidents(Some(instance))
            .await
            .ok()?
            .into_iter()
            .next()
        {
            return Some(Err(incident.incident_message.unwrap_or_default()));
        }
        let h = client.historic_process_instance(instance).await.ok()?;
        if h.state == "COMPLETED" {
            return Some(Ok(client.historic_variables(instance).await.ok()?));
        }
        None
    })
    .await
}
