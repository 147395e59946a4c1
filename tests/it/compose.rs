//! The compose fleet (`compose.yaml`) under load: 300 instances across the adapters (echo,
//! Python, Docker, Scilab, and an LLM on a real model) with 1, 3 and 6 worker replicas, one
//! replica `docker kill`ed mid-run, and a failing task that becomes an incident a person can act
//! on in Cockpit. Beside them, the `worker-namespace` service runs Python steps in bubblewrap
//! inside its own container, which has no Docker socket and is not privileged: a few compute and
//! report what their sandbox sees, and one that reaches for the network ends in an incident.
//!
//! Ignored in the ordinary run: `scripts/compose-test.sh` brings the fleet up with `docker
//! compose`, runs this test against it, and takes it down. It passes the fleet in
//! `PROCOS_TEST_COMPOSE` (the compose command with its project and file), `PROCOS_TEST_COMPOSE_URL`
//! (the engine's base URL on loopback), `PROCOS_ENGINE_USER`/`PROCOS_ENGINE_PASSWORD`, and where
//! the Cockpit screenshot goes (`PROCOS_TEST_ARTIFACTS`, `PROCOS_TEST_PLAYWRIGHT`), and
//! `PROCOS_TEST_NAMESPACE=0` when the namespace worker is not part of the fleet. With the
//! `postgres` profile up instead, it runs the PostgreSQL test. Both wait for the compose engine
//! through the kernel's readiness check, as `procos kernel --engine-url` does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use camunda_client::{
    Auth, EngineClient, ExternalTaskLogQuery, StartProcessInstance, Variable, Variables,
};
use tokio::task::JoinSet;

use crate::support::{self, assert_eventually};

/// Instances per round, spread over the adapters as `kind` says.
const INSTANCES: usize = 300;
/// Worker replicas per round.
const ROUNDS: [usize; 3] = [1, 3, 6];

/// What an instance of each adapter computes from its `n`, and where to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Echo,
    Python,
    Docker,
    Scilab,
    Llm,
}

impl Kind {
    /// Most instances echo (the worker's own cost) or start a container each; one in ten asks
    /// the model.
    fn of(i: usize) -> Self {
        match i % 10 {
            0..=3 => Kind::Echo,
            4 => Kind::Llm,
            5 | 6 => Kind::Python,
            7 | 8 => Kind::Docker,
            _ => Kind::Scilab,
        }
    }

    fn topic(self) -> &'static str {
        match self {
            Kind::Echo => "echo",
            Kind::Python => "python",
            Kind::Docker => "docker",
            Kind::Scilab => "scilab",
            Kind::Llm => "llm",
        }
    }

    /// The task's input parameters, as the element templates write them.
    fn inputs(self) -> &'static str {
        match self {
            Kind::Echo => {
                r#"<camunda:inputParameter name="next">${n + 1}</camunda:inputParameter>"#
            }
            Kind::Python => {
                r#"<camunda:inputParameter name="procos.script">outputs["square"] = inputs["n"] ** 2</camunda:inputParameter>"#
            }
            Kind::Docker => {
                r#"<camunda:inputParameter name="procos.image">procos/python-sandbox:latest</camunda:inputParameter>
        <camunda:inputParameter name="procos.command">["python3", "-c", "import json; n = json.load(open('/in/input.json'))['n']; print(json.dumps({'cube': n ** 3}))"]</camunda:inputParameter>"#
            }
            Kind::Scilab => {
                r#"<camunda:inputParameter name="procos.script">half = n / 2;</camunda:inputParameter>
        <camunda:inputParameter name="procos.outputs">half</camunda:inputParameter>"#
            }
            // The prompt is the topic's (tests/compose/llm.yaml); the answer's schema the task's.
            Kind::Llm => {
                r#"<camunda:inputParameter name="procos.schema">{"type": "object", "required": ["parity"], "additionalProperties": false, "properties": {"parity": {"type": "string", "enum": ["even", "odd"]}}}</camunda:inputParameter>"#
            }
        }
    }

    /// Whether the instance's variables hold the right result for input `n`: the computed
    /// number, or for the model an answer in the task's schema (whether SmolLM2-135M knows its
    /// parities is not the fleet's to test).
    fn check(self, n: i64, variables: &BTreeMap<String, Variable>) -> Result<(), String> {
        let holds = |name: &str, expected: f64| match variables.get(name).and_then(number) {
            Some(got) if got == expected => Ok(()),
            _ => Err(format!(
                "`{name}` should be {expected}, is {:?}",
                variables.get(name)
            )),
        };
        match self {
            Kind::Echo => holds("next", (n + 1) as f64),
            Kind::Python => holds("square", (n * n) as f64),
            Kind::Docker => holds("cube", (n * n * n) as f64),
            Kind::Scilab => holds("half", n as f64 / 2.0),
            Kind::Llm => {
                let answer = variables.get("answer").map(Variable::to_json);
                let parity = answer.as_ref().and_then(|a| a.get("parity")?.as_str());
                match (parity, variables.get("model")) {
                    (Some("even" | "odd"), Some(Variable::String(model))) if model == "smollm2" => {
                        Ok(())
                    }
                    _ => Err(format!(
                        "`answer` should be {{\"parity\": \"even\" | \"odd\"}} from smollm2, is {answer:?} (model {:?})",
                        variables.get("model")
                    )),
                }
            }
        }
    }
}

const KINDS: [Kind; 5] = [
    Kind::Echo,
    Kind::Python,
    Kind::Docker,
    Kind::Scilab,
    Kind::Llm,
];

/// The topic of the `worker-namespace` service (docker/compose/procos-namespace.toml).
const NAMESPACE_TOPIC: &str = "python-namespace";
/// Instances of the computing step on it.
const NAMESPACE_INSTANCES: i64 = 12;
/// Computes a square and reports what it sees: its host name, user, network interfaces, and
/// whether anything of the worker (its configuration, its environment) reaches it. The
/// runner's own `PROCOS_WAIT_*` (how a warm sandbox waits for its task) are the sandbox's.
const NAMESPACE_SCRIPT: &str = r#"import os, socket; outputs["square"] = inputs["n"] ** 2; outputs["host"] = socket.gethostname(); outputs["uid"] = os.getuid(); outputs["interfaces"] = ",".join(name for _, name in socket.if_nameindex()); outputs["sees_worker"] = os.path.exists("/etc/procos") or any(name.startswith("PROCOS_") and not name.startswith("PROCOS_WAIT_") for name in os.environ)"#;
/// Connects to the engine, which the worker itself reaches: in a sandbox without network, an
/// incident (its one attempt, `procos.retries` = 1).
const EGRESS_SCRIPT: &str = r#"import socket; socket.create_connection((inputs["engine"], 8080), timeout=5).close(); outputs["reached"] = inputs["engine"]"#;

/// The namespace worker's instances, started before the rounds and checked after them.
struct NamespaceRun {
    /// Instance id → n.
    computing: HashMap<String, i64>,
    key: String,
    egress: String,
    /// The worker-namespace container's host name, which its worker ids begin with.
    hostname: String,
}

impl NamespaceRun {
    /// Checks how the `worker-namespace` container runs, then starts its instances; `None`
    /// when `scripts/compose-test.sh` left the service out (`PROCOS_TEST_NAMESPACE=0`: Compose
    /// v1 cannot start it).
    async fn start(fleet: &Fleet) -> Option<Self> {
        if std::env::var("PROCOS_TEST_NAMESPACE").as_deref() == Ok("0") {
            eprintln!("the namespace worker is not part of this fleet (Compose v1): not tested");
            return None;
        }
        let client = &fleet.client;
        let container = fleet.compose(&["ps", "-q", "worker-namespace"]);
        let container = container.trim();
        assert!(
            !container.is_empty(),
            "no worker-namespace container: scripts/compose-test.sh starts it (profile `namespace`)"
        );
        let inspect = |format: &str| {
            docker(&["inspect", "-f", format, container])
                .trim()
                .to_owned()
        };
        // The least bubblewrap needs, and nothing more: not privileged, no capabilities, no
        // Docker socket or DOCKER_HOST, no way to gain privileges, a seccomp profile of its own.
        assert_eq!(inspect("{{.HostConfig.Privileged}}"), "false");
        assert_eq!(inspect("{{json .HostConfig.CapDrop}}"), r#"["ALL"]"#);
        assert_eq!(inspect("{{json .HostConfig.CapAdd}}"), "null");
        assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
        let mounts = inspect("{{json .Mounts}}");
        assert!(!mounts.contains("docker.sock"), "mounts: {mounts}");
        let env = inspect("{{json .Config.Env}}");
        assert!(!env.contains("DOCKER_HOST"), "environment: {env}");
        let security = inspect("{{json .HostConfig.SecurityOpt}}");
        assert!(
            security.contains("no-new-privileges") && security.contains("seccomp="),
            "security options: {security}"
        );
        assert_ne!(inspect("{{.Config.User}}"), "0", "runs as root");

        let key = support::unique("compose-namespace");
        let model = namespace_model(
            &key,
            &format!(
                r#"<camunda:inputOutput><camunda:inputParameter name="procos.script">{NAMESPACE_SCRIPT}</camunda:inputParameter></camunda:inputOutput>"#
            ),
        );
        support::deploy(client, &format!("{key}.bpmn"), &model).await;
        let egress_key = support::unique("compose-namespace-egress");
        let egress_model = namespace_model(
            &egress_key,
            &format!(
                r#"<camunda:properties><camunda:property name="procos.retries" value="1"/></camunda:properties><camunda:inputOutput><camunda:inputParameter name="procos.script">{EGRESS_SCRIPT}</camunda:inputParameter></camunda:inputOutput>"#
            ),
        );
        support::deploy(client, &format!("{egress_key}.bpmn"), &egress_model).await;

        let mut computing = HashMap::new();
        for n in 1..=NAMESPACE_INSTANCES {
            let id = start(client, &key, n, &format!("namespace-{n}")).await;
            computing.insert(id, n);
        }
        // The engine's address on the compose network, where the worker reaches it.
        let engine = fleet.compose(&["ps", "-q", "engine"]);
        let engine_ip = docker(&[
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            engine.trim(),
        ]);
        let engine_ip = engine_ip.split_whitespace().next().unwrap().to_owned();
        let egress = client
            .start_process_instance(
                &egress_key,
                &StartProcessInstance {
                    variables: Variables::from([(
                        "engine".to_owned(),
                        Variable::String(engine_ip),
                    )]),
                    business_key: Some("namespace-egress".to_owned()),
                },
            )
            .await
            .unwrap()
            .id;
        Some(Self {
            computing,
            key,
            egress,
            hostname: inspect("{{.Config.Hostname}}"),
        })
    }

    /// Every computing instance completed once, by the namespace worker, with the right square
    /// and a sandbox's view; the egress attempt is an incident.
    async fn check(&self, client: &EngineClient) {
        assert_eventually(
            "the namespace worker's instances completed",
            Duration::from_secs(120),
            || async {
                let log = support::completions(client, &self.key).await;
                (log.len() >= self.computing.len()).then_some(())
            },
        )
        .await;
        let log = support::completions(client, &self.key).await;
        assert_eq!(log.len(), self.computing.len(), "successful completions");
        for entry in &log {
            let worker = entry.worker_id.clone().unwrap_or_default();
            assert!(
                worker.starts_with(&self.hostname),
                "a {NAMESPACE_TOPIC} task was completed by {worker}, not by the worker-namespace container ({})",
                self.hostname
            );
        }
        for (id, &n) in &self.computing {
            let history = client.historic_process_instance(id).await.unwrap();
            assert_eq!(history.state, "COMPLETED", "namespace instance {id}");
            let variables = client.historic_variables(id).await.unwrap();
            let expect = |name: &str, expected: Variable| {
                assert_eq!(
                    variables.get(name),
                    Some(&expected),
                    "namespace instance {id} (n = {n}): `{name}`"
                );
            };
            assert_eq!(
                variables.get("square").and_then(number),
                Some((n * n) as f64),
                "namespace instance {id} (n = {n}): `square`"
            );
            // bubblewrap's: its host name, nobody in its user namespace, loopback only.
            expect("host", Variable::String("sandbox".into()));
            expect("uid", Variable::Integer(65534));
            expect("interfaces", Variable::String("lo".into()));
            expect("sees_worker", Variable::Boolean(false));
        }
        let incident = support::incident(client, &self.egress, Duration::from_secs(60)).await;
        let message = incident.incident_message.clone().unwrap_or_default();
        assert!(
            message.contains("Network is unreachable"),
            "the egress attempt's incident: {message}"
        );
        eprintln!(
            "namespace worker: {} instances computed in bubblewrap, the egress attempt ended in an incident ({message})",
            self.computing.len()
        );
    }
}

/// A one-task process on the namespace topic, the task's extension elements being `extensions`.
fn namespace_model(key: &str, extensions: &str) -> String {
    support::model(
        key,
        NAMESPACE_TOPIC,
        &format!("<bpmn:extensionElements>{extensions}</bpmn:extensionElements>"),
        r#"<bpmn:endEvent id="after"/>"#,
    )
    .replace(
        r#"<bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end"/>"#,
        "",
    )
    .replace(r#"<bpmn:endEvent id="end"/>"#, "")
    .replace(
        r#"<bpmn:process id="#,
        r#"<bpmn:process camunda:historyTimeToLive="P1D" id="#,
    )
}

struct Fleet {
    compose: Vec<String>,
    client: EngineClient,
    base_url: String,
    user: String,
}

impl Fleet {
    /// The fleet `scripts/compose-test.sh` brought up, once its engine answers.
    async fn ready() -> Self {
        let fleet = Self::from_env();
        procos_kernel::wait_until_ready(
            &fleet.client,
            Duration::from_secs(180),
            &tokio_util::sync::CancellationToken::new(),
            |waited| eprintln!("waiting for the compose engine… {} s", waited.as_secs()),
        )
        .await
        .unwrap_or_else(|e| panic!("the compose engine did not come up: {e}"));
        fleet
    }

    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: scripts/compose-test.sh runs this test")
            })
        };
        let base_url = var("PROCOS_TEST_COMPOSE_URL");
        let user = var("PROCOS_ENGINE_USER");
        let client = EngineClient::new(
            &format!("{base_url}/engine-rest"),
            Auth::Basic {
                user: user.clone(),
                password: var("PROCOS_ENGINE_PASSWORD"),
            },
        )
        .unwrap();
        let compose = var("PROCOS_TEST_COMPOSE")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        Self {
            compose,
            client,
            base_url,
            user,
        }
    }

    fn compose(&self, args: &[&str]) -> String {
        let output = Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "compose {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn workers(&self) -> Vec<String> {
        self.compose(&["ps", "-q", "worker"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Scales the workers to `replicas` and waits until each answers `/readyz`.
    async fn scale(&self, replicas: usize) {
        self.compose(&[
            "up",
            "-d",
            "--no-build",
            "--scale",
            &format!("worker={replicas}"),
            "worker",
        ]);
        assert_eventually(
            &format!("{replicas} healthy worker replicas"),
            Duration::from_secs(120),
            || async {
                let workers = self.workers();
                let healthy = workers
                    .iter()
                    .filter(|id| {
                        docker(&["inspect", "-f", "{{.State.Health.Status}}", id]).trim()
                            == "healthy"
                    })
                    .count();
                (workers.len() == replicas && healthy == replicas).then_some(())
            },
        )
        .await;
    }
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn model(key: &str, kind: Kind) -> String {
    support::model(
        key,
        kind.topic(),
        &format!(
            "<bpmn:extensionElements><camunda:inputOutput>{}</camunda:inputOutput></bpmn:extensionElements>",
            kind.inputs()
        ),
        r#"<bpmn:endEvent id="after"/>"#,
    )
    .replace(r#"<bpmn:sequenceFlow id="f3" sourceRef="after" targetRef="end"/>"#, "")
    .replace(r#"<bpmn:endEvent id="end"/>"#, "")
    .replace(
        r#"<bpmn:process id="#,
        r#"<bpmn:process camunda:historyTimeToLive="P1D" id="#,
    )
}

/// A one-task Python process whose script fails; with DI, so Cockpit draws the incident on the
/// task.
fn failing_model(key: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC"
    xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:camunda="http://camunda.org/schema/1.0/bpmn"
    id="defs-{key}" targetNamespace="https://procos.io/test">
  <bpmn:process id="{key}" name="Invoice total" isExecutable="true" camunda:historyTimeToLive="P1D">
    <bpmn:startEvent id="start" name="Invoice received"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="total"/>
    <bpmn:serviceTask id="total" name="Compute the total" camunda:type="external" camunda:topic="python">
      <bpmn:extensionElements><camunda:inputOutput>
        <camunda:inputParameter name="procos.script">raise ValueError(f"invoice {{inputs['n']}} has no total")</camunda:inputParameter>
      </camunda:inputOutput></bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="total" targetRef="end"/>
    <bpmn:endEvent id="end" name="Total known"/>
  </bpmn:process>
  <bpmndi:BPMNDiagram id="diagram">
    <bpmndi:BPMNPlane id="plane" bpmnElement="{key}">
      <bpmndi:BPMNShape id="start_di" bpmnElement="start"><dc:Bounds x="152" y="102" width="36" height="36"/></bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="total_di" bpmnElement="total"><dc:Bounds x="240" y="80" width="100" height="80"/></bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="end_di" bpmnElement="end"><dc:Bounds x="392" y="102" width="36" height="36"/></bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="f1_di" bpmnElement="f1"><di:waypoint x="188" y="120"/><di:waypoint x="240" y="120"/></bpmndi:BPMNEdge>
      <bpmndi:BPMNEdge id="f2_di" bpmnElement="f2"><di:waypoint x="340" y="120"/><di:waypoint x="392" y="120"/></bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the compose fleet: scripts/compose-test.sh runs it"]
async fn the_compose_fleet_scales_survives_a_killed_replica_and_reports_incidents() {
    support::init_logging();
    let fleet = Fleet::ready().await;
    let client = &fleet.client;

    // The kernel deployed bpmn/init and started the root orchestrator.
    root_orchestrator_runs(client, "the kernel's root orchestrator").await;

    let keys: BTreeMap<Kind, String> = KINDS
        .iter()
        .map(|&kind| (kind, support::unique(&format!("compose-{}", kind.topic()))))
        .collect();
    for (&kind, key) in &keys {
        support::deploy(client, &format!("{key}.bpmn"), &model(key, kind)).await;
    }

    // A failing task first: its retries run while the rounds do.
    let failing = support::unique("compose-incident");
    let failing_model = failing_model(&failing);
    support::deploy(client, &format!("{failing}.bpmn"), &failing_model).await;
    let failing_instance = start(client, &failing, 42, "invoice-42").await;
    // The namespace worker's instances run while the rounds do.
    let namespace = NamespaceRun::start(&fleet).await;

    for (round, replicas) in ROUNDS.into_iter().enumerate() {
        fleet.scale(replicas).await;
        let started = Instant::now();
        let instances = start_round(client, &keys, round).await;
        if replicas > 1 {
            // Mid-run: once a third has completed, one replica dies without a word.
            assert_eventually("a third of the round", Duration::from_secs(300), || async {
                (completed(client, &keys, &instances).await >= INSTANCES / 3).then_some(())
            })
            .await;
            let victim = fleet.workers()[0].clone();
            docker(&["kill", &victim]);
            eprintln!("round {round}: killed worker container {victim}");
        }
        assert_eventually(
            &format!("all {INSTANCES} instances of round {round} completed"),
            Duration::from_secs(600),
            || async { (completed(client, &keys, &instances).await >= INSTANCES).then_some(()) },
        )
        .await;
        let workers = assert_exactly_once(client, &keys, &instances).await;
        eprintln!(
            "round {round}: {INSTANCES} instances with {replicas} replica(s) in {:.1} s, completed by {} worker id(s)",
            started.elapsed().as_secs_f64(),
            workers.len()
        );
        assert!(
            workers.len() >= replicas,
            "round {round}: only {} worker ids completed tasks with {replicas} replicas",
            workers.len()
        );
        if round == 0
            && let Some(namespace) = &namespace
        {
            // Long done by now; checked here rather than at the end, so a failure shows early.
            namespace.check(client).await;
        }
    }

    // The failing task: an incident with the script's error, and its traceback in the details.
    let incident = support::incident(client, &failing_instance, Duration::from_secs(120)).await;
    let message = incident.incident_message.clone().unwrap_or_default();
    assert!(
        message.contains("invoice 42 has no total"),
        "incident message: {message}"
    );
    let task_id = incident.configuration.clone().unwrap();
    let details = client.external_task_error_details(&task_id).await.unwrap();
    assert!(
        details.contains("Traceback") && details.contains("ValueError"),
        "incident details: {details}"
    );
    screenshot_incident(&fleet, &failing_instance, "invoice 42 has no total");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the compose fleet with the postgres profile: scripts/compose-test.sh runs it"]
async fn on_postgresql_the_root_orchestrator_is_in_the_databases_tables() {
    support::init_logging();
    let fleet = Fleet::ready().await;
    let client = &fleet.client;
    root_orchestrator_runs(
        client,
        "the kernel's root orchestrator on the PostgreSQL engine",
    )
    .await;
    let rows = fleet.compose(&[
        "exec",
        "-T",
        "postgres",
        "psql",
        "-U",
        "procos",
        "-d",
        "procos",
        "-tAc",
        "select count(*) from act_ru_execution e join act_re_procdef d on d.id_ = e.proc_def_id_ where d.key_ = 'procos-root'",
    ]);
    let rows: u64 = rows.trim().parse().unwrap_or(0);
    assert!(
        rows >= 1,
        "the root orchestrator is not in PostgreSQL's tables (rows: {rows})"
    );
}

/// Waits until the kernel has deployed `bpmn/init` and started the root orchestrator.
async fn root_orchestrator_runs(client: &EngineClient, what: &str) {
    assert_eventually(what, Duration::from_secs(120), || async {
        (!client
            .process_instances("procos-root")
            .await
            .ok()?
            .is_empty())
        .then_some(())
    })
    .await;
}

async fn start(client: &EngineClient, key: &str, n: i64, business_key: &str) -> String {
    client
        .start_process_instance(
            key,
            &StartProcessInstance {
                variables: Variables::from([("n".to_owned(), Variable::Long(n))]),
                business_key: Some(business_key.to_owned()),
            },
        )
        .await
        .unwrap()
        .id
}

/// Starts the round's instances, 16 requests at a time; instance id → (kind, n).
async fn start_round(
    client: &EngineClient,
    keys: &BTreeMap<Kind, String>,
    round: usize,
) -> HashMap<String, (Kind, i64)> {
    let mut starting = JoinSet::new();
    let mut instances = HashMap::new();
    for i in 0..INSTANCES {
        if starting.len() >= 16 {
            let (id, kind, n) = starting.join_next().await.unwrap().unwrap();
            instances.insert(id, (kind, n));
        }
        let client = client.clone();
        let kind = Kind::of(i);
        let key = keys[&kind].clone();
        let n = i as i64 + 1;
        starting.spawn(async move {
            let id = start(&client, &key, n, &format!("round-{round}-{i}")).await;
            (id, kind, n)
        });
    }
    while let Some(started) = starting.join_next().await {
        let (id, kind, n) = started.unwrap();
        instances.insert(id, (kind, n));
    }
    instances
}

/// How many of `instances` history shows completed.
async fn completed(
    client: &EngineClient,
    keys: &BTreeMap<Kind, String>,
    instances: &HashMap<String, (Kind, i64)>,
) -> usize {
    let mut done = 0;
    for key in keys.values() {
        let Ok(log) = client
            .external_task_log(&ExternalTaskLogQuery {
                process_definition_key: Some(key.clone()),
                success_log: Some(true),
                ..Default::default()
            })
            .await
        else {
            return 0;
        };
        done += log
            .iter()
            .filter(|entry| {
                entry
                    .process_instance_id
                    .as_ref()
                    .is_some_and(|id| instances.contains_key(id))
            })
            .count();
    }
    done
}

/// Every instance completed, its task succeeded exactly once, and its result is right; the
/// worker ids that completed tasks.
async fn assert_exactly_once(
    client: &EngineClient,
    keys: &BTreeMap<Kind, String>,
    instances: &HashMap<String, (Kind, i64)>,
) -> BTreeSet<String> {
    let mut successes: HashMap<String, usize> = HashMap::new();
    let mut workers = BTreeSet::new();
    for key in keys.values() {
        let log = client
            .external_task_log(&ExternalTaskLogQuery {
                process_definition_key: Some(key.clone()),
                success_log: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        for entry in log {
            let Some(id) = entry
                .process_instance_id
                .filter(|id| instances.contains_key(id))
            else {
                continue;
            };
            *successes.entry(id).or_default() += 1;
            workers.extend(entry.worker_id);
        }
    }
    let mut checks = JoinSet::new();
    for (id, &(kind, n)) in instances {
        assert_eq!(
            successes.get(id),
            Some(&1),
            "instance {id} ({kind:?}, n = {n}): successful completions of its task"
        );
        let client = client.clone();
        let id = id.clone();
        checks.spawn(async move {
            let history = client.historic_process_instance(&id).await.unwrap();
            assert_eq!(history.state, "COMPLETED", "instance {id} ({kind:?})");
            let variables = client.historic_variables(&id).await.unwrap();
            if let Err(wrong) = kind.check(n, &variables) {
                panic!("instance {id} ({kind:?}, n = {n}): {wrong}");
            }
        });
        if checks.len() >= 16 {
            checks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(check) = checks.join_next().await {
        check.unwrap();
    }
    workers
}

fn number(variable: &Variable) -> Option<f64> {
    match variable {
        Variable::Short(n) => Some(f64::from(*n)),
        Variable::Integer(n) => Some(f64::from(*n)),
        Variable::Long(n) => Some(*n as f64),
        Variable::Double(n) => Some(*n),
        _ => None,
    }
}

/// Cockpit's view of the incident, as a person would see it, kept under `PROCOS_TEST_ARTIFACTS`.
fn screenshot_incident(fleet: &Fleet, instance: &str, expected: &str) {
    let artifacts = PathBuf::from(
        std::env::var("PROCOS_TEST_ARTIFACTS").expect("PROCOS_TEST_ARTIFACTS is not set"),
    );
    std::fs::create_dir_all(&artifacts).unwrap();
    let out = artifacts.join("cockpit-incident.png");
    let _ = std::fs::remove_file(&out);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cockpit-screenshot.mjs");
    let status = Command::new("node")
        .arg(script)
        .arg(std::env::var("PROCOS_TEST_PLAYWRIGHT").expect("PROCOS_TEST_PLAYWRIGHT is not set"))
        .args([&fleet.base_url, &fleet.user, instance, expected])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "Cockpit did not show the incident");
    let size = std::fs::metadata(&out).unwrap().len();
    assert!(
        size > 10_000,
        "the screenshot {} has only {size} bytes",
        out.display()
    );
}
